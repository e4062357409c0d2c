"""Response heads forwarded as raw bytes: the hop-by-hop filter on its own, and end to end
against a scripted backend that sends exactly the bytes a test gives it."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass, field

import pytest

from rollouts.platform.embedded import upstream
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.routing import Backend
from rollouts.platform.embedded.upstream import (
    R_CHUNKED,
    R_CLOSE,
    R_KEEP_ALIVE,
    R_LENGTH,
    filter_response_headers,
)
from tests.embedded.conftest import ProxyFactory, RawClient, table, two_requests

T = 10.0  # bound of each test, seconds


# -- the filter --------------------------------------------------------------------------------


def test_filter_keeps_end_to_end_headers_and_content_length() -> None:
    block = b"\r\nServer: x\r\nContent-Type: text/plain\r\nX-Connection: y\r\nTEx: z\r\nContent-Length: 2"
    assert filter_response_headers(block) == (block, R_LENGTH)
    assert filter_response_headers(b"\r\nA: b") == (b"\r\nA: b", 0)
    assert filter_response_headers(b"") == (b"", 0)


@pytest.mark.parametrize("case", [str.lower, str.upper, str.title])
def test_filter_removes_hop_by_hop_headers_in_any_case(case: object) -> None:
    assert callable(case)
    hop = [
        "Connection: keep-alive, X-Named",
        "Keep-Alive: timeout=5",
        "Proxy-Authenticate: Basic",
        "Proxy-Connection: close",
        "TE: trailers",
        "Trailer: X-Sum",
        "Transfer-Encoding: chunked",
        "Upgrade: h2c",
        "X-Named: secret",
    ]
    lines = ["X-First: 1", *(case(line.split(":")[0]) + ":" + line.split(":", 1)[1] for line in hop), "X-Last: 2"]
    block = "".join("\r\n" + line for line in lines).encode()
    out, flags = filter_response_headers(block)
    assert out == b"\r\nX-First: 1\r\nX-Last: 2"
    assert flags == R_CHUNKED | R_KEEP_ALIVE


def test_filter_flags_and_keeps_the_order_of_the_lines_kept() -> None:
    out, flags = filter_response_headers(b"\r\nContent-Length: 5\r\nConnection: close\r\nX-A: 1")
    assert out == b"\r\nContent-Length: 5\r\nX-A: 1"
    assert flags == R_LENGTH | R_CLOSE
    out, flags = filter_response_headers(b"\r\nconnection:Close, Keep-Alive\r\nx-a: 1")
    assert (out, flags) == (b"\r\nx-a: 1", R_CLOSE | R_KEEP_ALIVE)


def test_filter_memo_gives_the_same_answers_and_stays_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "_LINE_KINDS", {})
    block = b"\r\nDate: a\r\nContent-Length: 13\r\nConnection: keep-alive"
    first = filter_response_headers(block)
    again = filter_response_headers(block.replace(b"13", b"7").replace(b": a", b": b"))
    assert first == (b"\r\nDate: a\r\nContent-Length: 13", R_LENGTH | R_KEEP_ALIVE)
    assert again == (b"\r\nDate: b\r\nContent-Length: 7", R_LENGTH | R_KEEP_ALIVE)
    assert filter_response_headers(block) == first  # (from the memo this time)
    assert upstream._LINE_KINDS[b"Connection: keep-alive"] == upstream._DROP | R_KEEP_ALIVE
    assert upstream._LINE_KINDS[b"Content-Length: 7"] == -8
    for i in range(upstream._LINE_KINDS_MAX + 10):
        assert filter_response_headers(b"\r\nKeep-Alive: timeout=%d" % i) == (b"", 0)
    assert len(upstream._LINE_KINDS) <= upstream._LINE_KINDS_MAX
    long_line = b"X-Long: " + b"a" * upstream._MAX_KNOWN_LINE
    assert filter_response_headers(b"\r\n" + long_line) == (b"\r\n" + long_line, 0)
    assert long_line not in upstream._LINE_KINDS


# -- end to end, against a scripted backend ----------------------------------------------------


@dataclass
class ScriptedBackend:
    """Answers the n-th request it reads (a head, no body) with `responses[n]`: a list of byte
    segments, written with a short pause between them (so that they arrive separately)."""

    responses: list[list[bytes]]
    heads: list[bytes] = field(default_factory=list)
    connections: int = 0
    server: asyncio.Server | None = None
    port: int = 0

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        try:
            while True:
                head = await reader.readuntil(b"\r\n\r\n")
                self.heads.append(head)
                segments = self.responses[len(self.heads) - 1]
                for i, segment in enumerate(segments):
                    if i:
                        await asyncio.sleep(0.005)
                    writer.write(segment)
                    await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, IndexError):
            pass
        finally:
            writer.close()

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def scripted() -> AsyncIterator[list[ScriptedBackend]]:
    made: list[ScriptedBackend] = []
    yield made
    for b in made:
        await b.close()


async def _proxy_to(
    make_proxy: ProxyFactory, made: list[ScriptedBackend], *responses: list[bytes]
) -> tuple[ProxyServer, ScriptedBackend, int]:
    b = ScriptedBackend(list(responses))
    await b.start()
    made.append(b)
    proxy = make_proxy()
    port = await proxy.add_service("demo", 0)
    proxy.set_routing("demo", table(("r1", [Backend("p", "127.0.0.1", b.port)])))
    return proxy, b, port


def _bytewise(data: bytes) -> list[bytes]:
    return [data[i : i + 1] for i in range(len(data))]


async def test_hop_by_hop_response_headers_in_any_case(
    make_proxy: ProxyFactory, scripted: list[ScriptedBackend]
) -> None:
    head = (
        b"HTTP/1.1 200 Fine\r\nX-A: 1\r\ncOnNeCtIoN: Keep-Alive, X-Hop\r\nx-hop: 1\r\nKEEP-ALIVE: timeout=5\r\n"
        b"proxy-authenticate: x\r\nTrailer: X-T\r\nUpgrade: foo\r\ncontent-length: 2\r\nX-B: 2\r\n\r\n"
    )
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, [head + b"ok"], [head + b"ok"])
        c = await RawClient.connect(port)
        try:
            for _ in range(2):
                r = await c.request("GET", "/")
                assert r.status == 200 and r.body == b"ok" and r.keep_alive
                names = sorted(name.lower() for name, _ in r.headers)
                assert names == ["content-length", "x-a", "x-b"]
        finally:
            await c.close()
        assert b.connections == 1  # the upstream connection was kept and reused


@pytest.mark.parametrize("split", [False, True])
async def test_interim_responses_are_dropped(
    make_proxy: ProxyFactory, scripted: list[ScriptedBackend], split: bool
) -> None:
    data = (
        b"HTTP/1.1 103 Early Hints\r\nLink: </a.css>\r\n\r\n"
        b"HTTP/1.1 100 Continue\r\n\r\n"
        b"HTTP/1.1 201 Made\r\nContent-Length: 4\r\nX-Final: 1\r\n\r\ndone"
    )
    async with asyncio.timeout(T):
        _, _, port = await _proxy_to(make_proxy, scripted, _bytewise(data) if split else [data])
        c = await RawClient.connect(port)
        try:
            r = await c.request("GET", "/")
            assert r.status == 201 and r.body == b"done"
            assert r.header("Link") is None and r.header("X-Final") == "1"
        finally:
            await c.close()


async def test_head_arriving_byte_by_byte(make_proxy: ProxyFactory, scripted: list[ScriptedBackend]) -> None:
    data = b"HTTP/1.1 200 OK\r\nConnection: keep-alive\r\nX-A: 1\r\nContent-Length: 5\r\n\r\nhello"
    async with asyncio.timeout(T):
        _, _, port = await _proxy_to(make_proxy, scripted, _bytewise(data))
        c = await RawClient.connect(port)
        try:
            r = await c.request("GET", "/")
            assert r.status == 200 and r.body == b"hello" and r.header("X-A") == "1"
            assert r.header("Connection") is None
        finally:
            await c.close()


async def test_trailers_do_not_leak_into_the_next_response(
    make_proxy: ProxyFactory, scripted: list[ScriptedBackend]
) -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n2\r\nab\r\n0\r\nX-Trailer: t\r\n\r\n"
    plain = b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\ncd"
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, [chunked], [plain])
        first, second = await two_requests(port)
        assert first.body == b"ab" and first.header("Transfer-Encoding") == "chunked"
        assert second.body == b"cd" and second.header("X-Trailer") is None
        assert b.connections == 1


async def test_status_line_gets_the_standard_reason(make_proxy: ProxyFactory, scripted: list[ScriptedBackend]) -> None:
    async with asyncio.timeout(T):
        _, _, port = await _proxy_to(
            make_proxy,
            scripted,
            [b"HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n"],
            [b"HTTP/1.1 599 Odd\r\nContent-Length: 0\r\n\r\n"],
        )
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            writer.write(b"GET /a HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b"\r\n")) == b"HTTP/1.1 404 Not Found\r\n"
            await reader.readuntil(b"\r\n\r\n")
            writer.write(b"GET /b HTTP/1.1\r\nHost: x\r\n\r\n")
            assert (await reader.readuntil(b"\r\n")) == b"HTTP/1.1 599 \r\n"
        finally:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()


async def test_head_response_closing_the_upstream_is_not_reused(
    make_proxy: ProxyFactory, scripted: list[ScriptedBackend]
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(
            make_proxy,
            scripted,
            [b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 10\r\n\r\n"],
        )
        c = await RawClient.connect(port)
        try:
            r = await c.request("HEAD", "/")
            assert r.status == 200 and r.header("Content-Length") == "10" and r.header("Connection") is None
            b.responses.append([b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nhi"])
            r = await c.request("GET", "/")
            assert r.body == b"hi"
        finally:
            await c.close()
        assert b.connections == 2  # "Connection: close" on the HEAD response: a new connection
