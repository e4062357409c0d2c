"""The subset of Kubernetes JSONPath that the `web` metric provider uses for `jsonPath`.

Kubernetes (k8s.io/client-go/util/jsonpath) wraps an expression in braces: `{$.data.ok}`,
`{.status}`, `{$.items[0].value}`. Supported inside the braces:

- `$` (the root) and `@` (the current node, also the root at the top level);
- `.field`, `['field']` / `["field"]`, `['a','b']` (union of keys);
- `[n]` (negative counts from the end), `[n,m]` (union of indexes), `[start:end:step]` slices;
- `[*]` and `.*` (every element of a list, every value of an object);
- `..field`, `..*`, `..[n]` (recursive descent);
- `[?(@.field)]` (exists) and `[?(@.field OP literal)]` filters with `==`, `!=`, `<`, `<=`, `>`,
  `>=` against a number, a quoted string, `true`, `false` or `null` (or another `@` path).

A bare path without braces (`$.a.b`, `.a.b`) is accepted too. Not supported: `{range}` /
`{end}` blocks, several `{...}` blocks or literal text around the braces (an expression
using them is rejected with `JSONPathError` rather than misread).

Missing keys, out-of-range indexes and type mismatches simply produce no match; `find`
returns every match in document order and the caller decides what "no match" means.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

__all__ = ["JSONPath", "JSONPathError", "compile_jsonpath", "find"]


class JSONPathError(ValueError):
    """The expression is not valid (or uses a part of JSONPath that is not supported)."""


_MISSING = object()

# A step maps one node to the nodes it selects.
_Step = Callable[[Any, Any], Iterator[Any]]  # (node, root) -> nodes


@dataclass(frozen=True)
class JSONPath:
    """A compiled JSONPath expression."""

    source: str
    _steps: tuple[_Step, ...]

    def find(self, data: Any) -> list[Any]:
        """Every node the expression selects in `data`, in document order."""
        return list(_run(self._steps, data, data))


def find(expression: str, data: Any) -> list[Any]:
    """Shorthand for `compile_jsonpath(expression).find(data)`."""
    return compile_jsonpath(expression).find(data)


def compile_jsonpath(expression: str) -> JSONPath:
    """Compile a Kubernetes-style JSONPath template such as `{$.items[0].value}`."""
    inner = _strip_template(expression)
    steps = _Parser(inner, expression).parse_path(top_level=True)
    return JSONPath(expression, tuple(steps))


def _run(steps: tuple[_Step, ...] | list[_Step], node: Any, root: Any) -> Iterator[Any]:
    if not steps:
        yield node
        return
    first, rest = steps[0], steps[1:]
    for selected in first(node, root):
        yield from _run(rest, selected, root)


def _strip_template(expression: str) -> str:
    text = expression.strip()
    if not text:
        raise JSONPathError("empty JSONPath expression (use `{$}` for the whole document)")
    if not text.startswith("{"):
        if text.startswith(("$", "@", ".", "[")):
            return text
        raise JSONPathError(f"JSONPath {expression!r} must be a `{{...}}` expression, e.g. `{{$.data.value}}`")
    depth = 0
    quote: str | None = None
    escaped = False
    for i, ch in enumerate(text):
        if quote is not None:
            if escaped:
                escaped = False
            elif ch == "\\":
                escaped = True
            elif ch == quote:
                quote = None
            continue
        if ch in "'\"":
            quote = ch
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                if text[i + 1 :].strip():
                    raise JSONPathError(
                        f"JSONPath {expression!r}: only a single `{{...}}` expression is supported"
                        " (no text, `{range}` or second expression after it)"
                    )
                inner = text[1:i].strip()
                if inner.split(maxsplit=1)[:1] in (["range"], ["end"]):
                    raise JSONPathError(f"JSONPath {expression!r}: `{{range}}`/`{{end}}` are not supported")
                return inner or "$"
    raise JSONPathError(f"JSONPath {expression!r}: unclosed `{{`")


_NUMBER_RE = re.compile(r"-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?")
_INT_RE = re.compile(r"\s*-?\d+\s*")
_FIELD_STOP = set(".[]()=!<>&|,'\" \t\n{}")


class _Parser:
    def __init__(self, text: str, source: str) -> None:
        self.text = text
        self.pos = 0
        self.source = source

    # -- helpers --------------------------------------------------------------------------------

    def error(self, message: str) -> JSONPathError:
        return JSONPathError(f"JSONPath {self.source!r}: {message} at position {self.pos} of {self.text!r}")

    def peek(self, n: int = 1) -> str:
        return self.text[self.pos : self.pos + n]

    def at_end(self) -> bool:
        return self.pos >= len(self.text)

    def skip_spaces(self) -> None:
        while not self.at_end() and self.text[self.pos].isspace():
            self.pos += 1

    def expect(self, token: str) -> None:
        if not self.text.startswith(token, self.pos):
            raise self.error(f"expected {token!r}")
        self.pos += len(token)

    # -- grammar --------------------------------------------------------------------------------

    def parse_path(self, *, top_level: bool, stop: str = "") -> list[_Step]:
        """path := ('$' | '@')? segment*  — stops at end of text or at a char in `stop`."""
        steps: list[_Step] = []
        self.skip_spaces()
        if self.peek() == "$":
            self.pos += 1
            steps.append(_root)
        elif self.peek() == "@":
            self.pos += 1
        elif not top_level:
            raise self.error("expected `@` or `$`")
        while not self.at_end():
            ch = self.peek()
            if stop and (ch in stop or ch.isspace()):
                break
            if self.peek(2) == "..":
                self.pos += 2
                steps.append(_descendants)
                if self.peek() == "[":
                    steps.append(self.parse_bracket())
                else:
                    steps.append(self.parse_dot_member(after_dots=True))
            elif ch == ".":
                self.pos += 1
                if self.at_end() or self.peek() in (stop or "") or self.peek().isspace():
                    # `{.}` / `@.` — the current node itself.
                    continue
                steps.append(self.parse_dot_member(after_dots=False))
            elif ch == "[":
                steps.append(self.parse_bracket())
            elif ch.isspace() and not stop:
                self.skip_spaces()
                if not self.at_end():
                    raise self.error("unexpected text after the path")
            else:
                raise self.error(f"unexpected {ch!r}")
        return steps

    def parse_dot_member(self, *, after_dots: bool) -> _Step:
        if self.peek() == "*":
            self.pos += 1
            return _wildcard
        start = self.pos
        while not self.at_end() and self.text[self.pos] not in _FIELD_STOP:
            self.pos += 1
        name = self.text[start : self.pos]
        if not name:
            raise self.error("expected a field name" + (" after `..`" if after_dots else " after `.`"))
        return _field((name,))

    def parse_bracket(self) -> _Step:
        self.expect("[")
        self.skip_spaces()
        ch = self.peek()
        if ch == "*":
            self.pos += 1
            self.skip_spaces()
            self.expect("]")
            return _wildcard
        if ch == "?":
            self.pos += 1
            self.skip_spaces()
            self.expect("(")
            predicate = self.parse_filter()
            self.skip_spaces()
            self.expect(")")
            self.skip_spaces()
            self.expect("]")
            return _filter(predicate)
        if ch in "'\"":
            names = [self.parse_string()]
            self.skip_spaces()
            while self.peek() == ",":
                self.pos += 1
                self.skip_spaces()
                names.append(self.parse_string())
                self.skip_spaces()
            self.expect("]")
            return _field(tuple(names))
        end = self.text.find("]", self.pos)
        if end < 0:
            raise self.error("unclosed `[`")
        body = self.text[self.pos : end]
        self.pos = end + 1
        if ":" in body:
            parts = body.split(":")
            if len(parts) > 3 or not all(p.strip() == "" or _INT_RE.fullmatch(p) for p in parts):
                raise self.error(f"invalid slice [{body}]")
            bounds = [int(p) if p.strip() else None for p in parts]
            while len(bounds) < 3:
                bounds.append(None)
            if bounds[2] == 0:
                raise self.error("slice step cannot be 0")
            return _slice(bounds[0], bounds[1], bounds[2])
        items = body.split(",")
        if not all(_INT_RE.fullmatch(item) for item in items):
            raise self.error(f"invalid subscript [{body}] (expected an index, a slice, `*`, a quoted key or a filter)")
        return _indexes(tuple(int(item) for item in items))

    def parse_string(self) -> str:
        quote = self.peek()
        if quote not in "'\"":
            raise self.error("expected a quoted string")
        self.pos += 1
        out: list[str] = []
        while not self.at_end():
            ch = self.text[self.pos]
            self.pos += 1
            if ch == "\\" and not self.at_end():
                out.append(self.text[self.pos])
                self.pos += 1
            elif ch == quote:
                return "".join(out)
            else:
                out.append(ch)
        raise self.error("unterminated string")

    def parse_filter(self) -> Callable[[Any, Any], bool]:
        left = self.parse_operand()
        self.skip_spaces()
        for op in ("==", "!=", "<=", ">=", "<", ">"):
            if self.text.startswith(op, self.pos):
                self.pos += len(op)
                right = self.parse_operand()
                return _comparison(left, op, right)
        return lambda node, root: left(node, root) is not _MISSING

    def parse_operand(self) -> Callable[[Any, Any], Any]:
        self.skip_spaces()
        ch = self.peek()
        if ch in ("@", "$"):
            steps = tuple(self.parse_path(top_level=False, stop=")=!<>&|"))

            def resolve(node: Any, root: Any) -> Any:
                found = list(_run(steps, node, root))
                return found[0] if found else _MISSING

            return resolve
        if ch in "'\"":
            return _constant(self.parse_string())
        for word, value in (("true", True), ("false", False), ("null", None)):
            if self.text.startswith(word, self.pos):
                self.pos += len(word)
                return _constant(value)
        match = _NUMBER_RE.match(self.text, self.pos)
        if match:
            self.pos = match.end()
            return _constant(float(match.group()))
        raise self.error("expected `@...`, a number, a quoted string, true, false or null in the filter")


def _constant(value: Any) -> Callable[[Any, Any], Any]:
    def operand(node: Any, root: Any) -> Any:
        return value

    return operand


# -- steps ---------------------------------------------------------------------------------------


def _root(node: Any, root: Any) -> Iterator[Any]:
    yield root


def _children(node: Any) -> Iterator[Any]:
    if isinstance(node, dict):
        yield from node.values()
    elif isinstance(node, list):
        yield from node


def _wildcard(node: Any, root: Any) -> Iterator[Any]:
    yield from _children(node)


def _descendants(node: Any, root: Any) -> Iterator[Any]:
    """The node itself and everything below it, pre-order (the step after `..` then selects)."""
    yield node
    for child in _children(node):
        yield from _descendants(child, root)


def _field(names: tuple[str, ...]) -> _Step:
    def step(node: Any, root: Any) -> Iterator[Any]:
        if isinstance(node, dict):
            for name in names:
                if name in node:
                    yield node[name]

    return step


def _indexes(indexes: tuple[int, ...]) -> _Step:
    def step(node: Any, root: Any) -> Iterator[Any]:
        if isinstance(node, list):
            for index in indexes:
                if -len(node) <= index < len(node):
                    yield node[index]

    return step


def _slice(start: int | None, end: int | None, stride: int | None) -> _Step:
    def step(node: Any, root: Any) -> Iterator[Any]:
        if isinstance(node, list):
            yield from node[start:end:stride]

    return step


def _filter(predicate: Callable[[Any, Any], bool]) -> _Step:
    def step(node: Any, root: Any) -> Iterator[Any]:
        for child in _children(node):
            if predicate(child, root):
                yield child

    return step


def _is_number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def _comparison(
    left: Callable[[Any, Any], Any], op: str, right: Callable[[Any, Any], Any]
) -> Callable[[Any, Any], bool]:
    def predicate(node: Any, root: Any) -> bool:
        a, b = left(node, root), right(node, root)
        if a is _MISSING or b is _MISSING:
            return False
        if op in ("==", "!="):
            if _is_number(a) and _is_number(b):
                equal = float(a) == float(b)
            elif _is_number(a) or _is_number(b):
                equal = False
            else:
                equal = type(a) is type(b) and a == b
            return equal if op == "==" else not equal
        if _is_number(a) and _is_number(b):
            x, y = float(a), float(b)
        elif isinstance(a, str) and isinstance(b, str):
            return {"<": a < b, "<=": a <= b, ">": a > b, ">=": a >= b}[op]
        else:
            return False
        return {"<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]

    return predicate
