"""100 rollouts created and deleted on the embedded platform leave nothing behind.

No process, no Pod or ReplicaSet object, no log directory, no port handed out, no proxy
listener: a platform that leaks per revision would fail a long-running laptop or host.
"""

from __future__ import annotations

import asyncio
import os
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from rollouts.config import state_dir_for
from rollouts.host import EmbeddedHost
from rollouts.platform.embedded import ports

pytestmark = pytest.mark.integration

COUNT = 100

# A pod that starts in milliseconds: it only has to accept a TCP connection to be ready.
LISTENER = (
    "import os, socket, time\n"
    "s = socket.socket(); s.bind(('127.0.0.1', int(os.environ['PORT']))); s.listen()\n"
    "time.sleep(3600)\n"
)


def rollout(i: int) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": f"r{i}"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": f"r{i}"}},
            "template": {
                "metadata": {"labels": {"app": f"r{i}"}},
                "spec": {
                    "containers": [
                        {"name": "app", "image": "hygiene-test:v1", "command": [sys.executable, "-c", LISTENER]}
                    ]
                },
            },
            "strategy": {"canary": {"steps": [{"setWeight": 50}]}},
        },
    }


def our_processes() -> list[int]:
    """PIDs of this test's pods (their environment carries the image no other test uses)."""
    found = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            environ = Path(f"/proc/{entry}/environ").read_bytes()
        except OSError:
            continue
        if b"ROLLOUTS_IMAGE=hygiene-test:v1\0" in environ:
            found.append(int(entry))
    return found


async def wait_until(check: Any, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.2)


async def test_hundred_rollouts_created_and_deleted_leave_nothing(tmp_path: Path) -> None:
    state = tmp_path / "state.db"
    ports_before = ports.handed_out()
    host = EmbeddedHost(state, admin_port=0)
    await host.start()
    try:
        store = host.store
        for i in range(COUNT):
            store.create(rollout(i))

        def all_healthy() -> bool:
            return all((ro.get("status") or {}).get("phase") == "Healthy" for ro in store.list("Rollout"))

        await wait_until(all_healthy, 120, "100 rollouts to be healthy")
        assert len(store.list("Pod")) == COUNT
        assert len(our_processes()) >= COUNT
        assert len(list((state_dir_for(state) / "logs").iterdir())) == COUNT

        for i in range(COUNT):
            store.delete("Rollout", f"r{i}")

        def all_gone() -> bool:
            return not store.list("Pod") and not store.list("ReplicaSet") and not host.runtime.supervisor.pods()

        await wait_until(all_gone, 120, "every pod and ReplicaSet to be gone")
        await wait_until(lambda: not our_processes(), 30, "every pod process to exit")
        assert list((state_dir_for(state) / "logs").iterdir()) == []
        assert ports.handed_out() == ports_before
        assert store.list("AnalysisRun") == []
    finally:
        await host.close()
    assert our_processes() == []
