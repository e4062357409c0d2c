"""Informers: a cache per resource type kept current by list + watch, as client-go's are.

List once, then watch from the list's resourceVersion; every event updates the cache and
is passed on as a `Change`. When the server says the version is too old (410 Gone) the
informer lists again; when the stream breaks it resumes from the last version it saw; when
the API cannot be reached it retries with exponential backoff. Reads never leave the
process, so the planner sees a consistent snapshot without a round trip per object.
"""

from __future__ import annotations

import asyncio
import copy
import logging
from collections.abc import Callable
from typing import Any

from rollouts.platform.kubernetes.api import ApiError, ExpiredError, KubeApi
from rollouts.platform.kubernetes.resources import ResourceType
from rollouts.store.errors import StoreError
from rollouts.store.sqlite import Change
from rollouts.tasks import stop_task

log = logging.getLogger(__name__)

Obj = dict[str, Any]


def _key(obj: Obj, rt: ResourceType) -> tuple[str, str]:
    meta = obj.get("metadata") or {}
    return (meta.get("namespace") or "") if rt.namespaced else "", str(meta.get("name", ""))


def _parse_version(value: object) -> int | None:
    text = str(value or "")
    return int(text) if text.isdigit() else None


def _version(obj: Obj | None) -> int | None:
    return _parse_version(((obj or {}).get("metadata") or {}).get("resourceVersion"))


class Informer:
    def __init__(
        self,
        api: KubeApi,
        rt: ResourceType,
        namespace: str | None,
        on_change: Callable[[Change], None],
        *,
        label_selector: str | None = None,
        optional: bool = False,
        watch_timeout: int = 300,
        max_backoff: float = 30.0,
    ) -> None:
        self.api = api
        self.rt = rt
        self.namespace = namespace
        self.on_change = on_change
        # The server filters list and watch alike (an object that stops matching arrives as
        # DELETED), so the cache holds exactly the matching objects.
        self.label_selector = label_selector
        # Optional: a 403 on the first list counts as synced with an empty cache (listing goes on
        # in the background), so a controller allowed only its namespace still starts.
        self.optional = optional
        self.forbidden = False
        self.watch_timeout = watch_timeout
        self.max_backoff = max_backoff
        self.cache: dict[tuple[str, str], Obj] = {}
        self.synced = asyncio.Event()
        self.resource_version = ""
        self.relists = 0
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name=f"informer-{self.rt.plural}")

    async def stop(self) -> None:
        if self._task is not None:
            await stop_task(self._task)

    def _apply(self, kind: str, obj: Obj) -> None:
        key = _key(obj, self.rt)
        obj.setdefault("kind", self.rt.kind)
        obj.setdefault("apiVersion", self.rt.api_version)
        if kind == "DELETED":
            self.cache.pop(key, None)
        else:
            self.cache[key] = obj
        self.on_change(Change(self.rt.kind, key[0], key[1], _version(obj) or 0, kind == "DELETED"))

    def remember(self, kind: str, obj: Obj) -> None:
        """Put the answer of this process's own write into the cache (so the next read sees it),
        unless the cache is already as new: the answer and the watch come on different
        connections, and the watch may have delivered this write's event, and later ones (the
        kubelet's status, a user's edit, a delete), before the answer is read. Applying the
        answer then would put an older object back (or a deleted one) that no event would ever
        correct. Whether the watch has passed it is told by resourceVersion: the last one the
        stream reported, or the cached object's. They are compared as integers, as client-go's
        mutation cache does; a version that is not a number is applied as before. The cache
        gets a copy of `obj` (the caller keeps the answer), made only when it is applied."""
        written = _version(obj)
        if written is not None:
            cached = self.cache.get(_key(obj, self.rt))
            newest = max(_version(cached) or 0, _parse_version(self.resource_version) or 0)
            if written <= newest:
                return
        self._apply(kind, copy.deepcopy(obj))

    async def _list(self) -> None:
        items, version = await self.api.list(self.rt, self.namespace, self.label_selector)
        fresh = {_key(item, self.rt): item for item in items}
        gone = [key for key in self.cache if key not in fresh]
        self.cache = fresh
        self.resource_version = version
        self.forbidden = False
        for key in gone:
            self.on_change(Change(self.rt.kind, key[0], key[1], 0, True))
        for key in fresh:
            self.on_change(Change(self.rt.kind, key[0], key[1], 0, False))
        self.synced.set()

    async def _run(self) -> None:
        backoff = 0.5
        need_list = True
        while True:
            try:
                if need_list:
                    await self._list()
                    self.relists += 1
                    need_list = False
                async for kind, obj in self.api.watch(
                    self.rt,
                    self.namespace,
                    self.resource_version,
                    timeout_seconds=self.watch_timeout,
                    label_selector=self.label_selector,
                ):
                    version = str((obj.get("metadata") or {}).get("resourceVersion", ""))
                    if version:
                        self.resource_version = version
                    if kind != "BOOKMARK":
                        self._apply(kind, obj)
                backoff = 0.5  # the server ended the watch normally: resume from the last version
            except ExpiredError:
                log.info("%s: watch expired (410); listing again", self.rt.plural)
                need_list = True
            except asyncio.CancelledError:
                raise
            except ApiError as exc:
                if exc.status == 403 and self.optional and (self.forbidden or not self.synced.is_set()):
                    if not self.forbidden:  # said once: it is how such a controller runs
                        log.warning("%s: %s; going on without them (retrying in the background)", self.rt.plural, exc)
                    self.forbidden = True
                    self.synced.set()
                    backoff = self.max_backoff
                else:
                    log.warning("%s: %s; retrying in %.1fs", self.rt.plural, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)
            except (StoreError, OSError, ValueError) as exc:
                log.warning("%s: %s; retrying in %.1fs", self.rt.plural, exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)
            except Exception as exc:  # aiohttp payload errors when a stream breaks mid-way
                log.warning("%s: watch stream broke (%s); resuming", self.rt.plural, type(exc).__name__)
                await asyncio.sleep(backoff)
                backoff = min(self.max_backoff, backoff * 2)
