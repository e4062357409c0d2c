"""Dates and durations: `date()`, `duration()`, Go layouts and the time/duration methods.

Why Go layouts: expr-lang's `date(str, layout)` and `t.Format(layout)` take Go reference-time
layouts ("2006-01-02T15:04:05Z07:00"), not strftime patterns, and Argo users copy those from Go
docs. The layout is split into Go's standard chunks once (cached) and turned into either a regex
for parsing or a formatter.

Why an explicit method table: expr-lang lets expressions call Go methods such as
`now().Unix()` or `duration("1h").Seconds()`. We never look attributes up on Python objects;
instead `call_method` dispatches on a fixed allow-list of names implemented here.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta, timezone, tzinfo
from functools import lru_cache
from zoneinfo import ZoneInfo

from rollouts.core.durations import DurationError, parse_go_duration

from .errors import ExprError
from .values import Value, aware, format_duration, format_time, is_int, type_name

_MONTHS = ["January", "February", "March", "April", "May", "June", "July", "August", "September",
           "October", "November", "December"]  # fmt: skip
_DAYS = ["Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday"]

# Go's standard layout chunks, longest first within each leading character.
_CHUNKS = [
    "January", "Jan", "Monday", "Mon", "MST", "2006", "002", "01", "02", "03", "04", "05", "06",
    "_2", "__2", "15", "1", "2", "3", "4", "5", "PM", "pm",
    "-07:00:00", "-070000", "-07:00", "-0700", "-07", "Z07:00:00", "Z070000", "Z07:00", "Z0700", "Z07",
]  # fmt: skip
_CHUNKS.sort(key=len, reverse=True)
_FRACTION = re.compile(r"[.,](0+|9+)(?![0-9])")
_TZ_NAME = re.compile(r"^[A-Za-z0-9_+\-]+(/[A-Za-z0-9_+\-]+)*$")

DEFAULT_LAYOUTS = (
    "2006-01-02",
    "15:04:05",
    "2006-01-02 15:04:05",
    "2006-01-02T15:04:05Z07:00",  # RFC3339
    "02 Jan 06 15:04 MST",  # RFC822
    "Monday, 02-Jan-06 15:04:05 MST",  # RFC850
    "Mon, 02 Jan 2006 15:04:05 MST",  # RFC1123
)


@lru_cache(maxsize=128)
def _layout_chunks(layout: str) -> tuple[tuple[str, str], ...]:
    """Split a Go layout into ("std", chunk) and ("lit", text) pieces."""
    out: list[tuple[str, str]] = []
    literal: list[str] = []
    i = 0
    while i < len(layout):
        frac = _FRACTION.match(layout, i)
        chunk = frac.group(0) if frac else next((c for c in _CHUNKS if layout.startswith(c, i)), "")
        if chunk:
            if literal:
                out.append(("lit", "".join(literal)))
                literal = []
            out.append(("std", chunk))
            i += len(chunk)
        else:
            literal.append(layout[i])
            i += 1
    if literal:
        out.append(("lit", "".join(literal)))
    return tuple(out)


class _Scanner:
    """Greedy, non-backtracking reader of a value being parsed against a layout (like Go's)."""

    def __init__(self, value: str, layout: str) -> None:
        self.value, self.layout, self.i = value, layout, 0

    def fail(self, why: str = "") -> ExprError:
        suffix = f": {why}" if why else ""
        return ExprError(f"cannot parse {self.value!r} as {self.layout!r}{suffix}")

    def digits(self, least: int, most: int) -> int:
        j = self.i
        while j < len(self.value) and j - self.i < most and self.value[j] in "0123456789":
            j += 1
        if j - self.i < least:
            raise self.fail()
        number = int(self.value[self.i : j])
        self.i = j
        return number

    def literal(self, text: str) -> None:
        if not self.value.startswith(text, self.i):
            raise self.fail()
        self.i += len(text)

    def name(self, names: list[str]) -> int:
        for index, candidate in enumerate(names):
            if self.value[self.i : self.i + len(candidate)].lower() == candidate.lower():
                self.i += len(candidate)
                return index
        raise self.fail()

    def fraction(self, exact: int | None) -> int:
        """Microseconds from `.ddd`; `exact` digits are required, None means optional/any."""
        if self.i >= len(self.value) or self.value[self.i] not in ".,":
            if exact is None:
                return 0
            raise self.fail()
        j = self.i + 1
        while j < len(self.value) and self.value[j] in "0123456789":
            j += 1
        digits = self.value[self.i + 1 : j]
        if not digits or (exact is not None and len(digits) != exact):
            if exact is None and not digits:
                return 0
            raise self.fail()
        self.i = j
        return int((digits + "000000")[:6])

    def zone(self, std: str) -> tzinfo:
        rest = self.value[self.i :]
        if std.startswith("Z") and rest.startswith("Z"):
            self.i += 1
            return UTC
        if std == "MST":
            j = self.i
            while j < len(self.value) and self.value[j].isupper():
                j += 1
            if not 3 <= j - self.i <= 5:
                raise self.fail("unknown time zone abbreviation")
            self.i = j
            return UTC  # Go fabricates a zero-offset zone for abbreviations it does not know
        shape = std[1:].replace("0", "9").replace("7", "9")
        text = rest[: len(shape) + 1]
        if len(text) != len(shape) + 1 or text[0] not in "+-":
            raise self.fail()
        for want, got in zip(shape, text[1:], strict=True):
            if (want == "9" and got not in "0123456789") or (want == ":" and got != ":"):
                raise self.fail()
        self.i += len(text)
        return _parse_zone(text)


def parse_time(value: str, layout: str, location: tzinfo | None = None) -> datetime:
    """Go's time.Parse / time.ParseInLocation for one layout; ExprError when it does not match."""
    scan = _Scanner(value, layout)
    year, month, day, hour, minute, second, micro = 0, 1, 1, 0, 0, 0, 0
    pm: bool | None = None
    zone: tzinfo | None = None
    chunks = _layout_chunks(layout)
    for index, (kind, text) in enumerate(chunks):
        if kind == "lit":
            scan.literal(text)
        elif text[0] in ".,":
            micro = scan.fraction(len(text) - 1 if text[1] == "0" else None)
        elif text == "2006":
            year = scan.digits(4, 4)
        elif text == "06":
            yy = scan.digits(2, 2)
            year = yy + (1900 if yy >= 69 else 2000)
        elif text in ("01", "1"):
            month = scan.digits(len(text), 2)
        elif text in ("Jan", "January"):
            names = _MONTHS if text == "January" else [m[:3] for m in _MONTHS]
            month = scan.name(names) + 1
        elif text in ("Mon", "Monday"):
            scan.name(_DAYS if text == "Monday" else [d[:3] for d in _DAYS])
        elif text in ("02", "2", "_2"):
            if text == "_2" and value.startswith(" ", scan.i):
                scan.i += 1
            day = scan.digits(2 if text == "02" else 1, 2)
        elif text in ("002", "__2"):
            scan.digits(3 if text == "002" else 1, 3)  # day of year: accepted, not used
        elif text in ("15", "03", "3"):
            hour = scan.digits(2 if text == "03" else 1, 2)
        elif text in ("04", "4"):
            minute = scan.digits(len(text), 2)
        elif text in ("05", "5"):
            second = scan.digits(len(text), 2)
            following = chunks[index + 1] if index + 1 < len(chunks) else ("", "")
            if not (following[0] == "std" and following[1][0] in ".,"):
                micro = scan.fraction(None)  # Go accepts fractional seconds the layout omits
        elif text in ("PM", "pm"):
            marker = value[scan.i : scan.i + 2]
            if marker not in (("AM", "PM") if text == "PM" else ("am", "pm")):
                raise scan.fail()
            scan.i += 2
            pm = marker.upper() == "PM"
        else:
            zone = scan.zone(text)
    if scan.i != len(value):
        raise scan.fail(f"extra text {value[scan.i :]!r}")
    if pm is not None:
        if hour > 12:
            raise scan.fail("hour out of range")
        hour = hour % 12 + (12 if pm else 0)
    try:
        moment = datetime(max(year, 1), month, day, hour, minute, second, micro)
    except ValueError as exc:
        raise scan.fail(str(exc)) from None
    return moment.replace(tzinfo=zone or location or UTC)


def _parse_zone(text: str) -> tzinfo:
    if text.upper() == "Z" or text.isalpha():
        return UTC  # Go fabricates a zero-offset zone for unknown abbreviations too
    sign = -1 if text[0] == "-" else 1
    digits = text[1:].replace(":", "")
    hours, minutes, seconds = int(digits[:2]), int(digits[2:4] or 0), int(digits[4:6] or 0)
    if hours > 23 or minutes > 59 or seconds > 59:
        raise ExprError(f"invalid time zone offset {text!r}")
    offset = timedelta(hours=hours, minutes=minutes, seconds=seconds)
    return UTC if not offset else timezone(sign * offset)


def load_zone(name: str) -> tzinfo:
    if name in ("UTC", ""):
        return UTC
    if not _TZ_NAME.match(name) or ".." in name or len(name) > 64:
        raise ExprError(f"unknown time zone {name!r}")
    try:
        return ZoneInfo(name)
    except Exception:
        raise ExprError(f"unknown time zone {name!r}") from None


def format_layout(moment: datetime, layout: str) -> str:
    """Go's time.Time.Format(layout)."""
    out: list[str] = []
    offset = moment.utcoffset() or timedelta(0)
    total = int(offset.total_seconds())
    for kind, text in _layout_chunks(layout):
        if kind == "lit":
            out.append(text)
        elif text[0] in ".,":
            digits = f"{moment.microsecond:06d}000"[: len(text) - 1]
            if text[1] == "9":
                digits = digits.rstrip("0")
                out.append(text[0] + digits if digits else "")
            else:
                out.append(text[0] + digits)
        elif text.startswith(("-", "Z")):
            out.append(_format_zone(text, total))
        else:
            out.append(_format_std(moment, text, total))
    return "".join(out)


def _format_std(moment: datetime, text: str, total_offset: int) -> str:
    hour12 = moment.hour % 12 or 12
    table: dict[str, Callable[[], str]] = {
        "2006": lambda: f"{moment.year:04d}",
        "06": lambda: f"{moment.year % 100:02d}",
        "01": lambda: f"{moment.month:02d}",
        "1": lambda: str(moment.month),
        "January": lambda: _MONTHS[moment.month - 1],
        "Jan": lambda: _MONTHS[moment.month - 1][:3],
        "Monday": lambda: _DAYS[moment.weekday()],
        "Mon": lambda: _DAYS[moment.weekday()][:3],
        "02": lambda: f"{moment.day:02d}",
        "2": lambda: str(moment.day),
        "_2": lambda: f"{moment.day:2d}",
        "002": lambda: f"{moment.timetuple().tm_yday:03d}",
        "__2": lambda: f"{moment.timetuple().tm_yday:3d}",
        "15": lambda: f"{moment.hour:02d}",
        "03": lambda: f"{hour12:02d}",
        "3": lambda: str(hour12),
        "04": lambda: f"{moment.minute:02d}",
        "4": lambda: str(moment.minute),
        "05": lambda: f"{moment.second:02d}",
        "5": lambda: str(moment.second),
        "PM": lambda: "PM" if moment.hour >= 12 else "AM",
        "pm": lambda: "pm" if moment.hour >= 12 else "am",
        "MST": lambda: "UTC" if total_offset == 0 else _format_zone("-0700", total_offset),
    }
    return table[text]()


def _format_zone(text: str, total: int) -> str:
    if text.startswith("Z") and total == 0:
        return "Z"
    sign = "-" if total < 0 else "+"
    hours, rest = divmod(abs(total), 3600)
    minutes, seconds = divmod(rest, 60)
    body = text[1:]
    if body == "07":
        return f"{sign}{hours:02d}"
    if body == "0700":
        return f"{sign}{hours:02d}{minutes:02d}"
    if body == "07:00":
        return f"{sign}{hours:02d}:{minutes:02d}"
    if body == "070000":
        return f"{sign}{hours:02d}{minutes:02d}{seconds:02d}"
    return f"{sign}{hours:02d}:{minutes:02d}:{seconds:02d}"


def parse_date(args: list[Value]) -> datetime:
    """The `date(str[, layout[, timezone]])` built-in."""
    if not 1 <= len(args) <= 3:
        raise ExprError(f"date() expects 1 to 3 arguments, got {len(args)}")
    for index, arg in enumerate(args):
        if not isinstance(arg, str):
            raise ExprError(f"date() argument {index + 1} must be a string, got {type_name(arg)}")
    text = str(args[0])
    zone = load_zone(str(args[2])) if len(args) == 3 else None
    if len(args) >= 2:
        return parse_time(text, str(args[1]), zone)
    for layout in DEFAULT_LAYOUTS:
        try:
            return parse_time(text, layout, zone)
        except ExprError:
            continue
    raise ExprError(f"invalid date {text!r} (expected e.g. 2006-01-02, 2006-01-02 15:04:05 or RFC3339)")


def parse_duration(text: Value) -> timedelta:
    """The `duration(str)` built-in: Go duration syntax such as `1h30m` or `250ms`."""
    if not isinstance(text, str):
        raise ExprError(f"duration() expects a string like '5m', got {type_name(text)}")
    try:
        return timedelta(seconds=parse_go_duration(text))
    except (DurationError, OverflowError, ValueError) as exc:
        raise ExprError(str(exc)) from None


def _nanos(delta: timedelta) -> int:
    return (delta.days * 86_400 + delta.seconds) * 1_000_000_000 + delta.microseconds * 1000


def _arg_duration(args: list[Value], name: str) -> timedelta:
    if len(args) != 1 or not isinstance(args[0], timedelta):
        raise ExprError(f"{name}() expects one duration argument")
    return args[0]


def _arg_time(args: list[Value], name: str) -> datetime:
    if len(args) != 1 or not isinstance(args[0], datetime):
        raise ExprError(f"{name}() expects one time argument")
    return aware(args[0])


def _truncate(moment: datetime, step: timedelta) -> datetime:
    if step <= timedelta(0):
        return moment
    epoch = datetime(1, 1, 1, tzinfo=moment.tzinfo)
    return moment - (moment - epoch) % step


def _add_date(moment: datetime, args: list[Value]) -> datetime:
    if len(args) != 3 or not all(is_int(a) for a in args):
        raise ExprError("AddDate() expects three integers (years, months, days)")
    years, months, days = (int(a) for a in args)  # type: ignore[call-overload]
    month_index = moment.month - 1 + months
    year = moment.year + years + month_index // 12
    first = moment.replace(year=year, month=month_index % 12 + 1, day=1)
    return first + timedelta(days=moment.day - 1 + days)


_TIME_METHODS: dict[str, Callable[[datetime, list[Value]], Value]] = {
    "Year": lambda t, a: t.year,
    "Month": lambda t, a: t.month,
    "Day": lambda t, a: t.day,
    "Hour": lambda t, a: t.hour,
    "Minute": lambda t, a: t.minute,
    "Second": lambda t, a: t.second,
    "Nanosecond": lambda t, a: t.microsecond * 1000,
    "YearDay": lambda t, a: t.timetuple().tm_yday,
    "Weekday": lambda t, a: (t.weekday() + 1) % 7,
    "Unix": lambda t, a: int(t.timestamp() // 1),
    "UnixMilli": lambda t, a: _nanos(t - datetime(1970, 1, 1, tzinfo=UTC)) // 1_000_000,
    "UnixMicro": lambda t, a: _nanos(t - datetime(1970, 1, 1, tzinfo=UTC)) // 1000,
    "UnixNano": lambda t, a: _nanos(t - datetime(1970, 1, 1, tzinfo=UTC)),
    "UTC": lambda t, a: t.astimezone(UTC),
    "String": lambda t, a: format_time(t),
    "IsZero": lambda t, a: t == datetime(1, 1, 1, tzinfo=UTC),
    "Add": lambda t, a: t + _arg_duration(a, "Add"),
    "Sub": lambda t, a: t - _arg_time(a, "Sub"),
    "Before": lambda t, a: t < _arg_time(a, "Before"),
    "After": lambda t, a: t > _arg_time(a, "After"),
    "Equal": lambda t, a: t == _arg_time(a, "Equal"),
    "Truncate": lambda t, a: _truncate(t, _arg_duration(a, "Truncate")),
    "AddDate": _add_date,
    "Format": lambda t, a: format_layout(t, _one_string(a, "Format")),
    "In": lambda t, a: t.astimezone(load_zone(_one_string(a, "In"))),
}

_DURATION_METHODS: dict[str, Callable[[timedelta, list[Value]], Value]] = {
    "Hours": lambda d, a: d.total_seconds() / 3600,
    "Minutes": lambda d, a: d.total_seconds() / 60,
    "Seconds": lambda d, a: d.total_seconds(),
    "Milliseconds": lambda d, a: _nanos(d) // 1_000_000 if d >= timedelta(0) else -(-_nanos(d) // 1_000_000),
    "Microseconds": lambda d, a: _nanos(d) // 1000 if d >= timedelta(0) else -(-_nanos(d) // 1000),
    "Nanoseconds": lambda d, a: _nanos(d),
    "String": lambda d, a: format_duration(d),
    "Abs": lambda d, a: abs(d),
}
_NO_ARGS = frozenset(
    {"Year", "Month", "Day", "Hour", "Minute", "Second", "Nanosecond", "YearDay", "Weekday", "Unix",
     "UnixMilli", "UnixMicro", "UnixNano", "UTC", "String", "IsZero", "Hours", "Minutes", "Seconds",
     "Milliseconds", "Microseconds", "Nanoseconds", "Abs"}
)  # fmt: skip


def _one_string(args: list[Value], name: str) -> str:
    if len(args) != 1 or not isinstance(args[0], str):
        raise ExprError(f"{name}() expects one string argument")
    return args[0]


def call_method(obj: Value, name: str, args: list[Value]) -> Value:
    """Call one of the allow-listed Go methods of time.Time / time.Duration."""
    if isinstance(obj, datetime):
        time_method = _TIME_METHODS.get(name)
        if time_method is not None:
            _check_no_args(name, args)
            return _guard(lambda: time_method(aware(obj), args))
    elif isinstance(obj, timedelta):
        duration_method = _DURATION_METHODS.get(name)
        if duration_method is not None:
            _check_no_args(name, args)
            return _guard(lambda: duration_method(obj, args))
    elif isinstance(obj, dict):
        raise ExprError(f"cannot call {name}(): map values are data, not methods")
    raise ExprError(f"type {type_name(obj)} has no method {name}()")


def _check_no_args(name: str, args: list[Value]) -> None:
    if name in _NO_ARGS and args:
        raise ExprError(f"{name}() takes no arguments, got {len(args)}")


def _guard(thunk: Callable[[], Value]) -> Value:
    try:
        return thunk()
    except (OverflowError, ValueError) as exc:
        raise ExprError(f"time value out of range: {exc}") from None
