"""Built-in functions of expr-lang (those without closures) and the functions Argo injects.

Why re-implemented one by one: each follows the Go implementation's observable behaviour (which
argument types it accepts, what it returns for empty input, which failures become nil instead of
an error, e.g. `first([])` and `get(list, 99)` are nil while `len(nil)` is an error).

Every function receives the evaluation context so it can charge work proportional to the size of
what it builds to the step budget, which is what stops `repeat`/`join`/`split` based bombs.
This module holds the registry (`BUILTINS`, `builtin`), argument helpers, number and string
functions and Argo's functions; `datafuncs` adds collection, JSON, time and bit functions, and
closure-taking built-ins (`all`, `filter`, `map`, `reduce`, ...) live in `interpreter`.

Argo quirks kept on purpose: `isNil(x)` and `default(x, d)` ignore their first argument and look at
the metric's whole `result` (that is how Argo Rollouts binds them).
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from .errors import MAX_STRING_LENGTH, MAX_VALUE_DEPTH, ExprError
from .lexer import INT64_MAX, INT64_MIN
from .values import (
    Value,
    check_string,
    describe,
    float_to_int,
    format_value,
    is_int,
    is_number,
    type_name,
    wrap_int,
)


class Context(Protocol):
    def tick(self, amount: int = 1) -> None: ...

    def now(self) -> datetime: ...

    def result(self) -> Value: ...


Builtin = Callable[[Context, list[Value]], Value]
BUILTINS: dict[str, Builtin] = {}

_GO_INT = re.compile(r"[+-]?[0-9]+")
_GO_FLOAT = re.compile(r"[+-]?(?:(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)(?:[eE][+-]?[0-9]+)?|inf|infinity|nan)", re.I)


def builtin(name: str, min_args: int, max_args: int | None = -1) -> Callable[[Builtin], Builtin]:
    """Register a built-in with an arity check (`max_args=None` means variadic)."""
    upper = min_args if max_args == -1 else max_args

    def register(fn: Builtin) -> Builtin:
        def checked(ctx: Context, args: list[Value]) -> Value:
            if len(args) < min_args or (upper is not None and len(args) > upper):
                if upper is None:
                    expected = f"at least {min_args}"
                elif upper == min_args:
                    expected = str(min_args)
                else:
                    expected = f"{min_args} to {upper}"
                plural = "" if expected == "1" else "s"
                raise ExprError(f"{name}() expects {expected} argument{plural}, got {len(args)}")
            return fn(ctx, args)

        BUILTINS[name] = checked
        return checked

    return register


def arg_str(args: list[Value], index: int, fname: str) -> str:
    value = args[index]
    if not isinstance(value, str):
        raise ExprError(f"{fname}() argument {index + 1} must be a string, got {type_name(value)}")
    return value


def arg_list(args: list[Value], index: int, fname: str) -> list[Value]:
    value = args[index]
    if not isinstance(value, list):
        raise ExprError(f"{fname}() argument {index + 1} must be an array, got {type_name(value)}")
    return value


def arg_map(args: list[Value], index: int, fname: str) -> dict[object, Value]:
    value = args[index]
    if not isinstance(value, dict):
        raise ExprError(f"{fname}() argument {index + 1} must be a map, got {type_name(value)}")
    return value


def to_int(value: Value, fname: str) -> int:
    """Go's runtime.ToInt: ints, and floats truncated toward zero."""
    if isinstance(value, int) and not isinstance(value, bool):
        return value
    if isinstance(value, float):
        return float_to_int(value)
    raise ExprError(f"{fname}() expects an integer, got {type_name(value)}")


def parse_go_int(text: str, fname: str) -> int:
    if _GO_INT.fullmatch(text) is None:
        raise ExprError(f"{fname}(): cannot parse {text!r} as an integer")
    number = int(text)
    if not INT64_MIN <= number <= INT64_MAX:
        raise ExprError(f"{fname}(): {text!r} is out of range for an integer")
    return number


def parse_go_float(text: str, fname: str) -> float:
    if _GO_FLOAT.fullmatch(text) is None:
        raise ExprError(f"{fname}(): cannot parse {text!r} as a number")
    number = float(text)
    if math.isinf(number) and "inf" not in text.lower():
        raise ExprError(f"{fname}(): {text!r} is out of range for a float")
    return number


# -- type and number functions ---------------------------------------------------------------


@builtin("len", 1)
def _len(ctx: Context, args: list[Value]) -> Value:
    value = args[0]
    if isinstance(value, str | list | dict):
        return len(value)
    raise ExprError(f"invalid argument for len (type {type_name(value)})")


@builtin("type", 1)
def _type(ctx: Context, args: list[Value]) -> Value:
    return type_name(args[0])


@builtin("abs", 1)
def _abs(ctx: Context, args: list[Value]) -> Value:
    value = args[0]
    if is_int(value):
        return wrap_int(abs(int(value)))  # type: ignore[call-overload]
    if isinstance(value, float):
        return abs(value)
    raise ExprError(f"invalid argument for abs (type {type_name(value)})")


def _rounding(name: str, fn: Callable[[float], float]) -> None:
    def impl(ctx: Context, args: list[Value]) -> Value:
        value = args[0]
        if not is_number(value):
            raise ExprError(f"invalid argument for {name} (type {type_name(value)})")
        number = float(value)  # type: ignore[arg-type]
        if math.isnan(number) or math.isinf(number):
            return number
        return fn(number)

    builtin(name, 1)(impl)


def _round_half_away(x: float) -> float:
    whole = float(math.trunc(x))
    if abs(x - whole) >= 0.5:
        whole += math.copysign(1.0, x)
    return whole


_rounding("ceil", lambda x: float(math.ceil(x)))
_rounding("floor", lambda x: float(math.floor(x)))
_rounding("round", _round_half_away)


@builtin("int", 1)
def _int(ctx: Context, args: list[Value]) -> Value:
    value = args[0]
    if isinstance(value, str):
        return parse_go_int(value, "int")
    if is_number(value):
        return to_int(value, "int")
    raise ExprError(f"invalid argument for int (type {type_name(value)})")


@builtin("float", 1)
def _float(ctx: Context, args: list[Value]) -> Value:
    value = args[0]
    if isinstance(value, str):
        return parse_go_float(value, "float")
    if is_number(value):
        return float(value)  # type: ignore[arg-type]
    raise ExprError(f"invalid argument for float (type {type_name(value)})")


@builtin("string", 1)
def _string(ctx: Context, args: list[Value]) -> Value:
    text = check_string(format_value(args[0], ctx.tick))
    ctx.tick(len(text) // 256)
    return text


def _numbers(value: Value, fname: str, out: list[int | float], ctx: Context, depth: int = 0) -> None:
    if depth > MAX_VALUE_DEPTH:
        raise ExprError(f"{fname}(): arrays are nested too deeply")
    if isinstance(value, list):
        ctx.tick(len(value))
        for item in value:
            _numbers(item, fname, out, ctx, depth + 1)
    elif is_number(value):
        out.append(value)  # type: ignore[arg-type]
    else:
        raise ExprError(f"invalid argument for {fname} (type {type_name(value)})")


def _min_max(name: str, want_greater: bool) -> None:
    def impl(ctx: Context, args: list[Value]) -> Value:
        if len(args) == 1 and not isinstance(args[0], list) and not is_number(args[0]):
            return args[0]  # expr-lang returns a lone non-numeric argument unchanged
        numbers: list[int | float] = []
        for arg in args:
            _numbers(arg, name, numbers, ctx)
        best: int | float | None = None
        for number in numbers:
            if best is None or (best < number if want_greater else best > number):
                best = number
        return best

    builtin(name, 1, None)(impl)


_min_max("max", True)
_min_max("min", False)


@builtin("mean", 1, None)
def _mean(ctx: Context, args: list[Value]) -> Value:
    numbers: list[int | float] = []
    for arg in args:
        _numbers(arg, "mean", numbers, ctx)
    return math.fsum(numbers) / len(numbers) if numbers else 0.0


@builtin("median", 1, None)
def _median(ctx: Context, args: list[Value]) -> Value:
    numbers: list[int | float] = []
    for arg in args:
        _numbers(arg, "median", numbers, ctx)
    if not numbers:
        return 0.0
    values = sorted(float(n) for n in numbers)
    mid = len(values) // 2
    return values[mid] if len(values) % 2 else (values[mid - 1] + values[mid]) / 2


# -- strings ---------------------------------------------------------------------------------


@builtin("trim", 1, 2)
def _trim(ctx: Context, args: list[Value]) -> Value:
    text = arg_str(args, 0, "trim")
    return text.strip() if len(args) == 1 else text.strip(arg_str(args, 1, "trim"))


@builtin("trimPrefix", 1, 2)
def _trim_prefix(ctx: Context, args: list[Value]) -> Value:
    prefix = arg_str(args, 1, "trimPrefix") if len(args) == 2 else " "
    return arg_str(args, 0, "trimPrefix").removeprefix(prefix)


@builtin("trimSuffix", 1, 2)
def _trim_suffix(ctx: Context, args: list[Value]) -> Value:
    suffix = arg_str(args, 1, "trimSuffix") if len(args) == 2 else " "
    return arg_str(args, 0, "trimSuffix").removesuffix(suffix)


@builtin("upper", 1)
def _upper(ctx: Context, args: list[Value]) -> Value:
    return arg_str(args, 0, "upper").upper()


@builtin("lower", 1)
def _lower(ctx: Context, args: list[Value]) -> Value:
    return arg_str(args, 0, "lower").lower()


def _go_split(text: str, sep: str, n: int, after: bool) -> list[Value]:
    if n == 0:
        return []
    if sep == "":
        chars = list(text)
        if 0 < n < len(chars):
            return [*chars[: n - 1], "".join(chars[n - 1 :])]
        return list(chars)
    parts = text.split(sep, n - 1) if n > 0 else text.split(sep)
    if after:
        parts = [part + sep for part in parts[:-1]] + parts[-1:]
    return list(parts)


def _splitter(name: str, after: bool) -> None:
    def impl(ctx: Context, args: list[Value]) -> Value:
        text, sep = arg_str(args, 0, name), arg_str(args, 1, name)
        n = to_int(args[2], name) if len(args) == 3 else -1
        parts = _go_split(text, sep, n, after)
        ctx.tick(len(parts) + len(text) // 256)
        return parts

    builtin(name, 2, 3)(impl)


_splitter("split", False)
_splitter("splitAfter", True)


@builtin("replace", 3, 4)
def _replace(ctx: Context, args: list[Value]) -> Value:
    text, old, new = arg_str(args, 0, "replace"), arg_str(args, 1, "replace"), arg_str(args, 2, "replace")
    count = to_int(args[3], "replace") if len(args) == 4 else -1
    occurrences = text.count(old) if old else len(text) + 1
    if len(text) + occurrences * max(len(new) - len(old), 0) > MAX_STRING_LENGTH:
        raise ExprError(f"replace(): result would be longer than {MAX_STRING_LENGTH} characters")
    replaced = text.replace(old, new, count)
    ctx.tick(len(replaced) // 256 + 1)
    return replaced


@builtin("repeat", 2)
def _repeat(ctx: Context, args: list[Value]) -> Value:
    text, count = arg_str(args, 0, "repeat"), to_int(args[1], "repeat")
    if count < 0:
        raise ExprError(f"invalid argument for repeat (expected a non-negative count, got {count})")
    if len(text) * count > MAX_STRING_LENGTH:
        raise ExprError(f"repeat(): result would be longer than {MAX_STRING_LENGTH} characters")
    ctx.tick(len(text) * count // 256 + 1)
    return text * count


@builtin("join", 1, 2)
def _join(ctx: Context, args: list[Value]) -> Value:
    items = arg_list(args, 0, "join")
    glue = arg_str(args, 1, "join") if len(args) == 2 else ""
    for index, item in enumerate(items):
        if not isinstance(item, str):
            raise ExprError(f"join() expects an array of strings, element {index} is {type_name(item)}")
    joined = check_string(glue.join(items))  # type: ignore[arg-type]
    ctx.tick(len(items) + len(joined) // 256)
    return joined


@builtin("indexOf", 2)
def _index_of(ctx: Context, args: list[Value]) -> Value:
    return arg_str(args, 0, "indexOf").find(arg_str(args, 1, "indexOf"))


@builtin("lastIndexOf", 2)
def _last_index_of(ctx: Context, args: list[Value]) -> Value:
    return arg_str(args, 0, "lastIndexOf").rfind(arg_str(args, 1, "lastIndexOf"))


@builtin("hasPrefix", 2)
def _has_prefix(ctx: Context, args: list[Value]) -> Value:
    return arg_str(args, 0, "hasPrefix").startswith(arg_str(args, 1, "hasPrefix"))


@builtin("hasSuffix", 2)
def _has_suffix(ctx: Context, args: list[Value]) -> Value:
    return arg_str(args, 0, "hasSuffix").endswith(arg_str(args, 1, "hasSuffix"))


# -- functions injected by Argo Rollouts -----------------------------------------------------


@builtin("asInt", 1)
def _as_int(ctx: Context, args: list[Value]) -> Value:
    value = args[0]
    if isinstance(value, str):
        return parse_go_int(value, "asInt")
    if is_number(value):
        return to_int(value, "asInt")
    raise ExprError(f"asInt() not supported on {type_name(value)} {describe(value)}")


@builtin("asFloat", 1)
def _as_float(ctx: Context, args: list[Value]) -> Value:
    value = args[0]
    if isinstance(value, str):
        return parse_go_float(value, "asFloat")
    if is_number(value):
        return float(value)  # type: ignore[arg-type]
    raise ExprError(f"asFloat() not supported on {type_name(value)} {describe(value)}")


@builtin("isNaN", 1)
def _is_nan(ctx: Context, args: list[Value]) -> Value:
    if not is_number(args[0]):
        raise ExprError(f"isNaN() expects a number, got {type_name(args[0])}")
    return isinstance(args[0], float) and math.isnan(args[0])


@builtin("isInf", 1)
def _is_inf(ctx: Context, args: list[Value]) -> Value:
    if not is_number(args[0]):
        raise ExprError(f"isInf() expects a number, got {type_name(args[0])}")
    return isinstance(args[0], float) and math.isinf(args[0])


@builtin("isNil", 1)
def _is_nil(ctx: Context, args: list[Value]) -> Value:
    return ctx.result() is None  # Argo quirk: the argument is ignored


@builtin("default", 2)
def _default(ctx: Context, args: list[Value]) -> Value:
    result = ctx.result()  # Argo quirk: the first argument is ignored
    return args[1] if result is None else result
