"""Store errors, shared by every store (SQLite, Kubernetes), grouped by how to recover."""

from __future__ import annotations


class StoreError(Exception):
    """Base class of store errors."""


class NotFoundError(StoreError):
    pass


class AlreadyExistsError(StoreError):
    pass


class ConflictError(StoreError):
    """The object changed since it was read: read it again and retry."""
