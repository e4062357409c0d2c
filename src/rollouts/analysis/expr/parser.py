"""Pratt (precedence-climbing) parser producing the tree in `nodes`.

Why hand-written rather than a lark grammar: expr-lang's grammar is operator-precedence based with
a few irregular rules that are awkward in a context-free grammar but natural here: comparison
chains (`1 < x < 3` means `1 < x && x < 3`), the `??` operator that may not be mixed with others
without parentheses, closures whose `#`/`.field` shorthand is only legal inside predicate
arguments of specific built-ins, the pipe `x | f(y)` that prepends an argument, and `not in`.
Precedences and associativity follow expr-lang v1.17 (see `BINARY`).

Parsing also enforces the size limits: the source length and the depth of nesting, so that later
recursive evaluation is bounded.
"""

from __future__ import annotations

from .errors import MAX_EXPRESSION_LENGTH, MAX_NESTING, ExprError
from .lexer import KEYWORDS, Token, tokenize
from .nodes import (
    ArrayLit,
    Binary,
    Call,
    Chain,
    Closure,
    Conditional,
    Let,
    Literal,
    MapLit,
    Member,
    MethodCall,
    Name,
    Node,
    Pointer,
    Slice,
    Unary,
    start_of,
)

# operator -> (precedence, right associative)
BINARY: dict[str, tuple[int, bool]] = {
    "|": (0, False),
    "or": (10, False),
    "||": (10, False),
    "and": (15, False),
    "&&": (15, False),
    "==": (20, False),
    "!=": (20, False),
    "<": (20, False),
    ">": (20, False),
    ">=": (20, False),
    "<=": (20, False),
    "in": (20, False),
    "matches": (20, False),
    "contains": (20, False),
    "startsWith": (20, False),
    "endsWith": (20, False),
    "..": (25, False),
    "+": (30, False),
    "-": (30, False),
    "*": (60, False),
    "/": (60, False),
    "%": (60, False),
    "**": (100, True),
    "^": (100, True),
    "??": (500, False),
}
UNARY: dict[str, int] = {"not": 50, "!": 50, "-": 90, "+": 90}
_COMPARISON_PRECEDENCE = 20
_CANONICAL = {"or": "||", "and": "&&", "^": "**"}

# Built-ins whose arguments include a closure: "e" = expression, "p" = predicate, "?" = optional.
PREDICATE_ARGS: dict[str, tuple[str, ...]] = {
    "all": ("e", "p"),
    "none": ("e", "p"),
    "any": ("e", "p"),
    "one": ("e", "p"),
    "filter": ("e", "p"),
    "map": ("e", "p"),
    "count": ("e", "p?"),
    "sum": ("e", "p?"),
    "find": ("e", "p"),
    "findIndex": ("e", "p"),
    "findLast": ("e", "p"),
    "findLastIndex": ("e", "p"),
    "groupBy": ("e", "p"),
    "sortBy": ("e", "p", "e?"),
    "reduce": ("e", "p", "e?"),
}
POINTER_NAMES = frozenset({"", "index", "acc"})


def parse(source: str) -> Node:
    """Parse `source` into a tree; raises ExprError with the offset of the problem."""
    if len(source) > MAX_EXPRESSION_LENGTH:
        raise ExprError(
            f"expression is too long ({len(source)} characters, the limit is {MAX_EXPRESSION_LENGTH})",
            MAX_EXPRESSION_LENGTH,
        )
    if not source.strip():
        raise ExprError("expression is empty", 0)
    return _Parser(tokenize(source)).parse()


class _Parser:
    def __init__(self, tokens: list[Token]) -> None:
        self.tokens = tokens
        self.index = 0
        self.nesting = 0
        self.predicate_depth = 0

    # -- token helpers -------------------------------------------------------------------

    @property
    def current(self) -> Token:
        return self.tokens[self.index]

    def advance(self) -> Token:
        token = self.tokens[self.index]
        if token.kind != "eof":
            self.index += 1
        return token

    def is_op(self, *values: str) -> bool:
        token = self.current
        return token.kind == "op" and token.value in values

    def expect_op(self, value: str, context: str = "") -> Token:
        if not self.is_op(value):
            suffix = f" {context}" if context else ""
            raise ExprError(f"expected '{value}'{suffix} but found {self.current.describe()}", self.current.pos)
        return self.advance()

    def node(self, node: Node) -> Node:
        node.finish()
        if node.depth > MAX_NESTING:
            raise ExprError(f"expression is nested too deeply (the limit is {MAX_NESTING} levels)", node.pos)
        return node

    # -- grammar -------------------------------------------------------------------------

    def parse(self) -> Node:
        node = self.expression(0)
        if self.current.kind != "eof":
            raise ExprError(f"unexpected {self.current.describe()}", self.current.pos)
        return node

    def expression(self, min_precedence: int) -> Node:
        self.nesting += 1
        if self.nesting > MAX_NESTING:
            raise ExprError(f"expression is nested too deeply (the limit is {MAX_NESTING} levels)", self.current.pos)
        try:
            return self._expression(min_precedence)
        finally:
            self.nesting -= 1

    def _expression(self, min_precedence: int) -> Node:
        if min_precedence == 0 and self.is_op("let"):
            return self.let()
        left = self.primary()
        previous = ""
        while self.current.kind == "op":
            token = self.current
            op = str(token.value)
            negate = op.startswith("not ")
            base = op[4:] if negate else op
            info = BINARY.get(base)
            if info is None or info[0] < min_precedence:
                break
            precedence, right_assoc = info
            self.advance()
            if base == "|":
                left = self.pipe(left)
                previous = base
                continue
            if previous == "??" and base != "??":
                raise ExprError(
                    f"operator '{base}' cannot be mixed with '??' without parentheses, e.g. write (a ?? b) + c",
                    token.pos,
                )
            if precedence == _COMPARISON_PRECEDENCE:
                left = self.comparison(left, token)
            else:
                right = self.expression(precedence if right_assoc else precedence + 1)
                left = self.node(Binary(token.pos, _CANONICAL.get(base, base), left, right))
            previous = base
        if min_precedence == 0:
            left = self.conditional(left)
        return left

    def comparison(self, left: Node, token: Token) -> Node:
        """`a < b < c` becomes `a < b && b < c` (expr-lang chains all comparison operators)."""
        root: Node | None = None
        while True:
            op = str(token.value)
            negate = op.startswith("not ")
            base = op[4:] if negate else op
            right = self.expression(_COMPARISON_PRECEDENCE + 1)
            compare: Node = self.node(Binary(token.pos, base, left, right))
            if negate:
                compare = self.node(Unary(token.pos, "!", compare))
            root = compare if root is None else self.node(Binary(token.pos, "&&", root, compare))
            left = right
            token = self.current
            nxt = str(token.value)
            nxt_base = nxt[4:] if nxt.startswith("not ") else nxt
            if token.kind != "op" or BINARY.get(nxt_base, (-1, False))[0] != _COMPARISON_PRECEDENCE:
                return root
            self.advance()

    def conditional(self, node: Node) -> Node:
        while self.is_op("?"):
            token = self.advance()
            if self.is_op(":"):
                self.advance()
                then: Node = node
            else:
                then = self.expression(0)
                self.expect_op(":", "in the conditional operator (cond ? a : b)")
            otherwise = self.expression(0)
            node = self.node(Conditional(token.pos, node, then, otherwise))
        return node

    def let(self) -> Node:
        token = self.advance()
        name = self.current
        if name.kind != "ident":
            raise ExprError(f"expected a variable name after 'let' but found {name.describe()}", name.pos)
        self.advance()
        self.expect_op("=", "after the variable name in 'let'")
        value = self.expression(0)
        self.expect_op(";", "after the value of 'let'")
        body = self.expression(0)
        return self.node(Let(token.pos, str(name.value), value, body))

    def primary(self) -> Node:
        token = self.current
        if token.kind == "op" and token.value in UNARY:
            self.advance()
            operand = self.expression(UNARY[str(token.value)])
            op = "!" if token.value == "not" else str(token.value)
            return self.postfix(self.node(Unary(token.pos, op, operand)))
        if self.is_op("("):
            self.advance()
            inner = self.expression(0)
            if not self.is_op(")"):
                raise ExprError(
                    f"expected ')' to close the '(' at column {token.pos + 1} but found {self.current.describe()}",
                    self.current.pos,
                )
            self.advance()
            return self.postfix(inner)
        if token.kind == "pointer" or self.is_op("."):
            if self.predicate_depth == 0:
                what = f"#{token.value}" if token.kind == "pointer" else "."
                raise ExprError(
                    f"'{what}' can only be used inside a predicate, e.g. all(result, {{# > 0.9}})", token.pos
                )
            if token.kind == "pointer":
                if token.value not in POINTER_NAMES:
                    raise ExprError(f"unknown pointer '#{token.value}' (use #, #index or #acc)", token.pos)
                self.advance()
                return self.postfix(self.node(Pointer(token.pos, str(token.value))))
            # `.field` inside a predicate is shorthand for `#.field`
            return self.postfix(self.node(Pointer(token.pos, "")))
        if self.is_op("if"):
            return self.if_else()
        return self.postfix(self.secondary())

    def if_else(self) -> Node:
        token = self.advance()
        cond = self.expression(0)
        self.expect_op("{", "after the condition of 'if'")
        then = self.expression(0)
        self.expect_op("}", "to close the 'if' branch")
        self.expect_op("else", "after 'if { ... }' (an 'if' needs an 'else')")
        if self.is_op("if"):
            otherwise = self.if_else()
        else:
            self.expect_op("{", "after 'else'")
            otherwise = self.expression(0)
            self.expect_op("}", "to close the 'else' branch")
        return self.node(Conditional(token.pos, cond, then, otherwise))

    def secondary(self) -> Node:
        token = self.current
        if token.kind == "ident":
            self.advance()
            if token.value in ("true", "false"):
                return self.node(Literal(token.pos, token.value == "true"))
            if token.value == "nil":
                return self.node(Literal(token.pos, None))
            if self.is_op("("):
                return self.call(token, [])
            return self.node(Name(token.pos, str(token.value)))
        if token.kind in ("int", "float", "string"):
            self.advance()
            return self.node(Literal(token.pos, token.value))
        if self.is_op("["):
            return self.array()
        if self.is_op("{"):
            return self.map_literal()
        if token.kind == "eof":
            raise ExprError("unexpected end of expression", token.pos)
        raise ExprError(f"unexpected {token.describe()}", token.pos)

    def pipe(self, left: Node) -> Node:
        name = self.current
        if name.kind != "ident":
            raise ExprError(f"expected a function name after '|' but found {name.describe()}", name.pos)
        self.advance()
        if not self.is_op("("):
            raise ExprError(f"expected '(' after '{name.value}' in a pipe, e.g. x | {name.value}()", self.current.pos)
        return self.call(name, [left], pos=start_of(left))

    def call(self, name: Token, args: list[Node], pos: int | None = None) -> Node:
        """A call `name(...)`; `args` holds the piped-in value for `x | name(...)`."""
        open_paren = self.expect_op("(")
        fname = str(name.value)
        offset = len(args)
        spec = PREDICATE_ARGS.get(fname)
        if spec is not None:
            required = sum(1 for kind in spec if not kind.endswith("?"))
            for j, kind in enumerate(spec[offset:]):
                if self.is_op(")"):
                    if kind.endswith("?"):
                        break
                    raise ExprError(f"{fname}() expects at least {required} arguments", self.current.pos)
                if j > 0:
                    if self.current.kind == "eof":
                        break
                    self.expect_op(",", f"between the arguments of {fname}()")
                    if self.is_op(")") and kind.endswith("?"):
                        break
                args.append(self.closure() if kind.startswith("p") else self.expression(0))
            if self.is_op(","):
                self.advance()
        else:
            while not self.is_op(")") and self.current.kind != "eof":
                if len(args) > offset:
                    self.expect_op(",", f"between the arguments of {fname}()")
                    if self.is_op(")"):
                        break
                args.append(self.expression(0))
        if not self.is_op(")"):
            raise ExprError(
                f"expected ')' to close the call of {fname}() opened at column {open_paren.pos + 1} "
                f"but found {self.current.describe()}",
                self.current.pos,
            )
        self.advance()
        return self.postfix(self.node(Call(name.pos if pos is None else pos, fname, args)))

    def closure(self) -> Node:
        token = self.current
        braced = self.is_op("{")
        if braced:
            self.advance()
        self.predicate_depth += 1
        try:
            body = self.expression(0)
        finally:
            self.predicate_depth -= 1
        if braced:
            self.expect_op("}", "to close the predicate")
        return self.node(Closure(token.pos, body))

    def array(self) -> Node:
        token = self.advance()
        items: list[Node] = []
        while not self.is_op("]"):
            if items:
                self.expect_op(",", "between array elements")
                if self.is_op("]"):
                    break
            if self.current.kind == "eof":
                raise ExprError(f"expected ']' to close the '[' at column {token.pos + 1}", self.current.pos)
            items.append(self.expression(0))
        self.advance()
        return self.node(ArrayLit(token.pos, items))

    def map_literal(self) -> Node:
        token = self.advance()
        pairs: list[tuple[Node, Node]] = []
        while not self.is_op("}"):
            if pairs:
                self.expect_op(",", "between map entries")
                if self.is_op("}"):
                    break
            key_token = self.current
            key: Node
            if key_token.kind in ("int", "float", "string", "ident"):
                self.advance()
                text = key_token.value if key_token.kind in ("string", "ident") else _number_text(key_token)
                key = self.node(Literal(key_token.pos, text))
            elif self.is_op("("):
                key = self.expression(0)
            elif key_token.kind == "eof":
                raise ExprError(f"expected '}}' to close the '{{' at column {token.pos + 1}", key_token.pos)
            else:
                raise ExprError(
                    "a map key must be a quoted string, a number, a name, or an expression in parentheses "
                    f"(found {key_token.describe()})",
                    key_token.pos,
                )
            self.expect_op(":", "after a map key")
            pairs.append((key, self.expression(0)))
        self.advance()
        return self.node(MapLit(token.pos, pairs))

    def postfix(self, node: Node) -> Node:
        chained = False
        start = start_of(node)
        while self.current.kind == "op":
            token = self.current
            if token.value in (".", "?."):
                optional = token.value == "?."
                self.advance()
                chained = chained or optional
                if optional and self.is_op("["):
                    node = self.subscript(node, start, optional=True)
                    continue
                prop = self.current
                if prop.kind != "ident" and not (prop.kind == "op" and (prop.value in KEYWORDS or prop.value == "not")):
                    raise ExprError(
                        f"expected a field name after '{token.value}' but found {prop.describe()}", prop.pos
                    )
                self.advance()
                name = str(prop.value)
                if self.is_op("("):
                    self.advance()
                    args: list[Node] = []
                    while not self.is_op(")"):
                        if args:
                            self.expect_op(",", f"between the arguments of {name}()")
                            if self.is_op(")"):
                                break
                        args.append(self.expression(0))
                    self.advance()
                    node = self.node(MethodCall(start, node, name, args, optional))
                else:
                    key = self.node(Literal(prop.pos, name))
                    node = self.node(Member(start, node, key, optional))
            elif token.value == "[":
                node = self.subscript(node, start, optional=False)
            else:
                break
        if chained:
            node = self.node(Chain(start, node))
        return node

    def subscript(self, node: Node, start: int, *, optional: bool) -> Node:
        token = self.expect_op("[")
        low: Node | None = None
        if self.is_op(":"):
            self.advance()
            high = None if self.is_op("]") else self.expression(0)
            self.expect_op("]", f"to close the '[' at column {token.pos + 1}")
            return self.node(Slice(start, node, None, high))
        low = self.expression(0)
        if self.is_op(":"):
            self.advance()
            high = None if self.is_op("]") else self.expression(0)
            self.expect_op("]", f"to close the '[' at column {token.pos + 1}")
            return self.node(Slice(start, node, low, high))
        self.expect_op("]", f"to close the '[' at column {token.pos + 1}")
        return self.node(Member(start, node, low, optional))


def _number_text(token: Token) -> str:
    value = token.value
    if isinstance(value, int):
        return str(value)
    return repr(value)
