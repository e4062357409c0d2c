"""Throughput of the embedded proxy next to nginx, as reverse proxies in front of the same backend.

    .venv/bin/python bench/proxy_bench.py [--seconds 3] [--rounds 3] [--connections 32] [--no-uvloop]

Needs `nginx` and `wrk` on PATH (Debian packages `nginx` and `wrk`). It starts, on loopback:

* nginx serving a fixed 13-byte response (the backend; 1 worker),
* nginx as a reverse proxy to it (1 worker, upstream keep-alive),
* the embedded proxy to it (1 process, uvloop if importable unless --no-uvloop),

then runs `wrk` against each proxy, alternating for `--rounds` rounds (so that a machine busy
with something else hurts both alike), and prints the median requests/s and their ratio.
Everything it starts is stopped at the end; the nginx configuration lives in a temporary
directory.
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
    server {{
        listen 127.0.0.1:{backend};
        location / {{ return 200 "hello, world\\n"; }}
    }}
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
}}
"""


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


def run_wrk(port: int, seconds: int, connections: int) -> float:
    out = subprocess.run(
        ["wrk", "-t1", f"-c{connections}", f"-d{seconds}s", f"http://127.0.0.1:{port}/"],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    match = re.search(r"Requests/sec:\s+([\d.]+)", out)
    if match is None:
        raise RuntimeError(f"unexpected wrk output:\n{out}")
    if "Non-2xx" in out or "Socket errors" in out:
        print(out, file=sys.stderr)
    return float(match.group(1))


def serve_embedded(port: int, backend_port: int, use_uvloop: bool) -> None:
    """Child process: the embedded proxy with one service routed to the backend."""
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
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


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seconds", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--no-uvloop", action="store_true")
    parser.add_argument("--serve", nargs=2, type=int, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        serve_embedded(args.serve[0], args.serve[1], not args.no_uvloop)
        return 0
    for tool in ("nginx", "wrk"):
        if shutil.which(tool) is None:
            print(f"{tool} is not on PATH (Debian package '{tool}')", file=sys.stderr)
            return 2
    backend, nginx_proxy, embedded = free_port(), free_port(), free_port()
    with tempfile.TemporaryDirectory(prefix="proxy-bench-") as tmp:
        conf = Path(tmp) / "nginx.conf"
        conf.write_text(NGINX_CONF.format(dir=tmp, backend=backend, proxy=nginx_proxy))
        procs: list[subprocess.Popen[bytes]] = []
        try:
            procs.append(subprocess.Popen(["nginx", "-c", str(conf), "-p", tmp]))
            cmd = [sys.executable, __file__, "--serve", str(embedded), str(backend)]
            if args.no_uvloop:
                cmd.append("--no-uvloop")
            procs.append(subprocess.Popen(cmd))
            for port in (backend, nginx_proxy, embedded):
                wait_port(port)
            run_wrk(nginx_proxy, 1, args.connections)  # warm up
            run_wrk(embedded, 1, args.connections)
            direct = run_wrk(backend, args.seconds, args.connections)
            nginx_runs, embedded_runs = [], []
            for _ in range(args.rounds):
                nginx_runs.append(run_wrk(nginx_proxy, args.seconds, args.connections))
                embedded_runs.append(run_wrk(embedded, args.seconds, args.connections))
            via_nginx = statistics.median(nginx_runs)
            via_embedded = statistics.median(embedded_runs)
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
    print(f"backend direct : {direct:10.0f} req/s")
    print(f"nginx proxy    : {via_nginx:10.0f} req/s")
    print(f"embedded proxy : {via_embedded:10.0f} req/s  ({via_embedded / via_nginx:.2f}x nginx)")
    print(f"rounds nginx   : {', '.join(f'{r:.0f}' for r in nginx_runs)}")
    print(f"rounds embedded: {', '.join(f'{r:.0f}' for r in embedded_runs)}")
    print(f"cpus: {os.cpu_count()}, connections: {args.connections}, seconds: {args.seconds} x {args.rounds}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
