"""What `promote`, `abort`, `retry`, `pause`, `resume`, `restart` and `set image` write.

As in `kubectl argo rollouts` (cmd/promote/promote.go::getPatches), each operation is a
pure function from the rollout's current JSON to the new spec and/or status; the CLI and the
HTTP API write them with the resourceVersion they read, and the controller acts on them.
Writing intent rather than acting keeps one actor — the controller — in charge of pods
and traffic, and lets the same patches drive a cluster that runs Argo Rollouts itself.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from rollouts.core import metadata
from rollouts.core.plan import EphemeralMetadata, SetEphemeralMetadata

Obj = dict[str, Any]


class OperationError(Exception):
    """The operation does not apply to the rollout in its current state; the message says why."""


@dataclass(frozen=True)
class Patch:
    """The new object after the operation; `spec`/`status` say which parts changed."""

    obj: Obj
    spec: bool = False
    status: bool = False


def _name(ro: Obj) -> str:
    return str(ro["metadata"]["name"])


def _status(ro: Obj) -> Obj:
    return dict(ro.get("status") or {})


def promote(ro: Obj, *, full: bool = False) -> Patch:
    """Argo's promote: unpause; then skip the pause/analysis/step the rollout waits on."""
    new = copy.deepcopy(ro)
    spec_changed = False
    if new["spec"].get("paused"):
        new["spec"]["paused"] = False
        spec_changed = True
    status = _status(new)
    canary = "canary" in (new["spec"].get("strategy") or {})
    if full:
        if status.get("currentPodHash") and status.get("currentPodHash") == status.get("stableRS"):
            raise OperationError(f'rollout "{_name(ro)}" is already fully promoted: nothing to promote')
        status["promoteFull"] = True
        status.pop("pauseConditions", None)
        status["controllerPause"] = False if status.get("controllerPause") else status.get("controllerPause")
    else:
        conditions = status.get("pauseConditions") or []
        inconclusive = any(c.get("reason") == "InconclusiveAnalysisRun" for c in conditions)
        if inconclusive and status.get("controllerPause") and canary:
            status.pop("pauseConditions", None)
            status["controllerPause"] = False
            status["currentStepIndex"] = int(status.get("currentStepIndex") or 0) + 1
        elif conditions:
            status.pop("pauseConditions", None)
        elif canary and not spec_changed:
            steps = ((new["spec"].get("strategy") or {}).get("canary") or {}).get("steps") or []
            index = status.get("currentStepIndex")
            if index is None or index >= len(steps):
                raise OperationError(
                    f'rollout "{_name(ro)}" is not paused and has no step left to skip: nothing to promote'
                )
            status["currentStepIndex"] = index + 1
        elif not spec_changed and not canary:
            raise OperationError(f'rollout "{_name(ro)}" is not paused: nothing to promote')
    status = {k: v for k, v in status.items() if v is not None}
    new["status"] = status
    return Patch(new, spec=spec_changed, status=status != _status(ro))


def abort(ro: Obj) -> Patch:
    new = copy.deepcopy(ro)
    status = _status(new)
    status["abort"] = True
    new["status"] = status
    return Patch(new, status=True)


def retry(ro: Obj) -> Patch:
    new = copy.deepcopy(ro)
    status = _status(new)
    if not status.get("abort"):
        raise OperationError(f'rollout "{_name(ro)}" is not aborted: nothing to retry')
    status["abort"] = False
    new["status"] = status
    return Patch(new, status=True)


def pause(ro: Obj) -> Patch:
    new = copy.deepcopy(ro)
    new["spec"]["paused"] = True
    return Patch(new, spec=True)


def resume(ro: Obj) -> Patch:
    """Undo `pause`: clear spec.paused. Unlike `promote`, a pause step is not skipped."""
    if not ro["spec"].get("paused"):
        raise OperationError(
            f'rollout "{_name(ro)}" is not paused by a user (spec.paused): nothing to resume '
            "(to move past a pause step, use promote)"
        )
    new = copy.deepcopy(ro)
    new["spec"]["paused"] = False
    return Patch(new, spec=True)


def restart(ro: Obj, at: datetime) -> Patch:
    new = copy.deepcopy(ro)
    new["spec"]["restartAt"] = at.strftime("%Y-%m-%dT%H:%M:%SZ")
    return Patch(new, spec=True)


def set_image(ro: Obj, container: str, image: str) -> Patch:
    """Change one container's image (`*` = every container), like `kubectl argo rollouts set image`."""
    new = copy.deepcopy(ro)
    spec = ((new["spec"].get("template") or {}).get("spec")) or {}
    found = False
    for group in ("initContainers", "containers", "ephemeralContainers"):
        for c in spec.get(group) or []:
            if container in ("*", c.get("name")):
                c["image"] = image
                found = True
    if not found:
        names = [c.get("name") for c in spec.get("containers") or []]
        raise OperationError(
            f'rollout "{_name(ro)}" has no container "{container}" (containers: {", ".join(map(str, names))})'
        )
    return Patch(new, spec=True)


REVISION_ANNOTATION = "rollout.argoproj.io/revision"
HASH_LABEL = "rollouts-pod-template-hash"


def undo(ro: Obj, replica_sets: list[Obj], to_revision: int = 0) -> Patch:
    """Roll the pod template back to a previous revision's (0 = the one before the current).

    Like `kubectl argo rollouts undo`: the ReplicaSet's template is copied into the rollout
    without its pod-template-hash label; the controller treats it as an update, fast-tracked
    when it is the stable revision or within rollbackWindow.
    """

    def revision(rs: Obj) -> int:
        value = ((rs.get("metadata") or {}).get("annotations") or {}).get(REVISION_ANNOTATION, "0")
        return int(value) if str(value).isdigit() else 0

    by_revision = sorted(replica_sets, key=revision, reverse=True)
    if not by_revision:
        raise OperationError(f'rollout "{_name(ro)}" has no revisions to roll back to')
    current_hash = (ro.get("status") or {}).get("currentPodHash")
    if to_revision:
        target = next((rs for rs in by_revision if revision(rs) == to_revision), None)
        if target is None:
            known = ", ".join(str(revision(rs)) for rs in by_revision)
            raise OperationError(f'rollout "{_name(ro)}" has no revision {to_revision} (revisions: {known})')
    else:
        older = [
            rs for rs in by_revision if ((rs.get("metadata") or {}).get("labels") or {}).get(HASH_LABEL) != current_hash
        ]
        if not older:
            raise OperationError(f'rollout "{_name(ro)}" has no previous revision to roll back to')
        target = older[0]
    template = copy.deepcopy((target.get("spec") or {}).get("template") or {})
    labels = (template.get("metadata") or {}).get("labels")
    if isinstance(labels, dict):
        labels.pop(HASH_LABEL, None)
    # Role labels/annotations injected by ephemeral metadata are not the revision's template:
    # copied back they would change its hash (a new revision instead of the old one).
    injected = metadata.parse_bookkeeping((target.get("metadata") or {}).get("annotations") or {})
    if injected is not None:
        strip = SetEphemeralMetadata(
            "", EphemeralMetadata(), tuple(k for k, _ in injected.labels), tuple(k for k, _ in injected.annotations)
        )
        metadata.apply_to_template(template, strip)
    new = copy.deepcopy(ro)
    new["spec"]["template"] = template
    return Patch(new, spec=True)
