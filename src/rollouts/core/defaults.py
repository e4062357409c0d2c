"""Argo Rollouts' defaults, applied where fields are read (the models keep "unset" as None).

Values follow the controller code (reference section a), not the spec docs where they differ.
"""

from __future__ import annotations

from rollouts.model.rollout import BlueGreenStrategy, CanaryStrategy, Rollout

REPLICAS = 1
REVISION_HISTORY_LIMIT = 10
PROGRESS_DEADLINE_SECONDS = 600
SCALE_DOWN_DELAY_SECONDS = 30
ABORT_SCALE_DOWN_DELAY_SECONDS = 30
MAX_SURGE = "25%"
MAX_UNAVAILABLE = "25%"
MAX_TRAFFIC_WEIGHT = 100
SUCCESSFUL_RUN_HISTORY_LIMIT = 5
UNSUCCESSFUL_RUN_HISTORY_LIMIT = 5


def replicas(rollout: Rollout) -> int:
    return REPLICAS if rollout.spec.replicas is None else rollout.spec.replicas


def revision_history_limit(rollout: Rollout) -> int:
    limit = rollout.spec.revision_history_limit
    return REVISION_HISTORY_LIMIT if limit is None else limit


def progress_deadline_seconds(rollout: Rollout) -> int:
    value = rollout.spec.progress_deadline_seconds
    return PROGRESS_DEADLINE_SECONDS if value is None else value


def scale_down_delay_seconds(strategy: CanaryStrategy | BlueGreenStrategy) -> int:
    """Delay before an old ReplicaSet is scaled down; a canary has one only with trafficRouting (Argo)."""
    if isinstance(strategy, CanaryStrategy) and strategy.traffic_routing is None:
        return 0
    value = strategy.scale_down_delay_seconds
    return SCALE_DOWN_DELAY_SECONDS if value is None else value


def abort_scale_down_delay_seconds(strategy: CanaryStrategy | BlueGreenStrategy) -> int:
    """Delay before an aborted update is scaled down (0 = never); a basic canary scales down at once."""
    if isinstance(strategy, CanaryStrategy) and strategy.traffic_routing is None:
        return -1
    value = strategy.abort_scale_down_delay_seconds
    return ABORT_SCALE_DOWN_DELAY_SECONDS if value is None else value


def auto_promotion_enabled(bg: BlueGreenStrategy) -> bool:
    return True if bg.auto_promotion_enabled is None else bg.auto_promotion_enabled
