"""Supervision of the proxy process: a child that dies is started again, with its services and
routing, and a child that keeps dying is started again less and less often.

Real child processes killed with SIGKILL, real in-process backends. The backoff's waits go
through an injected `sleep` (recorded, and held open where a test needs the child to stay down),
its idea of up time through an injected clock: no test waits for wall time to pass, each polls
for what it expects within a bound, and each checks that no child is left at the end.
"""

from __future__ import annotations

import asyncio
import glob
import logging
import os
import signal
import socket
from collections import Counter
from collections.abc import Awaitable, Callable

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollouts.platform.embedded.proxy_process import ProxyProcess, ProxyProcessError
from rollouts.platform.embedded.routing import RoutingTable
from tests.embedded.conftest import BackendFactory, table
from tests.embedded.test_proxy_process import ProcessFactory, alive, make_process, port_free, until

__all__ = ["make_process"]  # (the fixture, imported to be used here)

T = 20.0  # bound of each test, seconds
BACK = 10.0  # bound for a killed child's services to answer again


class Backoff:
    """An injected `sleep` for the restart backoff: records each delay; returns at once unless
    `hold()` was called, then waits for `release()` (the child stays down meanwhile)."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.sleeping = asyncio.Event()
        self._open = asyncio.Event()
        self._open.set()

    async def __call__(self, delay: float) -> None:
        self.delays.append(delay)
        self.sleeping.set()
        await self._open.wait()
        await asyncio.sleep(0)

    def hold(self) -> None:
        self.sleeping.clear()
        self._open.clear()

    def release(self) -> None:
        self._open.set()


async def backend_of(client: httpx.AsyncClient, port: int) -> str | None:
    """Which backend answered a request to the proxy on `port`; None when it did not answer."""
    try:
        r = await client.get(f"http://127.0.0.1:{port}/")
    except httpx.HTTPError:
        return None
    return r.headers.get("x-backend") if r.status_code == 200 else None


async def until_true(what: str, check: Callable[[], Awaitable[bool]], timeout: float = BACK) -> None:
    async with asyncio.timeout(timeout):
        while not await check():
            await asyncio.sleep(0.05)
    assert await check(), what


def proxy_children() -> set[int]:
    """Our child processes that run the proxy worker (zombies excluded)."""
    pids: set[int] = set()
    for path in glob.glob(f"/proc/{os.getpid()}/task/*/children"):
        with open(path) as f:
            pids |= {int(p) for p in f.read().split()}
    found = set()
    for pid in pids:
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as f:
                cmdline = f.read()
        except FileNotFoundError:
            continue
        if b"proxy_worker" in cmdline and alive(pid):
            found.add(pid)
    return found


async def kill_child(proxy: ProxyProcess) -> int:
    """SIGKILL the current child; its pid once it is gone."""
    pid = proxy.pid
    assert pid is not None and alive(pid)
    os.kill(pid, signal.SIGKILL)
    await until(f"proxy process {pid} to be gone", lambda: not alive(pid))
    return pid


async def restarted(proxy: ProxyProcess, count: int) -> None:
    await until(f"restart {count}", lambda: proxy.restarts >= count and proxy._child is not None, BACK)


# -- restart and restore --------------------------------------------------------------------------


async def test_a_killed_child_comes_back_with_its_services_and_weights(
    make_process: ProcessFactory,
    backends: BackendFactory,
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.WARNING, logger="rollouts.platform.embedded.proxy_process")
    async with asyncio.timeout(T), httpx.AsyncClient(timeout=2.0) as client:
        a, b = await backends("a"), await backends("b")
        proxy = make_process()
        one = await proxy.add_service("one", 0)
        two = await proxy.add_service("two", 0, "127.0.0.1")
        proxy.set_routing("one", table(("r1", [b.backend()])))
        proxy.set_routing("two", table(("v1", [a.backend()]), ("v2", [b.backend()]), 25))
        assert await backend_of(client, one) == "b"
        admin = await proxy.start_admin(0)
        first = await kill_child(proxy)

        await until_true("both services to answer again", lambda: _both_answer(client, one, two))
        assert proxy.pid != first and proxy.pid is not None and alive(proxy.pid)
        assert proxy.restarts == 1
        assert proxy.services() == {"one": one, "two": two}  # on the ports they had
        # The weights came back: a fresh balancer gives exactly 25 % of 20 requests to v2.
        seen = Counter([await backend_of(client, two) for _ in range(20)])
        assert seen == Counter({"a": 15, "b": 5})
        assert {await backend_of(client, one) for _ in range(5)} == {"b"}
        stats = await proxy.stats("two")
        assert (stats["canary_weight"], stats["primary_revision"], stats["canary_revision"]) == (25, "v1", "v2")

        text = (await client.get(f"http://127.0.0.1:{admin}/metrics")).text
        families = {f.name: f for f in text_string_to_metric_families(text)}  # still one exposition
        [restarts] = [s for s in families["rollouts_proxy_process_restarts"].samples if s.name.endswith("_total")]
        assert restarts.value == 1.0
        assert "rollouts_proxy_requests" in families  # the new child's series
        logs = caplog.text
        assert f"the proxy process (pid {first}) was killed by SIGKILL" in logs
        assert f"proxy process restarted (pid {proxy.pid}, restart 1): 2 services" in logs


async def _both_answer(client: httpx.AsyncClient, one: int, two: int) -> bool:
    return await backend_of(client, one) == "b" and await backend_of(client, two) is not None


async def test_changes_made_while_the_child_is_down_are_what_it_comes_back_with(
    make_process: ProcessFactory, backends: BackendFactory
) -> None:
    async with asyncio.timeout(T), httpx.AsyncClient(timeout=2.0) as client:
        a, b = await backends("a"), await backends("b")
        backoff = Backoff()
        proxy = make_process(sleep=backoff)
        kept = await proxy.add_service("kept", 0)
        gone = await proxy.add_service("gone", 0)
        proxy.set_routing("kept", table(("r1", [a.backend()])))
        proxy.set_routing("gone", table(("r1", [a.backend()])))
        assert await backend_of(client, kept) == "a"

        backoff.hold()
        await kill_child(proxy)
        await asyncio.wait_for(backoff.sleeping.wait(), BACK)  # down, and staying down
        # Routing changes while down: not lost, the latest wins.
        proxy.set_routing("kept", table(("r2", [a.backend()]), ("r3", [b.backend()]), 50))
        latest = table(("r3", [b.backend()]))
        proxy.set_routing("kept", latest)
        await proxy.remove_service("gone")  # does not wait for the child, does not fail
        assert proxy.services() == {"kept": kept}
        with pytest.raises(ProxyProcessError, match=r"was killed by SIGKILL; it is being restarted"):
            await proxy.add_service("new", 0)  # fails at once (the runtime retries it)
        with pytest.raises(ProxyProcessError, match="being restarted"):
            await proxy.stats()
        assert await proxy.metrics_text() == b""

        backoff.release()
        await until_true("the kept service to answer from r3", lambda: _answers(client, kept, "b"))
        assert proxy.routing("kept") == latest
        assert (await proxy.stats("kept"))["primary_revision"] == "r3"
        with pytest.raises(KeyError):
            await proxy.stats("gone")  # the new child never had it
        assert set((await proxy.stats())["services"]) == {"kept"}
        assert port_free(gone)
        # Calls go through again, in order behind the restore.
        new = await proxy.add_service("new", 0)
        proxy.set_routing("new", table(("n1", [a.backend()])))
        assert await backend_of(client, new) == "a"
        assert await proxy.add_service("kept", kept) == kept  # no second listener: a no-op


async def _answers(client: httpx.AsyncClient, port: int, name: str) -> bool:
    return await backend_of(client, port) == name


async def test_a_port_still_held_is_retried_until_it_binds(
    make_process: ProcessFactory, backends: BackendFactory, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.WARNING, logger="rollouts.platform.embedded.proxy_process")
    async with asyncio.timeout(T), httpx.AsyncClient(timeout=2.0) as client:
        a = await backends("a")
        backoff = Backoff()
        proxy = make_process(sleep=backoff)
        held = await proxy.add_service("held", 0)
        dropped = await proxy.add_service("dropped", 0)
        proxy.set_routing("held", table(("r1", [a.backend()])))
        backoff.hold()
        await kill_child(proxy)
        await asyncio.wait_for(backoff.sleeping.wait(), BACK)
        squatters = [_listen(held), _listen(dropped)]  # as a dying child still holding them would
        try:
            backoff.release()
            await restarted(proxy, 1)
            await until("the restore to fail to bind", lambda: "cannot listen again after the restart" in caplog.text)
            await proxy.remove_service("dropped")  # while its bind is being retried
        finally:
            for s in squatters:
                s.close()
        await until_true("the held service to answer", lambda: _answers(client, held, "a"))
        assert "service held: listening again on 127.0.0.1" in caplog.text
        rebinding = proxy._rebinding
        assert rebinding is not None
        await asyncio.wait_for(rebinding, BACK)  # the retries are over...
        assert port_free(dropped), "a service removed while its bind was retried is not resurrected"
        assert proxy.services() == {"held": held}


def _listen(port: int) -> socket.socket:
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(("127.0.0.1", port))
    s.listen()
    return s


# -- backoff --------------------------------------------------------------------------------------


async def test_a_child_dying_again_and_again_is_restarted_less_and_less_often(make_process: ProcessFactory) -> None:
    async with asyncio.timeout(T):
        now = [1000.0]
        backoff = Backoff()
        proxy = make_process(
            sleep=backoff, clock=lambda: now[0], restart_delay=0.1, restart_delay_max=0.8, stable_after=10.0
        )
        port = await proxy.add_service("demo", 0)
        for count in range(1, 6):  # dies as soon as it is up: doubling from 0.1, capped at 0.8
            await kill_child(proxy)
            await restarted(proxy, count)
        assert backoff.delays == [0.1, 0.2, 0.4, 0.8, 0.8]

        now[0] += 10.0  # this one stays up for a while: its death is not part of a crash loop
        await kill_child(proxy)
        await restarted(proxy, 6)
        assert backoff.delays[5:] == [0.1]

        # A child that cannot start (a bad option makes it exit before it is ready) backs off too.
        proxy.options["no_such_option"] = 1
        await kill_child(proxy)
        await until("two failed starts", lambda: len(backoff.delays) >= 9)
        del proxy.options["no_such_option"]
        await restarted(proxy, 7)
        assert backoff.delays[6:9] == [0.2, 0.4, 0.8]  # the death's wait, then one per failed start
        assert set(backoff.delays[9:]) <= {0.8}
        assert proxy.services() == {"demo": port}
        assert (await proxy.stats("demo"))["port"] == port


# -- close during a restart -----------------------------------------------------------------------


async def test_close_during_the_backoff_leaves_no_process_and_no_port(make_process: ProcessFactory) -> None:
    async with asyncio.timeout(T):
        backoff = Backoff()
        proxy = make_process(sleep=backoff)
        ports = [await proxy.add_service("one", 0), await proxy.add_service("two", 0)]
        backoff.hold()
        dead = await kill_child(proxy)
        await asyncio.wait_for(backoff.sleeping.wait(), BACK)
        await proxy.close()
        assert proxy.pid == dead and not alive(dead)
        assert proxy_children() == set()
        assert all(port_free(p) for p in ports)
        assert proxy.restarts == 0
        with pytest.raises(RuntimeError, match="closed"):
            await proxy.add_service("one", 0)
        proxy.set_routing("one", RoutingTable())  # recorded, never sent: no child, no error


async def test_close_while_the_new_child_starts_leaves_no_process(make_process: ProcessFactory) -> None:
    async with asyncio.timeout(T):
        proxy = make_process()
        port = await proxy.add_service("one", 0)
        dead = await kill_child(proxy)
        await until("the new child to be spawned", lambda: proxy.pid != dead)
        await proxy.close()  # (its spawn may be before or after its "ready": killed either way)
        new = proxy.pid
        assert new is not None and not alive(new)
        assert proxy_children() == set()
        assert port_free(port)


class LosesOneCancel(Backoff):
    """A backoff sleep that swallows the first cancellation, as `asyncio.wait_for` does on
    Python 3.11 when what it awaits completes at that moment (gh-86296): the supervisor then
    runs on after `close()` cancelled it. This hung a whole CI run in `close()`."""

    def __init__(self) -> None:
        super().__init__()
        self.lost = 0

    async def __call__(self, delay: float) -> None:
        try:
            await super().__call__(delay)
        except asyncio.CancelledError:
            self.lost += 1
            if self.lost > 1:
                raise


async def test_close_ends_the_supervision_even_when_a_cancellation_is_lost(make_process: ProcessFactory) -> None:
    async with asyncio.timeout(T):
        backoff = LosesOneCancel()
        proxy = make_process(sleep=backoff)
        port = await proxy.add_service("one", 0)
        backoff.hold()
        dead = await kill_child(proxy)
        await asyncio.wait_for(backoff.sleeping.wait(), BACK)
        await asyncio.wait_for(proxy.close(), BACK)
        assert backoff.lost == 1, "the supervisor was cancelled while it slept"
        assert proxy.restarts == 0 and proxy.pid == dead, "no child is started after close()"
        assert proxy_children() == set()
        assert port_free(port)
