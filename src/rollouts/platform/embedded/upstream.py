"""Connections from the embedded proxy to backends: the protocol of one connection (`Upstream`),
the pool that opens, reuses and closes them (`UpstreamPool`), and how a response head is
forwarded (`filter_response_headers`).

* Connections are pooled per backend address and reused while the backend keeps them alive
  (LIFO; idle ones are closed after `idle_timeout`, and at once when the backend leaves every
  routing table). A request that finds its reused connection closed before any response byte,
  with no request body, is retried once on a new connection.
* A response head is forwarded as the raw bytes it arrived in, with the hop-by-hop lines cut
  out by one regular expression (C code), instead of being parsed into names and values by
  httptools' `on_header` callback and serialised again: a Python call per header was the
  largest single cost of a proxied request (about 20k of its 105k instructions for a 6-header
  nginx response, against 9k now). httptools still parses every byte (framing, validation,
  keep-alive); the `Upstream` just has no `on_header` method, so the parser makes no call per
  header. llhttp is strict (CRLF line ends, no obs-fold, no space before the colon), so a
  header line always starts right after a CRLF and the first blank line ends the head, which
  is what the expression relies on. A connection serves one exchange at a time (no pipelining
  towards backends), so the head starts at the first byte received after the request was sent;
  it is sliced out of those bytes when the parser says it is complete. (Trailers of a chunked
  response are dropped, as before; they no longer leak into the next response's head.)
"""

from __future__ import annotations

import asyncio
import errno
import logging
import re
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, NamedTuple, cast

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

# In a response's header block (each line preceded by CRLF), the lines the proxy must look at.
# `split` (one pass in C) cuts them out and returns the rest of the block in pieces with, after
# each piece, two groups: group 1 is a hop-by-hop line (the whole line for Connection, whose
# value matters; the name for the others), group 2 a Content-Length line, to put back. So
# [rest, None, "Content-Length: 2", rest, "Connection: keep-alive", None, rest]. Why this shape:
# every alternative starts after the literal CRLF, which lets the regex engine jump from line
# to line (a zero-width alternative for Content-Length, keeping it in place, made the search
# four times slower), and the lookahead skips the lines whose first letter cannot match.
# (The case-insensitivity is scoped to the names: with it on the whole pattern, the engine
# cannot jump to the next CRLF and the split takes twice as long.)
_RESPONSE_SPECIAL = re.compile(
    rb"\r\n(?=[cCkKpPtTuU])(?i:"
    rb"(connection[ \t]*:[^\r]*|(?:keep-alive|te|trailer|transfer-encoding|upgrade|proxy-[^:\r]*)(?=[ \t]*:))[^\r]*"
    rb"|(content-length[ \t]*:[^\r]*))"
)

# What `filter_response_headers` found (bit flags).
R_LENGTH = 1  # Content-Length: the body is framed by it, forwarded as is
R_CHUNKED = 2  # Transfer-Encoding (the parser de-chunks; the proxy re-frames)
R_CLOSE = 4  # Connection: close
R_KEEP_ALIVE = 8  # Connection: keep-alive


class _Meaning(NamedTuple):
    flags: int  # R_* flags
    named: frozenset[bytes]  # the headers that Connection names (lower case), to drop too
    lengths: tuple[int, ...]  # where `split` put the Content-Length lines, to put back


# Group 1 of each special line of a head (None for Content-Length) -> what they mean. A backend
# sends the same few such lines with every response, so this is nearly always a hit, and the
# lines are not looked at in Python. Bounded: cleared when full.
_MEANINGS: dict[tuple[bytes | None, ...], _Meaning] = {}
_MEANINGS_MAX = 256


def _meaning(lines: tuple[bytes | None, ...]) -> _Meaning:
    flags = 0
    tokens: set[bytes] | None = None
    lengths = []
    for k, line in enumerate(lines):
        if line is None:
            flags |= R_LENGTH
            lengths.append(3 * k + 2)
            continue
        name, _, value = line.partition(b":")
        lname = name.strip().lower()
        if lname == b"connection":
            lowered = value.strip().lower()
            if lowered == b"keep-alive":
                flags |= R_KEEP_ALIVE
            elif lowered == b"close":
                flags |= R_CLOSE
            else:
                tokens = connection_tokens(lowered, tokens)
                if b"close" in tokens:
                    flags |= R_CLOSE
                if b"keep-alive" in tokens:
                    flags |= R_KEEP_ALIVE
        elif lname == b"transfer-encoding":
            flags |= R_CHUNKED
    named = frozenset(tokens - CONNECTION_OPTIONS) if tokens else frozenset()
    if len(_MEANINGS) >= _MEANINGS_MAX:
        _MEANINGS.clear()
    meaning = _MEANINGS[lines] = _Meaning(flags, named, tuple(lengths))
    return meaning


def filter_response_headers(block: bytes) -> tuple[bytes, int]:
    """The header block of a response head without its hop-by-hop lines, and `R_*` flags.

    `block` is the head between the status line and the blank line, every header line preceded
    by its CRLF (`b"\\r\\nServer: x\\r\\nContent-Length: 2"`); so is the result (with the
    Content-Length line last). Removed: the hop-by-hop headers (Connection, Keep-Alive,
    Proxy-*, TE, Trailer, Transfer-Encoding, Upgrade) and the headers that Connection names.
    """
    block, flags, _ = filter_response_head(block)
    return block, flags


def filter_response_head(block: bytes) -> tuple[bytes, int, int]:
    """`filter_response_headers`, and the Content-Length (-1 without one)."""
    parts = _RESPONSE_SPECIAL.split(block)
    if len(parts) == 1:
        return block, 0, -1
    lines = tuple(parts[1::3])
    meaning = _MEANINGS.get(lines)
    if meaning is None:
        meaning = _meaning(lines)
    block = b"".join(parts[::3])
    length = -1
    for k in meaning.lengths:
        line = parts[k]
        block += b"\r\n" + line
        length = int(line[line.find(b":") + 1 :])  # (llhttp refuses two different lengths)
    if meaning.named:
        names = b"|".join(re.escape(t) for t in sorted(meaning.named))
        block = re.sub(rb"\r\n(?:" + names + rb")[ \t]*:[^\r]*", b"", block, flags=re.IGNORECASE)
    return block, meaning.flags, length


MAX_MEMO_HEAD = 4096


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
        if self.in_head and not self.hbuf and data[0] == 72:  # ("H": no blank line before the head)
            misses = self.known_misses
            if misses >= _KNOWN_TRIES:
                # This backend's heads do not repeat: the memo is left alone for a while.
                self.known_misses = 0 if misses > _KNOWN_TRIES + _KNOWN_PAUSE else misses + 1
            elif (end := data.find(b"\r\n\r\n")) > 0:
                # The shortest way: a response head seen before (`known_response`), the whole
                # response in this read, for a keep-alive HTTP/1.1 client whose request is all
                # sent. The head is forwarded as it was the first time; its body is opaque bytes
                # of a known length; the parser stays at the start of a message, unused.
                key = data[:end]
                known = self._known.get(key)
                if (
                    known is not None
                    and len(data) - end - 4 == known.length
                    and ex.request_done
                    and ex.keep_alive
                    and ex.http11
                    and not ex.is_head
                ):
                    client = ex.client
                    if not client.closing:
                        self.known_misses = 0
                        ex.resp_started = True
                        ex.status = known.code
                        if client.writable:
                            client.send(known.out + data[end + 4 :] if known.length else known.out)
                        pool = self.pool
                        idle = pool.idle.get(self.key) if known.keep else None
                        if (
                            idle is not None
                            and len(idle) < pool.max_idle_per_backend
                            and not (self.dead or self.write_paused or self.reading_paused or self.reset_parser)
                        ):
                            # `pool.done`, inline for the common case: back to the pool
                            self.exchange = None
                            ex.upstream = None
                            self.idle_since = now
                            self.stale = self.reused = True
                            idle.append(self)
                            client.response_complete(ex, now)
                        else:
                            pool.done(self, ex, known.keep)
                        return
                if known is None:
                    self.known_misses = misses + 1
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
            end_lines = b"\r\nConnection: close\r\n\r\n"
        elif not ex.http11:
            end_lines = b"\r\nConnection: keep-alive\r\n\r\n"
        else:
            end_lines = b"\r\n\r\n"
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
