"""AnalysisRun history limits: completed runs beyond the rollout's limits are deleted.

As Argo's `FilterAnalysisRunsToDelete`: the rollout keeps its newest
`spec.analysis.successfulRunHistoryLimit` Successful runs and its newest
`spec.analysis.unsuccessfulRunHistoryLimit` Failed/Error/Inconclusive runs (5 each by default),
counted separately; older completed ones are deleted. A run still in flight, or one named in
the rollout's status (the current step, background, pre- or post-promotion run), is never
deleted.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from rollouts.core.context import Reconcile
from rollouts.core.plan import DeleteAnalysisRun, RunView
from rollouts.model.rollout import RolloutStatus

DEFAULT_LIMIT = 5


def runs_to_delete(
    runs: Iterable[RunView], referenced: set[str], successful_limit: int, unsuccessful_limit: int
) -> list[str]:
    """Names of the completed runs beyond the limits, oldest first.

    Runs are ranked newest first by creation time; runs without one rank as the oldest, in the
    order given.
    """
    ordered = list(runs)
    position = {run.name: index for index, run in enumerate(ordered)}

    def newest_first(run: RunView) -> tuple[bool, datetime, int]:
        created = run.created
        if created is None:
            return (False, datetime.min, position[run.name])
        if created.tzinfo is not None:
            created = created.astimezone(UTC).replace(tzinfo=None)
        return (True, created, position[run.name])

    kept_ok = kept_bad = 0
    doomed: list[str] = []
    for run in sorted(ordered, key=newest_first, reverse=True):
        if not run.completed or run.name in referenced:
            continue
        if run.phase == "Successful":
            if kept_ok < successful_limit:
                kept_ok += 1
                continue
        elif kept_bad < unsuccessful_limit:
            kept_bad += 1
            continue
        doomed.append(run.name)
    return list(reversed(doomed))


def referenced_runs(*statuses: RolloutStatus | None) -> set[str]:
    names: set[str] = set()
    for status in statuses:
        if status is None:
            continue
        slots = (
            status.canary.current_step_analysis_run_status if status.canary else None,
            status.canary.current_background_analysis_run_status if status.canary else None,
            status.blue_green.pre_promotion_analysis_run_status if status.blue_green else None,
            status.blue_green.post_promotion_analysis_run_status if status.blue_green else None,
        )
        names.update(slot.name for slot in slots if slot is not None and slot.name)
    return names


def trim_analysis_runs(ctx: Reconcile) -> None:
    """Plan the deletion of completed runs beyond spec.analysis's history limits."""
    limits = ctx.rollout.spec.analysis
    successful = DEFAULT_LIMIT
    unsuccessful = DEFAULT_LIMIT
    if limits is not None:
        if limits.successful_run_history_limit is not None:
            successful = max(0, limits.successful_run_history_limit)
        if limits.unsuccessful_run_history_limit is not None:
            unsuccessful = max(0, limits.unsuccessful_run_history_limit)
    referenced = referenced_runs(ctx.snap.rollout.status, ctx.status)
    for name in runs_to_delete(ctx.snap.runs, referenced, successful, unsuccessful):
        ctx.plan.actions.append(DeleteAnalysisRun(name))
