"""Go-style durations (`30s`, `1h30m`, `500ms`) and Argo's "digits mean seconds" rule.

Argo Rollouts accepts pause durations as an int (seconds) or a string: a string of digits is
seconds, anything else is parsed as a Go `time.Duration`. Analysis `interval`/`initialDelay`
are always Go durations. Pure: used by the planning core and the analysis engine.
"""

from __future__ import annotations

import re

_UNIT_SECONDS = {
    "ns": 1e-9,
    "us": 1e-6,
    "µs": 1e-6,
    "μs": 1e-6,
    "ms": 1e-3,
    "s": 1.0,
    "m": 60.0,
    "h": 3600.0,
}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|μs|ms|s|m|h)")


class DurationError(ValueError):
    """A duration string that Go's time.ParseDuration would refuse."""


def parse_go_duration(text: str) -> float:
    """Seconds in a Go duration string such as `1h30m`, `250ms` or `-5s`."""
    s = text.strip()
    if not s:
        raise DurationError(f"invalid duration {text!r}: empty (use e.g. '30s', '5m', '1h')")
    sign = 1.0
    if s[0] in "+-":
        sign = -1.0 if s[0] == "-" else 1.0
        s = s[1:]
    if s == "0":
        return 0.0
    total = 0.0
    pos = 0
    while pos < len(s):
        match = _PART.match(s, pos)
        if match is None:
            raise DurationError(
                f"invalid duration {text!r}: expected a number and a unit (ns, us, ms, s, m, h), e.g. '30s'"
            )
        total += float(match.group(1)) * _UNIT_SECONDS[match.group(2)]
        pos = match.end()
    return sign * total


def parse_pause_duration(value: int | str) -> float:
    """Seconds in a canary `pause.duration`: an int, a string of digits, or a Go duration."""
    if isinstance(value, bool):
        raise DurationError(f"invalid duration {value!r}: use seconds (e.g. 30) or a string like '5m'")
    if isinstance(value, int):
        return float(value)
    if value.strip().isdigit():
        return float(int(value.strip()))
    return parse_go_duration(value)


def format_duration(seconds: float) -> str:
    """Short human form used in CLI output: `45s`, `4m5s`, `2h3m`."""
    whole = round(seconds)
    if whole < 60:
        return f"{whole}s"
    minutes, secs = divmod(whole, 60)
    if minutes < 60:
        return f"{minutes}m{secs}s" if secs else f"{minutes}m"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}h{minutes}m" if minutes else f"{hours}h"
