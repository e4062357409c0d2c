"""Fixtures for the embedded proxy tests: in-process HTTP backends and a raw HTTP/1.1 client."""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, cast
from urllib.parse import parse_qs, urlsplit

import httptools
import pytest

from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics
from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable


@dataclass
class SeenRequest:
    """A request as a test backend received it."""

    method: str
    path: str
    headers: list[tuple[str, str]]
    body: bytes
    connection: int

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None


@dataclass
class TestBackend:
    """A small HTTP/1.1 server on a free loopback port that answers by path:

    * `/slow`: sets `slow_started`, waits for `release`, then answers (200)
    * `/sleep?s=N`: answers after N seconds
    * `/stream`: a chunked response whose second chunk waits for `release`
    * `/chunked?n=N&size=S`: a chunked response of N chunks of S bytes, with hop-by-hop headers
    * `/eof?size=S`: a close-delimited response (no length), then closes
    * `/status/NNN`: that status
    * `/truncate`: promises 100 bytes, sends 10, closes
    * `/drop-if-reused`: closes the connection without answering unless it is its first request
      (what a backend closing an idle keep-alive connection looks like to the proxy)
    * anything else: JSON describing the request (method, path, headers, body length and sha256)

    Every response carries `X-Backend: <name>`.
    """

    __test__ = False

    name: str
    connections: int = 0
    requests: list[SeenRequest] = field(default_factory=list)
    release: asyncio.Event = field(default_factory=asyncio.Event)
    slow_started: asyncio.Event = field(default_factory=asyncio.Event)
    body_started: asyncio.Event = field(default_factory=asyncio.Event)
    conn_closed: asyncio.Event = field(default_factory=asyncio.Event)
    server: asyncio.Server | None = None
    port: int = 0
    transports: set[asyncio.Transport] = field(default_factory=set)

    async def start(self) -> int:
        loop = asyncio.get_running_loop()
        self.server = await loop.create_server(lambda: _BackendProtocol(self), "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])
        return self.port

    def backend(self, pod: str | None = None) -> Backend:
        return Backend(pod=pod or self.name, host="127.0.0.1", port=self.port)

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        for t in list(self.transports):
            t.abort()
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.sleep(0)

    def close_idle_connections(self) -> None:
        for t in list(self.transports):
            t.close()

    async def wait_no_connections(self) -> None:
        """Until every connection to this backend is closed."""
        while self.transports:
            self.conn_closed.clear()
            await self.conn_closed.wait()


class _BackendProtocol(asyncio.Protocol):
    def __init__(self, backend: TestBackend) -> None:
        self.b = backend
        self.parser = httptools.HttpRequestParser(self)
        self.transport: asyncio.Transport | None = None
        self.queue: asyncio.Queue[SeenRequest | None] = asyncio.Queue()
        self.worker: asyncio.Task[None] | None = None
        self.conn_id = 0
        self.served = 0
        self.url = b""
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.b.connections += 1
        self.conn_id = self.b.connections
        self.b.transports.add(self.transport)
        self.worker = asyncio.get_running_loop().create_task(self._work())

    def connection_lost(self, exc: Exception | None) -> None:
        if self.transport is not None:
            self.b.transports.discard(self.transport)
        self.b.conn_closed.set()
        self.queue.put_nowait(None)

    def data_received(self, data: bytes) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserError:
            if self.transport is not None:
                self.transport.close()

    def on_message_begin(self) -> None:
        self.url = b""
        self.headers = []
        self.body = bytearray()

    def on_url(self, url: bytes) -> None:
        self.url += url

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_body(self, body: bytes) -> None:
        self.body += body
        self.b.body_started.set()

    def on_message_complete(self) -> None:
        req = SeenRequest(
            method=self.parser.get_method().decode(),
            path=self.url.decode("latin-1"),
            headers=self.headers,
            body=bytes(self.body),
            connection=self.conn_id,
        )
        self.b.requests.append(req)
        self.queue.put_nowait(req)

    async def _work(self) -> None:
        while True:
            req = await self.queue.get()
            if req is None or self.transport is None or self.transport.is_closing():
                return
            try:
                await self._respond(req, self.transport)
            except (ConnectionError, RuntimeError):
                return

    async def _respond(self, req: SeenRequest, t: asyncio.Transport) -> None:
        b = self.b
        self.served += 1
        url = urlsplit(req.path)
        query = {k: v[0] for k, v in parse_qs(url.query).items()}
        name = b.name.encode()
        head_only = req.method == "HEAD"
        if url.path == "/drop-if-reused" and self.served > 1:
            t.close()
            return
        if url.path == "/slow":
            b.slow_started.set()
            await b.release.wait()
        elif url.path == "/sleep":
            await asyncio.sleep(float(query.get("s", "1")))
        if url.path == "/stream":
            t.write(b"HTTP/1.1 200 OK\r\nX-Backend: " + name + b"\r\nTransfer-Encoding: chunked\r\n\r\n")
            t.write(b"5\r\nfirst\r\n")
            await b.release.wait()
            t.write(b"6\r\nsecond\r\n0\r\n\r\n")
            return
        if url.path == "/chunked":
            n, size = int(query.get("n", "3")), int(query.get("size", "10"))
            t.write(
                b"HTTP/1.1 200 OK\r\nX-Backend: " + name + b"\r\nTransfer-Encoding: chunked\r\n"
                b"Keep-Alive: timeout=5\r\nConnection: keep-alive, X-Secret-Hop\r\nX-Secret-Hop: 1\r\n"
                b"Proxy-Authenticate: Basic\r\nX-Custom: yes\r\n\r\n"
            )
            for i in range(n):
                chunk = bytes([65 + i % 26]) * size
                t.write(b"%x\r\n%b\r\n" % (len(chunk), chunk))
                if i % 16 == 15:
                    await asyncio.sleep(0)
            t.write(b"0\r\n\r\n")
            return
        if url.path == "/truncate":
            t.write(b"HTTP/1.1 200 OK\r\nX-Backend: " + name + b"\r\nContent-Length: 100\r\n\r\n0123456789")
            t.close()
            return
        if url.path == "/eof":
            size = int(query.get("size", "100"))
            t.write(b"HTTP/1.1 200 OK\r\nX-Backend: " + name + b"\r\nConnection: close\r\n\r\n" + b"e" * size)
            t.close()
            return
        status = 200
        if url.path.startswith("/status/"):
            status = int(url.path.rsplit("/", 1)[1])
        body = json.dumps(
            {
                "backend": b.name,
                "method": req.method,
                "path": req.path,
                "headers": req.headers,
                "body_len": len(req.body),
                "body_sha256": hashlib.sha256(req.body).hexdigest(),
            }
        ).encode()
        head = (
            b"HTTP/1.1 %d Whatever\r\nX-Backend: %b\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n"
            % (status, name, len(body))
        )
        t.write(head if head_only or status in (204, 304) else head + body)


@dataclass
class RawResponse:
    status: int
    headers: list[tuple[str, str]]
    body: bytes
    keep_alive: bool

    def header(self, name: str) -> str | None:
        values = [v for k, v in self.headers if k.lower() == name.lower()]
        return ", ".join(values) if values else None

    def json(self) -> Any:
        return json.loads(self.body)


class _ResponseReader:
    def __init__(self) -> None:
        self.parser = httptools.HttpResponseParser(self)
        self.headers: list[tuple[str, str]] = []
        self.body = bytearray()
        self.done: list[RawResponse] = []
        self.head_only = False

    def on_message_begin(self) -> None:
        self.headers = []
        self.body = bytearray()

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name.decode("latin-1"), value.decode("latin-1")))

    def on_headers_complete(self) -> None:
        if self.head_only:
            self._complete()

    def on_body(self, body: bytes) -> None:
        self.body += body

    def on_message_complete(self) -> None:
        if not self.head_only:
            self._complete()

    def _complete(self) -> None:
        code = self.parser.get_status_code()
        if code == 100:
            return
        self.done.append(RawResponse(code, self.headers, bytes(self.body), keep_alive=self.parser.should_keep_alive()))


class RawClient:
    """One client connection speaking raw HTTP/1.1 (for keep-alive, pipelining, odd headers)."""

    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader = reader
        self.writer = writer
        self._rr = _ResponseReader()

    @classmethod
    async def connect(cls, port: int) -> RawClient:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        return cls(reader, writer)

    async def send(self, data: bytes) -> None:
        self.writer.write(data)
        await self.writer.drain()

    async def response(self, *, head_only: bool = False) -> RawResponse:
        """The next response; a close-delimited body ends at EOF."""
        rr = self._rr
        rr.head_only = head_only
        while not rr.done:
            data = await self.reader.read(65536)
            if not data:
                if rr.headers and not rr.done:
                    rr.done.append(
                        RawResponse(rr.parser.get_status_code(), rr.headers, bytes(rr.body), keep_alive=False)
                    )
                    break
                raise ConnectionError("connection closed before a response")
            rr.parser.feed_data(data)
        if head_only:
            self._rr = _ResponseReader()  # the parser would wait for the body a HEAD has not
        return rr.done.pop(0)

    async def request(self, method: str, path: str, headers: dict[str, str] | None = None) -> RawResponse:
        lines = [f"{method} {path} HTTP/1.1", "Host: svc.test"]
        lines += [f"{k}: {v}" for k, v in (headers or {}).items()]
        await self.send(("\r\n".join(lines) + "\r\n\r\n").encode())
        return await self.response(head_only=method == "HEAD")

    async def at_eof(self) -> bool:
        data = await self.reader.read(1)
        return data == b""

    async def close(self) -> None:
        self.writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await self.writer.wait_closed()


async def two_requests(port: int, first_method: str = "GET") -> tuple[RawResponse, RawResponse]:
    """`first_method /1` then `GET /2` on one keep-alive connection to `port`."""
    c = await RawClient.connect(port)
    try:
        return await c.request(first_method, "/1"), await c.request("GET", "/2")
    finally:
        await c.close()


BackendFactory = Callable[[str], Awaitable[TestBackend]]
ProxyFactory = Callable[..., ProxyServer]


@pytest.fixture
async def backends() -> AsyncIterator[BackendFactory]:
    """`await backends("name")` starts a `TestBackend`; all are closed at the end."""
    started: list[TestBackend] = []

    async def start(name: str) -> TestBackend:
        b = TestBackend(name)
        await b.start()
        started.append(b)
        return b

    yield start
    for b in started:
        b.release.set()
        await b.close()


@pytest.fixture
async def make_proxy() -> AsyncIterator[ProxyFactory]:
    """`make_proxy(**kwargs)` builds a `ProxyServer` (own metrics) that is closed at the end."""
    made: list[ProxyServer] = []

    def make(**kwargs: Any) -> ProxyServer:
        kwargs.setdefault("connect_timeout", 1.0)
        kwargs.setdefault("read_timeout", 5.0)
        kwargs.setdefault("shutdown_grace", 0.5)
        p = ProxyServer(ProxyMetrics(), **kwargs)
        made.append(p)
        return p

    yield make
    for p in made:
        await p.close()


def table(
    primary: tuple[str, list[Backend]] | None,
    canary: tuple[str, list[Backend]] | None = None,
    weight: int = 0,
) -> RoutingTable:
    """A routing table from (revision, backends) pairs."""
    return RoutingTable(
        primary=RevisionBackends(primary[0], tuple(primary[1])) if primary is not None else None,
        canary=RevisionBackends(canary[0], tuple(canary[1])) if canary is not None else None,
        canary_weight=weight,
    )
