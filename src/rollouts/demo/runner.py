"""`rollouts demo`: a real canary on this machine, start to finish, in about a minute.

It starts the embedded controller (pods as local processes, the built-in proxy), a
Prometheus when one is installed, and steady traffic; deploys v1; ships v2 by canary
(analysis passes, the demo promotes it past the final pause); ships v3, whose 30 % errors
make the analysis fail so the rollout aborts itself. It prints what happens as it happens and
a closing summary, stops everything it started, and exits 0 only if all of that went as
expected.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import socket
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rollouts.core.durations import format_duration
from rollouts.demo import manifests
from rollouts.demo.prometheus import PrometheusProcess, find_prometheus
from rollouts.demo.traffic import TrafficGenerator, TrafficStats
from rollouts.host import EmbeddedHost
from rollouts.ops import patches
from rollouts.ops.apply import apply_operation
from rollouts.platform.embedded.routing import RoutingTable
from rollouts.store.sqlite import Change

APP = manifests.APP


def say(message: str) -> None:
    print(message, flush=True)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@dataclass
class Outcome:
    version: str
    result: str
    seconds: float
    detail: str = ""


@dataclass
class DemoResult:
    """What the demo observed; `ok` when every expectation held."""

    ok: bool = False
    outcomes: list[Outcome] = field(default_factory=list)
    rollback_seconds: float | None = None
    traffic: TrafficStats | None = None
    analysis_source: str = ""
    error: str | None = None


class RollbackClock:
    """Measures the time from the failing analysis verdict to all new requests going to stable."""

    def __init__(self, host: EmbeddedHost) -> None:
        self.host = host
        self.verdict_at: float | None = None
        self.stable_at: float | None = None
        self.verdict = ""
        original: Callable[[str, RoutingTable], None] = host.proxy.set_routing

        def observed(name: str, table: RoutingTable) -> None:
            original(name, table)
            no_canary = table.canary is None or table.canary_weight == 0
            if name == APP and self.verdict_at is not None and self.stable_at is None and no_canary:
                self.stable_at = time.perf_counter()

        host.proxy.set_routing = observed  # type: ignore[method-assign]
        host.store.add_listener(self._on_change)

    def _on_change(self, change: Change) -> None:
        if change.kind != "AnalysisRun" or self.verdict_at is not None:
            return
        run = self.host.store.get("AnalysisRun", change.name, change.namespace) or {}
        status = run.get("status") or {}
        if status.get("phase") in ("Failed", "Error"):
            self.verdict_at = time.perf_counter()
            self.verdict = str(status.get("message") or status.get("phase"))

    @property
    def seconds(self) -> float | None:
        if self.verdict_at is None or self.stable_at is None:
            return None
        return self.stable_at - self.verdict_at


class Demo:
    def __init__(self, host: EmbeddedHost, fast: bool) -> None:
        self.host = host
        self.store = host.store
        self.fast = fast
        self._events_seen = 0
        self._last_line = ""

    def rollout(self) -> dict[str, Any]:
        obj = self.store.get("Rollout", APP)
        assert obj is not None
        return obj

    def write(self, operation: Callable[[dict[str, Any]], patches.Patch]) -> None:
        apply_operation(self.store, APP, "default", operation)

    def report(self) -> tuple[str, dict[str, Any]]:
        """Print a line when phase, step or weight changes, and every new event."""
        ro = self.rollout()
        status = ro.get("status") or {}
        steps = len(ro["spec"]["strategy"]["canary"]["steps"])
        weight = ((status.get("canary") or {}).get("weights") or {}).get("canary", {}).get("weight", 0)
        phase = status.get("phase", "Progressing")
        line = (
            f"   {phase:<11} step {status.get('currentStepIndex', 0)}/{steps}  canary weight {weight:>3}%"
            f"  {status.get('message') or ''}"
        ).rstrip()
        if line != self._last_line:
            say(line)
            self._last_line = line
        events = self.store.events("Rollout", APP, limit=200)
        for event in events[self._events_seen :]:
            say(f"     · {event.reason}: {event.message}")
        self._events_seen = len(events)
        return phase, status

    async def wait_for(self, done: Callable[[str, dict[str, Any]], bool], timeout: float, what: str) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            phase, status = self.report()
            if done(phase, status):
                return
            await asyncio.sleep(0.1)
        raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")

    def set_image(self, image: str) -> None:
        self.write(lambda ro: patches.set_image(ro, "app", image))


def _healthy_on(ro_status: dict[str, Any]) -> bool:
    return bool(ro_status.get("stableRS")) and ro_status.get("stableRS") == ro_status.get("currentPodHash")


async def run_demo(*, fast: bool = True, state: Path | None = None, use_prometheus: bool | None = None) -> DemoResult:
    """Run the demo; `use_prometheus` None = when installed, True = required, False = never."""
    workdir = Path(tempfile.mkdtemp(prefix="rollouts-demo-"))
    state_path = state or workdir / "state.db"
    if state is not None and state.exists():
        state.unlink()
    started = time.perf_counter()
    say("rollouts demo: a real canary on this machine (pods are local processes behind the built-in proxy)")
    host = EmbeddedHost(state_path, admin_port=0)
    prometheus: PrometheusProcess | None = None
    traffic: TrafficGenerator | None = None
    result = DemoResult()
    outcomes = result.outcomes
    ok = False
    try:
        await host.start()
        clock = RollbackClock(host)
        binary = find_prometheus() if use_prometheus is not False else None
        if use_prometheus and binary is None:
            raise RuntimeError("prometheus is not installed (the README's commands install the Debian package)")
        if binary is not None:
            prometheus = PrometheusProcess(binary, workdir / "prometheus", [f"127.0.0.1:{host.admin_port}"])
            await asyncio.to_thread(prometheus.start)
            say(f"-> Prometheus {prometheus.url} scrapes the proxy's metrics; analysis queries it")
            result.analysis_source = "prometheus"
        else:
            say("-> no `prometheus` on PATH: analysis reads the proxy's own statistics through the web provider")
            result.analysis_source = "web"
        stable_port, canary_port = _free_port(), _free_port()
        interval, delay, pause = ("2s", "4s", "3s") if fast else ("30s", "30s", "60s")
        objects = [
            *manifests.services(stable_port, canary_port),
            manifests.error_rate_template(
                prometheus=prometheus.url if prometheus else None,
                admin_port=host.admin_port,
                interval=interval,
                initial_delay=delay,
            ),
            manifests.rollout("rollouts-demo:v1", pause=pause),
        ]
        for obj in objects:
            host.store.apply(obj)
        demo = Demo(host, fast)
        url = f"http://127.0.0.1:{stable_port}/"

        say(f"\n== v1: first deploy (service {APP} on {url})")
        t0 = time.perf_counter()
        await demo.wait_for(lambda phase, st: phase == "Healthy" and _healthy_on(st), 60, "v1 to be healthy")
        outcomes.append(Outcome("v1", "Deployed", time.perf_counter() - t0))

        traffic = TrafficGenerator(url, rate=50.0)
        await traffic.start()
        say("-> steady traffic: 50 requests/s through the stable service")

        say("\n== v2: canary 20% -> pause -> analysis -> 50% -> pause (promoted by the demo) -> 100%")
        t0 = time.perf_counter()
        demo.set_image("rollouts-demo:v2")
        await demo.wait_for(
            lambda phase, st: bool(st.get("pauseConditions")) and st.get("currentStepIndex") == 4,
            90,
            "v2 to reach the final pause",
        )
        say("-> rollouts promote rollouts-demo")
        demo.write(lambda ro: patches.promote(ro))
        await demo.wait_for(lambda phase, st: phase == "Healthy" and _healthy_on(st), 60, "v2 to be promoted")
        outcomes.append(Outcome("v2", "Promoted", time.perf_counter() - t0))
        before_v3 = traffic.stats.snapshot()

        say("\n== v3: 30% errors and slow; analysis must fail and roll it back")
        t0 = time.perf_counter()
        demo.set_image("rollouts-demo:v3")
        await demo.wait_for(lambda phase, st: phase == "Degraded" and bool(st.get("abort")), 90, "v3 to be aborted")
        await demo.wait_for(lambda phase, st: clock.seconds is not None, 5, "traffic to return to stable")
        outcomes.append(Outcome("v3", "Aborted (rolled back)", time.perf_counter() - t0, clock.verdict))
        await asyncio.sleep(1.0)
        await traffic.stop()
        final = traffic.stats
        stable_now = (demo.rollout().get("status") or {}).get("stableRS")
        v2_hash = stable_now
        ok = (
            clock.seconds is not None
            and final.platform_failures == 0
            and v2_hash is not None
            and [o.result for o in outcomes] == ["Deployed", "Promoted", "Aborted (rolled back)"]
        )
        result.rollback_seconds = clock.seconds
        result.traffic = final
        _summary(outcomes, clock, final, before_v3, time.perf_counter() - started)
    except (TimeoutError, RuntimeError) as exc:
        result.error = str(exc)
        say(f"\nerror: {exc}")
        with contextlib.suppress(Exception):
            say(f"state kept in {workdir}")
    finally:
        if traffic is not None and not traffic._stop.is_set():
            await traffic.stop()
        await host.close()
        if prometheus is not None:
            prometheus.stop()
        if ok and state is None:
            shutil.rmtree(workdir, ignore_errors=True)
    say("\ndemo " + ("passed" if ok else "FAILED") + "; everything it started is stopped.")
    result.ok = ok
    return result


def _summary(
    outcomes: list[Outcome], clock: RollbackClock, final: TrafficStats, before_v3: TrafficStats, total: float
) -> None:
    say("\n== Summary")
    for o in outcomes:
        say(f"   {o.version}: {o.result:<22} in {format_duration(o.seconds)}")
        if o.detail:
            say(f"       verdict: {o.detail}")
    if clock.seconds is not None:
        say(f"   failing verdict -> 100% of traffic on stable: {clock.seconds * 1000:.0f} ms")
    say(
        f"   requests: {final.sent} sent, {final.ok} ok, {final.platform_failures} failed by the platform "
        f"during the shifts, {final.app_errors - before_v3.app_errors} answered 500 by v3 before rollback"
    )
    say(f"   answered by version: {dict(sorted(final.versions.items()))}")
    say(f"   total time: {format_duration(total)}")
    sys.stdout.flush()
