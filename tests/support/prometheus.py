"""Run a real Prometheus server in tests (plus small HTTP stand-ins for error cases).

`PrometheusServer` starts `/usr/bin/prometheus` on a free loopback port with its config and
TSDB in a temporary directory, waits for `/-/ready`, and stops and reaps it at teardown.
It gets data two ways:

- **Deterministic history** (`backfill`, before `start`): the series are written as an
  OpenMetrics file and turned into TSDB blocks by `promtool tsdb create-blocks-from
  openmetrics`, so the history is queryable as soon as the server is ready. Samples must be in
  the past and within retention (15 days); an instant query at "now" only sees a series whose
  last sample is within Prometheus' 5-minute lookback, so `constant_series` ends at "now".
- **Scraping** (`add_target`, any time): targets go to a `file_sd_configs` file (refresh 1s,
  scrape interval 1s). The first scraped sample becomes queryable only after ~5–6 s; use
  `wait_for(query)` rather than sleeping.

    with PrometheusServer() as prom:            # or: prom = PrometheusServer(); prom.start()
        ...                                     # prom.url == "http://127.0.0.1:PORT"

    prom = PrometheusServer(workdir=tmp_path)
    prom.backfill([constant_series("up_ratio", 0.99, labels={"service": "a"})])
    prom.start()
    ...
    prom.stop()

If the binaries are missing, `require_binaries()` (called by `start`) raises
`PrometheusNotInstalled` with a message saying how to install them; fixtures turn it into a
test failure, never a silent skip.
"""

from __future__ import annotations

import atexit
import contextlib
import json
import math
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
import weakref
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import IO, Any, Self

import httpx

__all__ = [
    "INSTALL_HINT",
    "PROMETHEUS_BIN_ENV",
    "PROMTOOL_BIN_ENV",
    "BlackholeServer",
    "PrometheusNotInstalled",
    "PrometheusServer",
    "RecordedRequest",
    "Series",
    "StubHTTPServer",
    "constant_series",
    "openmetrics_text",
    "require_binaries",
    "unused_port",
]

PROMETHEUS_BIN_ENV = "ROLLOUTS_TEST_PROMETHEUS"
PROMTOOL_BIN_ENV = "ROLLOUTS_TEST_PROMTOOL"
INSTALL_HINT = (
    "run the test command from README.md, which installs the Debian package `prometheus` "
    "(/usr/bin/prometheus and /usr/bin/promtool) before running pytest "
    f"(or point ${PROMETHEUS_BIN_ENV} / ${PROMTOOL_BIN_ENV} at the binaries)"
)


class PrometheusNotInstalled(RuntimeError):
    """The prometheus/promtool binaries are not available."""


def _find_binary(name: str, env: str) -> str | None:
    configured = os.environ.get(env)
    if configured:
        return configured if os.access(configured, os.X_OK) else None
    default = f"/usr/bin/{name}"
    if os.access(default, os.X_OK):
        return default
    return shutil.which(name)


def require_binaries() -> tuple[str, str]:
    """(prometheus, promtool) paths, or PrometheusNotInstalled saying how to get them."""
    prometheus = _find_binary("prometheus", PROMETHEUS_BIN_ENV)
    promtool = _find_binary("promtool", PROMTOOL_BIN_ENV)
    missing = [name for name, path in (("prometheus", prometheus), ("promtool", promtool)) if path is None]
    if prometheus is None or promtool is None:
        raise PrometheusNotInstalled(f"{' and '.join(missing)} not found: {INSTALL_HINT}")
    return prometheus, promtool


def unused_port() -> int:
    """A loopback TCP port that nothing listens on right now (also handy as a closed port)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


# -- history -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Series:
    """One time series for `backfill`: samples are (unix seconds, value), oldest first."""

    name: str
    labels: Mapping[str, str] = field(default_factory=dict)
    samples: Sequence[tuple[float, float]] = ()


def constant_series(
    name: str,
    value: float,
    *,
    labels: Mapping[str, str] | None = None,
    duration: float = 3600.0,
    step: float = 15.0,
    end: float | None = None,
) -> Series:
    """`value` every `step` seconds over the `duration` seconds up to `end` (default: now).

    Ending at now keeps the series visible to instant queries at "now" for the next 5 minutes
    (Prometheus' lookback) — plenty for one test session.
    """
    last = time.time() if end is None else end
    count = int(duration // step)
    samples = [(last - (count - i) * step, value) for i in range(count + 1)]
    return Series(name, dict(labels or {}), samples)


def _om_value(value: float) -> str:
    if math.isnan(value):
        return "NaN"
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    return repr(float(value))


def _om_label_value(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def openmetrics_text(series: Iterable[Series]) -> str:
    """The series as an OpenMetrics exposition (families grouped, type `unknown`, `# EOF`)."""
    families: dict[str, list[Series]] = {}
    for one in series:
        families.setdefault(one.name, []).append(one)
    lines: list[str] = []
    for name, members in families.items():
        lines.append(f"# TYPE {name} unknown")
        for one in members:
            labels = ",".join(f'{k}="{_om_label_value(v)}"' for k, v in sorted(one.labels.items()))
            selector = f"{name}{{{labels}}}" if labels else name
            lines.extend(f"{selector} {_om_value(v)} {t:.3f}" for t, v in one.samples)
    lines.append("# EOF")
    return "\n".join(lines) + "\n"


# -- the server ----------------------------------------------------------------------------------------

_running: weakref.WeakSet[PrometheusServer] = weakref.WeakSet()


@atexit.register
def _stop_leftovers() -> None:  # a safety net: fixtures stop their servers themselves
    for server in list(_running):
        server.stop()


class PrometheusServer:
    """A real Prometheus on 127.0.0.1:<free port>; see the module docstring."""

    def __init__(
        self,
        *,
        workdir: Path | str | None = None,
        scrape_interval: str = "1s",
        extra_args: Sequence[str] = (),
    ) -> None:
        self._owns_workdir = workdir is None
        self.workdir = Path(workdir) if workdir is not None else Path(tempfile.mkdtemp(prefix="prometheus-"))
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.data_dir = self.workdir / "data"
        self.config_file = self.workdir / "prometheus.yml"
        self.targets_file = self.workdir / "targets.json"
        self.log_file = self.workdir / "prometheus.log"
        self.scrape_interval = scrape_interval
        self.extra_args = list(extra_args)
        self._targets: dict[str, dict[str, str]] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log: IO[bytes] | None = None
        self._port: int | None = None
        self._write_targets()

    # -- lifecycle --------------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if self._port is None:
            raise RuntimeError("PrometheusServer is not started")
        return f"http://127.0.0.1:{self._port}"

    @property
    def running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def start(self, *, ready_timeout: float = 15.0) -> Self:
        """Start Prometheus and wait (at most `ready_timeout` s) until `/-/ready` answers 200."""
        if self._process is not None:
            raise RuntimeError("PrometheusServer is already started")
        prometheus, _ = require_binaries()
        self._write_config()
        last_error = ""
        for _attempt in range(3):  # the free port can be taken between probing and binding
            port = unused_port()
            self._log = self.log_file.open("ab")
            self._process = subprocess.Popen(
                [
                    prometheus,
                    f"--config.file={self.config_file}",
                    f"--storage.tsdb.path={self.data_dir}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--web.enable-lifecycle",
                    *self.extra_args,
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
            self._port = port
            _running.add(self)
            try:
                self._wait_ready(ready_timeout)
                return self
            except RuntimeError as exc:
                last_error = str(exc)
                self.stop(remove_workdir=False)
                if "address already in use" not in last_error:
                    break
        raise RuntimeError(last_error)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        with httpx.Client(timeout=1.0, trust_env=False) as client:
            while True:
                process = self._process
                assert process is not None
                if process.poll() is not None:
                    raise RuntimeError(
                        f"prometheus exited with code {process.returncode} before it was ready:\n{self.log_tail()}"
                    )
                with contextlib.suppress(httpx.HTTPError):
                    if client.get(f"{self.url}/-/ready").status_code == 200:
                        return
                if time.monotonic() > deadline:
                    raise RuntimeError(f"prometheus was not ready within {timeout}s:\n{self.log_tail()}")
                time.sleep(0.05)

    def stop(self, *, timeout: float = 10.0, remove_workdir: bool = True) -> None:
        """Stop (SIGTERM, then SIGKILL after `timeout` s) and reap the process; idempotent."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        _running.discard(self)
        if self._log is not None:
            self._log.close()
            self._log = None
        if remove_workdir and self._owns_workdir:
            shutil.rmtree(self.workdir, ignore_errors=True)

    def __enter__(self) -> Self:
        return self if self.running else self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def log_tail(self, lines: int = 20) -> str:
        try:
            text = self.log_file.read_text(errors="replace")
        except OSError:
            return "<no log>"
        return "\n".join(text.splitlines()[-lines:])

    # -- data -------------------------------------------------------------------------------------------

    def backfill(self, series: Iterable[Series]) -> None:
        """Write `series` into the TSDB with promtool (only before `start`)."""
        if self._process is not None:
            raise RuntimeError("backfill before start(): Prometheus only loads the blocks at startup")
        _, promtool = require_binaries()
        source = self.workdir / f"backfill-{time.monotonic_ns()}.om"
        source.write_text(openmetrics_text(series))
        result = subprocess.run(
            [promtool, "tsdb", "create-blocks-from", "openmetrics", str(source), str(self.data_dir)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"promtool create-blocks-from failed:\n{result.stdout}\n{result.stderr}")

    def add_target(self, host_port: str, labels: Mapping[str, str] | None = None) -> None:
        """Scrape `http://host_port/metrics` every scrape interval (picked up within ~1 s)."""
        self._targets[host_port] = dict(labels or {})
        self._write_targets()

    def remove_target(self, host_port: str) -> None:
        self._targets.pop(host_port, None)
        self._write_targets()

    def _write_targets(self) -> None:
        groups = [{"targets": [target], "labels": labels} for target, labels in self._targets.items()]
        temporary = self.targets_file.with_suffix(".tmp")
        temporary.write_text(json.dumps(groups))
        os.replace(temporary, self.targets_file)

    def _write_config(self) -> None:
        self.config_file.write_text(
            "global:\n"
            f"  scrape_interval: {self.scrape_interval}\n"
            f"  evaluation_interval: {self.scrape_interval}\n"
            "scrape_configs:\n"
            "  - job_name: targets\n"
            f"    scrape_timeout: {self.scrape_interval}\n"
            "    file_sd_configs:\n"
            f"      - files: [{json.dumps(str(self.targets_file))}]\n"
            "        refresh_interval: 1s\n"
        )

    # -- queries ----------------------------------------------------------------------------------------

    def query(self, promql: str, *, at: float | None = None) -> Any:
        """`data.result` of an instant query (raises on an API error)."""
        params = {"query": promql}
        if at is not None:
            params["time"] = f"{at:.3f}"
        response = httpx.get(f"{self.url}/api/v1/query", params=params, timeout=5.0, trust_env=False)
        payload = response.json()
        if payload.get("status") != "success":
            raise RuntimeError(f"query {promql!r} failed: {payload}")
        return payload["data"]["result"]

    def wait_for(self, promql: str, *, timeout: float = 20.0) -> Any:
        """Poll until `promql` returns a non-empty result (e.g. the first scrape), then return it."""
        deadline = time.monotonic() + timeout
        while True:
            result = self.query(promql)
            if result:
                return result
            if time.monotonic() > deadline:
                raise TimeoutError(f"{promql!r} returned nothing within {timeout}s:\n{self.log_tail()}")
            time.sleep(0.2)


# -- HTTP stand-ins ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    headers: dict[str, str]  # lower-case names
    body: bytes


@dataclass
class StubResponse:
    status: int = 200
    body: bytes = b""
    content_type: str = "application/json"


class StubHTTPServer:
    """A tiny threaded HTTP server on loopback that records requests and answers as configured.

    `respond(status, body)` sets the answer (a non-bytes/str body is sent as JSON); or pass
    `handler(request) -> StubResponse` for per-request answers. Each connection is closed after
    its response (HTTP/1.0), so stopping never waits on idle keep-alive connections.
    """

    def __init__(self, handler: Callable[[RecordedRequest], StubResponse] | None = None) -> None:
        self.requests: list[RecordedRequest] = []
        self._response = StubResponse()
        self._handler = handler
        self._lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def _serve(self) -> None:
                length = int(self.headers.get("Content-Length") or 0)
                request = RecordedRequest(
                    method=self.command,
                    path=self.path,
                    headers={k.lower(): v for k, v in self.headers.items()},
                    body=self.rfile.read(length) if length else b"",
                )
                with stub._lock:
                    stub.requests.append(request)
                    answer = stub._handler(request) if stub._handler else stub._response
                self.send_response(answer.status)
                self.send_header("Content-Type", answer.content_type)
                self.send_header("Content-Length", str(len(answer.body)))
                self.end_headers()
                self.wfile.write(answer.body)

            do_GET = do_POST = do_PUT = _serve

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self._server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, args=(0.05,), name="stub-http", daemon=True)
        self._thread.start()

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    @property
    def host_port(self) -> str:
        return self.url.removeprefix("http://")

    def respond(self, status: int = 200, body: Any = b"", content_type: str | None = None) -> None:
        if isinstance(body, bytes):
            raw = body
        elif isinstance(body, str):
            raw = body.encode()
        else:
            raw = json.dumps(body).encode()
        kind = content_type or ("application/json" if not isinstance(body, bytes | str) else "text/plain")
        with self._lock:
            self._response = StubResponse(status, raw, kind)

    def stop(self) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()


class BlackholeServer:
    """A loopback port that accepts TCP connections (kernel backlog) but never answers."""

    def __init__(self) -> None:
        self._socket = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._socket.bind(("127.0.0.1", 0))
        self._socket.listen(16)

    @property
    def url(self) -> str:
        host, port = self._socket.getsockname()[:2]
        return f"http://{host}:{port}"

    def stop(self) -> None:
        self._socket.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()
