"""HTTP layer of the Kubernetes API stand-in: a real HTTP/1.1 server on a free loopback port.

`KubeAPIServer` runs asyncio streams + httptools in a background thread with its own event
loop, so sync and async tests (and any client, in any thread or loop) can use it. Clients reach
it through a kubeconfig (`write_kubeconfig`) exactly as they would reach a cluster: plain http,
a bearer token (checked: a request without it gets 401, except `/version` and the health
endpoints, as on a real cluster).

    with KubeAPIServer() as api:                  # or api.start() ... api.stop()
        path = api.write_kubeconfig(tmp_path / "kubeconfig")
        ...                                       # the code under test loads `path`
        api.store.put_status("replicasets", "default", "web-1", {"replicas": 1})
        api.fail_next("PUT", r"/rollouts/web$", 409)
        api.break_watches()
        release = api.hold_next("POST", r"/replicasets$")  # applied now, answered on release.set()
        assert ("GET", "/version", {}) in api.requests

URL layout: `/api/v1/...` (core) and `/apis/{group}/{version}/...`, then
`namespaces/{ns}/{plural}[/{name}[/status|/scale]]`, `{plural}` (all namespaces, list/watch only)
or `{plural}/{name}[/{sub}]` (cluster-scoped). Watches are chunked streams of newline-delimited
JSON events; the stream ends after `timeoutSeconds` (terminating chunk, then the connection
closes), on `break_watches` (abruptly, or gracefully), or when the server stops.

`GET …/pods/{name}/log` (`container`, `previous`, `follow`, `tailLines`) answers text/plain from
the logs the test or `KubeletSim` stored (`store.append_log`; see podlogs.py for the errors);
with `follow=true` it is a chunked stream that ends when the container stops, the pod is
deleted, the client goes away or the server stops (`open_log_streams` counts them).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import http
import json
import logging
import re
import threading
import time
from collections import deque
from collections.abc import Coroutine
from dataclasses import dataclass, field
from pathlib import Path
from types import TracebackType
from typing import Any, NamedTuple, Self
from urllib.parse import parse_qs, unquote, urlsplit

import httptools
import yaml

from .podlogs import LogFollower
from .resources import (
    PATCH_TYPES,
    ApiError,
    ResourceRegistry,
    ResourceType,
    bad_request,
    conflict,
    method_not_allowed,
    unsupported_media_type,
)
from .storage import Obj, Store, Subscription

__all__ = ["DEFAULT_TOKEN", "KubeAPIServer", "RequestRecord"]

log = logging.getLogger(__name__)
DEFAULT_TOKEN = "rollouts-test-token"
SERVER_VERSION = {
    "major": "1",
    "minor": "31",
    "gitVersion": "v1.31.0",
    "gitCommit": "0000000000000000000000000000000000000000",
    "gitTreeState": "clean",
    "buildDate": "2024-08-13T00:00:00Z",
    "goVersion": "go1.22.5",
    "compiler": "gc",
    "platform": "linux/amd64",
}
_PUBLIC_PATHS = frozenset({"/version", "/healthz", "/livez", "/readyz"})
_TRUE = frozenset({"1", "t", "T", "true", "TRUE", "True"})
_FALSE = frozenset({"0", "f", "F", "false", "FALSE", "False"})
_REASONS = {
    400: "BadRequest",
    401: "Unauthorized",
    403: "Forbidden",
    404: "NotFound",
    405: "MethodNotAllowed",
    409: "Conflict",
    410: "Expired",
    422: "Invalid",
    429: "TooManyRequests",
    500: "InternalError",
    503: "ServiceUnavailable",
    504: "Timeout",
}
_BREAK, _END = object(), object()  # watch-stream signals: abort the connection / end the stream


class RequestRecord(NamedTuple):
    """One request as the server saw it (`query`: last value of each parameter)."""

    method: str
    path: str
    query: dict[str, str]


@dataclass
class _Fault:
    method: str
    pattern: re.Pattern[str]
    status: int
    remaining: int
    message: str | None
    retry_after: int | None
    watch: bool | None


@dataclass
class _Hold:
    method: str
    pattern: re.Pattern[str]
    remaining: int
    release: threading.Event


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes
    keep_alive: bool


@dataclass
class _Route:
    rt: ResourceType
    namespace: str | None
    name: str | None
    sub: str | None


@dataclass(eq=False)
class _OpenWatch:
    rt: ResourceType
    namespace: str | None
    queue: asyncio.Queue[Any]
    closed: asyncio.Event = field(default_factory=asyncio.Event)


class _Parser:
    """httptools callbacks collecting complete requests."""

    def __init__(self) -> None:
        self.parser = httptools.HttpRequestParser(self)
        self.ready: deque[_Request] = deque()
        self._url, self._body = b"", bytearray()
        self._headers: dict[str, str] = {}

    def on_message_begin(self) -> None:
        self._url, self._headers, self._body = b"", {}, bytearray()

    def on_url(self, url: bytes) -> None:
        self._url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self._headers[name.decode("latin-1").lower()] = value.decode("latin-1")

    def on_body(self, body: bytes) -> None:
        self._body += body

    def on_message_complete(self) -> None:
        parts = urlsplit(self._url.decode("latin-1"))
        query = {k: v[-1] for k, v in parse_qs(parts.query, keep_blank_values=True).items()}
        method = self.parser.get_method().decode()
        path = unquote(parts.path) or "/"
        self.ready.append(
            _Request(method, path, query, self._headers, bytes(self._body), self.parser.should_keep_alive())
        )


class KubeAPIServer:
    """A Kubernetes API server stand-in (see the module docstring)."""

    def __init__(
        self,
        *,
        token: str = DEFAULT_TOKEN,
        require_auth: bool = True,
        history_limit: int = 1000,
        bookmark_interval: float = 1.0,
        request_log_limit: int = 10_000,
        registry: ResourceRegistry | None = None,
        namespaces: tuple[str, ...] = ("default", "kube-system"),
        host: str = "127.0.0.1",
    ) -> None:
        self.store = Store(registry, history_limit=history_limit, namespaces=namespaces)
        self.registry = self.store.registry
        self.token, self.require_auth, self.host = token, require_auth, host
        self.bookmark_interval = bookmark_interval
        self.port = 0
        self._requests: deque[RequestRecord] = deque(maxlen=request_log_limit)
        self._faults: list[_Fault] = []
        self._holds: list[_Hold] = []
        self._lock = threading.Lock()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.Server | None = None
        self._conns: set[asyncio.StreamWriter] = set()
        self._watches: set[_OpenWatch] = set()
        self._log_streams: set[asyncio.Queue[Any]] = set()
        # Bugs of the stand-in itself (answered as 500); the kube_api fixture fails the test on them.
        self.internal_errors: list[BaseException] = []

    # -- lifecycle ---------------------------------------------------------------------------------

    @property
    def url(self) -> str:
        if not self.port:
            raise RuntimeError("the server is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._thread is not None:
            return self
        loop = self._loop = asyncio.new_event_loop()
        started: concurrent.futures.Future[None] = concurrent.futures.Future()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(asyncio.start_server(self._connection, self.host, 0))
                self.port = self._server.sockets[0].getsockname()[1]
            except BaseException as exc:
                started.set_exception(exc)
                return
            started.set_result(None)
            loop.run_forever()
            pending = asyncio.all_tasks(loop)
            for task in pending:
                task.cancel()
            loop.run_until_complete(asyncio.gather(*pending, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.close()

        self._thread = threading.Thread(target=run, name=f"kubeapi-{id(self):x}", daemon=True)
        self._thread.start()
        started.result(timeout=10)
        return self

    def stop(self) -> None:
        if self._thread is None or self._loop is None:
            return
        with contextlib.suppress(concurrent.futures.TimeoutError, RuntimeError):
            self.submit(self._shutdown()).result(timeout=10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(timeout=10)
        self._thread = None

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
        for writer in list(self._conns):
            writer.transport.abort()
        with self._lock:
            watches = list(self._watches)
            streams = list(self._log_streams)
            holds, self._holds = self._holds, []
        for hold in holds:
            hold.release.set()
        for watch in watches:
            watch.queue.put_nowait(_BREAK)
        for stream in streams:
            stream.put_nowait(_BREAK)
        if self._server is not None:
            await self._server.wait_closed()

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def submit(self, coro: Coroutine[Any, Any, Any]) -> concurrent.futures.Future[Any]:
        """Run `coro` on the server's loop (helpers such as KubeletSim live there)."""
        if self._loop is None:
            coro.close()
            raise RuntimeError("the server is not started")
        return asyncio.run_coroutine_threadsafe(coro, self._loop)

    # -- client configuration ----------------------------------------------------------------------

    def kubeconfig(self, namespace: str = "default") -> dict[str, Any]:
        name = "rollouts-kubeapi"
        return {
            "apiVersion": "v1",
            "kind": "Config",
            "clusters": [{"name": name, "cluster": {"server": self.url}}],
            "users": [{"name": "rollouts-test", "user": {"token": self.token}}],
            "contexts": [{"name": name, "context": {"cluster": name, "user": "rollouts-test", "namespace": namespace}}],
            "current-context": name,
            "preferences": {},
        }

    def write_kubeconfig(self, path: str | Path, namespace: str = "default") -> Path:
        """Write a kubeconfig for this server (plain http, a token user) and return its path."""
        target = Path(path)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(yaml.safe_dump(self.kubeconfig(namespace), sort_keys=False))
        return target

    # -- test hooks --------------------------------------------------------------------------------

    @property
    def requests(self) -> list[RequestRecord]:
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(
        self,
        method: str,
        path_regex: str,
        status: int,
        times: int = 1,
        *,
        message: str | None = None,
        retry_after: int | None = None,
        watch: bool | None = None,
    ) -> None:
        """Answer the next `times` requests whose method is `method` ("*": any) and whose path
        matches `path_regex` (re.search) with a Status of `status`; `watch` True/False limits it
        to watch / non-watch requests. 429 and 503 carry Retry-After (default 1 s)."""
        if retry_after is None and status in (429, 503):
            retry_after = 1
        fault = _Fault(method.upper(), re.compile(path_regex), status, times, message, retry_after, watch)
        with self._lock:
            self._faults.append(fault)

    def hold_next(self, method: str, path_regex: str, times: int = 1) -> threading.Event:
        """Apply the next `times` non-watch requests whose method is `method` ("*": any) and whose
        path matches `path_regex` at once (the write is stored and its watch events go out), but
        withhold their responses until the returned Event is set (or the server stops): a client
        then sees the watch events of its own write, and what others wrote next, before the
        write's answer, as a slow network or a busy client can on a real cluster."""
        hold = _Hold(method.upper(), re.compile(path_regex), times, threading.Event())
        with self._lock:
            self._holds.append(hold)
        return hold.release

    def _take_hold(self, req: _Request) -> threading.Event | None:
        if req.query.get("watch", "") in _TRUE:
            return None
        with self._lock:
            for hold in self._holds:
                # Used-up holds stay listed, so that stopping the server releases every one.
                if hold.remaining > 0 and hold.method in ("*", req.method) and hold.pattern.search(req.path):
                    hold.remaining -= 1
                    return hold.release
        return None

    async def _await_release(self, release: threading.Event) -> None:
        while not release.is_set():
            await asyncio.sleep(0.01)

    def expire_history(self) -> None:
        """Compact the watch history: watching from any resourceVersion seen so far → 410 Expired."""
        self.store.expire_history()

    def break_watches(self, *, graceful: bool = False, timeout: float = 5.0) -> int:
        """Close every open watch stream and return how many there were. Abrupt by default (the
        connection is reset mid-stream, as when an API server dies); graceful: the stream ends
        with its terminating chunk, as after timeoutSeconds."""
        if self._loop is None:
            return 0

        async def close_all() -> int:
            with self._lock:
                watches = list(self._watches)
            for watch in watches:
                watch.queue.put_nowait(_END if graceful else _BREAK)
            for watch in watches:
                await watch.closed.wait()
            return len(watches)

        count: int = self.submit(close_all()).result(timeout=timeout)
        return count

    def open_watches(self, resource: str | None = None) -> int:
        """Number of watch streams open now (of one resource type when given)."""
        rt = self.registry.resolve(resource) if resource else None
        with self._lock:
            return sum(1 for w in self._watches if rt is None or w.rt is rt)

    def open_log_streams(self) -> int:
        """Number of `follow=true` pod-log streams open now."""
        with self._lock:
            return len(self._log_streams)

    def wait_for_log_streams(self, count: int = 1, timeout: float = 5.0) -> None:
        """Block until exactly `count` pod-log streams are open (0: until they all ended)."""
        deadline = time.monotonic() + timeout
        while self.open_log_streams() != count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_log_streams()} log streams open, wanted {count}")
            time.sleep(0.005)

    def wait_for_watches(self, count: int = 1, resource: str | None = None, timeout: float = 5.0) -> None:
        """Block until at least `count` watches are open (for threads; see `async_wait_for_watches`)."""
        deadline = time.monotonic() + timeout
        while self.open_watches(resource) < count:
            if time.monotonic() > deadline:
                raise TimeoutError(f"{self.open_watches(resource)} watches open, wanted {count}")
            time.sleep(0.005)

    async def async_wait_for_watches(self, count: int = 1, resource: str | None = None, timeout: float = 5.0) -> None:
        """`wait_for_watches` for coroutines running on another loop (the test's)."""
        async with asyncio.timeout(timeout):
            while self.open_watches(resource) < count:
                await asyncio.sleep(0.005)

    def _take_fault(self, req: _Request) -> _Fault | None:
        is_watch = req.query.get("watch", "") in _TRUE
        with self._lock:
            for fault in self._faults:
                if (
                    fault.method in ("*", req.method)
                    and fault.pattern.search(req.path)
                    and (fault.watch is None or fault.watch == is_watch)
                ):
                    fault.remaining -= 1
                    if fault.remaining <= 0:
                        self._faults.remove(fault)
                    return fault
        return None

    # -- HTTP --------------------------------------------------------------------------------------

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._conns.add(writer)
        proto = _Parser()
        try:
            while True:
                while not proto.ready:
                    data = await reader.read(65536)
                    if not data:
                        return
                    proto.parser.feed_data(data)
                if not await self._serve(proto.ready.popleft(), reader, writer):
                    return
        except httptools.HttpParserError:
            await self._respond(writer, 400, bad_request("malformed HTTP request").to_status(), keep_alive=False)
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        finally:
            self._conns.discard(writer)
            writer.close()

    async def _respond(
        self,
        writer: asyncio.StreamWriter,
        code: int,
        body: Obj | str | bytes,
        *,
        keep_alive: bool = True,
        headers: dict[str, str] | None = None,
    ) -> None:
        text = isinstance(body, str | bytes)
        if isinstance(body, bytes):
            payload = body
        else:
            payload = body.encode() if isinstance(body, str) else json.dumps(body, separators=(",", ":")).encode()
        head = [
            f"HTTP/1.1 {code} {http.HTTPStatus(code).phrase}",
            f"Content-Type: {'text/plain; charset=utf-8' if text else 'application/json'}",
            "Cache-Control: no-cache, private",
            f"Content-Length: {len(payload)}",
        ]
        head += [f"{k}: {v}" for k, v in (headers or {}).items()]
        if not keep_alive:
            head.append("Connection: close")
        writer.write(("\r\n".join(head) + "\r\n\r\n").encode() + payload)
        await writer.drain()

    async def _serve(self, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> bool:
        with self._lock:
            self._requests.append(RequestRecord(req.method, req.path, dict(req.query)))
        keep = req.keep_alive
        try:
            if fault := self._take_fault(req):
                raise self._fault_error(fault, req)
            path = req.path.rstrip("/") or "/"
            authorized = req.headers.get("authorization") == f"Bearer {self.token}"
            if self.require_auth and path not in _PUBLIC_PATHS and not authorized:
                raise ApiError(401, "Unauthorized", "Unauthorized")
            if path in ("/healthz", "/livez", "/readyz"):
                await self._respond(writer, 200, "ok", keep_alive=keep)
                return keep
            if (doc := self._discovery(path)) is not None:
                await self._respond(writer, 200, doc, keep_alive=keep)
                return keep
            route = self._route(path)
            if route.sub == "log":
                if req.method != "GET":
                    raise method_not_allowed()
                return await self._pod_log(route, req, reader, writer)
            if req.method == "GET" and route.name is None and req.query.get("watch", "") in _TRUE:
                return await self._watch(route, req, reader, writer)
            release = self._take_hold(req)
            try:
                code, body = self._resource(route, req)
            finally:
                if release is not None:
                    await self._await_release(release)
            await self._respond(writer, code, body, keep_alive=keep)
        except ApiError as err:
            await self._respond(writer, err.code, err.to_status(), keep_alive=keep, headers=err.headers)
        except (ConnectionError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug in the stand-in: answer 500 and say so in the log
            log.exception("kubeapi stand-in failed on %s %s", req.method, req.path)
            self.internal_errors.append(exc)
            failure = ApiError(500, "InternalError", f"Internal error occurred: {exc!r}")
            await self._respond(writer, 500, failure.to_status(), keep_alive=keep)
        return keep

    def _fault_error(self, fault: _Fault, req: _Request) -> ApiError:
        headers = {"Retry-After": str(fault.retry_after)} if fault.retry_after else {}
        details: dict[str, Any] = {"retryAfterSeconds": fault.retry_after} if fault.retry_after else {}
        message = fault.message
        if message is None and fault.status == 409:  # shaped like a real optimistic-concurrency conflict
            with contextlib.suppress(ApiError):
                route = self._route(req.path.rstrip("/"))
                shaped = conflict(route.rt, route.name or "")
                message = shaped.message
                details.update(shaped.details)
        if message is None:
            message = {429: "Too many requests, please try again later."}.get(
                fault.status, f"injected failure {fault.status} (fail_next)"
            )
        return ApiError(fault.status, _REASONS.get(fault.status, ""), message, details, headers)

    # -- discovery and routing ---------------------------------------------------------------------

    def _discovery(self, path: str) -> Obj | None:
        groups = self.registry.group_versions()
        if path == "/version":
            return dict(SERVER_VERSION)
        if path == "/api":
            cidr = [{"clientCIDR": "0.0.0.0/0", "serverAddress": f"{self.host}:{self.port}"}]
            return {"kind": "APIVersions", "versions": groups.get("", []), "serverAddressByClientCIDRs": cidr}
        if path == "/apis":
            items = [self._api_group(g, vs) for g, vs in groups.items() if g]
            return {"kind": "APIGroupList", "apiVersion": "v1", "groups": items}
        parts = path.strip("/").split("/")
        if len(parts) == 2 and parts[0] == "apis" and parts[1] in groups:
            return {"kind": "APIGroup", "apiVersion": "v1", **self._api_group(parts[1], groups[parts[1]])}
        if (len(parts) == 2 and parts[0] == "api") or (len(parts) == 3 and parts[0] == "apis"):
            group, version = ("", parts[1]) if parts[0] == "api" else (parts[1], parts[2])
            if version in groups.get(group, []):
                return self._resource_list(group, version)
        return None

    @staticmethod
    def _api_group(group: str, versions: list[str]) -> Obj:
        gvs = [{"groupVersion": f"{group}/{v}", "version": v} for v in versions]
        return {"name": group, "versions": gvs, "preferredVersion": gvs[0]}

    def _resource_list(self, group: str, version: str) -> Obj:
        resources: list[Obj] = []
        for rt in self.registry.in_group_version(group, version):
            entry: Obj = {"name": rt.plural, "singularName": rt.singular, "namespaced": rt.namespaced}
            entry.update(kind=rt.kind, verbs=list(rt.verbs))
            if rt.short_names:
                entry["shortNames"] = list(rt.short_names)
            if rt.categories:
                entry["categories"] = list(rt.categories)
            resources.append(entry)
            for sub in sorted(rt.subresources):
                sub_entry: Obj = {"name": f"{rt.plural}/{sub}", "singularName": "", "namespaced": rt.namespaced}
                if sub == "scale":
                    sub_entry.update(group="autoscaling", version="v1", kind="Scale")
                else:
                    sub_entry["kind"] = rt.kind
                sub_entry["verbs"] = ["get"] if sub == "log" else ["get", "patch", "update"]
                resources.append(sub_entry)
        gv = f"{group}/{version}" if group else version
        return {"kind": "APIResourceList", "apiVersion": "v1", "groupVersion": gv, "resources": resources}

    def _route(self, path: str) -> _Route:
        missing = ApiError(404, "NotFound", "the server could not find the requested resource")
        parts = path.strip("/").split("/")
        if len(parts) >= 3 and parts[0] == "api":
            group, version, rest = "", parts[1], parts[2:]
        elif len(parts) >= 4 and parts[0] == "apis":
            group, version, rest = parts[1], parts[2], parts[3:]
        else:
            raise missing
        namespace: str | None = None
        if rest[0] == "namespaces" and len(rest) >= 3 and rest[2] not in ("status", "finalize"):
            namespace, rest = rest[1], rest[2:]
        if len(rest) > 3 or not all(rest):
            raise missing
        rt = self.registry.by_url(group, version, rest[0])
        name = rest[1] if len(rest) > 1 else None
        sub = rest[2] if len(rest) > 2 else None
        if rt is None or (sub is not None and sub not in rt.subresources):
            raise missing
        if (namespace is not None and not rt.namespaced) or (rt.namespaced and namespace is None and name):
            raise missing
        return _Route(rt, namespace, name, sub)

    # -- resource verbs ----------------------------------------------------------------------------

    @staticmethod
    def _json_body(req: _Request, *, allow_empty: bool = False) -> Any:
        if not req.body:
            if allow_empty:
                return None
            raise bad_request("the body of the request was empty")
        try:
            return json.loads(req.body)
        except ValueError as exc:
            raise bad_request(f"the body of the request could not be decoded as JSON: {exc}") from None

    def _resource(self, route: _Route, req: _Request) -> tuple[int, Obj]:
        rt, ns, name, sub, q = route.rt, route.namespace, route.name, route.sub, req.query
        dry_run = q.get("dryRun") == "All"
        if req.method == "GET" and name is None:
            limit = int(q["limit"]) if q.get("limit", "").isdigit() else None
            items, rv, token, remaining = self.store.list_page(
                rt,
                ns,
                label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"),
                limit=limit,
                continue_token=q.get("continue") or None,
            )
            meta: Obj = {"resourceVersion": str(rv)}
            if token:
                meta.update({"continue": token, "remainingItemCount": remaining})
            if rt.builtin:  # the real server's JSON lists of built-in types omit these per item
                items = [{k: v for k, v in item.items() if k not in ("kind", "apiVersion")} for item in items]
            return 200, {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": meta, "items": items}
        if req.method == "GET":
            assert name is not None
            return 200, self.store.get_scale(rt, ns, name) if sub == "scale" else self.store.read(rt, ns, name)
        if req.method == "POST" and name is None and (ns is not None or not rt.namespaced):
            self._require_json(req)
            return 201, self.store.create(rt, self._json_body(req), ns or None, dry_run=dry_run)
        if req.method == "PUT" and name is not None:
            self._require_json(req)
            body = self._json_body(req)
            if sub == "scale":
                return 200, self.store.update_scale(rt, ns, name, body, dry_run=dry_run)
            return 200, self.store.update(rt, body, ns, name=name, subresource=sub, dry_run=dry_run)
        if req.method == "PATCH" and name is not None:
            content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
            if content_type not in PATCH_TYPES:
                raise unsupported_media_type(content_type, PATCH_TYPES)
            patch = self._json_body(req)
            return 200, self.store.patch(
                rt, ns, name, patch, patch_type=PATCH_TYPES[content_type], subresource=sub, dry_run=dry_run
            )
        if req.method == "DELETE" and sub is None and (name is not None or ns is not None or not rt.namespaced):
            options = self._json_body(req, allow_empty=True) or {}
            if not isinstance(options, dict):
                raise bad_request("the body of a delete must be DeleteOptions")
            policy = q.get("propagationPolicy") or options.get("propagationPolicy")
            orphan = q.get("orphanDependents", options.get("orphanDependents"))
            if policy is None and orphan is not None:
                policy = "Orphan" if str(orphan).lower() == "true" else "Background"
            if name is None:
                deleted = self.store.delete_collection(
                    rt,
                    ns,
                    label_selector=q.get("labelSelector"),
                    field_selector=q.get("fieldSelector"),
                    propagation=policy,
                )
                return 200, {"kind": rt.list_kind, "apiVersion": rt.api_version, "metadata": {}, "items": deleted}
            dry_run = dry_run or options.get("dryRun") == ["All"]
            pre = options.get("preconditions") or {}
            result = self.store.delete(rt, ns, name, propagation=policy, preconditions=pre, dry_run=dry_run)
            if not result.removed or rt.returns_deleted_object:
                return 200, result.object
            details: Obj = {"name": name, **({"group": rt.group} if rt.group else {}), "kind": rt.plural}
            details["uid"] = result.object["metadata"].get("uid")
            return 200, {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Success", "details": details}
        raise method_not_allowed()

    @staticmethod
    def _require_json(req: _Request) -> None:
        content_type = req.headers.get("content-type", "").split(";")[0].strip().lower()
        if content_type not in ("application/json", ""):
            raise unsupported_media_type(content_type, ["application/json"])

    # -- pod logs ----------------------------------------------------------------------------------

    @staticmethod
    def _flag(query: dict[str, str], name: str) -> bool:
        value = query.get(name, "")
        if value in ("", *_FALSE):
            return False
        if value in _TRUE:
            return True
        raise bad_request(f'strconv.ParseBool: parsing "{value}": invalid syntax')

    @staticmethod
    def _tail_lines(query: dict[str, str], pod: str) -> int | None:
        raw = query.get("tailLines")
        if raw is None or raw == "":
            return None
        try:
            lines = int(raw)
        except ValueError:
            raise bad_request(f'strconv.ParseInt: parsing "{raw}": invalid syntax') from None
        if lines < 0:  # ValidatePodLogOptions
            why = "must be greater than or equal to 0"
            cause = {"reason": "FieldValueInvalid", "message": f"Invalid value: {lines}: {why}", "field": "tailLines"}
            message = f'PodLogOptions "{pod}" is invalid: tailLines: Invalid value: {lines}: {why}'
            raise ApiError(422, "Invalid", message, {"name": pod, "kind": "PodLogOptions", "causes": [cause]})
        return lines

    async def _pod_log(
        self, route: _Route, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        assert route.name is not None and route.namespace is not None
        q = req.query
        container = q.get("container") or None
        previous, follow = self._flag(q, "previous"), self._flag(q, "follow")
        tail_lines = self._tail_lines(q, route.name)
        if not follow:
            data = self.store.pod_log(route.namespace, route.name, container, previous=previous, tail_lines=tail_lines)
            await self._respond(writer, 200, data, keep_alive=req.keep_alive)
            return req.keep_alive
        loop = asyncio.get_running_loop()
        queue: asyncio.Queue[Any] = asyncio.Queue()

        def deliver(chunk: bytes | None) -> None:
            loop.call_soon_threadsafe(queue.put_nowait, _END if chunk is None else chunk)

        snapshot, follower = self.store.follow_log(
            route.namespace, route.name, container, deliver, previous=previous, tail_lines=tail_lines
        )
        head = "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nCache-Control: no-cache, private\r\n"
        writer.write((head + "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n").encode())
        if snapshot:
            writer.write(b"%x\r\n%s\r\n" % (len(snapshot), snapshot))
        if follower is None:  # a previous or stopped instance: what there is, then the end
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return False
        with self._lock:
            self._log_streams.add(queue)
        eof = asyncio.ensure_future(reader.read(1))
        try:
            await writer.drain()
            while True:
                get = asyncio.ensure_future(queue.get())
                done, _ = await asyncio.wait({get, eof}, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:  # the client went away
                    get.cancel()
                    return False
                item = get.result()
                if item is _BREAK:
                    writer.transport.abort()
                    return False
                if item is _END:
                    break
                writer.write(b"%x\r\n%s\r\n" % (len(item), item))
                await writer.drain()
            self._end_log_stream(follower, queue)  # before the last chunk, as for watches
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return False
        finally:
            self._end_log_stream(follower, queue)
            eof.cancel()

    def _end_log_stream(self, follower: LogFollower, queue: asyncio.Queue[Any]) -> None:
        self.store.unfollow_log(follower)
        with self._lock:
            self._log_streams.discard(queue)

    # -- watch -------------------------------------------------------------------------------------

    async def _watch(
        self, route: _Route, req: _Request, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> bool:
        loop = asyncio.get_running_loop()
        watch = _OpenWatch(route.rt, route.namespace, asyncio.Queue())
        q = req.query
        timeout = float(q["timeoutSeconds"]) if q.get("timeoutSeconds", "").isdigit() else None
        head = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nCache-Control: no-cache, private\r\n"
        head += "Transfer-Encoding: chunked\r\nConnection: close\r\n\r\n"

        def deliver(event: Obj) -> None:
            loop.call_soon_threadsafe(watch.queue.put_nowait, event)

        try:
            sub = self.store.watch(
                route.rt,
                route.namespace,
                deliver,
                label_selector=q.get("labelSelector"),
                field_selector=q.get("fieldSelector"),
                since=q.get("resourceVersion"),
            )
        except ApiError as err:
            if err.code != 410:
                raise
            writer.write(head.encode() + self._chunk({"type": "ERROR", "object": err.to_status()}) + b"0\r\n\r\n")
            await writer.drain()
            return False
        with self._lock:
            self._watches.add(watch)
        eof = asyncio.ensure_future(reader.read(1))
        bookmarks = None
        if q.get("allowWatchBookmarks", "") in _TRUE:
            bookmarks = asyncio.ensure_future(self._bookmarks(sub))
        try:
            writer.write(head.encode())
            await writer.drain()
            deadline = loop.time() + timeout if timeout is not None else None
            while True:
                get = asyncio.ensure_future(watch.queue.get())
                left = None if deadline is None else max(0.0, deadline - loop.time())
                done, _ = await asyncio.wait({get, eof}, timeout=left, return_when=asyncio.FIRST_COMPLETED)
                if get not in done:
                    get.cancel()
                    if eof in done:  # the client went away
                        return False
                    break  # timeoutSeconds
                item = get.result()
                if item is _BREAK:
                    writer.transport.abort()
                    return False
                if item is _END:
                    break
                writer.write(self._chunk(item))
                await writer.drain()
            # Deregister before the terminating chunk: once the client has seen the end of the
            # stream, the watch must no longer count as open (open_watches() is asserted on).
            self._end_watch(sub, watch)
            writer.write(b"0\r\n\r\n")
            await writer.drain()
            return False
        finally:
            self._end_watch(sub, watch)
            eof.cancel()
            if bookmarks is not None:
                bookmarks.cancel()

    def _end_watch(self, sub: Subscription, watch: _OpenWatch) -> None:
        """Stop feeding the watch and forget it (idempotent)."""
        self.store.unwatch(sub)
        with self._lock:
            self._watches.discard(watch)
        watch.closed.set()

    async def _bookmarks(self, sub: Subscription) -> None:
        while True:
            await asyncio.sleep(self.bookmark_interval)
            self.store.bookmark(sub)

    @staticmethod
    def _chunk(event: Obj) -> bytes:
        data = json.dumps(event, separators=(",", ":")).encode() + b"\n"
        return b"%x\r\n%s\r\n" % (len(data), data)
