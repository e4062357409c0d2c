"""Binary operators with Go/expr-lang semantics.

Why separate from the interpreter: these are pure functions of two values (plus a work callback
for the ones that scale with input size), which keeps them easy to test and keeps the tree walker
about control flow only. Arithmetic follows Go: int64 wrap-around, `/` always produces a float
(1/0 is +Inf, 0/0 is NaN), `%` is defined only for integers (truncated, dividend's sign), and
`**`/`^` always produce a float. Time arithmetic covers time ± duration, time - time, duration
± duration and duration * number.
"""

from __future__ import annotations

import math
from datetime import datetime, timedelta

from . import regex
from .errors import MAX_RANGE, ExprError
from .values import (
    Tick,
    Value,
    aware,
    check_string,
    compare,
    equal,
    hashable_key,
    is_int,
    is_number,
    type_name,
    wrap_int,
)


def _mismatch(op: str, a: Value, b: Value) -> ExprError:
    return ExprError(f"invalid operation: {type_name(a)} {op} {type_name(b)} (mismatched types)")


def go_divide(a: float, b: float) -> float:
    if b == 0:
        if a == 0 or math.isnan(a):
            return math.nan
        return math.copysign(math.inf, a) * math.copysign(1.0, b)
    try:
        return a / b
    except OverflowError:
        return math.copysign(math.inf, a) * math.copysign(1.0, b)


def go_pow(a: float, b: float) -> float:
    """Go's math.Pow, which returns ±Inf/NaN where Python's math.pow raises."""
    b_is_odd_int = b.is_integer() and abs(b) < 2**53 and int(b) % 2 == 1
    try:
        return math.pow(a, b)
    except OverflowError:
        return -math.inf if (a < 0 and b_is_odd_int) else math.inf
    except ValueError:
        if a == 0 and b < 0:
            return math.copysign(math.inf, a) if b_is_odd_int else math.inf
        return math.nan


def _time_arith(op: str, a: Value, b: Value) -> Value:
    try:
        if op == "+":
            if isinstance(a, datetime) and isinstance(b, timedelta):
                return aware(a) + b
            if isinstance(a, timedelta) and isinstance(b, datetime):
                return aware(b) + a
            if isinstance(a, timedelta) and isinstance(b, timedelta):
                return a + b
        elif op == "-":
            if isinstance(a, datetime) and isinstance(b, datetime):
                return aware(a) - aware(b)
            if isinstance(a, datetime) and isinstance(b, timedelta):
                return aware(a) - b
            if isinstance(a, timedelta) and isinstance(b, timedelta):
                return a - b
        elif op == "*":
            if isinstance(a, timedelta) and is_number(b):
                return a * b  # type: ignore[operator]
            if is_number(a) and isinstance(b, timedelta):
                return b * a  # type: ignore[operator]
    except (OverflowError, ValueError):
        raise ExprError(f"time value out of range in {type_name(a)} {op} {type_name(b)}") from None
    raise _mismatch(op, a, b)


def arithmetic(op: str, a: Value, b: Value) -> Value:
    if is_number(a) and is_number(b):
        both_int = is_int(a) and is_int(b)
        x, y = a, b
        if op == "+":
            return wrap_int(x + y) if both_int else float(x) + float(y)  # type: ignore[operator, arg-type]
        if op == "-":
            return wrap_int(x - y) if both_int else float(x) - float(y)  # type: ignore[operator, arg-type]
        if op == "*":
            return wrap_int(x * y) if both_int else float(x) * float(y)  # type: ignore[operator, arg-type]
        if op == "/":
            return go_divide(float(x), float(y))  # type: ignore[arg-type]
        if op == "**":
            return go_pow(float(x), float(y))  # type: ignore[arg-type]
        if op == "%":
            if not both_int:
                raise ExprError(f"invalid operation: {type_name(a)} % {type_name(b)} (% needs integers)")
            if y == 0:
                raise ExprError("integer divide by zero")
            remainder = abs(int(x)) % abs(int(y))  # type: ignore[call-overload]
            return wrap_int(-remainder if int(x) < 0 else remainder)  # type: ignore[call-overload]
    if op == "+" and isinstance(a, str) and isinstance(b, str):
        return check_string(a + b)
    if isinstance(a, datetime | timedelta) or isinstance(b, datetime | timedelta):
        return _time_arith(op, a, b)
    raise _mismatch(op, a, b)


def membership(needle: Value, haystack: Value, tick: Tick) -> bool:
    """expr-lang `in`: array element (by `==`), map key; `x in nil` is false."""
    if haystack is None:
        return False
    if isinstance(haystack, list):
        tick(len(haystack))
        return any(equal(needle, item, tick) for item in haystack)
    if isinstance(haystack, dict):
        return hashable_key(needle) in haystack
    raise ExprError(f'operator "in" not defined on {type_name(haystack)}')


def make_range(a: Value, b: Value, tick: Tick) -> list[Value]:
    if not (is_int(a) and is_int(b)):
        raise ExprError(f"invalid operation: {type_name(a)} .. {type_name(b)} (a range needs integers)")
    low, high = int(a), int(b)  # type: ignore[call-overload]
    size = high - low + 1
    if size > MAX_RANGE:
        raise ExprError(f"range {low}..{high} is too large ({size} elements, the limit is {MAX_RANGE})")
    if size <= 0:
        return []
    tick(size)
    return list(range(low, high + 1))


def string_op(op: str, a: Value, b: Value, tick: Tick) -> bool:
    if not (isinstance(a, str) and isinstance(b, str)):
        raise ExprError(f"invalid operation: {type_name(a)} {op} {type_name(b)} ({op} needs two strings)")
    if op == "contains":
        return b in a
    if op == "startsWith":
        return a.startswith(b)
    if op == "endsWith":
        return a.endswith(b)
    return regex.search(b, a, tick)


def apply_binary(op: str, a: Value, b: Value, tick: Tick) -> Value:
    """Evaluate every binary operator except the short-circuiting `&&`, `||` and `??`."""
    if op == "==":
        return equal(a, b, tick)
    if op == "!=":
        return not equal(a, b, tick)
    if op in ("<", ">", "<=", ">="):
        return compare(op, a, b)
    if op == "in":
        return membership(a, b, tick)
    if op in ("contains", "startsWith", "endsWith", "matches"):
        return string_op(op, a, b, tick)
    if op == "..":
        return make_range(a, b, tick)
    result = arithmetic(op, a, b)
    if isinstance(result, str):
        tick(len(result) // 256)  # copying long strings is work too
    return result
