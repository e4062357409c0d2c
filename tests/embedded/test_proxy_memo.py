"""The proxy's shortest ways end to end: request heads seen before (`proxy_request.HeadMemo`),
response heads seen before (`upstream.known_response`), and how requests are cut out of the
received bytes when llhttp is given one message at a time (pipelining after a chunked body,
heads in pieces, blank lines, HTTP/0.9). Each way must answer exactly as the general one."""

from __future__ import annotations

import asyncio

import pytest

from rollouts.platform.embedded import upstream
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_request import HeadMemo, RequestHead
from tests.embedded.conftest import BackendFactory, ProxyFactory, RawClient, TestBackend, table, two_requests
from tests.embedded.test_proxy_heads import ScriptedBackend, _proxy_to, scripted  # noqa: F401 (fixture)

T = 10.0  # bound of each test, seconds


async def _service(proxy: ProxyServer, backend: TestBackend) -> int:
    port = await proxy.add_service("demo", 0)
    proxy.set_routing("demo", table(("r1", [backend.backend()])))
    return port


# -- request heads --------------------------------------------------------------------------------


async def test_a_repeated_head_is_read_once_and_forwarded_the_same(
    make_proxy: ProxyFactory, backends: BackendFactory, monkeypatch: pytest.MonkeyPatch
) -> None:
    analysed: list[bytes] = []
    original = HeadMemo.analyse

    def counting(self: HeadMemo, key: bytes, remember: bool = True) -> RequestHead:
        analysed.append(key)
        return original(self, key, remember)

    monkeypatch.setattr(HeadMemo, "analyse", counting)
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        head = b"GET /same?x=1 HTTP/1.1\r\nHost: svc\r\nX-Forwarded-For: 10.0.0.1\r\nX-Id: 7\r\n\r\n"
        c = await RawClient.connect(port)
        try:
            for _ in range(5):
                await c.send(head)
                r = await c.response()
                assert r.status == 200 and r.keep_alive and r.json()["path"] == "/same?x=1"
        finally:
            await c.close()
    assert analysed == [head]  # the next four took the memo, without parsing
    assert len(b.requests) == 5
    assert {tuple(req.headers) for req in b.requests} == {tuple(b.requests[0].headers)}
    first = b.requests[0]
    assert first.header("X-Forwarded-For") == "10.0.0.1, 127.0.0.1"
    assert first.header("X-Forwarded-Host") == "svc" and first.header("X-Id") == "7"


async def test_pipelined_requests_after_a_chunked_body_with_trailers(
    make_proxy: ProxyFactory, backends: BackendFactory
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            await c.send(
                b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n"
                b"5;ext=1\r\nhello\r\n6\r\n world\r\n0\r\nX-Sum: 1\r\n\r\n"
                b"GET /after HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /cl HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"GET /last HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            paths = [(await c.response()).json()["path"] for _ in range(4)]
        finally:
            await c.close()
        assert paths == ["/up", "/after", "/cl", "/last"]
        assert [req.body for req in b.requests] == [b"hello world", b"", b"abc", b""]


@pytest.mark.parametrize("cuts", [(1,), (5, 20), (25, 26, 27, 28), tuple(range(1, 40))], ids=str)
async def test_a_head_in_pieces_and_blank_lines_before_it(
    make_proxy: ProxyFactory, backends: BackendFactory, cuts: tuple[int, ...]
) -> None:
    head = b"\r\n\r\nGET /pieces HTTP/1.1\r\nHost: x\r\nX-A: 1\r\n\r\n"
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            last = 0
            for cut in (*cuts, len(head)):
                await c.send(head[last:cut])
                await asyncio.sleep(0.002)  # (so that they arrive as separate reads)
                last = cut
            r = await c.response()
            assert r.status == 200 and r.json()["path"] == "/pieces" and r.keep_alive
        finally:
            await c.close()
        assert b.requests[-1].header("X-A") == "1"


async def test_http09_and_http10_requests(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        for head in (b"GET /old\r\n\r\n", b"GET /old HTTP/1.0\r\n\r\n"):
            c = await RawClient.connect(port)
            try:
                await c.send(head)
                r = await c.response()
                assert r.status == 200 and r.header("Connection") == "close"
                assert await c.at_eof()
            finally:
                await c.close()
        assert [req.header("Host") for req in b.requests] == [f"127.0.0.1:{b.port}"] * 2


async def test_a_head_that_is_not_http_is_refused_at_once(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            await c.send(b"GET / HTTP/1.1\r\nBad Header: x\r\n")  # (no end of head yet)
            r = await c.response()
            assert r.status == 400 and await c.at_eof()
        finally:
            await c.close()
        assert b.requests == []


# -- response heads -------------------------------------------------------------------------------

OK = b"HTTP/1.1 200 OK\r\nX-A: 1\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\n"


async def test_a_repeated_response_head_is_forwarded_the_same_for_every_client(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
) -> None:
    async with asyncio.timeout(T):
        proxy, b, port = await _proxy_to(
            make_proxy,
            scripted,
            [OK + b"hi"],
            [OK + b"hi"],
            [OK + b"hi"],
            [OK],  # a HEAD: the same head, no body
            [OK + b"hi"],  # an HTTP/1.0 client
            [OK + b"hi"],  # a client asking to close
        )
        c = await RawClient.connect(port)
        try:
            answers = [await c.request("GET", f"/{i}") for i in range(3)]
            head = await c.request("HEAD", "/h")
            await c.send(b"GET /old HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            old = await c.response()
            last = await c.request("GET", "/bye", {"Connection": "close"})
            assert await c.at_eof()
        finally:
            await c.close()
        assert len(proxy._pool.known) == 1  # one head: kept once, used for the rest
        for r in answers:
            assert (r.status, r.body, r.keep_alive, r.header("X-A"), r.header("Connection")) == (
                200,
                b"hi",
                True,
                "1",
                None,
            )
        assert head.status == 200 and head.header("Content-Length") == "2" and head.body == b""
        assert old.body == b"hi" and old.header("Connection") == "keep-alive"
        assert last.body == b"hi" and last.header("Connection") == "close"
        assert b.connections == 1  # the upstream connection served all six


async def test_bytes_after_a_response_make_the_connection_unusable(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(
            make_proxy,
            scripted,
            [OK + b"hi" + b"HTTP/1.1 200 OK\r\nContent-Le"],  # the start of a response nobody asked for
            [OK + b"hi"],
        )
        first, second = await two_requests(port)
        assert first.body == second.body == b"hi"
        assert b.connections == 2  # the first connection was closed, not reused


async def test_a_backend_whose_heads_never_repeat_stops_filling_the_memo(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
) -> None:
    n = upstream._KNOWN_TRIES + 30
    responses = [[b"HTTP/1.1 200 OK\r\nX-Id: %d\r\nContent-Length: 2\r\n\r\nhi" % i] for i in range(n)]
    async with asyncio.timeout(T):
        proxy, b, port = await _proxy_to(make_proxy, scripted, *responses)
        c = await RawClient.connect(port)
        try:
            for i in range(n):
                r = await c.request("GET", f"/{i}")
                assert r.status == 200 and r.body == b"hi" and r.header("X-Id") == str(i)
        finally:
            await c.close()
        assert len(proxy._pool.known) <= upstream._KNOWN_TRIES  # (not one per response)
        assert b.connections == 1
