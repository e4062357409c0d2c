"""The controller process: watch the store, queue keys, reconcile rollouts and analysis runs.

Changes arrive two ways: in-process writes notify at once (so an analysis verdict reaches
the traffic router within one event-loop turn), and writes from other processes (the CLI)
are picked up by polling the store's change feed. Every rollout and run is also resynced
periodically, as informers do.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

from rollouts.analysis.providers.base import MetricProvider
from rollouts.controller.admin import ControllerMetrics
from rollouts.controller.analysisruns import AnalysisRunReconciler
from rollouts.controller.queue import WorkQueue
from rollouts.controller.rollouts import ROLLOUT_LABEL, RolloutReconciler
from rollouts.platform.protocols import Platform
from rollouts.store.protocol import AsyncSqliteStore, ResourceStore
from rollouts.store.sqlite import Change, ConflictError, SqliteStore, StoreError

log = logging.getLogger(__name__)

Key = tuple[str, str, str]  # (kind, namespace, name)
# Kinds a rollout refers to by name: one appearing or disappearing may change its validity.
_REFERENCED_KINDS = ("Service", "AnalysisTemplate", "ClusterAnalysisTemplate", "Secret")


def utc_now() -> datetime:
    return datetime.now(UTC)


class Controller:
    def __init__(
        self,
        store: ResourceStore,
        platform: Platform,
        providers: Mapping[str, MetricProvider],
        *,
        clock: Callable[[], datetime] = utc_now,
        poll_interval: float = 0.2,
        resync_seconds: float = 30.0,
        leading: Callable[[], bool] | None = None,
        change_feed: SqliteStore | None = None,
        metrics: ControllerMetrics | None = None,
    ) -> None:
        """`leading`, when given, is asked before every reconcile: while it says False (this
        controller is not sure it still holds the lease) keys are put back, not reconciled.
        `change_feed`: a SQLite store whose writes by other processes (the CLI) are polled;
        on Kubernetes the informers report every change through the store's listeners.
        `metrics`: where rollout reconciles, events and update outcomes are counted."""
        self.store = store
        self.change_feed = change_feed
        self.leading = leading
        self.rollouts = RolloutReconciler(store, platform, clock, metrics)
        self.runs = AnalysisRunReconciler(store, providers, clock)
        self.queue: WorkQueue[Key] = WorkQueue()
        self.poll_interval = poll_interval
        self.resync_seconds = resync_seconds
        self._rv = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self.reconcile_count = 0
        self.reconcile_seconds = 0.0
        self._known_refs: set[tuple[str, str, str]] = set()
        # Versions of in-process writes already routed by `on_store_change`, until the poll
        # has read past them.
        self._routed: set[int] = set()
        # Owner references read without decoding the object, where the store can (SQLite).
        self._owner_refs: Callable[[str, str, str], list[object] | None] | None = (
            store.owner_references if isinstance(store, AsyncSqliteStore) else None
        )

    # --- change routing --------------------------------------------------------------------

    def on_store_change(self, change: Change) -> None:
        """In-process write: route it now (called on the loop's thread).

        With a change feed, the version is remembered so that the poll does not route the
        same write a second time (that doubled the reconciles of every progressing rollout)."""
        if self.change_feed is not None:
            self._routed.add(change.rv)
        self._route(change)

    def _route(self, change: Change) -> None:
        kind, namespace, name = change.kind, change.namespace, change.name
        if kind == "Rollout":
            self.queue.add(("Rollout", namespace, name))
        elif kind == "AnalysisRun":
            self.queue.add(("AnalysisRun", namespace, name))
            raw = self.store.get("AnalysisRun", name, namespace)
            owner = ((raw or {}).get("metadata", {}).get("labels") or {}).get(ROLLOUT_LABEL)
            if owner:
                self.queue.add(("Rollout", namespace, owner))
        elif kind in ("ReplicaSet", "Pod") and self._owner_refs is not None:
            refs = self._owner_refs(kind, name, namespace)
            if refs is None:
                return
            owner = _owner_in(refs, "Rollout") if kind == "ReplicaSet" else None
            if kind == "Pod":
                rs_name = _owner_in(refs, "ReplicaSet")
                rs_refs = self._owner_refs("ReplicaSet", rs_name, namespace) if rs_name else None
                owner = _owner_in(rs_refs, "Rollout") if rs_refs else None
            if owner:
                self.queue.add(("Rollout", namespace, owner))
        elif kind in ("ReplicaSet", "Pod"):
            raw = self.store.get(kind, name, namespace)
            if raw is None:
                return
            owner = _owner(raw, "Rollout") if kind == "ReplicaSet" else None
            if kind == "Pod":
                rs_name = _owner(raw, "ReplicaSet")
                rs = self.store.get("ReplicaSet", rs_name, namespace) if rs_name else None
                owner = _owner(rs, "Rollout") if rs else None
            if owner:
                self.queue.add(("Rollout", namespace, owner))
        elif kind in _REFERENCED_KINDS:
            # A rollout waiting for a reference it lacked (InvalidSpec) can run now; or one
            # that relied on it must notice it is gone. Only appearance and deletion matter:
            # the controller's own selector and weight writes on Services must not requeue
            # every rollout in the namespace (that fan-out dominated reconcile time at scale).
            # What existed at start is known (`_learn_references`): the initial pass covers it.
            key = (kind, namespace, name)
            if change.deleted:
                self._known_refs.discard(key)
            elif key in self._known_refs:
                return
            else:
                self._known_refs.add(key)
            for ro_namespace, ro_name in self.store.names(
                "Rollout", namespace if kind != "ClusterAnalysisTemplate" else None
            ):
                self.queue.add(("Rollout", ro_namespace or "default", ro_name))

    def enqueue_all(self) -> None:
        """Queue every rollout and run, behind the keys that changes and timers queue (the
        background lane), so that a resync never delays a progressing rollout.

        Names only: decoding every body here blocked the loop for ~1.7 s per resync at
        10,000 rollouts, and was the controller's memory peak."""
        for kind in ("Rollout", "AnalysisRun"):
            for namespace, name in self.store.names(kind):
                self.queue.add((kind, namespace or "default", name), background=True)

    # --- work ------------------------------------------------------------------------------

    async def _work(self, key: Key) -> None:
        kind, namespace, name = key
        if self.leading is not None and not self.leading():
            self.queue.add_after(key, 1.0)
            return
        started = time.perf_counter()
        try:
            if kind == "Rollout":
                outcome = await self.rollouts.reconcile(namespace, name)
                if outcome.requeue_after is not None:
                    self.queue.add_after(key, outcome.requeue_after)
            else:
                delay = await self.runs.reconcile(namespace, name)
                if delay is not None:
                    self.queue.add_after(key, delay)
        except ConflictError:
            self.queue.add_after(key, 0.05)
        except StoreError as exc:
            log.warning("%s %s/%s: %s", kind, namespace, name, exc)
            self.queue.add_after(key, 1.0)
        except Exception:
            log.exception("reconcile of %s %s/%s failed", kind, namespace, name)
            self.queue.add_after(key, 2.0)
        finally:
            self.reconcile_count += 1
            self.reconcile_seconds += time.perf_counter() - started

    async def _poll(self) -> None:
        """Changes written by other processes (the CLI) reach us through the change feed."""
        feed = self.change_feed
        if feed is None:
            return
        while True:
            await asyncio.sleep(self.poll_interval)
            try:
                changes, newest = feed.changes_since(self._rv)
            except Exception:
                log.exception("polling the store failed")
                continue
            self._rv = newest
            routed = self._routed
            for change in changes:
                if change.rv not in routed:
                    self._route(change)
            # Everything at or below `newest` has been read; a write notified later has a
            # higher version (versions come from one counter, in commit order).
            self._routed = {rv for rv in routed if rv > newest}

    async def _resync(self) -> None:
        while True:
            await asyncio.sleep(self.resync_seconds)
            self.enqueue_all()

    def _learn_references(self) -> None:
        """Remember the referenced objects that exist now, so that only one created or deleted
        later requeues the rollouts of its namespace. Unseeded, the first write seen to each
        existing Service (a weight or selector change of any progressing rollout) counted as an
        appearance: with 1,000 rollouts progressing among 10,000 that was 2,000 fan-outs of
        10,000 keys each, and every idle rollout reconciled again after each."""
        for kind in _REFERENCED_KINDS:
            for namespace, name in self.store.names(kind):
                self._known_refs.add((kind, namespace, name))

    async def run(self) -> None:
        self.store.add_listener(self.on_store_change)
        if self.change_feed is not None:
            # Read before the references and keys below, so that no write by another
            # process falls between them and the first poll.
            self._rv = self.change_feed.current_rv()
        self._learn_references()
        self.enqueue_all()
        await asyncio.gather(self.queue.run(self._work), self._poll(), self._resync())


def _owner(obj: dict[str, object] | None, kind: str) -> str | None:
    if not obj:
        return None
    meta = obj.get("metadata")
    return _owner_in(meta.get("ownerReferences") if isinstance(meta, dict) else None, kind)


def _owner_in(refs: Any, kind: str) -> str | None:
    """The name in the first owner reference of `kind` among `refs` (as stored)."""
    for ref in refs or []:
        if isinstance(ref, dict) and ref.get("kind") == kind:
            return str(ref.get("name"))
    return None
