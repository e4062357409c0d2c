"""What the controller needs of a resource store: reads from a local view, writes that can wait.

Reads are synchronous (the SQLite file, or the Kubernetes informers' caches) so a reconcile
sees one consistent snapshot; writes are coroutines because on Kubernetes each is a request
to the API server. `AsyncSqliteStore` adapts the embedded SQLite store; `KubeStore` is the
Kubernetes one.
"""

from __future__ import annotations

import builtins
import contextlib
from collections.abc import Callable
from typing import Any, Protocol

from rollouts.store.sqlite import Change, SqliteStore

Obj = dict[str, Any]


class ResourceStore(Protocol):
    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        owner: tuple[str, str] | None = None,
    ) -> list[Obj]:
        """Objects of `kind`, optionally only those carrying `labels` and whose controlling
        owner reference is `owner` (`("Rollout", name)`): the SQLite store answers that from
        an index, so a reconcile reads only its own rollout's objects."""
        ...

    def names(self, kind: str, namespace: str | None = None) -> builtins.list[tuple[str, str]]:
        """(namespace, name) of every object of `kind`, without reading their bodies."""
        ...

    def add_listener(self, listener: Callable[[Change], None]) -> None: ...

    async def create(self, obj: Obj) -> Obj: ...

    async def update(self, obj: Obj) -> Obj: ...

    async def update_status(self, obj: Obj) -> Obj: ...

    async def delete(self, kind: str, name: str, namespace: str | None = None) -> bool: ...

    async def mutate(
        self, kind: str, name: str, namespace: str | None, change: Callable[[Obj], None], *, status: bool = False
    ) -> Obj: ...

    async def record_event(
        self, kind: str, name: str, namespace: str | None, type_: str, reason: str, message: str
    ) -> None: ...


class AsyncSqliteStore:
    """The SQLite store behind the controller's store interface.

    SQLite writes are short local transactions, so they run inline on the event loop.
    """

    def __init__(self, store: SqliteStore) -> None:
        self.sqlite = store

    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None:
        return self.sqlite.get(kind, name, namespace)

    def list(
        self,
        kind: str,
        namespace: str | None = None,
        labels: dict[str, str] | None = None,
        *,
        owner: tuple[str, str] | None = None,
    ) -> list[Obj]:
        return self.sqlite.list(kind, namespace, labels, owner=owner)

    def names(self, kind: str, namespace: str | None = None) -> builtins.list[tuple[str, str]]:
        return self.sqlite.names(kind, namespace)

    def add_listener(self, listener: Callable[[Change], None]) -> None:
        self.sqlite.add_listener(listener)

    async def create(self, obj: Obj) -> Obj:
        return self.sqlite.create(obj)

    async def update(self, obj: Obj) -> Obj:
        return self.sqlite.update(obj)

    async def update_status(self, obj: Obj) -> Obj:
        return self.sqlite.update_status(obj)

    async def delete(self, kind: str, name: str, namespace: str | None = None) -> bool:
        return self.sqlite.delete(kind, name, namespace)

    async def mutate(
        self, kind: str, name: str, namespace: str | None, change: Callable[[Obj], None], *, status: bool = False
    ) -> Obj:
        return self.sqlite.mutate(kind, name, namespace, change, status=status)

    async def record_event(
        self, kind: str, name: str, namespace: str | None, type_: str, reason: str, message: str
    ) -> None:
        self.sqlite.record_event(kind, name, namespace, type_, reason, message)

    def deferring_events(self) -> contextlib.AbstractContextManager[None]:
        """See `SqliteStore.deferring_events`: a reconcile's events ride on its next write."""
        return self.sqlite.deferring_events()

    def owner_references(self, kind: str, name: str, namespace: str | None = None) -> builtins.list[Any] | None:
        return self.sqlite.owner_references(kind, name, namespace)
