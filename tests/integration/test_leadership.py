"""Two controllers on one state file: exactly one acts, and the other takes over when it goes.

The leader holds the Lease in the store; the follower starts no pod and no listener. When
the leader is killed (SIGKILL) the follower takes the lease within its duration (15 s by
default), adopts the pods the leader left running and carries the rollout on. A leader that
was frozen past its lease (SIGSTOP) finds the lease taken when it wakes up: it stops acting
and exits, leaving the pods to the new leader.
"""

from __future__ import annotations

import asyncio
import os
import re
import signal
import time
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path

import pytest

from rollouts.store.lease import LeaderElector, read_lease
from rollouts.store.sqlite import SqliteStore
from tests.integration.conftest import ControllerProcess, answers, free_port
from tests.integration.test_crash_recovery import (
    Controllers,
    controller_group,
    healthy,
    leading,
    manifests,
    paused_at,
    serving,
)

pytestmark = pytest.mark.integration


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Controllers]:
    with controller_group(tmp_path) as group:
        yield group


def listening_ports(pid: int) -> set[int]:
    """TCP ports process `pid` listens on (from /proc: its socket inodes in LISTEN state)."""
    inodes = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:
            continue
        if target.startswith("socket:["):
            inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def lease_holder(state: Path) -> tuple[str, int]:
    store = SqliteStore(state)
    try:
        lease = read_lease(store)
    finally:
        store.close()
    assert lease is not None
    return lease.holder, lease.transitions


def wait_log(ctl: ControllerProcess, text: str, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while text not in ctl.log.read_text():
        assert time.monotonic() < deadline, f"{text!r} not logged:\n{ctl.log.read_text()[-3000:]}"
        time.sleep(0.05)


def acquired_at(ctl: ControllerProcess) -> float:
    """Wall-clock time of the controller's "acquired the controller lease" log line."""
    match = re.search(r"^(\S+ \S+) INFO \S+: acquired the controller lease", ctl.log.read_text(), re.MULTILINE)
    assert match is not None
    return datetime.strptime(match.group(1), "%Y-%m-%d %H:%M:%S,%f").timestamp()


def test_one_leader_and_a_takeover_within_the_lease_after_kill_9(controllers: Controllers) -> None:
    # The default lease timings (15 s, renewed every 5 s): the takeover promise is about them.
    a = controllers.start("a", lease=())
    leading(a)
    b = controllers.start("b", lease=())
    wait_log(b, "waiting for the controller lease default/rollouts-controller, held by a")

    stable, canary = free_port(), free_port()
    strategy = {
        "canary": {"stableService": "web", "canaryService": "web-canary", "steps": [{"setWeight": 50}, {"pause": {}}]}
    }
    a.cli("apply", "-f", str(manifests(controllers, strategy, {"web": stable, "web-canary": canary})))
    a.wait_for("web", healthy)
    a.cli("set", "image", "web", "app=demo:v2")
    before = a.wait_for("web", paused_at(1))["status"]

    # Exactly one acts: one set of pods, one proxy; the follower listens on nothing.
    assert len(controllers.pods()) == 3
    pods = controllers.running_pods()
    assert controllers.pod_processes() == {pid for pids in pods.values() for pid in pids}
    assert {stable, canary} <= listening_ports(a.proc.pid)
    assert listening_ports(b.proc.pid) == set()
    assert "controller running" not in b.log.read_text()
    assert lease_holder(controllers.state) == ("a", 0)

    killed_wall, killed = time.time(), time.monotonic()
    controllers.kill(a)
    took_over = leading(b, timeout=25) - killed
    acquired = acquired_at(b) - killed_wall
    print(f"\nlease acquired {acquired:.2f}s after kill -9, serving after {took_over:.2f}s")
    # The lease is free 15 s after its last renewal (at most 5 s before the kill): taken 10 to
    # 15 s after the kill, give or take the follower's wake-up (milliseconds, more under load).
    assert 9.5 < acquired < 15.5, f"the lease was taken {acquired:.2f}s after the leader died"
    assert took_over < 16.5
    assert lease_holder(controllers.state) == ("b", 1)

    url = f"http://127.0.0.1:{stable}/"
    serving(url)
    controllers.adopted(pods)
    assert answers(url, 100) == {"v1": 50, "v2": 50}
    b.cli("promote", "web")
    b.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == before["currentPodHash"])
    assert answers(url, 10) == {"v2": 10}


def test_a_leader_that_lost_its_lease_stops_and_exits(controllers: Controllers) -> None:
    a = controllers.start("a")
    leading(a)
    b = controllers.start("b")
    wait_log(b, "held by a")
    stable = free_port()
    a.cli("apply", "-f", str(manifests(controllers, {"canary": {"stableService": "web"}}, {"web": stable})))
    before = a.wait_for("web", healthy)["status"]
    pods = controllers.running_pods()

    # A follower stopped while it waits goes at once, having touched nothing.
    c = controllers.start("c")
    wait_log(c, "held by a")
    c.proc.send_signal(signal.SIGTERM)
    assert c.proc.wait(timeout=10) == 0
    assert "controller running" not in c.log.read_text()
    assert controllers.running_pods() == pods and lease_holder(controllers.state) == ("a", 0)

    os.kill(a.proc.pid, signal.SIGSTOP)  # frozen: alive, holding its sockets, not renewing
    try:
        leading(b)  # the lease expired: b leads and adopts a's pods
        assert lease_holder(controllers.state) == ("b", 1)
        controllers.adopted(pods)
    finally:
        os.kill(a.proc.pid, signal.SIGCONT)
    # Awake, a finds the lease gone at its next renewal: it stops at once and exits.
    assert a.proc.wait(timeout=10) == 1
    log = a.log.read_text()
    assert "lost leadership (the lease is now held by b)" in log, log[-2000:]

    # The pods were left to b, which serves them (its listener binds once a's is gone) and acts.
    url = f"http://127.0.0.1:{stable}/"
    serving(url)
    controllers.adopted(pods)
    assert answers(url, 10) == {"v1": 10}
    b.cli("set", "image", "web", "app=demo:v2")
    b.wait_for("web", lambda s: healthy(s) and s.get("stableRS") != before["stableRS"])
    deadline = time.monotonic() + 15
    while answers(url, 10) != {"v2": 10}:
        assert time.monotonic() < deadline
        time.sleep(0.1)


# --- the lease itself, in process, with a fake clock -------------------------------------------------


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def wall(self) -> float:
        return self.now

    def mono(self) -> float:
        return self.now


def elector(store: SqliteStore, identity: str, clock: Clock) -> LeaderElector:
    return LeaderElector(
        store, identity, lease_duration=15, renew_interval=5, wall_clock=clock.wall, monotonic=clock.mono
    )


def test_lease_compare_and_swap_expiry_and_release(tmp_path: Path) -> None:
    clock = Clock()
    store = SqliteStore(tmp_path / "state.db")
    a, b = elector(store, "a", clock), elector(store, "b", clock)
    assert a.try_acquire_or_renew() and a.is_leader()
    assert not b.try_acquire_or_renew() and not b.is_leader() and b.holder() == "a"
    spec = store.must_get("Lease", "rollouts-controller")["spec"]
    assert spec["holderIdentity"] == "a" and spec["leaseDurationSeconds"] == 15
    assert spec["acquireTime"] == spec["renewTime"]

    clock.now += 5
    assert a.try_acquire_or_renew(renew_only=True), "renewed"
    clock.now += 14.9
    assert not b.try_acquire_or_renew(), "not expired yet: 15 s after the last renewal"
    assert not a.is_leader(), "the leader stops trusting its lease after the renew deadline (10 s)"
    clock.now += 0.2
    assert b.try_acquire_or_renew() and b.is_leader(), "expired: taken over"
    assert lease_holder(store.path) == ("b", 1) and b.taken_from == "a"
    assert not a.try_acquire_or_renew(renew_only=True), "the old leader learns it lost"
    assert a.holder() == "b"

    b.release()
    assert not b.is_leader()
    assert a.try_acquire_or_renew(), "a released lease is free at once"
    assert lease_holder(store.path) == ("a", 2)
    store.close()


def test_lease_settings_are_checked(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    with pytest.raises(ValueError, match="must be shorter than the lease duration"):
        LeaderElector(store, "a", lease_duration=3, renew_interval=3)
    with pytest.raises(ValueError, match="positive"):
        LeaderElector(store, "a", lease_duration=0, renew_interval=1)
    store.close()


async def test_hold_returns_when_the_lease_is_taken(tmp_path: Path) -> None:
    store = SqliteStore(tmp_path / "state.db")
    a = LeaderElector(store, "a", lease_duration=0.6, renew_interval=0.1)
    b = LeaderElector(store, "b", lease_duration=0.6, renew_interval=0.1)
    await asyncio.wait_for(a.acquire(), 2)
    holding = asyncio.create_task(a.hold())
    waiting = asyncio.create_task(b.acquire())
    await asyncio.sleep(0.5)
    assert not waiting.done() and not holding.done(), "renewed: b keeps waiting"
    lease = store.must_get("Lease", "rollouts-controller")  # someone takes the lease from a
    lease["spec"]["holderIdentity"] = "c"
    store.update(lease)
    assert await asyncio.wait_for(holding, 2) == "the lease is now held by c"
    assert not a.is_leader()
    await asyncio.wait_for(waiting, 3)  # c never renews: b takes over once it expires
    assert b.is_leader() and lease_holder(store.path)[0] == "b"
    store.close()
