"""Rollout phase and message, computed from spec and status as Argo's CalculateRolloutPhase does.

Order matters (reference c): invalid spec and aborts first, then pauses, then the replica
and service checks that say why an update is still progressing, else Healthy.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollouts.core import defaults
from rollouts.model.rollout import Condition, Rollout, RolloutStatus

HEALTHY = "Healthy"
PROGRESSING = "Progressing"
PAUSED = "Paused"
DEGRADED = "Degraded"


@dataclass(frozen=True)
class PhaseResult:
    phase: str
    message: str


def _condition(status: RolloutStatus, type_: str) -> Condition | None:
    return next((c for c in status.conditions or [] if c.type == type_), None)


def rollout_phase(rollout: Rollout, status: RolloutStatus) -> PhaseResult:
    """The phase and message that `status.phase`/`status.message` should hold."""
    invalid = _condition(status, "InvalidSpec")
    if invalid is not None and invalid.status == "True":
        return PhaseResult(DEGRADED, f"InvalidSpec: {invalid.message}")
    progressing = _condition(status, "Progressing")
    if status.abort:
        return PhaseResult(DEGRADED, status.message or "RolloutAborted: Rollout aborted update")
    if progressing is not None and progressing.reason == "ProgressDeadlineExceeded":
        return PhaseResult(DEGRADED, f"ProgressDeadlineExceeded: {progressing.message}")
    if rollout.spec.paused:
        return PhaseResult(PAUSED, "manually paused")
    if status.pause_conditions:
        return PhaseResult(PAUSED, status.pause_conditions[0].reason)
    replicas = defaults.replicas(rollout)
    updated = status.updated_replicas or 0
    available = status.available_replicas or 0
    if updated < replicas:
        return PhaseResult(PROGRESSING, "more replicas need to be updated")
    if available < updated:
        return PhaseResult(PROGRESSING, "updated replicas are still becoming available")
    blue_green = rollout.spec.strategy.blue_green
    if blue_green is not None:
        active = status.blue_green.active_selector if status.blue_green else None
        if active != status.current_pod_hash:
            return PhaseResult(PROGRESSING, "active service cutover pending")
        if status.stable_rs != status.current_pod_hash:
            return PhaseResult(PROGRESSING, "waiting for analysis to complete")
        return PhaseResult(HEALTHY, "")
    canary = rollout.spec.strategy.canary
    # Only a basic canary: the others keep old replicas up on purpose (scaleDownDelaySeconds).
    if canary is not None and canary.traffic_routing is None and (status.replicas or 0) > updated:
        return PhaseResult(PROGRESSING, "old replicas are pending termination")
    if status.stable_rs != status.current_pod_hash:
        return PhaseResult(PROGRESSING, "waiting for all steps to complete")
    return PhaseResult(HEALTHY, "")
