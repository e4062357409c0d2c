"""The demo service: a tiny stdlib HTTP server whose health follows its image tag.

Run it as `python -m rollouts.demo.app`. It listens on 127.0.0.1:$PORT (default 8080) and
reads the tag of `$ROLLOUTS_IMAGE` (`rollouts-demo:v3` -> `v3`; a bare `v3` is a tag too):

* `v1`, `v2` and any tag not listed below: healthy, answers 200 at once;
* `v3`: 30 % of requests to `/` answer 500 and every request to `/` takes 200 ms more. Failures
  are deterministic: request n (counting from 0) fails when floor((n+1)·rate) > floor(n·rate),
  so exactly 3 in every 10 consecutive requests fail;
* `bad-start`: exits with code 1 at once (for crash tests).

`DEMO_ERROR_RATE` (0..1) and `DEMO_LATENCY_MS` override the tag's error rate and extra latency.

Endpoints: `/` (`{"version": ..., "pod": ...}`), `/healthz` (200 once serving), `/version`.
Logs are quiet: one line at start, at most one line per 100 requests, one at exit. SIGTERM (and
SIGINT) stop accepting connections, let in-flight requests finish and exit 0 within about 1 s.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import sys
import threading
import time
from collections.abc import Mapping
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any

DEFAULT_PORT = 8080
DRAIN_SECONDS = 0.9

# tag -> (error rate, extra latency in ms)
_TAG_BEHAVIOUR: dict[str, tuple[float, float]] = {"v3": (0.3, 200.0)}


def image_tag(image: str) -> str:
    """`registry:5000/rollouts-demo:v2@sha256:...` -> `v2`; `v2` -> `v2`; `demo` -> `demo`."""
    image = image.split("@", 1)[0]
    last = image.rsplit("/", 1)[-1]
    return last.rsplit(":", 1)[1] if ":" in last else last


@dataclass(frozen=True)
class DemoConfig:
    version: str
    image: str
    pod: str
    host: str
    port: int
    error_rate: float
    latency_ms: float
    bad_start: bool

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> DemoConfig:
        image = env.get("ROLLOUTS_IMAGE", "rollouts-demo:v1")
        version = image_tag(image) or "v1"
        error_rate, latency_ms = _TAG_BEHAVIOUR.get(version, (0.0, 0.0))
        if env.get("DEMO_ERROR_RATE"):
            error_rate = min(1.0, max(0.0, float(env["DEMO_ERROR_RATE"])))
        if env.get("DEMO_LATENCY_MS"):
            latency_ms = max(0.0, float(env["DEMO_LATENCY_MS"]))
        return cls(
            version=version,
            image=image,
            pod=env.get("POD_NAME", ""),
            host=env.get("HOST", "127.0.0.1"),
            port=int(env.get("PORT") or DEFAULT_PORT),
            error_rate=error_rate,
            latency_ms=latency_ms,
            bad_start=version == "bad-start",
        )


class FailurePlan:
    """Decides, deterministically and thread-safely, which requests fail."""

    def __init__(self, rate: float) -> None:
        self._per_mille = round(rate * 1000)
        self._lock = threading.Lock()
        self._count = 0
        self._errors = 0

    def next(self) -> tuple[int, bool]:
        """The request's number (from 1) and whether it fails."""
        with self._lock:
            n = self._count
            self._count += 1
            fail = ((n + 1) * self._per_mille) // 1000 > (n * self._per_mille) // 1000
            if fail:
                self._errors += 1
            return self._count, fail

    @property
    def errors(self) -> int:
        with self._lock:
            return self._errors

    @property
    def count(self) -> int:
        with self._lock:
            return self._count


class DemoServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True
    request_queue_size = 128

    def __init__(self, config: DemoConfig) -> None:
        self.config = config
        self.plan = FailurePlan(config.error_rate)
        self.started = False
        self.draining = False
        self._conns_lock = threading.Condition()
        self._conns: set[socket.socket] = set()
        super().__init__((config.host, config.port), DemoHandler)

    def process_request(self, request: socket.socket | tuple[bytes, socket.socket], client_address: Any) -> None:
        if isinstance(request, socket.socket):
            with self._conns_lock:
                self._conns.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: socket.socket | tuple[bytes, socket.socket]) -> None:
        with self._conns_lock:
            if isinstance(request, socket.socket):
                self._conns.discard(request)
            self._conns_lock.notify_all()
        super().shutdown_request(request)

    def drain(self, timeout: float) -> int:
        """Stop reading new requests on open connections and wait (at most `timeout` seconds) for
        the requests in flight; return how many connections were still open at the end."""
        self.draining = True
        with self._conns_lock:
            for conn in self._conns:
                # Wakes connections idle between keep-alive requests; a request already read
                # still gets its response written.
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RD)
            self._conns_lock.wait_for(lambda: not self._conns, timeout)
            return len(self._conns)


class DemoHandler(BaseHTTPRequestHandler):
    # Headers and body go out in two writes: without TCP_NODELAY the client's delayed ACK
    # holds the body for ~40 ms on every request.
    disable_nagle_algorithm = True
    protocol_version = "HTTP/1.1"
    server_version = "rollouts-demo"
    sys_version = ""
    server: DemoServer
    timeout = 30

    def do_GET(self) -> None:
        self._serve(send_body=True)

    def do_HEAD(self) -> None:
        self._serve(send_body=False)

    def log_message(self, format: str, *args: object) -> None:
        pass

    def _serve(self, *, send_body: bool) -> None:
        config = self.server.config
        path = self.path.split("?", 1)[0]
        if path == "/healthz":
            if self.server.started:
                self._reply(200, {"status": "ok"}, send_body)
            else:
                self._reply(503, {"status": "starting"}, send_body)
        elif path == "/version":
            self._reply(200, {"version": config.version, "image": config.image}, send_body)
        elif path == "/":
            number, fail = self.server.plan.next()
            if config.latency_ms > 0:
                time.sleep(config.latency_ms / 1000)
            body: dict[str, object] = {"version": config.version, "pod": config.pod}
            if fail:
                body["error"] = "injected failure"
            self._reply(500 if fail else 200, body, send_body)
            if number % 100 == 0:
                _say(f"served {number} requests, {self.server.plan.errors} errors")
        else:
            self._reply(404, {"error": f"no route for {path}"}, send_body)

    def _reply(self, code: int, body: dict[str, object], send_body: bool) -> None:
        payload = (json.dumps(body) + "\n").encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        self.send_header("X-Demo-Version", self.server.config.version)
        if self.server.draining:
            self.send_header("Connection", "close")
            self.close_connection = True
        self.end_headers()
        if send_body:
            self.wfile.write(payload)


def _say(line: str) -> None:
    print(f"rollouts-demo: {line}", file=sys.stderr, flush=True)


def serve(config: DemoConfig) -> int:
    """Serve until SIGTERM/SIGINT; return the exit code."""
    if config.bad_start:
        _say(f"image {config.image}: bad start, exiting with code 1")
        return 1
    server = DemoServer(config)
    stopping = threading.Event()

    def stop(signum: int, _frame: FrameType | None) -> None:
        if stopping.is_set():
            return
        stopping.set()
        # shutdown() blocks until serve_forever returns, so not from the serving thread.
        threading.Thread(target=server.shutdown, name="demo-shutdown", daemon=True).start()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    server.started = True
    _say(
        f"{config.version} (pod {config.pod or '-'}) listening on {config.host}:{server.server_address[1]}"
        f", error rate {config.error_rate:g}, extra latency {config.latency_ms:g} ms"
    )
    try:
        server.serve_forever(poll_interval=0.1)
        left = server.drain(DRAIN_SECONDS)
    finally:
        server.server_close()
    _say(f"stopped after {server.plan.count} requests" + (f", {left} cut off" if left else ""))
    return 0


def main() -> None:
    sys.exit(serve(DemoConfig.from_env(os.environ)))


if __name__ == "__main__":
    main()
