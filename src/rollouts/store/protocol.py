"""What the controller needs of a resource store; SqliteStore and the Kubernetes store provide it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

Obj = dict[str, Any]


class ResourceStore(Protocol):
    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...

    def list(self, kind: str, namespace: str | None = None, labels: dict[str, str] | None = None) -> list[Obj]: ...

    def create(self, obj: Obj) -> Obj: ...

    def update(self, obj: Obj) -> Obj: ...

    def update_status(self, obj: Obj) -> Obj: ...

    def delete(self, kind: str, name: str, namespace: str | None = None) -> bool: ...

    def mutate(
        self, kind: str, name: str, namespace: str | None, change: Callable[[Obj], None], *, status: bool = False
    ) -> Obj: ...

    def record_event(
        self, kind: str, name: str, namespace: str | None, type_: str, reason: str, message: str
    ) -> None: ...
