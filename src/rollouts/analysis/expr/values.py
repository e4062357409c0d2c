"""Runtime values and the operations whose semantics must match Go/expr-lang exactly.

Why this module exists: Python's own operators disagree with expr-lang in ways that change the
outcome of a condition: `True == 1` is true in Python but false in expr, `1/0` raises instead of
giving +Inf, ints never overflow (Go's int64 wraps), `str(1e6)` is "1000000.0" where Go prints
"1e+06", and comparing a string with a number must be an error, not False. Every operation the
interpreter performs on values goes through the helpers here.

The value domain is closed: None, bool, int (int64), float, str, list, dict, datetime (always
timezone-aware) and timedelta. `normalize` converts whatever the caller passes in (tuples,
Decimal, huge ints, naive datetimes) into that domain and rejects anything else, so no foreign
Python object, and none of its attributes, is ever reachable from an expression.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from decimal import Decimal

from .errors import MAX_STRING_LENGTH, MAX_VALUE_DEPTH, ExprError
from .lexer import INT64_MAX, INT64_MIN

Value = object
Tick = Callable[[int], None]


def type_name(value: Value) -> str:
    """expr-lang's name for the type of `value` (as returned by `type()`)."""
    if value is None:
        return "nil"
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, float):
        return "float"
    if isinstance(value, str):
        return "string"
    if isinstance(value, list):
        return "array"
    if isinstance(value, dict):
        return "map"
    if isinstance(value, datetime):
        return "time.Time"
    if isinstance(value, timedelta):
        return "time.Duration"
    return "unknown"


def is_number(value: Value) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def is_int(value: Value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def wrap_int(value: int) -> int:
    """Two's-complement int64 wrap-around, like Go's `int` on 64-bit platforms."""
    if INT64_MIN <= value <= INT64_MAX:
        return value
    return (value - INT64_MIN) % (2**64) + INT64_MIN


def float_to_int(value: float, what: str = "int") -> int:
    """Truncate toward zero; NaN, ±Inf and values outside int64 are errors (Go leaves them undefined)."""
    if math.isnan(value) or math.isinf(value):
        raise ExprError(f"cannot convert {describe(value)} to {what}")
    truncated = int(value)
    if not INT64_MIN <= truncated <= INT64_MAX:
        raise ExprError(f"cannot convert {describe(value)} to {what}: out of range")
    return truncated


def aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)


def check_string(text: str) -> str:
    if len(text) > MAX_STRING_LENGTH:
        raise ExprError(f"string result is too long ({len(text)} characters, the limit is {MAX_STRING_LENGTH})")
    return text


def normalize(value: object, depth: int = 0) -> Value:
    """Convert a caller-supplied Python value into the closed value domain."""
    if depth > MAX_VALUE_DEPTH:
        raise ExprError(f"value is nested too deeply (the limit is {MAX_VALUE_DEPTH} levels)")
    if value is None or type(value) in (bool, str, float):
        return value
    if isinstance(value, bool):
        return bool(value)
    if isinstance(value, str):
        return str(value)  # plain str: subclasses could carry their own __eq__/__hash__
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int):
        return int(value) if INT64_MIN <= value <= INT64_MAX else float(value)
    if isinstance(value, Decimal):
        return float(value)
    if isinstance(value, datetime):
        return aware(value)
    if isinstance(value, timedelta):
        return value
    if isinstance(value, Mapping):
        out: dict[object, Value] = {}
        for key, item in value.items():
            if not (key is None or isinstance(key, bool | int | float | str)):
                raise ExprError(f"map keys must be strings or numbers, not {type(key).__name__}")
            out[normalize(key, depth + 1)] = normalize(item, depth + 1)
        return out
    if isinstance(value, Sequence) and not isinstance(value, bytes | bytearray | memoryview):
        return [normalize(item, depth + 1) for item in value]
    raise ExprError(f"values of Python type {type(value).__name__} are not supported in expressions")


def equal(a: Value, b: Value, tick: Tick | None = None, depth: int = 0) -> bool:
    """expr-lang `==`: numbers compare by value across int/float, no other cross-type equality.

    `tick` is charged for every container element compared, so comparing huge values costs steps.
    """
    if depth > MAX_VALUE_DEPTH:
        raise ExprError("values are nested too deeply to compare")
    if is_number(a) and is_number(b):
        return a == b
    if a is None or b is None:
        return a is None and b is None
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, str) and isinstance(b, str):
        return a == b
    if isinstance(a, datetime) and isinstance(b, datetime):
        return aware(a) == aware(b)
    if isinstance(a, timedelta) and isinstance(b, timedelta):
        return a == b
    if isinstance(a, list) and isinstance(b, list):
        if len(a) != len(b):
            return False
        if tick is not None:
            tick(len(a))
        return all(equal(x, y, tick, depth + 1) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict) and isinstance(b, dict):
        if len(a) != len(b):
            return False
        if tick is not None:
            tick(len(a))
        return all(key in b and equal(item, b[key], tick, depth + 1) for key, item in a.items())
    return False


def compare(op: str, a: Value, b: Value) -> bool:
    """expr-lang `<`, `>`, `<=`, `>=`: numbers, strings, times and durations; anything else errors."""
    left: float | int | str | datetime | timedelta
    right: float | int | str | datetime | timedelta
    if is_number(a) and is_number(b):
        left, right = a, b  # type: ignore[assignment]
    elif isinstance(a, str) and isinstance(b, str):
        left, right = a, b
    elif isinstance(a, datetime) and isinstance(b, datetime):
        left, right = aware(a), aware(b)
    elif isinstance(a, timedelta) and isinstance(b, timedelta):
        left, right = a, b
    else:
        raise ExprError(f"invalid operation: {type_name(a)} {op} {type_name(b)} (mismatched types)")
    if op == "<":
        return left < right  # type: ignore[operator]
    if op == ">":
        return left > right  # type: ignore[operator]
    if op == "<=":
        return left <= right  # type: ignore[operator]
    return left >= right  # type: ignore[operator]


def truthy_bool(value: Value, what: str) -> bool:
    """Require a bool (expr-lang never coerces other values to bool)."""
    if isinstance(value, bool):
        return value
    raise ExprError(f"{what} must be a bool, got {type_name(value)}")


def hashable_key(value: Value) -> object:
    """A map key: only nil, bools, numbers and strings can be keys."""
    if value is None or isinstance(value, bool | int | float | str):
        return value
    raise ExprError(f"cannot use a {type_name(value)} as a map key")


# -- formatting ------------------------------------------------------------------------------


def _float_digits(value: float) -> tuple[str, int]:
    """Shortest round-trip decimal digits of abs(value) (no trailing zeros) and the point position.

    For 1234.5 this is ("12345", 4): the value is 0.12345 * 10**4.
    """
    parts = Decimal(repr(abs(value))).as_tuple()
    digits = "".join(str(d) for d in parts.digits).lstrip("0") or "0"
    exponent = int(parts.exponent)
    trimmed = digits.rstrip("0") or "0"
    exponent += len(digits) - len(trimmed)
    return trimmed, len(trimmed) + exponent


def go_float(value: float, style: str) -> str:
    """Go's strconv.FormatFloat(value, style, -1, 64) for style 'e' or 'f' (shortest digits)."""
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    sign = "-" if math.copysign(1.0, value) < 0 else ""
    if value == 0:
        return sign + ("0e+00" if style == "e" else "0")
    digits, point = _float_digits(value)
    if style == "e":
        exp = point - 1
        mantissa = digits[0] + ("." + digits[1:] if len(digits) > 1 else "")
        return f"{sign}{mantissa}e{'-' if exp < 0 else '+'}{abs(exp):02d}"
    if point <= 0:
        return f"{sign}0.{'0' * -point}{digits}"
    if point >= len(digits):
        return sign + digits + "0" * (point - len(digits))
    return f"{sign}{digits[:point]}.{digits[point:]}"


def format_float(value: float) -> str:
    """Go's `%v` for a float64: shortest digits, exponent form when the exponent is < -4 or >= 6."""
    if math.isnan(value) or math.isinf(value) or value == 0:
        return go_float(value, "f")
    exp = _float_digits(value)[1] - 1
    return go_float(value, "e" if exp < -4 or exp >= 6 else "f")


def format_duration(delta: timedelta) -> str:
    """Go's time.Duration.String(): `1h0m0s`, `1.5s`, `250ms`, `0s`."""
    nanos = (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000
    if nanos == 0:
        return "0s"
    sign = "-" if nanos < 0 else ""
    u = abs(nanos)
    if u < 1_000_000_000:
        for unit, scale in (("ns", 1), ("µs", 1_000), ("ms", 1_000_000)):
            if u < scale * 1000:
                return sign + _fraction(u, scale) + unit
    seconds = _fraction(u % 60_000_000_000, 1_000_000_000) + "s"
    minutes_total = u // 60_000_000_000
    if minutes_total == 0:
        return sign + seconds
    hours = minutes_total // 60
    text = f"{minutes_total % 60}m{seconds}"
    return sign + (f"{hours}h{text}" if hours else text)


def _fraction(amount: int, scale: int) -> str:
    whole, rest = divmod(amount, scale)
    if rest == 0:
        return str(whole)
    width = len(str(scale)) - 1
    return f"{whole}.{str(rest).rjust(width, '0').rstrip('0')}"


def format_time(moment: datetime) -> str:
    """Go's time.Time.String(): `2024-01-02 15:04:05.5 +0000 UTC`."""
    moment = aware(moment)
    text = moment.strftime("%Y-%m-%d %H:%M:%S")
    if moment.microsecond:
        text += "." + f"{moment.microsecond:06d}".rstrip("0")
    offset = moment.utcoffset() or timedelta(0)
    minutes = int(offset.total_seconds()) // 60
    numeric = f"{'-' if minutes < 0 else '+'}{abs(minutes) // 60:02d}{abs(minutes) % 60:02d}"
    zone = "UTC" if minutes == 0 else (moment.tzname() or numeric)
    if zone.startswith("UTC") and minutes != 0:
        zone = numeric
    return f"{text} {numeric} {zone}"


def format_value(value: Value, tick: Tick | None = None, depth: int = 0) -> str:
    """Go's `fmt.Sprintf("%v", value)`, used by `string()`; `tick` is charged per container element."""
    if depth > MAX_VALUE_DEPTH:
        raise ExprError("value is nested too deeply to format")
    if value is None:
        return "<nil>"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int):
        return str(value)
    if isinstance(value, float):
        return format_float(value)
    if isinstance(value, str):
        return value
    if isinstance(value, list | dict) and tick is not None:
        tick(len(value))
    if isinstance(value, list):
        return "[" + " ".join(format_value(item, tick, depth + 1) for item in value) + "]"
    if isinstance(value, dict):
        items = sorted(value.items(), key=lambda kv: _sort_key(kv[0]))
        pairs = (f"{format_value(k, tick, depth + 1)}:{format_value(v, tick, depth + 1)}" for k, v in items)
        return "map[" + " ".join(pairs) + "]"
    if isinstance(value, datetime):
        return format_time(value)
    if isinstance(value, timedelta):
        return format_duration(value)
    return "?"


def describe(value: Value, depth: int = 0) -> str:
    """A short `%v`-like rendering for error messages (long strings and big containers elided)."""
    if isinstance(value, list):
        if depth >= 2:
            return "[...]"
        shown = [describe(item, depth + 1) for item in value[:5]]
        return "[" + " ".join(shown + (["..."] if len(value) > 5 else [])) + "]"
    if isinstance(value, dict):
        if depth >= 2:
            return "map[...]"
        items = list(value.items())[:5]
        shown = [f"{describe(k, depth + 1)}:{describe(v, depth + 1)}" for k, v in items]
        return "map[" + " ".join(shown + (["..."] if len(value) > 5 else [])) + "]"
    text = format_value(value)
    return text if len(text) <= 60 else text[:57] + "..."


def _sort_key(key: object) -> tuple[int, object]:
    if isinstance(key, bool):
        return (0, int(key))
    if isinstance(key, int | float):
        return (1, key)
    return (2, str(key))
