"""The demo's flow with real processes and a real Prometheus: v2 promoted, v3 rolled back in under 1 s.

This is the walking skeleton's end-to-end proof: pods are OS processes behind the embedded
proxy, Prometheus scrapes the proxy, the analysis queries Prometheus, and the failing
verdict must move all traffic back to stable within one second, losing no request.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollouts.demo.runner import run_demo

pytestmark = pytest.mark.integration


async def test_demo_flow_with_real_prometheus(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    result = await run_demo(fast=True, state=tmp_path / "state.db", use_prometheus=True)
    out = capsys.readouterr().out
    assert result.error is None, out
    assert result.analysis_source == "prometheus"
    assert [(o.version, o.result) for o in result.outcomes] == [
        ("v1", "Deployed"),
        ("v2", "Promoted"),
        ("v3", "Aborted (rolled back)"),
    ]
    assert "assessed Failed" in result.outcomes[2].detail
    assert result.rollback_seconds is not None and result.rollback_seconds < 1.0, out
    assert result.traffic is not None
    assert result.traffic.platform_failures == 0, out
    assert result.traffic.versions["v2"] > 0 and result.traffic.versions["v3"] > 0
    assert result.ok
