"""The general way of a response, whose head was never seen before: the line-by-line filter of
response heads against a plain reference, and, end to end against a scripted backend, whole
responses framed by their Content-Length (`Upstream._whole`) next to every response that must
not take that way (split across reads, longer or shorter than its length, chunked, HEAD, 1xx,
204, pipelined, invalid). Each must answer exactly as the parser-driven way does."""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator

import pytest

from rollouts.platform.embedded import upstream
from rollouts.platform.embedded.proxy_request import CONNECTION_OPTIONS, connection_tokens
from rollouts.platform.embedded.routing import Backend
from rollouts.platform.embedded.upstream import R_CHUNKED, R_CLOSE, R_KEEP_ALIVE, R_LENGTH, filter_response_head
from tests.embedded.conftest import ProxyFactory, RawClient, table, two_requests
from tests.embedded.test_proxy_heads import ScriptedBackend, _proxy_to, scripted  # noqa: F401 (fixture)

T = 10.0  # bound of each test, seconds


# -- the filter against a reference -------------------------------------------------------------

_HOP = {b"keep-alive", b"te", b"trailer", b"transfer-encoding", b"upgrade"}


def _reference(block: bytes) -> tuple[list[bytes], int, int]:
    """What the filter must find, read the obvious way: the lines kept, the flags, the length."""
    lines = block.split(b"\r\n")[1:]
    parsed = []
    for line in lines:
        name, _, value = line.partition(b":")
        parsed.append((name.rstrip(b" \t").lower(), value, line))
    tokens: set[bytes] = set()
    for name, value, _ in parsed:
        if name == b"connection":
            tokens = connection_tokens(value, tokens)
    flags = (R_CLOSE if b"close" in tokens else 0) | (R_KEEP_ALIVE if b"keep-alive" in tokens else 0)
    named = tokens - CONNECTION_OPTIONS
    kept = []
    length = -1
    for name, value, line in parsed:
        if name == b"transfer-encoding":
            flags |= R_CHUNKED
        if name == b"content-length":
            flags |= R_LENGTH
            length = int(value)
        if name == b"connection" or name in _HOP or name.startswith(b"proxy-") or name in named:
            continue
        kept.append(line)
    return kept, flags, length


_NAMES = [
    b"Server",
    b"Date",
    b"Content-Type",
    b"Content-Length",
    b"Connection",
    b"Keep-Alive",
    b"Transfer-Encoding",
    b"TE",
    b"Trailer",
    b"Upgrade",
    b"Proxy-Authenticate",
    b"Cache-Control",
    b"X-Request-Id",
    b"Tex",
    b"Connectionx",
    b"X-Named",
    b"Set-Cookie",
]
_CONNECTION_VALUES = [b"keep-alive", b"close", b"Keep-Alive, X-Named", b"close, keep-alive", b"", b"upgrade"]


def _blocks(n: int) -> Iterator[bytes]:
    rnd = random.Random(7)
    for _ in range(n):
        lines: list[bytes] = []
        for _ in range(rnd.randint(0, 8)):
            name = rnd.choice(_NAMES)
            name = rnd.choice([name, name.lower(), name.upper(), name.title()])
            if name.lower() == b"content-length":
                if any(line.lower().startswith(b"content-length") for line in lines):
                    continue  # (llhttp refuses a second one)
                value = b"%d" % rnd.randint(0, 99)
            elif name.lower() == b"connection":
                value = rnd.choice(_CONNECTION_VALUES)
            else:
                value = b"%x" % rnd.getrandbits(40)
            lines.append(name + b":" + rnd.choice([b"", b" ", b"  "]) + value)
        yield b"".join(b"\r\n" + line for line in lines)


def test_filter_agrees_with_the_reference_on_many_heads(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(upstream, "_LINE_KINDS_MAX", 64)  # (so that the memo is cleared on the way)
    monkeypatch.setattr(upstream, "_LINE_KINDS", {})
    for _ in range(2):  # (the second time, mostly from the memo)
        for block in _blocks(3000):
            out, flags, length = filter_response_head(block)
            kept, ref_flags, ref_length = _reference(block)
            assert (out, flags, length) == (b"".join(b"\r\n" + line for line in kept), ref_flags, ref_length), block


def test_filter_refuses_a_length_that_is_not_a_number() -> None:
    with pytest.raises(ValueError):
        filter_response_head(b"\r\nContent-Length: x1")


# -- whole responses end to end -----------------------------------------------------------------


@pytest.fixture
def whole(monkeypatch: pytest.MonkeyPatch) -> list[bool]:
    """What `Upstream._whole` answered, in order (True: the response went that way)."""
    seen: list[bool] = []
    real = upstream.Upstream._whole

    def spy(self: upstream.Upstream, *args: object) -> bool:
        taken = real(self, *args)  # type: ignore[arg-type]
        seen.append(taken)
        return taken

    monkeypatch.setattr(upstream.Upstream, "_whole", spy)
    return seen


def _head(i: int, extra: bytes = b"", length: int = 2) -> bytes:
    return (
        b"HTTP/1.1 200 OK\r\nServer: s\r\nContent-Type: text/plain\r\nContent-Length: %d\r\n"
        b"Connection: keep-alive\r\nKeep-Alive: timeout=5\r\nX-Request-Id: %d\r\n%b\r\n" % (length, i, extra)
    )


async def test_whole_responses_with_heads_that_never_repeat(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
) -> None:
    n = 80  # (past the tries of the response memo)
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, *[[_head(i) + b"hi"] for i in range(n)])
        c = await RawClient.connect(port)
        try:
            for i in range(n):
                r = await c.request("GET", f"/?n={i}")
                assert (r.status, r.body, r.keep_alive) == (200, b"hi", True)
                assert r.headers == [
                    ("Server", "s"),
                    ("Content-Type", "text/plain"),
                    ("Content-Length", "2"),
                    ("X-Request-Id", str(i)),
                ]
        finally:
            await c.close()
    assert whole == [True] * n
    assert b.connections == 1  # kept and reused throughout


@pytest.mark.parametrize(
    ("segments", "body"),
    [
        ([_head(1), b"hi"], b"hi"),  # the head and the body in two reads
        ([_head(1)[:20], _head(1)[20:] + b"hi"], b"hi"),  # the head in two reads
        ([_head(1, length=5) + b"hi", b"abc"], b"hiabc"),  # a body shorter than its length, then the rest
    ],
    ids=["body-apart", "head-in-pieces", "body-short"],
)
async def test_responses_in_pieces_take_the_parsers_way(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
    segments: list[bytes],
    body: bytes,
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, segments, [_head(2) + b"ok"])
        first, second = await two_requests(port)
    assert (first.status, first.body, first.header("X-Request-Id")) == (200, body, "1")
    assert (second.body, second.header("X-Request-Id")) == (b"ok", "2")
    assert whole[-1] is True  # (the second, whole, went the short way)
    assert b.connections == 1


async def test_bytes_after_a_whole_response_are_not_forwarded(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, [_head(1) + b"hiEXTRA"], [_head(2) + b"ok"])
        first, second = await two_requests(port)
    assert (first.body, second.body) == (b"hi", b"ok")
    assert whole[0] is False  # longer than its length: the parser's way, which closes the connection
    assert b.connections == 2


async def test_a_body_cut_short_by_the_backend_aborts_the_client(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
) -> None:
    async with asyncio.timeout(T):
        proxy = make_proxy(read_timeout=0.5)  # (the backend sends no more and keeps the connection)
        b = ScriptedBackend([[_head(1, length=10) + b"hi"]])
        await b.start()
        scripted.append(b)
        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("r1", [Backend("p", "127.0.0.1", b.port)])))
        c = await RawClient.connect(port)
        try:
            await c.send(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
            data = b""
            while chunk := await c.reader.read(65536):
                data += chunk
        finally:
            await c.close()
    assert data.startswith(b"HTTP/1.1 200 OK\r\n") and b"Content-Length: 10\r\n" in data
    assert data.endswith(b"\r\n\r\nhi")  # the client sees the connection close before the end
    assert whole == [False]


@pytest.mark.parametrize(
    ("response", "status", "body", "header"),
    [
        (
            b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nX-A: 1\r\n\r\n2\r\nhi\r\n1\r\n!\r\n0\r\n\r\n",
            200,
            b"hi!",
            ("Transfer-Encoding", "chunked"),
        ),
        (b"HTTP/1.1 204 No Content\r\nX-A: 1\r\n\r\n", 204, b"", ("X-A", "1")),
        (b"HTTP/1.1 100 Continue\r\n\r\n" + _head(1) + b"hi", 200, b"hi", ("X-Request-Id", "1")),
        (b"HTTP/1.1 304 Not Modified\r\nContent-Length: 5\r\nX-A: 1\r\n\r\n", 304, b"", ("X-A", "1")),
    ],
    ids=["chunked", "204", "100-then-200", "304-with-length"],
)
async def test_responses_not_framed_by_their_length_take_the_parsers_way(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
    response: bytes,
    status: int,
    body: bytes,
    header: tuple[str, str],
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, [response], [_head(2) + b"ok"])
        first, second = await two_requests(port)
    assert (first.status, first.body, first.keep_alive) == (status, body, True)
    assert header in first.headers
    assert second.body == b"ok"
    assert whole == [False, True]
    assert b.connections == 1


async def test_a_head_request_takes_the_parsers_way(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, [_head(1, length=13)], [_head(2) + b"ok"])
        first, second = await two_requests(port, "HEAD")
    assert (first.status, first.body, first.header("Content-Length")) == (200, b"", "13")
    assert second.body == b"ok"
    assert whole == [True]  # (only the GET)
    assert b.connections == 1


@pytest.mark.parametrize(
    ("response", "reused"),
    [
        (b"HTTP/1.1 200 OK\r\nConnection: close\r\nContent-Length: 2\r\n\r\nhi", False),
        (b"HTTP/1.0 200 OK\r\nContent-Length: 2\r\n\r\nhi", False),
        (b"HTTP/1.0 200 OK\r\nConnection: keep-alive\r\nContent-Length: 2\r\n\r\nhi", True),
        (b"HTTP/1.1 201 Created\r\nContent-Length: 0\r\n\r\n", True),
    ],
    ids=["close", "http10", "http10-keep-alive", "empty-body"],
)
async def test_whole_responses_keep_the_backend_connection_as_llhttp_would(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
    response: bytes,
    reused: bool,
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, [response], [_head(2) + b"ok"])
        first, second = await two_requests(port)
    assert first.keep_alive and first.header("Connection") is None
    assert first.body == response.partition(b"\r\n\r\n")[2]
    assert second.body == b"ok"
    assert whole == [True, True]
    assert b.connections == (1 if reused else 2)


async def test_a_whole_response_to_an_http10_client_and_to_a_closing_one(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
) -> None:
    async with asyncio.timeout(T):
        _, _, port = await _proxy_to(make_proxy, scripted, [_head(1) + b"hi"], [_head(2) + b"ok"])
        c = await RawClient.connect(port)
        try:
            await c.send(b"GET /1 HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
            first = await c.response()
            await c.send(b"GET /2 HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
            second = await c.response()
            assert await c.at_eof()
        finally:
            await c.close()
    assert (first.body, first.header("Connection")) == (b"hi", "keep-alive")
    assert (second.body, second.header("Connection")) == (b"ok", "close")
    assert whole == [True, True]


async def test_pipelined_requests_get_whole_responses_in_order(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
) -> None:
    n = 5
    async with asyncio.timeout(T):
        _, _, port = await _proxy_to(make_proxy, scripted, *[[_head(i, length=1) + b"%d" % i] for i in range(n)])
        c = await RawClient.connect(port)
        try:
            await c.send(b"".join(b"GET /?n=%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(n)))
            got = [await c.response() for _ in range(n)]
        finally:
            await c.close()
    assert [(r.body, r.header("X-Request-Id")) for r in got] == [(b"%d" % i, str(i)) for i in range(n)]
    assert whole == [True] * n


@pytest.mark.parametrize(
    "response",
    [
        b"HTTP/1.1 200 OK\r\nContent-Length: 1_0\r\n\r\n0123456789",  # (Python's int() reads it)
        b"HTTP/1.1 200 OK\r\nBad Name: x\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nContent-Length: 2\r\n\r\nhi",
        b"HTTP/1.1 200 OK\r\nX: a\r\n b\r\nContent-Length: 2\r\n\r\nhi",  # (obs-fold)
    ],
    ids=["length-with-underscore", "space-in-name", "two-lengths", "folded-line"],
)
async def test_an_invalid_whole_response_is_a_502(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    response: bytes,
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(make_proxy, scripted, [response], [_head(2) + b"ok"])
        first, second = await two_requests(port)
    assert first.status == 502 and b"invalid response from upstream" in first.body
    assert second.body == b"ok"
    assert b.connections == 2  # the broken connection was closed


async def test_a_whole_response_after_an_interim_one_read_apart(
    make_proxy: ProxyFactory,
    scripted: list[ScriptedBackend],  # noqa: F811
    whole: list[bool],
) -> None:
    async with asyncio.timeout(T):
        _, b, port = await _proxy_to(
            make_proxy,
            scripted,
            [b"HTTP/1.1 103 Early Hints\r\nLink: </a>\r\n\r\n", _head(1) + b"hi"],
            [_head(2) + b"ok"],
        )
        first, second = await two_requests(port)
    assert (first.status, first.body, first.header("Link")) == (200, b"hi", None)
    assert second.body == b"ok"
    assert whole == [False, True, True]  # (the 103 by the parser, then the 200 whole)
    assert b.connections == 1
