"""A canary through `EmbeddedHost(proxy_process=True)`: the proxy in its own process, no request lost.

The `canary` scenario of `bench/zero_downtime.py` (setWeight 20/40/60/80 with pauses, then
promotion, under 50 requests/s through the stable Service), with the data plane in a child
process: every routing swap crosses the control channel. Then the admin listener's `/metrics`
shows the controller's series and the proxy's, the proxy process killed with SIGKILL comes back
on its own with the rollout's routing, and closing the host leaves no proxy process and no
listener behind.
"""

from __future__ import annotations

import asyncio
import os
import signal
from pathlib import Path

import httpx
import pytest
from bench.common import embedded_host
from bench.zero_downtime import HttpxLoad, Load, run_scenarios
from prometheus_client.parser import text_string_to_metric_families

from rollouts.platform.embedded.proxy_process import ProxyProcess
from tests.embedded.test_proxy_process import alive, port_free

pytestmark = pytest.mark.integration


async def test_canary_with_the_proxy_in_its_own_process(tmp_path: Path) -> None:
    def load_for(url: str) -> Load:
        return HttpxLoad(url, rate=50.0, concurrency=8)

    async with embedded_host(tmp_path / "state.db", admin_port=0, proxy_process=True) as host:
        proxy = host.proxy
        assert isinstance(proxy, ProxyProcess)
        [result] = await run_scenarios(host, load_for, ("canary",))
        pid = proxy.pid
        assert pid is not None and alive(pid)
        ports = set(proxy.services().values())
        assert ports and not any(port_free(p) for p in ports)
        async with httpx.AsyncClient(timeout=10.0) as client:
            text = (await client.get(f"http://127.0.0.1:{host.admin_port}/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}
        assert any(s.labels.get("name") == "zd-canary" for s in families["rollout_info"].samples)
        proxied = sum(
            s.value
            for s in families["rollouts_proxy_requests"].samples
            if s.name.endswith("_total") and s.labels["service"] == "zd-canary"
        )
        assert proxied >= result.load.sent  # (the readiness checks of the load count too)

        # The proxy process dies (an OOM kill, say): the supervisor brings it back with the
        # Service on its port and v2 behind it, while the controller goes on.
        [stable] = [port for name, port in proxy.services().items() if name.endswith("zd-canary")]
        os.kill(pid, signal.SIGKILL)
        answered: httpx.Response | None = None
        async with httpx.AsyncClient(timeout=2.0) as client, asyncio.timeout(30):
            while answered is None or proxy.pid == pid:
                await asyncio.sleep(0.1)
                try:
                    answered = await client.get(f"http://127.0.0.1:{stable}/")
                except httpx.TransportError:
                    answered = None  # (down until the new child listens)
        assert answered.status_code == 200 and answered.json()["version"] == "v2", answered.text
        assert proxy.restarts == 1 and proxy.pid is not None and proxy.pid != pid
        pid = proxy.pid

    load = result.load
    assert load.sent > 0 and load.failed == 0 and load.sent == load.ok, (load, result.timeline)
    assert set(load.versions) == {"v1", "v2"}, load.versions
    assert not alive(pid), "closing the host reaps the proxy process"
    assert all(port_free(p) for p in ports)
