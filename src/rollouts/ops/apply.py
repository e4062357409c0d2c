"""Write an operation's patch of intent to a store, as the CLI, the demo and the benchmarks do.

Read the rollout, patch it, write spec then status with the version read; when the
controller wrote in between (a conflict), read again and patch again.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, Protocol

from rollouts.ops.patches import OperationError, Patch
from rollouts.store.errors import ConflictError

Obj = dict[str, Any]


class PatchableStore(Protocol):
    def get(self, kind: str, name: str, namespace: str | None = None) -> Obj | None: ...

    def update(self, obj: Obj) -> Obj: ...

    def update_status(self, obj: Obj) -> Obj: ...


class KeptChanging(Exception):
    """Every attempt conflicted with another writer."""


def apply_operation(
    store: PatchableStore,
    name: str,
    namespace: str,
    operation: Callable[[Obj], Patch],
    *,
    attempts: int = 20,
) -> Patch:
    """The patch written. Raises OperationError (missing rollout, or the operation refuses) and
    KeptChanging (still conflicting after `attempts` fresh reads)."""
    for _ in range(attempts):
        current = store.get("Rollout", name, namespace)
        if current is None:
            raise OperationError(
                f'rollout "{name}" not found in namespace "{namespace}" (see `rollouts list rollouts`)'
            )
        patch = operation(current)
        try:
            if patch.spec:
                written = store.update(patch.obj)
                patch.obj["metadata"]["resourceVersion"] = written["metadata"]["resourceVersion"]
            if patch.status:
                store.update_status(patch.obj)
            return patch
        except ConflictError:
            continue
    raise KeptChanging(f'rollout "{name}" kept changing while writing to it: try again')
