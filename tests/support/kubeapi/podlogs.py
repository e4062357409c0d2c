"""Pod logs of the Kubernetes API stand-in: what `GET …/pods/{name}/log` serves.

On a cluster the API server picks the container and the kubelet serves the log of one
container *instance* (one log file per container run). The stand-in keeps the same model:
logs are stored per containerID, so after a restart `previous=true` reads the instance named
by `status.containerStatuses[].lastState.terminated.containerID` and the current log starts
empty. Which instance a request reads, and the errors, are those of the API server
(`LogLocation`: the container choice) and of the kubelet (`validateContainerLogStatus`),
each a 400 `BadRequest` whose message is the real one, e.g.
`previous terminated container "app" in pod "web-1" not found`. A pod without
`spec.nodeName` has no kubelet yet: its log is empty, as on a real server.

A follower (`follow=true`) gets every chunk appended to the instance it follows and the end of
its stream (`None`) when that instance stops running (a status write that terminates or
replaces it) or the pod is deleted.

`PodLogs` is not locked itself: `Store` calls it under its lock, so followers' callbacks run
under that lock too and must not block (hand the chunk to a queue).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .resources import bad_request

__all__ = ["LogCallback", "LogFollower", "LogTarget", "PodLogs", "choose_container", "log_target"]

Obj = dict[str, Any]
LogCallback = Callable[[bytes | None], None]  # a chunk, or None: the stream is over

# The kubelet's wording for the two image-pull waits (other reasons are shown as they are).
_WAITING = {
    "ErrImagePull": "image can't be pulled",
    "ImagePullBackOff": "trying and failing to pull image",
}


@dataclass(frozen=True)
class LogTarget:
    container: str
    container_id: str | None  # None: the pod is not scheduled, there is nothing to read
    live: bool  # the instance is running: a follower keeps receiving what it writes


@dataclass(eq=False)
class LogFollower:
    namespace: str
    pod: str
    container: str
    container_id: str
    callback: LogCallback


def _names(containers: Any) -> list[str]:
    return [str(c.get("name", "")) for c in containers or [] if isinstance(c, dict)]


def choose_container(pod: Obj, container: str | None) -> str:
    """The container a request means (the API server's LogLocation), or 400."""
    name = pod["metadata"]["name"]
    spec = pod.get("spec") or {}
    containers, init = _names(spec.get("containers")), _names(spec.get("initContainers"))
    if not container:
        if len(containers) == 1:
            return containers[0]
        if not containers:
            raise bad_request(f"a container name must be specified for pod {name}")
        message = f"a container name must be specified for pod {name}, choose one of: [{' '.join(containers)}]"
        if init:
            message += f" or one of the init containers: [{' '.join(init)}]"
        raise bad_request(message)
    if container not in containers and container not in init:
        raise bad_request(f"container {container} is not valid for pod {name}")
    return container


def _status_of(pod: Obj, container: str) -> Obj | None:
    status = pod.get("status") or {}
    for key in ("containerStatuses", "initContainerStatuses"):
        for entry in status.get(key) or []:
            if isinstance(entry, dict) and entry.get("name") == container:
                return entry
    return None


def log_target(pod: Obj, container: str | None, previous: bool) -> LogTarget:
    """Which container instance a log request reads (LogLocation, then the kubelet's checks)."""
    chosen = choose_container(pod, container)
    if not (pod.get("spec") or {}).get("nodeName"):
        return LogTarget(chosen, None, False)
    name = pod["metadata"]["name"]
    entry = _status_of(pod, chosen)
    if entry is None:
        raise bad_request(f'container "{chosen}" in pod "{name}" is not available')
    state, last = entry.get("state") or {}, (entry.get("lastState") or {}).get("terminated") or {}
    running, terminated, waiting = state.get("running"), state.get("terminated"), state.get("waiting")
    if previous:
        if not last.get("containerID"):
            raise bad_request(f'previous terminated container "{chosen}" in pod "{name}" not found')
        return LogTarget(chosen, str(last["containerID"]), False)
    if running is not None:
        return LogTarget(chosen, str(entry.get("containerID") or ""), True)
    if terminated is not None or last:
        cid = (terminated or {}).get("containerID") or last.get("containerID")
        if not cid:
            raise bad_request(f'container "{chosen}" in pod "{name}" is terminated')
        return LogTarget(chosen, str(cid), False)
    if waiting is not None:
        reason = str(waiting.get("reason") or "")
        raise bad_request(f'container "{chosen}" in pod "{name}" is waiting to start: {_WAITING.get(reason, reason)}')
    raise bad_request(f'container "{chosen}" in pod "{name}" is waiting to start - no logs yet')


def tail(data: bytes, lines: int | None) -> bytes:
    """The last `lines` lines (all when None)."""
    if lines is None:
        return data
    return b"".join(data.splitlines(keepends=True)[-lines:]) if lines > 0 else b""


class PodLogs:
    """Log bytes per (namespace, pod, containerID) and the followers of running instances."""

    def __init__(self) -> None:
        self._data: dict[tuple[str, str, str], bytearray] = {}
        self._followers: list[LogFollower] = []

    def append(self, pod: Obj, container: str, data: str | bytes) -> None:
        """`container` wrote `data` (to its current instance: running, or the last one that ran)."""
        target = log_target(pod, choose_container(pod, container), previous=False)
        if target.container_id is None:
            raise bad_request(f"pod {pod['metadata']['name']} is not scheduled: no container of it runs")
        chunk = data.encode() if isinstance(data, str) else bytes(data)
        ns, name = pod["metadata"].get("namespace", ""), pod["metadata"]["name"]
        self._data.setdefault((ns, name, target.container_id), bytearray()).extend(chunk)
        for follower in list(self._followers):
            if (follower.namespace, follower.pod, follower.container_id) == (ns, name, target.container_id):
                self._send(follower, chunk)

    def read(self, pod: Obj, container: str | None, *, previous: bool, tail_lines: int | None) -> bytes:
        return self._snapshot(pod, log_target(pod, container, previous), tail_lines)

    def follow(
        self, pod: Obj, container: str | None, callback: LogCallback, *, previous: bool, tail_lines: int | None
    ) -> tuple[bytes, LogFollower | None]:
        """What is there now, and a follower when the instance still runs (None: the stream ends)."""
        target = log_target(pod, container, previous)
        snapshot = self._snapshot(pod, target, tail_lines)
        if not target.live or target.container_id is None:
            return snapshot, None
        meta = pod["metadata"]
        follower = LogFollower(meta.get("namespace", ""), meta["name"], target.container, target.container_id, callback)
        self._followers.append(follower)
        return snapshot, follower

    def unfollow(self, follower: LogFollower) -> None:
        if follower in self._followers:
            self._followers.remove(follower)

    def pod_changed(self, pod: Obj) -> None:
        """End the streams of instances that no longer run (the container exited or restarted)."""
        meta = pod["metadata"]
        for follower in list(self._followers):
            if (follower.namespace, follower.pod) != (meta.get("namespace", ""), meta["name"]):
                continue
            entry = _status_of(pod, follower.container) or {}
            still = (entry.get("state") or {}).get("running") is not None
            if not still or entry.get("containerID") != follower.container_id:
                self._end(follower)

    def pod_removed(self, namespace: str, name: str) -> None:
        """The pod is gone: its streams end and its logs with it."""
        for follower in list(self._followers):
            if (follower.namespace, follower.pod) == (namespace, name):
                self._end(follower)
        for key in [k for k in self._data if k[:2] == (namespace, name)]:
            del self._data[key]

    @property
    def follower_count(self) -> int:
        return len(self._followers)

    def _snapshot(self, pod: Obj, target: LogTarget, tail_lines: int | None) -> bytes:
        if target.container_id is None:
            return b""
        key = (pod["metadata"].get("namespace", ""), pod["metadata"]["name"], target.container_id)
        return tail(bytes(self._data.get(key, b"")), tail_lines)

    def _send(self, follower: LogFollower, chunk: bytes) -> None:
        try:
            follower.callback(chunk)
        except Exception:  # a follower whose loop is gone: drop it
            self.unfollow(follower)

    def _end(self, follower: LogFollower) -> None:
        self.unfollow(follower)
        with contextlib.suppress(Exception):  # a follower whose loop is gone has nothing left to end
            follower.callback(None)
