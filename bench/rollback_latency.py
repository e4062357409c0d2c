"""Rollback latency: from a failing analysis verdict to 100 % of new requests on stable.

    .venv/bin/python bench/rollback_latency.py [--rounds 20] [--rate 50] [--verbose]

One `EmbeddedHost` (store, runtime with real pod processes, proxy, controller) runs in this
process, with the demo app as the workload. Each round uses a fresh canary rollout `rb-<n>`
(2 replicas, its own two Services) whose update goes to 50 % and then waits on a pause; a
background analysis (from step 1, so the canary already takes half the traffic) measures a
`web` metric every second with `failureLimit: 0` against a small HTTP endpoint served by this
script. Each round:

1. deploy v1, start steady load through the stable Service (`--rate`, the demo's in-process
   `TrafficGenerator`), `set image` v2; wait until the canary takes 50 % in the proxy and the
   analysis has at least one successful measurement;
2. flip the endpoint to failing; the next measurement fails, the AnalysisRun is Failed, the
   rollout aborts and the stable Service's routing table loses its canary side;
3. check that new requests through the stable Service are all answered by stable (v1), then
   delete the rollout and its Services.

A fresh rollout per round keeps the rounds independent (each starts from the same state: v1
Healthy, no analysis history). It also sidestepped a bug found with this benchmark and fixed in
45dd7c8: a canary's analysis-run slot kept naming the previous revision's Failed run, so the
next update (or `retry`) was aborted at once without a new run.

Clocks (all `time.perf_counter()` in this process, no sampling):

* measurement start - the `web` provider's `measure()` was called for the first measurement
  that returned the failing value (the provider is wrapped; it may start just before the flip);
* verdict - the AnalysisRun's status with phase Failed/Error is written to the store (a store
  listener, as the demo's `RollbackClock` does);
* service - the stable Service's canary-weight annotation is written as 0 (the controller's act);
* stable - the proxy is handed a routing table for the stable Service with no canary side
  (`ProxyServer.set_routing` is wrapped): from then on every new request goes to stable.

Target (DESIGN.md): verdict -> stable p99 under 1 s.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RolloutDriver,
    canary_rollout,
    embedded_host,
    free_port,
    healthy,
    machine,
    services,
    summary_ms,
)
from rollouts.analysis.providers.base import MetricProvider, ProviderResult
from rollouts.demo.traffic import TrafficGenerator
from rollouts.host import EmbeddedHost
from rollouts.platform.embedded import objects
from rollouts.platform.embedded.routing import RoutingTable
from rollouts.store.sqlite import Change

APP = "rb"
TIMEOUT = 60.0
FAILING = 1.0  # the endpoint's error_rate once flipped


class MetricEndpoint:
    """`GET /` answers `{"error_rate": 0}` or, once `failing`, `{"error_rate": 1}` (HTTP/1.1 keep-alive)."""

    def __init__(self) -> None:
        self.failing = False
        self.port = 0
        self._server: asyncio.Server | None = None

    async def start(self) -> None:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self._server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self._server.wait_closed(), 2.0)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                if not head:
                    break
                body = json.dumps({"error_rate": FAILING if self.failing else 0.0}).encode()
                writer.write(
                    b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n%b"
                    % (len(body), body)
                )
                await writer.drain()
        except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
            pass
        finally:
            writer.close()


class TimedProvider:
    """Wraps a metric provider: reports each measurement's start time with its result."""

    def __init__(self, inner: MetricProvider, on_measured: Callable[[float, ProviderResult], None]) -> None:
        self.inner = inner
        self.kind = inner.kind
        self.on_measured = on_measured

    async def measure(
        self, spec: dict[str, Any], *, now: datetime, context: Mapping[str, str] | None = None
    ) -> ProviderResult:
        started = time.perf_counter()
        result = await self.inner.measure(spec, now=now, context=context)
        self.on_measured(started, result)
        return result

    async def aclose(self) -> None:
        close = getattr(self.inner, "aclose", None)
        if close is not None:
            await close()


@dataclass
class Round:
    index: int
    flipped_at: float
    measure_at: float | None = None
    verdict_at: float | None = None
    service_at: float | None = None
    stable_at: float | None = None
    verdict: str = ""
    stable_answers: int = 0
    other_answers: int = 0
    load_sent: int = 0
    load_failed: int = 0

    def span(self, start: float | None, end: float | None) -> float | None:
        return None if start is None or end is None else end - start


class AbortClock:
    """Timestamps a round's measurement start, verdict, Service write and routing swap."""

    def __init__(self, host: EmbeddedHost, service: str) -> None:
        self.host = host
        self.service = service
        self.round: Round | None = None
        original: Callable[[str, RoutingTable], None] = host.proxy.set_routing

        def observed(name: str, table: RoutingTable) -> None:
            original(name, table)
            r = self.round
            no_canary = table.canary is None or table.canary_weight == 0
            if (
                name == self.service
                and r is not None
                and r.verdict_at is not None
                and r.stable_at is None
                and no_canary
            ):
                r.stable_at = time.perf_counter()

        host.proxy.set_routing = observed  # type: ignore[method-assign]
        host.store.add_listener(self._on_change)
        web = host.providers["web"]
        host.providers["web"] = TimedProvider(web, self._on_measured)

    def _on_measured(self, started: float, result: ProviderResult) -> None:
        """The first failing value of the round: its measurement may have started just before the flip."""
        r = self.round
        if r is not None and r.measure_at is None and result.value == FAILING:
            r.measure_at = started

    def _on_change(self, change: Change) -> None:
        r = self.round
        if r is None:
            return
        now = time.perf_counter()
        if change.kind == "AnalysisRun" and r.verdict_at is None:
            run = self.host.store.get("AnalysisRun", change.name, change.namespace) or {}
            status = run.get("status") or {}
            if status.get("phase") in ("Failed", "Error"):
                r.verdict_at = now
                r.verdict = f"{status.get('phase')}: {status.get('message') or ''}".strip()
        elif change.kind == "Service" and change.name == self.service and r.verdict_at is not None:
            svc = self.host.store.get("Service", change.name, change.namespace) or {}
            weight = objects.annotations_of(svc).get(objects.CANARY_WEIGHT_ANNOTATION, "0")
            if r.service_at is None and weight in ("0", ""):
                r.service_at = now


def template(port: int) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "bench-health"},
        "spec": {
            "metrics": [
                {
                    "name": "error-rate",
                    "interval": "1s",
                    "failureLimit": 0,
                    "successCondition": "result < 0.05",
                    "provider": {"web": {"url": f"http://127.0.0.1:{port}/", "jsonPath": "{$.error_rate}"}},
                }
            ]
        },
    }


def _run_measured(host: EmbeddedHost, driver: RolloutDriver) -> bool:
    """The current background run is Running with at least one successful measurement."""
    slot = ((driver.status().get("canary") or {}).get("currentBackgroundAnalysisRunStatus")) or {}
    run = host.store.get("AnalysisRun", slot["name"]) if slot.get("name") else None
    status = (run or {}).get("status") or {}
    results = status.get("metricResults") or []
    return status.get("phase") == "Running" and bool(results) and int(results[0].get("successful") or 0) >= 1


async def _until(check: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise TimeoutError(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.02)


async def _round(host: EmbeddedHost, clock: AbortClock, endpoint: MetricEndpoint, i: int, rate: float) -> Round:
    """One abort on a fresh rollout `rb-<i>`: v1 deployed, v2 at 50 %, analysis flipped to failing."""
    name = f"{APP}-{i}"
    stable_port, canary_port = free_port(), free_port()
    created = [
        *services(name, {name: stable_port, f"{name}-canary": canary_port}),
        canary_rollout(
            name,
            "rollouts-demo:v1",
            [{"setWeight": 50}, {"pause": {}}],
            stable_service=name,
            canary_service=f"{name}-canary",
            analysis={"templates": [{"templateName": "bench-health"}], "startingStep": 1},
        ),
    ]
    endpoint.failing = False
    clock.round = None
    clock.service = name
    for obj in created:
        host.store.apply(obj)
    driver = RolloutDriver(host, name)
    traffic: TrafficGenerator | None = None
    try:
        await driver.wait_for(healthy, TIMEOUT, "v1 to be healthy")
        if rate > 0:
            traffic = TrafficGenerator(f"http://127.0.0.1:{stable_port}/", rate=rate)
            await traffic.start()
        driver.set_image("rollouts-demo:v2")

        def ready() -> bool:
            table = host.proxy.routing(name)
            return (
                table.canary is not None
                and table.canary_weight == 50
                and bool(table.canary.backends)
                and _run_measured(host, driver)
            )

        await _until(ready, TIMEOUT, f"round {i}: canary at 50 % with a passing analysis")
        r = Round(i, time.perf_counter())
        clock.round = r
        endpoint.failing = True
        await _until(lambda: r.stable_at is not None, TIMEOUT, f"round {i}: traffic back on stable")
        await driver.wait_for(lambda s: s.get("phase") == "Degraded", TIMEOUT, "the abort")
        async with httpx.AsyncClient(timeout=5.0) as client:
            for _ in range(10):
                answer = (await client.get(f"http://127.0.0.1:{stable_port}/")).json().get("version")
                if answer == "v1":
                    r.stable_answers += 1
                else:
                    r.other_answers += 1
        if traffic is not None:
            await traffic.stop()
            r.load_sent, r.load_failed = traffic.stats.sent, traffic.stats.sent - traffic.stats.ok
            traffic = None
        return r
    finally:
        if traffic is not None:
            await traffic.stop()
        clock.round = None
        for obj in reversed(created):
            host.store.delete(str(obj["kind"]), str(obj["metadata"]["name"]))


async def run(rounds: int, verbose: bool, rate: float) -> list[Round]:
    endpoint = MetricEndpoint()
    await endpoint.start()
    done: list[Round] = []
    try:
        with tempfile.TemporaryDirectory(prefix="rollback-latency-") as tmp:
            async with embedded_host(Path(tmp) / "state.db", admin_port=0) as host:
                clock = AbortClock(host, "")
                host.store.apply(template(endpoint.port))
                for i in range(1, rounds + 1):
                    r = await _round(host, clock, endpoint, i, rate)
                    done.append(r)
                    if verbose:
                        _print_round(r)
    finally:
        await endpoint.close()
    return done


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value * 1000:.1f}"


def _print_round(r: Round) -> None:
    print(
        f"round {r.index:2d}: measurement->verdict {_ms(r.span(r.measure_at, r.verdict_at))} ms, "
        f"verdict->service {_ms(r.span(r.verdict_at, r.service_at))} ms, "
        f"service->proxy {_ms(r.span(r.service_at, r.stable_at))} ms, "
        f"verdict->stable {_ms(r.span(r.verdict_at, r.stable_at))} ms; "
        f"after: {r.stable_answers}/{r.stable_answers + r.other_answers} on stable; "
        f"load {r.load_sent} sent, {r.load_failed} failed; {r.verdict}",
        flush=True,
    )


def report(rounds: list[Round]) -> bool:
    rows: list[tuple[str, list[float]]] = []
    spans: list[tuple[str, Callable[[Round], float | None]]] = [
        ("verdict written -> 100 % on stable", lambda r: r.span(r.verdict_at, r.stable_at)),
        ("measurement start -> 100 % on stable", lambda r: r.span(r.measure_at, r.stable_at)),
        ("  measurement start -> verdict written", lambda r: r.span(r.measure_at, r.verdict_at)),
        ("  verdict written -> Service weight 0 written", lambda r: r.span(r.verdict_at, r.service_at)),
        ("  Service written -> proxy routing swapped", lambda r: r.span(r.service_at, r.stable_at)),
    ]
    for label, span in spans:
        rows.append((label, [v for v in (span(r) for r in rounds) if v is not None]))
    print()
    print(f"{'span (ms)':<46} {'n':>3} {'p50':>8} {'p99':>8} {'max':>8}")
    for label, values in rows:
        s = summary_ms(values)
        print(f"{label:<46} {int(s['n']):3d} {s['p50']:8.1f} {s['p99']:8.1f} {s['max']:8.1f}")
    main = summary_ms(rows[0][1])
    leaked = sum(r.other_answers for r in rounds)
    sent, failed = sum(r.load_sent for r in rounds), sum(r.load_failed for r in rounds)
    errors = [r.index for r in rounds if not r.verdict.startswith("Failed")]
    if errors:
        print(f"rounds whose run ended in Error, not Failed (not the measured path): {errors}")
    met = len(rows[0][1]) == len(rounds) and main["p99"] < 1000.0 and not errors
    print(
        f"\n{len(rounds)} aborts; verdict -> stable p99 {main['p99']:.1f} ms (target < 1000 ms): "
        f"{'met' if met else 'MISSED'}; requests after the swap answered by the canary: {leaked}"
    )
    if sent:
        print(f"steady load during the rounds: {sent} requests, {failed} failed")
    return met and leaked == 0 and failed == 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=20, help="aborts to measure (default 20)")
    parser.add_argument("--verbose", action="store_true", help="print every round")
    parser.add_argument(
        "--rate",
        type=float,
        default=50.0,
        help="steady requests/s through the stable Service during each round (0: none)",
    )
    args = parser.parse_args()
    print(f"rollback latency: {machine()}; {args.rounds} aborts; load {args.rate:g} requests/s", flush=True)
    rounds = asyncio.run(run(args.rounds, args.verbose, args.rate))
    return 0 if report(rounds) else 1


if __name__ == "__main__":
    sys.exit(main())
