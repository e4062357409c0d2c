"""The CLI's store on Kubernetes: a small synchronous facade over the async `KubeApi`.

`rollouts --platform kubernetes …` commands call the same store methods as on the embedded
platform (`get`, `list`, `must_get`, `create`, `update`, `update_status`, `apply`, `mutate`,
`delete`, `events`, `close`), so the commands do not change: reads go to the API server
(no informer cache — a command reads once), spec writes are PUTs carrying the
resourceVersion that was read (a concurrent writer makes them fail with ConflictError, which
the CLI retries on fresh data) and status writes go through the status subresource.

Each facade owns one event loop (`asyncio.Runner`, i.e. `asyncio.run` kept open for the
command) and one API client, both closed by `close()`. Errors are the store's: NotFoundError,
ConflictError, ApiError (unreachable server, HTTP errors), so the CLI prints one line.
Events are core/v1 Events whose involvedObject is the object asked for. Pod logs come from
the pods/log subresource (`pod_log`), streamed for `--follow`.
"""

from __future__ import annotations

import asyncio
import builtins
import copy
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

import aiohttp

from rollouts.platform.kubernetes import resources
from rollouts.platform.kubernetes.api import ApiError, KubeApi, load_api_client
from rollouts.platform.kubernetes.resources import ResourceType
from rollouts.store.errors import AlreadyExistsError, ConflictError, NotFoundError
from rollouts.store.sqlite import Event

__all__ = ["KubeCliStore"]

Obj = dict[str, Any]
T = TypeVar("T")

_RETRIES = 10


def _rt(kind: str) -> ResourceType:
    try:
        return resources.BY_KIND[kind]
    except KeyError:
        raise NotFoundError(f"kind {kind} is not served on Kubernetes") from None


def _selector(labels: dict[str, str] | None) -> str | None:
    return ",".join(f"{k}={v}" for k, v in sorted(labels.items())) if labels else None


def _event_time(event: Obj) -> str:
    meta = event.get("metadata") or {}
    return str(
        event.get("lastTimestamp")
        or event.get("eventTime")
        or event.get("firstTimestamp")
        or meta.get("creationTimestamp")
        or ""
    )


def _creation_order(event: Obj) -> int:
    """The resourceVersion as a number: a tiebreaker for Events stamped in the same second."""
    version = str((event.get("metadata") or {}).get("resourceVersion") or "")
    return int(version) if version.isdigit() else 0


class KubeCliStore:
    """The subset of `SqliteStore` the CLI uses, against a Kubernetes API server."""

    def __init__(self, kubeconfig: str | None = None, context: str | None = None, namespace: str = "default") -> None:
        self.namespace = namespace
        self._runner = asyncio.Runner()
        try:
            self.api = KubeApi(self._runner.run(load_api_client(kubeconfig, context)))
        except BaseException:
            self._runner.close()
            raise

    # --- plumbing ------------------------------------------------------------------------------

    def _run(self, coro: Coroutine[Any, Any, T], what: str) -> T:
        try:
            return self._runner.run(coro)
        except (aiohttp.ClientError, TimeoutError) as exc:  # OSErrors are ApiErrors already
            raise ApiError(f"{what}: cannot reach the Kubernetes API: {exc or type(exc).__name__}") from exc

    def _ns(self, rt: ResourceType, namespace: str | None) -> str | None:
        return (namespace or self.namespace) if rt.namespaced else None

    @staticmethod
    def _typed(rt: ResourceType, obj: Obj) -> Obj:
        obj.setdefault("kind", rt.kind)
        obj.setdefault("apiVersion", rt.api_version)
        return obj

    def close(self) -> None:
        try:
            self._runner.run(self.api.close())
        finally:
            self._runner.close()

    # --- reads ---------------------------------------------------------------------------------

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        rt = resources.BY_KIND.get(kind)
        if rt is None:
            return None
        obj = self._run(self.api.get(rt, name, self._ns(rt, namespace)), f"get {kind} {name}")
        return self._typed(rt, obj) if obj is not None else None

    def must_get(self, kind: str, name: str, namespace: str | None = None) -> Obj:
        obj = self.get(kind, name, namespace)
        if obj is None:
            rt = _rt(kind)
            where = f" in namespace {self._ns(rt, namespace)}" if rt.namespaced else ""
            raise NotFoundError(f'{kind} "{name}" not found{where}')
        return obj

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        owner: tuple[str, str] | None = None,
    ) -> list[Obj]:
        """Objects of `kind` in `namespace` (None: all namespaces), by name, as the SQLite store lists;
        `owner` (kind, name) keeps those with that owner reference."""
        rt = resources.BY_KIND.get(kind)
        if rt is None:
            return []
        items, _ = self._run(
            self.api.list(rt, namespace if rt.namespaced else None, _selector(labels)), f"list {rt.plural}"
        )
        items.sort(key=lambda o: (o["metadata"]["name"], o["metadata"].get("namespace", "")))
        if owner is not None:
            items = [
                o
                for o in items
                if any(
                    r.get("kind") == owner[0] and r.get("name") == owner[1]
                    for r in o["metadata"].get("ownerReferences") or []
                )
            ]
        return items

    def events(self, kind: str, name: str, namespace: str | None = None, limit: int = 20) -> builtins.list[Event]:
        """The newest `limit` core/v1 Events about the object, oldest first."""
        rt = _rt(kind)
        ns = self._ns(rt, namespace) or "default"
        # Filtered here rather than with an involvedObject field selector: KubeApi.list takes
        # label selectors only. A command reads one namespace's events once.
        items, _ = self._run(self.api.list(resources.EVENT, ns), "list events")
        about = [
            e
            for e in items
            if (e.get("involvedObject") or {}).get("kind") == kind
            and (e.get("involvedObject") or {}).get("name") == name
        ]
        about.sort(key=lambda e: (_event_time(e), _creation_order(e)))
        return [
            Event(
                kind,
                ns,
                name,
                str(e.get("type") or "Normal"),
                str(e.get("reason") or ""),
                str(e.get("message") or ""),
                _event_time(e),
            )
            for e in about[-limit:]
        ]

    def pod_log(
        self,
        name: str,
        namespace: str | None,
        write: Callable[[bytes], None],
        *,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
        follow: bool = False,
    ) -> None:
        """Hand a container's log to `write` chunk by chunk (with `follow`, until the container
        stops or the pod is deleted: the API server ends the stream)."""
        ns = namespace or self.namespace

        async def copy_log() -> None:
            stream = self.api.pod_log(
                name, ns, container=container, previous=previous, tail_lines=tail_lines, follow=follow
            )
            async for chunk in stream:
                write(chunk)

        self._run(copy_log(), f'cannot read the log of pod "{name}" in namespace "{ns}"')

    # --- writes --------------------------------------------------------------------------------

    def create(self, obj: Obj) -> Obj:
        rt = _rt(str(obj.get("kind")))
        body = copy.deepcopy(obj)
        meta = body.setdefault("metadata", {})
        if rt.namespaced:
            meta.setdefault("namespace", self.namespace)
        else:
            meta.pop("namespace", None)
        return self._typed(rt, self._run(self.api.create(rt, body), f"create {rt.kind} {meta.get('name')}"))

    def update(self, obj: Obj) -> Obj:
        """PUT spec and metadata with the body's resourceVersion (stale: ConflictError)."""
        rt = _rt(str(obj.get("kind")))
        return self._typed(rt, self._run(self.api.replace(rt, obj), f"update {rt.kind}"))

    def update_status(self, obj: Obj) -> Obj:
        """PUT the status subresource with the body's resourceVersion (stale: ConflictError)."""
        rt = _rt(str(obj.get("kind")))
        subresource = "status" if rt.status_subresource else None
        return self._typed(rt, self._run(self.api.replace(rt, obj, subresource), f"update {rt.kind} status"))

    def apply(self, obj: Obj) -> tuple[Obj, str]:
        """Create, or replace spec/metadata of, an object: ('created'|'configured'|'unchanged')."""
        rt = _rt(str(obj.get("kind")))
        name = str(obj["metadata"]["name"])
        namespace = obj["metadata"].get("namespace")
        for _ in range(_RETRIES):
            current = self.get(rt.kind, name, namespace)
            if current is None:
                try:
                    return self.create(obj), "created"
                except AlreadyExistsError:
                    continue
            desired = copy.deepcopy(obj)
            desired.pop("status", None)
            if rt.kind == "Service" and isinstance(desired.get("spec"), dict):
                desired["spec"].setdefault("type", "ClusterIP")  # the API server's default, on update too
            desired["metadata"] = {**current["metadata"], **desired["metadata"]}
            desired["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
            try:
                stored = self.update(desired)
            except ConflictError:
                continue
            same = stored["metadata"]["resourceVersion"] == current["metadata"]["resourceVersion"]
            return stored, "unchanged" if same else "configured"
        raise ConflictError(f'{rt.kind} "{name}" kept changing while applying: try again')

    def mutate(
        self, kind: str, name: str, namespace: str | None, change: Callable[[Obj], None], *, status: bool = False
    ) -> Obj:
        """Read-modify-write with retries on conflict: `change` edits the object in place."""
        for _ in range(_RETRIES):
            current = self.must_get(kind, name, namespace)
            change(current)
            try:
                return self.update_status(current) if status else self.update(current)
            except ConflictError:
                continue
        raise ConflictError(f'{kind} "{name}" kept changing: try again')

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        rt = _rt(kind)
        return self._run(self.api.delete(rt, name, self._ns(rt, namespace)), f"delete {kind} {name}")
