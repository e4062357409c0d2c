"""A deterministic stand-in for the platform, to drive the pure planner through whole rollouts.

`Sim` keeps ReplicaSets, AnalysisRuns, Service selectors and the canary weight as plain
data, applies each Plan's actions to them, and lets a test decide when pods become
available (`settle`) and what analysis runs conclude (`finish_run`). Time only moves when
the test moves it (`advance`), so no test sleeps.
"""

from __future__ import annotations

import copy
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

from rollouts.core import plan as p
from rollouts.core.planner import plan
from rollouts.model.rollout import Rollout

T0 = datetime(2026, 11, 26, 12, 0, 0, tzinfo=UTC)


def canary_rollout(
    steps: list[dict[str, Any]], *, replicas: int = 4, image: str = "app:v1", **canary: Any
) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "app", "namespace": "default", "generation": 1},
        "spec": {
            "replicas": replicas,
            "selector": {"matchLabels": {"app": "app"}},
            "template": {
                "metadata": {"labels": {"app": "app"}},
                "spec": {"containers": [{"name": "app", "image": image, "command": ["run"]}]},
            },
            "strategy": {"canary": {"stableService": "app", "canaryService": "app-canary", "steps": steps, **canary}},
        },
    }


def blue_green_rollout(*, replicas: int = 3, image: str = "app:v1", **bg: Any) -> dict[str, Any]:
    ro = canary_rollout([], replicas=replicas, image=image)
    ro["spec"]["strategy"] = {"blueGreen": {"activeService": "app", "previewService": "app-preview", **bg}}
    return ro


class Sim:
    def __init__(self, manifest: dict[str, Any], now: datetime = T0, *, implicit_router: bool = True) -> None:
        """`implicit_router`: the platform routes by weight (the embedded proxy); False = a basic canary."""
        self.implicit_router = implicit_router
        self.manifest = copy.deepcopy(manifest)
        self.status: dict[str, Any] | None = None
        self.now = now
        self.rs: dict[str, p.ReplicaSetView] = {}
        self.runs: dict[str, p.RunView] = {}
        self.services: dict[str, str] = {}
        self.weight = 0
        self.events: list[str] = []
        self.recorded: list[p.RecordEvent] = []
        # Every update outcome the plans reported (Plan.outcomes), in order.
        self.outcomes: list[p.UpdateOutcome] = []
        self.last: p.Plan | None = None
        self.invalid: str | None = None
        self.restarted: list[str] = []
        self.deleted_runs: list[str] = []
        self._pod_serial = 0

    # --- inputs ----------------------------------------------------------------------------

    def rollout(self) -> Rollout:
        body = copy.deepcopy(self.manifest)
        if self.status is not None:
            body["status"] = self.status
        return Rollout.model_validate(body)

    def set_image(self, image: str) -> None:
        self.manifest["spec"]["template"]["spec"]["containers"][0]["image"] = image
        self.manifest["metadata"]["generation"] += 1

    def patch_status(self, **fields: Any) -> None:
        assert self.status is not None
        self.status.update(fields)
        for key in [k for k, v in self.status.items() if v is None]:
            del self.status[key]

    def advance(self, seconds: float) -> None:
        self.now += timedelta(seconds=seconds)

    def settle(self) -> None:
        """Every ReplicaSet's pods become ready and available.

        Each ReplicaSet keeps its oldest pods up to its size; missing pods are created now
        (their creation time is the sim clock, which `restartAt` is compared with).
        """
        for name, rs in self.rs.items():
            pods = list(rs.pods[: rs.replicas])
            while len(pods) < rs.replicas:
                self._pod_serial += 1
                pods.append(p.PodView(f"{name}-pod{self._pod_serial}", self.now, True))
            self.rs[name] = replace(rs, ready=rs.replicas, available=rs.replicas, pods=tuple(pods))

    def finish_run(self, phase: str, message: str = "", name: str | None = None) -> str:
        run = self.current_run() if name is None else self.runs[name]
        self.runs[run.name] = replace(run, phase=phase, message=message)
        return run.name

    def current_run(self) -> p.RunView:
        live = [r for r in self.runs.values() if not r.completed]
        assert live, f"no running analysis run (runs: {list(self.runs)})"
        return live[-1]

    # --- reconcile -------------------------------------------------------------------------

    def reconcile(self) -> p.Plan:
        snap = p.Snapshot(
            self.rollout(),
            tuple(self.rs.values()),
            tuple(self.runs.values()),
            self.now,
            self.invalid,
            implicit_router=self.implicit_router,
        )
        result = plan(snap)
        self.outcomes.extend(result.outcomes)
        for action in result.actions:
            self._apply(action)
        self.status = result.status.to_json()
        self.last = result
        return result

    def converge(self, limit: int = 40) -> p.Plan:
        """Reconcile, letting pods become available each time, until nothing changes any more."""
        for _ in range(limit):
            status_before, rs_before, runs_before = copy.deepcopy(self.status), dict(self.rs), dict(self.runs)
            result = self.reconcile()
            self.settle()
            unchanged = self.status == status_before and self.rs == rs_before and self.runs == runs_before
            if unchanged and result.requeue_after != 0:
                return result
        raise AssertionError("the planner did not converge")

    def _apply(self, action: p.Action) -> None:
        match action:
            case p.CreateReplicaSet():
                self.rs[action.name] = p.ReplicaSetView(
                    action.name, action.pod_hash, action.revision, action.replicas, 0, 0, action.template
                )
            case p.ScaleReplicaSet():
                rs = self.rs[action.name]
                self.rs[action.name] = replace(
                    rs,
                    replicas=action.replicas,
                    ready=min(rs.ready, action.replicas),
                    available=min(rs.available, action.replicas),
                )
            case p.SetScaleDownDeadline():
                self.rs[action.name] = replace(self.rs[action.name], scale_down_at=action.at)
            case p.SetRevision():
                self.rs[action.name] = replace(self.rs[action.name], revision=action.revision)
            case p.DeleteReplicaSet():
                del self.rs[action.name]
            case p.PointService():
                self.services[action.service] = action.pod_hash
            case p.SetCanaryWeight():
                self.weight = action.weight
            case p.CreateAnalysisRun():
                self.runs[action.name] = p.RunView(
                    action.name, action.kind, action.pod_hash, action.step_index, "Running", created=self.now
                )
            case p.TerminateAnalysisRun():
                run = self.runs[action.name]
                self.runs[action.name] = replace(run, terminating=True, phase="Successful")
            case p.DeleteAnalysisRun():
                del self.runs[action.name]
                self.deleted_runs.append(action.name)
            case p.RestartPod():
                self.restarted.append(action.name)
                for name, rs in self.rs.items():
                    gone = [pod for pod in rs.pods if pod.name == action.name]
                    if gone:
                        lost = 1 if gone[0].ready else 0
                        self.rs[name] = replace(
                            rs,
                            pods=tuple(pod for pod in rs.pods if pod.name != action.name),
                            ready=rs.ready - lost,
                            available=rs.available - lost,
                        )
            case p.RecordEvent():
                self.events.append(action.reason)
                self.recorded.append(action)

    # --- observations ----------------------------------------------------------------------

    def replicas(self) -> dict[int, int]:
        """Desired replicas by revision."""
        return {rs.revision: rs.replicas for rs in self.rs.values()}

    @property
    def phase(self) -> str:
        assert self.status is not None
        return str(self.status.get("phase"))

    @property
    def step(self) -> int | None:
        assert self.status is not None
        return self.status.get("currentStepIndex")

    def pause_reasons(self) -> list[str]:
        assert self.status is not None
        return [c["reason"] for c in self.status.get("pauseConditions") or []]

    def pods(self, revision: int) -> list[p.PodView]:
        return next(list(rs.pods) for rs in self.rs.values() if rs.revision == revision)

    def hash_of(self, revision: int) -> str:
        return next(rs.pod_hash for rs in self.rs.values() if rs.revision == revision)
