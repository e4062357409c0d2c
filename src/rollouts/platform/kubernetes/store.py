"""The controller's store on Kubernetes: reads from informer caches, writes through the API.

It offers the same calls as the SQLite store so the controller cannot tell them apart:
`get`/`list` answer from the watch caches (no round trip per reconcile), writes go to the
API server with the resourceVersion that was read, so a concurrent writer produces a
ConflictError and the reconcile runs again on fresh data. Status goes through the status
subresource.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any

from rollouts.platform.kubernetes import resources
from rollouts.platform.kubernetes.api import KubeApi
from rollouts.platform.kubernetes.informer import Informer
from rollouts.platform.kubernetes.resources import ResourceType
from rollouts.store.errors import ConflictError, NotFoundError
from rollouts.store.sqlite import Change, owner_key

Obj = dict[str, Any]


def _rt(kind: str) -> ResourceType:
    try:
        return resources.BY_KIND[kind]
    except KeyError:
        raise NotFoundError(f"kind {kind} is not served by the Kubernetes store") from None


class KubeStore:
    def __init__(self, api: KubeApi, namespace: str | None = None, *, component: str = "rollouts-controller") -> None:
        self.api = api
        self.namespace = namespace
        self.component = component
        self._listeners: list[Callable[[Change], None]] = []
        self.informers = {
            rt.kind: Informer(api, rt, namespace if rt.namespaced else None, self._changed) for rt in resources.WATCHED
        }

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
        """Put what the API returned into the cache at once, so the next read sees our write."""
        informer = self.informers.get(str(obj.get("kind", "")))
        if informer is not None:
            informer._apply("MODIFIED", copy.deepcopy(obj))
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
        now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        ns = namespace or "default"
        event = {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"generateName": f"{name}.", "namespace": ns},
            "involvedObject": {
                "apiVersion": involved.get("apiVersion", "argoproj.io/v1alpha1"),
                "kind": kind,
                "name": name,
                "namespace": ns,
                "uid": (involved.get("metadata") or {}).get("uid", ""),
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
        await self.api.create(resources.EVENT, event)


Writer = Callable[..., Awaitable[Obj]]
