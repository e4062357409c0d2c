"""Tree-walking evaluator for parsed conditions.

Why a tree walker with a step counter: conditions are tiny, so clarity beats speed, and counting
one step per visited node (plus the per-element charges built-ins make through `tick`) puts a hard
ceiling on the work any expression can cause, including closures over large ranges such as
`map(1..100000, map(1..100000, #))`.

Name resolution is closed: identifiers come from `let` bindings and the environment, calls go to
the built-in table only (never to Python callables found in the environment), and member access
only reads dict keys and list/string indexes. Runtime errors without a position get the offset of
the node being evaluated, so messages can point at the failing sub-expression.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta

from .builtins import BUILTINS, to_int
from .datafuncs import sort_order, sort_values
from .errors import MAX_STEPS, ExprError
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
)
from .operators import apply_binary, arithmetic
from .parser import PREDICATE_ARGS
from .timefmt import call_method
from .values import (
    Value,
    aware,
    describe,
    hashable_key,
    is_int,
    is_number,
    truthy_bool,
    type_name,
    wrap_int,
)

_MISSING = object()
_IGNORES_FIRST_ARGUMENT = frozenset({"isNil", "default"})


class _NilChain(Exception):
    """Raised by `a?.b` when `a` is nil; caught by the enclosing `Chain` node."""


@dataclass(slots=True)
class _Frame:
    item: Value
    index: int
    acc: Value = None
    has_acc: bool = False


class Interpreter:
    def __init__(self, env: dict[str, Value], clock: Callable[[], datetime]) -> None:
        self.env = env
        self.clock = clock
        self.steps = 0
        self.variables: dict[str, Value] = {}
        self.frames: list[_Frame] = []

    # -- the Context protocol used by built-ins -------------------------------------------

    def tick(self, amount: int = 1) -> None:
        self.steps += amount
        if self.steps > MAX_STEPS:
            raise ExprError(f"evaluation exceeded the limit of {MAX_STEPS} steps (the expression does too much work)")

    def now(self) -> datetime:
        moment = self.clock()
        if not isinstance(moment, datetime):
            raise ExprError(f"the clock returned {type(moment).__name__}, not a datetime")
        return aware(moment)

    def result(self) -> Value:
        return self.env.get("result")

    # -- evaluation -----------------------------------------------------------------------

    def eval(self, node: Node) -> Value:
        self.tick()
        try:
            return _DISPATCH[type(node)](self, node)
        except ExprError as exc:
            if exc.position is None:
                exc.position = node.pos
            raise

    def _literal(self, node: Literal) -> Value:
        return node.value

    def _name(self, node: Name) -> Value:
        value = self.variables.get(node.name, _MISSING)
        if value is _MISSING:
            value = self.env.get(node.name, _MISSING)
        if value is _MISSING:
            if node.name == "$env":
                return dict(self.env)
            if node.name in BUILTINS or node.name in PREDICATE_ARGS:
                raise ExprError(f"{node.name} is a function: call it as {node.name}(...)")
            names = sorted(self.env)
            known = ", ".join(names[:10]) + (", ..." if len(names) > 10 else "") if names else "none"
            raise ExprError(f"unknown name {node.name} (available variables: {known})")
        return value

    def _pointer(self, node: Pointer) -> Value:
        if not self.frames:
            raise ExprError(f"'#{node.name}' can only be used inside a predicate")
        frame = self.frames[-1]
        if node.name == "index":
            return frame.index
        if node.name == "acc":
            if not frame.has_acc:
                raise ExprError("#acc is only available inside reduce()")
            return frame.acc
        return frame.item

    def _unary(self, node: Unary) -> Value:
        value = self.eval(node.operand)
        if node.op == "!":
            return not truthy_bool(value, "the operand of 'not'/'!'")
        if node.op == "-":
            if is_int(value):
                return wrap_int(-int(value))  # type: ignore[call-overload]
            if isinstance(value, float):
                return -value
            if isinstance(value, timedelta):
                return -value
        elif is_number(value):
            return value
        raise ExprError(f"invalid operation: {node.op}{type_name(value)}")

    def _binary(self, node: Binary) -> Value:
        op = node.op
        if op == "&&":
            if not truthy_bool(self.eval(node.left), "the left side of '&&'/'and'"):
                return False
            return truthy_bool(self.eval(node.right), "the right side of '&&'/'and'")
        if op == "||":
            if truthy_bool(self.eval(node.left), "the left side of '||'/'or'"):
                return True
            return truthy_bool(self.eval(node.right), "the right side of '||'/'or'")
        if op == "??":
            left = self.eval(node.left)
            return self.eval(node.right) if left is None else left
        left = self.eval(node.left)
        right = self.eval(node.right)
        try:
            return apply_binary(op, left, right, self.tick)
        except ExprError as exc:
            if exc.position is None:
                exc.position = node.pos
            raise

    def _member(self, node: Member) -> Value:
        obj = self.eval(node.obj)
        if obj is None and node.optional:
            raise _NilChain
        key = self.eval(node.key)
        return fetch(obj, key, property_access=isinstance(node.key, Literal) and isinstance(key, str))

    def _slice(self, node: Slice) -> Value:
        obj = self.eval(node.obj)
        if not isinstance(obj, list | str):
            raise ExprError(f"cannot slice a {type_name(obj)}")
        length = len(obj)
        low = 0 if node.low is None else to_int(self.eval(node.low), "slice")
        high = length if node.high is None else to_int(self.eval(node.high), "slice")
        low = max(low + length if low < 0 else low, 0)
        high = min(max(high + length if high < 0 else high, 0), length)
        low = min(low, high)
        self.tick(high - low)
        return obj[low:high]

    def _chain(self, node: Chain) -> Value:
        try:
            return self.eval(node.inner)
        except _NilChain:
            return None

    def _closure(self, node: Closure) -> Value:
        raise ExprError("a predicate can only be used as an argument of all, any, filter, map, ...")

    def _call(self, node: Call) -> Value:
        if node.name in PREDICATE_ARGS:
            return self._predicate_call(node)
        function = BUILTINS.get(node.name)
        if function is None:
            raise ExprError(f"unknown function {node.name}()")
        if node.name in _IGNORES_FIRST_ARGUMENT and node.args:
            # Argo binds isNil/default to the metric result; their first argument is never used,
            # so it is not evaluated either (isNil(anything) is fine).
            args: list[Value] = [None, *(self.eval(arg) for arg in node.args[1:])]
        else:
            args = [self.eval(arg) for arg in node.args]
        return function(self, args)

    def _method_call(self, node: MethodCall) -> Value:
        obj = self.eval(node.obj)
        if obj is None and node.optional:
            raise _NilChain
        args = [self.eval(arg) for arg in node.args]
        return call_method(obj, node.name, args)

    def _array(self, node: ArrayLit) -> Value:
        return [self.eval(item) for item in node.items]

    def _map(self, node: MapLit) -> Value:
        out: dict[object, Value] = {}
        for key_node, value_node in node.pairs:
            key = hashable_key(self.eval(key_node))
            out[key] = self.eval(value_node)
        return out

    def _conditional(self, node: Conditional) -> Value:
        if truthy_bool(self.eval(node.cond), "the condition of '?:'"):
            return self.eval(node.then)
        return self.eval(node.otherwise)

    def _let(self, node: Let) -> Value:
        previous = self.variables.get(node.name, _MISSING)
        self.variables[node.name] = self.eval(node.value)
        try:
            return self.eval(node.body)
        finally:
            if previous is _MISSING:
                del self.variables[node.name]
            else:
                self.variables[node.name] = previous

    # -- closures -------------------------------------------------------------------------

    def _apply(self, closure: Node, item: Value, index: int, acc: Value = None, has_acc: bool = False) -> Value:
        assert isinstance(closure, Closure)
        self.frames.append(_Frame(item, index, acc, has_acc))
        try:
            return self.eval(closure.body)
        finally:
            self.frames.pop()

    def _test(self, name: str, closure: Node, item: Value, index: int) -> bool:
        value = self._apply(closure, item, index)
        if not isinstance(value, bool):
            raise ExprError(f"the predicate of {name}() must return a bool, got {type_name(value)}", closure.pos)
        return value

    def _predicate_call(self, node: Call) -> Value:
        name, args = node.name, node.args
        items = self.eval(args[0])
        if not isinstance(items, list):
            raise ExprError(f"{name}() expects an array as its first argument, got {type_name(items)}")
        closure = args[1] if len(args) > 1 else None
        if closure is None:
            if name == "count":
                return sum(1 for item in items if truthy_bool(item, "an element counted by count()"))
            total: Value = 0
            for item in items:
                self.tick()
                total = arithmetic("+", total, item)
            return total
        if name in ("all", "any", "none", "one", "count"):
            hits = 0
            for index, item in enumerate(items):
                matched = self._test(name, closure, item, index)
                if name == "all" and not matched:
                    return False
                if name in ("any", "none") and matched:
                    return name == "any"
                hits += matched
                if name == "one" and hits > 1:
                    return False
            return {"all": True, "any": False, "none": True, "one": hits == 1}.get(name, hits)
        if name == "filter":
            return [item for index, item in enumerate(items) if self._test(name, closure, item, index)]
        if name == "map":
            return [self._apply(closure, item, index) for index, item in enumerate(items)]
        if name == "sum":
            total = 0
            for index, item in enumerate(items):
                total = arithmetic("+", total, self._apply(closure, item, index))
            return total
        if name in ("find", "findIndex", "findLast", "findLastIndex"):
            order = range(len(items) - 1, -1, -1) if name.startswith("findLast") else range(len(items))
            for index in order:
                if self._test(name, closure, items[index], index):
                    return index if name.endswith("Index") else items[index]
            return -1 if name.endswith("Index") else None
        if name == "groupBy":
            groups: dict[object, Value] = {}
            for index, item in enumerate(items):
                key = hashable_key(self._apply(closure, item, index))
                bucket = groups.setdefault(key, [])
                assert isinstance(bucket, list)
                bucket.append(item)
            return groups
        if name == "sortBy":
            keys = [self._apply(closure, item, index) for index, item in enumerate(items)]
            descending = sort_order(self.eval(args[2]), "sortBy") if len(args) > 2 else False
            return sort_values(items, descending, self, keys)
        return self._reduce(items, closure, args)

    def _reduce(self, items: list[Value], closure: Node, args: list[Node]) -> Value:
        if len(args) > 2:
            acc, start = self.eval(args[2]), 0
        elif items:
            acc, start = items[0], 1
        else:
            raise ExprError("reduce() of an empty array needs an initial value, e.g. reduce(arr, #acc + #, 0)")
        for index in range(start, len(items)):
            acc = self._apply(closure, items[index], index, acc, has_acc=True)
        return acc


def fetch(obj: Value, key: Value, *, property_access: bool = False) -> Value:
    """`obj.key` / `obj[key]`: map lookup (missing key is nil) or list/string index (must exist)."""
    if isinstance(obj, dict):
        return obj.get(hashable_key(key))
    if isinstance(obj, list | str):
        if not is_number(key):
            what = "string" if isinstance(obj, str) else "array"
            raise ExprError(f"cannot index a {what} with a {type_name(key)} ({describe(key)})")
        index = to_int(key, "index")
        length = len(obj)
        position = index + length if index < 0 else index
        if not 0 <= position < length:
            what = "string" if isinstance(obj, str) else "list"
            raise ExprError(f"index {index} out of range for a {what} of length {length}")
        return obj[position]
    shown = describe(key)
    if obj is None:
        hint = " (use ?. to allow nil)" if property_access else ""
        raise ExprError(f"cannot fetch {shown} from nil{hint}")
    if property_access and type_name(obj).startswith("time."):
        raise ExprError(f"cannot fetch {shown} from {type_name(obj)} (methods are called like {shown}())")
    raise ExprError(f"cannot fetch {shown} from {type_name(obj)}")


_DISPATCH: dict[type, Callable[[Interpreter, Node], Value]] = {
    Literal: Interpreter._literal,  # type: ignore[dict-item]
    Name: Interpreter._name,  # type: ignore[dict-item]
    Pointer: Interpreter._pointer,  # type: ignore[dict-item]
    Unary: Interpreter._unary,  # type: ignore[dict-item]
    Binary: Interpreter._binary,  # type: ignore[dict-item]
    Member: Interpreter._member,  # type: ignore[dict-item]
    Slice: Interpreter._slice,  # type: ignore[dict-item]
    Chain: Interpreter._chain,  # type: ignore[dict-item]
    Closure: Interpreter._closure,  # type: ignore[dict-item]
    Call: Interpreter._call,  # type: ignore[dict-item]
    MethodCall: Interpreter._method_call,  # type: ignore[dict-item]
    ArrayLit: Interpreter._array,  # type: ignore[dict-item]
    MapLit: Interpreter._map,  # type: ignore[dict-item]
    Conditional: Interpreter._conditional,  # type: ignore[dict-item]
    Let: Interpreter._let,  # type: ignore[dict-item]
}
