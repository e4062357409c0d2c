"""The embedded reverse proxy end to end, on loopback, against in-process backends."""

from __future__ import annotations

import asyncio
import hashlib
import json
import socket
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollouts.platform.embedded.proxy import PortInUseError, ProxyServer
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics
from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable
from tests.embedded.conftest import BackendFactory, ProxyFactory, RawClient, TestBackend, table

T = 10.0  # bound of each test, seconds


async def _service(proxy: ProxyServer, backend: TestBackend, name: str = "demo", rev: str = "r1") -> int:
    port = await proxy.add_service(name, 0)
    proxy.set_routing(name, table((rev, [backend.backend()])))
    return port


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


# -- passthrough --------------------------------------------------------------------------------


async def test_get_passthrough_adds_forwarded_headers(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        r = await client.get(
            f"http://127.0.0.1:{port}/hello?x=1",
            headers={"X-Forwarded-For": "10.1.2.3", "X-Request-Id": "abc"},
        )
        assert r.status_code == 200
        assert r.headers["x-backend"] == "a"
        seen = b.requests[-1]
        assert seen.method == "GET" and seen.path == "/hello?x=1"
        assert seen.header("X-Forwarded-For") == "10.1.2.3, 127.0.0.1"
        assert seen.header("X-Forwarded-Proto") == "http"
        assert seen.header("X-Forwarded-Host") == f"127.0.0.1:{port}"
        assert seen.header("Host") == f"127.0.0.1:{port}"
        assert seen.header("X-Request-Id") == "abc"


async def test_post_with_content_length(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        body = bytes(range(256)) * 4096  # 1 MiB
        r = await client.post(f"http://127.0.0.1:{port}/upload", content=body)
        assert r.status_code == 200
        data = r.json()
        assert data["body_len"] == len(body)
        assert data["body_sha256"] == hashlib.sha256(body).hexdigest()
        assert b.requests[-1].header("Content-Length") == str(len(body))


async def test_large_chunked_upload_is_streamed(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        piece = b"0123456789abcdef" * 4096  # 64 KiB
        digest = hashlib.sha256()

        async def body() -> AsyncIterator[bytes]:
            for _ in range(128):  # 8 MiB
                digest.update(piece)
                yield piece

        r = await client.post(f"http://127.0.0.1:{port}/upload", content=body())
        assert r.status_code == 200
        assert r.json()["body_len"] == 128 * len(piece)
        assert r.json()["body_sha256"] == digest.hexdigest()
        assert b.requests[-1].header("Transfer-Encoding") == "chunked"


async def test_request_body_reaches_backend_before_it_ends(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            await c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n")
            await b.body_started.wait()  # forwarded while the client has not finished
            await c.send(b"6\r\n world\r\n0\r\n\r\n")
            r = await c.response()
            assert r.status == 200
            assert r.json()["body_len"] == 11
            assert b.requests[-1].body == b"hello world"
        finally:
            await c.close()


async def test_large_chunked_response(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        r = await client.get(f"http://127.0.0.1:{port}/chunked?n=512&size=16384")  # 8 MiB
        assert r.status_code == 200
        assert len(r.content) == 512 * 16384
        assert r.content[:16384] == b"A" * 16384 and r.content[-16384:] == bytes([65 + 511 % 26]) * 16384


async def test_response_is_streamed(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        async with client.stream("GET", f"http://127.0.0.1:{port}/stream") as r:
            chunks = r.aiter_raw()
            first = await anext(chunks)  # arrives while the backend holds the rest
            assert first == b"first"
            b.release.set()
            rest = b"".join([c async for c in chunks])
        assert rest == b"second"


async def test_close_delimited_response_and_http10_client(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        # a close-delimited upstream body becomes chunked for an HTTP/1.1 client
        c = await RawClient.connect(port)
        try:
            r = await c.request("GET", "/eof?size=3000")
            assert r.status == 200 and r.body == b"e" * 3000
            assert r.header("Transfer-Encoding") == "chunked"
            r = await c.request("GET", "/again")  # and the client connection stays usable
            assert r.status == 200
        finally:
            await c.close()
        # an HTTP/1.0 client gets a close-delimited body instead of chunks
        c = await RawClient.connect(port)
        try:
            await c.send(b"GET /chunked?n=4&size=5 HTTP/1.0\r\n\r\n")
            r = await c.response()
            assert r.status == 200
            assert r.body == b"AAAAABBBBBCCCCCDDDDD"
            assert r.header("Transfer-Encoding") is None
            assert r.header("Connection") == "close"
        finally:
            await c.close()


async def test_head_request(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            r = await c.request("HEAD", "/x")
            assert r.status == 200 and r.body == b""
            assert r.header("Content-Length") is not None
            r = await c.request("GET", "/y")  # the pooled upstream connection parses anew
            assert r.status == 200 and r.json()["path"] == "/y"
            assert b.connections == 1
        finally:
            await c.close()


# -- keep-alive, pipelining, headers --------------------------------------------------------------


async def test_keep_alive_reuse_on_both_sides(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            for i in range(5):
                r = await c.request("GET", f"/n/{i}")
                assert r.status == 200 and r.keep_alive
                assert r.header("Connection") is None
            r = await c.request("POST", "/post", {"Content-Length": "0"})
            assert r.status == 200
        finally:
            await c.close()
        assert len(b.requests) == 6
        assert b.connections == 1  # one pooled upstream connection served every request
        assert {req.connection for req in b.requests} == {1}


async def test_pipelined_requests_are_answered_in_order(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            await c.send(
                b"GET /p/1 HTTP/1.1\r\nHost: x\r\n\r\n"
                b"POST /p/2 HTTP/1.1\r\nHost: x\r\nContent-Length: 3\r\n\r\nabc"
                b"GET /p/3 HTTP/1.1\r\nHost: x\r\n\r\n"
            )
            paths = [(await c.response()).json()["path"] for _ in range(3)]
            assert paths == ["/p/1", "/p/2", "/p/3"]
            assert b.requests[1].body == b"abc"
        finally:
            await c.close()


async def test_hop_by_hop_headers_are_removed(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            r = await c.request(
                "GET",
                "/chunked?n=2&size=4",
                {
                    "Connection": "keep-alive, X-Hop",
                    "X-Hop": "secret",
                    "Keep-Alive": "timeout=300",
                    "Proxy-Authorization": "Basic Zm9vOmJhcg==",
                    "Proxy-Connection": "keep-alive",
                    "TE": "trailers",
                    "Trailer": "X-Checksum",
                    "Upgrade": "h2c",
                    "X-End-To-End": "kept",
                },
            )
            assert r.status == 200 and r.body == b"AAAABBBB"
            seen = b.requests[-1]
            for name in ("Connection", "X-Hop", "Keep-Alive", "Proxy-Authorization", "Proxy-Connection", "TE"):
                assert seen.header(name) is None, name
            for name in ("Trailer", "Upgrade", "Transfer-Encoding"):
                assert seen.header(name) is None, name
            assert seen.header("X-End-To-End") == "kept"
            # response side: the backend's Keep-Alive, Connection-listed and Proxy-* are gone
            for name in ("Keep-Alive", "X-Secret-Hop", "Proxy-Authenticate", "Connection"):
                assert r.header(name) is None, name
            assert r.header("X-Custom") == "yes"
            assert r.header("Transfer-Encoding") == "chunked"  # re-framed by the proxy
        finally:
            await c.close()


async def test_expect_100_continue(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            await c.send(b"PUT /up HTTP/1.1\r\nHost: x\r\nContent-Length: 4\r\nExpect: 100-continue\r\n\r\n")
            line = await c.reader.readuntil(b"\r\n\r\n")
            assert line.startswith(b"HTTP/1.1 100 Continue")
            await c.send(b"data")
            r = await c.response()
            assert r.status == 200 and r.json()["body_len"] == 4
            assert b.requests[-1].header("Expect") is None
        finally:
            await c.close()


# -- errors ---------------------------------------------------------------------------------------


async def test_503_without_ready_pod(make_proxy: ProxyFactory, client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(T):
        proxy = make_proxy()
        port = await proxy.add_service("demo-stable", 0)
        r = await client.get(f"http://127.0.0.1:{port}/")
        assert r.status_code == 503
        assert r.text == '503 no ready pod for service "demo-stable" (revision none)\n'
        proxy.set_routing("demo-stable", RoutingTable(primary=RevisionBackends("6f9c", ())))
        r = await client.post(f"http://127.0.0.1:{port}/", content=b"x" * 1000)
        assert r.status_code == 503
        assert r.text == '503 no ready pod for service "demo-stable" (revision 6f9c)\n'
        assert r.headers["content-type"].startswith("text/plain")
        stats = proxy.stats("demo-stable")
        assert stats["revisions"]["6f9c"]["errors"] == 1
        assert stats["revisions"]["none"]["errors"] == 1


async def test_502_when_backend_refuses(make_proxy: ProxyFactory, client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(T):
        proxy = make_proxy()
        with socket.socket() as s:  # a port with nothing listening
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("r1", [Backend("demo-r1-x", "127.0.0.1", dead_port)])))
        r = await client.get(f"http://127.0.0.1:{port}/")
        assert r.status_code == 502
        assert r.text.startswith('502 upstream connection failed for service "demo" (revision r1, pod demo-r1-x)')
        assert proxy.metrics.revision("demo", "r1").upstream_errors == {"connect_refused": 1}


async def test_failed_pod_is_skipped_for_a_ready_one(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("alive")
        proxy = make_proxy()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            dead_port = s.getsockname()[1]
        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("r1", [Backend("dead", "127.0.0.1", dead_port), b.backend()])))
        codes = [(await client.get(f"http://127.0.0.1:{port}/{i}")).status_code for i in range(6)]
        assert codes == [200] * 6
        assert len(b.requests) == 6
        assert proxy.metrics.revision("demo", "r1").upstream_errors == {"connect_refused": 1}


async def test_504_on_slow_backend(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("slow")
        proxy = make_proxy(read_timeout=0.3)
        port = await _service(proxy, b)
        r = await client.get(f"http://127.0.0.1:{port}/slow")
        assert r.status_code == 504
        assert r.text == '504 upstream timed out for service "demo" (revision r1, pod slow)\n'
        assert proxy.metrics.revision("demo", "r1").upstream_errors == {"timeout": 1}
        # the client connection is still usable and the timed-out upstream is not reused
        b.release.set()
        r = await client.get(f"http://127.0.0.1:{port}/fast")
        assert r.status_code == 200
        assert b.requests[-1].connection == 2


async def test_431_when_the_head_is_too_large(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(max_header_size=8192), b)
        c = await RawClient.connect(port)
        try:
            r = await c.request("GET", "/", {"X-Big": "v" * 10000})
            assert r.status == 431
            assert r.header("Connection") == "close"
        finally:
            await c.close()
        c = await RawClient.connect(port)
        try:  # many small headers, sent a piece at a time
            await c.send(b"GET / HTTP/1.1\r\nHost: x\r\n")
            for i in range(200):
                await c.send(b"X-H%d: %b\r\n" % (i, b"v" * 60))
            r = await c.response()
            assert r.status == 431
        finally:
            await c.close()
        assert b.requests == []


async def test_431_counts_the_head_not_the_read(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    """The head-size limit applies to the head itself: not to a body or a pipelined request that
    came in the same read, and also to a head that began in the middle of a read."""
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(max_header_size=8192), b)
        c = await RawClient.connect(port)
        try:
            body = b"b" * 20000  # one read of head and body, larger than the head limit
            await c.send(b"POST /up HTTP/1.1\r\nHost: x\r\nContent-Length: %d\r\n\r\n%b" % (len(body), body))
            r = await c.response()
            assert r.status == 200 and r.json()["body_len"] == len(body)
            await c.send(
                b"GET /small HTTP/1.1\r\nHost: x\r\n\r\n"
                b"GET /big HTTP/1.1\r\nHost: x\r\nX-Big: " + b"v" * 9000 + b"\r\n\r\n"
            )
            r = await c.response()
            assert r.status == 200 and r.json()["path"] == "/small"
            assert not r.keep_alive  # a broken pipelined request: the connection closes after
            assert await c.at_eof()  # the responses before it
        finally:
            await c.close()
        assert [req.path for req in b.requests] == ["/up", "/small"]


async def test_413_when_the_body_is_too_large(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(max_body_size=1000), b)
        c = await RawClient.connect(port)
        try:  # declared too large: refused before anything goes upstream
            await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5000\r\n\r\n" + b"x" * 5000)
            r = await c.response()
            assert r.status == 413
            assert r.body.startswith(b"413 request body too large")
        finally:
            await c.close()
        assert b.requests == []
        c = await RawClient.connect(port)
        try:  # chunked: refused when the limit is crossed
            await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n")
            await c.send(b"%x\r\n%b\r\n" % (600, b"y" * 600))
            await c.send(b"%x\r\n%b\r\n" % (600, b"y" * 600))
            r = await c.response()
            assert r.status == 413
            assert await c.at_eof()
        finally:
            await c.close()
        c = await RawClient.connect(port)
        try:  # within the limit: fine
            await c.send(b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\r\n" + b"z" * 1000)
            r = await c.response()
            assert r.status == 200 and r.json()["body_len"] == 1000
        finally:
            await c.close()


async def test_400_on_garbage(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            await c.send(b"THIS IS NOT HTTP\r\n\r\n")
            r = await c.response()
            assert r.status == 400
        finally:
            await c.close()


async def test_backend_closing_idle_connections(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        for _ in range(3):
            assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
            b.close_idle_connections()  # the pooled connection goes away between requests
        assert b.connections == 3


async def test_request_retried_when_a_reused_connection_was_closed(
    make_proxy: ProxyFactory, backends: BackendFactory
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = make_proxy()
        port = await _service(proxy, b)
        c = await RawClient.connect(port)
        try:
            assert (await c.request("GET", "/first")).status == 200
            # the pooled connection is closed by the backend as the request arrives: sent again
            r = await c.request("GET", "/drop-if-reused")
            assert r.status == 200 and r.json()["path"] == "/drop-if-reused"
            assert b.connections == 2
            assert proxy.metrics.revision("demo", "r1").upstream_errors == {}
            # with a body the request cannot be replayed: 502
            await c.send(b"POST /drop-if-reused HTTP/1.1\r\nHost: x\r\nContent-Length: 2\r\n\r\nhi")
            r = await c.response()
            assert r.status == 502
            assert r.body.startswith(b'502 upstream closed the connection for service "demo"')
            assert proxy.metrics.revision("demo", "r1").upstream_errors == {"reset": 1}
        finally:
            await c.close()


async def test_truncated_response_closes_the_client_connection(
    make_proxy: ProxyFactory, backends: BackendFactory
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = make_proxy()
        port = await _service(proxy, b)
        c = await RawClient.connect(port)
        try:
            await c.send(b"GET /truncate HTTP/1.1\r\nHost: x\r\n\r\n")
            data = await c.reader.read()  # until the proxy closes
            head, _, body = data.partition(b"\r\n\r\n")
            assert head.startswith(b"HTTP/1.1 200 OK") and b"Content-Length: 100" in head
            assert body == b"0123456789"
            assert proxy.metrics.revision("demo", "r1").upstream_errors == {"reset": 1}
        finally:
            await c.close()


async def test_connection_close_and_http10_keep_alive(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            r = await c.request("GET", "/", {"Connection": "close"})
            assert r.status == 200 and r.header("Connection") == "close"
            assert await c.at_eof()
        finally:
            await c.close()
        c = await RawClient.connect(port)
        try:
            for _ in range(2):
                await c.send(b"GET / HTTP/1.0\r\nConnection: keep-alive\r\n\r\n")
                r = await c.response()
                assert r.status == 200 and r.header("Connection") == "keep-alive"
            assert b.requests[-1].header("Host") == f"127.0.0.1:{b.port}"  # added for HTTP/1.0
        finally:
            await c.close()


async def test_many_pipelined_requests(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(), b)
        c = await RawClient.connect(port)
        try:
            await c.send(b"".join(b"GET /q/%d HTTP/1.1\r\nHost: x\r\n\r\n" % i for i in range(100)))
            paths = [(await c.response()).json()["path"] for _ in range(100)]
            assert paths == [f"/q/{i}" for i in range(100)]
        finally:
            await c.close()


async def test_client_gone_mid_request(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = make_proxy()
        port = await _service(proxy, b)
        c = await RawClient.connect(port)
        await c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
        await b.slow_started.wait()
        rs = proxy.metrics.revision("demo", "r1")
        assert rs.in_flight == 1
        await c.close()
        await b.wait_no_connections()  # the upstream connection of the abandoned request is closed
        assert rs.in_flight == 0
        assert rs.codes == {499: 1}


# -- weights and routing changes ------------------------------------------------------------------


@pytest.mark.parametrize("weight", [10, 25], ids=["weight-10", "weight-25"])
async def test_weighted_split_end_to_end(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient, weight: int
) -> None:
    async with asyncio.timeout(T):
        stable1, stable2, canary = await backends("stable-1"), await backends("stable-2"), await backends("canary")
        proxy = make_proxy()
        port = await proxy.add_service("demo", 0)
        proxy.set_routing(
            "demo",
            table(("s1", [stable1.backend(), stable2.backend()]), ("c2", [canary.backend()]), weight=weight),
        )
        seen: Counter[str] = Counter()
        c = await RawClient.connect(port)
        try:
            for i in range(400):
                r = await c.request("GET", f"/{i}")
                assert r.status == 200
                seen[r.header("X-Backend") or ""] += 1
        finally:
            await c.close()
        assert seen["canary"] == 4 * weight
        # the stable share is spread over both stable pods
        assert abs(seen["stable-1"] - seen["stable-2"]) <= 1
        stats = proxy.stats("demo")
        assert stats["canary_weight"] == weight
        assert stats["revisions"]["c2"]["requests"] == 4 * weight
        assert stats["revisions"]["s1"]["requests"] == 400 - 4 * weight


async def test_routing_swap_keeps_in_flight_requests(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        old, new = await backends("old"), await backends("new")
        proxy = make_proxy()
        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("rev-old", [old.backend()])))
        url = f"http://127.0.0.1:{port}"
        assert (await client.get(f"{url}/warm")).headers["x-backend"] == "old"  # pools a connection
        async with httpx.AsyncClient(timeout=5.0) as other:
            in_flight = asyncio.create_task(other.get(f"{url}/slow"))
            await old.slow_started.wait()
            proxy.set_routing("demo", table(("rev-new", [new.backend()])))
            assert proxy.routing("demo").primary == RevisionBackends("rev-new", (new.backend(),))
            for _ in range(3):
                r = await client.get(f"{url}/after")
                assert r.status_code == 200 and r.headers["x-backend"] == "new"
            assert not in_flight.done()
            old.release.set()
            r = await in_flight
            assert r.status_code == 200 and r.headers["x-backend"] == "old"
        # pooled and in-flight connections to the backend that left the table are closed
        await old.wait_no_connections()
        assert new.transports


async def test_canary_weight_change_takes_effect(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        proxy = make_proxy()
        port = await proxy.add_service("demo", 0)
        for weight, expected in ((0, 0), (50, 10), (100, 20), (0, 0)):
            proxy.set_routing("demo", table(("s", [stable.backend()]), ("c", [canary.backend()]), weight=weight))
            backends_seen = [(await client.get(f"http://127.0.0.1:{port}/")).headers["x-backend"] for _ in range(20)]
            assert backends_seen.count("canary") == expected, weight


# -- service management ---------------------------------------------------------------------------


async def test_add_service_port_taken_and_remove(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = make_proxy()
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            s.listen()
            taken = s.getsockname()[1]
            with pytest.raises(PortInUseError, match=rf'"demo".*port {taken}'):
                await proxy.add_service("demo", taken)
        assert proxy.services() == {}
        assert proxy.stats() == {"services": {}}
        port = await _service(proxy, b)
        assert proxy.services() == {"demo": port}
        assert await proxy.add_service("demo", 0) == port  # idempotent
        assert await proxy.add_service("demo", port) == port
        # removing: in-flight requests finish, then nothing listens
        async with httpx.AsyncClient(timeout=5.0) as c:
            in_flight = asyncio.create_task(c.get(f"http://127.0.0.1:{port}/slow"))
            await b.slow_started.wait()
            await proxy.remove_service("demo")
            assert proxy.services() == {}
            with pytest.raises(KeyError):
                proxy.routing("demo")
            b.release.set()
            r = await in_flight
            assert r.status_code == 200
            with pytest.raises(httpx.ConnectError):
                await c.get(f"http://127.0.0.1:{port}/")


async def test_set_routing_before_add_service(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = make_proxy()
        proxy.set_routing("early", table(("r", [b.backend()])))
        assert proxy.routing("early").primary is not None
        port = await proxy.add_service("early", 0)
        assert (await client.get(f"http://127.0.0.1:{port}/")).status_code == 200
        with pytest.raises(KeyError, match="nope"):
            proxy.routing("nope")


async def test_idle_connections_time_out(make_proxy: ProxyFactory, backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        port = await _service(make_proxy(keepalive_timeout=0.2, upstream_idle_timeout=0.2), b)
        c = await RawClient.connect(port)
        try:
            assert (await c.request("GET", "/")).status == 200
            await b.wait_no_connections()  # the idle pooled upstream connection is closed
            assert await c.at_eof()  # and so is the idle client connection
        finally:
            await c.close()


async def test_close_lets_in_flight_requests_finish(backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = ProxyServer(ProxyMetrics(), shutdown_grace=5.0)
        port = await _service(proxy, b)
        c = await RawClient.connect(port)
        try:
            await c.send(b"GET /slow HTTP/1.1\r\nHost: x\r\n\r\n")
            await b.slow_started.wait()
            closing = asyncio.create_task(proxy.close())
            await asyncio.sleep(0)  # let close() run up to its first await: listeners are closed
            with pytest.raises(OSError):  # no longer listening
                await asyncio.open_connection("127.0.0.1", port)
            b.release.set()
            r = await c.response()
            assert r.status == 200 and r.header("Connection") == "close"
            await closing
            assert await c.at_eof()
        finally:
            await c.close()


async def test_close_stops_everything(backends: BackendFactory) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = ProxyServer(ProxyMetrics(), shutdown_grace=0.5)
        port = await _service(proxy, b)
        admin = await proxy.start_admin()
        c = await RawClient.connect(port)
        assert (await c.request("GET", "/")).status == 200
        await proxy.close()
        assert await c.at_eof()
        await c.close()
        await b.wait_no_connections()
        for p in (port, admin):
            with pytest.raises(OSError):
                await asyncio.open_connection("127.0.0.1", p)
        await proxy.close()  # twice is fine


# -- metrics and stats ----------------------------------------------------------------------------


async def test_metrics_endpoint(make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(T):
        b = await backends("a")
        proxy = make_proxy()
        port = await _service(proxy, b, rev="6f9c")
        admin = await proxy.start_admin()
        for path in ("/", "/", "/status/500", "/status/404"):
            await client.get(f"http://127.0.0.1:{port}{path}")
        r = await client.get(f"http://127.0.0.1:{admin}/metrics")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/plain")
        samples = {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for fam in text_string_to_metric_families(r.text)
            for s in fam.samples
        }
        base = (("revision", "6f9c"), ("service", "demo"))
        assert samples[("rollouts_proxy_requests_total", (("code", "200"), *base))] == 2
        assert samples[("rollouts_proxy_requests_total", (("code", "500"), *base))] == 1
        assert samples[("rollouts_proxy_requests_total", (("code", "404"), *base))] == 1
        assert samples[("rollouts_proxy_request_duration_seconds_count", base)] == 4
        assert samples[("rollouts_proxy_request_duration_seconds_bucket", (("le", "10.0"), *base))] == 4
        assert samples[("rollouts_proxy_requests_in_flight", base)] == 0
        assert "rollouts_proxy_upstream_errors_total" in r.text


async def test_stats_endpoint(make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        proxy = make_proxy()
        port = await proxy.add_service("demo", 0)
        proxy.set_routing("demo", table(("s1", [stable.backend()]), ("c2", [canary.backend()]), weight=50))
        other = await proxy.add_service("other", 0)
        admin = await proxy.start_admin()
        for i in range(20):
            await client.get(f"http://127.0.0.1:{port}/status/{500 if i % 4 < 2 else 200}")
        r = await client.get(f"http://127.0.0.1:{admin}/stats")
        assert r.status_code == 200 and r.headers["content-type"] == "application/json"
        data = r.json()
        assert set(data["services"]) == {"demo", "other"}
        assert data["services"]["other"] == {
            "port": other,
            "canary_weight": 0,
            "primary_revision": None,
            "canary_revision": None,
            "revisions": {},
        }
        demo = data["services"]["demo"]
        assert demo["port"] == port and demo["canary_weight"] == 50
        assert demo["primary_revision"] == "s1" and demo["canary_revision"] == "c2"
        assert set(demo["revisions"]) == {"s1", "c2"}
        total = sum(rev["requests"] for rev in demo["revisions"].values())
        errors = sum(rev["errors"] for rev in demo["revisions"].values())
        assert total == 20 and errors == 10
        for rev in demo["revisions"].values():
            assert rev["requests"] == 10
            assert rev["window_seconds"] == 30
            assert rev["window_requests"] == rev["requests"]
            assert rev["window_errors"] == rev["errors"]
            assert rev["error_rate"] == pytest.approx(rev["errors"] / rev["requests"])
            assert 0 < rev["p95_latency_seconds"] < 1.0
        one = (await client.get(f"http://127.0.0.1:{admin}/stats/demo")).json()
        assert one["revisions"].keys() == demo["revisions"].keys()
        assert one["port"] == port
        assert (await client.get(f"http://127.0.0.1:{admin}/stats/missing")).status_code == 404
        assert (await client.get(f"http://127.0.0.1:{admin}/nothing")).status_code == 404
        assert (await client.post(f"http://127.0.0.1:{admin}/stats")).status_code == 405
        assert json.loads(json.dumps(proxy.stats())) == proxy.stats()
