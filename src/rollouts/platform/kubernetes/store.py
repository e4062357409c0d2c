"""The controller's store on Kubernetes: reads from informer caches, writes through the API.

It offers the same calls as the SQLite store so the controller cannot tell them apart:
`get`/`list` answer from the watch caches (no round trip per reconcile), writes go to the
API server with the resourceVersion that was read, so a concurrent writer produces a
ConflictError and the reconcile runs again on fresh data. Status goes through the status
subresource.

Scope. With a `namespace` every namespaced informer lists and watches that namespace only
(ClusterAnalysisTemplates stay cluster-wide; if listing them is forbidden, as with RBAC for one
namespace only, the store starts without them). Rollouts and AnalysisRuns are also selected by
the controller's instance id (`rollouts.model.scope`): the API server filters them, so the
caches hold exactly this controller's objects and another controller's are never read.

Events are recorded as client-go's recorder does: the same event (object, type, reason and
message) again within `event_window` seconds of its last occurrence increments `count` and
`lastTimestamp` of the Event already written (a patch with its resourceVersion) instead of
writing a new object, so a condition repeated every reconcile costs one Event, not thousands.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
import logging
import time
import weakref
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from rollouts.model.scope import instance_selector, owned_by
from rollouts.platform.kubernetes import resources
from rollouts.platform.kubernetes.api import KubeApi
from rollouts.platform.kubernetes.informer import Informer
from rollouts.platform.kubernetes.resources import ResourceType
from rollouts.store.errors import ConflictError, NotFoundError, StoreError
from rollouts.store.sqlite import Change, owner_key

Obj = dict[str, Any]

log = logging.getLogger(__name__)

# The kinds a controller instance owns (Argo's instance-id informers; Experiments are not served).
INSTANCE_SCOPED_KINDS = frozenset({resources.ROLLOUT.kind, resources.ANALYSIS_RUN.kind})
EVENT_WINDOW_SECONDS = 600.0  # client-go's aggregation interval
_EVENT_CACHE_SIZE = 4096  # client-go's event cache (an LRU)
EventKey = tuple[str, str, str, str, str, str, str]


def _rt(kind: str) -> ResourceType:
    try:
        return resources.BY_KIND[kind]
    except KeyError:
        raise NotFoundError(f"kind {kind} is not served by the Kubernetes store") from None


class KubeStore:
    def __init__(
        self,
        api: KubeApi,
        namespace: str | None = None,
        *,
        instance_id: str | None = None,
        component: str = "rollouts-controller",
        event_window: float = EVENT_WINDOW_SECONDS,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.api = api
        self.namespace = namespace
        self.instance_id = instance_id or None
        self.component = component
        self.event_window = event_window
        self.clock = clock
        self._listeners: list[Callable[[Change], None]] = []
        self.informers = {
            rt.kind: Informer(
                api,
                rt,
                namespace if rt.namespaced else None,
                self._changed,
                label_selector=instance_selector(self.instance_id) if rt.kind in INSTANCE_SCOPED_KINDS else None,
                # Cluster-scoped: a controller given RBAC for its namespace only runs without them.
                optional=not rt.namespaced,
            )
            for rt in resources.WATCHED
        }
        # Events written, by what makes two events the same: (last seen on `clock`, the Event).
        self._events: OrderedDict[EventKey, tuple[float, Obj]] = OrderedDict()
        # One writer at a time per event, so that concurrent repeats count on one Event (each
        # would otherwise conflict with the others); a lock lives while someone holds or awaits it.
        self._event_locks: weakref.WeakValueDictionary[EventKey, asyncio.Lock] = weakref.WeakValueDictionary()

    # --- lifecycle ---------------------------------------------------------------------------

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        self._listeners.append(listener)

    def _changed(self, change: Change) -> None:
        for listener in list(self._listeners):
            listener(change)

    async def start(self, timeout: float = 30.0) -> None:
        for informer in self.informers.values():
            informer.start()
        async with asyncio.timeout(timeout):
            await asyncio.gather(*(i.synced.wait() for i in self.informers.values()))

    async def stop(self) -> None:
        await asyncio.gather(*(i.stop() for i in self.informers.values()))

    # --- reads (cache) -------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        informer = self.informers.get(kind)
        if informer is None:
            return None
        ns = (namespace or "default") if informer.rt.namespaced else ""
        obj = informer.cache.get((ns, name))
        return copy.deepcopy(obj) if obj is not None else None

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        owner: tuple[str, str] | None = None,
    ) -> list[Obj]:
        informer = self.informers.get(kind)
        if informer is None:
            return []
        wanted_owner = f"{owner[0]}/{owner[1]}" if owner is not None else None
        found = []
        for (ns, _name), obj in sorted(informer.cache.items()):
            if namespace is not None and informer.rt.namespaced and ns != namespace:
                continue
            obj_labels = (obj.get("metadata") or {}).get("labels") or {}
            if labels and any(obj_labels.get(k) != v for k, v in labels.items()):
                continue
            if wanted_owner is not None and owner_key(obj) != wanted_owner:
                continue
            found.append(copy.deepcopy(obj))
        return found

    def names(self, kind: str, namespace: str | None = None) -> builtins.list[tuple[str, str]]:
        informer = self.informers.get(kind)
        if informer is None:
            return []
        return [
            (ns, name)
            for ns, name in sorted(informer.cache)
            if namespace is None or not informer.rt.namespaced or ns == namespace
        ]

    # --- writes (API) --------------------------------------------------------------------------

    def _remember(self, obj: Obj) -> Obj:
        """Put what the API returned into the cache at once, so the next read sees our write
        (and drop an object that no longer matches the instance selector, as its watch will);
        not when the watch has already brought this version or a later one (`Informer.remember`)."""
        kind = str(obj.get("kind", ""))
        informer = self.informers.get(kind)
        if informer is not None:
            labels = (obj.get("metadata") or {}).get("labels")
            ours = kind not in INSTANCE_SCOPED_KINDS or owned_by(labels, self.instance_id)
            informer.remember("MODIFIED" if ours else "DELETED", obj)
        return obj

    async def create(self, obj: Obj) -> Obj:
        rt = _rt(str(obj.get("kind")))
        body = copy.deepcopy(obj)
        if rt.namespaced:
            body.setdefault("metadata", {}).setdefault("namespace", self.namespace or "default")
        return self._remember(await self.api.create(rt, body))

    async def update(self, obj: Obj) -> Obj:
        return self._remember(await self.api.replace(_rt(str(obj.get("kind"))), obj))

    async def update_status(self, obj: Obj) -> Obj:
        rt = _rt(str(obj.get("kind")))
        return self._remember(await self.api.replace(rt, obj, "status" if rt.status_subresource else None))

    async def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        rt = _rt(kind)
        return await self.api.delete(rt, name, (namespace or "default") if rt.namespaced else None)

    async def mutate(
        self, kind: str, name: str, namespace: str | None, change: Callable[[Obj], None], *, status: bool = False
    ) -> Obj:
        """Read-modify-write with the resourceVersion read; on a conflict read from the API and retry."""
        rt = _rt(kind)
        ns = (namespace or "default") if rt.namespaced else None
        current = self.get(kind, name, namespace)
        for _ in range(5):
            if current is None:
                raise NotFoundError(f'{kind} "{name}" not found')
            change(current)
            try:
                return await (self.update_status(current) if status else self.update(current))
            except ConflictError:
                current = await self.api.get(rt, name, ns)
                if current is not None:
                    current.setdefault("kind", kind)
                    current.setdefault("apiVersion", rt.api_version)
        raise ConflictError(f'{kind} "{name}" kept changing: try again')

    async def record_event(
        self, kind: str, name: str, namespace: str | None, type_: str, reason: str, message: str
    ) -> None:
        involved = self.get(kind, name, namespace) or {"metadata": {"name": name}}
        ns = namespace or "default"
        uid = str((involved.get("metadata") or {}).get("uid", ""))
        key: EventKey = (ns, kind, name, uid, type_, reason, message)
        lock = self._event_locks.get(key)
        if lock is None:
            lock = self._event_locks[key] = asyncio.Lock()
        async with lock:
            await self._record(key, involved)

    async def _record(self, key: EventKey, involved: Obj) -> None:
        ns, kind, name, uid, type_, reason, message = key
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        seen = self._events.get(key)
        if seen is not None and self.clock() - seen[0] < self.event_window:
            bumped = await self._bump(seen[1], now)
            if bumped is not None:
                self._seen(key, bumped)
                return
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "argoproj.io/v1alpha1"),
                "kind": kind,
                "name": name,
                "namespace": ns,
                "uid": uid,
                "resourceVersion": (involved.get("metadata") or {}).get("resourceVersion", ""),
            },
            "reason": reason,
            "message": message,
            "type": type_,
            "source": {"component": self.component},
            "firstTimestamp": now,
            "lastTimestamp": now,
            "count": 1,
        }
        self._seen(key, await self.api.create(resources.EVENT, event))

    def _seen(self, key: EventKey, event: Obj) -> None:
        self._events[key] = (self.clock(), event)
        self._events.move_to_end(key)
        while len(self._events) > _EVENT_CACHE_SIZE:
            self._events.popitem(last=False)

    async def _bump(self, event: Obj, now: str) -> Obj | None:
        """One more occurrence of `event`: count + 1 and lastTimestamp, as a merge patch that
        carries the resourceVersion last seen (the server refuses it if the Event changed since:
        read it again and retry). A patch, as client-go's recorder sends (RBAC grants events
        create and patch only). None when the Event is gone (expired, deleted) or cannot be
        written: the caller writes a new one."""
        meta = event.get("metadata") or {}
        name, namespace = str(meta.get("name", "")), meta.get("namespace")
        current: Obj | None = event
        for _ in range(3):
            if current is None:
                return None
            patch = {
                "metadata": {"resourceVersion": (current.get("metadata") or {}).get("resourceVersion", "")},
                "count": int(current.get("count") or 1) + 1,
                "lastTimestamp": now,
            }
            try:
                try:
                    return await self.api.patch(resources.EVENT, name, namespace, patch)
                except ConflictError:
                    current = await self.api.get(resources.EVENT, name, namespace)
            except NotFoundError:
                return None
            except StoreError as exc:
                log.debug("event %s: cannot update (%s); writing a new one", name, exc)
                return None
        return None


Writer = Callable[..., Awaitable[Obj]]
