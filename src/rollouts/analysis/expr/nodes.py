"""Syntax tree of the condition language.

Why a separate tree (rather than evaluating while parsing): the whole expression is checked for
syntax errors before any of it runs, closures (`all(result, # > 0.9)`) need their body kept
unevaluated, and each node records the source offset that runtime errors point at.

Every node knows its `depth` (1 + deepest child). The parser rejects trees deeper than
`MAX_NESTING` so the recursive interpreter cannot exhaust the Python stack, even for long
left-leaning chains like `a + a + a + ...` that the parser itself builds iteratively.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(slots=True)
class Node:
    pos: int
    depth: int = field(default=1, init=False, compare=False)

    def children(self) -> list[Node]:
        return []

    def finish(self) -> Node:
        """Compute `depth` from the children; returns self for chaining."""
        kids = self.children()
        self.depth = 1 + max((kid.depth for kid in kids), default=0)
        return self


@dataclass(slots=True)
class Literal(Node):
    value: object


@dataclass(slots=True)
class Name(Node):
    name: str


@dataclass(slots=True)
class Pointer(Node):
    """`#` (current element), `#index` or `#acc` inside a closure."""

    name: str


@dataclass(slots=True)
class Unary(Node):
    op: str
    operand: Node

    def children(self) -> list[Node]:
        return [self.operand]


@dataclass(slots=True)
class Binary(Node):
    """`pos` is the operator's offset; the left operand starts earlier."""

    op: str
    left: Node
    right: Node

    def children(self) -> list[Node]:
        return [self.left, self.right]


@dataclass(slots=True)
class Member(Node):
    """`obj.name`, `obj?.name`, `obj[key]` or `obj?.[key]`; `pos` is where `obj` starts."""

    obj: Node
    key: Node
    optional: bool

    def children(self) -> list[Node]:
        return [self.obj, self.key]


@dataclass(slots=True)
class Slice(Node):
    obj: Node
    low: Node | None
    high: Node | None

    def children(self) -> list[Node]:
        return [n for n in (self.obj, self.low, self.high) if n is not None]


@dataclass(slots=True)
class Chain(Node):
    """Boundary of an optional chain: a `?.` on nil makes the whole chain nil."""

    inner: Node

    def children(self) -> list[Node]:
        return [self.inner]


@dataclass(slots=True)
class Closure(Node):
    """A predicate argument (`{# > 1}` or `# > 1`), evaluated once per element."""

    body: Node

    def children(self) -> list[Node]:
        return [self.body]


@dataclass(slots=True)
class Call(Node):
    """A call of a built-in or Argo function by name; closures appear as `Closure` args."""

    name: str
    args: list[Node]

    def children(self) -> list[Node]:
        return list(self.args)


@dataclass(slots=True)
class MethodCall(Node):
    """`value.Method(args)`: only a fixed allow-list of time/duration methods exists."""

    obj: Node
    name: str
    args: list[Node]
    optional: bool

    def children(self) -> list[Node]:
        return [self.obj, *self.args]


@dataclass(slots=True)
class ArrayLit(Node):
    items: list[Node]

    def children(self) -> list[Node]:
        return list(self.items)


@dataclass(slots=True)
class MapLit(Node):
    pairs: list[tuple[Node, Node]]

    def children(self) -> list[Node]:
        return [n for pair in self.pairs for n in pair]


@dataclass(slots=True)
class Conditional(Node):
    cond: Node
    then: Node
    otherwise: Node

    def children(self) -> list[Node]:
        return [self.cond, self.then, self.otherwise]


@dataclass(slots=True)
class Let(Node):
    name: str
    value: Node
    body: Node

    def children(self) -> list[Node]:
        return [self.value, self.body]


def start_of(node: Node) -> int:
    """Offset where the source text of `node` begins (binary nodes start at their left side)."""
    while isinstance(node, Binary):
        node = node.left
    return node.pos
