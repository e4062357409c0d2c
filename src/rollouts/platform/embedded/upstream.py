"""Connections from the embedded proxy to backends: the protocol of one connection (`Upstream`),
the pool that opens, reuses and closes them (`UpstreamPool`), and how a response head is
forwarded (`filter_response_headers`).

* Connections are pooled per backend address and reused while the backend keeps them alive
  (LIFO; idle ones are closed after `idle_timeout`, and at once when the backend leaves every
  routing table). A request that finds its reused connection closed before any response byte,
  with no request body, is retried once on a new connection.
* A response head is forwarded as the raw bytes it arrived in, without its hop-by-hop lines,
  instead of being parsed into names and values by httptools' `on_header` callback and
  serialised again: a Python call per header was the largest single cost of a proxied request.
  The lines are told apart by their bytes (`filter_response_head`: a split into lines, each
  looked up in a memo of the lines seen before). httptools still parses every byte (framing,
  validation, keep-alive); the `Upstream` just has no `on_header` method, so the parser makes no
  call per header. llhttp is strict (CRLF line ends, no obs-fold, no space before the colon),
  so a header line always starts right after a CRLF and the first blank line ends the head,
  which is what the filter relies on. A connection serves one exchange at a time (no
  pipelining towards backends), so the head starts at the first byte received after the
  request was sent; it is sliced out of those bytes when the parser says it is complete.
  (Trailers of a chunked response are dropped, as before; they no longer leak into the next
  response's head.)
* The common response, whole in one read and framed by its Content-Length, for a request all
  sent (`Upstream._whole`), is framed by the proxy from its head and forwarded in one write; a
  second parser (`whole_parser`) checks every byte of it without any Python call: its only
  callback counts message ends in C, and the proxy checks that llhttp saw exactly one, at the
  end of those bytes (its framing and the proxy's cannot differ: same Content-Length line,
  llhttp refuses two; the status is read as llhttp reads it, 1xx/204/304 excluded). The two
  parsers are each at the start of a message whenever a response begins, so either can take
  it. Anything else (a head or body in pieces, chunked, close-delimited, HEAD, 1xx, extra
  bytes) takes the general way through the `Upstream`'s own parser and its callbacks.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import logging
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, cast

import httptools

from rollouts.platform.embedded.balancer import BackendHealth, BackendKey
from rollouts.platform.embedded.proxy_http import KEEP_UNREAD_BODY, STATUS_LINES, BadResponse, Exchange
from rollouts.platform.embedded.proxy_request import CONNECTION_OPTIONS, connection_tokens
from rollouts.platform.embedded.routing import Backend

if TYPE_CHECKING:
    from rollouts.platform.embedded.proxy_http import ClientConn

__all__ = ["Upstream", "UpstreamPool"]

log = logging.getLogger(__name__)

MAX_CONNECT_ATTEMPTS = 3
_MAX_KNOWN = 256
# After this many responses in a row whose head was not in the memo, a connection stops looking
# heads up (and adding them) for `_KNOWN_PAUSE` responses: a backend whose every head differs
# (a request id, a cookie) then costs the memo nothing.
_KNOWN_TRIES = 64
_KNOWN_PAUSE = 4096
# A response head larger than this is refused (502): the head is buffered until complete.
MAX_RESPONSE_HEAD = 1024 * 1024


# -- response heads ---------------------------------------------------------------------------

# What `filter_response_headers` found (bit flags).
R_LENGTH = 1  # Content-Length: the body is framed by it, forwarded as is
R_CHUNKED = 2  # Transfer-Encoding (the parser de-chunks; the proxy re-frames)
R_CLOSE = 4  # Connection: close
R_KEEP_ALIVE = 8  # Connection: keep-alive


def filter_response_headers(block: bytes) -> tuple[bytes, int]:
    """The header block of a response head without its hop-by-hop lines, and `R_*` flags.

    `block` is the head between the status line and the blank line, every header line preceded
    by its CRLF (`b"\\r\\nServer: x\\r\\nContent-Length: 2"`); so is the result (the lines
    kept in their order). Removed: the hop-by-hop headers (Connection, Keep-Alive, Proxy-*, TE,
    Trailer, Transfer-Encoding, Upgrade) and the headers that Connection names.
    """
    block, flags, _ = filter_response_head(block)
    return block, flags


# The first bytes of the header names the proxy must look at: a line that starts with any other
# is forwarded as it is.
_SPECIAL_FIRST = frozenset(b"cCkKpPtTuU"[i : i + 1] for i in range(10))
# What a header line is, by its bytes: 0 an end-to-end line (kept); > 0 a hop-by-hop line
# (dropped), `_DROP` with its `R_*` flags; < 0 a Content-Length line (kept), -1 - the length;
# `_COMPLEX` a Connection line that names other headers (the whole block is then read by
# `_filter_named`). A backend sends mostly the same lines (only a few values vary: a date, a
# request id), so this is mostly a hit, looked up in C (`map`). Bounded: cleared when full.
_LINE_KINDS: dict[bytes, int] = {}
_LINE_KINDS_MAX = 1024
_MAX_KNOWN_LINE = 256  # (longer lines are not kept)
_DROP = 16
_COMPLEX = 32
_HOP_BY_HOP = {
    b"keep-alive": _DROP,
    b"te": _DROP,
    b"trailer": _DROP,
    b"transfer-encoding": _DROP | R_CHUNKED,
    b"upgrade": _DROP,
}


def _kind(name: bytes, value: bytes) -> int:
    """What a header line is (see `_LINE_KINDS`), from its name (lower case) and value. Raises
    ValueError on a Content-Length that is not a number (llhttp refuses it too)."""
    if name == b"content-length":
        return -1 - int(value)
    if name == b"connection":
        lowered = value.strip(b" \t").lower()
        if lowered == b"keep-alive":
            return _DROP | R_KEEP_ALIVE
        if lowered == b"close":
            return _DROP | R_CLOSE
        tokens = connection_tokens(lowered, None)
        if tokens - CONNECTION_OPTIONS:
            return _COMPLEX
        return _DROP | (R_CLOSE if b"close" in tokens else 0) | (R_KEEP_ALIVE if b"keep-alive" in tokens else 0)
    kind = _HOP_BY_HOP.get(name, 0)
    if not kind and name.startswith(b"proxy-"):
        kind = _DROP
    return kind


def _line_kind(line: bytes) -> int:
    """`_kind` of a header line, remembered in `_LINE_KINDS`."""
    if line[:1] in _SPECIAL_FIRST:
        name, _, value = line.partition(b":")
        kind = _kind(name.rstrip(b" \t").lower(), value)
    else:
        kind = 0
    if len(line) <= _MAX_KNOWN_LINE:
        if len(_LINE_KINDS) >= _LINE_KINDS_MAX:
            _LINE_KINDS.clear()
        _LINE_KINDS[line] = kind
    return kind


def filter_response_head(block: bytes) -> tuple[bytes, int, int]:
    """`filter_response_headers`, and the Content-Length (-1 without one).

    The block is split into lines (C code), each looked up in `_LINE_KINDS`; only the lines not
    seen before are read. (This replaced one regular-expression split, whose engine costs about
    250 instructions at each line start and 10 per byte: 20k instructions for a 6-header nginx
    head, against 14k now. Looking at the first byte of each line in Python, or looking the
    lines up with `map`, cost more.)
    """
    lines = block.split(b"\r\n")
    flags = 0
    length = -1
    dropped = None
    kinds = _LINE_KINDS
    for line in lines:
        kind = kinds.get(line)
        if kind is None:
            kind = _line_kind(line)
        if kind:
            if kind < 0:
                length = -1 - kind  # (llhttp refuses two Content-Length lines)
                flags |= R_LENGTH
            elif kind == _COMPLEX:
                return _filter_named(block)
            else:
                flags |= kind
                if dropped is None:
                    dropped = [line]
                else:
                    dropped.append(line)
    if dropped is None:
        return block, flags, length
    for line in dropped:
        lines.remove(line)
    return b"\r\n".join(lines), flags & ~_DROP, length


def _filter_named(block: bytes) -> tuple[bytes, int, int]:
    """`filter_response_head` for a block whose Connection header names other headers: every
    line is read."""
    lines = []
    named: set[bytes] = set()
    flags = 0
    length = -1
    for line in block.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        lname = name.rstrip(b" \t").lower()
        if lname == b"connection":
            tokens = connection_tokens(value, None)
            named |= tokens - CONNECTION_OPTIONS
            flags |= (R_CLOSE if b"close" in tokens else 0) | (R_KEEP_ALIVE if b"keep-alive" in tokens else 0)
            continue
        kind = _kind(lname, value)
        if kind > 0:
            flags |= kind & ~_DROP
            continue
        if kind < 0:
            length = -1 - kind
            flags |= R_LENGTH
        lines.append((lname, line))
    return b"".join([b"\r\n" + line for lname, line in lines if lname not in named]), flags, length


MAX_MEMO_HEAD = 4096

# How a forwarded response head ends, by [keep the client connection][client speaks HTTP/1.1]:
# HTTP/1.1 keeps alive unless told, HTTP/1.0 closes unless told.
END_LINES = (
    (b"\r\nConnection: close\r\n\r\n", b"\r\nConnection: close\r\n\r\n"),
    (b"\r\nConnection: keep-alive\r\n\r\n", b"\r\n\r\n"),
)

# The status codes (as their 3 bytes in a status line) of responses whose body is framed by a
# Content-Length: not 1xx, 204 or 304, which have none.
_FRAMED_BY_LENGTH = {b"%d" % code: code for code in range(200, 1000) if code not in (204, 304)}


class _EndCounter:
    """The protocol of `Upstream.whole_parser`: only `on_message_complete`, a C callable that
    appends to a list (httptools calls nothing for the methods a protocol does not have)."""

    __slots__ = ("on_message_complete",)

    def __init__(self, ends: list[None]) -> None:
        self.on_message_complete = functools.partial(list.append, ends, None)


class KnownResponse:
    """A response head seen before, with a Content-Length body: what to send a keep-alive
    HTTP/1.1 client for it, and what it says (`UpstreamPool.known`)."""

    __slots__ = ("code", "keep", "length", "out")

    def __init__(self, code: int, keep: bool, length: int, out: bytes) -> None:
        self.code = code
        self.keep = keep  # the backend keeps the connection open after it
        self.length = length
        self.out = out  # the head to send: status line, filtered headers, blank line


def known_response(head: bytes, code: int, flags: int, length: int, out: bytes) -> KnownResponse | None:
    """`head` (status line and header lines, without the blank line), forwarded as `out`, when
    its body is framed by its length (`flags`, `length`: `filter_response_head`)."""
    if length < 0 or flags & R_CHUNKED or code < 200 or code in (204, 304) or len(head) > MAX_MEMO_HEAD:
        return None
    # keep-alive as llhttp decides it: HTTP/1.1 (and any x.y with x, y > 0) unless "close", older
    # versions only with "keep-alive"
    if head[5:6] != b"0" and head[7:8] != b"0":
        keep = not flags & R_CLOSE
    else:
        keep = bool(flags & R_KEEP_ALIVE) and not flags & R_CLOSE
    return KnownResponse(code, keep, length, out)


class Upstream(asyncio.Protocol):
    """A connection from the proxy to one backend."""

    def __init__(self, pool: UpstreamPool, key: BackendKey, backend: Backend) -> None:
        self.pool = pool
        self._time = pool.time
        self._known = pool.known
        self.key = key
        self.backend = backend
        self.transport: asyncio.Transport | None = None
        self.wbuf: list[bytes] = []  # what `ClientConn` corks for one `flush` (head and body)
        self.send: Callable[[bytes], object] = self.wbuf.append  # the transport's `write`, once connected
        # No `on_header` method: httptools then makes no call per header (see module doc).
        # `on_message_begin` is only called on the general way (see `data_received`).
        self.parser = httptools.HttpResponseParser(self)
        # The parser of whole responses framed by their length (`_whole`): no Python method is
        # called from it but a count of message ends (C code, no frame).
        self._ends: list[None] = []
        self.whole_parser = httptools.HttpResponseParser(_EndCounter(self._ends))
        self.exchange: Exchange | None = None
        self.hbuf = b""  # the bytes received since the response head began (while `in_head`)
        self.in_head = True
        self.last_activity = 0.0  # when bytes last came (or the request was sent)
        self.idle_since = 0.0
        self.dead = False
        self.reused = False
        self.got_bytes = False
        self.write_paused = False
        self.reading_paused = False
        # Set when the connection goes back to the pool, cleared when lent again: what the
        # parser still produces from the bytes being fed belongs to no exchange.
        self.stale = False
        self.reset_parser = False
        self.interim = False
        self.head_key: bytes | None = None  # a head found by `data_received`, for `on_headers_complete`
        self.known_misses = 0  # (see `_KNOWN_TRIES`)

    # -- asyncio.Protocol ------------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)
        self.send = self.transport.write

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self.wbuf.clear()
        self.pool.lost(self)

    def eof_received(self) -> bool | None:
        return None

    def pause_writing(self) -> None:
        self.write_paused = True
        ex = self.exchange
        if ex is not None:
            ex.client.upstream_write_paused()

    def resume_writing(self) -> None:
        self.write_paused = False
        ex = self.exchange
        if ex is not None:
            ex.client.upstream_write_resumed()

    def data_received(self, data: bytes) -> None:
        ex = self.exchange
        if ex is None:
            self.close()  # unsolicited bytes on an idle connection
            return
        # One clock read per received chunk: it is also the end time of a response that
        # completes in this chunk (see `on_message_complete`).
        self.last_activity = now = self._time()
        key = None
        if (
            self.in_head
            and not self.hbuf
            and data[0] == 72  # ("H": no blank line before the head)
            and (end := data.find(b"\r\n\r\n")) > 0
            and ex.request_done
            and not ex.is_head
        ):
            misses = self.known_misses
            if misses >= _KNOWN_TRIES:
                # This backend's heads do not repeat: the memo is left alone for a while.
                self.known_misses = 0 if misses > _KNOWN_TRIES + _KNOWN_PAUSE else misses + 1
            else:
                # The shortest way: a response head seen before (`known_response`), the whole
                # response in this read, for a keep-alive HTTP/1.1 client. The head is
                # forwarded as it was the first time; its body is opaque bytes of a known
                # length; the parsers stay at the start of a message, unused.
                key = data[:end]
                known = self._known.get(key)
                if known is not None and len(data) - end - 4 == known.length and ex.keep_alive and ex.http11:
                    client = ex.client
                    if not client.closing:
                        self.known_misses = 0
                        ex.resp_started = True
                        ex.status = known.code
                        if client.writable:
                            client.send(known.out + data[end + 4 :] if known.length else known.out)
                        self._finish(ex, known.keep, now)
                        return
                if known is None:
                    self.known_misses = misses + 1
            if self._whole(ex, data, end, key, now):
                return
        self.head_key = key  # (the head found above: `on_headers_complete` takes it)
        self.got_bytes = True
        if self.in_head:
            hbuf = self.hbuf
            self.hbuf = hbuf + data if hbuf else data
        client = ex.client
        client.ocork = True  # what the client gets from this chunk leaves in one write
        try:
            self.parser.feed_data(data)
            if self.in_head and len(self.hbuf) > MAX_RESPONSE_HEAD and not self.stale:
                raise BadResponse("response head too large")
        except (httptools.HttpParserError, BadResponse) as exc:
            cause = exc.__context__ if isinstance(exc, httptools.HttpParserError) else exc
            if cause is not None and not isinstance(cause, BadResponse):
                log.error("embedded proxy: error handling a response", exc_info=cause)
            self.pool.broken(self, "invalid_response")
        finally:
            # `client.flush_out()`, inline
            client.ocork = False
            obuf = client.obuf
            if obuf:
                out = b"".join(obuf)
                obuf.clear()
                if client.writable:
                    client.send(out)

    def _whole(self, ex: Exchange, data: bytes, end: int, key: bytes | None, now: float) -> bool:
        """A whole response in `data`, its head ending at `end`, framed by its Content-Length
        (the common response), for a request that is all sent: forwarded without a Python call
        from the parser (see the module doc). False when it is not such a response."""
        code = _FRAMED_BY_LENGTH.get(data[9:12])
        if code is None:
            return False
        try:
            block, flags, length = filter_response_head(data[data.find(b"\r\n") : end])
        except ValueError:  # (a Content-Length that is not a number: llhttp refuses it)
            return False
        if flags & R_CHUNKED or len(data) - end - 4 != length:
            return False
        # llhttp checks every byte and counts the message end, which must be this one.
        ends = self._ends
        try:
            self.whole_parser.feed_data(data)
        except httptools.HttpParserError:
            ends.clear()
            self.pool.broken(self, "invalid_response")
            return True
        if len(ends) != 1 or self.whole_parser.get_status_code() != code:
            ends.clear()  # (cannot be: the head was read as llhttp reads it)
            self.pool.broken(self, "invalid_response")
            return True
        ends.clear()
        # keep-alive as llhttp decides it (its flags are reset once the message is complete)
        if data[5:6] != b"0" and data[7:8] != b"0":
            keep = not flags & R_CLOSE
        else:
            keep = bool(flags & R_KEEP_ALIVE) and not flags & R_CLOSE
        ex.resp_started = True
        ex.status = code
        client = ex.client
        if ex.keep_alive and client.closing:
            ex.keep_alive = False
        end_lines = END_LINES[ex.keep_alive][ex.http11]
        status = STATUS_LINES.get(code) or b"HTTP/1.1 %d " % code
        if client.writable:
            client.send(b"".join((status, block, end_lines, data[end + 4 :])))
        if self.known_misses < _KNOWN_TRIES:
            if key is None:
                key = data[:end]
            answer = known_response(key, code, flags, length, status + block + b"\r\n\r\n")
            if answer is not None:
                known = self._known
                if len(known) >= _MAX_KNOWN:
                    known.clear()
                known[key] = answer
        self._finish(ex, keep, now)
        return True

    def _finish(self, ex: Exchange, keep: bool, now: float) -> None:
        """A response forwarded whole: this connection back to the pool (`pool.done`, inline
        for the common case) and the exchange complete."""
        pool = self.pool
        idle = pool.idle.get(self.key) if keep else None
        if (
            idle is not None
            and len(idle) < pool.max_idle_per_backend
            and not (self.dead or self.write_paused or self.reading_paused or self.reset_parser)
        ):
            self.exchange = None
            ex.upstream = None
            self.idle_since = now
            self.stale = self.reused = True
            idle.append(self)
            ex.client.response_complete(ex, now)
        else:
            pool.done(self, ex, keep)

    # -- httptools callbacks -----------------------------------------------------------------

    def on_message_begin(self) -> None:
        if self.stale or self.exchange is None:
            # Bytes after the end of the response, in the same read: the backend sent what was
            # not asked for, and the parser is no longer at the start of a message.
            self.close()

    def on_headers_complete(self) -> None:
        if self.stale:
            return
        ex = self.exchange
        if ex is None:
            return
        buf = self.hbuf
        key = self.head_key
        if key is not None:  # found by `data_received`, at the start of `buf`
            self.head_key = None
            end = len(key)
        else:
            if buf[0] == 13:
                buf = buf.lstrip(b"\r\n")  # the parser skips empty lines before a status line
            # The parser checked the head: it ends at the first blank line, lines end with CRLF.
            end = buf.find(b"\r\n\r\n")
            if end < 0:
                raise BadResponse("response head not found in the received bytes")
        parser = self.parser
        code = parser.get_status_code()
        if code < 200:
            if code == 101:
                raise BadResponse("101 Switching Protocols was not asked for")
            self.interim = True  # 1xx: dropped (100 Continue is answered by the proxy itself)
            self.head_key = None
            self.hbuf = buf[end + 4 :]  # what follows it begins the next head
            return
        self.in_head = False
        self.hbuf = b""
        block, flags, length = filter_response_head(buf[buf.find(b"\r\n") : end])
        head_out = (STATUS_LINES.get(code) or b"HTTP/1.1 %d " % code) + block
        # Forward the head (the client's side of the decisions is made here too, to save calls).
        ex.resp_started = True
        ex.status = code
        is_head = ex.is_head
        if not (is_head or code == 204 or code == 304 or flags & R_LENGTH):
            if ex.http11:
                head_out += b"\r\nTransfer-Encoding: chunked"
                ex.resp_chunked = True
            else:
                ex.keep_alive = False  # close-delimited body for an HTTP/1.0 client
            ex.resp_until_eof = not flags & R_CHUNKED
        client = ex.client
        if not ex.keep_alive or client.closing:
            keep = False
        elif ex.request_done:
            keep = True
        else:
            # answered before the whole request body came: keep the connection only if what is
            # left of the body is known and small (it is read and dropped)
            cl = ex.content_length
            keep = cl is not None and cl - ex.body_bytes <= KEEP_UNREAD_BODY
        if not keep:
            ex.keep_alive = False
        end_lines = END_LINES[keep][ex.http11]
        out = head_out + end_lines
        client.obuf.append(out)  # corked
        if length >= 0 and self.known_misses < _KNOWN_TRIES:
            if key is None:
                key = buf[:end]
            answer = known_response(key, code, flags, length, out if len(end_lines) == 4 else head_out + b"\r\n\r\n")
            if answer is not None:
                known = self._known
                if len(known) >= _MAX_KNOWN:
                    known.clear()
                known[key] = answer
        if is_head:
            # The parser cannot be told that a HEAD response has no body: finish here and give
            # the connection a fresh parser.
            if parser.get_http_version() == "1.1":
                keep = not flags & R_CLOSE
            else:
                keep = bool(flags & R_KEEP_ALIVE) and not flags & R_CLOSE
            self.reset_parser = True
            self.in_head = True
            self.pool.done(self, ex, keep)

    def on_body(self, body: bytes) -> None:
        if self.stale or self.interim:
            return
        ex = self.exchange
        if ex is not None:
            if ex.resp_chunked:
                body = b"%x\r\n%b\r\n" % (len(body), body)
            ex.client.obuf.append(body)  # corked by `data_received`

    def on_message_complete(self) -> None:
        if self.stale:
            return
        if self.interim:
            self.interim = False
            return
        self.in_head = True
        ex = self.exchange
        if ex is None or ex.resp_done:
            return
        self.pool.done(self, ex, self.parser.should_keep_alive())

    # -- writing and flow control ----------------------------------------------------------

    def write(self, data: bytes) -> None:
        if not self.dead:
            self.send(data)

    def flush(self) -> None:
        wbuf = self.wbuf
        if wbuf:
            data = wbuf[0] if len(wbuf) == 1 else b"".join(wbuf)
            wbuf.clear()
            self.write(data)

    def pause_reading(self) -> None:
        if not self.dead and self.transport is not None:
            self.reading_paused = True
            self.transport.pause_reading()

    def resume_reading(self) -> None:
        if self.reading_paused and not self.dead and self.transport is not None:
            self.reading_paused = False
            self.transport.resume_reading()

    def close(self) -> None:
        if not self.dead:
            self.dead = True
            self.wbuf.clear()
            if self.transport is not None:
                self.transport.close()


class UpstreamPool:
    """Opens, lends and takes back the proxy's connections to backends."""

    def __init__(
        self,
        health: BackendHealth,
        *,
        connect_timeout: float,
        idle_timeout: float,
        max_idle_per_backend: int,
        time: Callable[[], float],
    ) -> None:
        self.health = health
        self.connect_timeout = connect_timeout
        self.idle_timeout = idle_timeout
        self.max_idle_per_backend = max_idle_per_backend
        self.time = time
        self.idle: dict[BackendKey, list[Upstream]] = {}
        # Response heads seen before, by their bytes (`known_response`; at most `_MAX_KNOWN`).
        self.known: dict[bytes, KnownResponse] = {}
        self.active_keys: set[BackendKey] = set()
        self.tasks: set[asyncio.Task[None]] = set()
        self.loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    # -- lending -------------------------------------------------------------------------------

    def acquire(self, ex: Exchange, backend: Backend, now: float) -> Upstream | None:
        """An idle connection to `backend` for `ex`, or None: one is being opened, and
        `ex.client.attach` is called once it is connected."""
        key = (backend.host, backend.port)
        idle = self.idle.get(key)
        while idle:
            up = idle.pop()
            if up.dead:
                continue
            if now - up.idle_since >= self.idle_timeout:
                up.close()
                continue
            return up
        loop = self.loop
        if loop is None:
            loop = self.loop = asyncio.get_running_loop()
        task = loop.create_task(self._connect(ex, backend, key))
        self.tasks.add(task)
        task.add_done_callback(self.tasks.discard)
        return None

    async def _connect(self, ex: Exchange, backend: Backend, key: BackendKey) -> None:
        loop = asyncio.get_running_loop()
        try:
            async with asyncio.timeout(self.connect_timeout):
                _, up = await loop.create_connection(lambda: Upstream(self, key, backend), backend.host, backend.port)
        except TimeoutError:
            self._connect_failed(ex, backend, "connect_timeout", "timed out")
            return
        except OSError as exc:
            reason = "connect_refused" if exc.errno == errno.ECONNREFUSED else "connect_error"
            detail = exc.strerror or str(exc) or type(exc).__name__
            self._connect_failed(ex, backend, reason, detail.lower())
            return
        self.health.mark_ok(backend)
        now = self.time()
        if ex.aborted or ex.resp_done:
            up.idle_since = now
            self.release(up)
            return
        ex.client.attach(ex, up, now)

    def _connect_failed(self, ex: Exchange, backend: Backend, reason: str, detail: str) -> None:
        now = self.time()
        self.health.mark_failed(backend, now)
        if ex.rstats is not None:
            ex.rstats.upstream_error(reason)
        if ex.aborted or ex.resp_done:
            return
        tried = ex.tried
        if tried is None:
            tried = ex.tried = set()
        tried.add(backend)
        pool = ex.pool
        if pool is not None and len(tried) < MAX_CONNECT_ATTEMPTS:
            nxt = pool.pick(self.health, now, exclude=tried)
            if nxt is not None:
                ex.backend = nxt
                up = self.acquire(ex, nxt, now)
                if up is not None:
                    ex.client.attach(ex, up, now)
                return
        if reason == "connect_timeout":
            ex.client.fail(ex, 504, f"504 upstream connect timed out for {ex.where()}")
        else:
            ex.client.fail(ex, 502, f"502 upstream connection failed for {ex.where()}: {detail}")

    def release(self, up: Upstream) -> None:
        """Take back a connection whose exchange is over: pooled if it may serve another."""
        if up.dead:
            return
        if up.reset_parser:
            up.reset_parser = False
            up.parser = httptools.HttpResponseParser(up)
        up.stale = True  # ignore whatever the old response's parse still produces
        idle = self.idle.get(up.key)
        if idle is None:
            if up.key not in self.active_keys or self.closed:
                up.close()
                return
            idle = self.idle[up.key] = []
        if len(idle) >= self.max_idle_per_backend:
            up.close()
            return
        if up.reading_paused:
            up.resume_reading()
        # ready for the next exchange
        up.interim = False
        up.reused = True
        up.got_bytes = False
        up.in_head = True
        up.hbuf = b""
        idle.append(up)

    # -- the fate of an exchange's connection ----------------------------------------------------

    def detach(self, ex: Exchange, up: Upstream) -> None:
        """Part `ex` and `up` (the caller closes or releases `up`)."""
        if up.exchange is ex:
            up.exchange = None
        if ex.upstream is up:
            ex.upstream = None
        if up.write_paused:
            up.write_paused = False
            ex.client.upstream_write_resumed()

    def done(self, up: Upstream, ex: Exchange, keep_alive: bool) -> None:
        """The upstream's response is complete (at `up.last_activity`)."""
        client: ClientConn = ex.client
        if ex.resp_chunked:
            client.obuf.append(b"0\r\n\r\n")  # called while feeding: the client is corked
        up.exchange = None
        ex.upstream = None
        if up.write_paused:
            up.write_paused = False
            client.upstream_write_resumed()
        now = up.last_activity
        if keep_alive and ex.request_sent and not up.dead:
            up.idle_since = now
            idle = self.idle.get(up.key)
            if (
                idle is not None
                and len(idle) < self.max_idle_per_backend
                and not (up.reset_parser or up.reading_paused)
            ):
                # `release`, inline for the common case
                up.stale = True
                up.reused = True
                up.got_bytes = False
                idle.append(up)
            else:
                self.release(up)
        else:
            up.close()
        client.response_complete(ex, now)

    def broken(self, up: Upstream, reason: str) -> None:
        """The upstream sent what cannot be forwarded."""
        ex = up.exchange
        if ex is None or up.stale:
            up.close()
            return
        self.detach(ex, up)
        up.close()
        if ex.rstats is not None:
            ex.rstats.upstream_error(reason)
        if ex.resp_started:
            ex.client.abort_exchange(ex)
        else:
            ex.client.fail(ex, 502, f"502 invalid response from upstream for {ex.where()}")

    def lost(self, up: Upstream) -> None:
        """The connection closed."""
        ex = up.exchange
        if ex is None:
            return  # idle: dropped from the pool lazily
        self.detach(ex, up)
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
                if backend is not None and not self.closed:
                    now = self.time()
                    fresh = self.acquire(ex, backend, now)
                    if fresh is not None:
                        client.attach(ex, fresh, now)
                    return
            if ex.rstats is not None:
                ex.rstats.upstream_error("reset")
            client.fail(ex, 502, f"502 upstream closed the connection for {ex.where()}")
            return
        if ex.resp_until_eof:
            # close-delimited response: the end of the connection is the end of the body
            if ex.resp_chunked:
                client.out(b"0\r\n\r\n")
            client.response_complete(ex, self.time())
            return
        if ex.rstats is not None:
            ex.rstats.upstream_error("reset")
        client.abort_exchange(ex)

    def timed_out(self, ex: Exchange, up: Upstream) -> None:
        """No byte from the backend for the read timeout."""
        self.detach(ex, up)
        up.close()
        if ex.rstats is not None:
            ex.rstats.upstream_error("timeout")
        if ex.resp_started:
            ex.client.abort_exchange(ex)
        else:
            ex.client.fail(ex, 504, f"504 upstream timed out for {ex.where()}")

    # -- housekeeping --------------------------------------------------------------------------

    def retain(self, keys: Iterable[BackendKey]) -> None:
        """Only backends in `keys` are in a routing table: close idle connections to others."""
        self.active_keys = set(keys)
        for key in [k for k in self.idle if k not in self.active_keys]:
            for up in self.idle.pop(key):
                up.close()

    def sweep(self, now: float) -> None:
        """Close connections idle for `idle_timeout`."""
        limit = self.idle_timeout
        for key, idle in list(self.idle.items()):
            alive = []
            for up in idle:
                if up.dead:
                    continue
                if now - up.idle_since >= limit:
                    up.close()
                else:
                    alive.append(up)
            if alive:
                self.idle[key] = alive
            else:
                del self.idle[key]

    async def close(self) -> None:
        """Cancel pending connects and close the idle connections."""
        self.closed = True
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            await asyncio.gather(*self.tasks, return_exceptions=True)
        for idle in self.idle.values():
            for up in idle:
                up.close()
        self.idle.clear()
