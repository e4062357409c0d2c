"""The client side of the embedded proxy's HTTP/1.1: a client connection (`ClientConn`: requests
in, responses out), one exchange (`Exchange`: a request and its response) and the proxy's own
responses. Request heads are read in `proxy_request`; the backend side is `upstream`.

How requests are read: httptools (llhttp) checks every byte a client sends, but makes no Python
call per header or for the URL. The connection cuts each message out of the received bytes
itself (a head ends at the first blank line; a body is framed by its Content-Length or, chunked,
followed by `proxy_request.ChunkedEnd`) and feeds llhttp one message at a time, so it always
knows where a head is. llhttp raises on anything that is not HTTP, hands over the body
(de-chunked) through `on_body`, and counts each message end (`on_message_complete`, a C callable:
no Python frame per request), which the connection checks against its own framing: where they
disagree the request is refused (400).

The common case takes a shorter way: a head already seen (`proxy_request.HeadMemo`: only heads
without a body, keep-alive, with a Host) that arrives whole in one read is used as it is, with
no parsing at all (llhttp's verdict on the same bytes would be the same, and its parser is at
the start of a message before and after).
"""

from __future__ import annotations

import asyncio
import contextlib
import functools
import logging
from collections import deque
from collections.abc import Callable
from http import HTTPStatus
from typing import TYPE_CHECKING, cast

import httptools

from rollouts.platform.embedded.balancer import NO_REVISION
from rollouts.platform.embedded.proxy_request import ChunkedEnd, RequestHead

if TYPE_CHECKING:
    from rollouts.platform.embedded.balancer import RevisionPool
    from rollouts.platform.embedded.proxy import ProxyServer, Service
    from rollouts.platform.embedded.proxy_metrics import RevisionStats
    from rollouts.platform.embedded.proxy_mirror import PendingMirror
    from rollouts.platform.embedded.routing import Backend
    from rollouts.platform.embedded.upstream import Upstream

log = logging.getLogger(__name__)

KEEP_UNREAD_BODY = 64 * 1024  # after an early response, read and drop at most this much body

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
    """Raised while reading a request to answer the client with `code` and stop reading."""

    def __init__(self, code: int, text: str) -> None:
        super().__init__(text)
        self.code = code
        self.text = text


class BadResponse(Exception):
    """Raised from an upstream parser callback on a response the proxy cannot forward."""


_BAD_REQUEST = "400 bad request"


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
    (one per request) stores only what differs; the connection sets `client` and `info`. (The
    few defaults read on the shortest way are set too: see `ClientConn.data_received`. A slotted
    class with an `__init__` setting every field cost more per request.)
    """

    client: ClientConn
    info: RequestHead  # what the head says (shared by identical heads: read only)
    t0 = 0.0
    head = b""  # the head sent upstream, from `ClientConn._start` on
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
# After this many reads in a row that were not a head of the memo, a connection stops looking
# its heads up (and adding them) for `_MEMO_PAUSE` reads: a client whose every head differs (a
# request id, a trace header) then costs the memo nothing.
_MEMO_TRIES = 64
_MEMO_PAUSE = 4096


class ClientConn(asyncio.Protocol):
    """A connection from a client to a service listener."""

    def __init__(self, proxy: ProxyServer, svc: Service) -> None:
        self.proxy = proxy
        self.svc = svc
        self.route = svc.route
        self._pool = proxy._pool
        self._idle = proxy._pool.idle  # (the pool's connections, read directly by `_start`)
        self._time = proxy._time
        self._memo = proxy.heads
        self._known = proxy.heads.heads  # read directly on the shortest way (`data_received`)
        self.transport: asyncio.Transport | None = None
        # Message ends llhttp has seen since the last feed began: `on_message_complete` is a C
        # callable (no Python frame per request), acted upon by `_receive_head`/`_receive_body`.
        self._ends: list[None] = []
        self.on_message_complete = functools.partial(list.append, self._ends, None)
        # No `on_url`/`on_header`/`on_headers_complete`: see the module doc.
        self.parser = httptools.HttpRequestParser(self)
        self.peer = b""
        self._health = proxy.health
        # Reading: a head begun in an earlier read; what is left of a body being read.
        self._hbuf = bytearray()
        self._body_left = 0
        self._chunks: ChunkedEnd | None = None
        self._misses = 0  # reads in a row that were not a known head (see `_MEMO_TRIES`)
        self._upgraded = False
        # True while reading can take the shortest way: between messages, nothing left over,
        # not closing (see the module doc).
        self._fast = False
        # The last forwarded head built and its analysis: a keep-alive client repeating a request
        # gets it again without a join.
        self._memo_info: RequestHead | None = None
        self._memo_head = b""
        self._current: Exchange | None = None
        self._parsing: Exchange | None = None  # the exchange whose request body is being read
        self._queue: deque[Exchange] = deque()
        self._paused = 0
        self.write_paused = False
        self._closed = False
        self.closing = False
        self._lingering = False
        self._linger_handle: asyncio.TimerHandle | None = None
        self._deaf = False  # closed, lingering or the request stream broken: input is ignored
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
        self.send = self.transport.write
        self.writable = True
        self._fast = True
        self.svc.conns.add(self)
        self.proxy._client_opened(self)

    def connection_lost(self, exc: Exception | None) -> None:
        self._closed = self._deaf = True
        self._fast = self.writable = False
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

    def _begin_plain(self, ex: Exchange, now: float) -> None:
        """Start (or queue) a plain request's exchange: no body, keep-alive HTTP/1.1, a Host
        (what the memo keeps), whole in hand."""
        ex.is_head = ex.info.is_head
        ex.request_done = True
        ex.t0 = now
        # (the defaults read on the way, set: a read that falls back to the class is not
        # specialised by CPython 3.11 and costs more than this)
        ex.keep_alive = ex.http11 = True
        ex.finished = ex.expect_continue = False
        ex.local = ex.body_buf = None
        if self._current is None:
            self._current = ex
            self._start(ex, now)
        else:
            self._enqueue(ex)

    def data_received(self, data: bytes) -> None:
        if self._fast:
            misses = self._misses
            info = self._known.get(data) if misses < _MEMO_TRIES else None
            if info is not None:
                if misses:
                    self._misses = 0
                # A known head, whole, with no body: nothing to parse (see the module doc).
                ex = Exchange()
                ex.client = self
                ex.info = info
                self._begin_plain(ex, self._time())
                return
            # (a client whose heads do not repeat stops using the memo for a while)
            self._misses = 0 if misses > _MEMO_TRIES + _MEMO_PAUSE else misses + 1
        if not self._deaf:
            self._receive(data)

    # -- reading requests ----------------------------------------------------------------------

    def _receive(self, data: bytes) -> None:
        """Cut `data` into messages (heads, bodies) and feed them to llhttp one at a time."""
        self._in_feed = True
        try:
            while data and not self._deaf:
                if self._body_left or self._chunks is not None:
                    data = self._receive_body(data)
                else:
                    data = self._receive_head(data)
        except Reject as exc:
            self._parse_failed(exc.code, exc.text)
        except httptools.HttpParserCallbackError as exc:
            log.error("embedded proxy: error handling a request", exc_info=exc.__context__ or exc)
            self._parse_failed(500, "500 internal proxy error")
        except httptools.HttpParserError:
            self._parse_failed(400, _BAD_REQUEST)
        finally:
            self._in_feed = False
            if self._dirty:
                self._flush_upstreams()
            self._fast = not (self._deaf or self.closing or self._hbuf or self._body_left or self._chunks is not None)

    def _receive_head(self, data: bytes) -> bytes:
        """Bytes of a head: once it is complete, start its exchange. Returns what follows it."""
        hbuf = self._hbuf
        seen = len(hbuf)
        start = 0
        buf: bytes | bytearray
        if seen:
            hbuf += data
            buf = hbuf
            end = hbuf.find(b"\r\n\r\n", seen - 3 if seen > 3 else 0)
        else:
            if data[0] == 13 or data[0] == 10:
                start = len(data) - len(data.lstrip(b"\r\n"))  # llhttp skips blank lines here
            buf = data
            end = data.find(b"\r\n\r\n", start)
        limit = self.proxy.max_header_size
        if end < 0:
            try:
                self.parser.feed_data(data)  # (anything that cannot begin a request is refused at once)
            except httptools.HttpParserUpgrade:  # (cannot be: the head is not complete)
                self._upgraded = True
            if not seen:
                hbuf += data[start:]
            if len(hbuf) > limit:
                raise Reject(431, "431 request header fields too large")
            return b""
        cut = end + 4 - seen  # the end of the head in `data`
        key = data if (cut == len(data) and not start and not seen) else bytes(buf[start : end + 4])
        if seen:
            hbuf.clear()
        if len(key) - 2 > limit:
            raise Reject(431, "431 request header fields too large")
        ends = self._ends
        ends.clear()
        upgraded = False
        try:
            self.parser.feed_data(data if cut == len(data) else data[:cut])
        except httptools.HttpParserUpgrade:
            # Upgrade/CONNECT: the request is handled as a plain one (Upgrade removed); llhttp
            # ends its message with its head, what follows is the other protocol: reading stops
            # after it and the connection closes after the response.
            upgraded = self._upgraded = True
        try:
            info = self._memo.analyse(key, self._misses < _MEMO_TRIES)
        except ValueError as exc:  # (llhttp accepted what the analysis cannot read)
            raise Reject(400, _BAD_REQUEST) from exc
        ex = Exchange()
        ex.client = self
        ex.info = info
        if info.memo and ends and not (upgraded or self.closing):
            # The common request (what the memo keeps: no body, keep-alive HTTP/1.1, a Host):
            # the exchange as the memo's way makes it (see `data_received`).
            self._begin_plain(ex, self._time())
            return data[cut:] if cut < len(data) else b""
        ex.t0 = now = self._time()
        # (the exchange's defaults are the common request's: only what differs is set)
        if info.is_head:
            ex.is_head = True
        if not info.http11:
            ex.http11 = False
        if not info.keep_alive or self.closing or upgraded:
            ex.keep_alive = False
        cl = info.content_length
        if cl is not None:
            ex.content_length = cl
            max_body = self.proxy.max_body_size
            if cl > max_body:
                ex.local = (413, f"413 request body too large (limit {max_body} bytes)")
                ex.keep_alive = False
                ex.discard = True
        if info.expect_continue:
            ex.expect_continue = True
        if info.upgrade:
            ex.keep_alive = False
            if info.connect:
                ex.local = (405, "405 CONNECT is not supported by this proxy")
                ex.discard = True
        if upgraded:
            ex.request_done = True
        elif cl:
            self._body_left = cl
            self._parsing = ex
        elif info.chunked:
            ex.req_chunked = True
            self._chunks = ChunkedEnd()
            self._parsing = ex
        elif not ends:
            raise Reject(400, _BAD_REQUEST)  # llhttp did not see the message end here
        else:
            ex.request_done = True
        if self._current is None:
            self._current = ex
            self._start(ex, now)
        else:
            self._enqueue(ex)
        if upgraded:
            self._stop_reading()
            return b""
        return data[cut:] if cut < len(data) else b""

    def _receive_body(self, data: bytes) -> bytes:
        """Bytes of a request body (fed to llhttp, which gives them to `on_body`). Returns what
        follows the body."""
        ends = self._ends
        ends.clear()
        chunks = self._chunks
        if chunks is None:
            left = self._body_left
            if len(data) > left:
                piece, rest = data[:left], data[left:]
            else:
                piece, rest = data, b""
            self._body_left = left - len(piece)
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:  # (cannot be: see `_receive_head`)
                self._upgraded = True
            done = self._body_left == 0
        else:
            try:
                end = chunks.scan(data)
            except ValueError as exc:
                raise Reject(400, _BAD_REQUEST) from exc
            if end < 0:
                piece, rest = data, b""
            else:
                piece, rest = data[:end], data[end:]
                self._chunks = None
            try:
                self.parser.feed_data(piece)
            except httptools.HttpParserUpgrade:  # (cannot be: see `_receive_head`)
                self._upgraded = True
            done = end >= 0
        if self._upgraded:
            self._body_left = 0
            self._chunks = None
            if ends:
                self._request_complete()
            self._stop_reading()
            return b""
        if len(ends) != done:
            raise Reject(400, _BAD_REQUEST)  # llhttp and the framing disagree on the message end
        if done:
            self._request_complete()
        return rest

    def _stop_reading(self) -> None:
        self._deaf = True
        self._fast = False
        self._pause(_P_STOPPED)

    def _enqueue(self, ex: Exchange) -> None:
        """A request that waits for the responses of earlier ones."""
        queue = self._queue
        queue.append(ex)
        if len(queue) >= _MAX_PIPELINED:
            self._pause(_P_PIPELINE)

    # -- httptools callbacks -----------------------------------------------------------------

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

    def _request_complete(self) -> None:
        """The body of the request being read has all come."""
        ex = self._parsing
        self._parsing = None
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
        backends = pool.backends
        if self._health.failed_until or not backends:
            backend = pool.pick(self._health, now)
            if backend is None:
                text = f'503 no ready pod for service "{self.svc.name}" (revision {pool.label})'
                self._local_response(ex, 503, text)
                return
            key = (backend.host, backend.port)
        else:
            # `pool.pick()` inline: round robin, no failed pod to skip
            turn = pool.turn
            pool.turn = turn + 1
            i = turn % len(backends)
            backend = backends[i]
            key = pool.keys[i]
        ex.backend = backend
        info = ex.info
        if info is self._memo_info:
            ex.head = self._memo_head
        elif info.host is not None:
            # `info.forwarded`, inline (the head does not depend on the backend)
            xff = info.xff
            peer = self.peer
            head = b"".join(
                (info.prefix, b"X-Forwarded-For: ", xff + b", " + peer if xff else peer, b"\r\n", info.suffix, b"\r\n")
            )
            ex.head = self._memo_head = head
            self._memo_info = info
        else:
            ex.head = info.forwarded(self.peer, backend)
        if ex.expect_continue and not ex.request_done:
            self.out(b"HTTP/1.1 100 Continue\r\n\r\n")
        idle = self._idle.get(key)
        if idle and ex.request_done and ex.body_buf is None and not self.write_paused:
            # The pool's `acquire` and `attach`, inline for the common case: a pooled connection
            # for a request that is all here.
            pooled = idle.pop()
            if not pooled.dead and now - pooled.idle_since < self._pool.idle_timeout:
                pooled.exchange = ex
                ex.upstream = pooled
                pooled.last_activity = now
                pooled.stale = False
                ex.request_sent = True
                pooled.send(ex.head)
                return
            pooled.close()
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
        self._deaf = True
        self._fast = False
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
        self._deaf = self.closing = True
        self._fast = False
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
        self._fast = False
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
        self._fast = self.writable = False
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
        self._fast = False
        if self.transport is not None and (self._lingering or self.is_idle()):
            self.flush_out()
            self.transport.close()

    def abort(self) -> None:
        if self.transport is not None and not self._closed:
            self.transport.abort()
