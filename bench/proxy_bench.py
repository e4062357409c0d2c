"""Throughput of the embedded proxy next to nginx, as weighted reverse proxies in front of the same backend.

    .venv/bin/python bench/proxy_bench.py [--seconds 3] [--rounds 3] [--connections 8,32,128] [--pin]
                                          [--weight 20] [--vary] [--no-uvloop] [--baseline DIR]
    .venv/bin/python bench/proxy_bench.py --callgrind 20000 [--connections 8] [--vary] [--baseline DIR]

Needs `nginx` and `wrk` on PATH (Debian packages `nginx` and `wrk`). It starts, on loopback:

* nginx serving a fixed 13-byte response on two ports (the backend: one instance, 1 worker),
* nginx as a reverse proxy to it (its own instance, 1 worker, upstream keep-alive): with
  `--weight W` (default 20) the requests are split W % to the backend's second port and the rest
  to its first (`server ... weight=`), as a canary would be; `--weight 0` uses one port only,
* the embedded proxy to it (1 process, uvloop if importable unless --no-uvloop), with the same
  split (a canary revision at weight W),

then, for each connection count, runs `wrk` against each proxy, alternating for `--rounds`
rounds (so that a machine busy with something else hurts both alike), and prints the median
requests/s, their ratio (median and spread of the per-round ratios), the median p50/p99
latencies wrk saw (the backend's own, measured directly, for reference), the CPU time each proxy
used per request (user+system, from /proc: the steadier comparison on a shared machine) and the
load average. Everything it starts is stopped at the end; the nginx configuration lives in a
temporary directory.

`--pin`: wrk and the backend on CPU 0, each proxy alone on CPU 1, so the proxies are compared
on one core each (steadier on a 2-core machine shared with other work). Without it the kernel
places everything.

`--vary`: every request has its own path (`/?n=<count>`, a wrk Lua script) and every response
its own `X-Request-Id` header, so no request or response head repeats: the embedded proxy's
memo of heads (`proxy_request.HeadMemo`, `upstream.known_response`) never hits, which measures
its general way. Without it, as with most load generators, every request is the same.

With `--baseline DIR` (a directory holding an older `src/`, e.g. from `git archive HEAD~1 src |
tar -x -C DIR`), that version's embedded proxy runs too, in the same rounds, for a before/after
on the same machine at the same time.

`--callgrind N` (needs `valgrind`) instead runs the embedded proxy under callgrind, sends it
N keep-alive GET requests over `--connections` connections (the first count given) from a
small client in this process, and prints the proxy's instructions per request: the counters
are zeroed after a warm-up and dumped after the N requests, so start-up is not counted. The
count is deterministic to within ~1 %, unlike requests/s on a shared machine. With `--baseline
DIR` it measures that version's proxy instead.

(Until 2026-11-26 nginx's proxy and the backend were one nginx worker in the unpinned mode, and
there was no split: that made nginx's proxy share its core with the backend's work, which
flattered the embedded proxy; both are now separate instances in either mode.)
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

NGINX_CONF = """
worker_processes 1;
daemon off;
pid {dir}/nginx.pid;
error_log {dir}/error.log warn;
events {{ worker_connections 4096; }}
http {{
    access_log off;
    client_body_temp_path {dir}/body;
    proxy_temp_path {dir}/proxy;
    fastcgi_temp_path {dir}/fastcgi;
    uwsgi_temp_path {dir}/uwsgi;
    scgi_temp_path {dir}/scgi;
    keepalive_requests 1000000;
{servers}
}}
"""
BACKEND_SERVER = """
    server {{
        listen 127.0.0.1:{backend};
        listen 127.0.0.1:{backend2};
        location / {{ {extra}return 200 "hello, world\\n"; }}
    }}
"""
PROXY_SERVER = """
    upstream backend {{ {upstreams} keepalive 64; }}
    server {{
        listen 127.0.0.1:{proxy};
        location / {{
            proxy_pass http://backend;
            proxy_http_version 1.1;
            proxy_set_header Connection "";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto $scheme;
        }}
    }}
"""
# wrk with --vary: every request its own path
VARY_LUA = """
local n = 0
request = function()
  n = n + 1
  return wrk.format("GET", "/?n=" .. n)
end
"""


@dataclass
class Setup:
    backend: int
    backend2: int
    weight: int
    vary: bool


def start_nginx(tmp: str, setup: Setup, proxy: int | None, pin: bool) -> list[subprocess.Popen[bytes]]:
    """nginx as the backend and (unless `proxy` is None) as a proxy, two instances of 1 worker;
    with `pin` the backend's on CPU 0 and the proxy's on CPU 1."""
    extra = "add_header X-Request-Id $request_id always; " if setup.vary else ""
    backend = BACKEND_SERVER.format(backend=setup.backend, backend2=setup.backend2, extra=extra)
    if setup.weight:
        upstreams = (
            f"server 127.0.0.1:{setup.backend} weight={100 - setup.weight};"
            f" server 127.0.0.1:{setup.backend2} weight={setup.weight};"
        )
    else:
        upstreams = f"server 127.0.0.1:{setup.backend};"
    instances = [("backend", backend, ["taskset", "-c", "0"] if pin else [])]
    if proxy is not None:
        server = PROXY_SERVER.format(upstreams=upstreams, proxy=proxy)
        instances.append(("proxy", server, ["taskset", "-c", "1"] if pin else []))
    procs = []
    for sub, blocks, prefix in instances:
        where = Path(tmp, sub)
        where.mkdir(exist_ok=True)
        conf = where / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=where, servers=blocks))
        procs.append(subprocess.Popen([*prefix, "nginx", "-c", str(conf), "-p", str(where)]))
    return procs


@dataclass
class WrkResult:
    rps: float
    p50: float  # seconds
    p99: float  # seconds
    cpu: float  # seconds of CPU (user+system) the measured processes used per request; nan if none


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.2):
            return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listens on port {port}")


def process_tree(pid: int) -> list[int]:
    """`pid` and its descendants (nginx: the master and its worker)."""
    out = [pid]
    with contextlib.suppress(OSError):
        for child in Path(f"/proc/{pid}/task/{pid}/children").read_text().split():
            out += process_tree(int(child))
    return out


def cpu_seconds(pids: list[int]) -> float:
    """User+system CPU time used so far by `pids` (their threads included)."""
    total = 0
    for pid in pids:
        with contextlib.suppress(OSError):
            fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
    return total / os.sysconf("SC_CLK_TCK")


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _latency(out: str, pct: str) -> float:
    match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


WRK_PREFIX: list[str] = []  # ["taskset", "-c", "0"] with --pin
WRK_SCRIPT: list[str] = []  # ["-s", path] with --vary


def run_wrk(port: int, seconds: int, connections: int, pids: list[int] | None = None) -> WrkResult:
    """wrk against `port`; with `pids`, the CPU those processes used per request meanwhile."""
    before = cpu_seconds(pids) if pids else 0.0
    out = subprocess.run(
        [
            *WRK_PREFIX,
            "wrk",
            "-t1",
            f"-c{connections}",
            f"-d{seconds}s",
            "--latency",
            *WRK_SCRIPT,
            f"http://127.0.0.1:{port}/",
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    cpu = cpu_seconds(pids) - before if pids else float("nan")
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    count = re.search(r"(\d+) requests in", out)
    if match is None or count is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    return WrkResult(float(match.group(1)), _latency(out, "50"), _latency(out, "99"), cpu / max(int(count.group(1)), 1))


def serve_embedded(port: int, setup: Setup, use_uvloop: bool, src: str | None = None) -> None:
    """Child process: the embedded proxy with one service routed to the backend (split by weight)."""
    sys.path.insert(0, src or str(Path(__file__).resolve().parents[1] / "src"))
    from rollouts.platform.embedded.proxy import ProxyServer
    from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable

    primary = RevisionBackends("r1", (Backend("backend", "127.0.0.1", setup.backend),))
    canary = RevisionBackends("r2", (Backend("backend2", "127.0.0.1", setup.backend2),)) if setup.weight else None

    async def main() -> None:
        proxy = ProxyServer()
        await proxy.add_service("bench", port)
        proxy.set_routing("bench", RoutingTable(primary=primary, canary=canary, canary_weight=setup.weight))
        stop = asyncio.Event()
        asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, stop.set)
        await stop.wait()
        await proxy.close()

    if use_uvloop:
        try:
            import uvloop

            uvloop.run(main())
            return
        except ImportError:
            pass
    asyncio.run(main())


async def fixed_requests(port: int, total: int, connections: int, vary: bool) -> None:
    """Send `total` keep-alive GETs over `connections` connections, one at a time on each (with
    `vary`, each with its own path).

    The responses are those of the bench backend: a head with Content-Length, 13 bytes of body.
    """
    counter = iter(range(1 << 62))

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                path = b"/?n=%d" % next(counter) if vary else b"/"
                writer.write(b"GET %b HTTP/1.1\r\nHost: bench\r\nUser-Agent: proxy-bench\r\n\r\n" % path)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length is None or not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response head: {head!r}")
                await reader.readexactly(int(length.group(1)))
        finally:
            writer.close()

    per, extra = divmod(total, connections)
    await asyncio.gather(*(one(per + (1 if i < extra else 0)) for i in range(connections)))


def measure_instructions(args: argparse.Namespace, setup: Setup, tmp: str) -> int:
    """`--callgrind N`: the embedded proxy's instructions per request."""
    if shutil.which("valgrind") is None:
        print("valgrind is not on PATH (Debian package 'valgrind')", file=sys.stderr)
        return 2
    connections = args.connections[0]
    port = free_port()
    out = Path(tmp) / "callgrind.out"
    cmd = [
        "valgrind",
        "--tool=callgrind",
        f"--callgrind-out-file={out}.%p",
        sys.executable,
        __file__,
        *serve_args(port, setup, args.no_uvloop, str(Path(args.baseline).resolve() / "src") if args.baseline else None),
    ]
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=120.0)
        asyncio.run(fixed_requests(port, min(args.callgrind, 2000), connections, setup.vary))  # warm up
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        asyncio.run(fixed_requests(port, args.callgrind, connections, setup.vary))
        subprocess.run(["callgrind_control", "--dump=bench", str(proc.pid)], check=True, capture_output=True)
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    dumps = sorted(Path(tmp).glob(f"callgrind.out.{proc.pid}.*"))
    if not dumps:
        raise RuntimeError("callgrind wrote no dump")
    totals = re.search(r"^(?:summary|totals):\s+(\d+)", dumps[0].read_text(errors="replace"), re.M)
    if totals is None:
        raise RuntimeError(f"no totals in {dumps[0]}")
    instructions = int(totals.group(1))
    if args.keep_dump:
        shutil.copy(dumps[0], args.keep_dump)
    which = f"the proxy of {args.baseline}" if args.baseline else "embedded proxy"
    print(f"{which}: {instructions / args.callgrind:,.0f} instructions/request")
    print(
        f"({instructions:,} for {args.callgrind} requests over {connections} connections,"
        f" weight {setup.weight}, vary {setup.vary}, uvloop {not args.no_uvloop})"
    )
    return 0


def serve_args(port: int, setup: Setup, no_uvloop: bool, src: str | None = None) -> list[str]:
    cmd = ["--serve", str(port), str(setup.backend), str(setup.backend2), str(setup.weight)]
    if src is not None:
        cmd += ["--serve-src", src]
    if no_uvloop:
        cmd.append("--no-uvloop")
    return cmd


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def _us(seconds: float) -> str:
    return "-" if math.isnan(seconds) else f"{seconds * 1e6:.1f}"


def _load() -> str:
    return "/".join(f"{x:.2f}" for x in os.getloadavg())


def benchmark(args: argparse.Namespace, setup: Setup, targets: dict[str, tuple[int, list[int]]]) -> None:
    """wrk against each of `targets` (name -> port and the pids whose CPU to count; "nginx"
    first), alternating, per connection count."""
    names = list(targets)
    lines: list[str] = []
    details: list[str] = []
    for connections in args.connections:
        load_before = _load()
        for port, _ in targets.values():
            run_wrk(port, 1, connections)  # warm up
        direct = run_wrk(setup.backend, args.seconds, connections)
        runs: dict[str, list[WrkResult]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, (port, pids) in targets.items():
                runs[name].append(run_wrk(port, args.seconds, connections, pids))

        def med(name: str, attr: str, runs: dict[str, list[WrkResult]] = runs) -> float:
            return float(statistics.median(getattr(r, attr) for r in runs[name]))

        lines.append(
            f"{connections} connections: backend direct {direct.rps:.0f} req/s,"
            f" p50 {_ms(direct.p50)} ms, p99 {_ms(direct.p99)} ms; load average {load_before} -> {_load()}"
        )
        for name in names:
            rps = med(name, "rps")
            line = f"  {name:<9} {rps:>8.0f} req/s"
            cpu = med(name, "cpu")
            if name != "nginx":
                # ratio of each round against the nginx run of the same round: both saw about
                # the same machine
                ratios = sorted(e.rps / n.rps for n, e in zip(runs["nginx"], runs[name], strict=True))
                line += f"  {rps / med('nginx', 'rps'):.2f}x nginx (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
                line += f"  CPU {_us(cpu)} us/req ({med('nginx', 'cpu') / cpu:.2f}x nginx's per request)"
            else:
                line += " " * 33 + f"  CPU {_us(cpu)} us/req" + " " * 27
            p50, p99 = med(name, "p50"), med(name, "p99")
            line += f"  p50 {_ms(p50)} ms, p99 {_ms(p99)} ms"
            lines.append(line)
        details.append(
            f"{connections:>5}: "
            + " | ".join(f"{n} {', '.join(f'{r.rps:.0f}' for r in runs[n])}" for n in names)
            + "  (CPU us/req: "
            + " | ".join(f"{n} {', '.join(_us(r.cpu) for r in runs[n])}" for n in names)
            + ")"
        )
        print("\n".join(lines[-1 - len(names) :]), flush=True)
    print()
    print("\n".join(lines))
    print("req/s of each round:")
    print("\n".join(details))
    print(
        f"cpus: {os.cpu_count()}, seconds: {args.seconds} x {args.rounds} rounds, uvloop: {not args.no_uvloop},"
        f" pinned: {args.pin}, weight: {setup.weight}, vary: {setup.vary}"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--connections",
        type=lambda s: [int(c) for c in s.split(",")],
        default=[8, 32, 128],
        help="comma-separated connection counts (default 8,32,128)",
    )
    parser.add_argument("--weight", type=int, default=20, help="canary weight of the split, 0-100 (default 20)")
    parser.add_argument("--vary", action="store_true", help="no request or response head repeats (see above)")
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--callgrind", type=int, metavar="N", help="count instructions over N requests instead")
    parser.add_argument("--keep-dump", metavar="FILE", help="with --callgrind: copy the callgrind dump here")
    parser.add_argument("--baseline", metavar="DIR", help="also run the proxy of DIR/src (an older version)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="wrk and the backend on CPU 0, each proxy on CPU 1: steadier on 2 cores",
    )
    parser.add_argument("--serve", nargs=4, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-src", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        port, backend, backend2, weight = args.serve
        serve_embedded(port, Setup(backend, backend2, weight, False), not args.no_uvloop, args.serve_src)
        return 0
    if not 0 <= args.weight <= 100:
        print(f"--weight must be between 0 and 100, got {args.weight}", file=sys.stderr)
        return 2
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not on PATH (Debian package '{tool}')", file=sys.stderr)
            return 2
    if args.pin:
        if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
            print("--pin needs taskset and 2 CPUs", file=sys.stderr)
            return 2
        WRK_PREFIX[:] = ["taskset", "-c", "0"]
    setup = Setup(free_port(), free_port(), args.weight, args.vary)
    nginx_proxy, embedded = free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        if args.vary:
            script = Path(tmp, "vary.lua")
            script.write_text(VARY_LUA)
            WRK_SCRIPT[:] = ["-s", str(script)]
        procs: list[subprocess.Popen[bytes]] = []
        try:
            if args.callgrind:
                procs += start_nginx(tmp, setup, None, pin=False)
                wait_port(setup.backend)
                return measure_instructions(args, setup, tmp)
            procs += start_nginx(tmp, setup, nginx_proxy, args.pin)
            targets = {"nginx": nginx_proxy, "embedded": embedded}
            sources: dict[str, str | None] = {"embedded": None}
            if args.baseline:
                targets["baseline"] = free_port()
                sources["baseline"] = str(Path(args.baseline).resolve() / "src")
            pids: dict[str, list[int]] = {}
            for name, src in sources.items():
                cmd = [sys.executable, __file__, *serve_args(targets[name], setup, args.no_uvloop, src)]
                proc = subprocess.Popen(["taskset", "-c", "1", *cmd] if args.pin else cmd)
                procs.append(proc)
                pids[name] = [proc.pid]  # (taskset execs the command: same pid)
            for port in (setup.backend, setup.backend2, *targets.values()):
                wait_port(port)
            deadline = time.monotonic() + 10.0
            while len(process_tree(procs[1].pid)) < 2 and time.monotonic() < deadline:
                time.sleep(0.05)  # (the worker is forked after the port is bound)
            pids["nginx"] = process_tree(procs[1].pid)  # the proxy instance: master and worker
            benchmark(args, setup, {name: (port, pids[name]) for name, port in targets.items()})
        finally:
            for p in procs:
                with contextlib.suppress(ProcessLookupError):
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()
    return 0


if __name__ == "__main__":
    sys.exit(main())
