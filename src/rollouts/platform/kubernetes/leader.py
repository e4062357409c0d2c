"""Leader election with a coordination.k8s.io/v1 Lease, as client-go's leaderelection does.

Several controller replicas run; only the holder of the Lease acts. The holder renews every
`renew_interval` (10 s); a renewal that cannot be written within `renew_deadline` ends the
leadership (the caller stops acting at once). A follower takes the Lease only when it has
not seen the record change for `lease_duration` (15 s) by its *own* clock — like client-go,
it never compares its clock with another node's — and retries every `retry_period` (2 s).
Every write carries the resourceVersion read, so two followers cannot both win.

The Lease is named after the controller's instance id (`lease_name`), as Argo Workflows and,
since argo-rollouts#4768, Argo Rollouts name theirs: controllers with different ids (or one
with and one without) each elect their own leader instead of waiting on one another.
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import re
import time
from datetime import UTC, datetime
from typing import Any

from rollouts.platform.kubernetes import resources
from rollouts.platform.kubernetes.api import ApiError, KubeApi
from rollouts.store.errors import AlreadyExistsError, ConflictError, StoreError

log = logging.getLogger(__name__)


DEFAULT_LEASE_NAME = "rollouts-controller"
_NOT_DNS = re.compile(r"[^a-z0-9-]+")


def lease_name(instance_id: str | None, base: str = DEFAULT_LEASE_NAME) -> str:
    """`<base>-<instance id>`, or `base` without an id. A Lease name is a DNS name, a label
    value may hold more (capitals, '_', '.'): such an id is lowered and cleaned, and a hash of
    the id appended, so that ids differing only there ("Blue", "blue") keep distinct Leases."""
    if not instance_id:
        return base
    clean = _NOT_DNS.sub("-", instance_id.lower()).strip("-")
    if clean != instance_id:
        clean = f"{clean}-{hashlib.sha256(instance_id.encode()).hexdigest()[:8]}".strip("-")
    return f"{base}-{clean}"


def _micro_now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class KubeLeaderElector:
    def __init__(
        self,
        api: KubeApi,
        identity: str,
        *,
        namespace: str = "default",
        name: str = DEFAULT_LEASE_NAME,
        lease_duration: float = 15.0,
        renew_interval: float = 10.0,
        renew_deadline: float = 12.0,
        retry_period: float = 2.0,
    ) -> None:
        if not renew_interval < renew_deadline < lease_duration:
            raise ValueError("leader election needs renew interval < renew deadline < lease duration")
        self.api = api
        self.identity = identity
        self.namespace = namespace
        self.name = name
        self.lease_duration = lease_duration
        self.renew_interval = renew_interval
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._observed: tuple[str, str] | None = None  # (holder, renewTime) last seen
        self._observed_at = 0.0
        self._renewed_at = 0.0
        self._leading = False

    def is_leader(self) -> bool:
        return self._leading and time.monotonic() - self._renewed_at < self.renew_deadline

    def _body(self, current: dict[str, Any] | None) -> dict[str, Any]:
        now = _micro_now()
        spec = dict((current or {}).get("spec") or {})
        transitions = int(spec.get("leaseTransitions", 0))
        if spec.get("holderIdentity") != self.identity:
            spec["acquireTime"] = now
            transitions += 1 if current is not None else 0
        spec.update(
            holderIdentity=self.identity,
            renewTime=now,
            leaseDurationSeconds=int(self.lease_duration),
            leaseTransitions=transitions,
        )
        body: dict[str, Any] = {
            "apiVersion": "coordination.k8s.io/v1",
            "kind": "Lease",
            "metadata": {"name": self.name, "namespace": self.namespace},
            "spec": spec,
        }
        if current is not None:
            body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        return body

    async def try_acquire_or_renew(self) -> bool:
        try:
            current = await self.api.get(resources.LEASE, self.name, self.namespace)
            if current is None:
                await self.api.create(resources.LEASE, self._body(None))
                return self._won()
            spec = current.get("spec") or {}
            record = (str(spec.get("holderIdentity") or ""), str(spec.get("renewTime") or ""))
            held_by_other = record[0] not in ("", self.identity)
            if record != self._observed:
                if held_by_other and (self._observed is None or record[0] != self._observed[0]):
                    # Say once per holder who leads, so an operator sees why this replica idles.
                    log.info(
                        "%s is the leader; %s is waiting (lease %s/%s)",
                        record[0],
                        self.identity,
                        self.namespace,
                        self.name,
                    )
                self._observed, self._observed_at = record, time.monotonic()
            if held_by_other and time.monotonic() - self._observed_at < self.lease_duration:
                self._leading = False
                return False
            await self.api.replace(resources.LEASE, self._body(current))
            return self._won()
        except (ConflictError, AlreadyExistsError):
            self._leading = False
            return False
        except (ApiError, StoreError, OSError) as exc:
            log.warning("leader election: %s", exc)
            return False

    def _won(self) -> bool:
        if not self._leading:
            log.info("%s became the leader (lease %s/%s)", self.identity, self.namespace, self.name)
        self._leading = True
        self._renewed_at = time.monotonic()
        return True

    async def acquire(self) -> None:
        """Wait until this process holds the Lease."""
        while not await self.try_acquire_or_renew():
            await asyncio.sleep(self.retry_period)

    async def hold(self) -> str:
        """Renew until leadership is lost; returns why."""
        while True:
            await asyncio.sleep(self.renew_interval)
            deadline = time.monotonic() + self.renew_deadline - self.renew_interval
            while not await self.try_acquire_or_renew():
                if not self._leading and self._observed and self._observed[0] not in ("", self.identity):
                    return f"lease taken by {self._observed[0]}"
                if time.monotonic() >= deadline:
                    self._leading = False
                    return "could not renew the lease before the renew deadline"
                await asyncio.sleep(self.retry_period)
