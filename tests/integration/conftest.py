"""Fixtures that run the real controller as a separate process against a temporary state file."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest
from click.testing import CliRunner

from rollouts.cli.main import cli
from rollouts.store.sqlite import SqliteStore


@dataclass
class ControllerProcess:
    state: Path
    proc: subprocess.Popen[bytes]
    log: Path

    def cli(self, *args: str) -> str:
        result = CliRunner().invoke(cli, ["--state", str(self.state), *args])
        assert result.exit_code == 0, f"rollouts {' '.join(args)} -> {result.exit_code}: {result.output}"
        return result.output

    def rollout(self, name: str) -> dict[str, Any]:
        store = SqliteStore(self.state)
        try:
            return store.must_get("Rollout", name)
        finally:
            store.close()

    def wait_for(self, name: str, check: Callable[[dict[str, Any]], bool], timeout: float = 30.0) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            ro = self.rollout(name)
            if check(ro.get("status") or {}):
                return ro
            if time.monotonic() > deadline:
                raise AssertionError(f"timed out; status: {ro.get('status')}\nlog:\n{self.log.read_text()[-3000:]}")
            assert self.proc.poll() is None, f"controller exited:\n{self.log.read_text()[-3000:]}"
            time.sleep(0.1)


def answers(url: str, count: int) -> dict[str, int]:
    """Versions answering `count` requests (errors counted under their status code)."""
    seen: dict[str, int] = {}
    with httpx.Client(timeout=5.0) as client:
        for _ in range(count):
            response = client.get(url)
            key = response.json()["version"] if response.status_code == 200 else str(response.status_code)
            seen[key] = seen.get(key, 0) + 1
    return seen


@pytest.fixture
def controller(tmp_path: Path) -> Iterator[ControllerProcess]:
    state = tmp_path / "state.db"
    log = tmp_path / "controller.log"
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "rollouts", "--state", str(state), "controller", "--admin-port", "0"],
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
        )
    ctl = ControllerProcess(state, proc, log)
    try:
        yield ctl
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=5)
        store = SqliteStore(state)
        leftover = [p for pod in store.list("Pod") for p in (pod.get("status") or {}).get("pids") or []]
        store.close()
        assert proc.returncode == 0, log.read_text()[-3000:]
        assert leftover == [], "pods left behind after the controller stopped"


def free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def demo_container(image: str) -> dict[str, Any]:
    return {
        "name": "app",
        "image": image,
        "command": [sys.executable, "-m", "rollouts.demo.app"],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
    }


class MetricServer:
    """A `web` metric's endpoint: answers `{"ok": <ok>}` after `delay` seconds."""

    def __init__(self, ok: bool = True, delay: float = 0.2) -> None:
        self.ok = ok
        self.calls = 0
        server = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                server.calls += 1
                time.sleep(delay)
                body = json.dumps({"ok": server.ok}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/ok"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture
def metric_server() -> Iterator[MetricServer]:
    server = MetricServer()
    try:
        yield server
    finally:
        server.close()
