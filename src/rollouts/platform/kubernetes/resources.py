"""The Kubernetes resource types the controller reads and writes, and their URL paths."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class ResourceType:
    kind: str
    group: str  # "" for the core group
    version: str
    plural: str
    namespaced: bool = True
    status_subresource: bool = False

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    def path(self, namespace: str | None = None, name: str | None = None, subresource: str | None = None) -> str:
        base = f"/apis/{self.group}/{self.version}" if self.group else f"/api/{self.version}"
        if self.namespaced and namespace is not None:
            base += f"/namespaces/{namespace}"
        base += f"/{self.plural}"
        if name is not None:
            base += f"/{name}"
            if subresource is not None:
                base += f"/{subresource}"
        return base


ROLLOUT = ResourceType("Rollout", "argoproj.io", "v1alpha1", "rollouts", status_subresource=True)
ANALYSIS_RUN = ResourceType("AnalysisRun", "argoproj.io", "v1alpha1", "analysisruns", status_subresource=True)
ANALYSIS_TEMPLATE = ResourceType("AnalysisTemplate", "argoproj.io", "v1alpha1", "analysistemplates")
CLUSTER_ANALYSIS_TEMPLATE = ResourceType(
    "ClusterAnalysisTemplate", "argoproj.io", "v1alpha1", "clusteranalysistemplates", namespaced=False
)
REPLICA_SET = ResourceType("ReplicaSet", "apps", "v1", "replicasets", status_subresource=True)
SERVICE = ResourceType("Service", "", "v1", "services", status_subresource=True)
POD = ResourceType("Pod", "", "v1", "pods", status_subresource=True)
SECRET = ResourceType("Secret", "", "v1", "secrets")
EVENT = ResourceType("Event", "", "v1", "events")
INGRESS = ResourceType("Ingress", "networking.k8s.io", "v1", "ingresses", status_subresource=True)
LEASE = ResourceType("Lease", "coordination.k8s.io", "v1", "leases")
JOB = ResourceType("Job", "batch", "v1", "jobs", status_subresource=True)

BY_KIND = {
    rt.kind: rt
    for rt in (
        ROLLOUT,
        ANALYSIS_RUN,
        ANALYSIS_TEMPLATE,
        CLUSTER_ANALYSIS_TEMPLATE,
        REPLICA_SET,
        SERVICE,
        POD,
        SECRET,
        EVENT,
        INGRESS,
        LEASE,
        JOB,
    )
}

# What the controller keeps an informer (list + watch cache) for.
WATCHED = (
    ROLLOUT,
    ANALYSIS_RUN,
    ANALYSIS_TEMPLATE,
    CLUSTER_ANALYSIS_TEMPLATE,
    REPLICA_SET,
    SERVICE,
    POD,
    SECRET,
    INGRESS,
)
