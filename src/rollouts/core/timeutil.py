"""RFC3339 timestamps as Kubernetes writes them (`2026-11-26T05:00:00Z`)."""

from __future__ import annotations

from datetime import UTC, datetime
from functools import lru_cache


# Cached: a reconcile formats its `now` 5-10 times (conditions, pauses, durations) and
# strftime was ~2 % of a reconcile. Equal datetimes format alike (same instant), and the
# few distinct moments in use at once (this reconcile's `now`, recorded deadlines) fit.
@lru_cache(maxsize=256)
def to_rfc3339(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def to_rfc3339_micro(moment: datetime) -> str:
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def parse_rfc3339(text: str | None) -> datetime | None:
    if not text:
        return None
    value = text.strip()
    if value.endswith("Z"):
        value = value[:-1] + "+00:00"
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
