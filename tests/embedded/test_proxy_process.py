"""The proxy in a child process (`ProxyProcess`): the same data plane, driven over a channel.

Real in-process backends, a real child process running `ProxyServer`; each test is bounded and
checks that the child is gone and its ports are free at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections import Counter
from collections.abc import AsyncIterator, Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollouts.controller.admin import ControllerMetrics
from rollouts.platform.embedded.proxy import PortInUseError
from rollouts.platform.embedded.proxy_process import ProxyProcess, ProxyProcessError
from rollouts.platform.embedded.routing import RoutingTable
from tests.embedded.conftest import BackendFactory, table

T = 20.0  # bound of each test, seconds (a child process starts in ~0.3 s)

ProcessFactory = Callable[..., ProxyProcess]


@pytest.fixture
async def make_process() -> AsyncIterator[ProcessFactory]:
    """`make_process(**kwargs)` builds a `ProxyProcess`; each is closed, and its child checked
    gone, at the end."""
    made: list[ProxyProcess] = []

    def make(**kwargs: object) -> ProxyProcess:
        kwargs.setdefault("connect_timeout", 1.0)
        kwargs.setdefault("read_timeout", 5.0)
        kwargs.setdefault("shutdown_grace", 0.5)
        p = ProxyProcess(**kwargs)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield make
    for p in made:
        await p.close()
        if p.pid is not None:
            assert not alive(p.pid), "close() reaps the proxy process"


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


def alive(pid: int) -> bool:
    """True while `pid` runs (a zombie waiting to be reaped counts as gone)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            state = f.read().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return False
    return state not in ("Z", "X")


def port_free(port: int) -> bool:
    """No one listens on 127.0.0.1:`port` (connections in TIME_WAIT do not count)."""
    with socket.socket() as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


async def until(what: str, check: Callable[[], bool], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)


# -- services and routing -----------------------------------------------------------------------


async def test_services_are_added_routed_and_removed_in_the_child(
    make_process: ProcessFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        a, b = await backends("a"), await backends("b")
        proxy = make_process()
        first = table(("r1", [a.backend()]))
        proxy.set_routing("demo", first)  # before the child exists: sent once it is up, in order
        port = await proxy.add_service("demo", 0)
        assert proxy.pid is not None and proxy.pid != os.getpid() and alive(proxy.pid)
        assert proxy.services() == {"demo": port}
        assert proxy.routing("demo") == first
        r = await client.get(f"http://127.0.0.1:{port}/x")
        assert (r.status_code, r.headers["x-backend"]) == (200, "a")
        assert b.requests == []

        second = table(("r2", [b.backend()]))
        proxy.set_routing("demo", second)  # fire-and-forget, but before the next request's reply
        assert (await proxy.stats("demo"))["primary_revision"] == "r2"
        r = await client.get(f"http://127.0.0.1:{port}/y")
        assert r.headers["x-backend"] == "b"
        assert proxy.routing("demo") == second

        other = await proxy.add_service("other", 0)  # a service with no routing yet: 503
        assert proxy.routing("other") == RoutingTable()
        r = await client.get(f"http://127.0.0.1:{other}/")
        assert r.status_code == 503

        await proxy.remove_service("demo")
        assert proxy.services() == {"other": other}
        with pytest.raises(KeyError):
            proxy.routing("demo")
        with pytest.raises(KeyError):
            await proxy.stats("demo")  # the child forgot it too
        assert port_free(port)
        with pytest.raises(httpx.ConnectError):
            await client.get(f"http://127.0.0.1:{port}/z")


async def test_weight_changes_under_load_fail_no_request(
    make_process: ProcessFactory, backends: BackendFactory
) -> None:
    async with asyncio.timeout(T):
        a, b = await backends("a"), await backends("b")
        proxy = make_process()
        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("v1", [a.backend()]), ("v2", [b.backend()]), 0))
        url = f"http://127.0.0.1:{port}/"
        answered: Counter[str] = Counter()
        failures: list[str] = []
        stop = asyncio.Event()

        async def worker() -> None:
            async with httpx.AsyncClient(timeout=5.0) as c:
                while not stop.is_set():
                    try:
                        r = await c.get(url)
                    except httpx.HTTPError as exc:
                        failures.append(repr(exc))
                        continue
                    if r.status_code != 200:
                        failures.append(str(r.status_code))
                    else:
                        answered[r.headers["x-backend"]] += 1

        workers = [asyncio.create_task(worker()) for _ in range(6)]
        for weight in (0, 20, 40, 60, 80, 100, 50, 0, 100):
            proxy.set_routing("demo", table(("v1", [a.backend()]), ("v2", [b.backend()]), weight))
            await asyncio.sleep(0.15)
        stop.set()
        await asyncio.gather(*workers)

        assert failures == []
        assert answered["a"] > 0 and answered["b"] > 0, answered
        # After the last swap (100 % to v2), new requests all go to b.
        async with httpx.AsyncClient(timeout=5.0) as c:
            seen = {(await c.get(url)).headers["x-backend"] for _ in range(10)}
        assert seen == {"b"}


# -- errors ---------------------------------------------------------------------------------------


async def test_port_in_use_error_comes_back_from_the_child(make_process: ProcessFactory) -> None:
    async with asyncio.timeout(T):
        proxy = make_process()
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            with pytest.raises(PortInUseError, match=f'service "demo": port {port} on 127.0.0.1 is already in use'):
                await proxy.add_service("demo", port)
            with pytest.raises(PortInUseError, match=f"proxy admin: port {port} on 127.0.0.1 is in use"):
                await proxy.start_admin(port)
        assert proxy.services() == {}
        assert await proxy.add_service("demo", port) == port  # free now: the child still serves


async def test_calls_after_the_child_died_raise_a_connection_error(make_process: ProcessFactory) -> None:
    """Until it is restarted (test_proxy_process_restart.py): here not within the test."""
    async with asyncio.timeout(T):
        proxy = make_process(restart_delay=60.0)
        await proxy.add_service("demo", 0)
        assert proxy.pid is not None
        os.kill(proxy.pid, signal.SIGKILL)
        await until("the proxy process to be gone", lambda: not alive(proxy.pid or 0))
        with pytest.raises(ProxyProcessError, match=r"exited|restarted"):
            for _ in range(100):  # until the reader has seen EOF
                await proxy.add_service("other", 0)
                await asyncio.sleep(0.05)
        assert isinstance(ProxyProcessError(), OSError)  # the runtime logs and retries it


# -- metrics --------------------------------------------------------------------------------------


async def test_admin_metrics_show_the_controller_and_the_proxy(
    make_process: ProcessFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        a = await backends("a")
        controller = ControllerMetrics()
        controller.leader.set(1)
        proxy = make_process(registry=controller.registry)
        admin = await proxy.start_admin(0)
        # Before the child exists: the controller's metrics alone.
        r = await client.get(f"http://127.0.0.1:{admin}/metrics")
        assert "rollouts_controller_leader 1.0" in r.text and "rollouts_proxy_requests_total{" not in r.text
        assert proxy.pid is None, "a scrape does not start the proxy process"

        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("r1", [a.backend()])))
        for _ in range(3):
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
        r = await client.get(f"http://127.0.0.1:{admin}/metrics")
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
        families = {f.name: f for f in text_string_to_metric_families(r.text)}  # one valid exposition
        assert families["rollouts_controller_leader"].samples[0].value == 1.0
        requests = [s for s in families["rollouts_proxy_requests"].samples if s.name.endswith("_total")]
        assert [(s.labels, s.value) for s in requests] == [({"service": "demo", "revision": "r1", "code": "200"}, 3.0)]

        stats = (await client.get(f"http://127.0.0.1:{admin}/stats/demo")).json()
        assert stats["port"] == port and stats["revisions"]["r1"]["requests"] == 3
        assert set((await client.get(f"http://127.0.0.1:{admin}/stats")).json()["services"]) == {"demo"}
        assert (await client.get(f"http://127.0.0.1:{admin}/stats/nope")).status_code == 404
        assert (await client.get(f"http://127.0.0.1:{admin}/healthz")).text == "ok\n"


# -- lifetime -------------------------------------------------------------------------------------


async def test_close_stops_and_reaps_the_child_and_frees_its_ports(
    make_process: ProcessFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        a = await backends("a")
        proxy = make_process()
        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("r1", [a.backend()])))
        assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
        admin = await proxy.start_admin(0)
        pid = proxy.pid
        assert pid is not None
        await proxy.close()
        assert not alive(pid)
        assert port_free(port) and port_free(admin)
        with pytest.raises(RuntimeError, match="closed"):
            await proxy.add_service("demo", 0)
        await proxy.close()  # twice is fine


async def test_child_exits_when_its_channel_reaches_eof(make_process: ProcessFactory) -> None:
    """What the child sees when the controller dies: its end of the channel closes."""
    async with asyncio.timeout(T):
        proxy = make_process(restart_delay=60.0)  # (we live on: no restart within the test)
        port = await proxy.add_service("demo", 0)
        pid = proxy.pid
        assert pid is not None
        assert proxy._child is not None
        proxy._child.writer.transport.abort()  # our end of the socketpair, gone as if we were killed
        await until("the proxy process to exit", lambda: not alive(pid))
        assert port_free(port)


@pytest.mark.parametrize("delay", [0.0, 0.001, 0.01, 0.05, 0.2], ids=lambda d: f"{d}s")
async def test_close_soon_after_the_channel_broke_returns_and_restarts_nothing(
    make_process: ProcessFactory, delay: float
) -> None:
    """close() lands while the supervisor reaps the dead child, or just after: on Python 3.11
    the reap's `wait_for` can drop close()'s cancel (1 run in ~60 before `stop_task`), which
    once left close() waiting for a restart and the supervision after it, forever."""
    async with asyncio.timeout(T):
        proxy = make_process(restart_delay=60.0)
        await proxy.add_service("demo", 0)
        pid = proxy.pid
        assert proxy._child is not None and pid is not None
        proxy._child.writer.transport.abort()
        await asyncio.sleep(delay)
        await asyncio.wait_for(proxy.close(), 10.0)
        assert proxy.restarts == 0 and proxy.pid == pid
        assert not alive(pid)


# A controller stand-in: starts a proxy process, says where, then waits to be killed.
PARENT = """
import asyncio, sys
from rollouts.platform.embedded.proxy_process import ProxyProcess

async def main():
    proxy = ProxyProcess()
    port = await proxy.add_service("demo", 0)
    print(proxy.pid, port, flush=True)
    await asyncio.sleep(60)

asyncio.run(main())
"""


async def test_child_exits_when_the_parent_is_killed_with_sigkill() -> None:
    # An asyncio subprocess, not Popen and threads: every wait here is bounded by T, and none
    # can outlive the test (a thread blocked on the pipe would hold the event loop's shutdown).
    parent = await asyncio.create_subprocess_exec(
        sys.executable, "-c", PARENT, stdout=subprocess.PIPE, stdin=subprocess.DEVNULL, start_new_session=True
    )
    try:
        async with asyncio.timeout(T):
            assert parent.stdout is not None
            line = await parent.stdout.readline()
            pid, port = (int(x) for x in line.split())
            assert alive(pid) and not port_free(port)
            parent.kill()  # SIGKILL: no cleanup in the parent at all
            await until("the orphaned proxy process to exit", lambda: not alive(pid))
            assert port_free(port)
            await parent.wait()  # (which, on 3.11, also waits for the stdout pipe the orphan held)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(parent.pid, signal.SIGKILL)  # (the proxy process too, if the test failed)
        async with asyncio.timeout(T):
            await parent.wait()
