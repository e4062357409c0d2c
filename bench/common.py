"""Helpers shared by the embedded-platform benchmarks (zero downtime, rollback latency, controller scale).

The port helpers come from `bench/proxy_bench.py`; this module adds what drives rollouts
in-process: manifests for canary and blue/green rollouts of the demo app, a `RolloutDriver`
that writes the CLI's operations (`set image`, `promote`, `abort`) with retries on conflict
and waits on the store, an `EmbeddedHost` context manager that always closes, percentiles, and
a description of the machine.

Scripts in `bench/` are run as `python bench/<name>.py` from the repository root; each puts the
root on `sys.path` so that `bench.common` imports.
"""

from __future__ import annotations

import asyncio
import contextlib
import cProfile
import io
import os
import platform
import pstats
import resource
import statistics
import sys
import time
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path
from typing import Any

from bench.proxy_bench import free_port, wait_port
from rollouts.host import EmbeddedHost
from rollouts.ops import patches
from rollouts.ops.apply import apply_operation

__all__ = [
    "RolloutDriver",
    "blue_green_rollout",
    "canary_rollout",
    "demo_container",
    "embedded_host",
    "free_port",
    "machine",
    "percentile",
    "rss_kib",
    "services",
    "summary_ms",
    "wait_port",
]

Obj = dict[str, Any]


# --- the machine --------------------------------------------------------------------------


def machine() -> str:
    """`nproc`, the CPU model from /proc/cpuinfo, Python and the kernel, on one line."""
    model = "unknown CPU"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return f"{cpus} CPUs ({model}), Python {platform.python_version()}, {platform.system()} {platform.release()}"


def rss_kib() -> int:
    """Resident set size of this process now, in KiB (from /proc; max RSS if /proc is missing)."""
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)


# --- statistics ---------------------------------------------------------------------------


def profile_text(profiler: cProfile.Profile, lines: int) -> str:
    """The `lines` top functions of a profile, by own time and by cumulative time."""
    out = io.StringIO()
    stats = pstats.Stats(profiler, stream=out)
    stats.sort_stats("tottime").print_stats(lines)
    stats.sort_stats("cumulative").print_stats(lines)
    return out.getvalue()


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0..100) by linear interpolation between closest ranks (numpy's default)."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    if len(ordered) == 1:
        return ordered[0]
    rank = (len(ordered) - 1) * q / 100.0
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def summary_ms(values: Sequence[float]) -> dict[str, float]:
    """p50/p95/p99/max/mean of durations given in seconds, in milliseconds."""
    if not values:
        return {"n": 0, "p50": float("nan"), "p95": float("nan"), "p99": float("nan"), "max": float("nan")}
    return {
        "n": len(values),
        "p50": percentile(values, 50) * 1000,
        "p95": percentile(values, 95) * 1000,
        "p99": percentile(values, 99) * 1000,
        "max": max(values) * 1000,
        "mean": statistics.fmean(values) * 1000,
    }


# --- manifests ----------------------------------------------------------------------------


def demo_container(image: str) -> Obj:
    """The demo app (`rollouts.demo.app`) as a container: healthy for every tag but v3."""
    return {
        "name": "app",
        "image": image,
        "command": [sys.executable, "-m", "rollouts.demo.app"],
        "readinessProbe": {"httpGet": {"path": "/healthz", "port": 8080}, "periodSeconds": 1},
    }


def services(app: str, ports: dict[str, int]) -> list[Obj]:
    """One Service per `name: port`, all selecting `app=<app>`."""
    return [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": app}, "ports": [{"port": port}]},
        }
        for name, port in ports.items()
    ]


def _rollout(name: str, image: str, replicas: int, strategy: Obj) -> Obj:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": name}},
            "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [demo_container(image)]}},
            "strategy": strategy,
        },
    }


def canary_rollout(
    name: str,
    image: str,
    steps: list[Obj],
    *,
    stable_service: str,
    canary_service: str | None = None,
    replicas: int = 2,
    scale_down_delay: int = 1,
    abort_scale_down_delay: int = 1,
    analysis: Obj | None = None,
) -> Obj:
    """A canary Rollout of the demo app. The embedded proxy routes by weight, so the old
    revision's scale-down waits `scale_down_delay` seconds (Argo's default is 30) and an aborted
    canary's `abort_scale_down_delay` (default 30): short, so a benchmark sees the pods go."""
    canary: Obj = {
        "stableService": stable_service,
        "steps": steps,
        "scaleDownDelaySeconds": scale_down_delay,
        "abortScaleDownDelaySeconds": abort_scale_down_delay,
    }
    if canary_service is not None:
        canary["canaryService"] = canary_service
    if analysis is not None:
        canary["analysis"] = analysis
    return _rollout(name, image, replicas, {"canary": canary})


def blue_green_rollout(
    name: str, image: str, *, active: str, preview: str, replicas: int = 2, scale_down_delay: int = 1
) -> Obj:
    """A blue/green Rollout of the demo app that waits for `promote` before the cutover."""
    strategy = {
        "blueGreen": {
            "activeService": active,
            "previewService": preview,
            "autoPromotionEnabled": False,
            "scaleDownDelaySeconds": scale_down_delay,
        }
    }
    return _rollout(name, image, replicas, strategy)


# --- driving a rollout in-process ---------------------------------------------------------


def healthy(status: Obj) -> bool:
    """Healthy, with the current revision as stable (the update is finished)."""
    return (
        status.get("phase") == "Healthy"
        and bool(status.get("stableRS"))
        and status.get("stableRS") == status.get("currentPodHash")
    )


class RolloutDriver:
    """Writes the CLI's operations on one rollout of an in-process host and waits on its status."""

    def __init__(self, host: EmbeddedHost, name: str, namespace: str = "default") -> None:
        self.host = host
        self.store = host.store
        self.name = name
        self.namespace = namespace

    def rollout(self) -> Obj:
        return self.store.must_get("Rollout", self.name, self.namespace)

    def status(self) -> Obj:
        return dict(self.rollout().get("status") or {})

    def write(self, operation: Callable[[Obj], patches.Patch]) -> None:
        """Apply a `rollouts.ops.patches` operation as the CLI does: spec, then status, retried on conflict."""
        apply_operation(self.store, self.name, self.namespace, operation, attempts=50)

    def set_image(self, image: str) -> None:
        self.write(lambda ro: patches.set_image(ro, "app", image))

    def promote(self) -> None:
        self.write(lambda ro: patches.promote(ro))

    def abort(self) -> None:
        self.write(patches.abort)

    async def wait_for(self, check: Callable[[Obj], bool], timeout: float, what: str) -> Obj:
        """Poll the status every 20 ms until `check(status)`; TimeoutError naming `what` and the status."""
        deadline = time.monotonic() + timeout
        while True:
            status = self.status()
            if check(status):
                return status
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout {self.name}: timed out after {timeout:.0f}s waiting for {what}; {status}")
            await asyncio.sleep(0.02)

    def pods_of(self, pod_hash: str) -> list[Obj]:
        """Pod objects of the rollout's ReplicaSet with this hash (the runtime deletes a Pod
        object only once its processes are gone)."""
        rs_name = f"{self.name}-{pod_hash}"
        return [
            pod
            for pod in self.store.list("Pod", self.namespace)
            if any(ref.get("name") == rs_name for ref in pod["metadata"].get("ownerReferences") or [])
        ]

    async def wait_pods_gone(self, pod_hash: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while self.pods_of(pod_hash):
            if time.monotonic() > deadline:
                raise TimeoutError(f"rollout {self.name}: pods of revision {pod_hash} still there after {timeout:.0f}s")
            await asyncio.sleep(0.05)


@contextlib.asynccontextmanager
async def embedded_host(state: Path, **kwargs: Any) -> AsyncIterator[EmbeddedHost]:
    """A started `EmbeddedHost` on `state`, closed (every pod stopped) whatever happens."""
    host = EmbeddedHost(state, **kwargs)
    try:
        await host.start()
        yield host
    finally:
        await host.close()
