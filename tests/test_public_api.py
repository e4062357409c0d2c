"""The public Python API: what `rollouts` exports, and that each piece works as the README shows."""

from __future__ import annotations

import rollouts


def test_exported_members_are_pinned() -> None:
    assert sorted(rollouts.__all__) == sorted(
        [
            "AnalysisRun",
            "AnalysisTemplate",
            "CanaryReplicaCounts",
            "ConditionError",
            "Metric",
            "MetricResult",
            "PhaseResult",
            "ReplicaSetCounts",
            "Rollout",
            "RolloutStatus",
            "__version__",
            "canary_replica_counts",
            "evaluate_condition",
            "measurement_phase",
            "metric_phase",
            "rollout_phase",
            "run_phase",
        ]
    )


def test_readme_example() -> None:
    rollout = rollouts.Rollout.model_validate(
        {
            "metadata": {"name": "api"},
            "spec": {
                "replicas": 10,
                "strategy": {"canary": {"maxSurge": 1, "maxUnavailable": 1, "steps": [{"setWeight": 10}]}},
            },
            "status": {"currentStepIndex": 0, "currentPodHash": "new", "stableRS": "old"},
        }
    )
    counts = rollouts.canary_replica_counts(
        rollout,
        canary=rollouts.ReplicaSetCounts("api-new", replicas=0, available=0),
        stable=rollouts.ReplicaSetCounts("api-old", replicas=10, available=10),
    )
    assert (counts.canary, counts.stable) == (1, 9)
    assert rollouts.evaluate_condition("result[0] < 0.01", [0.002]) is True
    phase = rollouts.rollout_phase(rollout, rollout.status or rollouts.RolloutStatus())
    assert phase.phase == "Progressing"
