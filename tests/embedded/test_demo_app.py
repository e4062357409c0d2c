"""The demo service, run as a real process on loopback."""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
import sys
import time
from collections.abc import AsyncIterator

import httpx
import pytest

from rollouts.demo.app import DemoConfig, FailurePlan, image_tag
from rollouts.platform.embedded.ports import free_port, release_port


@contextlib.asynccontextmanager
async def demo(image: str, **env: str) -> AsyncIterator[tuple[asyncio.subprocess.Process, str]]:
    """Run the demo app with `image`; yield (process, base URL) once /healthz answers."""
    port = free_port()
    child_env = {
        "PATH": os.environ.get("PATH", ""),
        "PORT": str(port),
        "ROLLOUTS_IMAGE": image,
        "POD_NAME": "demo-test",
        **env,
    }
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "rollouts.demo.app",
        env=child_env,
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.DEVNULL,
        start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        async with asyncio.timeout(10), httpx.AsyncClient() as client:
            while True:
                if proc.returncode is not None:
                    raise AssertionError(f"demo app exited with {proc.returncode}")
                with contextlib.suppress(httpx.TransportError):
                    if (await client.get(f"{base}/healthz")).status_code == 200:
                        break
                await asyncio.sleep(0.02)
        yield proc, base
    finally:
        if proc.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
        await proc.wait()
        release_port(port)


async def fetch_many(base: str, count: int, concurrency: int) -> list[tuple[int, float]]:
    """GET `/` `count` times, `concurrency` at a time: [(status, seconds)]."""
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    semaphore = asyncio.Semaphore(concurrency)
    async with httpx.AsyncClient(limits=limits, timeout=10) as client:

        async def one() -> tuple[int, float]:
            async with semaphore:
                started = time.monotonic()
                response = await client.get(f"{base}/")
                return response.status_code, time.monotonic() - started

        return await asyncio.gather(*(one() for _ in range(count)))


@pytest.mark.parametrize(
    ("image", "tag"),
    [
        ("rollouts-demo:v1", "v1"),
        ("v2", "v2"),
        ("registry.local:5000/team/rollouts-demo:v3", "v3"),
        ("rollouts-demo:bad-start@sha256:abc", "bad-start"),
        ("localhost:5000/rollouts-demo", "rollouts-demo"),
    ],
)
def test_image_tag(image: str, tag: str) -> None:
    assert image_tag(image) == tag


def test_config_from_env() -> None:
    v3 = DemoConfig.from_env({"ROLLOUTS_IMAGE": "rollouts-demo:v3", "PORT": "1234", "POD_NAME": "p"})
    assert (v3.version, v3.error_rate, v3.latency_ms, v3.port, v3.pod) == ("v3", 0.3, 200.0, 1234, "p")
    v9 = DemoConfig.from_env({"ROLLOUTS_IMAGE": "rollouts-demo:v9"})
    assert (v9.error_rate, v9.latency_ms, v9.bad_start) == (0.0, 0.0, False)
    tuned = DemoConfig.from_env(
        {"ROLLOUTS_IMAGE": "rollouts-demo:v3", "DEMO_ERROR_RATE": "0.5", "DEMO_LATENCY_MS": "0"}
    )
    assert (tuned.error_rate, tuned.latency_ms) == (0.5, 0.0)
    assert DemoConfig.from_env({"ROLLOUTS_IMAGE": "bad-start"}).bad_start


@pytest.mark.parametrize(("rate", "failures"), [(0.0, 0), (0.3, 30), (0.05, 5), (0.5, 50), (1.0, 100)])
def test_failure_plan_is_exact(rate: float, failures: int) -> None:
    plan = FailurePlan(rate)
    outcomes = [plan.next()[1] for _ in range(100)]
    assert sum(outcomes) == failures
    assert plan.errors == failures and plan.count == 100
    if rate == 0.3:  # spread out: 3 in every 10 consecutive requests, the first ones succeed
        assert all(sum(outcomes[i : i + 10]) == 3 for i in range(0, 100, 10))
        assert outcomes[:3] == [False, False, False]


async def test_v3_fails_exactly_30_percent_and_is_slow() -> None:
    async with asyncio.timeout(20), demo("rollouts-demo:v3") as (_, base):
        results = await fetch_many(base, 100, concurrency=25)
        assert sum(1 for code, _ in results if code == 500) == 30
        assert sum(1 for code, _ in results if code == 200) == 70
        assert min(seconds for _, seconds in results) >= 0.19
        async with httpx.AsyncClient() as client:
            started = time.monotonic()
            health = await client.get(f"{base}/healthz")
            assert health.status_code == 200
            assert time.monotonic() - started < 0.19  # only `/` is slowed down
            version = await client.get(f"{base}/version")
            assert version.json() == {"version": "v3", "image": "rollouts-demo:v3"}
            failing = await client.get(f"{base}/")  # request 101: n=100 succeeds, as n=0 did
            assert failing.status_code == 200
            assert (await client.get(f"{base}/nope")).status_code == 404


async def test_v1_never_fails() -> None:
    async with asyncio.timeout(20), demo("rollouts-demo:v1") as (_, base):
        results = await fetch_many(base, 100, concurrency=10)
        assert [code for code, _ in results] == [200] * 100
        async with httpx.AsyncClient() as client:
            response = await client.get(f"{base}/")
        assert response.json() == {"version": "v1", "pod": "demo-test"}
        assert response.headers["x-demo-version"] == "v1"


async def test_env_overrides() -> None:
    async with (
        asyncio.timeout(20),
        demo("rollouts-demo:v1", DEMO_ERROR_RATE="0.5", DEMO_LATENCY_MS="50") as (_, base),
    ):
        results = await fetch_many(base, 20, concurrency=20)
        assert sum(1 for code, _ in results if code == 500) == 10
        assert min(seconds for _, seconds in results) >= 0.045


async def test_bad_start_exits_1() -> None:
    async with asyncio.timeout(10):
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "rollouts.demo.app",
            env={"PATH": os.environ.get("PATH", ""), "PORT": str(free_port()), "ROLLOUTS_IMAGE": "demo:bad-start"},
            stdout=asyncio.subprocess.DEVNULL,
            stderr=asyncio.subprocess.PIPE,
        )
        _, stderr = await proc.communicate()
        assert proc.returncode == 1
        assert b"bad start" in stderr


async def test_sigterm_finishes_in_flight_requests_and_exits_0() -> None:
    async with (
        asyncio.timeout(20),
        demo("rollouts-demo:v1", DEMO_LATENCY_MS="400") as (proc, base),
        httpx.AsyncClient(timeout=5) as client,
    ):
        idle = await client.get(f"{base}/healthz")  # leaves an idle keep-alive connection
        assert idle.status_code == 200
        port = int(base.rsplit(":", 1)[1])
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET / HTTP/1.1\r\nHost: demo\r\n\r\n")
            await writer.drain()
            # Connections are accepted in order: once a later one is answered, the slow
            # request's connection has its handler.
            async with httpx.AsyncClient(timeout=5) as other:
                assert (await other.get(f"{base}/version")).status_code == 200
            started = time.monotonic()
            proc.send_signal(signal.SIGTERM)
            response = await reader.read()  # until the server closes the connection
        finally:
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
        head = response.split(b"\r\n\r\n", 1)[0].lower()
        assert head.startswith(b"http/1.1 200")
        assert b"connection: close" in head
        returncode = await proc.wait()
        assert returncode == 0
        assert time.monotonic() - started < 1.5
