"""Weighted selection for the embedded proxy: which revision, then which pod, answers a request.

Two levels, both deterministic (no randomness), so that traffic shares are exact:

* Between revisions, a smooth weighted round robin (the scheme nginx uses for `upstream`
  weights): primary has weight `100 - canary_weight`, canary `canary_weight`; every pick adds
  each weight to its running score, takes the highest score and subtracts 100 from it. Over any
  100 consecutive picks the canary gets exactly `canary_weight` of them, spread evenly rather
  than in bursts.
* Within a revision, round robin over its ready pods, skipping pods that failed recently (a
  refused or timed-out connection) for a short cool-down, as long as another pod is left.

A new `WeightedBalancer` built from the previous one keeps the running scores and the
round-robin positions, so that a controller re-applying the same or a slightly different table
every few seconds does not reset the sequence (which could starve a 5 % canary).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING

from rollouts.platform.embedded.routing import Backend, RevisionBackends, RoutingTable

if TYPE_CHECKING:
    from rollouts.platform.embedded.proxy_metrics import RevisionStats
    from rollouts.platform.embedded.proxy_routes import RouteRules

NO_REVISION = "none"
"""Revision label of a request that fell to a side of the table with no `RevisionBackends`."""

TOTAL_WEIGHT = 100

BackendKey = tuple[str, int]


def backend_key(backend: Backend) -> BackendKey:
    return (backend.host, backend.port)


class BackendHealth:
    """Recent connection failures per backend address; shared by every service of a proxy."""

    __slots__ = ("cooldown", "failed_until")

    def __init__(self, cooldown: float = 2.0) -> None:
        self.cooldown = cooldown
        # Read directly on the proxy's hot path (empty = nothing to check): cheaper than a
        # `__bool__` call per request.
        self.failed_until: dict[BackendKey, float] = {}

    def __bool__(self) -> bool:
        return bool(self.failed_until)

    def mark_failed(self, backend: Backend, now: float) -> None:
        self.failed_until[backend_key(backend)] = now + self.cooldown

    def mark_ok(self, backend: Backend) -> None:
        if self.failed_until:
            self.failed_until.pop(backend_key(backend), None)

    def is_failed(self, backend: Backend, now: float) -> bool:
        until = self.failed_until.get(backend_key(backend))
        if until is None:
            return False
        if until <= now:
            del self.failed_until[backend_key(backend)]
            return False
        return True

    def retain(self, keys: Iterable[BackendKey]) -> None:
        """Forget backends that are in no routing table any more."""
        keep = set(keys)
        for key in [k for k in self.failed_until if k not in keep]:
            del self.failed_until[key]


class RevisionPool:
    """The pods of one revision, picked in round robin."""

    __slots__ = ("backends", "keys", "label", "mirror_turn", "revision", "stats", "turn")

    def __init__(self, revision: RevisionBackends | None) -> None:
        self.revision = revision
        self.label = revision.revision if revision is not None else NO_REVISION
        self.backends: tuple[Backend, ...] = revision.backends if revision is not None else ()
        self.keys: tuple[BackendKey, ...] = tuple(backend_key(b) for b in self.backends)  # (for the proxy's pool)
        self.turn = 0  # counts picks: the next pod is `backends[turn % len(backends)]`
        self.mirror_turn = 0  # the same, for mirrored copies (their own rotation: see `proxy_mirror`)
        # The proxy's counters of this revision, cached here by the proxy. `turn` and `stats` are
        # public because the proxy's hot path reads them directly instead of calling `pick`.
        self.stats: RevisionStats | None = None

    def pick(
        self,
        health: BackendHealth | None = None,
        now: float = 0.0,
        exclude: frozenset[Backend] | set[Backend] = frozenset(),
    ) -> Backend | None:
        """The next pod in turn, or None when the revision has no pod (left after `exclude`).

        Pods marked failed in `health` are skipped while another pod is available; when every
        pod has failed recently the next one in turn is tried anyway.
        """
        backends = self.backends
        n = len(backends)
        if n == 0:
            return None
        if not exclude and (health is None or not health.failed_until):
            i = self.turn
            self.turn = i + 1
            return backends[i % n]
        fallback: Backend | None = None
        for _ in range(n):
            b = backends[self.turn % n]
            self.turn += 1
            if b in exclude:
                continue
            if health is not None and health.is_failed(b, now):
                if fallback is None:
                    fallback = b
                continue
            return b
        return fallback


class WeightedBalancer:
    """Picks the revision of each request by smooth weighted round robin (see module doc)."""

    __slots__ = ("_canary_score", "_canary_weight", "_primary_score", "canary", "fixed", "primary", "rules", "table")

    def __init__(
        self, table: RoutingTable, previous: WeightedBalancer | None = None, rules: RouteRules | None = None
    ) -> None:
        """`rules`: the table's routes, compiled (`proxy_routes.compile_rules`); ignored without a canary."""
        self.table = table
        # Consulted by the proxy before `pick` when set: header routes and mirrors come first.
        self.rules = rules if table.canary is not None else None
        weight = min(max(int(table.canary_weight), 0), TOTAL_WEIGHT)
        if table.canary is None:
            weight = 0  # no canary side: everything goes to the primary
        self._canary_weight = weight
        self.primary = RevisionPool(table.primary)
        self.canary = RevisionPool(table.canary)
        self._primary_score = 0
        self._canary_score = 0
        if previous is not None:
            # Keep positions so that re-applied tables do not restart the sequences.
            for new, old in ((self.primary, previous.primary), (self.canary, previous.canary)):
                if new.label == old.label:
                    new.turn = old.turn
            if previous.fixed is None and weight not in (0, TOTAL_WEIGHT):
                self._primary_score = previous._primary_score
                self._canary_score = previous._canary_score
        # The pool every request goes to when the weight is 0 or 100, else None: the proxy reads
        # it before calling `pick`, which saves a call per request in the common case. With
        # routes, None: a request may match one (see `proxy_routes`).
        self.fixed: RevisionPool | None
        if self.rules is not None:
            self.fixed = None
        elif weight == 0:
            self.fixed = self.primary
        elif weight == TOTAL_WEIGHT:
            self.fixed = self.canary
        else:
            self.fixed = None

    @property
    def canary_weight(self) -> int:
        """The effective canary weight (0 when the table has no canary side)."""
        return self._canary_weight

    def pick(self) -> RevisionPool:
        """The revision the next request goes to."""
        fixed = self.fixed
        if fixed is not None:
            return fixed
        canary = self._canary_score + self._canary_weight
        primary = self._primary_score + (TOTAL_WEIGHT - self._canary_weight)
        if canary > primary:
            self._canary_score = canary - TOTAL_WEIGHT
            self._primary_score = primary
            return self.canary
        self._canary_score = canary
        self._primary_score = primary - TOTAL_WEIGHT
        return self.primary

    def pools(self) -> tuple[RevisionPool, ...]:
        """The revisions of the table (primary first), without the empty "none" side."""
        return tuple(p for p in (self.primary, self.canary) if p.revision is not None)


def table_backend_keys(table: RoutingTable) -> set[BackendKey]:
    keys: set[BackendKey] = set()
    for side in (table.primary, table.canary):
        if side is not None:
            keys.update(backend_key(b) for b in side.backends)
    return keys
