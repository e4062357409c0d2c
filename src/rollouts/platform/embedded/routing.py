"""Routing tables for the embedded proxy: which pods answer a Service, and by what weight.

The controller computes one `RoutingTable` per Service and hands it to the proxy, which swaps
it in atomically: requests already in flight finish on the backend they were sent to, new
requests take the new table.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rollouts.core.routes import ActiveRoute


@dataclass(frozen=True)
class Backend:
    """One ready pod: where to send requests, and which revision (pod-template hash) it runs."""

    pod: str
    host: str
    port: int


@dataclass(frozen=True)
class RevisionBackends:
    """The ready pods of one revision."""

    revision: str
    backends: tuple[Backend, ...] = ()


@dataclass(frozen=True)
class RoutingTable:
    """Traffic for one Service.

    `primary` takes `100 - canary_weight` percent of requests, `canary` the rest. A
    blue/green Service, or a canary Service, has only a primary. With no ready backend for
    the revision a request falls to, the proxy answers 503 naming the service.

    `routes` (a canary's setHeaderRoute/setMirrorRoute routes, by precedence) come first: the
    first route a request matches decides; a header route sends it to the canary whatever the
    weight, a mirror route lets the weight decide and copies it to the canary (`proxy_routes`).
    They need a canary side and are ignored without one.
    """

    primary: RevisionBackends | None = None
    canary: RevisionBackends | None = None
    canary_weight: int = 0
    extra: dict[str, str] = field(default_factory=dict)
    routes: tuple[ActiveRoute, ...] = ()
