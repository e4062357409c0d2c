"""Built-ins over structured data: collections, JSON/base64, time and bit operations.

Why a separate module from `builtins`: it keeps each file small; both register into the same
`BUILTINS` table through the `builtin` decorator. Functions that build collections charge the
size of what they build to the step budget (`ctx.tick`), and the Go behaviour of turning failures
into nil is kept where expr-lang has it (`first`, `last`, `get`).
"""

from __future__ import annotations

import base64
import binascii
import json
import math
from collections.abc import Callable
from datetime import datetime, timedelta
from functools import cmp_to_key

from .builtins import Context, arg_list, arg_map, arg_str, builtin, to_int
from .errors import MAX_VALUE_DEPTH, ExprError
from .timefmt import format_layout, parse_date, parse_duration
from .values import (
    Value,
    check_string,
    compare,
    describe,
    equal,
    format_value,
    go_float,
    hashable_key,
    is_int,
    is_number,
    normalize,
    type_name,
    wrap_int,
)

# -- encoding --------------------------------------------------------------------------------


def _json_string(text: str) -> str:
    out = ['"']
    for ch in text:
        code = ord(ch)
        if ch in '"\\':
            out.append("\\" + ch)
        elif ch in "\n\r\t\b\f":
            out.append({"\n": "\\n", "\r": "\\r", "\t": "\\t", "\b": "\\b", "\f": "\\f"}[ch])
        elif code < 0x20 or ch in "<>&\u2028\u2029":
            out.append(f"\\u{code:04x}")
        else:
            out.append(ch)
    out.append('"')
    return "".join(out)


def _json_float(number: float) -> str:
    if math.isnan(number) or math.isinf(number):
        raise ExprError(f"toJSON(): unsupported value {format_value(number)}")
    magnitude = abs(number)
    if magnitude != 0 and (magnitude < 1e-6 or magnitude >= 1e21):
        text = go_float(number, "e")
        if len(text) >= 4 and text[-4] == "e" and text[-3] == "-" and text[-2] == "0":
            text = text[:-2] + text[-1]
        return text
    return go_float(number, "f")


def to_json(value: Value, ctx: Context, level: int = 0) -> str:
    """Go's json.MarshalIndent(value, "", "  ")."""
    if level > MAX_VALUE_DEPTH:
        raise ExprError("toJSON(): value is nested too deeply")
    ctx.tick()
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return _json_float(value)
    if isinstance(value, str):
        return _json_string(value)
    if isinstance(value, datetime):
        return _json_string(format_layout(value, "2006-01-02T15:04:05.999999999Z07:00"))
    if isinstance(value, timedelta):
        return str(round(value / timedelta(microseconds=1)) * 1000)
    pad, inner = "  " * level, "  " * (level + 1)
    if isinstance(value, list):
        if not value:
            return "[]"
        body = ",\n".join(inner + to_json(item, ctx, level + 1) for item in value)
        return f"[\n{body}\n{pad}]"
    if isinstance(value, dict):
        if not value:
            return "{}"
        entries = sorted((format_value(key), item) for key, item in value.items())
        body = ",\n".join(f"{inner}{_json_string(k)}: {to_json(v, ctx, level + 1)}" for k, v in entries)
        return f"{{\n{body}\n{pad}}}"
    raise ExprError(f"toJSON(): unsupported value of type {type_name(value)}")


@builtin("toJSON", 1)
def _to_json(ctx: Context, args: list[Value]) -> Value:
    return check_string(to_json(args[0], ctx))


def _reject_constant(name: str) -> object:
    raise ValueError(f"invalid JSON literal {name}")


@builtin("fromJSON", 1)
def _from_json(ctx: Context, args: list[Value]) -> Value:
    text = arg_str(args, 0, "fromJSON")
    ctx.tick(len(text) // 256 + 1)
    try:
        decoded = json.loads(text, parse_int=float, parse_constant=_reject_constant)
    except (ValueError, RecursionError) as exc:
        raise ExprError(f"fromJSON(): invalid JSON: {str(exc)[:200]}") from None
    return normalize(decoded)


@builtin("toBase64", 1)
def _to_base64(ctx: Context, args: list[Value]) -> Value:
    encoded = base64.b64encode(arg_str(args, 0, "toBase64").encode()).decode("ascii")
    return check_string(encoded)


@builtin("fromBase64", 1)
def _from_base64(ctx: Context, args: list[Value]) -> Value:
    try:
        raw = base64.b64decode(arg_str(args, 0, "fromBase64"), validate=True)
    except (binascii.Error, ValueError):
        raise ExprError("fromBase64(): illegal base64 data") from None
    return raw.decode("utf-8", errors="replace")


# -- time ------------------------------------------------------------------------------------


@builtin("now", 0)
def _now(ctx: Context, args: list[Value]) -> Value:
    return ctx.now()


@builtin("duration", 1)
def _duration(ctx: Context, args: list[Value]) -> Value:
    return parse_duration(args[0])


@builtin("date", 1, 3)
def _date(ctx: Context, args: list[Value]) -> Value:
    return parse_date(args)


# -- collections -----------------------------------------------------------------------------


def fetch_or_none(container: Value, key: Value) -> Value:
    """Go's runtime.Fetch with panics turned into nil (used by first, last and get)."""
    if isinstance(container, dict):
        try:
            return container.get(hashable_key(key))
        except ExprError:
            return None
    if isinstance(container, list | str) and is_number(key):
        try:
            index = to_int(key, "get")
        except ExprError:
            return None
        if index < 0:
            index += len(container)
        return container[index] if 0 <= index < len(container) else None
    return None


@builtin("first", 1)
def _first(ctx: Context, args: list[Value]) -> Value:
    return fetch_or_none(args[0], 0)


@builtin("last", 1)
def _last(ctx: Context, args: list[Value]) -> Value:
    return fetch_or_none(args[0], -1)


@builtin("get", 2)
def _get(ctx: Context, args: list[Value]) -> Value:
    return fetch_or_none(args[0], args[1])


@builtin("take", 2)
def _take(ctx: Context, args: list[Value]) -> Value:
    items, count = arg_list(args, 0, "take"), to_int(args[1], "take")
    if count < 0:
        raise ExprError(f"take(): cannot take {count} elements")
    ctx.tick(min(count, len(items)))
    return items[:count]


@builtin("keys", 1)
def _keys(ctx: Context, args: list[Value]) -> Value:
    mapping = arg_map(args, 0, "keys")
    ctx.tick(len(mapping))
    return list(mapping)


@builtin("values", 1)
def _values(ctx: Context, args: list[Value]) -> Value:
    mapping = arg_map(args, 0, "values")
    ctx.tick(len(mapping))
    return list(mapping.values())


@builtin("toPairs", 1)
def _to_pairs(ctx: Context, args: list[Value]) -> Value:
    mapping = arg_map(args, 0, "toPairs")
    ctx.tick(len(mapping))
    return [[key, item] for key, item in mapping.items()]


@builtin("fromPairs", 1)
def _from_pairs(ctx: Context, args: list[Value]) -> Value:
    out: dict[object, Value] = {}
    for pair in arg_list(args, 0, "fromPairs"):
        if not isinstance(pair, list) or len(pair) != 2:
            raise ExprError(f"fromPairs(): invalid pair {describe(pair)} (expected [key, value])")
        out[hashable_key(pair[0])] = pair[1]
    ctx.tick(len(out))
    return out


@builtin("reverse", 1)
def _reverse(ctx: Context, args: list[Value]) -> Value:
    items = arg_list(args, 0, "reverse")
    ctx.tick(len(items))
    return items[::-1]


@builtin("uniq", 1)
def _uniq(ctx: Context, args: list[Value]) -> Value:
    out: list[Value] = []
    seen: set[tuple[str, object]] = set()
    for item in arg_list(args, 0, "uniq"):
        ctx.tick()
        if item is None or isinstance(item, bool | int | float | str):
            tag = "num" if is_number(item) else type_name(item)
            if (tag, item) in seen:
                continue
            seen.add((tag, item))
            out.append(item)
        elif not any(equal(item, other, ctx.tick) for other in out):
            ctx.tick(len(out))
            out.append(item)
    return out


@builtin("concat", 1, None)
def _concat(ctx: Context, args: list[Value]) -> Value:
    out: list[Value] = []
    for index in range(len(args)):
        part = arg_list(args, index, "concat")
        ctx.tick(len(part))
        out.extend(part)
    return out


def _flatten(items: list[Value], out: list[Value], ctx: Context, depth: int) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise ExprError("flatten(): arrays are nested too deeply")
    ctx.tick(len(items))
    for item in items:
        if isinstance(item, list):
            _flatten(item, out, ctx, depth + 1)
        else:
            out.append(item)


@builtin("flatten", 1)
def _flatten_builtin(ctx: Context, args: list[Value]) -> Value:
    out: list[Value] = []
    _flatten(arg_list(args, 0, "flatten"), out, ctx, 0)
    return out


def sort_values(items: list[Value], descending: bool, ctx: Context, keys: list[Value] | None = None) -> list[Value]:
    """Stable sort using expr-lang's `<` (mixed or unordered types are an error)."""
    ctx.tick(len(items) * max(1, len(items).bit_length()))
    order_keys = keys if keys is not None else items

    def cmp(a: int, b: int) -> int:
        x, y = order_keys[a], order_keys[b]
        if compare("<", x, y):
            return 1 if descending else -1
        if compare("<", y, x):
            return -1 if descending else 1
        return 0

    return [items[i] for i in sorted(range(len(items)), key=cmp_to_key(cmp))]


def sort_order(value: Value, fname: str) -> bool:
    if value not in ("asc", "desc"):
        raise ExprError(f'{fname}(): invalid order {describe(value)}, expected "asc" or "desc"')
    return value == "desc"


@builtin("sort", 1, 2)
def _sort(ctx: Context, args: list[Value]) -> Value:
    descending = sort_order(args[1], "sort") if len(args) == 2 else False
    return sort_values(arg_list(args, 0, "sort"), descending, ctx)


# -- bitwise ---------------------------------------------------------------------------------


def _bit_args(args: list[Value], fname: str) -> list[int]:
    for arg in args:
        if not is_int(arg):
            raise ExprError(f"{fname}() expects integers, got {type_name(arg)}")
    return [int(a) for a in args]  # type: ignore[call-overload]


def _bitfunc(name: str, fn: Callable[[int, int], int]) -> None:
    def impl(ctx: Context, args: list[Value]) -> Value:
        x, y = _bit_args(args, name)
        if (name.startswith("bitsh") or name == "bitushr") and y < 0:
            raise ExprError(f"invalid operation: negative shift count {y}")
        return wrap_int(fn(x, y))

    builtin(name, 2)(impl)


_bitfunc("bitand", lambda x, y: x & y)
_bitfunc("bitor", lambda x, y: x | y)
_bitfunc("bitxor", lambda x, y: x ^ y)
_bitfunc("bitnand", lambda x, y: x & ~y)
_bitfunc("bitshl", lambda x, y: 0 if y >= 64 else x << y)
_bitfunc("bitshr", lambda x, y: x >> min(y, 63))
_bitfunc("bitushr", lambda x, y: 0 if y >= 64 else (x % 2**64) >> y)


@builtin("bitnot", 1)
def _bitnot(ctx: Context, args: list[Value]) -> Value:
    return wrap_int(~_bit_args(args, "bitnot")[0])
