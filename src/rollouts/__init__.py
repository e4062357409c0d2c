"""rollouts: progressive delivery with Argo Rollouts-compatible resources.

The public Python API: the pure calculations at the heart of the controller, usable on
their own (for example to check what a manifest will do at each step).

- `canary_replica_counts(rollout, canary, stable, others)`: Argo's canary replica
  arithmetic: the desired stable and canary replicas for this reconcile.
- `rollout_phase(rollout, status)`: the phase (Healthy, Progressing, Paused, Degraded) and
  message Argo would report.
- `evaluate_condition(expression, result)`: an analysis successCondition/failureCondition.
- `measurement_phase`, `metric_phase`, `run_phase`: a measurement's phase from its result,
  a metric's phase from its counters and limits, a run's phase from its metrics.
"""

from rollouts.analysis.assess import measurement_phase, metric_phase, run_phase
from rollouts.analysis.expr import ConditionError, evaluate_condition
from rollouts.core.phase import PhaseResult, rollout_phase
from rollouts.core.replicas import CanaryReplicaCounts, ReplicaSetCounts, canary_replica_counts
from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, Metric, MetricResult
from rollouts.model.rollout import Rollout, RolloutStatus

__version__ = "0.1.0"
__all__ = [
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
