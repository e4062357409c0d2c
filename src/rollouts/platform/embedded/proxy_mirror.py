"""Mirrored requests: copies of client requests sent to a canary pod, their responses dropped.

A mirror route (`proxy_routes`) picks which requests are copied; this module makes the copies
without ever holding up, or failing, the client's request, which is answered by the revision
the weight picked, as if there were no mirror:

* The client's path only builds the copy's bytes and hands them to the `MirrorSender`
  (`submit`: no I/O, no await). The sender sends at most `max_in_flight` copies at once, keeps
  at most `max_queued` more waiting, and drops the rest (counted as `overload`), so a slow or
  dead canary costs memory and work bounded by those numbers and by `timeout` per copy.
* A copy is the request as the proxy would forward it, with Envoy's mark of a shadow request:
  `-shadow` added to the host (`web:80` -> `web-shadow:80`). Its response is read (to keep the
  connection reusable) and dropped; its status code is counted per revision.
* Bodies: a request without a body is copied at once. One with a Content-Length body of at
  most `max_body` bytes (64 KiB by default) is copied once its body has passed through the
  proxy (the pieces are kept as they stream to the answering backend; they are the bytes the
  client sent, so nothing is read ahead). A chunked body, or a larger one, is not copied
  (counted as dropped, reason `body`): buffering it would cost memory the client's request does
  not need.

Drop reasons counted (`RevisionStats.mirror_dropped`): `overload`, `body`, `no_backend` (no
ready canary pod), `timeout` (no complete response in `timeout` seconds, connect included),
`error` (connection refused or reset, invalid response).

Copies use their own connections (pooled per pod, like `upstream`'s, but apart from them): a
copy's slowness never occupies a connection that a client's request would be given, and its
failures do not mark the pod as failed for the client's requests.
"""

from __future__ import annotations

import asyncio
import contextlib
import re
from collections import deque
from collections.abc import Callable
from typing import TYPE_CHECKING, NamedTuple, cast

import httptools

if TYPE_CHECKING:
    from rollouts.platform.embedded.balancer import RevisionPool
    from rollouts.platform.embedded.proxy_http import ClientConn, Exchange
    from rollouts.platform.embedded.proxy_metrics import RevisionStats
    from rollouts.platform.embedded.routing import Backend

__all__ = ["MirrorSender", "PendingMirror", "mirror_head", "mirror_request", "shadow_host"]

DEFAULT_MAX_BODY = 64 * 1024


class _Copy(NamedTuple):
    backend: Backend
    data: bytes
    stats: RevisionStats
    head_only: bool


class MirrorError(Exception):
    """The mirror target answered what cannot be read as an HTTP response."""


def shadow_host(host: bytes) -> bytes:
    """Envoy's host of a shadow request: `-shadow` after the host name, before the port."""
    parts = host.split(b":")
    return b"-shadow:".join(parts) if len(parts) == 2 else host + b"-shadow"


# A Host line of a forwarded head (every header line follows a CRLF): its value, to shadow.
_HOST_LINE = re.compile(rb"(\r\nhost[ \t]*:[ \t]*)([^\r]*?)([ \t]*)(?=\r\n)", re.IGNORECASE)


def mirror_head(ex: Exchange, peer: bytes, backend: Backend) -> bytes:
    """The head of `ex` as the proxy forwards it (hop-by-hop headers out, X-Forwarded-* added),
    with the shadow host."""
    head = ex.info.forwarded(peer, backend)  # (with a Host line naming the backend if it had none)
    return _HOST_LINE.sub(lambda m: m.group(1) + shadow_host(m.group(2)) + m.group(3), head)


class PendingMirror:
    """A copy waiting for the rest of its request's body (see the module doc)."""

    __slots__ = ("backend", "chunks", "left", "sender", "stats")

    def __init__(
        self, sender: MirrorSender, backend: Backend, stats: RevisionStats, chunks: list[bytes], left: int
    ) -> None:
        self.sender = sender
        self.backend = backend
        self.stats = stats
        self.chunks = chunks
        self.left = left

    def add(self, body: bytes, ex: Exchange) -> None:
        """A piece of the request body went by (`ClientConn.on_body`)."""
        self.chunks.append(body)
        self.left -= len(body)
        if self.left <= 0:
            ex.mirror = None
            self.sender.submit(_Copy(self.backend, b"".join(self.chunks), self.stats, False))


def mirror_request(client: ClientConn, ex: Exchange, pool: RevisionPool) -> None:
    """Copy `ex` to a pod of `pool` (the canary), now or once its body has come."""
    rstats = pool.stats
    if rstats is None:
        rstats = pool.stats = client.route.revision_stats(pool.label)
    sender = client.proxy.mirror
    length = ex.content_length or 0
    if ex.req_chunked or length > sender.max_body:
        rstats.mirror_drop("body")
        return
    backends = pool.backends
    if not backends:
        rstats.mirror_drop("no_backend")
        return
    turn = pool.mirror_turn
    pool.mirror_turn = turn + 1
    backend = backends[turn % len(backends)]
    head = mirror_head(ex, client.peer, backend)
    if length == 0:
        sender.submit(_Copy(backend, head, rstats, ex.is_head))
        return
    # Body bytes that came before the request was routed (a pipelined request) wait in `body_buf`.
    chunks = [head, *(ex.body_buf or ())]
    if ex.body_bytes >= length:
        sender.submit(_Copy(backend, b"".join(chunks), rstats, False))
        return
    ex.mirror = PendingMirror(sender, backend, rstats, chunks, length - ex.body_bytes)


class _MirrorConn(asyncio.Protocol):
    """A connection to a mirror target: one copy at a time, the response parsed and dropped."""

    def __init__(self, key: tuple[str, int]) -> None:
        self.key = key
        self.transport: asyncio.Transport | None = None
        self.parser = httptools.HttpResponseParser(self)
        self.waiter: asyncio.Future[tuple[int, bool]] | None = None
        self.head_only = False
        self.got_bytes = False
        self.reused = False
        self.dead = False
        self.idle_since = 0.0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self.dead = True
        self._fail(ConnectionError("the mirror target closed the connection"))

    def data_received(self, data: bytes) -> None:
        waiter = self.waiter
        if waiter is None or waiter.done():
            self.close()  # bytes nobody asked for (or after the response): not reusable
            return
        self.got_bytes = True
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError as exc:
            self._fail(MirrorError(f"invalid response: {exc}"))

    def on_headers_complete(self) -> None:
        if self.head_only and self.parser.get_status_code() >= 200:
            self._done(keep_alive=False)  # a HEAD response has no body: the parser would wait for one

    def on_message_complete(self) -> None:
        if self.parser.get_status_code() >= 200:  # (a 1xx is followed by the real response)
            self._done(self.parser.should_keep_alive())

    def _done(self, keep_alive: bool) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_result((self.parser.get_status_code(), keep_alive))

    def _fail(self, exc: Exception) -> None:
        waiter = self.waiter
        if waiter is not None and not waiter.done():
            waiter.set_exception(exc)

    async def exchange(self, data: bytes, head_only: bool) -> tuple[int, bool]:
        """Send one copy; its status code and whether the connection may serve another."""
        assert self.transport is not None
        self.waiter = asyncio.get_running_loop().create_future()
        self.head_only = head_only
        self.got_bytes = False
        self.transport.write(data)
        try:
            return await self.waiter
        finally:
            self.waiter = None

    def close(self) -> None:
        self.dead = True
        if self.transport is not None:
            self.transport.close()


class MirrorSender:
    """Sends copies in the background, bounded (see the module doc). One per proxy."""

    def __init__(
        self,
        *,
        connect_timeout: float = 2.0,
        timeout: float = 5.0,
        max_in_flight: int = 32,
        max_queued: int = 256,
        max_body: int = DEFAULT_MAX_BODY,
        max_idle_per_backend: int = 8,
        idle_timeout: float = 4.0,
        time: Callable[[], float],
    ) -> None:
        self.connect_timeout = connect_timeout
        self.timeout = timeout
        self.max_in_flight = max_in_flight
        self.max_queued = max_queued
        self.max_body = max_body
        self.max_idle_per_backend = max_idle_per_backend
        self.idle_timeout = idle_timeout
        self.time = time
        self.queue: deque[_Copy] = deque()
        self.in_flight = 0
        self.tasks: set[asyncio.Task[None]] = set()
        self.idle: dict[tuple[str, int], list[_MirrorConn]] = {}
        self.closed = False

    def submit(self, copy: _Copy) -> None:
        """Send `copy` when a slot is free; drop it (counted) when the queue is full. No I/O here."""
        if self.closed:
            return
        if self.in_flight < self.max_in_flight:
            self.in_flight += 1
            task = asyncio.get_running_loop().create_task(self._work(copy))
            self.tasks.add(task)
            task.add_done_callback(self.tasks.discard)
        elif len(self.queue) < self.max_queued:
            self.queue.append(copy)
        else:
            copy.stats.mirror_drop("overload")

    async def _work(self, copy: _Copy) -> None:
        """One sending slot: this copy, then whatever waits in the queue."""
        try:
            item: _Copy | None = copy
            while item is not None and not self.closed:
                await self._send(item)
                item = self.queue.popleft() if self.queue else None
        finally:
            self.in_flight -= 1

    async def _send(self, copy: _Copy) -> None:
        backend = copy.backend
        key = (backend.host, backend.port)
        conn: _MirrorConn | None = None
        try:
            async with asyncio.timeout(self.timeout):
                for _attempt in range(2):
                    conn = self._take_idle(key)
                    if conn is None:
                        conn = await self._connect(key)
                    try:
                        code, keep = await conn.exchange(copy.data, copy.head_only)
                        break
                    except ConnectionError:
                        if conn.reused and not conn.got_bytes:
                            continue  # the target had closed the idle connection: once more, anew
                        raise
                else:
                    raise ConnectionError("the mirror target closed the connection")
        except asyncio.CancelledError:  # the proxy is closing
            if conn is not None:
                conn.close()
            raise
        except TimeoutError:
            reason = "timeout"
        except (OSError, MirrorError):  # (ConnectionError is an OSError)
            reason = "error"
        else:
            assert conn is not None
            copy.stats.mirror_answered(code)
            if keep and not conn.dead:
                self._release(conn)
            else:
                conn.close()
            return
        if conn is not None:
            conn.close()
        copy.stats.mirror_drop(reason)

    async def _connect(self, key: tuple[str, int]) -> _MirrorConn:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            _, conn = await loop.create_connection(lambda: _MirrorConn(key), key[0], key[1])
        return conn

    def _take_idle(self, key: tuple[str, int]) -> _MirrorConn | None:
        idle = self.idle.get(key)
        now = self.time()
        while idle:
            conn = idle.pop()
            if conn.dead or now - conn.idle_since >= self.idle_timeout:
                conn.close()
                continue
            return conn
        return None

    def _release(self, conn: _MirrorConn) -> None:
        idle = self.idle.setdefault(conn.key, [])
        if self.closed or len(idle) >= self.max_idle_per_backend:
            conn.close()
            return
        conn.reused = True
        conn.idle_since = self.time()
        idle.append(conn)

    def sweep(self, now: float) -> None:
        """Close connections idle for `idle_timeout` (the proxy's timer calls this)."""
        for key, idle in list(self.idle.items()):
            alive = [c for c in idle if not c.dead and now - c.idle_since < self.idle_timeout]
            for conn in idle:
                if conn not in alive:
                    conn.close()
            if alive:
                self.idle[key] = alive
            else:
                del self.idle[key]

    async def close(self) -> None:
        """Drop the waiting copies, cancel those being sent, close the connections."""
        self.closed = True
        self.queue.clear()
        for task in list(self.tasks):
            task.cancel()
        if self.tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.gather(*self.tasks, return_exceptions=True)
        for idle in self.idle.values():
            for conn in idle:
                conn.close()
        self.idle.clear()
