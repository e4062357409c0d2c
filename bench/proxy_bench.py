"""Throughput of the embedded proxy next to nginx, as reverse proxies in front of the same backend.

    .venv/bin/python bench/proxy_bench.py [--seconds 3] [--rounds 3] [--connections 8,32,128] [--no-uvloop]
    .venv/bin/python bench/proxy_bench.py --callgrind 20000 [--connections 8]
    .venv/bin/python bench/proxy_bench.py --baseline /tmp/old   # also an older version's proxy

With `--baseline DIR` (a directory holding an older `src/`, e.g. from `git archive HEAD~1 src |
tar -x -C DIR`), that version's embedded proxy runs too, in the same rounds, for a before/after
on the same machine at the same time.

Needs `nginx` and `wrk` on PATH (Debian packages `nginx` and `wrk`). It starts, on loopback:

* nginx serving a fixed 13-byte response (the backend; 1 worker),
* nginx as a reverse proxy to it (1 worker, upstream keep-alive),
* the embedded proxy to it (1 process, uvloop if importable unless --no-uvloop),

(with `--pin`: wrk and the backend on CPU 0, each proxy alone on CPU 1, nginx's proxy as its own
instance: the proxies are then compared on one core each, which is steadier on a 2-core machine
shared with other work, but harder on the embedded proxy than the default, where nginx's single
worker serves both the backend and the proxy)

then, for each connection count, runs `wrk` against each proxy, alternating for `--rounds`
rounds (so that a machine busy with something else hurts both alike), and prints the median
requests/s, their ratio (median and spread of the per-round ratios), and the median p50/p99
latencies wrk saw (the backend's own, measured directly, for reference). Everything it starts
is stopped at the end; the nginx configuration lives in a temporary directory.

`--callgrind N` (needs `valgrind`) instead runs the embedded proxy under callgrind, sends it
N keep-alive GET requests over `--connections` connections (the first count given) from a
small client in this process, and prints the proxy's instructions per request: the counters
are zeroed after a warm-up and dumped after the N requests, so start-up is not counted. The
count is deterministic to within ~1 %, unlike requests/s on a shared machine.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
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
    upstream backend {{ server 127.0.0.1:{backend}; keepalive 64; }}
{servers}
}}
"""
BACKEND_SERVER = """
    server {{
        listen 127.0.0.1:{backend};
        location / {{ return 200 "hello, world\\n"; }}
    }}
"""
PROXY_SERVER = """
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


def start_nginx(tmp: str, backend: int, proxy: int, pin: bool) -> list[subprocess.Popen[bytes]]:
    """nginx as the backend and as a proxy: one instance (one worker serving both), or with
    `pin` two instances, the backend's on CPU 0 and the proxy's on CPU 1."""
    servers: list[tuple[str, str, list[str]]]
    if not pin:
        servers = [("", BACKEND_SERVER + PROXY_SERVER, [])]
    else:
        servers = [("backend", BACKEND_SERVER, ["taskset", "-c", "0"]), ("proxy", PROXY_SERVER, ["taskset", "-c", "1"])]
    procs = []
    for sub, blocks, prefix in servers:
        where = Path(tmp, sub)
        where.mkdir(exist_ok=True)
        conf = where / "nginx.conf"
        text = NGINX_CONF.format(dir=where, backend=backend, servers=blocks.format(backend=backend, proxy=proxy))
        conf.write_text(text)
        procs.append(subprocess.Popen([*prefix, "nginx", "-c", str(conf), "-p", str(where)]))
    return procs


@dataclass
class WrkResult:
    rps: float
    p50: float  # seconds
    p99: float  # seconds


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


_UNITS = {"us": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0}


def _latency(out: str, pct: str) -> float:
    match = re.search(rf"^\s+{pct}%\s+([\d.]+)(us|ms|s|m)\s*$", out, re.M)
    return float(match.group(1)) * _UNITS[match.group(2)] if match else float("nan")


WRK_PREFIX: list[str] = []  # ["taskset", "-c", "0"] with --pin


def run_wrk(port: int, seconds: int, connections: int) -> WrkResult:
    out = subprocess.run(
        [*WRK_PREFIX, "wrk", "-t1", f"-c{connections}", f"-d{seconds}s", "--latency", f"http://127.0.0.1:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    return WrkResult(float(match.group(1)), _latency(out, "50"), _latency(out, "99"))


def serve_embedded(port: int, backend_port: int, use_uvloop: bool, src: str | None = None) -> None:
    """Child process: the embedded proxy with one service routed to the backend."""
    sys.path.insert(0, src or str(Path(__file__).resolve().parents[1] / "src"))
    from rollouts.platform.embedded.proxy import ProxyServer
    from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable

    async def main() -> None:
        proxy = ProxyServer()
        await proxy.add_service("bench", port)
        proxy.set_routing(
            "bench",
            RoutingTable(primary=RevisionBackends("r1", (Backend("backend", "127.0.0.1", backend_port),))),
        )
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


async def fixed_requests(port: int, total: int, connections: int) -> None:
    """Send `total` keep-alive GETs over `connections` connections, one at a time on each.

    The responses are those of the bench backend: a head with Content-Length, 13 bytes of body.
    """
    request = b"GET / HTTP/1.1\r\nHost: bench\r\nUser-Agent: proxy-bench\r\n\r\n"

    async def one(n: int) -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(n):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = re.search(rb"(?i)\r\ncontent-length:\s*(\d+)", head)
                if length is None or not head.startswith(b"HTTP/1.1 200"):
                    raise RuntimeError(f"unexpected response head: {head!r}")
                await reader.readexactly(int(length.group(1)))
        finally:
            writer.close()

    per, extra = divmod(total, connections)
    await asyncio.gather(*(one(per + (1 if i < extra else 0)) for i in range(connections)))


def measure_instructions(args: argparse.Namespace, backend: int, tmp: str) -> int:
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
        "--serve",
        str(port),
        str(backend),
    ]
    if args.no_uvloop:
        cmd.append("--no-uvloop")
    proc = subprocess.Popen(cmd, stderr=subprocess.DEVNULL)
    try:
        wait_port(port, timeout=120.0)
        asyncio.run(fixed_requests(port, min(args.callgrind, 2000), connections))  # warm up
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        asyncio.run(fixed_requests(port, args.callgrind, connections))
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
    print(f"embedded proxy: {instructions / args.callgrind:,.0f} instructions/request")
    print(f"({instructions:,} for {args.callgrind} requests over {connections} connections)")
    return 0


def _ms(seconds: float) -> str:
    return f"{seconds * 1000:.2f}"


def benchmark(args: argparse.Namespace, backend: int, targets: dict[str, int]) -> None:
    """wrk against each of `targets` (name -> port; "nginx" first), alternating, per connection count."""
    names = list(targets)
    lines: list[str] = []
    details: list[str] = []
    for connections in args.connections:
        for port in targets.values():
            run_wrk(port, 1, connections)  # warm up
        direct = run_wrk(backend, args.seconds, connections)
        runs: dict[str, list[WrkResult]] = {name: [] for name in names}
        for _ in range(args.rounds):
            for name, port in targets.items():
                runs[name].append(run_wrk(port, args.seconds, connections))

        def med(name: str, attr: str, runs: dict[str, list[WrkResult]] = runs) -> float:
            return float(statistics.median(getattr(r, attr) for r in runs[name]))

        lines.append(
            f"{connections} connections: backend direct {direct.rps:.0f} req/s,"
            f" p50 {_ms(direct.p50)} ms, p99 {_ms(direct.p99)} ms"
        )
        for name in names:
            rps = med(name, "rps")
            line = f"  {name:<9} {rps:>8.0f} req/s"
            if name != "nginx":
                # ratio of each round against the nginx run of the same round: both saw about
                # the same machine
                ratios = sorted(e.rps / n.rps for n, e in zip(runs["nginx"], runs[name], strict=True))
                line += f"  {rps / med('nginx', 'rps'):.2f}x nginx (rounds {ratios[0]:.2f}-{ratios[-1]:.2f})"
            else:
                line += " " * 33
            p50, p99 = med(name, "p50"), med(name, "p99")
            line += (
                f"  p50 {_ms(p50)} ms, p99 {_ms(p99)} ms"
                f" (added to the backend's: {_ms(p50 - direct.p50)} / {_ms(p99 - direct.p99)})"
            )
            lines.append(line)
        details.append(
            f"{connections:>5}: " + " | ".join(f"{n} {', '.join(f'{r.rps:.0f}' for r in runs[n])}" for n in names)
        )
        print("\n".join(lines[-1 - len(names) :]), flush=True)
    print()
    print("\n".join(lines))
    print("req/s of each round:")
    print("\n".join(details))
    print(
        f"cpus: {os.cpu_count()}, seconds: {args.seconds} x {args.rounds} rounds, uvloop: {not args.no_uvloop},"
        f" pinned: {args.pin}"
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
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--callgrind", type=int, metavar="N", help="count instructions over N requests instead")
    parser.add_argument("--keep-dump", metavar="FILE", help="with --callgrind: copy the callgrind dump here")
    parser.add_argument("--baseline", metavar="DIR", help="also run the proxy of DIR/src (an older version)")
    parser.add_argument(
        "--pin",
        action="store_true",
        help="wrk and the backend on CPU 0, each proxy (nginx's its own instance) on CPU 1: steadier on 2 cores",
    )
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    parser.add_argument("--serve-src", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_embedded(args.serve[0], args.serve[1], not args.no_uvloop, args.serve_src)
        return 0
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not on PATH (Debian package '{tool}')", file=sys.stderr)
            return 2
    if args.pin:
        if shutil.which("taskset") is None or (os.cpu_count() or 1) < 2:
            print("--pin needs taskset and 2 CPUs", file=sys.stderr)
            return 2
        WRK_PREFIX[:] = ["taskset", "-c", "0"]
    backend, nginx_proxy, embedded = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs += start_nginx(tmp, backend, nginx_proxy, args.pin and not args.callgrind)
            if args.callgrind:
                wait_port(backend)
                return measure_instructions(args, backend, tmp)
            targets = {"nginx": nginx_proxy, "embedded": embedded}
            sources: dict[str, str | None] = {"embedded": None}
            if args.baseline:
                targets["baseline"] = free_port()
                sources["baseline"] = str(Path(args.baseline).resolve() / "src")
            for name, src in sources.items():
                cmd = [sys.executable, __file__, "--serve", str(targets[name]), str(backend)]
                if src is not None:
                    cmd += ["--serve-src", src]
                if args.no_uvloop:
                    cmd.append("--no-uvloop")
                procs.append(subprocess.Popen(["taskset", "-c", "1", *cmd] if args.pin else cmd))
            for port in (backend, *targets.values()):
                wait_port(port)
            benchmark(args, backend, targets)
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
