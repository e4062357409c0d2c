"""Traffic keeps flowing: no request fails during a full canary, a promotion, an abort, a blue/green cutover.

The scenarios are `bench/zero_downtime.py`'s (one in-process `EmbeddedHost`, real pod
processes, the built-in proxy), driven here by the demo's in-process traffic generator at
50 requests/s through each rollout's stable (active) Service, from before the operation until
the replaced pods are stopped and gone. The demo app never answers anything but 200 for v1
and v2, so every non-200 answer and every connection error is a request the platform lost.
Behaviour only: no timing is asserted.
"""

from __future__ import annotations

import contextlib
import os
from pathlib import Path

import pytest
from bench.common import embedded_host
from bench.zero_downtime import SCENARIOS, HttpxLoad, Load, ScenarioResult, run_scenarios

from rollouts.store.sqlite import SqliteStore

pytestmark = pytest.mark.integration


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


async def test_no_request_fails_during_canary_promote_abort_and_blue_green(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    pids: set[int] = set()

    def load_for(url: str) -> Load:
        return HttpxLoad(url, rate=50.0, concurrency=8)

    async with embedded_host(state, admin_port=0) as host:

        def note_pids(_: ScenarioResult) -> None:
            for pod in host.store.list("Pod"):
                pids.update(int(p) for p in (pod.get("status") or {}).get("pids") or [])

        results = await run_scenarios(host, load_for, SCENARIOS, on_result=note_pids)

    report = "\n".join(
        f"{r.name}: {r.load.sent} sent, {r.load.failed} failed {r.load.failures}, answered by {r.load.versions}; "
        + "; ".join(f"{t:.1f}s {what}" for t, what in r.timeline)
        for r in results
    )
    assert [r.name for r in results] == list(SCENARIOS)
    for r in results:
        assert r.load.sent > 0, report
        assert r.load.failed == 0, report
        assert r.load.sent == r.load.ok, report
        # The operation happened under load: both revisions answered requests through the Service.
        assert set(r.load.versions) == {"v1", "v2"}, report

    # Everything the host started is gone: no Pod objects left, no pod process alive.
    store = SqliteStore(state)
    try:
        assert store.list("Pod") == []
    finally:
        store.close()
    assert pids, "pods were running during the scenarios"
    with contextlib.suppress(ChildProcessError):
        assert [pid for pid in pids if _alive(pid)] == []
