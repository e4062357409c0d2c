"""Leader election for controllers sharing one state file: a Lease object in the store.

Two controllers started on the same SQLite file must not both act (both would start pods for
the same ReplicaSets and bind the same Service ports). Exactly as Kubernetes controllers do
with a `coordination.k8s.io/v1` Lease, they compete for one `Lease` object (kind `Lease`,
namespace `default`, name `rollouts-controller` by default) whose spec reads:

    holderIdentity        who leads now ("" after a clean release)
    acquireTime           when that holder took the lease
    renewTime             when that holder last renewed it
    leaseDurationSeconds  how long a renewal is good for (15 by default)
    leaseTransitions      how many times the lease changed hands

Every write carries the resourceVersion that was read, so the store's compare-and-swap
decides races: two followers seeing the same expired lease both try, one write wins, the
other gets a conflict and stays a follower.

* A follower reads the lease (reads never block the leader) and tries to take it only when
  it is free: absent, released, or expired (`renewTime + leaseDurationSeconds` has passed).
  It wakes up exactly when the lease it saw would expire, so a leader killed with `kill -9`
  is replaced within `leaseDurationSeconds` of its last renewal (plus a few milliseconds).
* The leader renews every `renew_interval` seconds (5 by default). A renewal that finds
  another holder, or that cannot be written for `renew_deadline` seconds (10 by default,
  less than the duration, so the leader gives up before anyone else may take over), ends
  the leadership: `hold()` returns the reason and the caller must stop acting at once.
* `is_leader()` is the local fence: it turns False as soon as the last successful renewal is
  older than `renew_deadline`, even before `hold()` has noticed (a process that was frozen
  and wakes up must not act on its stale belief).

Expiry compares the holder's `renewTime` with this process's wall clock: the controllers
share one state file, hence one machine and one clock.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import secrets
import socket
import sqlite3
import time
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from rollouts.core.timeutil import parse_rfc3339, to_rfc3339_micro
from rollouts.store.errors import AlreadyExistsError, ConflictError, NotFoundError, StoreError
from rollouts.store.sqlite import SqliteStore

__all__ = [
    "DEFAULT_LEASE_DURATION",
    "DEFAULT_LEASE_NAME",
    "DEFAULT_RENEW_INTERVAL",
    "LEASE_KIND",
    "LeaderElector",
    "LeaseRecord",
    "default_identity",
    "read_lease",
]

log = logging.getLogger(__name__)

LEASE_KIND = "Lease"
LEASE_API_VERSION = "coordination.k8s.io/v1"
DEFAULT_LEASE_NAME = "rollouts-controller"
DEFAULT_LEASE_NAMESPACE = "default"
DEFAULT_LEASE_DURATION = 15.0
DEFAULT_RENEW_INTERVAL = 5.0

_STORE_ERRORS = (StoreError, sqlite3.Error)


def default_identity() -> str:
    """`<host>_<pid>_<random>`: unique per controller process, readable in `holderIdentity`."""
    return f"{socket.gethostname()}_{os.getpid()}_{secrets.token_hex(3)}"


class LeaseRecord:
    """The lease as read from the store."""

    def __init__(self, obj: dict[str, Any]) -> None:
        self.obj = obj
        spec = obj.get("spec") or {}
        self.holder = str(spec.get("holderIdentity") or "")
        self.duration = float(spec.get("leaseDurationSeconds") or DEFAULT_LEASE_DURATION)
        self.transitions = int(spec.get("leaseTransitions") or 0)
        self.acquire_time = str(spec.get("acquireTime") or "")
        renewed = parse_rfc3339(spec.get("renewTime"))
        self.renewed_at = renewed.timestamp() if renewed is not None else 0.0
        self.resource_version = str(obj["metadata"].get("resourceVersion", ""))

    def expires_at(self) -> float:
        """Wall-clock time (epoch seconds) when the lease is free for the taking."""
        return self.renewed_at + self.duration if self.holder else 0.0


def read_lease(
    store: SqliteStore, name: str = DEFAULT_LEASE_NAME, namespace: str = DEFAULT_LEASE_NAMESPACE
) -> LeaseRecord | None:
    raw = store.get(LEASE_KIND, name, namespace)
    return None if raw is None else LeaseRecord(raw)


def _seconds(value: float) -> int | float:
    return int(value) if float(value).is_integer() else value


class LeaderElector:
    """Acquire, renew and release the controller lease (see the module docstring)."""

    def __init__(
        self,
        store: SqliteStore,
        identity: str | None = None,
        *,
        name: str = DEFAULT_LEASE_NAME,
        namespace: str = DEFAULT_LEASE_NAMESPACE,
        lease_duration: float = DEFAULT_LEASE_DURATION,
        renew_interval: float = DEFAULT_RENEW_INTERVAL,
        renew_deadline: float | None = None,
        wall_clock: Callable[[], float] = time.time,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        if lease_duration <= 0 or renew_interval <= 0:
            raise ValueError("lease duration and renew interval must be positive")
        if renew_interval >= lease_duration:
            raise ValueError(
                f"renew interval ({renew_interval:g}s) must be shorter than the lease duration ({lease_duration:g}s)"
            )
        self.store = store
        self.identity = identity or default_identity()
        self.name = name
        self.namespace = namespace
        self.lease_duration = lease_duration
        self.renew_interval = renew_interval
        # Give up before anyone else may take over: between one renewal period and the duration.
        default_deadline = max(renew_interval, min(lease_duration * 2 / 3, lease_duration - renew_interval / 2))
        self.renew_deadline = renew_deadline if renew_deadline is not None else default_deadline
        if not renew_interval <= self.renew_deadline < lease_duration:
            raise ValueError("renew deadline must be at least the renew interval and less than the lease duration")
        self._wall = wall_clock
        self._monotonic = monotonic
        self._renewed_mono: float | None = None  # when the last successful write was *started*
        self._record: LeaseRecord | None = None
        self.taken_from: str | None = None  # the holder this process took the lease from, if any

    # --- state -----------------------------------------------------------------------------

    def is_leader(self) -> bool:
        """Whether this process holds the lease, as far as it can be sure without asking the store."""
        return self._renewed_mono is not None and self._monotonic() - self._renewed_mono < self.renew_deadline

    def holder(self) -> str | None:
        """The holder seen at the last read or write (None: no lease seen yet, or released)."""
        return (self._record.holder or None) if self._record is not None else None

    # --- one attempt -----------------------------------------------------------------------

    def try_acquire_or_renew(self, *, renew_only: bool = False) -> bool:
        """One compare-and-swap attempt: True when this process holds the lease afterwards.

        With `renew_only`, a lease that is no longer ours is never taken again, even when it is
        free: whoever held it in between may have changed what this process believes it runs.
        """
        started = self._monotonic()
        now = self._wall()
        stamp = to_rfc3339_micro(datetime.fromtimestamp(now, UTC))
        current = read_lease(self.store, self.name, self.namespace)
        self._record = current
        if renew_only and (current is None or current.holder != self.identity):
            self._renewed_mono = None
            return False
        if current is None:
            body = {
                "apiVersion": LEASE_API_VERSION,
                "kind": LEASE_KIND,
                "metadata": {"name": self.name, "namespace": self.namespace},
                "spec": {
                    "holderIdentity": self.identity,
                    "leaseDurationSeconds": _seconds(self.lease_duration),
                    "acquireTime": stamp,
                    "renewTime": stamp,
                    "leaseTransitions": 0,
                },
            }
            try:
                self._record = LeaseRecord(self.store.create(body))
            except AlreadyExistsError:
                return self._lost_race()
            return self._won(started, acquired=True)
        mine = current.holder == self.identity
        if not mine and current.holder and current.expires_at() > now:
            self._renewed_mono = None
            return False
        obj = dict(current.obj)
        spec = dict(obj.get("spec") or {})
        if not mine:
            self.taken_from = current.holder or None
            spec["acquireTime"] = stamp
            spec["leaseTransitions"] = current.transitions + 1
        spec["holderIdentity"] = self.identity
        spec["renewTime"] = stamp
        spec["leaseDurationSeconds"] = _seconds(self.lease_duration)
        obj["spec"] = spec
        try:
            self._record = LeaseRecord(self.store.update(obj))
        except (ConflictError, NotFoundError):
            return self._lost_race()
        return self._won(started, acquired=not mine)

    def _won(self, started: float, *, acquired: bool) -> bool:
        if acquired:
            record = self._record
            log.info(
                "acquired the controller lease %s/%s as %s (transitions: %d)",
                self.namespace,
                self.name,
                self.identity,
                record.transitions if record is not None else 0,
            )
        self._renewed_mono = started
        return True

    def _lost_race(self) -> bool:
        self._renewed_mono = None
        with contextlib.suppress(*_STORE_ERRORS):
            self._record = read_lease(self.store, self.name, self.namespace)
        return False

    # --- loops -----------------------------------------------------------------------------

    async def acquire(self) -> None:
        """Return once this process holds the lease; until then do nothing but watch it."""
        announced: str | None = None
        while True:
            try:
                if self.try_acquire_or_renew():
                    return
            except _STORE_ERRORS as exc:
                log.warning("controller lease %s/%s: %s", self.namespace, self.name, exc)
            record = self._record
            delay = self.renew_interval
            if record is not None and record.holder and record.holder != self.identity:
                if announced != record.holder:
                    announced = record.holder
                    log.info(
                        "waiting for the controller lease %s/%s, held by %s",
                        self.namespace,
                        self.name,
                        record.holder,
                    )
                # Wake exactly when the lease we saw expires: a dead leader is replaced on time.
                delay = min(delay, max(0.0, record.expires_at() - self._wall()) + 0.01)
            await asyncio.sleep(delay)

    async def hold(self) -> str:
        """Renew the lease until it is lost; return why it was lost. Call after `acquire`."""
        while True:
            await asyncio.sleep(self.renew_interval)
            try:
                if self.try_acquire_or_renew(renew_only=True):
                    continue
                holder = self.holder() or "nobody"
                return f"the lease is now held by {holder}"
            except _STORE_ERRORS as exc:
                log.warning("cannot renew the controller lease %s/%s: %s", self.namespace, self.name, exc)
            if not self.is_leader():
                return f"could not renew the lease for {self.renew_deadline:g}s"

    def release(self) -> None:
        """Give the lease up at once (clean shutdown), so a follower need not wait for it to expire."""
        if self._renewed_mono is None:
            return
        self._renewed_mono = None
        try:
            current = read_lease(self.store, self.name, self.namespace)
            if current is None or current.holder != self.identity:
                return
            obj = dict(current.obj)
            spec = dict(obj.get("spec") or {})
            spec["holderIdentity"] = ""
            obj["spec"] = spec
            self.store.update(obj)
            log.info("released the controller lease %s/%s", self.namespace, self.name)
        except _STORE_ERRORS as exc:
            log.warning("could not release the controller lease %s/%s: %s", self.namespace, self.name, exc)
