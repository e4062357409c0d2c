"""Managed routes in the embedded proxy, end to end on loopback against in-process backends.

Header routes (exact, prefix, regex) send matching requests to the canary at any weight while
the rest is split by weight; precedence across routes; mirror routes copy exactly their
percentage of matching requests to a canary pod (Envoy's shadow host, bodies up to the limit)
while every client gets the primary's answer; a slow or dead mirror target never fails or
delays client requests beyond a bound, its copies being dropped and counted.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import AsyncIterator

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from rollouts.core.routes import ActiveRoute, HeaderMatch, HeaderRoute, MirrorRoute, RequestMatch, ValueMatch
from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_mirror import shadow_host
from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable
from tests.embedded.conftest import BackendFactory, ProxyFactory, TestBackend

T = 20.0  # bound of each test, seconds


def routed_table(
    stable: TestBackend | Backend, canary: TestBackend | Backend, weight: int, *routes: ActiveRoute
) -> RoutingTable:
    def backend(b: TestBackend | Backend) -> Backend:
        return b.backend() if isinstance(b, TestBackend) else b

    return RoutingTable(
        primary=RevisionBackends("s1", (backend(stable),)),
        canary=RevisionBackends("c2", (backend(canary),)),
        canary_weight=weight,
        routes=routes,
    )


def header(name: str, kind: str, value: str, route: str = "h") -> HeaderRoute:
    return HeaderRoute(route, (HeaderMatch(name, ValueMatch(kind, value)),))  # type: ignore[arg-type]


def mirror(percentage: int, *blocks: RequestMatch, name: str = "m") -> MirrorRoute:
    return MirrorRoute(name, percentage, blocks or (RequestMatch(),))


@pytest.fixture
async def client() -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(timeout=5.0) as c:
        yield c


async def serve(proxy: ProxyServer, table: RoutingTable) -> str:
    port = await proxy.add_service("web", 0)
    proxy.set_routing("web", table)
    return f"http://127.0.0.1:{port}"


async def answered_by(
    client: httpx.AsyncClient, url: str, n: int, headers: dict[str, str] | None = None
) -> Counter[str]:
    seen: Counter[str] = Counter()
    for _ in range(n):
        r = await client.get(url, headers=headers)
        assert r.status_code == 200, r.text
        seen[r.headers["x-backend"]] += 1
    return seen


def samples(proxy: ProxyServer) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    out = {}
    for family in text_string_to_metric_families(proxy.metrics.render().decode()):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


async def wait_for(what: str, check: object, timeout: float = 5.0) -> None:
    assert callable(check)
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        await asyncio.sleep(0.01)


# -- header routes ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("route", "matching", "other"),
    [
        pytest.param(header("X-Canary", "exact", "yes"), "yes", "yes!", id="exact"),
        pytest.param(header("x-canary", "prefix", "beta-"), "beta-tester", "alpha-beta-", id="prefix"),
        pytest.param(header("X-CANARY", "regex", "v[0-9]+"), "v12", "v12x", id="regex-full-match"),
    ],
)
async def test_header_route_sends_matching_requests_to_the_canary_at_weight_0(
    make_proxy: ProxyFactory,
    backends: BackendFactory,
    client: httpx.AsyncClient,
    route: HeaderRoute,
    matching: str,
    other: str,
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        proxy = make_proxy()
        url = await serve(proxy, routed_table(stable, canary, 0, route))
        assert await answered_by(client, url, 10, {"x-canary": matching}) == {"canary": 10}
        assert await answered_by(client, url, 10, {"X-Canary": other}) == {"stable": 10}
        assert await answered_by(client, url, 10) == {"stable": 10}
        assert (
            samples(proxy)[("rollouts_proxy_header_routed_requests_total", (("revision", "c2"), ("service", "web")))]
            == 10
        )
        assert proxy.stats("web")["routes"] == ["h"]
        assert proxy.stats("web")["revisions"]["c2"]["header_routed"] == 10


async def test_requests_without_the_header_are_split_by_weight(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        url = await serve(make_proxy(), routed_table(stable, canary, 25, header("X-Canary", "exact", "yes")))
        assert await answered_by(client, url, 100) == {"stable": 75, "canary": 25}, "exact weighted round robin"
        assert await answered_by(client, url, 20, {"X-Canary": "yes"}) == {"canary": 20}
        assert await answered_by(client, url, 100) == {"stable": 75, "canary": 25}, "header requests take no turn"


async def test_any_match_of_a_header_route_is_enough(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        route = HeaderRoute(
            "h", (HeaderMatch("X-A", ValueMatch("exact", "1")), HeaderMatch("X-B", ValueMatch("prefix", "b")))
        )
        url = await serve(make_proxy(), routed_table(stable, canary, 0, route))
        assert await answered_by(client, url, 3, {"X-B": "bee"}) == {"canary": 3}
        assert await answered_by(client, url, 3, {"X-A": "1"}) == {"canary": 3}
        assert await answered_by(client, url, 3, {"X-A": "2", "X-B": "a"}) == {"stable": 3}


async def test_header_route_without_a_ready_canary_pod_is_503(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable = await backends("stable")
        proxy = make_proxy()
        table = RoutingTable(
            primary=RevisionBackends("s1", (stable.backend(),)),
            canary=RevisionBackends("c2", ()),
            routes=(header("X-Canary", "exact", "yes"),),
        )
        url = await serve(proxy, table)
        r = await client.get(url, headers={"X-Canary": "yes"})
        assert r.status_code == 503 and "revision c2" in r.text
        assert (await client.get(url)).headers["x-backend"] == "stable"


async def test_routes_are_ignored_without_a_canary_side(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable = await backends("stable")
        table = RoutingTable(
            primary=RevisionBackends("s1", (stable.backend(),)), routes=(header("X-Canary", "exact", "yes"),)
        )
        proxy = make_proxy()
        url = await serve(proxy, table)
        assert await answered_by(client, url, 3, {"X-Canary": "yes"}) == {"stable": 3}
        assert "routes" not in proxy.stats("web")


async def test_the_first_matching_route_decides(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        on_beta = RequestMatch(headers=(HeaderMatch("X-Canary", ValueMatch("exact", "yes")),))
        proxy = make_proxy()
        # The mirror route comes first: a request matching both is served by weight (0: stable) and copied.
        url = await serve(
            proxy, routed_table(stable, canary, 0, mirror(100, on_beta), header("X-Canary", "exact", "yes"))
        )
        assert await answered_by(client, url, 4, {"X-Canary": "yes"}) == {"stable": 4}
        await wait_for("the 4 copies", lambda: len(canary.requests) == 4)
        # Swapped: the header route wins, nothing is copied.
        proxy.set_routing(
            "web", routed_table(stable, canary, 0, header("X-Canary", "exact", "yes"), mirror(100, on_beta))
        )
        assert await answered_by(client, url, 4, {"X-Canary": "yes"}) == {"canary": 4}
        await asyncio.sleep(0.1)
        assert len(canary.requests) == 8, "4 copies, then 4 header-routed requests"


# -- mirror routes ----------------------------------------------------------------------------------


async def test_mirror_copies_exactly_its_percentage_and_clients_get_the_primary(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        gets = RequestMatch(method=ValueMatch("exact", "GET"), path=ValueMatch("prefix", "/api/"))
        proxy = make_proxy()
        url = await serve(proxy, routed_table(stable, canary, 0, mirror(50, gets)))
        assert await answered_by(client, url + "/api/items?page=2", 200) == {"stable": 200}
        assert await answered_by(client, url + "/other", 20) == {"stable": 20}, "not matched: not copied"
        await wait_for("100 copies", lambda: len(canary.requests) >= 100)
        await asyncio.sleep(0.1)
        assert len(canary.requests) == 100, "exactly 50 % of the 200 matching requests"
        assert len(stable.requests) == 220
        copy = canary.requests[0]
        assert copy.path == "/api/items?page=2" and copy.method == "GET"
        host = stable.requests[0].header("Host")
        assert host is not None and host.startswith("127.0.0.1:")
        assert copy.header("Host") == host.replace(":", "-shadow:"), "Envoy's shadow host"
        assert copy.header("X-Forwarded-For") == "127.0.0.1"
        s = samples(proxy)
        labels = (("code", "200"), ("revision", "c2"), ("service", "web"))
        assert s[("rollouts_proxy_mirrored_requests_total", labels)] == 100
        assert s[("rollouts_proxy_requests_total", (("code", "200"), ("revision", "s1"), ("service", "web")))] == 220
        assert ("rollouts_proxy_requests_total", labels) not in s, "copies are not client requests"
        assert proxy.stats("web")["revisions"]["c2"]["mirrored"] == 100


async def test_mirror_percentage_counts_on_across_an_equal_table(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        proxy = make_proxy()
        url = await serve(proxy, routed_table(stable, canary, 0, mirror(50)))
        await answered_by(client, url, 3)  # copies: the 2nd
        other = await backends("stable-2")  # a pod joins: a new table, the same route
        table = routed_table(stable, canary, 0, mirror(50))
        proxy.set_routing(
            "web",
            RoutingTable(
                RevisionBackends("s1", (stable.backend(), other.backend())), table.canary, 0, routes=table.routes
            ),
        )
        await answered_by(client, url, 1)  # the 4th matching request: copied
        await wait_for("2 copies", lambda: len(canary.requests) == 2)


async def test_mirror_copies_a_small_body_not_a_chunked_one(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        proxy = make_proxy(mirror_max_body=1024)
        url = await serve(
            proxy, routed_table(stable, canary, 0, mirror(100, RequestMatch(method=ValueMatch("exact", "POST"))))
        )
        body = bytes(range(256)) * 3
        r = await client.post(url + "/upload", content=body)
        assert r.status_code == 200 and r.headers["x-backend"] == "stable"
        await wait_for("the copy", lambda: len(canary.requests) == 1)
        assert canary.requests[0].body == body == stable.requests[-1].body
        assert (await client.post(url + "/big", content=b"x" * 2048)).status_code == 200

        async def chunks() -> AsyncIterator[bytes]:
            yield b"abc"
            yield b"def"

        assert (await client.post(url + "/chunked", content=chunks())).status_code == 200
        assert stable.requests[-1].body == b"abcdef"
        await asyncio.sleep(0.1)
        assert len(canary.requests) == 1
        dropped = proxy.metrics.revision("web", "c2").mirror_dropped
        assert dropped == {"body": 2}


class Hanging:
    """A server that accepts connections and never answers (a stuck mirror target)."""

    def __init__(self) -> None:
        self.writers: list[asyncio.StreamWriter] = []
        self.server: asyncio.Server | None = None
        self.port = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.writers.append(writer)  # reads nothing, answers nothing

    async def start(self) -> None:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        self.port = int(self.server.sockets[0].getsockname()[1])

    async def close(self) -> None:
        for writer in self.writers:
            writer.close()
        self.writers.clear()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()
            self.server = None


@pytest.fixture
async def hanging() -> AsyncIterator[Hanging]:
    server = Hanging()
    await server.start()
    try:
        yield server
    finally:
        await server.close()


@pytest.mark.parametrize("target", ["hangs", "refuses"])
async def test_a_slow_or_dead_mirror_target_never_holds_up_clients(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient, hanging: Hanging, target: str
) -> None:
    async with asyncio.timeout(T):
        stable = await backends("stable")
        port = hanging.port
        if target == "refuses":
            await hanging.close()  # nothing listens on the port any more
        proxy = make_proxy(mirror_timeout=0.5, mirror_max_in_flight=2, mirror_max_queued=3)
        dead = Backend(pod="canary-0", host="127.0.0.1", port=port)
        url = await serve(proxy, routed_table(stable, dead, 0, mirror(100)))
        slowest = 0.0
        for _ in range(40):
            t0 = time.monotonic()
            r = await client.get(url + "/x")
            slowest = max(slowest, time.monotonic() - t0)
            assert r.status_code == 200 and r.headers["x-backend"] == "stable"
        assert slowest < 0.25, f"a client request took {slowest:.3f} s"
        stats = proxy.metrics.revision("web", "c2")
        if target == "hangs":
            # 2 sending (until their 0.5 s timeout), 3 waiting, the other 35 dropped at once.
            assert stats.mirror_dropped == {"overload": 35}
            await wait_for("the timeouts", lambda: stats.mirror_dropped.get("timeout") == 5, timeout=5)
        else:
            await wait_for("the refusals", lambda: sum(stats.mirror_dropped.values()) == 40)
            assert stats.mirror_dropped.get("error", 0) > 0
            assert set(stats.mirror_dropped) <= {"error", "overload"}
        assert stats.mirror_codes == {}
        s = samples(proxy)
        assert s[("rollouts_proxy_requests_total", (("code", "200"), ("revision", "s1"), ("service", "web")))] == 40


async def test_closing_the_proxy_cancels_copies_in_flight(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient, hanging: Hanging
) -> None:
    async with asyncio.timeout(T):
        stable = await backends("stable")
        proxy = make_proxy(mirror_timeout=30.0)
        dead = Backend(pod="canary-0", host="127.0.0.1", port=hanging.port)
        url = await serve(proxy, routed_table(stable, dead, 0, mirror(100)))
        assert (await client.get(url)).status_code == 200
        await wait_for("the copy to be sent", lambda: len(hanging.writers) == 1)
        assert proxy.mirror.in_flight == 1
        t0 = time.monotonic()
        await proxy.close()
        assert time.monotonic() - t0 < 2.0 and proxy.mirror.in_flight == 0 and not proxy.mirror.tasks


@pytest.mark.parametrize(
    ("host", "expected"),
    [
        pytest.param(b"web:80", b"web-shadow:80", id="with-port"),
        pytest.param(b"web.example.com", b"web.example.com-shadow", id="without-port"),
        pytest.param(b"[::1]:80", b"[::1]:80-shadow", id="ipv6"),
    ],
)
def test_shadow_host_is_envoys(host: bytes, expected: bytes) -> None:
    assert shadow_host(host) == expected


async def test_mirror_copies_head_requests_and_drops_hop_by_hop_headers(
    make_proxy: ProxyFactory, backends: BackendFactory, client: httpx.AsyncClient
) -> None:
    async with asyncio.timeout(T):
        stable, canary = await backends("stable"), await backends("canary")
        proxy = make_proxy()
        url = await serve(proxy, routed_table(stable, canary, 0, mirror(100)))
        r = await client.head(url + "/h", headers={"Connection": "keep-alive, X-Hop", "X-Hop": "1", "X-Kept": "2"})
        assert r.status_code == 200 and r.headers["x-backend"] == "stable"
        r = await client.get(url + "/g")
        assert r.status_code == 200
        await wait_for("the copies", lambda: sum(proxy.metrics.revision("web", "c2").mirror_codes.values()) == 2)
        head, get = canary.requests
        assert head.method == "HEAD" and head.header("X-Kept") == "2" and head.header("X-Hop") is None
        assert get.method == "GET" and get.path == "/g"
        assert get.connection != head.connection, "a HEAD copy's connection is not reused (no body to frame)"
