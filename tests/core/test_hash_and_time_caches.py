"""The caches on pure helpers return what the uncached code returned.

`pod_template_hash` is cached by the template's JSON text and `to_rfc3339` by the datetime;
each case compares with what the code returned before the cache. The hashes are pinned: stored
ReplicaSets and Services are named and selected by them, so they must never change.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest

from rollouts.core.hashing import HASH_LABEL, pod_template_hash
from rollouts.core.timeutil import to_rfc3339

TEMPLATE: dict[str, Any] = {
    "metadata": {"labels": {"app": "a"}},
    "spec": {"containers": [{"name": "app", "image": "app:v1", "env": [{"name": "X", "value": "1.50"}]}]},
}


@pytest.mark.parametrize(
    ("template", "collisions", "expected"),
    [
        pytest.param(TEMPLATE, 0, "zjsvbtvmcl", id="plain"),
        pytest.param(TEMPLATE, 3, "bvgw5w2g5k", id="collision-count"),
        pytest.param(
            {**TEMPLATE, "metadata": {"labels": {"app": "a", HASH_LABEL: "zzz"}}}, 0, "zjsvbtvmcl", id="own-hash-label"
        ),
        pytest.param({"spec": {"b": 1, "a": [1.5, None, True]}}, 0, "pg755dljrk", id="key-order-and-values"),
        pytest.param({}, 0, "dk5r9nfdsl", id="empty"),
    ],
)
def test_cached_hash_is_the_uncached_hash(template: dict[str, Any], collisions: int, expected: str) -> None:
    assert pod_template_hash(template, collisions) == expected
    assert pod_template_hash(template, collisions) == expected  # now from the cache
    assert template == json.loads(json.dumps(template)), "the template is left as it was"


def test_hash_follows_the_template_content_not_its_identity() -> None:
    template = json.loads(json.dumps(TEMPLATE))
    before = pod_template_hash(template)
    template["spec"]["containers"][0]["image"] = "app:v2"
    assert pod_template_hash(template) == "hr964kxm2f" != before
    template["spec"]["containers"][0]["image"] = "app:v1"
    assert pod_template_hash(template) == before


def test_hash_label_does_not_change_the_hash() -> None:
    labelled = json.loads(json.dumps(TEMPLATE))
    labelled["metadata"]["labels"][HASH_LABEL] = pod_template_hash(TEMPLATE)
    assert pod_template_hash(labelled) == pod_template_hash(TEMPLATE)


@pytest.mark.parametrize(
    "moment",
    [
        pytest.param(datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC), id="utc"),
        pytest.param(datetime(2026, 11, 26, 14, 0, 0, tzinfo=timezone(timedelta(hours=2))), id="same-instant-plus-2h"),
        pytest.param(datetime(2026, 11, 26, 12, 0, 0, 999999, tzinfo=UTC), id="microseconds-dropped"),
    ],
)
def test_cached_rfc3339_is_the_uncached_format(moment: datetime) -> None:
    expected = moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    assert to_rfc3339(moment) == expected
    assert to_rfc3339(moment) == expected
    assert expected == "2026-11-26T12:00:00Z"
