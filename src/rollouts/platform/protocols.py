"""The narrow interfaces that planned actions run against (DESIGN: Platforms).

The controller never knows whether pods are local processes or Kubernetes pods: it lists a
rollout's ReplicaSets as `ReplicaSetView`s (with their pods), creates and scales them, deletes pods for a restart, points Services at a
revision, and sets the canary weight and managed routes. The embedded platform and the Kubernetes platform
implement these; tests may use either.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, Protocol

from rollouts.core.plan import ReplicaSetView, SetEphemeralMetadata
from rollouts.core.routes import ActiveRoute
from rollouts.model.rollout import Rollout


class Workloads(Protocol):
    def replica_sets(self, rollout: Rollout) -> list[ReplicaSetView]: ...

    async def create_replica_set(
        self, rollout: Rollout, name: str, pod_hash: str, revision: int, replicas: int, template: dict[str, Any]
    ) -> None: ...

    async def scale_replica_set(self, namespace: str, name: str, replicas: int) -> None: ...

    async def set_scale_down_deadline(self, namespace: str, name: str, at: datetime | None) -> None: ...

    async def set_revision(self, namespace: str, name: str, revision: int) -> None: ...

    async def delete_replica_set(self, namespace: str, name: str) -> None: ...

    async def delete_pod(self, namespace: str, name: str) -> None:
        """Delete one pod so that its ReplicaSet replaces it (spec.restartAt); a missing pod is no error."""
        ...

    async def set_ephemeral_metadata(self, namespace: str, change: SetEphemeralMetadata) -> None:
        """Carry out `change` on the ReplicaSet's pod template, its running pods (in place, not
        restarted) and its bookkeeping annotation, in the order `core.metadata` describes; a
        missing ReplicaSet or pod is no error."""
        ...


class Services(Protocol):
    def exists(self, namespace: str, name: str) -> bool: ...

    async def point(self, namespace: str, name: str, pod_hash: str) -> None:
        """Add the revision's pod-template-hash to the Service's selector."""
        ...


class TrafficRouter(Protocol):
    async def set_weight(
        self,
        namespace: str,
        rollout: str,
        stable_service: str,
        canary_service: str | None,
        canary_hash: str,
        weight: int,
        routes: tuple[ActiveRoute, ...] = (),
    ) -> None:
        """Send `weight` % of the stable Service's traffic to the canary, and make `routes` (the
        managed routes in effect, by precedence; `core.routes`) the only managed routes: a route
        not in `routes` is removed. A router that cannot express a route says so in a Warning
        and applies what it can."""
        ...


class Platform(Protocol):
    @property
    def name(self) -> str: ...

    @property
    def workloads(self) -> Workloads: ...

    @property
    def services(self) -> Services: ...

    @property
    def traffic(self) -> TrafficRouter: ...

    @property
    def implicit_traffic_router(self) -> bool:
        """True when the platform splits traffic by weight even without spec.trafficRouting."""
        ...

    def unsupported(self, rollout: Rollout) -> str | None:
        """Why this platform cannot run the rollout (a feature it lacks), or None."""
        ...
