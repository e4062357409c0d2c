"""The embedded platform's data plane: a weighted HTTP/1.1 reverse proxy on asyncio + httptools.

Every Kubernetes Service of a rollout is a listener (`add_service`) on 127.0.0.1. Each request
is routed by the service's current `RoutingTable` (`set_routing`): a `WeightedBalancer` picks
the revision (primary or canary, exact smooth weighted round robin) and then a pod of that
revision (round robin, skipping pods that failed recently). A canary's managed routes come
first when the table has any (`proxy_routes`): a header route sends matching requests to the
canary whatever the weight, a mirror route copies a share of matching requests to a canary pod
in the background (`proxy_mirror`).

Modules: this one is the server (listeners, routing tables, timers, stats); `proxy_http` the
client side (`ClientConn`: requests in, responses out) and the header rules; `upstream` the
backend side (`Upstream` connections and their `UpstreamPool`, response heads);
`proxy_metrics` the counters and the admin endpoint; `proxy_routes` and `proxy_mirror` the
managed routes.

Design, in short:

* Plain `asyncio.Protocol`s, callbacks all the way: a client connection feeds an
  `httptools.HttpRequestParser`, an upstream connection an `httptools.HttpResponseParser`. No
  task per request; a task is created only to open a new upstream connection.
* Upstream connections are pooled per backend address and reused while the backend keeps them
  alive; a request that finds its reused connection closed before any response byte, with no
  request body, is retried once on a new connection.
* Bodies are streamed both ways with back-pressure (reading from one side pauses while the
  other side's write buffer is full), never buffered whole. Chunked bodies are de-chunked by the
  parser and re-chunked on the other side; HTTP/1.0 clients get close-delimited bodies.
* Writes produced while handling one `data_received` are corked and sent with one `write`
  (the response head and a small body leave in one segment).
* Pipelined requests are queued and answered in order.
* One repeating timer per proxy checks upstream read timeouts, idle pooled connections and idle
  client keep-alive connections, and counts the requests answered since the last tick, instead
  of a timer per request.
* A routing swap replaces the service's balancer; an in-flight request keeps the backend and
  the upstream connection it already has, so nothing in flight is cut.

Per-request cost is what the proxy is judged on (a proxied request is a few tens of
microseconds of Python, several times nginx's), so the hot path avoids what the common case
does not need: a response head is forwarded as the raw bytes it came in, its lines told apart by
their bytes instead of a Python call per header, and a whole response framed by its length
is checked by llhttp with no Python callback (`upstream`); a request without a body is
written upstream at once; the clock is read twice per request and the value passed along;
metrics cost a list append (`proxy_metrics`); and the few calls between the protocol objects
on the way are merged where they were chains (see "inline" in the code).

Headers: hop-by-hop headers (Connection and the headers it names, Keep-Alive, Proxy-*, TE,
Trailer, Transfer-Encoding, Upgrade) are removed both ways and the framing is redone by the
proxy; `Expect: 100-continue` is answered by the proxy itself. `X-Forwarded-For` gets the
client address appended; `X-Forwarded-Proto: http` and `X-Forwarded-Host: <Host>` are added
unless the request already has them. Responses go out as HTTP/1.1 with the standard reason
phrase of their status code. Upgrade (WebSocket) and CONNECT are not proxied: the Upgrade
header is dropped (the backend sees a plain request) and CONNECT gets 405.

Errors answered by the proxy itself: 400 (bad request), 405 (CONNECT), 413 (body too large),
431 (head too large), 502 (upstream failed), 503 (no ready pod), 504 (upstream timeout), each
with a one-line text body naming the service.

An admin listener (`start_admin`) serves `GET /metrics` (Prometheus text format), `GET /stats`
and `GET /stats/<service>` (JSON, see `ProxyServer.stats`).
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import logging
import time
from collections.abc import Callable
from typing import Any

from rollouts.platform.embedded.balancer import (
    BackendHealth,
    BackendKey,
    WeightedBalancer,
    table_backend_keys,
)
from rollouts.platform.embedded.dataplane import PortInUseError
from rollouts.platform.embedded.proxy_http import ClientConn, Exchange
from rollouts.platform.embedded.proxy_metrics import AdminEndpoint, ProxyMetrics, RevisionStats
from rollouts.platform.embedded.proxy_mirror import DEFAULT_MAX_BODY, MirrorSender
from rollouts.platform.embedded.proxy_request import HeadMemo
from rollouts.platform.embedded.proxy_routes import compile_rules
from rollouts.platform.embedded.routing import RoutingTable
from rollouts.platform.embedded.upstream import Upstream, UpstreamPool

__all__ = ["PortInUseError", "ProxyServer"]

log = logging.getLogger(__name__)


class Route:
    """The routing state of one service name: its table, its balancer, its counters."""

    __slots__ = ("balancer", "metrics", "name", "stats", "table")

    def __init__(self, name: str, metrics: ProxyMetrics) -> None:
        self.name = name
        self.metrics = metrics
        self.table = RoutingTable()
        self.balancer = WeightedBalancer(self.table)
        self.stats: dict[str, RevisionStats] = {}

    def revision_stats(self, label: str) -> RevisionStats:
        rs = self.stats.get(label)
        if rs is None:
            rs = self.stats[label] = self.metrics.revision(self.name, label)
        return rs


class Service:
    """One listener."""

    __slots__ = ("conns", "host", "name", "port", "route", "server")

    def __init__(self, name: str, host: str, route: Route) -> None:
        self.name = name
        self.host = host
        self.route = route
        self.port = 0
        self.server: asyncio.Server | None = None
        self.conns: set[ClientConn] = set()


class ProxyServer:
    """The embedded platform's reverse proxy: one listener per Service, weighted routing."""

    def __init__(
        self,
        metrics: ProxyMetrics | None = None,
        *,
        connect_timeout: float = 2.0,
        read_timeout: float = 30.0,
        max_header_size: int = 64 * 1024,
        max_body_size: int = 64 * 1024 * 1024,
        keepalive_timeout: float = 75.0,
        upstream_idle_timeout: float = 4.0,
        max_idle_per_backend: int = 256,
        shutdown_grace: float = 5.0,
        mirror_timeout: float = 5.0,
        mirror_max_in_flight: int = 32,
        mirror_max_queued: int = 256,
        mirror_max_body: int = DEFAULT_MAX_BODY,
    ) -> None:
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self.read_timeout = read_timeout
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.keepalive_timeout = keepalive_timeout
        self.shutdown_grace = shutdown_grace
        self.health = BackendHealth()
        self._time: Callable[[], float] = time.monotonic
        self._pool = UpstreamPool(
            self.health,
            connect_timeout=connect_timeout,
            idle_timeout=upstream_idle_timeout,
            max_idle_per_backend=max_idle_per_backend,
            time=self._time,
        )
        # Copies of mirrored requests (bounded; see `proxy_mirror`).
        self.mirror = MirrorSender(
            connect_timeout=connect_timeout,
            timeout=mirror_timeout,
            max_in_flight=mirror_max_in_flight,
            max_queued=mirror_max_queued,
            max_body=mirror_max_body,
            idle_timeout=upstream_idle_timeout,
            time=self._time,
        )
        # Analyses of recent request heads (per proxy: they depend on its limits).
        self.heads = HeadMemo()
        self._services: dict[str, Service] = {}
        self._routes: dict[str, Route] = {}
        self._loop_: asyncio.AbstractEventLoop | None = None
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_sweep = 0.0
        self._clients: set[ClientConn] = set()
        self._drained: asyncio.Future[None] | None = None
        self._admin: AdminEndpoint | None = None
        self._closed = False

    # The upstream settings live in the pool; these keep them readable and settable here.

    @property
    def connect_timeout(self) -> float:
        return self._pool.connect_timeout

    @connect_timeout.setter
    def connect_timeout(self, value: float) -> None:
        self._pool.connect_timeout = self.mirror.connect_timeout = value

    @property
    def upstream_idle_timeout(self) -> float:
        return self._pool.idle_timeout

    @upstream_idle_timeout.setter
    def upstream_idle_timeout(self, value: float) -> None:
        self._pool.idle_timeout = self.mirror.idle_timeout = value

    @property
    def max_idle_per_backend(self) -> int:
        return self._pool.max_idle_per_backend

    @max_idle_per_backend.setter
    def max_idle_per_backend(self, value: int) -> None:
        self._pool.max_idle_per_backend = value

    # -- public API ----------------------------------------------------------------------------

    async def add_service(self, name: str, port: int, host: str = "127.0.0.1") -> int:
        """Listen for `name` on `host:port` (0 = a free port); returns the bound port.

        Adding a service that already listens on the same port (or with port 0) is a no-op;
        with another port, it moves. Raises `PortInUseError` when the port is taken.
        """
        if self._closed:
            raise RuntimeError("the proxy is closed")
        loop = self._ensure_loop()
        existing = self._services.get(name)
        if existing is not None and host == existing.host and port in (0, existing.port):
            return existing.port
        route = self._routes.get(name)
        created = route is None
        if route is None:
            route = self._routes[name] = Route(name, self.metrics)
        svc = Service(name, host, route)
        try:
            server = await loop.create_server(lambda: ClientConn(self, svc), host, port, backlog=1024)
        except OSError as exc:
            if created and self._routes.get(name) is route:
                del self._routes[name]
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    errno.EADDRINUSE,
                    f'cannot listen for service "{name}": port {port} on {host} is already in use',
                ) from exc
            raise OSError(exc.errno, f'cannot listen for service "{name}" on {host}:{port}: {exc}') from exc
        svc.server = server
        svc.port = int(server.sockets[0].getsockname()[1])
        if existing is not None:
            self._stop_listening(existing)  # moved to another port
        self._services[name] = svc
        return svc.port

    async def remove_service(self, name: str) -> None:
        """Stop listening for `name` and forget its routing. Requests in flight finish (their
        connections close afterwards); idle connections close now."""
        svc = self._services.pop(name, None)
        if svc is not None:
            self._stop_listening(svc)
        if self._routes.pop(name, None) is not None:
            self._refresh_active_keys()

    def set_routing(self, name: str, table: RoutingTable) -> None:
        """Swap in the routing table of `name` (the service may be added before or after).

        New requests use the new table; requests in flight keep their backend. Idle pooled
        connections to backends that are in no table any more are closed.
        """
        if not isinstance(table, RoutingTable):
            raise TypeError(f"set_routing needs a RoutingTable, got {type(table).__name__}")
        route = self._routes.get(name)
        if route is None:
            route = self._routes[name] = Route(name, self.metrics)
        if route.table == table:
            return  # unchanged: keep the balancer's sequence going
        rules = compile_rules(name, table.routes, route.balancer.rules) if table.canary is not None else None
        balancer = WeightedBalancer(table, previous=route.balancer, rules=rules)
        for pool in balancer.pools():
            route.revision_stats(pool.label)
        route.balancer = balancer
        route.table = table
        self._refresh_active_keys()

    def routing(self, name: str) -> RoutingTable:
        """The routing table of `name` (empty for a service without one yet)."""
        route = self._routes.get(name)
        if route is None:
            raise KeyError(f'no service "{name}" in the proxy')
        return route.table

    def services(self) -> dict[str, int]:
        """Listening services: name -> port."""
        return {name: svc.port for name, svc in self._services.items()}

    async def start_admin(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve `GET /metrics`, `GET /stats` and `GET /stats/<service>`; returns the port."""
        if self._admin is not None:
            return self._admin.port
        self._ensure_loop()
        admin = AdminEndpoint(self.metrics, self.stats)
        await admin.start(host, port)  # (PortInUseError when the port is taken)
        self._admin = admin
        return admin.port

    async def close(self) -> None:
        """Stop listening, let requests in flight finish (up to `shutdown_grace` seconds),
        then close every connection, the pools and the admin listener."""
        if self._closed:
            return
        self._closed = True
        self._pool.closed = True  # connections freed from now on are closed, not pooled
        if self._admin is not None:
            self._admin.close()
        services = list(self._services.values())
        self._services.clear()
        for svc in services:
            self._stop_listening(svc)
        if self._clients and self._loop_ is not None:
            self._drained = self._loop_.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), self.shutdown_grace)
        clients = list(self._clients)  # those of removed services too
        for conn in clients:
            conn.abort()
        await self._pool.close()
        await self.mirror.close()
        for conn in clients:
            ex = conn.current
            if ex is not None and ex.upstream is not None:
                ex.upstream.close()
        if self._tick_handle is not None:
            self._tick_handle.cancel()
            self._tick_handle = None
        for svc in services:
            if svc.server is not None:
                await svc.server.wait_closed()
        if self._admin is not None:
            await self._admin.wait_closed()
            self._admin = None
        await asyncio.sleep(0)  # let transports run their connection_lost callbacks

    # -- stats ---------------------------------------------------------------------------------

    def stats(self, service: str | None = None) -> dict[str, Any]:
        """`/stats`: `{"services": {name: service_stats}}`, or one service's stats."""
        if service is not None:
            return self._service_stats(service)
        names = sorted(set(self._services) | set(self._routes))
        return {"services": {name: self._service_stats(name) for name in names}}

    def _service_stats(self, name: str) -> dict[str, Any]:
        svc = self._services.get(name)
        route = self._routes.get(name)
        if svc is None and route is None:
            raise KeyError(f'no service "{name}" in the proxy')
        revisions: dict[str, RevisionStats] = dict(self.metrics.revisions_of(name))
        primary = canary = None
        weight = 0
        if route is not None:
            balancer = route.balancer
            weight = balancer.canary_weight
            for pool in balancer.pools():
                if pool.label not in revisions:
                    revisions[pool.label] = route.revision_stats(pool.label)
            primary = balancer.primary.label if balancer.primary.revision is not None else None
            canary = balancer.canary.label if balancer.canary.revision is not None else None
        out: dict[str, Any] = {
            "port": svc.port if svc is not None else None,
            "canary_weight": weight,
            "primary_revision": primary,
            "canary_revision": canary,
            "revisions": {label: revisions[label].summary() for label in sorted(revisions)},
        }
        if route is not None and route.balancer.rules is not None:
            out["routes"] = [rule.name for rule in route.balancer.rules.rules]  # by precedence
        return out

    # -- internals: loop, timers ---------------------------------------------------------------

    @property
    def _loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_
        if loop is None:
            loop = self._ensure_loop()
        return loop

    def _ensure_loop(self) -> asyncio.AbstractEventLoop:
        loop = self._loop_
        if loop is None:
            loop = self._loop_ = self._pool.loop = asyncio.get_running_loop()
            period = min(max(self.read_timeout / 4.0, 0.01), 0.5)
            self._tick_handle = loop.call_later(period, self._tick, period)
        return loop

    def _tick(self, period: float) -> None:
        """Read timeouts of in-flight requests; every second, idle connection sweeps."""
        loop = self._loop
        now = self._time()
        limit = self.read_timeout
        # An exchange holds an upstream connection only while it is its client's current one,
        # so the client connections are where to look (no registry updated per request).
        late: list[tuple[Exchange, Upstream]] = []
        for conn in self._clients:
            ex = conn.current
            if ex is not None:
                up = ex.upstream
                if up is not None and now - up.last_activity >= limit:
                    late.append((ex, up))
        for ex, up in late:
            if ex.upstream is not up:
                continue  # settled by an earlier one's consequences
            if ex.client.write_paused:
                up.last_activity = now  # the client is slow to read, not the backend
                continue
            self._pool.timed_out(ex, up)
        if now >= self._next_sweep:
            self._next_sweep = now + min(1.0, self.keepalive_timeout / 4, self.upstream_idle_timeout / 4)
            self._sweep(now)
        self.metrics.drain()  # count the requests answered since the last tick
        if not self._closed:
            self._tick_handle = loop.call_later(period, self._tick, period)

    def _sweep(self, now: float) -> None:
        self._pool.sweep(now)
        self.mirror.sweep(now)
        keepalive = self.keepalive_timeout
        for svc in list(self._services.values()):
            for conn in list(svc.conns):
                if conn.is_idle():
                    if now - conn.idle_since >= keepalive:
                        conn.shutdown()
                else:
                    ex = conn.current
                    if ex is not None and ex.resp_done and now - ex.t0 >= keepalive:
                        conn.shutdown()  # answered, but the rest of the request body never came
                        conn.abort()

    # -- internals: clients and services ---------------------------------------------------

    def _stop_listening(self, svc: Service) -> None:
        if svc.server is not None:
            svc.server.close()
        for conn in list(svc.conns):
            conn.shutdown()

    def _client_opened(self, conn: ClientConn) -> None:
        self._clients.add(conn)

    def _client_closed(self, conn: ClientConn) -> None:
        self._clients.discard(conn)
        if not self._clients and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _refresh_active_keys(self) -> None:
        keys: set[BackendKey] = set()
        for route in self._routes.values():
            keys |= table_backend_keys(route.table)
        self._pool.retain(keys)
        self.health.retain(keys)
