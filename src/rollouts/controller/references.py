"""Checks that a rollout's references exist before it runs (the same words lint warns with)."""

from __future__ import annotations

from rollouts.model.rollout import Rollout, RolloutAnalysis
from rollouts.platform.protocols import Services
from rollouts.store.protocol import ResourceStore


def referenced_services(rollout: Rollout) -> list[str]:
    strategy = rollout.spec.strategy
    names: list[str | None] = []
    if strategy.canary is not None:
        names += [strategy.canary.stable_service, strategy.canary.canary_service]
    if strategy.blue_green is not None:
        names += [strategy.blue_green.active_service, strategy.blue_green.preview_service]
    return [n for n in names if n]


def referenced_analyses(rollout: Rollout) -> list[RolloutAnalysis]:
    strategy = rollout.spec.strategy
    found: list[RolloutAnalysis | None] = []
    if strategy.canary is not None:
        found.append(strategy.canary.analysis)
        found += [step.analysis for step in strategy.canary.steps or []]
    if strategy.blue_green is not None:
        found += [strategy.blue_green.pre_promotion_analysis, strategy.blue_green.post_promotion_analysis]
    return [a for a in found if a is not None]


def missing_references(rollout: Rollout, store: ResourceStore, services: Services) -> str | None:
    namespace = rollout.metadata.namespace or "default"
    for name in referenced_services(rollout):
        if not services.exists(namespace, name):
            return f'service "{name}" not found: apply it before the rollout runs'
    for analysis in referenced_analyses(rollout):
        for ref in analysis.templates or []:
            if ref.cluster_scope:
                if store.get("ClusterAnalysisTemplate", ref.template_name) is None:
                    return (
                        f'cluster analysis template "{ref.template_name}" not found: apply it before the rollout runs'
                    )
            elif store.get("AnalysisTemplate", ref.template_name, namespace) is None:
                return f'analysis template "{ref.template_name}" not found: apply it before the rollout runs'
    return None
