"""Request heads read from their bytes (`proxy_request`): what a head says, the head forwarded,
the memo of heads, and where a chunked body ends; without sockets, each checked against llhttp
(httptools) where it matters."""

from __future__ import annotations

from dataclasses import dataclass

import httptools
import pytest

from rollouts.platform.embedded.proxy_request import (
    MAX_MEMO_HEAD,
    ChunkedEnd,
    HeadMemo,
    analyse_request_head,
)
from rollouts.platform.embedded.routing import Backend

BACKEND = Backend("pod-1", "10.0.0.7", 8080)
PEER = b"127.0.0.9"


@dataclass(frozen=True)
class Case:
    head: bytes
    forwarded: bytes  # the head sent upstream for PEER and BACKEND
    keep_alive: bool = True
    http11: bool = True
    memo: bool = True  # kept in the memo (complete in itself: no body, keep-alive, a Host)
    content_length: int | None = None
    chunked: bool = False
    expect_continue: bool = False
    upgrade: bool = False


XF = b"X-Forwarded-For: 127.0.0.9\r\nX-Forwarded-Proto: http\r\n"

CASES = [
    pytest.param(
        Case(
            b"GET /a?b=1 HTTP/1.1\r\nHost: web\r\nUser-Agent: t\r\n\r\n",
            b"GET /a?b=1 HTTP/1.1\r\nHost: web\r\nUser-Agent: t\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
        ),
        id="common",
    ),
    pytest.param(
        Case(
            b"HEAD / HTTP/1.1\r\nhost:web  \r\n\r\n",
            b"HEAD / HTTP/1.1\r\nhost:web  \r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
        ),
        id="head-method-and-spaces-around-host",
    ),
    pytest.param(
        Case(
            b"GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: web\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
        ),
        id="connection-keep-alive-dropped",
    ),
    pytest.param(
        Case(
            b"GET / HTTP/1.1\r\nHost: web\r\nConnection: close\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: web\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
            keep_alive=False,
            memo=False,
        ),
        id="connection-close",
    ),
    pytest.param(
        Case(
            b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + XF + b"Host: 10.0.0.7:8080\r\n\r\n",
            http11=False,
            memo=False,
        ),
        id="http10-keep-alive-no-host",
    ),
    pytest.param(
        Case(
            b"GET / HTTP/1.0\r\nHost: web\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: web\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
            keep_alive=False,
            http11=False,
            memo=False,
        ),
        id="http10",
    ),
    pytest.param(
        Case(
            b"GET /\r\n\r\n",
            b"GET / HTTP/1.1\r\n" + XF + b"Host: 10.0.0.7:8080\r\n\r\n",
            keep_alive=False,
            http11=False,
            memo=False,
        ),
        id="http09",
    ),
    pytest.param(
        Case(
            b"GET  /x  HTTP/1.1\r\nHost: web\r\n\r\n",
            b"GET /x HTTP/1.1\r\nHost: web\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
        ),
        id="request-line-rewritten",
    ),
    pytest.param(
        Case(
            b"GET / HTTP/1.1\r\nHost: web\r\nConnection: keep-alive, X-Hop\r\nx-hop: 1\r\nKeep-Alive: 5\r\nProxy-Authorization: a\r\n"
            b"proxy-connection: x\r\nTE: trailers\r\nTrailer: X-T\r\nUpgrade: h2c\r\nX-Kept: 2\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: web\r\nX-Kept: 2\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
            memo=False,
        ),
        id="hop-by-hop-and-named-removed",
    ),
    pytest.param(
        Case(
            b"GET / HTTP/1.1\r\nX-Forwarded-For: 10.1.1.1\r\nHost: web\r\nx-forwarded-for: 10.2.2.2 \r\n"
            b"X-Forwarded-Proto: https\r\nX-Forwarded-Host: outside\r\n\r\n",
            b"GET / HTTP/1.1\r\nHost: web\r\nX-Forwarded-Proto: https\r\nX-Forwarded-Host: outside\r\n"
            b"X-Forwarded-For: 10.1.1.1, 10.2.2.2, 127.0.0.9\r\n\r\n",
        ),
        id="forwarded-headers-kept-and-appended",
    ),
    pytest.param(
        Case(
            b"POST /up HTTP/1.1\r\nHost: web\r\nContent-Length: 12\r\nExpect: 100-continue\r\n\r\n",
            b"POST /up HTTP/1.1\r\nHost: web\r\nContent-Length: 12\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
            memo=False,
            content_length=12,
            expect_continue=True,
        ),
        id="body-and-expect",
    ),
    pytest.param(
        Case(
            b"POST /up HTTP/1.1\r\nHost: web\r\nTransfer-Encoding: chunked\r\n\r\n",
            b"POST /up HTTP/1.1\r\nHost: web\r\n" + XF + b"X-Forwarded-Host: web\r\nTransfer-Encoding: chunked\r\n\r\n",
            memo=False,
            chunked=True,
        ),
        id="chunked-reframed",
    ),
    pytest.param(
        Case(
            b"GET /ws HTTP/1.1\r\nHost: web\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: web\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
            memo=False,
            upgrade=True,
        ),
        id="upgrade",
    ),
    pytest.param(
        Case(
            b"GET /ws HTTP/1.1\r\nHost: web\r\nUpgrade: websocket\r\n\r\n",
            b"GET /ws HTTP/1.1\r\nHost: web\r\n" + XF + b"X-Forwarded-Host: web\r\n\r\n",
            memo=True,
        ),
        id="upgrade-header-without-connection-upgrade",
    ),
    pytest.param(
        Case(
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n\r\n",
            b"CONNECT a:443 HTTP/1.1\r\nHost: a:443\r\n" + XF + b"X-Forwarded-Host: a:443\r\n\r\n",
            memo=False,
            upgrade=True,
        ),
        id="connect",
    ),
]


def _llhttp(head: bytes) -> tuple[bool, str, bool]:
    """What llhttp says of `head` once it has read it: (keep-alive, version, upgrade)."""
    seen: list[tuple[bool, str]] = []

    class Sink:
        def on_headers_complete(self) -> None:
            seen.append((parser.should_keep_alive(), parser.get_http_version()))

    parser = httptools.HttpRequestParser(Sink())
    upgrade = False
    try:
        parser.feed_data(head)
    except httptools.HttpParserUpgrade:
        upgrade = True
    return seen[0][0], seen[0][1], upgrade


@pytest.mark.parametrize("case", CASES)
def test_head_analysis(case: Case) -> None:
    h = analyse_request_head(case.head)
    assert h.forwarded(PEER, BACKEND) == case.forwarded
    assert (h.keep_alive, h.http11, h.memo) == (case.keep_alive, case.http11, case.memo)
    assert (h.content_length, h.chunked, h.expect_continue, h.upgrade) == (
        case.content_length,
        case.chunked,
        case.expect_continue,
        case.upgrade,
    )
    # the same answers as llhttp's own, for the same bytes
    keep_alive, version, upgrade = _llhttp(case.head)
    assert (h.upgrade, h.keep_alive, h.http11) == (upgrade, keep_alive, version == "1.1")
    # the memo gives the same analysis
    memo = HeadMemo()
    again = memo.analyse(case.head)
    assert again.forwarded(PEER, BACKEND) == case.forwarded
    assert (again.keep_alive, again.http11, again.memo, again.upgrade) == (h.keep_alive, h.http11, h.memo, h.upgrade)


def test_header_lines_as_received() -> None:
    h = analyse_request_head(b"GET / HTTP/1.1\r\nHost: web\r\nX-A:  1 \r\nx-a: 2\r\n\r\n")
    assert h.header_lines() == [(b"Host", b"web"), (b"X-A", b"1"), (b"x-a", b"2")]
    assert analyse_request_head(b"GET / HTTP/1.1\r\n\r\n").header_lines() == []


def test_memo_keeps_one_analysis_per_head_and_one_per_header_block() -> None:
    memo = HeadMemo(size=4)
    a = memo.analyse(b"GET /1 HTTP/1.1\r\nHost: web\r\n\r\n")
    assert memo.analyse(b"GET /1 HTTP/1.1\r\nHost: web\r\n\r\n") is a
    b = memo.analyse(b"GET /2 HTTP/1.1\r\nHost: web\r\n\r\n")
    assert b is not a and b.block is a.block  # the header lines were read once
    assert b.forwarded(PEER, BACKEND).startswith(b"GET /2 HTTP/1.1\r\nHost: web\r\n")
    # not kept: a head with a body (its exchange needs the general way anyway)
    post = b"POST / HTTP/1.1\r\nHost: web\r\nContent-Length: 1\r\n\r\n"
    assert memo.analyse(post) is not memo.analyse(post)
    # bounded: cleared when full
    for i in range(10):
        memo.analyse(b"GET /%d HTTP/1.1\r\nHost: h%d\r\n\r\n" % (i, i))
    assert len(memo.heads) <= 4 and len(memo.blocks) <= 4
    big = b"GET / HTTP/1.1\r\nHost: web\r\nX-Big: " + b"v" * MAX_MEMO_HEAD + b"\r\n\r\n"
    assert not memo.analyse(big).memo and big not in memo.heads


# -- chunked framing ----------------------------------------------------------------------------

BODIES = [
    pytest.param(b"5\r\nhello\r\n0\r\n\r\n", id="one-chunk"),
    pytest.param(b'5;ext=1;q="a b"\r\nhello\r\n6\r\n world\r\n0\r\n\r\n', id="extensions"),
    pytest.param(b"A\r\n0123456789\r\n0\r\nX-Sum: 1\r\nX-Other: 2\r\n\r\n", id="trailers"),
    pytest.param(b"0\r\n\r\n", id="empty"),
    pytest.param(b"3\r\n\r\n\r\r\n0\r\n\r\n", id="crlf-in-the-data"),
]


@pytest.mark.parametrize("body", BODIES)
def test_chunked_end_is_found_wherever_the_reads_are_cut(body: bytes) -> None:
    after = b"GET /next HTTP/1.1\r\n\r\n"
    stream = body + after
    for cut in range(len(stream) + 1):
        end = ChunkedEnd()
        first = end.scan(stream[:cut])
        if first >= 0:
            assert first == len(body), cut
            continue
        assert cut < len(body), cut
        assert end.scan(stream[cut:]) + cut == len(body), cut


@pytest.mark.parametrize("body", BODIES)
def test_chunked_end_agrees_with_llhttp(body: bytes) -> None:
    class Sink:
        done = 0
        data = b""

        def on_body(self, piece: bytes) -> None:
            self.data += piece

        def on_message_complete(self) -> None:
            self.done += 1

    sink = Sink()
    parser = httptools.HttpRequestParser(sink)
    parser.feed_data(b"POST / HTTP/1.1\r\nTransfer-Encoding: chunked\r\n\r\n")
    end = ChunkedEnd().scan(body)
    assert end == len(body)
    parser.feed_data(body[:end])
    assert sink.done == 1


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"5 \r\nhello\r\n0\r\n\r\n", id="space-after-size"),
        pytest.param(b"x\r\n", id="not-hex"),
        pytest.param(b"5\nhello\r\n0\r\n\r\n", id="lf-without-cr"),
        pytest.param(b"1_0\r\n", id="underscore"),
    ],
)
def test_chunked_framing_errors(body: bytes) -> None:
    with pytest.raises(ValueError, match="chunked framing"):
        ChunkedEnd().scan(body)
