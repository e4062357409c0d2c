"""Checks that a rollout's references exist before it runs.

`lint` warns about a missing Service or template (it may be applied later); the controller
marks the rollout InvalidSpec with the same words until it appears.
"""

from __future__ import annotations

from rollouts.model import validation
from rollouts.model.rollout import Rollout
from rollouts.platform.protocols import Services
from rollouts.store.protocol import ResourceStore


def missing_references(rollout: Rollout, store: ResourceStore, services: Services) -> str | None:
    namespace = rollout.metadata.namespace or "default"
    for _path, name in validation.service_references(rollout):
        if not services.exists(namespace, name):
            return validation.service_not_found(name)
    for _path, analysis in validation.analysis_blocks(rollout):
        for ref in analysis.templates or []:
            if ref.cluster_scope:
                found = store.get("ClusterAnalysisTemplate", ref.template_name)
            else:
                found = store.get("AnalysisTemplate", ref.template_name, namespace)
            if found is None:
                return validation.template_not_found(ref.template_name, cluster_scope=bool(ref.cluster_scope))
    return None
