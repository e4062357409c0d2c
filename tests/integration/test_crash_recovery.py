"""Promise 3, "never loses a rollout": the controller is killed with SIGKILL and started again.

Real processes throughout: the controller (`python -m rollouts controller`), its pods (the
demo app), and a tiny HTTP server the `web` metric asks. After each kill the pods keep
running (they are process groups in their own sessions); the restarted controller adopts them
(same PIDs), rebuilds the proxy routes, resumes the rollout at the step it was on with the
AnalysisRun it had (no duplicate), and promotion completes. Requests through the Service
ports are only checked after the restart: the proxy lives in the controller process.

Every pod process carries a per-test token in its environment, so the fixture can prove that
no pod process is left behind once the controllers are stopped.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from rollouts.controller.rollouts import RolloutReconciler
from rollouts.core import plan as p
from rollouts.core.timeutil import to_rfc3339
from rollouts.model.rollout import AnalysisTemplateRef, Rollout
from rollouts.platform.embedded.platform import EmbeddedPlatform
from rollouts.platform.embedded.pods import find_session_leaders
from rollouts.store.errors import AlreadyExistsError
from rollouts.store.protocol import AsyncSqliteStore
from rollouts.store.sqlite import SqliteStore
from tests.integration.conftest import ControllerProcess, MetricServer, answers, demo_container, free_port

pytestmark = pytest.mark.integration

TOKEN_ENV = "ROLLOUTS_TEST_TOKEN"
LEASE_ARGS = ("--lease-duration", "3", "--lease-renew-interval", "1")
RUNNING_LINE = "controller running"


# --- controllers, pods and the state file ---------------------------------------------------------


@dataclass
class Controllers:
    """Controller processes on one state file; every pod they start carries `token`."""

    tmp_path: Path
    state: Path
    token: str
    started: list[ControllerProcess] = field(default_factory=list)

    def start(self, name: str, *, lease: tuple[str, ...] = LEASE_ARGS) -> ControllerProcess:
        """A controller with identity `name`; `lease` are its lease options (() for the defaults)."""
        log = self.tmp_path / f"controller-{name}.log"
        argv = [sys.executable, "-m", "rollouts", "--state", str(self.state), "controller", "--admin-port", "0"]
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [*argv, *lease, "--identity", name],
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        ctl = ControllerProcess(self.state, proc, log)
        self.started.append(ctl)
        return ctl

    def kill(self, ctl: ControllerProcess) -> None:
        """SIGKILL: no cleanup of any kind runs in the controller."""
        ctl.proc.kill()
        ctl.proc.wait(timeout=10)

    def pod_processes(self) -> set[int]:
        """Live container processes of this test's pods (session leaders with our token)."""
        return set(find_session_leaders(TOKEN_ENV, {self.token}))

    def pods(self) -> dict[str, tuple[int, ...]]:
        """Pod name -> recorded container pids."""
        return {
            pod["metadata"]["name"]: tuple((pod.get("status") or {}).get("pids") or []) for pod in self.objects("Pod")
        }

    def running_pods(self) -> dict[str, tuple[int, ...]]:
        """The pods that have a process (a pod in crash-loop back-off has none, and is replaced
        rather than adopted after a restart)."""
        return {name: pids for name, pids in self.pods().items() if pids}

    def adopted(self, before: dict[str, tuple[int, ...]]) -> None:
        """Every pod that ran before runs now, with the same processes, and there is no other."""
        after = self.pods()
        assert {name: after.get(name) for name in before} == before, "the same pods, the same processes"
        assert self.pod_processes() == {pid for pids in after.values() for pid in pids}, "no second set of pods"

    def objects(self, kind: str) -> list[dict[str, Any]]:
        store = SqliteStore(self.state)
        try:
            return store.list(kind)
        finally:
            store.close()

    def runs(self) -> list[dict[str, Any]]:
        return self.objects("AnalysisRun")


def leading(ctl: ControllerProcess, timeout: float = 20.0) -> float:
    """Wait until `ctl` leads (has printed its running line); returns when (monotonic)."""
    deadline = time.monotonic() + timeout
    while RUNNING_LINE not in ctl.log.read_text():
        assert ctl.proc.poll() is None, f"controller exited:\n{ctl.log.read_text()[-3000:]}"
        assert time.monotonic() < deadline, f"not leading after {timeout}s:\n{ctl.log.read_text()[-3000:]}"
        time.sleep(0.05)
    return time.monotonic()


def stop_all(controllers: Controllers) -> list[str]:
    """SIGTERM every controller still running; returns problems found."""
    problems = []
    live = [c for c in controllers.started if c.proc.poll() is None]
    for ctl in live:
        os.kill(ctl.proc.pid, signal.SIGCONT)  # in case a test froze it
        ctl.proc.send_signal(signal.SIGTERM)
    for ctl in live:
        try:
            ctl.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            ctl.proc.kill()
            ctl.proc.wait(timeout=5)
            problems.append(f"{ctl.log.name} did not stop on SIGTERM")
        else:
            if ctl.proc.returncode != 0:
                problems.append(f"{ctl.log.name} exited {ctl.proc.returncode}:\n{ctl.log.read_text()[-2000:]}")
    return problems


@contextlib.contextmanager
def controller_group(tmp_path: Path) -> Iterator[Controllers]:
    """Controllers on one state file; on exit every controller is stopped (SIGTERM) and no pod
    process of theirs may be left."""
    group = Controllers(tmp_path, tmp_path / "state.db", uuid.uuid4().hex)
    try:
        yield group
    finally:
        problems = stop_all(group)
        leftover = group.pod_processes()
        for pid in leftover:
            os.killpg(pid, signal.SIGKILL)
        recorded = [pids for pids in group.pods().values() if pids]
        assert not leftover, f"pod processes left running: {sorted(leftover)}"
        assert not recorded, f"pods still recorded after the controllers stopped: {recorded}"
        assert not problems, "\n".join(problems)


@pytest.fixture
def controllers(tmp_path: Path) -> Iterator[Controllers]:
    with controller_group(tmp_path) as group:
        yield group


def manifests(
    controllers: Controllers, strategy: dict[str, Any], services: dict[str, int], *extra: dict[str, Any]
) -> Path:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {"name": name},
            "spec": {"selector": {"app": "web"}, "ports": [{"port": port}]},
        }
        for name, port in services.items()
    ]
    container = {**demo_container("demo:v1"), "env": [{"name": TOKEN_ENV, "value": controllers.token}]}
    docs.append(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 2,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [container]}},
                "strategy": strategy,
            },
        }
    )
    docs.extend(extra)
    path = controllers.tmp_path / "web.yaml"
    path.write_text(yaml.safe_dump_all(docs))
    return path


def healthy(status: dict[str, Any]) -> bool:
    return status.get("phase") == "Healthy" and status.get("stableRS") == status.get("currentPodHash")


def paused_at(step: int) -> Callable[[dict[str, Any]], bool]:
    return lambda s: s.get("phase") == "Paused" and s.get("currentStepIndex") == step


def serving(url: str, timeout: float = 10.0) -> None:
    """Wait until the proxy answers 200 on `url` (it starts listening just after the restart)."""
    deadline = time.monotonic() + timeout
    while True:
        try:
            if httpx.get(url, timeout=2.0).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        assert time.monotonic() < deadline, f"{url} not served after {timeout}s"
        time.sleep(0.05)


def restart(controllers: Controllers, dead: ControllerProcess, name: str) -> ControllerProcess:
    """Kill `dead` with SIGKILL and start a new controller on the same state."""
    controllers.kill(dead)
    pods = controllers.running_pods()
    assert controllers.pod_processes() == {pid for pids in pods.values() for pid in pids}, (
        "the pods outlive the controller"
    )
    ctl = controllers.start(name)
    leading(ctl)
    return ctl


def steps_completed(state: Path) -> list[str]:
    store = SqliteStore(state)
    try:
        return [e.message for e in store.events("Rollout", "web", limit=100) if e.reason == "RolloutStepCompleted"]
    finally:
        store.close()


# --- the tests -----------------------------------------------------------------------------------


def test_kill_during_a_pause_step(controllers: Controllers) -> None:
    stable, canary = free_port(), free_port()
    strategy = {
        "canary": {
            "stableService": "web",
            "canaryService": "web-canary",
            "steps": [{"setWeight": 50}, {"pause": {}}, {"setWeight": 100}],
        }
    }
    first = controllers.start("first")
    leading(first)
    first.cli("apply", "-f", str(manifests(controllers, strategy, {"web": stable, "web-canary": canary})))
    first.wait_for("web", healthy)
    first.cli("set", "image", "web", "app=demo:v2")
    before = first.wait_for("web", paused_at(1))["status"]
    assert len(controllers.pods()) == 3  # two stable, one canary (50 % of 2)
    pods = controllers.running_pods()

    second = restart(controllers, first, "second")
    url = f"http://127.0.0.1:{stable}/"
    serving(url)
    controllers.adopted(pods)
    assert answers(url, 100) == {"v1": 50, "v2": 50}, "routes rebuilt for the adopted pods"
    assert answers(f"http://127.0.0.1:{canary}/", 10) == {"v2": 10}
    status = second.rollout("web")["status"]
    assert status["currentStepIndex"] == 1 and status["phase"] == "Paused"
    assert status["pauseConditions"] == before["pauseConditions"], "still the same pause"

    second.cli("promote", "web")
    second.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == before["currentPodHash"])
    assert answers(url, 10) == {"v2": 10}
    completed = steps_completed(controllers.state)
    assert [m.split(" completed")[0] for m in completed] == [
        "Rollout step 1/3",
        "Rollout step 2/3",
        "Rollout step 3/3",
    ], "no step skipped or repeated"


def web_template(url: str) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisTemplate",
        "metadata": {"name": "ok"},
        "spec": {
            "metrics": [
                {
                    "name": "ok",
                    "interval": "1s",
                    "count": 3,
                    "successCondition": "result == true",
                    "provider": {"web": {"url": url, "jsonPath": "{$.ok}"}},
                }
            ]
        },
    }


def test_kill_while_a_step_analysis_is_in_flight(controllers: Controllers, metric_server: MetricServer) -> None:
    stable = free_port()
    strategy = {
        "canary": {
            "stableService": "web",
            "steps": [{"setWeight": 50}, {"analysis": {"templates": [{"templateName": "ok"}]}}, {"pause": {}}],
        }
    }
    first = controllers.start("first")
    leading(first)
    path = manifests(controllers, strategy, {"web": stable}, web_template(metric_server.url))
    first.cli("apply", "-f", str(path))
    first.wait_for("web", healthy)
    first.cli("set", "image", "web", "app=demo:v2")

    def one_measurement() -> bool:
        runs = controllers.runs()
        results = (runs[0].get("status") or {}).get("metricResults") or [] if runs else []
        return bool(results) and len(results[0].get("measurements") or []) == 1

    deadline = time.monotonic() + 20
    while not one_measurement():
        assert time.monotonic() < deadline, f"no measurement: {controllers.runs()}"
        time.sleep(0.02)
    controllers.kill(first)
    pods = controllers.running_pods()

    (run,) = controllers.runs()
    name = run["metadata"]["name"]
    assert run["status"]["phase"] == "Running", "killed while the run was in flight"
    slot = first.rollout("web")["status"]["canary"]["currentStepAnalysisRunStatus"]
    assert slot["name"] == name
    # A measurement in flight at the crash, as a controller that records them leaves it:
    # Running, no finishedAt. The restarted controller must measure it again, not lose it.
    store = SqliteStore(controllers.state)
    try:
        stored = store.must_get("AnalysisRun", name)
        measurements = stored["status"]["metricResults"][0]["measurements"]
        measurements.append({"phase": "Running", "startedAt": to_rfc3339(datetime.now(UTC))})
        store.update_status(stored)
    finally:
        store.close()

    second = controllers.start("second")
    leading(second)
    serving(f"http://127.0.0.1:{stable}/")
    controllers.adopted(pods)
    ro = second.wait_for("web", paused_at(2))
    runs = controllers.runs()
    assert [r["metadata"]["name"] for r in runs] == [name], "the same AnalysisRun, no duplicate"
    (result,) = runs[0]["status"]["metricResults"]
    assert runs[0]["status"]["phase"] == "Successful"
    assert result["count"] == 3 and result["successful"] == 3
    assert [m["phase"] for m in result["measurements"]] == ["Successful"] * 3
    assert all(m.get("finishedAt") for m in result["measurements"]), "the in-flight measurement was re-measured"
    assert metric_server.calls >= 3
    assert ro["status"]["canary"].get("currentStepAnalysisRunStatus") is None

    second.cli("promote", "web")
    second.wait_for("web", healthy)
    assert answers(f"http://127.0.0.1:{stable}/", 10) == {"v2": 10}
    assert [m.split(" completed")[0] for m in steps_completed(controllers.state)] == [
        "Rollout step 1/3",
        "Rollout step 2/3",
        "Rollout step 3/3",
    ]


def test_kill_mid_blue_green_before_promotion(controllers: Controllers) -> None:
    active, preview = free_port(), free_port()
    strategy = {
        "blueGreen": {
            "activeService": "web",
            "previewService": "web-preview",
            "autoPromotionEnabled": False,
            "scaleDownDelaySeconds": 1,
        }
    }
    first = controllers.start("first")
    leading(first)
    first.cli("apply", "-f", str(manifests(controllers, strategy, {"web": active, "web-preview": preview})))
    first.wait_for("web", healthy)
    first.cli("set", "image", "web", "app=demo:v2")
    before = first.wait_for("web", lambda s: s.get("phase") == "Paused")["status"]
    assert len(controllers.pods()) == 4
    pods = controllers.running_pods()

    second = restart(controllers, first, "second")
    serving(f"http://127.0.0.1:{active}/")
    serving(f"http://127.0.0.1:{preview}/")
    controllers.adopted(pods)
    assert answers(f"http://127.0.0.1:{active}/", 10) == {"v1": 10}
    assert answers(f"http://127.0.0.1:{preview}/", 10) == {"v2": 10}
    status = second.rollout("web")["status"]
    assert status["phase"] == "Paused" and status["blueGreen"] == before["blueGreen"]

    second.cli("promote", "web")
    second.wait_for("web", lambda s: healthy(s) and s.get("stableRS") == before["currentPodHash"])
    assert answers(f"http://127.0.0.1:{active}/", 10) == {"v2": 10}
    deadline = time.monotonic() + 15
    while len(controllers.pods()) != 2:  # the old active goes after scaleDownDelaySeconds
        assert time.monotonic() < deadline, controllers.pods()
        time.sleep(0.1)


# --- the window between creating a run and writing the status ------------------------------------


async def test_a_run_created_by_a_reconcile_that_never_wrote_status_is_not_duplicated(tmp_path: Path) -> None:
    """The reconciler creates the run, then writes the status; a kill in between leaves a run
    that no status names. The next reconcile takes it as the step's run (Argo does the same)."""
    store = SqliteStore(tmp_path / "state.db")
    reconciler = RolloutReconciler(AsyncSqliteStore(store), EmbeddedPlatform(store), lambda: datetime.now(UTC))
    store.create(web_template("http://127.0.0.1:9/ok"))
    store.create(
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "Rollout",
            "metadata": {"name": "web"},
            "spec": {
                "replicas": 1,
                "selector": {"matchLabels": {"app": "web"}},
                "template": {
                    "metadata": {"labels": {"app": "web"}},
                    "spec": {"containers": [demo_container("demo:v1")]},
                },
                "strategy": {"canary": {"steps": [{"analysis": {"templates": [{"templateName": "ok"}]}}]}},
            },
        }
    )

    async def settle(rounds: int = 10) -> None:
        """Reconcile, with every ReplicaSet as ready as it is asked to be."""
        for _ in range(rounds):
            await reconciler.reconcile("default", "web")
            for rs in store.list("ReplicaSet"):
                n = rs["spec"]["replicas"]
                status = {"replicas": n, "readyReplicas": n, "availableReplicas": n}
                if rs.get("status") != status:
                    rs["status"] = status
                    store.update_status(rs)

    await settle()
    assert healthy(store.must_get("Rollout", "web")["status"])

    def image(obj: dict[str, Any]) -> None:
        obj["spec"]["template"]["spec"]["containers"][0]["image"] = "demo:v2"

    store.mutate("Rollout", "web", None, image)
    for _ in range(10):
        before = store.must_get("Rollout", "web")
        await reconciler.reconcile("default", "web")
        if store.list("AnalysisRun"):
            break
        await settle(1)
    (run,) = store.list("AnalysisRun")
    # The controller "died" before its status write: put the status back as it was read.
    after = store.must_get("Rollout", "web")
    after["status"] = before["status"]
    store.update_status(after)
    assert run["metadata"]["name"] not in json.dumps(store.must_get("Rollout", "web")["status"])

    await reconciler.reconcile("default", "web")
    assert [r["metadata"]["name"] for r in store.list("AnalysisRun")] == [run["metadata"]["name"]]
    status = store.must_get("Rollout", "web")["status"]
    assert status["canary"]["currentStepAnalysisRunStatus"]["name"] == run["metadata"]["name"]

    # Creating a run that exists already is fine when it is this rollout's run for that step...
    rollout = Rollout.model_validate(store.must_get("Rollout", "web"))
    labels = run["metadata"]["labels"]
    action = p.CreateAnalysisRun(
        name=run["metadata"]["name"],
        kind=labels["rollout-type"],
        pod_hash=labels["rollouts-pod-template-hash"],
        revision=2,
        step_index=0,
        templates=(AnalysisTemplateRef(template_name="ok"),),
        args=(),
    )
    await reconciler._create_run(rollout, action)
    # ... and an error when it is not.
    with pytest.raises(AlreadyExistsError, match="does not belong"):
        await reconciler._create_run(rollout, replace(action, kind="Background"))
    assert len(store.list("AnalysisRun")) == 1
    store.close()
