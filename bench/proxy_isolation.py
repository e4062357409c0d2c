"""Proxied request latency while the controller's loop is busy: proxy in-process vs its own process.

    .venv/bin/python bench/proxy_isolation.py [--seconds 10] [--rate 200] [--burn-ms 5-50]

One `EmbeddedHost` per mode: `shared` (the default, the proxy on the controller's event loop) and
`process` (`EmbeddedHost(proxy_process=True)`, the proxy in a child process). Each runs one
canary rollout of the demo app (2 replicas) behind a Service. Steady keep-alive load goes
through that Service from a separate client process (so the client is not slowed by what it
measures), once with the controller loop idle and once busy.

Busy: a task on the controller's loop imitates reconciles at scale. It runs synchronous chunks
of CPU work of a random length in `--burn-ms` (default 5-50 ms: the reconcile p99 to the max
loop lag of bench/RESULTS.md, Addendum 2, at 10,000 rollouts), each followed by a
`--burn-gap-ms` sleep. The loop lag column (how late a 10 ms timer fires on the controller
loop) shows that the controller was equally stalled in both modes.

Latency is per request, measured in the client: `p50/p99/max` from sending the request to the
end of the response; `sched p99/max` from the time the request was due (the client paces each
connection on a fixed schedule), which adds the time a stalled response delayed the next send
(no coordinated omission).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import RolloutDriver, canary_rollout, free_port, healthy, machine, services, summary_ms
from rollouts.host import EmbeddedHost

# The load client, run as `python -c`: CONNECTIONS keep-alive connections, each sending GET /
# on a fixed schedule (RATE/CONNECTIONS per second) for SECONDS; prints one JSON line of
# (due, sent, done) triples and failures.
CLIENT = r"""
import asyncio, json, sys, time

async def connection(port, period, until, out, failures):
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    due = time.perf_counter()
    while due < until:
        await asyncio.sleep(max(0.0, due - time.perf_counter()))
        sent = time.perf_counter()
        writer.write(b"GET / HTTP/1.1\r\nHost: bench\r\n\r\n")
        try:
            head = await reader.readuntil(b"\r\n\r\n")
            length = 0
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                if name.strip().lower() == b"content-length":
                    length = int(value)
            await reader.readexactly(length)
        except Exception as exc:
            failures.append(repr(exc))
            writer.close()
            reader, writer = await asyncio.open_connection("127.0.0.1", port)
            due += period
            continue
        if not head.startswith(b"HTTP/1.1 200"):
            failures.append(head.split(b"\r\n", 1)[0].decode())
        out.append((due, sent, time.perf_counter()))
        due += period
    writer.close()

async def main(port, rate, connections, seconds):
    out, failures = [], []
    until = time.perf_counter() + seconds
    period = connections / rate
    await asyncio.gather(*(connection(port, period, until, out, failures) for _ in range(connections)))
    print(json.dumps({"samples": out, "failures": failures}))

asyncio.run(main(*(float(a) if "." in a else int(a) for a in sys.argv[1:])))
"""


async def burn(lo_ms: float, hi_ms: float, gap_ms: float, stop: asyncio.Event) -> None:
    """Synchronous chunks of CPU work on this loop, as reconciles between their awaits."""
    rng = random.Random(7)
    while not stop.is_set():
        end = time.perf_counter() + rng.uniform(lo_ms, hi_ms) / 1000
        x = 0
        while time.perf_counter() < end:
            x += 1
        await asyncio.sleep(gap_ms / 1000)


async def loop_lag(stop: asyncio.Event, lags: list[float]) -> None:
    """How late a 10 ms timer fires on this loop."""
    while not stop.is_set():
        t0 = time.perf_counter()
        await asyncio.sleep(0.01)
        lags.append(time.perf_counter() - t0 - 0.01)


async def run_load(port: int, rate: float, connections: int, seconds: float) -> dict[str, Any]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        CLIENT,
        str(port),
        f"{rate:.1f}",
        str(connections),
        f"{seconds:.1f}",
        stdout=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
    )
    out, _ = await proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"load client exited with {proc.returncode}")
    result: dict[str, Any] = json.loads(out)
    return result


async def measure(mode: str, busy: bool, args: argparse.Namespace, tmp: Path) -> dict[str, Any]:
    host = EmbeddedHost(tmp / f"{mode}-{busy}.db", admin_port=0, proxy_process=mode == "process")
    await host.start()
    stop = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []
    try:
        port = free_port()
        for obj in services("iso", {"iso": port}):
            host.store.apply(obj)
        host.store.apply(
            canary_rollout("iso", "rollouts-demo:v1", [{"setWeight": 50}, {"pause": {}}], stable_service="iso")
        )
        await RolloutDriver(host, "iso").wait_for(healthy, 60, "v1 healthy")
        await run_load(port, args.rate, args.connections, 1.0)  # warm-up: connections, pools
        lags: list[float] = []
        tasks.append(asyncio.create_task(loop_lag(stop, lags)))
        if busy:
            tasks.append(asyncio.create_task(burn(args.burn_lo, args.burn_hi, args.burn_gap_ms, stop)))
        result = await run_load(port, args.rate, args.connections, args.seconds)
    finally:
        stop.set()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        await host.close()
    samples = result["samples"]
    return {
        "mode": mode,
        "busy": busy,
        "requests": len(samples),
        "failed": len(result["failures"]),
        "latency": summary_ms([done - sent for _, sent, done in samples]),
        "scheduled": summary_ms([done - due for due, _, done in samples]),
        "lag": summary_ms(lags),
    }


def print_row(r: dict[str, Any]) -> None:
    lat, sched, lag = r["latency"], r["scheduled"], r["lag"]
    print(
        f"{r['mode']:<8} {'busy' if r['busy'] else 'idle':<5} {r['requests']:>8} {r['failed']:>6} "
        f"{lat['p50']:>7.2f} {lat['p99']:>7.2f} {lat['max']:>7.1f}  {sched['p99']:>7.2f} {sched['max']:>7.1f}  "
        f"{lag['p99']:>7.1f} {lag['max']:>7.1f}",
        flush=True,
    )


async def main_async(args: argparse.Namespace) -> int:
    print(f"# {machine()}; load average {os.getloadavg()[0]:.1f}")
    print(
        f"# {args.rate:.0f} req/s over {args.connections} keep-alive connections, {args.seconds:.0f} s per row; "
        f"busy = {args.burn_lo:g}-{args.burn_hi:g} ms CPU chunks, {args.burn_gap_ms:g} ms gaps, on the controller loop"
    )
    print(
        f"{'mode':<8} {'loop':<5} {'requests':>8} {'failed':>6} {'p50 ms':>7} {'p99 ms':>7} {'max ms':>7}  "
        f"{'sched99':>7} {'schedmx':>7}  {'lag p99':>7} {'lag max':>7}"
    )
    with tempfile.TemporaryDirectory(prefix="proxy-isolation-") as tmp:
        for _ in range(args.rounds):
            for busy in (False, True):
                for mode in args.modes:
                    print_row(await measure(mode, busy, args, Path(tmp)))
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=float, default=10.0, help="load per row (default 10)")
    parser.add_argument("--rate", type=float, default=200.0, help="requests/s (default 200)")
    parser.add_argument("--connections", type=int, default=4, help="keep-alive connections (default 4)")
    parser.add_argument("--burn-ms", default="5-50", help="CPU chunk length range in ms (default 5-50)")
    parser.add_argument("--burn-gap-ms", type=float, default=2.0, help="sleep between chunks in ms (default 2)")
    parser.add_argument("--modes", default="shared,process", help="comma-separated: shared, process")
    parser.add_argument("--rounds", type=int, default=1, help="repeat the table (default 1)")
    args = parser.parse_args()
    lo, _, hi = args.burn_ms.partition("-")
    args.burn_lo, args.burn_hi = float(lo), float(hi or lo)
    args.modes = [m.strip() for m in args.modes.split(",") if m.strip()]
    if not set(args.modes) <= {"shared", "process"}:
        parser.error(f"--modes: unknown mode in {args.modes}; use shared and/or process")
    try:
        import uvloop
    except ImportError:
        return asyncio.run(main_async(args))
    return int(uvloop.run(main_async(args)))


if __name__ == "__main__":
    sys.exit(main())
