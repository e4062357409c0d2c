"""The embedded platform's data plane: a weighted HTTP/1.1 reverse proxy on asyncio + httptools.

Every Kubernetes Service of a rollout is a listener (`add_service`) on 127.0.0.1. Each request
is routed by the service's current `RoutingTable` (`set_routing`): a `WeightedBalancer` picks
the revision (primary or canary, exact smooth weighted round robin) and then a pod of that
revision (round robin, skipping pods that failed recently).

Design, in short:

* Plain `asyncio.Protocol`s, callbacks all the way: a client connection (`_ClientConn`) feeds
  an `httptools.HttpRequestParser`, an upstream connection (`_Upstream`) an
  `httptools.HttpResponseParser`. No task per request; a task is created only to open a new
  upstream connection.
* Upstream connections are pooled per backend address and reused while the backend keeps them
  alive (LIFO; idle ones are closed after `upstream_idle_timeout`, and at once when the backend
  leaves every routing table). A request that finds its reused connection closed before any
  response byte, with no request body, is retried once on a new connection.
* Bodies are streamed both ways with back-pressure (reading from one side pauses while the
  other side's write buffer is full), never buffered whole. Chunked bodies are de-chunked by the
  parser and re-chunked on the other side; HTTP/1.0 clients get close-delimited bodies.
* Writes produced while handling one `data_received` are corked and sent with one `write`
  (the response head and a small body leave in one segment).
* Pipelined requests are queued and answered in order.
* One repeating timer per proxy checks upstream read timeouts, idle pooled connections and idle
  client keep-alive connections, instead of a timer per request.
* A routing swap replaces the service's balancer; an in-flight request keeps the backend and
  the upstream connection it already has, so nothing in flight is cut.

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
import json
import logging
import time
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import Any, cast

import httptools

from rollouts.platform.embedded.balancer import (
    NO_REVISION,
    BackendHealth,
    BackendKey,
    RevisionPool,
    WeightedBalancer,
    table_backend_keys,
)
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics, RevisionStats
from rollouts.platform.embedded.routing import Backend, RoutingTable

__all__ = ["PortInUseError", "ProxyServer"]

log = logging.getLogger(__name__)

# Why a client connection's reading is paused (bit flags; reading resumes when none is left).
_P_PIPELINE = 1  # too many complete requests wait for the responses of earlier ones
_P_BUFFER = 2  # request body buffered while the upstream connection is being opened
_P_UPSTREAM = 4  # the upstream's write buffer is full
_P_STOPPED = 8  # the connection will close after the pending responses

_LINGER_SECONDS = 2.0
_BUFFER_HIGH_WATER = 256 * 1024
_KEEP_UNREAD_BODY = 64 * 1024  # after an early response, read and drop at most this much body
_MAX_CONNECT_ATTEMPTS = 3
# Pipelined requests read ahead of the one being answered. Reading goes on while a response is
# awaited (so that a client closing its connection is noticed at once) up to this many.
_MAX_PIPELINED = 16

# Request header name (lower case) -> how it is handled; absent = forwarded as is.
_H_DROP = 0
_H_CONNECTION = 1
_H_TRANSFER_ENCODING = 2
_H_EXPECT = 3
_H_XFF = 4
_H_HOST = 5
_H_CONTENT_LENGTH = 6
_H_XFP = 7
_H_XFH = 8
_HOP_BY_HOP = {
    b"connection": _H_CONNECTION,
    b"keep-alive": _H_DROP,
    b"proxy-connection": _H_DROP,
    b"proxy-authenticate": _H_DROP,
    b"proxy-authorization": _H_DROP,
    b"te": _H_DROP,
    b"trailer": _H_DROP,
    b"transfer-encoding": _H_TRANSFER_ENCODING,
    b"upgrade": _H_DROP,
}
_REQUEST_HEADERS = {
    **_HOP_BY_HOP,
    b"expect": _H_EXPECT,
    b"x-forwarded-for": _H_XFF,
    b"host": _H_HOST,
    b"content-length": _H_CONTENT_LENGTH,
    b"x-forwarded-proto": _H_XFP,
    b"x-forwarded-host": _H_XFH,
}
_RESPONSE_HEADERS = {**_HOP_BY_HOP, b"content-length": _H_CONTENT_LENGTH}

_STATUS_LINES = {
    int(status): b"HTTP/1.1 %d %b\r\n" % (int(status), status.phrase.encode("latin-1")) for status in HTTPStatus
}
_REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class PortInUseError(OSError):
    """The port asked for a service is taken by another socket."""


class _Reject(Exception):
    """Raised from a parser callback to answer the client with `code` and stop reading."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class _BadResponse(Exception):
    """Raised from an upstream parser callback on a response the proxy cannot forward."""


def _connection_tokens(value: bytes, into: set[bytes] | None) -> set[bytes]:
    tokens = into if into is not None else set()
    for token in value.lower().split(b","):
        token = token.strip()
        if token:
            tokens.add(token)
    return tokens


_CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
_NO_PARTS: list[bytes] = []


def _special_request_header(ex: _Exchange, kind: int, name: bytes, value: bytes) -> None:
    if kind == _H_HOST:
        ex.host = value
    elif kind == _H_CONTENT_LENGTH:
        ex.content_length = int(value)
    elif kind == _H_XFP:
        ex.has_xfp = True
    elif kind == _H_XFH:
        ex.has_xfh = True
    else:
        if kind == _H_XFF:
            ex.xff = value if not ex.xff else ex.xff + b", " + value
        elif kind == _H_CONNECTION:
            lowered = value.strip().lower()
            if lowered != b"keep-alive" and lowered != b"close":
                ex.tokens = _connection_tokens(value, ex.tokens)
        elif kind == _H_TRANSFER_ENCODING:
            ex.req_chunked = True
        elif kind == _H_EXPECT:
            ex.expect_continue = value.strip().lower() == b"100-continue"
        return  # not forwarded as is
    ex.parts.append(name + b": " + value + b"\r\n")


class _Route:
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


class _Service:
    """One listener."""

    __slots__ = ("conns", "host", "name", "port", "route", "server")

    def __init__(self, name: str, host: str, route: _Route) -> None:
        self.name = name
        self.host = host
        self.route = route
        self.port = 0
        self.server: asyncio.Server | None = None
        self.conns: set[_ClientConn] = set()


class _Exchange:
    """One request and its response.

    No `__slots__`: the defaults live on the class, so that a new exchange stores only what
    differs (an exchange is created per request).
    """

    t0 = 0.0
    method = b"GET"
    url = b""
    head_size = 0
    head = b""
    host: bytes | None = None
    xff = b""
    has_xfp = False
    has_xfh = False
    tokens: set[bytes] | None = None
    http11 = True
    keep_alive = True
    is_head = False
    req_chunked = False
    content_length: int | None = None
    expect_continue = False
    local: tuple[int, str] | None = None
    pool: RevisionPool | None = None
    rstats: RevisionStats | None = None
    backend: Backend | None = None
    upstream: _Upstream | None = None
    tried: set[Backend] | None = None
    retried = False
    body_buf: list[bytes] | None = None
    body_buffered = 0
    body_bytes = 0
    request_done = False
    request_sent = False
    discard = False
    resp_started = False
    resp_done = False
    resp_chunked = False
    resp_until_eof = False
    status = 0
    finished = False
    aborted = False

    def __init__(self, client: _ClientConn) -> None:
        self.client = client
        self.parts: list[bytes] = [b""]  # [0]: the request line, set when the head is complete

    def where(self) -> str:
        pool = self.pool
        label = pool.label if pool is not None else NO_REVISION
        pod = f", pod {self.backend.pod}" if self.backend is not None else ""
        return f'service "{self.client.svc.name}" (revision {label}{pod})'


class _ClientConn(asyncio.Protocol):
    """A connection from a client to a service listener."""

    def __init__(self, proxy: ProxyServer, svc: _Service) -> None:
        self.proxy = proxy
        self.svc = svc
        self.route = svc.route
        self._time = proxy._time
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b""
        self._xff_line = b"X-Forwarded-For: \r\n"
        self._building: _Exchange | None = None
        self._head_size = 0
        self._in_head = True
        self._current: _Exchange | None = None
        self._parsing: _Exchange | None = None
        self._queue: deque[_Exchange] = deque()
        self._paused = 0
        self.write_paused = False
        self._closed = False
        self._closing = False
        self._lingering = False
        self._linger_handle: asyncio.TimerHandle | None = None
        self._parser_dead = False
        self._in_advance = False
        self._in_feed = False
        self._dirty: list[_Upstream] = []
        self._ocork = False
        self._obuf: list[bytes] = []
        self.idle_since = self._time()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0]).encode("ascii", "replace")
        self._xff_line = b"X-Forwarded-For: " + self.peer + b"\r\n"
        self.svc.conns.add(self)
        self.proxy._client_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = True
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        self._obuf.clear()
        ex = self._current
        self._current = None
        self._queue.clear()
        self._parsing = None
        if ex is not None and not ex.resp_done:
            ex.aborted = True
            up = ex.upstream
            if up is not None:
                self.proxy._detach(ex, up)
                up.close()
            ex.status = 499  # client closed the connection before the response was complete
            self._finish(ex)
        self.svc.conns.discard(self)
        self.proxy._client_closed(self)

    def eof_received(self) -> bool | None:
        # Like nginx, a client that closes its side gave up: requests in flight are abandoned
        # (counted as 499) and the connection closes.
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self._current
        if ex is not None and ex.upstream is not None:
            ex.upstream.pause_reading()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self._current
        if ex is not None and ex.upstream is not None:
            ex.upstream.resume_reading()

    def data_received(self, data: bytes) -> None:
        if self._lingering or self._closed or self._parser_dead:
            return
        if self._in_head:
            self._head_size += len(data)
        self._in_feed = True
        try:
            self.parser.feed_data(data)
            if self._in_head and self._head_size > self.proxy.max_header_size and not self._parser_dead:
                # still no end of the head (bytes since the last head ended, roughly)
                self._parse_failed(431, "431 request header fields too large")
        except httptools.HttpParserCallbackError as exc:
            cause = exc.__context__
            if isinstance(cause, _Reject):
                self._parse_failed(cause.code, cause.text)
            else:
                log.error("embedded proxy: error handling a request", exc_info=cause or exc)
                self._parse_failed(500, "500 internal proxy error")
        except httptools.HttpParserUpgrade:
            # Upgrade/CONNECT: the head was handled as a plain request (Upgrade removed); what
            # follows is not HTTP, so stop reading and close after the response.
            self._parser_dead = True
            self._pause(_P_STOPPED)
        except httptools.HttpParserError:
            self._parse_failed(400, "400 bad request")
        finally:
            self._in_feed = False
            if self._dirty:
                self._flush_upstreams()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_url(self, url: bytes) -> None:
        ex = self._building
        if ex is None:
            ex = self._building = _Exchange(self)
        ex.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        ex = self._building
        if ex is None:
            return
        ex.head_size += len(name) + len(value) + 4
        lname = name.lower()
        kind = _REQUEST_HEADERS.get(lname)
        if kind is None:
            if not lname.startswith(b"proxy-"):
                ex.parts.append(name + b": " + value + b"\r\n")
        else:
            _special_request_header(ex, kind, name, value)

    def on_headers_complete(self) -> None:
        ex = self._building
        self._building = None
        if self._parser_dead or ex is None:
            return  # the connection closes after the pending responses: ignore what follows
        self._in_head = False
        self._head_size = 0
        proxy = self.proxy
        if ex.head_size + len(ex.url) > proxy.max_header_size:
            raise _Reject(431, "431 request header fields too large")
        parser = self.parser
        ex.t0 = self._time()
        method = parser.get_method()
        ex.method = method
        ex.is_head = method == b"HEAD"
        ex.http11 = parser.get_http_version() == "1.1"
        ex.keep_alive = parser.should_keep_alive() and not self._closing
        parts = ex.parts
        if ex.tokens:
            drop = ex.tokens - _CONNECTION_OPTIONS
            if drop:
                parts = ex.parts = [line for line in parts if not line or line.split(b":", 1)[0].lower() not in drop]
        parts[0] = method + b" " + ex.url + b" HTTP/1.1\r\n"
        xff = ex.xff
        parts.append(self._xff_line if not xff else b"X-Forwarded-For: " + xff + b", " + self.peer + b"\r\n")
        if not ex.has_xfp:
            parts.append(b"X-Forwarded-Proto: http\r\n")
        if not ex.has_xfh and ex.host is not None:
            parts.append(b"X-Forwarded-Host: " + ex.host + b"\r\n")
        if ex.req_chunked:
            parts.append(b"Transfer-Encoding: chunked\r\n")
        if parser.should_upgrade():
            ex.keep_alive = False
            if method == b"CONNECT":
                ex.local = (405, "405 CONNECT is not supported by this proxy")
        cl = ex.content_length
        if cl is not None and cl > proxy.max_body_size:
            ex.local = (413, f"413 request body too large (limit {proxy.max_body_size} bytes)")
            ex.keep_alive = False
        if ex.local is not None:
            ex.discard = True
        self._parsing = ex
        if self._current is None:
            self._current = ex
            self._start(ex)
        else:
            self._queue.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        ex.body_bytes += len(body)
        if ex.discard:
            if ex.body_bytes > _KEEP_UNREAD_BODY and not ex.resp_done:
                return
            if ex.body_bytes > _KEEP_UNREAD_BODY:
                ex.keep_alive = False
                self._linger_close()
            return
        if ex.body_bytes > self.proxy.max_body_size:
            text = f"413 request body too large (limit {self.proxy.max_body_size} bytes)"
            self._reject_body(ex, 413, text)
            return
        if ex.req_chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        self._send_body(ex, body)

    def on_message_complete(self) -> None:
        ex = self._parsing
        self._parsing = None
        self._in_head = True
        self._head_size = 0
        if ex is None:
            return
        ex.request_done = True
        if not ex.discard:
            if ex.req_chunked:
                self._send_body(ex, b"0\r\n\r\n")
            if ex.upstream is not None:
                ex.request_sent = True
        if ex.resp_done:
            if ex is self._current:
                self._exchange_done(ex)
        elif len(self._queue) >= _MAX_PIPELINED:
            self._pause(_P_PIPELINE)

    # -- request side --------------------------------------------------------------------------

    def _send_body(self, ex: _Exchange, data: bytes) -> None:
        up = ex.upstream
        if up is not None:
            up.last_activity = self._time()
            if self._in_feed:
                if not up.wbuf:
                    self._dirty.append(up)
                up.wbuf.append(data)
            else:
                up.write(data)
            return
        if ex.body_buf is None:
            ex.body_buf = [data]
        else:
            ex.body_buf.append(data)
        ex.body_buffered += len(data)
        if ex.body_buffered > _BUFFER_HIGH_WATER:
            self._pause(_P_BUFFER)

    def _flush_upstreams(self) -> None:
        dirty = self._dirty
        self._dirty = []
        for up in dirty:
            up.flush()

    def _start(self, ex: _Exchange) -> None:
        """Route the exchange (now at the head of the queue) and send it upstream."""
        route = self.route
        if ex.local is not None:
            ex.rstats = route.revision_stats(NO_REVISION)
            ex.rstats.start()
            self._local_response(ex, *ex.local)
            return
        pool = route.balancer.pick()
        ex.pool = pool
        rstats = route.stats.get(pool.label)
        if rstats is None:
            rstats = route.revision_stats(pool.label)
        ex.rstats = rstats
        rstats.start()
        proxy = self.proxy
        health = proxy.health
        backend = pool.pick(health, self._time()) if health else pool.pick()
        if backend is None:
            text = f'503 no ready pod for service "{self.svc.name}" (revision {pool.label})'
            self._local_response(ex, 503, text)
            return
        ex.backend = backend
        parts = ex.parts
        if ex.host is None:
            parts.append(b"Host: %b:%d\r\n" % (backend.host.encode("idna"), backend.port))
        parts.append(b"\r\n")
        ex.head = b"".join(parts)
        ex.parts = _NO_PARTS
        if ex.expect_continue and not ex.request_done:
            self._out(b"HTTP/1.1 100 Continue\r\n\r\n")
        proxy._acquire(ex, backend)

    def attach(self, ex: _Exchange, up: _Upstream) -> None:
        """`up` is connected (or taken from the pool): send the request head and buffered body."""
        up.exchange = ex
        ex.upstream = up
        up.got_bytes = False
        up.last_activity = self._time()
        self.proxy._active.add(ex)
        data = ex.head
        buf = ex.body_buf
        if buf is not None:
            data = b"".join([data, *buf])
            ex.body_buf = None
            ex.body_buffered = 0
            self._resume(_P_BUFFER)
        if ex.request_done:
            ex.request_sent = True
        if self._in_feed:
            if not up.wbuf:
                self._dirty.append(up)
            up.wbuf.append(data)
        else:
            up.write(data)
        if self.write_paused:
            up.pause_reading()

    def _reject_body(self, ex: _Exchange, code: int, text: str) -> None:
        ex.discard = True
        ex.keep_alive = False
        if ex is not self._current:
            # a queued request: answer the earlier ones, then close
            self._stop_after_pending()
            return
        if ex.resp_started:
            self.abort_exchange(ex)
            return
        self._local_response(ex, code, text)

    def _parse_failed(self, code: int, text: str) -> None:
        self._parser_dead = True
        ex = self._current
        if ex is None:
            rstats = self.route.revision_stats(NO_REVISION)
            rstats.record(code, 0.0)
            self._write_local(code, text, keep_alive=False, http11=True, head_only=False)
            self._linger_close()
            return
        if self._parsing is ex:
            # the request being answered is itself broken (in its body)
            ex.discard = True
            ex.keep_alive = False
            if ex.resp_done:
                self._linger_close()
            elif ex.resp_started:
                self.abort_exchange(ex)
            else:
                self._local_response(ex, code, text)
            return
        # a later, pipelined request is broken: close after the current response
        self._stop_after_pending()

    def _stop_after_pending(self) -> None:
        self._parser_dead = True
        self._closing = True
        self._pause(_P_STOPPED)
        if self._parsing is not None and self._parsing is not self._current:
            with contextlib.suppress(ValueError):
                self._queue.remove(self._parsing)
            self._parsing = None

    # -- response side -------------------------------------------------------------------------

    def _out(self, data: bytes) -> None:
        if self._ocork:
            self._obuf.append(data)
        elif not self._closed and not self._lingering and self.transport is not None:
            self.transport.write(data)

    def flush_out(self) -> None:
        self._ocork = False
        obuf = self._obuf
        if obuf:
            data = obuf[0] if len(obuf) == 1 else b"".join(obuf)
            obuf.clear()
            if not self._closed and not self._lingering and self.transport is not None:
                self.transport.write(data)

    def response_head(self, ex: _Exchange, up: _Upstream, code: int) -> None:
        """Forward the upstream's response head (its headers are filtered in `up.parts`)."""
        ex.resp_started = True
        ex.status = code
        parts = up.parts
        parts[0] = _STATUS_LINES.get(code) or b"HTTP/1.1 %d \r\n" % code
        tokens = up.tokens
        if tokens:
            extra = tokens - _CONNECTION_OPTIONS
            if extra:
                parts = [line for line in parts if not line or line.split(b":", 1)[0].lower() not in extra]
        if not (ex.is_head or code == 204 or code == 304 or up.has_cl):
            if ex.http11:
                parts.append(b"Transfer-Encoding: chunked\r\n")
                ex.resp_chunked = True
            else:
                ex.keep_alive = False  # close-delimited body for an HTTP/1.0 client
            ex.resp_until_eof = not up.chunked
        keep = ex.keep_alive and not self._closing
        if keep and not ex.request_done:
            cl = ex.content_length
            keep = cl is not None and cl - ex.body_bytes <= _KEEP_UNREAD_BODY
        ex.keep_alive = keep
        if not keep:
            parts.append(b"Connection: close\r\n\r\n")
        elif not ex.http11:
            parts.append(b"Connection: keep-alive\r\n\r\n")
        else:
            parts.append(b"\r\n")
        self._out(b"".join(parts))

    def response_body(self, ex: _Exchange, body: bytes) -> None:
        if ex.resp_chunked:
            body = b"%x\r\n%b\r\n" % (len(body), body)
        self._out(body)

    def _local_response(self, ex: _Exchange, code: int, text: str) -> None:
        """Answer the current exchange from the proxy (its response has not started)."""
        up = ex.upstream
        if up is not None:
            self.proxy._detach(ex, up)
            up.close()
        keep = ex.keep_alive and not self._closing
        if keep and not ex.request_done:
            cl = ex.content_length
            keep = not ex.req_chunked and cl is not None and cl - ex.body_bytes <= _KEEP_UNREAD_BODY
        ex.keep_alive = keep
        ex.status = code
        ex.resp_started = True
        ex.discard = True
        ex.body_buf = None
        self._resume(_P_BUFFER)
        self._write_local(code, text, keep_alive=keep, http11=ex.http11, head_only=ex.is_head)
        self.response_complete(ex)

    def _write_local(self, code: int, text: str, *, keep_alive: bool, http11: bool, head_only: bool) -> None:
        body = text.encode("utf-8", "replace") + b"\n"
        conn = b"" if keep_alive and http11 else b"keep-alive" if keep_alive else b"close"
        head = b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%b\r\n" % (
            code,
            _REASONS.get(code, b"Error"),
            len(body),
            b"Connection: " + conn + b"\r\n" if conn else b"",
        )
        self._out(head if head_only else head + body)

    def fail(self, ex: _Exchange, code: int, text: str) -> None:
        """The upstream failed before the response started."""
        if ex.aborted or ex.resp_done or self._closed:
            return
        self._local_response(ex, code, text)

    def abort_exchange(self, ex: _Exchange) -> None:
        """The response started but cannot be completed: close the client connection."""
        up = ex.upstream
        if up is not None:
            self.proxy._detach(ex, up)
            up.close()
        ex.resp_done = True
        self._finish(ex)
        self._current = None
        self._closing = True
        self.flush_out()
        if self.transport is not None and not self._closed:
            self.transport.close()

    def response_complete(self, ex: _Exchange) -> None:
        ex.resp_done = True
        if not ex.finished:
            ex.finished = True
            rstats = ex.rstats
            if rstats is not None:
                rstats.in_flight -= 1
                rstats.record(ex.status, self._time() - ex.t0)
        if ex.request_done:
            if ex is self._current:
                self._exchange_done(ex)
        else:
            ex.discard = True
            ex.body_buf = None
            self._resume(_P_BUFFER)
            if not ex.keep_alive:
                self._current = None
                self._linger_close()

    def _finish(self, ex: _Exchange) -> None:
        if ex.finished:
            return
        ex.finished = True
        rstats = ex.rstats
        if rstats is not None:
            rstats.finish(ex.status, self._time() - ex.t0)

    def _exchange_done(self, ex: _Exchange) -> None:
        self._current = None
        if not ex.keep_alive or self._closing:
            self._linger_close()
            return
        if self._in_advance:
            return
        self._in_advance = True
        try:
            while self._current is None and self._queue and not self._closed and not self._lingering:
                nxt = self._queue.popleft()
                self._current = nxt
                self._start(nxt)
        finally:
            self._in_advance = False
        if self._closed or self._lingering:
            return
        if self._current is None:
            self.idle_since = self._time()
            if self._closing:
                self._linger_close()
                return
        if len(self._queue) < _MAX_PIPELINED:
            self._resume(_P_PIPELINE)

    # -- connection state ----------------------------------------------------------------------

    def _pause(self, flag: int) -> None:
        if not self._paused and self.transport is not None and not self._closed:
            self.transport.pause_reading()
        self._paused |= flag

    def _resume(self, flag: int) -> None:
        if self._paused & flag:
            self._paused &= ~flag
            if not self._paused and self.transport is not None and not self._closed and not self._lingering:
                self.transport.resume_reading()

    def is_idle(self) -> bool:
        return self._current is None and self._parsing is None

    @property
    def current(self) -> _Exchange | None:
        return self._current

    def _linger_close(self) -> None:
        """Close after the pending output, reading (and dropping) what the client still sends
        for a moment, so that unread request data does not turn the close into a reset."""
        if self._closed or self._lingering:
            return
        self.flush_out()
        self._lingering = True
        self._current = None
        self._queue.clear()
        transport = self.transport
        if transport is None:
            return
        if self.proxy._closed:
            transport.close()
        elif transport.can_write_eof():
            try:
                transport.write_eof()
            except (OSError, RuntimeError):
                transport.close()
                return
            self._paused = 0
            transport.resume_reading()
            self._linger_handle = self.proxy._loop.call_later(_LINGER_SECONDS, transport.close)
        else:
            transport.close()

    def shutdown(self) -> None:
        """Stop taking requests: close now if idle, else after the pending responses."""
        self._closing = True
        if self.transport is not None and (self._lingering or self.is_idle()):
            self.flush_out()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.abort()


class _Upstream(asyncio.Protocol):
    """A connection from the proxy to one backend."""

    def __init__(self, proxy: ProxyServer, key: BackendKey, backend: Backend) -> None:
        self.proxy = proxy
        self.key = key
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.exchange: _Exchange | None = None
        self.wbuf: list[bytes] = []
        self.parts: list[bytes] = [b""]  # [0]: the status line, set when the head is complete
        self.has_cl = False
        self.chunked = False
        self.conn_close = False
        self.conn_keep_alive = False
        self.tokens: set[bytes] | None = None
        self.last_activity = 0.0
        self.idle_since = 0.0
        self.dead = False
        self.reused = False
        self.got_bytes = False
        self.write_paused = False
        self.feeding = False
        self.stale = False
        self.reset_parser = False
        self.interim = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self.wbuf.clear()
        self.proxy._upstream_lost(self)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None:
            ex.client._pause(_P_UPSTREAM)

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        if ex is not None:
            ex.client._resume(_P_UPSTREAM)

    def write(self, data: bytes) -> None:
        if not self.dead and self.transport is not None:
            self.transport.write(data)

    def flush(self) -> None:
        wbuf = self.wbuf
        if wbuf:
            data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
            wbuf.clear()
            self.write(data)

    def pause_reading(self) -> None:
        if not self.dead and self.transport is not None:
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if not self.dead and self.transport is not None:
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            self.wbuf.clear()
            if self.transport is not None:
                self.transport.close()

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # unsolicited bytes on an idle connection
            return
        self.last_activity = self.proxy._time()
        self.got_bytes = True
        client = ex.client
        client._ocork = True
        self.feeding = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            cause = exc.__context__
            if cause is not None and not isinstance(cause, _BadResponse):
                log.error("embedded proxy: error handling a response", exc_info=cause)
            self.proxy._upstream_broken(self, "invalid_response")
        finally:
            self.feeding = False
            self.stale = False
            client.flush_out()

    # -- httptools callbacks -----------------------------------------------------------------

    def on_header(self, name: bytes, value: bytes) -> None:
        if self.stale:
            return
        lname = name.lower()
        kind = _RESPONSE_HEADERS.get(lname)
        if kind is None:
            if not lname.startswith(b"proxy-"):
                self.parts.append(name + b": " + value + b"\r\n")
        elif kind == _H_CONTENT_LENGTH:
            self.has_cl = True
            self.parts.append(name + b": " + value + b"\r\n")
        elif kind == _H_CONNECTION:
            lowered = value.strip().lower()
            if lowered == b"keep-alive":
                self.conn_keep_alive = True
            elif lowered == b"close":
                self.conn_close = True
            else:
                tokens = self.tokens = _connection_tokens(value, self.tokens)
                self.conn_close = self.conn_close or b"close" in tokens
                self.conn_keep_alive = self.conn_keep_alive or b"keep-alive" in tokens
        elif kind == _H_TRANSFER_ENCODING:
            self.chunked = True

    def _new_head(self) -> None:
        self.parts = [b""]
        self.has_cl = self.chunked = self.conn_close = self.conn_keep_alive = False
        self.tokens = None

    def on_headers_complete(self) -> None:
        if self.stale:
            return
        ex = self.exchange
        if ex is None:
            return
        parser = self.parser
        code = parser.get_status_code()
        if code < 200:
            if code == 101:
                raise _BadResponse("101 Switching Protocols was not asked for")
            self.interim = True  # 1xx: dropped (100 Continue is answered by the proxy itself)
            self._new_head()
            return
        ex.client.response_head(ex, self, code)
        if ex.is_head:
            # The parser cannot be told that a HEAD response has no body: finish here and give
            # the connection a fresh parser.
            if parser.get_http_version() == "1.1":
                keep = not self.conn_close
            else:
                keep = self.conn_keep_alive and not self.conn_close
            self.reset_parser = True
            self._new_head()
            self.proxy._upstream_done(self, ex, keep)
        else:
            self._new_head()

    def on_body(self, body: bytes) -> None:
        if self.stale or self.interim:
            return
        ex = self.exchange
        if ex is not None:
            ex.client.response_body(ex, body)

    def on_message_complete(self) -> None:
        if self.stale:
            return
        if self.interim:
            self.interim = False
            return
        ex = self.exchange
        if ex is None or ex.resp_done:
            return
        self.proxy._upstream_done(self, ex, self.parser.should_keep_alive())


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
    ) -> None:
        self.metrics = metrics if metrics is not None else ProxyMetrics()
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.max_header_size = max_header_size
        self.max_body_size = max_body_size
        self.keepalive_timeout = keepalive_timeout
        self.upstream_idle_timeout = upstream_idle_timeout
        self.max_idle_per_backend = max_idle_per_backend
        self.shutdown_grace = shutdown_grace
        self.health = BackendHealth()
        self._services: dict[str, _Service] = {}
        self._routes: dict[str, _Route] = {}
        self._idle: dict[BackendKey, list[_Upstream]] = {}
        self._active_keys: set[BackendKey] = set()
        self._active: set[_Exchange] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._loop_: asyncio.AbstractEventLoop | None = None
        self._time: Callable[[], float] = time.monotonic
        self._tick_handle: asyncio.TimerHandle | None = None
        self._next_sweep = 0.0
        self._clients: set[_ClientConn] = set()
        self._drained: asyncio.Future[None] | None = None
        self._admin: asyncio.Server | None = None
        self._admin_writers: set[asyncio.StreamWriter] = set()
        self._closed = False

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
            route = self._routes[name] = _Route(name, self.metrics)
        svc = _Service(name, host, route)
        try:
            server = await loop.create_server(lambda: _ClientConn(self, svc), host, port, backlog=1024)
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
            route = self._routes[name] = _Route(name, self.metrics)
        if route.table == table:
            return  # unchanged: keep the balancer's sequence going
        balancer = WeightedBalancer(table, previous=route.balancer)
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
            return int(self._admin.sockets[0].getsockname()[1])
        self._ensure_loop()
        try:
            self._admin = await asyncio.start_server(self._admin_connection, host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    errno.EADDRINUSE, f"cannot listen for the proxy admin: port {port} on {host} is in use"
                ) from exc
            raise
        return int(self._admin.sockets[0].getsockname()[1])

    async def close(self) -> None:
        """Stop listening, let requests in flight finish (up to `shutdown_grace` seconds),
        then close every connection, the pools and the admin listener."""
        if self._closed:
            return
        self._closed = True
        if self._admin is not None:
            self._admin.close()
            for writer in list(self._admin_writers):
                writer.close()
        services = list(self._services.values())
        self._services.clear()
        for svc in services:
            self._stop_listening(svc)
        if self._clients and self._loop_ is not None:
            self._drained = self._loop_.create_future()
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(asyncio.shield(self._drained), self.shutdown_grace)
        for conn in list(self._clients):  # those of removed services too
            conn.abort()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for ex in list(self._active):
            if ex.upstream is not None:
                ex.upstream.close()
        self._active.clear()
        for idle in self._idle.values():
            for up in idle:
                up.close()
        self._idle.clear()
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
        return {
            "port": svc.port if svc is not None else None,
            "canary_weight": weight,
            "primary_revision": primary,
            "canary_revision": canary,
            "revisions": {label: revisions[label].summary() for label in sorted(revisions)},
        }

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
            loop = self._loop_ = asyncio.get_running_loop()
            period = min(max(self.read_timeout / 4.0, 0.01), 0.5)
            self._tick_handle = loop.call_later(period, self._tick, period)
        return loop

    def _tick(self, period: float) -> None:
        """Read timeouts of in-flight requests; every second, idle connection sweeps."""
        loop = self._loop
        now = self._time()
        if self._active:
            limit = self.read_timeout
            for ex in [e for e in self._active if e.upstream is not None]:
                up = ex.upstream
                if up is None or now - up.last_activity < limit:
                    continue
                if ex.client.write_paused:
                    up.last_activity = now  # the client is slow to read, not the backend
                    continue
                self._detach(ex, up)
                up.close()
                if ex.rstats is not None:
                    ex.rstats.upstream_error("timeout")
                if ex.resp_started:
                    ex.client.abort_exchange(ex)
                else:
                    ex.client.fail(ex, 504, f"504 upstream timed out for {ex.where()}")
        if now >= self._next_sweep:
            self._next_sweep = now + min(1.0, self.keepalive_timeout / 4, self.upstream_idle_timeout / 4)
            self._sweep(now)
        if not self._closed:
            self._tick_handle = loop.call_later(period, self._tick, period)

    def _sweep(self, now: float) -> None:
        idle_limit = self.upstream_idle_timeout
        for key, idle in list(self._idle.items()):
            alive = []
            for up in idle:
                if up.dead:
                    continue
                if now - up.idle_since >= idle_limit:
                    up.close()
                else:
                    alive.append(up)
            if alive:
                self._idle[key] = alive
            else:
                del self._idle[key]
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

    def _stop_listening(self, svc: _Service) -> None:
        if svc.server is not None:
            svc.server.close()
        for conn in list(svc.conns):
            conn.shutdown()

    def _client_opened(self, conn: _ClientConn) -> None:
        self._clients.add(conn)

    def _client_closed(self, conn: _ClientConn) -> None:
        self._clients.discard(conn)
        if not self._clients and self._drained is not None and not self._drained.done():
            self._drained.set_result(None)

    def _refresh_active_keys(self) -> None:
        keys: set[BackendKey] = set()
        for route in self._routes.values():
            keys |= table_backend_keys(route.table)
        self._active_keys = keys
        for key in [k for k in self._idle if k not in keys]:
            for up in self._idle.pop(key):
                up.close()
        self.health.retain(keys)

    # -- internals: upstream connections ------------------------------------------------------

    def _acquire(self, ex: _Exchange, backend: Backend) -> None:
        key = (backend.host, backend.port)
        idle = self._idle.get(key)
        if idle:
            now = self._time()
            limit = self.upstream_idle_timeout
            while idle:
                up = idle.pop()
                if up.dead:
                    continue
                if now - up.idle_since >= limit:
                    up.close()
                    continue
                up.reused = True
                ex.client.attach(ex, up)
                return
        task = self._loop.create_task(self._connect(ex, backend, key))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _connect(self, ex: _Exchange, backend: Backend, key: BackendKey) -> None:
        loop = self._loop
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, up = await loop.create_connection(lambda: _Upstream(self, key, backend), backend.host, backend.port)
        except TimeoutError:
            self._connect_failed(ex, backend, "connect_timeout", "timed out")
            return
        except OSError as exc:
            reason = "connect_refused" if exc.errno == errno.ECONNREFUSED else "connect_error"
            detail = exc.strerror or str(exc) or type(exc).__name__
            self._connect_failed(ex, backend, reason, detail.lower())
            return
        self.health.mark_ok(backend)
        if ex.aborted or ex.resp_done:
            up.idle_since = self._time()
            self._release(up)
            return
        ex.client.attach(ex, up)

    def _connect_failed(self, ex: _Exchange, backend: Backend, reason: str, detail: str) -> None:
        self.health.mark_failed(backend, self._time())
        if ex.rstats is not None:
            ex.rstats.upstream_error(reason)
        if ex.aborted or ex.resp_done:
            return
        tried = ex.tried
        if tried is None:
            tried = ex.tried = set()
        tried.add(backend)
        pool = ex.pool
        if pool is not None and len(tried) < _MAX_CONNECT_ATTEMPTS:
            nxt = pool.pick(self.health, self._time(), exclude=tried)
            if nxt is not None:
                ex.backend = nxt
                self._acquire(ex, nxt)
                return
        if reason == "connect_timeout":
            ex.client.fail(ex, 504, f"504 upstream connect timed out for {ex.where()}")
        else:
            ex.client.fail(ex, 502, f"502 upstream connection failed for {ex.where()}: {detail}")

    def _detach(self, ex: _Exchange, up: _Upstream) -> None:
        if up.exchange is ex:
            up.exchange = None
        if ex.upstream is up:
            ex.upstream = None
        self._active.discard(ex)
        if up.write_paused:
            up.write_paused = False
            ex.client._resume(_P_UPSTREAM)

    def _release(self, up: _Upstream) -> None:
        if up.dead:
            return
        if up.reset_parser:
            up.reset_parser = False
            up.parser = httptools.HttpResponseParser(up)
        if up.feeding:
            up.stale = True  # ignore whatever the old response's parse still produces
        idle = self._idle.get(up.key)
        if idle is None:
            if up.key not in self._active_keys or self._closed:
                up.close()
                return
            idle = self._idle[up.key] = []
        if len(idle) >= self.max_idle_per_backend:
            up.close()
            return
        up.resume_reading()
        up.interim = False
        idle.append(up)

    def _upstream_done(self, up: _Upstream, ex: _Exchange, keep_alive: bool) -> None:
        """The upstream's response is complete."""
        client = ex.client
        if ex.resp_chunked:
            client._out(b"0\r\n\r\n")
        up.exchange = None
        ex.upstream = None
        self._active.discard(ex)
        if up.write_paused:
            up.write_paused = False
            client._resume(_P_UPSTREAM)
        if keep_alive and ex.request_sent and not up.dead:
            up.idle_since = up.last_activity
            self._release(up)
        else:
            up.close()
        client.response_complete(ex)

    def _upstream_broken(self, up: _Upstream, reason: str) -> None:
        ex = up.exchange
        if ex is None or up.stale:
            up.close()
            return
        self._detach(ex, up)
        up.close()
        if ex.rstats is not None:
            ex.rstats.upstream_error(reason)
        if ex.resp_started:
            ex.client.abort_exchange(ex)
        else:
            ex.client.fail(ex, 502, f"502 invalid response from upstream for {ex.where()}")

    def _upstream_lost(self, up: _Upstream) -> None:
        ex = up.exchange
        if ex is None:
            return  # idle: dropped from the pool lazily
        self._detach(ex, up)
        client = ex.client
        if ex.resp_done or ex.aborted:
            return
        if not ex.resp_started:
            if up.reused and not up.got_bytes and not ex.retried and ex.request_done and not ex.body_bytes:
                # The backend closed an idle keep-alive connection as we reused it: the request
                # (no body) can be sent again on another connection.
                ex.retried = True
                ex.request_sent = False
                backend = ex.backend
                if backend is not None and not self._closed:
                    self._acquire(ex, backend)
                    return
            if ex.rstats is not None:
                ex.rstats.upstream_error("reset")
            client.fail(ex, 502, f"502 upstream closed the connection for {ex.where()}")
            return
        if ex.resp_until_eof:
            # close-delimited response: the end of the connection is the end of the body
            if ex.resp_chunked:
                client._out(b"0\r\n\r\n")
            client.response_complete(ex)
            return
        if ex.rstats is not None:
            ex.rstats.upstream_error("reset")
        client.abort_exchange(ex)

    # -- admin ---------------------------------------------------------------------------------

    async def _admin_connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._admin_writers.add(writer)
        try:
            while not self._closed:
                try:
                    async with asyncio.timeout(60.0):
                        head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, TimeoutError):
                    return
                lines = head.split(b"\r\n")
                request_line = lines[0].split()
                keep = len(request_line) == 3 and request_line[2] == b"HTTP/1.1"
                for line in lines[1:]:
                    lname, _, value = line.partition(b":")
                    lname = lname.strip().lower()
                    if lname == b"connection" and b"close" in value.lower():
                        keep = False
                    elif lname in (b"content-length", b"transfer-encoding"):
                        keep = False  # bodies are not read: do not try to parse what follows
                if len(request_line) != 3:
                    code, ctype, body = 400, "text/plain; charset=utf-8", b"400 bad request\n"
                    keep = False
                    body_out = body
                else:
                    method = request_line[0]
                    path = request_line[1].split(b"?", 1)[0].decode("latin-1")
                    code, ctype, body = self._admin_response(method, path)
                    body_out = b"" if method == b"HEAD" else body
                reason = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed"}[code]
                head_out = (
                    f"HTTP/1.1 {code} {reason}\r\nContent-Type: {ctype}\r\n"
                    f"Content-Length: {len(body)}\r\nCache-Control: no-store\r\n"
                    + ("" if keep else "Connection: close\r\n")
                    + "\r\n"
                ).encode("latin-1")
                writer.write(head_out + body_out)
                await writer.drain()
                if not keep:
                    return
        except (ConnectionError, OSError):
            return
        finally:
            self._admin_writers.discard(writer)
            writer.close()

    def _admin_response(self, method: bytes, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in (b"GET", b"HEAD"):
            return 405, text, b"405 method not allowed\n"
        if path == "/metrics":
            return 200, self.metrics.content_type, self.metrics.render()
        if path == "/stats" or path == "/stats/":
            return 200, "application/json", json.dumps(self.stats()).encode()
        if path.startswith("/stats/"):
            name = path[len("/stats/") :]
            try:
                data = self.stats(name)
            except KeyError:
                return 404, text, f'404 no service "{name}" in the proxy\n'.encode()
            return 200, "application/json", json.dumps(data).encode()
        if path in ("/healthz", "/"):
            return 200, text, b"ok\n"
        return 404, text, b"404 not found\n"
