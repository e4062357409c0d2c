"""Managed routes in the embedded proxy: header routes and mirrors, matched per request.

A routing table's `routes` (`core.routes`: the canary's setHeaderRoute / setMirrorRoute routes,
by precedence) are compiled once per table swap into `RouteRules` (regular expressions
compiled then, header names lower-cased), which the balancer holds. A table without routes has
no `RouteRules` and its requests never come here: the proxy's hot path reads the balancer's
`fixed` pool as before, and only a weighted split costs one more attribute read
(`ClientConn._start`).

The first route a request matches decides, as in an Istio VirtualService:

* a header route sends it to the canary revision, whatever the weight (with no ready canary
  pod the proxy answers 503, as Envoy answers "no healthy upstream");
* a mirror route lets the weight pick the revision that answers, and copies every request it
  takes (`percentage`, exactly: the n-th matching request is copied when
  floor(n·p/100) > floor((n-1)·p/100), so 50 % copies every second one) to a canary pod
  through `proxy_mirror.MirrorSender`, which never holds up the client's request.

Matching follows Istio (Envoy): header names are case-insensitive and a header sent several
times matches as its values joined by ","; `exact` and `prefix` compare strings, `regex` must
match the whole value (Python `re.fullmatch`, where Envoy uses RE2: the common syntax is the
same); a request path is matched without its query string. Header values are read as UTF-8.
A regex that does not compile matches nothing and is logged once per table.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable
from typing import TYPE_CHECKING

from rollouts.core.routes import ActiveRoute, HeaderMatch, HeaderRoute, RequestMatch, ValueMatch
from rollouts.platform.embedded import proxy_mirror

if TYPE_CHECKING:
    from rollouts.platform.embedded.balancer import RevisionPool, WeightedBalancer
    from rollouts.platform.embedded.proxy_http import ClientConn, Exchange

__all__ = ["RequestView", "RouteRules", "compile_rules"]

log = logging.getLogger(__name__)

Predicate = Callable[[str], object]  # truthy when the value matches


def _never(_value: str) -> bool:
    return False


def compile_value(match: ValueMatch, where: str) -> Predicate:
    """A test of one value: `str.__eq__`, `str.startswith` or a compiled `fullmatch`."""
    if match.kind == "exact":
        return match.value.__eq__
    if match.kind == "prefix":
        prefix = match.value
        return lambda value: value.startswith(prefix)
    try:
        return re.compile(match.value).fullmatch
    except re.error as exc:
        log.error("%s: regex %r does not compile (%s): it matches nothing", where, match.value, exc)
        return _never


class RequestView:
    """What routes look at in a request, read once from the exchange's head: the method, the
    path, and the headers that some route names (`wanted`, lower case), decoded."""

    __slots__ = ("headers", "method", "path")

    def __init__(self, ex: Exchange, wanted: frozenset[bytes]) -> None:
        info = ex.info
        self.method = info.method.decode("latin-1")
        url = info.url
        if url[:1] != b"/" and b"://" in url:  # absolute form: keep the path
            rest = url.split(b"://", 1)[1]
            slash = rest.find(b"/")
            url = rest[slash:] if slash >= 0 else b"/"
        self.path = url.split(b"?", 1)[0].split(b"#", 1)[0].decode("utf-8", "surrogateescape")
        headers: dict[str, str] = {}
        if wanted:
            for raw_name, raw_value in info.header_lines():
                lname = raw_name.lower()
                if lname not in wanted:
                    continue
                name = lname.decode("latin-1")
                value = raw_value.decode("utf-8", "surrogateescape")
                seen = headers.get(name)
                headers[name] = value if seen is None else seen + "," + value
        self.headers = headers


class _HeaderTest:
    __slots__ = ("name", "test")

    def __init__(self, match: HeaderMatch, where: str) -> None:
        self.name = match.name.lower()
        self.test = compile_value(match.value, where)

    def holds(self, req: RequestView) -> bool:
        value = req.headers.get(self.name)
        return value is not None and bool(self.test(value))


class _BlockTest:
    """One mirror match block: method, path and every header must hold."""

    __slots__ = ("headers", "method", "path")

    def __init__(self, block: RequestMatch, where: str) -> None:
        self.method = compile_value(block.method, where) if block.method is not None else None
        self.path = compile_value(block.path, where) if block.path is not None else None
        self.headers = tuple(_HeaderTest(h, where) for h in block.headers)

    def holds(self, req: RequestView) -> bool:
        if self.method is not None and not self.method(req.method):
            return False
        if self.path is not None and not self.path(req.path):
            return False
        return all(h.holds(req) for h in self.headers)


class _Rule:
    """One compiled route. `header`: a header route (else a mirror route)."""

    __slots__ = ("blocks", "header", "matches", "name", "percentage", "route", "seen")

    def __init__(self, route: ActiveRoute, where: str) -> None:
        self.route = route
        self.name = route.name
        self.seen = 0  # matching requests so far (mirror: the percentage's counter)
        if isinstance(route, HeaderRoute):
            self.header = True
            self.percentage = 0
            self.matches = tuple(_HeaderTest(m, where) for m in route.matches)
            self.blocks: tuple[_BlockTest, ...] = ()
        else:
            self.header = False
            self.percentage = route.percentage
            self.matches = ()
            self.blocks = tuple(_BlockTest(b, where) for b in route.matches)

    def holds(self, req: RequestView) -> bool:
        if self.header:
            return any(m.holds(req) for m in self.matches)
        return any(b.holds(req) for b in self.blocks)

    def take_copy(self) -> bool:
        """Whether this matching request is one of the `percentage` % to copy (exact, in order)."""
        n = self.seen
        self.seen = n + 1
        p = self.percentage
        return (n + 1) * p // 100 > n * p // 100


class RouteRules:
    """The compiled routes of one table, in precedence order."""

    __slots__ = ("rules", "wanted")

    def __init__(self, rules: tuple[_Rule, ...]) -> None:
        self.rules = rules
        # The header names the routes look at: only those are decoded from a request.
        names = {m.name for rule in rules for m in rule.matches}
        names |= {h.name for rule in rules for block in rule.blocks for h in block.headers}
        self.wanted = frozenset(name.encode("latin-1", "replace") for name in names)

    def route(self, ex: Exchange, balancer: WeightedBalancer, client: ClientConn) -> RevisionPool:
        """The revision that answers `ex`; copies it to the canary when a mirror route says so."""
        req = RequestView(ex, self.wanted)
        for rule in self.rules:
            if not rule.holds(req):
                continue
            if rule.header:
                pool = balancer.canary
                rstats = pool.stats
                if rstats is None:
                    rstats = pool.stats = client.route.revision_stats(pool.label)
                rstats.header_routed += 1
                return pool
            pool = balancer.pick()
            if rule.take_copy():
                proxy_mirror.mirror_request(client, ex, balancer.canary)
            return pool
        return balancer.pick()


def compile_rules(
    service: str, routes: tuple[ActiveRoute, ...], previous: RouteRules | None = None
) -> RouteRules | None:
    """`routes` compiled (None when there are none). A mirror route that is unchanged since
    `previous` keeps its counter, so a re-applied table does not restart the percentage."""
    if not routes:
        return None
    kept = {rule.route: rule for rule in previous.rules} if previous is not None else {}
    rules = []
    for route in routes:
        rule = _Rule(route, f'service "{service}", route "{route.name}"')
        old = kept.get(route)
        if old is not None:
            rule.seen = old.seen
        rules.append(rule)
    return RouteRules(tuple(rules))
