"""The view of a rollout that `get rollout`, `list rollouts` and the dashboard show.

Built from stored objects only (the rollout, its ReplicaSets, Pods and AnalysisRuns), the way
Argo's `pkg/kubectl-argo-rollouts/info` builds RolloutInfo, so every interface shows the same
thing. Pure: takes dicts, returns dataclasses.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from rollouts.core import defaults
from rollouts.core.replicas import current_set_weight
from rollouts.core.routes import ActiveRoute, active_routes
from rollouts.core.timeutil import parse_rfc3339
from rollouts.model.rollout import Rollout

Obj = dict[str, Any]

ICONS = {
    "Healthy": "✔",
    "Progressing": "◌",
    "Paused": "॥",
    "Degraded": "✖",
    "ScaledDown": "•",
    "Successful": "✔",
    "Running": "◌",
    "Pending": "◌",
    "Failed": "✖",
    "Error": "⚠",
    "Inconclusive": "⚠",
    "Terminating": "◌",
    "Stopped": "•",
    "Unknown": "?",
}


@dataclass
class PodInfo:
    name: str
    status: str
    ready: bool
    restarts: int
    age: datetime | None
    message: str = ""


@dataclass
class RunInfo:
    name: str
    phase: str
    kind: str
    successful: int
    failed: int
    errors: int
    inconclusive: int
    age: datetime | None
    message: str = ""


@dataclass
class ReplicaSetInfo:
    name: str
    revision: int
    pod_hash: str
    replicas: int
    available: int
    status: str
    roles: list[str]
    images: list[str]
    age: datetime | None
    pods: list[PodInfo] = field(default_factory=list)


@dataclass
class RevisionInfo:
    revision: int
    replica_sets: list[ReplicaSetInfo]
    runs: list[RunInfo]


@dataclass
class RolloutInfo:
    name: str
    namespace: str
    status: str
    message: str
    strategy: str
    step: str | None
    set_weight: int | None
    actual_weight: int | None
    images: list[tuple[str, list[str]]]
    desired: int
    current: int
    updated: int
    ready: int
    available: int
    age: datetime | None
    revisions: list[RevisionInfo]
    raw_status: Obj
    # Canary: the setHeaderRoute / setMirrorRoute routes in effect, by precedence.
    routes: list[ActiveRoute] = field(default_factory=list)


def _age(obj: Obj) -> datetime | None:
    return parse_rfc3339((obj.get("metadata") or {}).get("creationTimestamp"))


def rollout_status(ro: Obj) -> tuple[str, str]:
    """Phase and message as clients report them (Progressing while the controller catches up)."""
    status = ro.get("status") or {}
    generation = (ro.get("metadata") or {}).get("generation")
    observed = status.get("observedGeneration")
    if not status or (generation is not None and observed is not None and str(observed) != str(generation)):
        return "Progressing", "waiting for rollout spec update to be observed"
    if status.get("controllerPause") and not status.get("pauseConditions") and status.get("phase") == "Paused":
        return "Progressing", "resuming"
    return str(status.get("phase") or "Progressing"), str(status.get("message") or "")


def build_info(ro: Obj, replica_sets: list[Obj], pods: list[Obj], runs: list[Obj]) -> RolloutInfo:
    rollout = Rollout.model_validate(ro)
    status = ro.get("status") or {}
    phase, message = rollout_status(ro)
    stable = status.get("stableRS")
    current = status.get("currentPodHash")
    canary_strategy = rollout.spec.strategy.canary
    bg = status.get("blueGreen") or {}
    strategy = "Canary" if canary_strategy is not None else "BlueGreen"

    rs_infos: list[ReplicaSetInfo] = []
    for rs in replica_sets:
        labels = (rs.get("metadata") or {}).get("labels") or {}
        pod_hash = labels.get("rollouts-pod-template-hash", "")
        roles = []
        if pod_hash == stable:
            roles.append("stable")
        if canary_strategy is not None and pod_hash == current and pod_hash != stable:
            roles.append("canary")
        if canary_strategy is None:
            if pod_hash == bg.get("activeSelector"):
                roles.append("active")
            if pod_hash == bg.get("previewSelector") and pod_hash != bg.get("activeSelector"):
                roles.append("preview")
        spec = rs.get("spec") or {}
        rs_status = rs.get("status") or {}
        replicas = int(spec.get("replicas", 0))
        available = int(rs_status.get("availableReplicas", 0))
        if replicas == 0 and int(rs_status.get("replicas", 0)) == 0:
            state = "ScaledDown"
        elif available >= replicas:
            state = "Healthy"
        else:
            state = "Progressing"
        containers = ((spec.get("template") or {}).get("spec") or {}).get("containers") or []
        rs_pods = [
            PodInfo(
                name=p["metadata"]["name"],
                status=str((p.get("status") or {}).get("phase") or "Pending"),
                ready=bool((p.get("status") or {}).get("ready")),
                restarts=int((p.get("status") or {}).get("restartCount") or 0),
                age=_age(p),
                message=str((p.get("status") or {}).get("message") or ""),
            )
            for p in pods
            if any(o.get("name") == rs["metadata"]["name"] for o in p["metadata"].get("ownerReferences") or [])
        ]
        rs_infos.append(
            ReplicaSetInfo(
                name=rs["metadata"]["name"],
                revision=int(((rs["metadata"].get("annotations") or {}).get("rollout.argoproj.io/revision")) or 0),
                pod_hash=pod_hash,
                replicas=replicas,
                available=available,
                status=state,
                roles=roles,
                images=[str(c.get("image", "")) for c in containers],
                age=_age(rs),
                pods=sorted(rs_pods, key=lambda p: p.name),
            )
        )
    run_infos: dict[int, list[RunInfo]] = {}
    for run in runs:
        rstatus = run.get("status") or {}
        summary = rstatus.get("runSummary") or {}
        revision = int(((run["metadata"].get("annotations") or {}).get("rollout.argoproj.io/revision")) or 0)
        run_infos.setdefault(revision, []).append(
            RunInfo(
                name=run["metadata"]["name"],
                phase=str(rstatus.get("phase") or "Pending"),
                kind=str(((run["metadata"].get("labels") or {}).get("rollout-type")) or ""),
                successful=int(summary.get("successful") or 0),
                failed=int(summary.get("failed") or 0),
                errors=int(summary.get("error") or 0),
                inconclusive=int(summary.get("inconclusive") or 0),
                age=_age(run),
                message=str(rstatus.get("message") or ""),
            )
        )
    revisions = sorted({rs.revision for rs in rs_infos} | set(run_infos), reverse=True)
    revision_infos = [
        RevisionInfo(
            revision=r,
            replica_sets=[rs for rs in rs_infos if rs.revision == r],
            runs=sorted(run_infos.get(r, []), key=lambda x: x.name),
        )
        for r in revisions
    ]

    images: list[tuple[str, list[str]]] = []
    for rs_info in sorted(rs_infos, key=lambda x: -x.revision):
        if rs_info.replicas == 0 and not rs_info.pods:
            continue
        for image in rs_info.images:
            images.append((image, rs_info.roles))

    step = None
    set_weight = actual_weight = None
    routes: list[ActiveRoute] = []
    if canary_strategy is not None:
        routes = list(active_routes(rollout))
        steps = canary_strategy.steps or []
        index = status.get("currentStepIndex")
        if steps:
            step = f"{min(index if index is not None else 0, len(steps))}/{len(steps)}"
        set_weight = current_set_weight(rollout)
        weights = (status.get("canary") or {}).get("weights")
        if weights:
            actual_weight = int((weights.get("canary") or {}).get("weight", 0))
            if stable and current == stable:
                actual_weight = 100
        else:
            actual_weight = set_weight
    return RolloutInfo(
        name=rollout.metadata.name,
        namespace=rollout.metadata.namespace or "default",
        status=phase,
        message=message,
        strategy=strategy,
        step=step,
        set_weight=set_weight,
        actual_weight=actual_weight,
        images=images,
        desired=defaults.replicas(rollout),
        current=int(status.get("replicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        ready=int(status.get("readyReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        age=_age(ro),
        revisions=revision_infos,
        raw_status=status,
        routes=routes,
    )
