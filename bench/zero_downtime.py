"""Zero downtime: failed requests under steady load through the proxy during canary, promotion, abort, blue/green.

    .venv/bin/python bench/zero_downtime.py [--rate 250] [--connections 16] [--client wrk|httpx]
                                            [--scenario canary|promote|abort|bluegreen ...]

One `EmbeddedHost` (store, runtime with real pod processes, proxy, controller) runs in this
process; the demo app (`rollouts.demo.app`, which never answers 5xx for v1 or v2) is the
workload, 2 replicas per revision. Each scenario has its own rollout and Services, and steady
keep-alive load goes through the stable (or active) Service from before the operation until
the replaced pods are stopped and gone:

* canary    - a full canary v1 -> v2: setWeight 20/40/60/80 with 1 s pauses, automatic promotion;
* promote   - v2 paused at 50 %, `promote`;
* abort     - v2 paused at 50 %, `abort` (traffic back to v1, v2's pods stopped);
* bluegreen - v2 up behind the preview Service, `promote`: the active Service cuts over.

The old revision's pods are scaled down 1 s after the shift (scaleDownDelaySeconds /
abortScaleDownDelaySeconds: 1, not Argo's default 30, so their removal falls inside the
measured window); the runtime takes a pod out of routing, waits `DRAIN_SECONDS` and then stops
it with SIGTERM.

Load: `wrk` (Debian package `wrk`) in its own process, at `--rate` requests/s over
`--connections` keep-alive connections (a Lua `delay()` paces each connection; a Lua
`response()` counts status codes and the answering version). A failed request is a socket
error (connect, read, write, timeout) or any status but 200. `--client httpx` uses the
in-process `rollouts.demo.traffic.TrafficGenerator` instead (what the integration test
`tests/integration/test_zero_downtime.py` uses, at 50 requests/s). Target: 0 failed requests.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import shutil
import signal
import sys
import tempfile
import time
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    RolloutDriver,
    blue_green_rollout,
    canary_rollout,
    embedded_host,
    free_port,
    healthy,
    machine,
    services,
)
from rollouts.demo.traffic import TrafficGenerator
from rollouts.host import EmbeddedHost

SCENARIOS = ("canary", "promote", "abort", "bluegreen")
V1, V2 = "rollouts-demo:v1", "rollouts-demo:v2"


# --- load ---------------------------------------------------------------------------------


@dataclass
class LoadResult:
    sent: int
    ok: int
    failed: int
    seconds: float
    versions: dict[str, int] = field(default_factory=dict)
    failures: dict[str, int] = field(default_factory=dict)  # kind -> count
    latency_ms: dict[str, float] = field(default_factory=dict)  # p50/p99/max when the client reports them

    @property
    def rate(self) -> float:
        return self.sent / self.seconds if self.seconds > 0 else 0.0


class Load(Protocol):
    async def start(self) -> None: ...

    async def stop(self) -> LoadResult: ...


LoadFactory = Callable[[str], Load]


class HttpxLoad:
    """In-process load: the demo's `TrafficGenerator` (httpx, keep-alive, paced per worker)."""

    def __init__(self, url: str, rate: float = 50.0, concurrency: int = 8) -> None:
        self.generator = TrafficGenerator(url, rate=rate, concurrency=concurrency)
        self._started = 0.0

    async def start(self) -> None:
        self._started = time.perf_counter()
        await self.generator.start()

    async def stop(self) -> LoadResult:
        await self.generator.stop()
        stats = self.generator.stats
        failures = {
            "connection error or 502/503/504": stats.platform_failures,
            "other non-200": stats.sent - stats.ok - stats.platform_failures,
        }
        return LoadResult(
            sent=stats.sent,
            ok=stats.ok,
            failed=stats.sent - stats.ok,
            seconds=time.perf_counter() - self._started,
            versions=dict(stats.versions),
            failures={k: v for k, v in failures.items() if v},
        )


WRK_SCRIPT = r"""
-- Paced keep-alive load: each connection waits `delay_ms` after a response before its next request.
local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

function init(args)
  target = tonumber(args[1])       -- requests/s for this thread
  conns = tonumber(args[2])        -- connections of this thread
  delay_ms = 1000 * conns / target -- pause between a response and the next request on a connection
  codes = {}
  versions = {}
  second = nil
  full_second = false
  in_second = 0
end

-- Each connection sends, waits for the response, then waits delay_ms: rate = conns / (delay + latency).
-- The latency is not known in advance (wrk's Lua has no clock finer than os.time()), so once a
-- second the delay is corrected from the rate achieved in the last whole second:
-- latency = conns / achieved - delay, and delay = conns / target - latency.
function delay()
  local now = os.time()
  if now ~= second then
    if second ~= nil and now == second + 1 and in_second > 0 and full_second then
      local latency_ms = 1000 * conns / in_second - delay_ms
      delay_ms = math.max(0, math.min(5000, 1000 * conns / target - latency_ms))
    end
    full_second = second ~= nil
    second = now
    in_second = 0
  end
  in_second = in_second + 1
  return math.floor(delay_ms)
end

function response(status, headers, body)
  codes[status] = (codes[status] or 0) + 1
  if status == 200 then
    local v = string.match(body, '"version": *"([^"]+)"')
    if v then versions[v] = (versions[v] or 0) + 1 end
  end
end

local function encode(t)
  local parts = {}
  for k, v in pairs(t) do table.insert(parts, string.format('"%s":%d', tostring(k), v)) end
  return "{" .. table.concat(parts, ",") .. "}"
end

function done(summary, latency, requests)
  local all_codes, all_versions = {}, {}
  for _, thread in ipairs(threads) do
    for k, v in pairs(thread:get("codes")) do all_codes[k] = (all_codes[k] or 0) + v end
    for k, v in pairs(thread:get("versions")) do all_versions[k] = (all_versions[k] or 0) + v end
  end
  local e = summary.errors
  io.write(string.format(
    'ZD-RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,'
      .. '"p50_us":%d,"p99_us":%d,"max_us":%d,"codes":%s,"versions":%s}\n',
    summary.requests, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
    latency:percentile(50), latency:percentile(99), latency.max, encode(all_codes), encode(all_versions)))
end
"""


class WrkLoad:
    """`wrk` in its own process, paced to `rate` requests/s; stopped with SIGINT (wrk then reports)."""

    def __init__(self, url: str, script: Path, rate: float = 250.0, connections: int = 16) -> None:
        self.url = url
        self.script = script
        self.rate = rate
        self.connections = connections
        self._proc: asyncio.subprocess.Process | None = None

    async def start(self) -> None:
        self._proc = await asyncio.create_subprocess_exec(
            "wrk",
            "-t1",
            f"-c{self.connections}",
            "-d600s",
            "--timeout",
            "5s",
            "-s",
            str(self.script),
            self.url,
            "--",
            f"{self.rate:g}",
            str(self.connections),
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.STDOUT,
        )

    async def stop(self) -> LoadResult:
        proc = self._proc
        assert proc is not None, "start() first"
        with contextlib.suppress(ProcessLookupError):
            proc.send_signal(signal.SIGINT)
        try:
            out, _ = await asyncio.wait_for(proc.communicate(), 15.0)
        except TimeoutError:
            proc.kill()
            out, _ = await proc.communicate()
        text = out.decode(errors="replace")
        line = next((ln for ln in text.splitlines() if ln.startswith("ZD-RESULT ")), None)
        if line is None:
            raise RuntimeError(f"wrk gave no result (exit {proc.returncode}):\n{text}")
        r = json.loads(line.removeprefix("ZD-RESULT "))
        codes = {int(k): int(v) for k, v in r["codes"].items()}
        socket_errors = {k: int(r[k]) for k in ("connect", "read", "write", "timeout") if int(r[k])}
        bad_codes = {f"HTTP {code}": n for code, n in sorted(codes.items()) if code != 200}
        failed = sum(socket_errors.values()) + sum(bad_codes.values())
        return LoadResult(
            sent=int(r["requests"]) + sum(socket_errors.values()),
            ok=codes.get(200, 0),
            failed=failed,
            seconds=int(r["duration_us"]) / 1e6,
            versions={k: int(v) for k, v in r["versions"].items()},
            failures={**{f"socket {k}": v for k, v in socket_errors.items()}, **bad_codes},
            latency_ms={"p50": r["p50_us"] / 1000, "p99": r["p99_us"] / 1000, "max": r["max_us"] / 1000},
        )


# --- scenarios ----------------------------------------------------------------------------


@dataclass
class ScenarioResult:
    name: str
    what: str
    load: LoadResult
    timeline: list[tuple[float, str]] = field(default_factory=list)


@dataclass
class _Setup:
    driver: RolloutDriver
    url: str


SETTLE = 0.5  # seconds of load before the operation and after the old pods are gone
TIMEOUT = 60.0  # per wait


def _rollouts(which: Sequence[str]) -> tuple[list[dict[str, Any]], dict[str, str]]:
    """Objects for each scenario's rollout and Services, and the URL load goes to per scenario."""
    objects: list[dict[str, Any]] = []
    urls: dict[str, str] = {}
    paused_at_50: list[dict[str, Any]] = [{"setWeight": 50}, {"pause": {}}]
    for name in which:
        main, side = free_port(), free_port()
        app = f"zd-{name}"
        if name == "bluegreen":
            objects += services(app, {app: main, f"{app}-preview": side})
            objects.append(blue_green_rollout(app, V1, active=app, preview=f"{app}-preview"))
        else:
            steps = paused_at_50
            if name == "canary":
                steps = [s for w in (20, 40, 60, 80) for s in ({"setWeight": w}, {"pause": {"duration": "1s"}})]
            objects += services(app, {app: main, f"{app}-canary": side})
            objects.append(
                canary_rollout(app, V1, [dict(s) for s in steps], stable_service=app, canary_service=f"{app}-canary")
            )
        urls[name] = f"http://127.0.0.1:{main}/"
    return objects, urls


def _promoted_from(old_hash: str) -> Callable[[dict[str, object]], bool]:
    def check(status: dict[str, object]) -> bool:
        return healthy(status) and status.get("stableRS") != old_hash

    return check


def _paused_at(step: int) -> Callable[[dict[str, object]], bool]:
    def check(status: dict[str, object]) -> bool:
        return bool(status.get("pauseConditions")) and status.get("currentStepIndex") == step

    return check


async def _scenario(name: str, setup: _Setup, load: Load) -> ScenarioResult:
    d = setup.driver
    t0 = time.perf_counter()
    timeline: list[tuple[float, str]] = []

    def mark(what: str) -> None:
        timeline.append((time.perf_counter() - t0, what))

    before = d.status()
    old_hash = str(before.get("stableRS"))
    await load.start()
    try:
        await asyncio.sleep(SETTLE)
        mark("set image v2")
        d.set_image(V2)
        if name == "canary":
            await d.wait_for(_promoted_from(old_hash), TIMEOUT, "v2 promoted after its steps")
            mark("v2 promoted (100 %)")
            gone = old_hash
            what = "full canary 20/40/60/80 % -> promoted"
        elif name in ("promote", "abort"):
            await d.wait_for(_paused_at(1), TIMEOUT, "v2 paused at 50 %")
            mark("paused at 50 %")
            await asyncio.sleep(SETTLE)
            new_hash = str(d.status().get("currentPodHash"))
            if name == "promote":
                d.promote()
                mark("promote")
                await d.wait_for(_promoted_from(old_hash), TIMEOUT, "v2 promoted")
                mark("v2 promoted (100 %)")
                gone, what = old_hash, "paused at 50 %, promote"
            else:
                d.abort()
                mark("abort")
                await d.wait_for(lambda s: s.get("phase") == "Degraded" and bool(s.get("abort")), TIMEOUT, "v2 aborted")
                mark("aborted (traffic on v1)")
                gone, what = new_hash, "paused at 50 %, abort"
        else:
            await d.wait_for(lambda s: s.get("phase") == "Paused", TIMEOUT, "v2 up behind the preview Service")
            mark("v2 on preview, paused")
            await asyncio.sleep(SETTLE)
            d.promote()
            mark("promote")
            await d.wait_for(_promoted_from(old_hash), TIMEOUT, "the cutover to v2")
            mark("active on v2")
            gone, what = old_hash, "preview up, promote: active cuts over"
        await d.wait_pods_gone(gone, TIMEOUT)
        mark(f"pods of {'v2' if name == 'abort' else 'v1'} stopped and gone")
        await asyncio.sleep(SETTLE)
    finally:
        result = await load.stop()
    mark("load stopped")
    return ScenarioResult(name, what, result, timeline)


async def run_scenarios(
    host: EmbeddedHost,
    load_for: LoadFactory,
    which: Sequence[str] = SCENARIOS,
    on_result: Callable[[ScenarioResult], Awaitable[None] | None] | None = None,
) -> list[ScenarioResult]:
    """Deploy v1 of every scenario's rollout at once, then run the scenarios one after another."""
    objects, urls = _rollouts(which)
    for obj in objects:
        host.store.apply(obj)
    setups = {name: _Setup(RolloutDriver(host, f"zd-{name}"), urls[name]) for name in which}
    for setup in setups.values():
        await setup.driver.wait_for(healthy, TIMEOUT, "v1 to be healthy")
    results = []
    for name in which:
        result = await _scenario(name, setups[name], load_for(setups[name].url))
        results.append(result)
        if on_result is not None:
            maybe = on_result(result)
            if maybe is not None:
                await maybe
    return results


# --- the benchmark ------------------------------------------------------------------------


def print_table(results: Sequence[ScenarioResult]) -> None:
    print()
    print(
        f"{'scenario':<10} {'window s':>8} {'requests':>8} {'req/s':>7} {'failed':>6} "
        f"{'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  answered by"
    )
    for r in results:
        lat = r.load.latency_ms
        versions = ", ".join(f"{k} {v}" for k, v in sorted(r.load.versions.items()))
        print(
            f"{r.name:<10} {r.load.seconds:8.1f} {r.load.sent:8d} {r.load.rate:7.0f} {r.load.failed:6d} "
            f"{lat.get('p50', float('nan')):7.1f} {lat.get('p99', float('nan')):7.1f} "
            f"{lat.get('max', float('nan')):7.1f}  {versions}"
        )
    total = sum(r.load.failed for r in results)
    print(f"\nfailed requests in all scenarios: {total} (target 0)")
    for r in results:
        if r.load.failures:
            print(f"  {r.name}: {r.load.failures}")


def _print_result(r: ScenarioResult) -> None:
    steps = "; ".join(f"{t:.1f}s {what}" for t, what in r.timeline)
    print(f"{r.name:<10} {r.what}: {r.load.sent} requests, {r.load.failed} failed   [{steps}]", flush=True)


async def _main(args: argparse.Namespace) -> int:
    print(f"zero downtime: {machine()}; client {args.client}, target {args.rate:g} requests/s", flush=True)
    with tempfile.TemporaryDirectory(prefix="zero-downtime-") as tmp:
        script = Path(tmp) / "paced.lua"
        script.write_text(WRK_SCRIPT)

        def load_for(url: str) -> Load:
            if args.client == "wrk":
                return WrkLoad(url, script, rate=args.rate, connections=args.connections)
            return HttpxLoad(url, rate=args.rate, concurrency=args.connections)

        async with embedded_host(Path(tmp) / "state.db", admin_port=0) as host:
            results = await run_scenarios(host, load_for, args.scenario or SCENARIOS, on_result=_print_result)
    print_table(results)
    print(f"load: {args.client}, {args.connections} keep-alive connections, paced to {args.rate:g} requests/s")
    return 0 if all(r.load.failed == 0 for r in results) else 1


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rate", type=float, default=250.0, help="requests/s (default 250)")
    parser.add_argument("--connections", type=int, default=16, help="keep-alive connections (default 16)")
    parser.add_argument("--client", choices=("wrk", "httpx"), default="wrk")
    parser.add_argument("--scenario", action="append", choices=SCENARIOS, help="run only these (repeatable)")
    args = parser.parse_args()
    if args.client == "wrk" and shutil.which("wrk") is None:
        print("wrk is not on PATH (Debian package 'wrk'); or use --client httpx", file=sys.stderr)
        return 2
    return asyncio.run(_main(args))


if __name__ == "__main__":
    sys.exit(main())
