"""Object store and API rules of the Kubernetes API stand-in (thread-safe, no I/O).

The HTTP layer (`server.py`) and tests both use `Store`. Everything a client can observe is
decided here: resourceVersions (one global counter, as etcd's revision), generation, the
status/scale subresources, optimistic concurrency, patches, finalizers, owner-reference garbage
collection, the bounded watch history and the `Status` errors of the real server.

Stored objects are immutable snapshots: a write builds a new dict, so watch events may share
them; everything handed out to callers is a deep copy.

Watch callbacks run synchronously under the store lock, in resourceVersion order: they must
not block or write to the store (hand the event to a queue or another thread). The same holds
for pod-log followers (`follow_log`); the logs themselves live in `podlogs.PodLogs`.
"""

from __future__ import annotations

import base64
import builtins
import copy
import json
import random
import re
import threading
import uuid
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from .podlogs import LogCallback, LogFollower, PodLogs
from .resources import (
    ApiError,
    ResourceRegistry,
    ResourceType,
    already_exists,
    apply_patch,
    bad_request,
    conflict,
    default_registry,
    expired,
    fields_match,
    invalid,
    labels_match,
    not_found,
    parse_field_selector,
    parse_label_selector,
    selector_to_string,
)

__all__ = ["ApiError", "DeleteResult", "Obj", "Store", "Subscription", "WatchCallback"]

Obj = dict[str, Any]
WatchCallback = Callable[[Obj], None]
_SYSTEM_META = ("uid", "creationTimestamp", "generation", "deletionTimestamp", "deletionGracePeriodSeconds")
_NAME_CHARS = "bcdfghjklmnpqrstvwxz2456789"


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _meta(obj: Mapping[str, Any]) -> Obj:
    meta = obj.get("metadata")
    return meta if isinstance(meta, dict) else {}


def _get_path(obj: Mapping[str, Any], dotted: str) -> Any:
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping):
            return None
        cur = cur.get(part)
    return cur


def _set_path(obj: Obj, dotted: str, value: Any) -> None:
    parts = dotted.split(".")
    cur = obj
    for part in parts[:-1]:
        nxt = cur.get(part)
        if not isinstance(nxt, dict):
            nxt = cur[part] = {}
        cur = nxt
    cur[parts[-1]] = value


def _spec_part(rt: ResourceType, obj: Mapping[str, Any]) -> Obj:
    """What `generation` tracks: everything but metadata (and status when it is a subresource)."""
    skip = {"metadata", "kind", "apiVersion"} | ({"status"} if rt.has_status else set())
    return {k: v for k, v in obj.items() if k not in skip}


def _without_rv(obj: Mapping[str, Any]) -> Obj:
    return {**obj, "metadata": {k: v for k, v in _meta(obj).items() if k != "resourceVersion"}}


@dataclass(frozen=True)
class _Event:
    rv: int
    type: str  # ADDED | MODIFIED | DELETED
    rt: ResourceType
    namespace: str
    obj: Obj
    old: Obj | None


@dataclass(frozen=True)
class DeleteResult:
    object: Obj
    removed: bool  # False: still there with deletionTimestamp (finalizers pending)


class Subscription:
    """One watcher: a resource, an optional namespace and selectors, and a callback."""

    def __init__(self, rt: ResourceType, namespace: str | None, labels: Any, fields: Any, callback: WatchCallback):
        self.rt, self.namespace, self.callback = rt, namespace, callback
        self._labels, self._fields = labels, fields

    def passes(self, obj: Obj | None) -> bool:
        return (
            obj is not None and labels_match(self._labels, _meta(obj).get("labels")) and fields_match(self._fields, obj)
        )

    def convert(self, ev: _Event) -> Obj | None:
        """The event this watcher sees (the cacher's rules for objects entering/leaving a selector)."""
        if ev.rt is not self.rt or (self.namespace and ev.namespace != self.namespace):
            return None
        now = self.passes(ev.obj)
        if ev.type != "MODIFIED":
            return {"type": ev.type, "object": ev.obj} if now else None
        before = self.passes(ev.old)
        if now:
            return {"type": "MODIFIED" if before else "ADDED", "object": ev.obj}
        if before and ev.old is not None:  # left the selector: DELETED with the old content, new RV
            old = {**ev.old, "metadata": {**_meta(ev.old), "resourceVersion": str(ev.rv)}}
            return {"type": "DELETED", "object": old}
        return None


class Store:
    """All objects of the stand-in, keyed by resource, namespace and name."""

    def __init__(
        self,
        registry: ResourceRegistry | None = None,
        *,
        history_limit: int = 1000,
        namespaces: tuple[str, ...] = ("default", "kube-system"),
    ) -> None:
        self.registry = registry or default_registry()
        self._lock = threading.RLock()
        self._rv = 0
        self._compacted = 0  # a watch/continue from an RV below this is 410 Expired
        self._objects: dict[tuple[str, str], dict[tuple[str, str], Obj]] = {}
        self._uids: dict[str, tuple[ResourceType, str, str]] = {}
        self._history: deque[_Event] = deque(maxlen=history_limit)
        self._subs: builtins.list[Subscription] = []
        self._logs = PodLogs()
        for ns in namespaces:
            self.create("namespaces", {"metadata": {"name": ns}})

    # -- reads -------------------------------------------------------------------------------------

    @property
    def resource_version(self) -> int:
        with self._lock:
            return self._rv

    def resolve(self, resource: str | ResourceType) -> ResourceType:
        return self.registry.resolve(resource)

    def get(self, resource: str | ResourceType, namespace: str | None, name: str) -> Obj | None:
        """A copy of the object, or None (test-side; the API answers 404)."""
        rt = self.resolve(resource)
        with self._lock:
            obj = self._bucket(rt).get(self._key(rt, namespace, name))
            return copy.deepcopy(obj) if obj is not None else None

    def read(self, resource: str | ResourceType, namespace: str | None, name: str) -> Obj:
        rt = self.resolve(resource)
        with self._lock:
            return copy.deepcopy(self._require(rt, namespace, name))

    def list(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
    ) -> builtins.list[Obj]:
        return self.list_page(resource, namespace, label_selector=label_selector, field_selector=field_selector)[0]

    def list_page(
        self,
        resource: str | ResourceType,
        namespace: str | None = None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        limit: int | None = None,
        continue_token: str | None = None,
    ) -> tuple[builtins.list[Obj], int, str | None, int | None]:
        """(items, list resourceVersion, continue token, remainingItemCount) in (namespace, name) order."""
        rt = self.resolve(resource)
        with self._lock:
            sub = self._subscription(rt, namespace, label_selector, field_selector, lambda _e: None)
            list_rv, start = self._rv, None
            if continue_token:
                list_rv, start = self._decode_continue(continue_token)
            keys = sorted(k for k in self._bucket(rt) if not namespace or k[0] == namespace)
            items = [o for k in keys if (start is None or k > start) and sub.passes(o := self._bucket(rt)[k])]
            token = remaining = None
            if limit and limit > 0 and len(items) > limit:
                last = _meta(items[limit - 1])
                raw = json.dumps({"rv": list_rv, "start": [last.get("namespace", ""), last["name"]]})
                token = base64.urlsafe_b64encode(raw.encode()).decode()
                remaining, items = len(items) - limit, items[:limit]
            return copy.deepcopy(items), list_rv, token, remaining

    # -- writes ------------------------------------------------------------------------------------

    def create(
        self, resource: str | ResourceType, body: Obj, namespace: str | None = None, *, dry_run: bool = False
    ) -> Obj:
        rt = self.resolve(resource)
        with self._lock:
            ns = namespace if namespace is not None else _meta(body).get("namespace")
            obj = validate_create(rt, body, ns if rt.namespaced else None)
            if rt.namespaced:
                if not ns:
                    raise bad_request("the namespace of the object is required")
                if self._bucket(self.resolve("namespaces")).get(("", ns)) is None:
                    raise not_found(self.resolve("namespaces"), ns)
            meta = obj["metadata"]
            if not meta.get("name"):
                for _ in range(100):
                    meta["name"] = meta["generateName"] + "".join(random.choices(_NAME_CHARS, k=5))
                    if self._key(rt, ns, meta["name"]) not in self._bucket(rt):
                        break
            if self._key(rt, ns, meta["name"]) in self._bucket(rt):
                raise already_exists(rt, meta["name"])
            meta.update(uid=str(uuid.uuid4()), creationTimestamp=_now(), generation=1)
            if dry_run:
                return obj
            return copy.deepcopy(self._commit(rt, obj, None))

    def update(
        self,
        resource: str | ResourceType,
        body: Obj,
        namespace: str | None = None,
        *,
        name: str | None = None,
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """PUT: `name` is the URL's (defaults to the body's); `subresource` None or "status"."""
        rt = self.resolve(resource)
        with self._lock:
            ns = namespace if namespace is not None else _meta(body).get("namespace")
            return copy.deepcopy(self._update(rt, ns, name or _meta(body).get("name", ""), body, subresource, dry_run))

    def patch(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        name: str,
        patch: Any,
        *,
        patch_type: str = "merge",
        subresource: str | None = None,
        dry_run: bool = False,
    ) -> Obj:
        """patch_type: "merge", "strategic" or "json" (RFC 6902); see `resources.apply_patch`."""
        rt = self.resolve(resource)
        with self._lock:
            if subresource == "scale":
                return self._write_scale(
                    rt, namespace, name, apply_patch(self._scale(rt, namespace, name), patch, patch_type, rt), dry_run
                )
            current = copy.deepcopy(self._require(rt, namespace, name))
            patched = apply_patch(current, patch, patch_type, rt)
            return copy.deepcopy(self._update(rt, namespace, name, patched, subresource, dry_run))

    def put_status(self, resource: str | ResourceType, namespace: str | None, name: str, status: Obj) -> Obj:
        """Replace `status` as a controller would (unconditional; a no-op write changes nothing)."""
        rt = self.resolve(resource)
        with self._lock:
            body = _without_rv(self._require(rt, namespace, name))
            body = {**body, "status": copy.deepcopy(status)}
            return copy.deepcopy(self._update(rt, namespace, name, body, "status" if rt.has_status else None, False))

    def patch_status(self, resource: str | ResourceType, namespace: str | None, name: str, patch: Obj) -> Obj:
        """Merge-patch `status` (unconditional)."""
        return self.patch(
            resource,
            namespace,
            name,
            {"status": patch},
            subresource="status" if self.resolve(resource).has_status else None,
        )

    def delete(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        name: str,
        *,
        propagation: str | None = None,
        preconditions: Mapping[str, Any] | None = None,
        dry_run: bool = False,
    ) -> DeleteResult:
        rt = self.resolve(resource)
        with self._lock:
            obj = self._require(rt, namespace, name)
            meta = _meta(obj)
            pre = preconditions or {}
            if pre.get("uid") and pre["uid"] != meta.get("uid"):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: UID in precondition: {pre['uid']}, UID in object meta: {meta.get('uid')}",
                )
            if pre.get("resourceVersion") and str(pre["resourceVersion"]) != meta.get("resourceVersion"):
                raise conflict(
                    rt,
                    name,
                    f"Precondition failed: ResourceVersion in precondition: "
                    f"{pre['resourceVersion']}, ResourceVersion in object meta: "
                    f"{meta.get('resourceVersion')}",
                )
            policy = propagation or rt.default_propagation
            if policy not in ("Orphan", "Background", "Foreground"):
                raise invalid(rt, name, [("propagationPolicy", "NotSupported", f'Unsupported value: "{policy}"')])
            if dry_run:
                return DeleteResult(copy.deepcopy(obj), False)
            return self._delete(rt, obj, policy)

    def delete_collection(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        propagation: str | None = None,
    ) -> builtins.list[Obj]:
        rt = self.resolve(resource)
        with self._lock:
            doomed = self.list(rt, namespace, label_selector=label_selector, field_selector=field_selector)
            out = []
            for obj in doomed:
                meta = _meta(obj)
                if self._bucket(rt).get(self._key(rt, meta.get("namespace"), meta["name"])) is not None:
                    out.append(self.delete(rt, meta.get("namespace"), meta["name"], propagation=propagation).object)
            return out

    # -- scale subresource -------------------------------------------------------------------------

    def get_scale(self, resource: str | ResourceType, namespace: str | None, name: str) -> Obj:
        rt = self.resolve(resource)
        with self._lock:
            return self._scale(rt, namespace, name)

    def update_scale(
        self, resource: str | ResourceType, namespace: str | None, name: str, scale: Obj, *, dry_run: bool = False
    ) -> Obj:
        rt = self.resolve(resource)
        with self._lock:
            return self._write_scale(rt, namespace, name, scale, dry_run)

    def _scale(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj, paths = self._require(rt, namespace, name), rt.scale
        if paths is None:
            raise not_found(rt, name)
        meta = _meta(obj)
        selector = (
            (_get_path(obj, paths.label_selector) or "")
            if paths.label_selector
            else selector_to_string(_get_path(obj, "spec.selector"))
        )
        return {
            "kind": "Scale",
            "apiVersion": "autoscaling/v1",
            "metadata": {
                k: meta[k] for k in ("name", "namespace", "uid", "resourceVersion", "creationTimestamp") if k in meta
            },
            "spec": {"replicas": _get_path(obj, paths.spec_replicas) or 0},
            "status": {"replicas": _get_path(obj, paths.status_replicas) or 0, "selector": selector},
        }

    def _write_scale(self, rt: ResourceType, namespace: str | None, name: str, scale: Any, dry_run: bool) -> Obj:
        current = self._require(rt, namespace, name)
        if rt.scale is None:
            raise not_found(rt, name)
        if not isinstance(scale, dict):
            raise bad_request("the body of the request must be a Scale object")
        if scale.get("kind", "Scale") != "Scale":
            raise bad_request(f'Scale in version "autoscaling/v1" cannot be handled as a {scale.get("kind")}')
        smeta = _meta(scale)
        if smeta.get("name", name) != name:
            raise bad_request(
                f"the name of the object ({smeta.get('name')}) does not match the name on the URL ({name})"
            )
        replicas = (scale.get("spec") or {}).get("replicas", 0)
        if not isinstance(replicas, int) or isinstance(replicas, bool) or replicas < 0:
            raise invalid(
                rt,
                name,
                [
                    (
                        "spec.replicas",
                        "Invalid",
                        f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
                    )
                ],
            )
        body = copy.deepcopy(current)
        _meta(body)["resourceVersion"] = str(smeta.get("resourceVersion") or _meta(current)["resourceVersion"])
        _set_path(body, rt.scale.spec_replicas, replicas)
        self._update(rt, namespace, name, body, None, dry_run)
        return self._scale(rt, namespace, name)

    # -- watch -------------------------------------------------------------------------------------

    def watch(
        self,
        resource: str | ResourceType,
        namespace: str | None,
        callback: WatchCallback,
        *,
        label_selector: str | None = None,
        field_selector: str | None = None,
        since: str | None = None,
    ) -> Subscription:
        """Subscribe; `since` None/""/"0" → synthetic ADDED for every current object first, else the
        history after that resourceVersion (ApiError 410 Expired when it is no longer kept)."""
        rt = self.resolve(resource)
        with self._lock:
            sub = self._subscription(rt, namespace, label_selector, field_selector, callback)
            if since in (None, "", "0"):
                for key in sorted(self._bucket(rt)):
                    obj = self._bucket(rt)[key]
                    if (not namespace or key[0] == namespace) and sub.passes(obj):
                        callback({"type": "ADDED", "object": obj})
            else:
                start = self._parse_rv(since)
                if start < self._compacted:
                    raise expired(f"too old resource version: {start} ({self._compacted})")
                for ev in self._history:
                    if ev.rv > start and (out := sub.convert(ev)) is not None:
                        callback(out)
            self._subs.append(sub)
            return sub

    def unwatch(self, sub: Subscription) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)

    def bookmark(self, sub: Subscription) -> None:
        """Send `sub` a BOOKMARK at the current resourceVersion (ordered after every event so far)."""
        with self._lock:
            meta = {"resourceVersion": str(self._rv)}
            sub.callback(
                {
                    "type": "BOOKMARK",
                    "object": {"kind": sub.rt.kind, "apiVersion": sub.rt.api_version, "metadata": meta},
                }
            )

    def expire_history(self) -> None:
        """Compact: every resourceVersion handed out so far becomes too old to watch from."""
        with self._lock:
            self._rv += 1
            self._compacted = self._rv
            self._history.clear()

    @property
    def watcher_count(self) -> int:
        with self._lock:
            return len(self._subs)

    # -- pod logs (pods/{name}/log; see podlogs.py) ---------------------------------------------------

    def append_log(self, namespace: str, pod: str, container: str, data: str | bytes) -> None:
        """What `container` writes to stdout, appended to its current instance's log (as a kubelet
        collects it). The pod must be scheduled (spec.nodeName) and the container started."""
        with self._lock:
            self._logs.append(self._require(self.resolve("pods"), namespace, pod), container, data)

    def pod_log(
        self,
        namespace: str,
        pod: str,
        container: str | None = None,
        *,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> bytes:
        """The log a GET of pods/{pod}/log answers (ApiError 404/400 as the real server)."""
        with self._lock:
            obj = self._require(self.resolve("pods"), namespace, pod)
            return self._logs.read(obj, container, previous=previous, tail_lines=tail_lines)

    def follow_log(
        self,
        namespace: str,
        pod: str,
        container: str | None,
        callback: LogCallback,
        *,
        previous: bool = False,
        tail_lines: int | None = None,
    ) -> tuple[bytes, LogFollower | None]:
        """The log so far and, while the instance runs, a follower that `callback` feeds (chunks,
        then None when the container stops or the pod is deleted); `unfollow_log` it when done."""
        with self._lock:
            obj = self._require(self.resolve("pods"), namespace, pod)
            return self._logs.follow(obj, container, callback, previous=previous, tail_lines=tail_lines)

    def unfollow_log(self, follower: LogFollower) -> None:
        with self._lock:
            self._logs.unfollow(follower)

    @property
    def log_follower_count(self) -> int:
        with self._lock:
            return self._logs.follower_count

    # -- internals ---------------------------------------------------------------------------------

    def _bucket(self, rt: ResourceType) -> dict[tuple[str, str], Obj]:
        return self._objects.setdefault(rt.key, {})

    @staticmethod
    def _key(rt: ResourceType, namespace: str | None, name: str) -> tuple[str, str]:
        return ((namespace or "") if rt.namespaced else "", name)

    def _require(self, rt: ResourceType, namespace: str | None, name: str) -> Obj:
        obj = self._bucket(rt).get(self._key(rt, namespace, name))
        if obj is None:
            raise not_found(rt, name)
        return obj

    def _subscription(
        self, rt: ResourceType, ns: str | None, labels: str | None, fields: str | None, cb: WatchCallback
    ) -> Subscription:
        try:
            return Subscription(rt, ns, parse_label_selector(labels), parse_field_selector(fields, rt), cb)
        except ValueError as exc:
            raise bad_request(str(exc)) from None

    @staticmethod
    def _parse_rv(value: str) -> int:
        try:
            rv = int(value)
        except ValueError:
            raise bad_request(f'resourceVersion: Invalid value: "{value}": invalid resource version') from None
        if rv < 0:
            raise bad_request(f'resourceVersion: Invalid value: "{value}": invalid resource version')
        return rv

    def _decode_continue(self, token: str) -> tuple[int, tuple[str, str]]:
        try:
            data = json.loads(base64.urlsafe_b64decode(token.encode()))
            rv, start = int(data["rv"]), (str(data["start"][0]), str(data["start"][1]))
        except (ValueError, KeyError, TypeError, IndexError):
            raise bad_request("continue key is not valid: incorrect encoded start resourceVersion") from None
        if rv < self._compacted:
            raise expired(
                "The provided continue parameter is too old to display a consistent list result. "
                "You can start a new list without the continue parameter."
            )
        return rv, start

    def _update(
        self, rt: ResourceType, ns: str | None, name: str, body: Any, subresource: str | None, dry_run: bool
    ) -> Obj:
        old = self._require(rt, ns, name)
        new = validate_update(rt, old, body, ns if rt.namespaced else None, name, subresource)
        if _spec_part(rt, new) != _spec_part(rt, old):
            _meta(new)["generation"] = int(_meta(old).get("generation", 1)) + 1
        if _without_rv(new) == _without_rv(old) or dry_run:
            return new if dry_run else old  # an unchanged object is not written: no new RV, no event
        if _meta(new).get("deletionTimestamp") and not _meta(new).get("finalizers"):
            return self._remove(rt, new)
        return self._commit(rt, new, old)

    def _commit(self, rt: ResourceType, obj: Obj, old: Obj | None) -> Obj:
        self._rv += 1
        meta = _meta(obj)
        meta["resourceVersion"] = str(self._rv)
        self._bucket(rt)[self._key(rt, meta.get("namespace"), meta["name"])] = obj
        self._uids[meta["uid"]] = (rt, meta.get("namespace", ""), meta["name"])
        self._emit(_Event(self._rv, "ADDED" if old is None else "MODIFIED", rt, meta.get("namespace", ""), obj, old))
        if rt.key == ("", "pods"):
            self._logs.pod_changed(obj)
        return obj

    def _remove(self, rt: ResourceType, obj: Obj) -> Obj:
        """Delete for good (emit DELETED with the final content at a new RV), then collect dependents."""
        self._rv += 1
        meta = {**_meta(obj), "resourceVersion": str(self._rv)}
        final = {**obj, "metadata": meta}
        self._bucket(rt).pop(self._key(rt, meta.get("namespace"), meta["name"]), None)
        self._uids.pop(meta.get("uid", ""), None)
        self._emit(_Event(self._rv, "DELETED", rt, meta.get("namespace", ""), final, None))
        if rt.key == ("", "pods"):
            self._logs.pod_removed(meta.get("namespace", ""), meta["name"])
        if rt.plural == "namespaces" and not rt.group:
            for other in self.registry:
                if other.namespaced:
                    for key in sorted(k for k in self._bucket(other) if k[0] == meta["name"]):
                        if (child := self._bucket(other).get(key)) is not None:
                            self._remove(other, child)
        self._collect(meta.get("uid", ""), "Background")
        return final

    def _delete(self, rt: ResourceType, obj: Obj, policy: str) -> DeleteResult:
        uid = _meta(obj).get("uid", "")
        if policy == "Orphan":
            self._collect(uid, "Orphan")
        if policy == "Foreground" and self._dependents(uid):
            obj = self._mark_deleting(rt, obj, extra_finalizer="foregroundDeletion")
            self._collect(uid, "Foreground")
            fins = [f for f in _meta(obj).get("finalizers", []) if f != "foregroundDeletion"]
            obj = self._update(
                rt,
                _meta(obj).get("namespace"),
                _meta(obj)["name"],
                {**obj, "metadata": {**_meta(obj), "finalizers": fins}},
                None,
                False,
            )
            return DeleteResult(copy.deepcopy(obj), self._uids.get(uid) is None)
        if _meta(obj).get("finalizers"):
            return DeleteResult(copy.deepcopy(self._mark_deleting(rt, obj)), False)
        return DeleteResult(copy.deepcopy(self._remove(rt, obj)), True)

    def _mark_deleting(self, rt: ResourceType, obj: Obj, extra_finalizer: str | None = None) -> Obj:
        meta = dict(_meta(obj))
        if meta.get("deletionTimestamp") and not extra_finalizer:
            return obj
        if not meta.get("deletionTimestamp"):
            meta.update(
                deletionTimestamp=_now(), deletionGracePeriodSeconds=0, generation=int(meta.get("generation", 1)) + 1
            )
        if extra_finalizer and extra_finalizer not in meta.get("finalizers", []):
            meta["finalizers"] = [*meta.get("finalizers", []), extra_finalizer]
        return self._commit(rt, {**obj, "metadata": meta}, obj)

    def _dependents(self, owner_uid: str) -> builtins.list[tuple[ResourceType, Obj]]:
        out = []
        for rt in self.registry:
            for key in sorted(self._bucket(rt)):
                obj = self._bucket(rt)[key]
                if any(ref.get("uid") == owner_uid for ref in _meta(obj).get("ownerReferences") or []):
                    out.append((rt, obj))
        return out

    def _collect(self, owner_uid: str, policy: str) -> None:
        """The garbage collector, synchronously: dependents of a deleted (or deleting) owner."""
        if not owner_uid:
            return
        for rt, found in self._dependents(owner_uid):
            # Re-read: collecting an earlier dependent may have changed or removed this one.
            dep = self._bucket(rt).get(self._key(rt, _meta(found).get("namespace"), _meta(found)["name"]))
            if dep is None:
                continue
            meta = _meta(dep)
            refs = meta.get("ownerReferences") or []
            live_owners = [r for r in refs if r.get("uid") != owner_uid and r.get("uid") in self._uids]
            if policy == "Orphan" or live_owners:
                kept = [r for r in refs if r.get("uid") != owner_uid]
                body = {**dep, "metadata": {**meta, "ownerReferences": kept}}
                if not kept:
                    body["metadata"].pop("ownerReferences")
                self._update(rt, meta.get("namespace"), meta["name"], body, None, False)
            else:
                self._delete(rt, dep, "Foreground" if policy == "Foreground" else "Background")

    def _emit(self, ev: _Event) -> None:
        if self._history.maxlen is not None and len(self._history) == self._history.maxlen:
            self._compacted = self._history[0].rv
        self._history.append(ev)
        for sub in list(self._subs):
            out = sub.convert(ev)
            if out is None:
                continue
            try:
                sub.callback(out)
            except Exception:  # a watcher whose loop is gone: drop it
                self._subs.remove(sub)


# -- validation and defaulting (what the real server's strategies do for these kinds) ---------------------

_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_LABEL_1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$")
_LABEL_1035 = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
_NAME_RULES = {  # plural → (regex, max length, description)
    "namespaces": (
        _LABEL_1123,
        63,
        "a lowercase RFC 1123 label must consist of lower case alphanumeric characters "
        "or '-', and must start and end with an alphanumeric character",
    ),
    "services": (
        _LABEL_1035,
        63,
        "a DNS-1035 label must consist of lower case alphanumeric characters or '-', "
        "start with an alphabetic character, and end with an alphanumeric character",
    ),
}
_SUBDOMAIN_RULE = (
    _SUBDOMAIN,
    253,
    "a lowercase RFC 1123 subdomain must consist of lower case alphanumeric "
    "characters, '-' or '.', and must start and end with an alphanumeric character",
)
Cause = tuple[str, str, str]
# A built-in's empty status as the real server serializes it (zero values without omitempty stay).
_INITIAL_STATUS: dict[tuple[str, str], Obj] = {
    ("", "namespaces"): {"phase": "Active"},
    ("", "pods"): {"phase": "Pending", "qosClass": "BestEffort"},
    ("", "services"): {"loadBalancer": {}},
    ("apps", "replicasets"): {"replicas": 0},
    ("apps", "deployments"): {},
    ("batch", "jobs"): {},
    ("networking.k8s.io", "ingresses"): {"loadBalancer": {}},
}


def _check_identity(rt: ResourceType, body: Any, ns: str | None, url_name: str | None) -> Obj:
    """kind/apiVersion/namespace/name of a request body against the URL (400 BadRequest)."""
    if not isinstance(body, dict):
        raise bad_request(f"the body of the request must be a {rt.kind} object")
    if not isinstance(body.get("metadata", {}), dict):
        raise bad_request("metadata must be an object")
    raw = json.dumps(body, separators=(",", ":"))[:200]
    for key, want in (("apiVersion", rt.api_version), ("kind", rt.kind)):
        got = body.get(key)
        if not got and not rt.builtin:
            raise bad_request(f"Object '{'Kind' if key == 'kind' else key}' is missing in '{raw}'")
        if got and got != want:
            what = "API version" if key == "apiVersion" else "kind"
            raise bad_request(f"the {what} in the data ({got}) does not match the expected {what} ({want})")
    meta = _meta(body)
    if rt.namespaced and meta.get("namespace") and ns and meta["namespace"] != ns:
        raise bad_request("the namespace of the provided object does not match the namespace sent on the request")
    if url_name is not None and meta.get("name") and meta["name"] != url_name:
        raise bad_request(f"the name of the object ({meta['name']}) does not match the name on the URL ({url_name})")
    obj = copy.deepcopy(body)
    obj["apiVersion"], obj["kind"] = rt.api_version, rt.kind
    obj["metadata"] = _meta(obj)
    return obj


def _name_causes(rt: ResourceType, name: str) -> list[Cause]:
    regex, limit, text = _NAME_RULES.get(rt.plural if not rt.group else "", _SUBDOMAIN_RULE)
    if regex.match(name) and len(name) <= limit:
        return []
    if len(name) > limit:
        return [("metadata.name", "Invalid", f'Invalid value: "{name}": must be no more than {limit} characters')]
    return [("metadata.name", "Invalid", f'Invalid value: "{name}": {text}')]


def _common_causes(rt: ResourceType, obj: Obj) -> list[Cause]:
    meta, causes = _meta(obj), []
    labels = meta.get("labels") or {}
    if not isinstance(labels, dict) or not all(isinstance(v, str) for v in labels.values()):
        return [("metadata.labels", "Invalid", "Invalid value: label values must be strings")]
    try:
        parse_label_selector(",".join(f"{k}={v}" for k, v in labels.items()))
    except ValueError as exc:
        causes.append(("metadata.labels", "Invalid", f"Invalid value: {exc}"))
    refs = meta.get("ownerReferences") or []
    for i, ref in enumerate(refs):
        for fld in ("apiVersion", "kind", "name", "uid"):
            if not ref.get(fld):
                causes.append(
                    (f"metadata.ownerReferences[{i}].{fld}", "Invalid", f'Invalid value: "": {fld} must not be empty')
                )
    if sum(1 for ref in refs if ref.get("controller")) > 1:
        causes.append(("metadata.ownerReferences", "Invalid", "Only one reference can have Controller set to true"))
    if rt.key in (("apps", "replicasets"), ("apps", "deployments")):
        spec = obj.get("spec") or {}
        replicas = spec.get("replicas", 0)
        if not isinstance(replicas, int) or replicas < 0:
            causes.append(
                (
                    "spec.replicas",
                    "Invalid",
                    f"Invalid value: {json.dumps(replicas)}: must be greater than or equal to 0",
                )
            )
        selector = spec.get("selector")
        if not selector or not (selector.get("matchLabels") or selector.get("matchExpressions")):
            causes.append(("spec.selector", "Required", "Required value"))
        else:
            template_labels = ((spec.get("template") or {}).get("metadata") or {}).get("labels") or {}
            if not labels_match(parse_label_selector(selector_to_string(selector)), template_labels):
                causes.append(
                    (
                        "spec.template.metadata.labels",
                        "Invalid",
                        f"Invalid value: {json.dumps(template_labels)}: `selector` does not match template `labels`",
                    )
                )
    return causes


def _secret_data(rt: ResourceType, obj: Obj) -> None:
    if rt.key != ("", "secrets"):
        return
    data = obj.get("data") or {}
    for key, value in (obj.pop("stringData", None) or {}).items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    for key, value in data.items():
        try:
            base64.b64decode(str(value), validate=True)
        except ValueError:
            raise bad_request(
                f'Secret in version "v1" cannot be handled as a Secret: illegal base64 data '
                f"at input byte 0 (data[{key}])"
            ) from None
    if data:
        obj["data"] = data


def validate_create(rt: ResourceType, body: Any, ns: str | None) -> Obj:
    """The object to store for a create (system fields still to fill), or ApiError."""
    obj = _check_identity(rt, body, ns, None)
    meta = obj["metadata"]
    if meta.get("resourceVersion"):
        raise ApiError(500, "", "resourceVersion should not be set on objects to be created")
    name = meta.get("name") or ""
    causes = (
        []
        if name or meta.get("generateName")
        else [("metadata.name", "Required", "Required value: name or generateName is required")]
    )
    if name:
        causes += _name_causes(rt, name)
    for key in ("uid", "selfLink", "managedFields", "deletionTimestamp", "deletionGracePeriodSeconds", "generation"):
        meta.pop(key, None)
    if rt.namespaced:
        meta["namespace"] = ns
    else:
        meta.pop("namespace", None)
    if rt.has_status:  # status is not the creator's to set: dropped (custom resources), reset (built-ins)
        obj.pop("status", None)
        if rt.key in _INITIAL_STATUS:
            obj["status"] = copy.deepcopy(_INITIAL_STATUS[rt.key])
    _secret_data(rt, obj)
    spec = obj.get("spec") if isinstance(obj.get("spec"), dict) else None
    if rt.key in (("apps", "replicasets"), ("apps", "deployments")) and spec is not None:
        spec.setdefault("replicas", 1)
    if rt.key == ("", "namespaces"):
        obj["spec"] = {"finalizers": ["kubernetes"]}
    elif rt.key == ("", "services") and spec is not None and spec.get("type", "ClusterIP") != "ExternalName":
        spec.setdefault("type", "ClusterIP")
        spec.setdefault("clusterIP", f"10.96.{random.randint(0, 255)}.{random.randint(1, 254)}")
        spec.setdefault("clusterIPs", [spec["clusterIP"]])
    causes += _common_causes(rt, obj)
    if causes:
        raise invalid(rt, name, causes)
    return obj


def validate_update(rt: ResourceType, old: Obj, body: Any, ns: str | None, name: str, subresource: str | None) -> Obj:
    """The object an update (PUT, or a patch's result) would store, or ApiError."""
    obj = _check_identity(rt, body, ns, name)
    meta, old_meta = obj["metadata"], _meta(old)
    rv = meta.get("resourceVersion")
    if rv not in (None, "") and str(rv) != old_meta.get("resourceVersion"):
        raise conflict(rt, name)
    if meta.get("uid") and meta["uid"] != old_meta.get("uid"):
        raise conflict(
            rt,
            name,
            f"Precondition failed: UID in precondition: {meta['uid']}, UID in object meta: {old_meta.get('uid')}",
        )
    if subresource == "status":  # only status changes; spec and (for custom resources) metadata stay
        new = copy.deepcopy(old)
        if obj.get("status") is None:
            new.pop("status", None)
        else:
            new["status"] = obj["status"]
        if rt.builtin:  # built-in status strategies keep the caller's labels and annotations
            for key in ("labels", "annotations"):
                if meta.get(key):
                    new["metadata"][key] = meta[key]
                else:
                    new["metadata"].pop(key, None)
        return new
    for key in ("name", "namespace", *_SYSTEM_META):
        if key in old_meta:
            meta[key] = old_meta[key]
        else:
            meta.pop(key, None)
    meta.pop("managedFields", None)
    meta.pop("selfLink", None)
    if rt.has_status:  # the main resource ignores status changes
        if "status" in old:
            obj["status"] = copy.deepcopy(old["status"])
        else:
            obj.pop("status", None)
    _secret_data(rt, obj)
    causes: list[Cause] = []
    spec, old_spec = obj.get("spec") or {}, old.get("spec") or {}
    if rt.key == ("", "services") and isinstance(obj.get("spec"), dict):
        for fld in ("clusterIP", "clusterIPs"):
            if fld not in spec and fld in old_spec:
                spec[fld] = old_spec[fld]
            elif fld in old_spec and spec.get(fld) != old_spec[fld]:
                causes.append(
                    (f"spec.{fld}", "Invalid", f"Invalid value: {json.dumps(spec.get(fld))}: field is immutable")
                )
    if rt.key in (("apps", "replicasets"), ("apps", "deployments"), ("batch", "jobs")) and (
        spec.get("selector") != old_spec.get("selector")
    ):
        causes.append(
            ("spec.selector", "Invalid", f"Invalid value: {json.dumps(spec.get('selector'))}: field is immutable")
        )
    if old_meta.get("deletionTimestamp"):
        added = [f for f in meta.get("finalizers") or [] if f not in (old_meta.get("finalizers") or [])]
        if added:
            causes.append(
                (
                    "metadata.finalizers",
                    "Forbidden",
                    f"Forbidden: no new finalizers can be added if the object is being deleted, "
                    f"found new finalizers {json.dumps(added)}",
                )
            )
    causes += _common_causes(rt, obj)
    if causes:
        raise invalid(rt, name, causes)
    return obj
