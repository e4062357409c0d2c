"""The client side of the embedded proxy's HTTP/1.1: a client connection (`ClientConn`: requests
in, responses out), one exchange (`Exchange`: a request and its response), the request header
rules and the proxy's own responses. The backend side is `upstream`.

The request head is still built from httptools' per-header callbacks (a request stream can hold
pipelined requests, so its heads are not at known offsets of the received bytes, as response
heads are); each callback does little: the lines to forward are collected as pieces in one list
and joined once, and what the proxy adds in the common case (X-Forwarded-*) is one prepared
piece per connection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import httptools

from rollouts.platform.embedded.balancer import NO_REVISION

if TYPE_CHECKING:
    from rollouts.platform.embedded.balancer import RevisionPool
    from rollouts.platform.embedded.proxy import ProxyServer, Service
    from rollouts.platform.embedded.proxy_metrics import RevisionStats
    from rollouts.platform.embedded.proxy_mirror import PendingMirror
    from rollouts.platform.embedded.routing import Backend
    from rollouts.platform.embedded.upstream import Upstream

log = logging.getLogger(__name__)

# Request header name (lower case) -> how it is handled; absent = forwarded as is.
H_DROP = 0
H_CONNECTION = 1
H_TRANSFER_ENCODING = 2
H_EXPECT = 3
H_XFF = 4
H_HOST = 5
H_CONTENT_LENGTH = 6
H_XFP = 7
H_XFH = 8
HOP_BY_HOP = {
    b"connection": H_CONNECTION,
    b"keep-alive": H_DROP,
    b"proxy-connection": H_DROP,
    b"proxy-authenticate": H_DROP,
    b"proxy-authorization": H_DROP,
    b"te": H_DROP,
    b"trailer": H_DROP,
    b"transfer-encoding": H_TRANSFER_ENCODING,
    b"upgrade": H_DROP,
}
REQUEST_HEADERS = {
    **HOP_BY_HOP,
    b"expect": H_EXPECT,
    b"x-forwarded-for": H_XFF,
    b"host": H_HOST,
    b"content-length": H_CONTENT_LENGTH,
    b"x-forwarded-proto": H_XFP,
    b"x-forwarded-host": H_XFH,
}

KEEP_UNREAD_BODY = 64 * 1024  # after an early response, read and drop at most this much body

CONNECTION_OPTIONS = frozenset({b"close", b"keep-alive", b"upgrade"})
"""Connection tokens that are options, not names of headers to drop."""

STATUS_LINES = {
    int(status): b"HTTP/1.1 %d %b" % (int(status), status.phrase.encode("latin-1")) for status in HTTPStatus
}
"""Status line (without its CRLF) of each standard code: responses go out with the standard
reason phrase, whatever the backend sent."""

REASONS = {
    400: b"Bad Request",
    405: b"Method Not Allowed",
    413: b"Content Too Large",
    431: b"Request Header Fields Too Large",
    500: b"Internal Server Error",
    502: b"Bad Gateway",
    503: b"Service Unavailable",
    504: b"Gateway Timeout",
}


class Reject(Exception):
    """Raised from a parser callback to answer the client with `code` and stop reading."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class BadResponse(Exception):
    """Raised from an upstream parser callback on a response the proxy cannot forward."""


def connection_tokens(value: bytes, into: set[bytes] | None) -> set[bytes]:
    """The comma-separated tokens of a Connection header, lower case, added to `into`."""
    tokens = into if into is not None else set()
    for token in value.lower().split(b","):
        token = token.strip()
        if token:
            tokens.add(token)
    return tokens


def special_request_header(ex: Exchange, kind: int, name: bytes, value: bytes) -> None:
    """A request header of `REQUEST_HEADERS`: noted on `ex`, and forwarded unless hop-by-hop.

    (The size of a forwarded header is counted from `ex.parts` at the end of the head; that of
    a header that is not forwarded is added to `ex.head_size` here.)"""
    forward = False
    if kind == H_HOST:
        ex.host = value
        forward = True
    elif kind == H_CONTENT_LENGTH:
        ex.content_length = int(value)
        forward = True
    elif kind == H_CONNECTION:
        ex.conn_header = True
        lowered = value.strip().lower()
        if lowered != b"keep-alive" and lowered != b"close":
            ex.tokens = connection_tokens(value, ex.tokens)
            ex.unusual = True
    elif kind == H_EXPECT:
        ex.expect_continue = value.strip().lower() == b"100-continue"
    elif kind != H_DROP:
        ex.unusual = True  # the head is completed by `finish_request_head`, not the fast path
        if kind == H_XFP:
            ex.has_xfp = forward = True
        elif kind == H_XFH:
            ex.has_xfh = forward = True
        elif kind == H_XFF:
            ex.xff = value if not ex.xff else ex.xff + b", " + value
        elif kind == H_TRANSFER_ENCODING:
            ex.req_chunked = True
    if forward:
        ex.parts += (name, b": ", value, b"\r\n")
    else:
        ex.head_size += len(name) + len(value) + 4


def join_request_head(ex: Exchange) -> bytes:
    """The request line and the forwarded headers of `ex`, without the headers that Connection
    names (`ex.parts`: method, " ", url, " HTTP/1.1\\r\\n", then name, ": ", value, CRLF each)."""
    parts = ex.parts
    if ex.tokens:
        named = ex.tokens - CONNECTION_OPTIONS
        if named:
            kept = parts[:4]
            for i in range(4, len(parts), 4):
                if parts[i].lower() not in named:
                    kept += parts[i : i + 4]
                else:
                    ex.head_size += len(parts[i]) + len(parts[i + 2]) + 4  # (counted, not forwarded)
            parts = kept
    return b"".join(parts)


def finish_request_head(ex: Exchange, peer: bytes, host_line: bytes) -> bytes:
    """`ex.head` with what the proxy adds, in the general case: X-Forwarded-* (appended to or
    kept), chunked framing, a missing Host; and the blank line."""
    xff = ex.xff
    parts = [ex.head, b"X-Forwarded-For: ", xff + b", " + peer if xff else peer, b"\r\n"]
    if not ex.has_xfp:
        parts.append(b"X-Forwarded-Proto: http\r\n")
    if not ex.has_xfh and ex.host is not None:
        parts += (b"X-Forwarded-Host: ", ex.host, b"\r\n")
    if ex.req_chunked:
        parts.append(b"Transfer-Encoding: chunked\r\n")
    if ex.host is None:
        parts.append(host_line)
    parts.append(b"\r\n")
    return b"".join(parts)


# -- the proxy's own responses ----------------------------------------------------------------


def local_response(code: int, text: str, *, keep_alive: bool, http11: bool, head_only: bool) -> bytes:
    """A complete response from the proxy itself: `text` and a newline, as text/plain."""
    body = text.encode("utf-8", "replace") + b"\n"
    conn = b"" if keep_alive and http11 else b"keep-alive" if keep_alive else b"close"
    head = b"HTTP/1.1 %d %b\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\n%b\r\n" % (
        code,
        REASONS.get(code, b"Error"),
        len(body),
        b"Connection: " + conn + b"\r\n" if conn else b"",
    )
    return head if head_only else head + body


# -- one exchange -----------------------------------------------------------------------------


class Exchange:
    """One request and its response.

    No `__slots__` and no `__init__`: the defaults live on the class, so that a new exchange
    (one per request) stores only what differs; `ClientConn.on_url` sets `client` and `parts`.
    """

    client: ClientConn
    parts: list[bytes]  # the head to forward: [method, " ", url, " HTTP/1.1\r\n", name, ": ", value, ...]
    t0 = 0.0
    head_size = 0  # of the headers not forwarded (the others are counted from `head`)
    head = b""  # `parts` joined; then, from `ClientConn._start` on, the whole head to send
    host: bytes | None = None
    xff = b""
    has_xfp = False
    has_xfh = False
    tokens: set[bytes] | None = None
    conn_header = False  # the request has a Connection header
    unusual = False  # the head needs `finish_request_head` (X-Forwarded-*, chunked, Connection tokens)
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
    upstream: Upstream | None = None
    tried: set[Backend] | None = None
    retried = False
    body_buf: list[bytes] | None = None
    body_buffered = 0
    mirror: PendingMirror | None = None  # a mirrored copy waiting for this request's body
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

    def where(self) -> str:
        pool = self.pool
        label = pool.label if pool is not None else NO_REVISION
        pod = f", pod {self.backend.pod}" if self.backend is not None else ""
        return f'service "{self.client.svc.name}" (revision {label}{pod})'


# Why a client connection's reading is paused (bit flags; reading resumes when none is left).
_P_PIPELINE = 1  # too many complete requests wait for the responses of earlier ones
_P_BUFFER = 2  # request body buffered while the upstream connection is being opened
_P_UPSTREAM = 4  # the upstream's write buffer is full
_P_STOPPED = 8  # the connection will close after the pending responses

_LINGER_SECONDS = 2.0
# Answered requests are counted in batches (`RevisionStats.drain`) of at most this many (and by
# the proxy's timer): about 0.3 ms of work each, where a timer-only drain at 20k requests/s was
# 10k at a time, a 6 ms pause every half second, which showed in the p99 latency.
_DRAIN_BATCH = 256
_BUFFER_HIGH_WATER = 256 * 1024
# Pipelined requests read ahead of the one being answered. Reading goes on while a response is
# awaited (so that a client closing its connection is noticed at once) up to this many.
_MAX_PIPELINED = 16


class ClientConn(asyncio.Protocol):
    """A connection from a client to a service listener."""

    def __init__(self, proxy: ProxyServer, svc: Service) -> None:
        self.proxy = proxy
        self.svc = svc
        self.route = svc.route
        self._pool = proxy._pool
        self._time = proxy._time
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b""
        # What the proxy adds to a request head in the common case, up to the Host value.
        self._forwarded = b"X-Forwarded-For: \r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: "
        self._health = proxy.health
        self._building: Exchange | None = None
        self._head_size = 0  # bytes received since the last head ended (roughly; see `data_received`)
        self._in_head = True
        self._current: Exchange | None = None
        self._parsing: Exchange | None = None
        self._queue: deque[Exchange] = deque()
        self._paused = 0
        self.write_paused = False
        self._closed = False
        self.closing = False
        self._lingering = False
        self._linger_handle: asyncio.TimerHandle | None = None
        self._parser_dead = False
        self._deaf = False  # closed, lingering or parser dead: `data_received` ignores input
        self._in_advance = False
        self._in_feed = False
        self._dirty: list[Upstream] = []
        self.ocork = False  # while set, `out` collects into `obuf` (see `flush_out`)
        self.obuf: list[bytes] = []
        self.writable = False  # connected, not closed, not lingering
        self.send: Callable[[bytes], object] = self.obuf.append  # the transport's, once connected
        self.idle_since = self._time()

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        peer = transport.get_extra_info("peername")
        if isinstance(peer, tuple) and peer:
            self.peer = str(peer[0]).encode("ascii", "replace")
        self._forwarded = b"X-Forwarded-For: %b\r\nX-Forwarded-Proto: http\r\nX-Forwarded-Host: " % self.peer
        self.send = self.transport.write
        self.writable = True
        self.svc.conns.add(self)
        self.proxy._client_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._deaf = True
        self.writable = False
        if self._linger_handle is not None:
            self._linger_handle.cancel()
            self._linger_handle = None
        self.obuf.clear()
        ex = self._current
        self._current = None
        self._queue.clear()
        self._parsing = None
        if ex is not None and not ex.resp_done:
            ex.aborted = True
            up = ex.upstream
            if up is not None:
                self._pool.detach(ex, up)
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
        if self._deaf:
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
            if isinstance(cause, Reject):
                self._parse_failed(cause.code, cause.text)
            else:
                log.error("embedded proxy: error handling a request", exc_info=cause or exc)
                self._parse_failed(500, "500 internal proxy error")
        except httptools.HttpParserUpgrade:
            # Upgrade/CONNECT: the head was handled as a plain request (Upgrade removed); what
            # follows is not HTTP, so stop reading and close after the response.
            self._parser_dead = self._deaf = True
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
            ex = self._building = Exchange()
            ex.client = self
            ex.parts = [b"", b" ", url, b" HTTP/1.1\r\n"]  # [0]: the method, when known
        else:
            ex.parts[2] += url

    def on_header(self, name: bytes, value: bytes) -> None:
        # Called per request header: kept short. A forwarded header goes to `ex.parts` as
        # pieces, joined once in `_start`, and its size is counted from there at the end of
        # the head (see `on_headers_complete`).
        ex = self._building
        if ex is None:
            return
        lname = name.lower()
        kind = REQUEST_HEADERS.get(lname)
        if kind is None:
            if lname[0] != 112 or lname[:6] != b"proxy-":  # (112: "p")
                ex.parts += (name, b": ", value, b"\r\n")
            else:
                ex.head_size += len(name) + len(value) + 4
        elif kind == H_HOST:
            ex.host = value  # (inline: the one special header of nearly every request)
            ex.parts += (name, b": ", value, b"\r\n")
        else:
            special_request_header(ex, kind, name, value)

    def on_headers_complete(self) -> None:
        ex = self._building
        self._building = None
        if ex is None or self._parser_dead:
            return  # the connection closes after the pending responses: ignore what follows
        self._in_head = False
        self._head_size = 0
        parser = self.parser
        method = ex.parts[0] = parser.get_method()
        proxy = self.proxy
        # The head's size: what is forwarded (joined here, once) and what is not (counted as
        # it came, in `ex.head_size`).
        head = ex.head = join_request_head(ex)
        if ex.head_size + len(head) > proxy.max_header_size:
            raise Reject(431, "431 request header fields too large")
        ex.t0 = now = self._time()
        if method == b"HEAD":
            ex.is_head = True
        # Without a Connection header, only HTTP/1.1 is keep-alive: no need to ask the version.
        if not parser.should_keep_alive():
            ex.keep_alive = False
            ex.http11 = parser.get_http_version() == "1.1"
        elif ex.conn_header:
            ex.http11 = parser.get_http_version() == "1.1"
        if self.closing:
            ex.keep_alive = False
        if parser.should_upgrade():
            ex.keep_alive = False
            if method == b"CONNECT":
                ex.local = (405, "405 CONNECT is not supported by this proxy")
                ex.discard = True
        cl = ex.content_length
        if cl is not None and cl > proxy.max_body_size:
            ex.local = (413, f"413 request body too large (limit {proxy.max_body_size} bytes)")
            ex.keep_alive = False
            ex.discard = True
        self._parsing = ex
        if self._current is None:
            self._current = ex
            self._start(ex, now)
        else:
            self._queue.append(ex)

    def on_body(self, body: bytes) -> None:
        ex = self._parsing
        if ex is None:
            return
        ex.body_bytes += len(body)
        if ex.discard:
            if ex.body_bytes > KEEP_UNREAD_BODY and not ex.resp_done:
                return
            if ex.body_bytes > KEEP_UNREAD_BODY:
                ex.keep_alive = False
                self._linger_close()
            return
        if ex.body_bytes > self.proxy.max_body_size:
            text = f"413 request body too large (limit {self.proxy.max_body_size} bytes)"
            self._reject_body(ex, 413, text)
            return
        mirror = ex.mirror
        if mirror is not None:
            mirror.add(body, ex)
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
                self._exchange_done(ex, self._time())
        elif len(self._queue) >= _MAX_PIPELINED:
            self._pause(_P_PIPELINE)

    # -- request side --------------------------------------------------------------------------

    def _send_body(self, ex: Exchange, data: bytes) -> None:
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

    def _start(self, ex: Exchange, now: float) -> None:
        """Route the exchange (now at the head of the queue) and send it upstream."""
        route = self.route
        if ex.local is not None:
            local = ex.rstats = route.revision_stats(NO_REVISION)
            local.in_flight += 1
            self._local_response(ex, *ex.local)
            return
        balancer = route.balancer
        pool = balancer.fixed
        if pool is None:
            # Weighted, or a table with routes (header routes, mirrors): see `proxy_routes`.
            rules = balancer.rules
            pool = balancer.pick() if rules is None else rules.route(ex, balancer, self)
        ex.pool = pool
        rstats = pool.stats
        if rstats is None:
            rstats = pool.stats = route.revision_stats(pool.label)
        ex.rstats = rstats
        rstats.in_flight += 1
        health = self._health
        backends = pool.backends
        if health.failed_until or not backends:
            backend = pool.pick(health, now)
            if backend is None:
                text = f'503 no ready pod for service "{self.svc.name}" (revision {pool.label})'
                self._local_response(ex, 503, text)
                return
        else:
            # `pool.pick()` inline: round robin, no failed pod to skip
            turn = pool.turn
            pool.turn = turn + 1
            backend = backends[turn % len(backends)]
        ex.backend = backend
        if ex.unusual or ex.host is None:
            host_line = b"Host: %b:%d\r\n" % (backend.host.encode("idna"), backend.port)
            ex.head = finish_request_head(ex, self.peer, host_line)
        else:
            ex.head = b"".join((ex.head, self._forwarded, ex.host, b"\r\n\r\n"))
        if ex.expect_continue and not ex.request_done:
            self.out(b"HTTP/1.1 100 Continue\r\n\r\n")
        up = self._pool.acquire(ex, backend, now)
        if up is not None:
            self.attach(ex, up, now)

    def attach(self, ex: Exchange, up: Upstream, now: float) -> None:
        """`up` is connected (or taken from the pool): send the request head and buffered body."""
        up.exchange = ex
        ex.upstream = up
        up.last_activity = now
        up.stale = False
        data = ex.head
        buf = ex.body_buf
        if buf is not None:
            data = b"".join([data, *buf])
            ex.body_buf = None
            ex.body_buffered = 0
            self._resume(_P_BUFFER)
        if ex.request_done:
            ex.request_sent = True
        if self._in_feed and (ex.content_length or ex.req_chunked):
            # body bytes of this read follow: they leave with the head (see `_flush_upstreams`)
            if not up.wbuf:
                self._dirty.append(up)
            up.wbuf.append(data)
        elif not up.dead:
            up.send(data)
        if self.write_paused:
            up.pause_reading()

    def _reject_body(self, ex: Exchange, code: int, text: str) -> None:
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
        self._parser_dead = self._deaf = True
        ex = self._current
        if ex is None:
            rstats = self.route.revision_stats(NO_REVISION)
            rstats.record(code, 0.0)
            self.out(local_response(code, text, keep_alive=False, http11=True, head_only=False))
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
        self._parser_dead = self._deaf = True
        self.closing = True
        self._pause(_P_STOPPED)
        if self._parsing is not None and self._parsing is not self._current:
            with contextlib.suppress(ValueError):
                self._queue.remove(self._parsing)
            self._parsing = None

    # -- response side -------------------------------------------------------------------------

    def out(self, data: bytes) -> None:
        if self.ocork:
            self.obuf.append(data)
        elif self.writable:
            self.send(data)

    def flush_out(self) -> None:
        self.ocork = False
        obuf = self.obuf
        if obuf:
            data = b"".join(obuf)
            obuf.clear()
            if self.writable:
                self.send(data)

    def _local_response(self, ex: Exchange, code: int, text: str) -> None:
        """Answer the current exchange from the proxy (its response has not started)."""
        up = ex.upstream
        if up is not None:
            self._pool.detach(ex, up)
            up.close()
        keep = ex.keep_alive and not self.closing
        if keep and not ex.request_done:
            cl = ex.content_length
            keep = not ex.req_chunked and cl is not None and cl - ex.body_bytes <= KEEP_UNREAD_BODY
        ex.keep_alive = keep
        ex.status = code
        ex.resp_started = True
        ex.discard = True
        ex.body_buf = None
        self._resume(_P_BUFFER)
        self.out(local_response(code, text, keep_alive=keep, http11=ex.http11, head_only=ex.is_head))
        self.response_complete(ex, self._time())

    def fail(self, ex: Exchange, code: int, text: str) -> None:
        """The upstream failed before the response started."""
        if ex.aborted or ex.resp_done or self._closed:
            return
        self._local_response(ex, code, text)

    def abort_exchange(self, ex: Exchange) -> None:
        """The response started but cannot be completed: close the client connection."""
        up = ex.upstream
        if up is not None:
            self._pool.detach(ex, up)
            up.close()
        ex.resp_done = True
        self._finish(ex)
        self._current = None
        self.closing = True
        self.flush_out()
        if self.transport is not None and not self._closed:
            self.transport.close()

    def response_complete(self, ex: Exchange, now: float) -> None:
        """The response of `ex` is complete (at `now`)."""
        ex.resp_done = True
        if not ex.finished:
            ex.finished = True
            rstats = ex.rstats
            if rstats is not None:
                rstats.in_flight -= 1
                pending = rstats.pending
                if pending is not None:
                    pending.append((ex.status, now - ex.t0, now))  # counted in batches:
                    if len(pending) >= _DRAIN_BATCH:
                        rstats.drain()  # (small ones, so that none stalls the loop for long)
                else:
                    rstats.record(ex.status, now - ex.t0)
        if ex.request_done:
            if ex is self._current:
                if ex.keep_alive and not (self.closing or self._queue or self._in_advance or self._paused):
                    # `_exchange_done`, inline for the common case: the connection waits for the next request
                    self._current = None
                    self.idle_since = now
                else:
                    self._exchange_done(ex, now)
        else:
            ex.discard = True
            ex.body_buf = None
            self._resume(_P_BUFFER)
            if not ex.keep_alive:
                self._current = None
                self._linger_close()

    def _finish(self, ex: Exchange) -> None:
        if ex.finished:
            return
        ex.finished = True
        rstats = ex.rstats
        if rstats is not None:
            now = self._time()
            rstats.finish(ex.status, now - ex.t0, now)

    def _exchange_done(self, ex: Exchange, now: float) -> None:
        self._current = None
        if not ex.keep_alive or self.closing:
            self._linger_close()
            return
        if self._in_advance:
            return
        queue = self._queue
        if queue:
            self._in_advance = True
            try:
                while self._current is None and queue and not self._closed and not self._lingering:
                    nxt = queue.popleft()
                    self._current = nxt
                    self._start(nxt, now)
            finally:
                self._in_advance = False
            if self._closed or self._lingering:
                return
        if self._current is None:
            self.idle_since = now
            if self.closing:
                self._linger_close()
                return
        if self._paused & _P_PIPELINE and len(queue) < _MAX_PIPELINED:
            self._resume(_P_PIPELINE)

    # -- connection state ----------------------------------------------------------------------

    def upstream_write_paused(self) -> None:
        self._pause(_P_UPSTREAM)

    def upstream_write_resumed(self) -> None:
        self._resume(_P_UPSTREAM)

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
    def current(self) -> Exchange | None:
        return self._current

    def _linger_close(self) -> None:
        """Close after the pending output, reading (and dropping) what the client still sends
        for a moment, so that unread request data does not turn the close into a reset."""
        if self._closed or self._lingering:
            return
        self.flush_out()
        self._lingering = self._deaf = True
        self.writable = False
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
        self.closing = True
        if self.transport is not None and (self._lingering or self.is_idle()):
            self.flush_out()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.abort()
