"""Managed routes: which `setHeaderRoute` / `setMirrorRoute` routes are in effect.

Argo applies a route when its step is reached and leaves it in the mesh through the later
steps; a later step with the same name replaces it, one without `match` removes it, and every
managed route is removed once the rollout is fully promoted or aborted. Argo keeps that state
in the router (the VirtualService). Here it is derived, not stored: replaying the route steps
from the first step up to the current one (`currentStepIndex`) gives the same routes, survives
a controller restart, and is empty at once after an abort, a promotion, or a new update that
restarts the steps. The result is ordered by `trafficRouting.managedRoutes`, whose order is the
routes' precedence (the first route that matches a request decides).

Match semantics are Istio's (the router Argo documents these steps with):

* a header route sends a request to the canary when any of its matches holds (each
  `match` entry is its own Istio HTTPMatchRequest: OR across entries);
* a mirror route matches when any of its `match` blocks holds (OR across blocks), a block
  holding when its method, path and every header match (AND inside a block); a matching
  request is served as usual (by weight) and `percentage` % of them (default 100) are copied
  to the canary;
* a string match is `exact`, `prefix` or `regex` (a full match, as RE2 in Envoy); when a
  manifest sets several, the first of exact, prefix, regex is used (as Argo's Istio code does);
  a match with no value is left out (lint reports it).

Pure: no I/O. `routes_to_json` / `routes_from_json` give the routes a stable JSON form for
platforms that keep them on an object (the embedded proxy's Service annotation).
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from rollouts.model.rollout import (
    CanaryStrategy,
    HeaderRoutingMatch,
    Rollout,
    RolloutStatus,
    SetHeaderRoute,
    SetMirrorRoute,
    StringMatch,
)

__all__ = [
    "DEFAULT_MIRROR_PERCENTAGE",
    "ActiveRoute",
    "HeaderMatch",
    "HeaderRoute",
    "MirrorRoute",
    "RequestMatch",
    "RouteFormatError",
    "ValueMatch",
    "active_routes",
    "canary_routes",
    "routes_from_json",
    "routes_json",
    "routes_to_json",
]

MatchKind = Literal["exact", "prefix", "regex"]
_KINDS: tuple[MatchKind, ...] = ("exact", "prefix", "regex")

DEFAULT_MIRROR_PERCENTAGE = 100
"""Istio mirrors every matching request when `mirrorPercentage` is unset."""


class RouteFormatError(ValueError):
    """Routes in JSON form that cannot be read (`routes_from_json`)."""


@dataclass(frozen=True)
class ValueMatch:
    """An Istio StringMatch: `exact`, `prefix` or `regex` (full match) on a value."""

    kind: MatchKind
    value: str


@dataclass(frozen=True)
class HeaderMatch:
    """A header (name compared case-insensitively) whose value matches."""

    name: str
    value: ValueMatch


@dataclass(frozen=True)
class RequestMatch:
    """One `setMirrorRoute.match` block: every condition set must hold."""

    method: ValueMatch | None = None
    path: ValueMatch | None = None
    headers: tuple[HeaderMatch, ...] = ()


@dataclass(frozen=True)
class HeaderRoute:
    """Requests matching any of `matches` go to the canary, whatever the weight."""

    name: str
    matches: tuple[HeaderMatch, ...]


@dataclass(frozen=True)
class MirrorRoute:
    """`percentage` % of the requests matching any of `matches` are copied to the canary."""

    name: str
    percentage: int
    matches: tuple[RequestMatch, ...]


ActiveRoute = HeaderRoute | MirrorRoute


# --- which routes are in effect ----------------------------------------------------------------


def active_routes(rollout: Rollout, status: RolloutStatus | None = None) -> tuple[ActiveRoute, ...]:
    """The managed routes in effect for `rollout` with `status` (default: its own), by precedence.

    Empty without a canary strategy or managedRoutes, before a stable revision exists, when the
    update is fully promoted (stable = current revision) and when it is aborted.
    """
    canary = rollout.spec.strategy.canary
    status = status if status is not None else rollout.status
    if canary is None or status is None:
        return ()
    if status.abort or not status.stable_rs or status.stable_rs == status.current_pod_hash:
        return ()
    return canary_routes(canary, status.current_step_index)


def canary_routes(canary: CanaryStrategy, step_index: int | None) -> tuple[ActiveRoute, ...]:
    """Replay the route steps of `canary` from the first up to `step_index` (inclusive: a step's
    route is applied when the step is reached), ordered by managedRoutes.

    The caller decides that an update is in flight (see `active_routes`). Routes named by no
    managedRoutes entry are ignored (lint reports them).
    """
    routing = canary.traffic_routing
    names = [route.name for route in (routing.managed_routes or [])] if routing is not None else []
    steps = canary.steps or []
    if not names or not steps:
        return ()
    last = min(step_index if step_index is not None else 0, len(steps) - 1)
    if last < 0:
        return ()
    by_name: dict[str, ActiveRoute] = {}
    for step in steps[: last + 1]:
        route: ActiveRoute | None
        if step.set_header_route is not None:
            name, route = step.set_header_route.name or "", _header_route(step.set_header_route)
        elif step.set_mirror_route is not None:
            name, route = step.set_mirror_route.name, _mirror_route(step.set_mirror_route)
        else:
            continue
        if route is None:
            by_name.pop(name, None)  # no match: the step removes the route
        else:
            by_name[name] = route
    return tuple(by_name[name] for name in dict.fromkeys(names) if name in by_name)


def _value_match(match: StringMatch | Mapping[str, Any] | None) -> ValueMatch | None:
    if match is None:
        return None
    values = match if isinstance(match, Mapping) else match.model_dump()
    for kind in _KINDS:
        value = values.get(kind)
        if isinstance(value, str) and value:
            return ValueMatch(kind, value)
    return None


def _header_match(match: HeaderRoutingMatch) -> HeaderMatch | None:
    value = _value_match(match.header_value)
    return HeaderMatch(match.header_name, value) if value is not None and match.header_name else None


def _header_route(step: SetHeaderRoute) -> HeaderRoute | None:
    matches = tuple(m for m in (_header_match(match) for match in step.match or []) if m is not None)
    return HeaderRoute(step.name or "", matches) if matches else None


def _request_match(block: Any) -> RequestMatch | None:
    """A mirror `match` block (free JSON in the model), or None when a condition has no value."""
    if not isinstance(block, Mapping):
        return None
    method = path = None
    if block.get("method") is not None:
        method = _value_match(block["method"]) if isinstance(block["method"], Mapping) else None
        if method is None:
            return None
    if block.get("path") is not None:
        path = _value_match(block["path"]) if isinstance(block["path"], Mapping) else None
        if path is None:
            return None
    headers: list[HeaderMatch] = []
    raw_headers = block.get("headers") or {}
    if not isinstance(raw_headers, Mapping):
        return None
    for name, raw in raw_headers.items():
        value = _value_match(raw) if isinstance(raw, Mapping) else None
        if value is None or not name:
            return None
        headers.append(HeaderMatch(str(name), value))
    return RequestMatch(method, path, tuple(headers))


def _mirror_route(step: SetMirrorRoute) -> MirrorRoute | None:
    matches = tuple(m for m in (_request_match(block) for block in step.match or []) if m is not None)
    if not matches:
        return None
    percentage = DEFAULT_MIRROR_PERCENTAGE if step.percentage is None else min(max(step.percentage, 0), 100)
    return MirrorRoute(step.name, percentage, matches)


# --- JSON form -----------------------------------------------------------------------------------


def _value_json(match: ValueMatch) -> dict[str, str]:
    return {match.kind: match.value}


def _header_json(match: HeaderMatch) -> dict[str, Any]:
    return {"headerName": match.name, "headerValue": _value_json(match.value)}


def routes_to_json(routes: Sequence[ActiveRoute]) -> list[dict[str, Any]]:
    """The routes as JSON values (Argo's field names, plus `kind`), in precedence order."""
    out: list[dict[str, Any]] = []
    for route in routes:
        if isinstance(route, HeaderRoute):
            out.append({"kind": "header", "name": route.name, "match": [_header_json(m) for m in route.matches]})
            continue
        blocks = []
        for block in route.matches:
            item: dict[str, Any] = {}
            if block.method is not None:
                item["method"] = _value_json(block.method)
            if block.path is not None:
                item["path"] = _value_json(block.path)
            if block.headers:
                item["headers"] = {h.name: _value_json(h.value) for h in block.headers}
            blocks.append(item)
        out.append({"kind": "mirror", "name": route.name, "percentage": route.percentage, "match": blocks})
    return out


def routes_json(routes: Sequence[ActiveRoute]) -> str:
    """`routes_to_json` as one compact, canonical string (equal routes, equal strings)."""
    return json.dumps(routes_to_json(routes), sort_keys=True, separators=(",", ":"))


def _read_value(raw: Any, where: str) -> ValueMatch:
    if isinstance(raw, Mapping) and len(raw) == 1:
        ((kind, value),) = raw.items()
        if kind in _KINDS and isinstance(value, str) and value:
            return ValueMatch(kind, value)
    raise RouteFormatError(f"{where}: expected one of exact, prefix or regex with a string value, got {raw!r}")


def _read_header(raw: Any, where: str) -> HeaderMatch:
    if not isinstance(raw, Mapping) or not isinstance(raw.get("headerName"), str) or not raw["headerName"]:
        raise RouteFormatError(f"{where}: expected headerName and headerValue, got {raw!r}")
    return HeaderMatch(raw["headerName"], _read_value(raw.get("headerValue"), f"{where}.headerValue"))


def routes_from_json(data: str | Sequence[Any]) -> tuple[ActiveRoute, ...]:
    """Read what `routes_json` / `routes_to_json` wrote; `RouteFormatError` names the bad part."""
    if isinstance(data, str):
        try:
            data = json.loads(data)
        except ValueError as exc:
            raise RouteFormatError(f"not JSON: {exc}") from exc
    if not isinstance(data, list):
        raise RouteFormatError(f"expected a list of routes, got {type(data).__name__}")
    routes: list[ActiveRoute] = []
    for i, raw in enumerate(data):
        where = f"routes[{i}]"
        if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
            raise RouteFormatError(f"{where}: expected an object with a name")
        matches = raw.get("match")
        if not isinstance(matches, list) or not matches:
            raise RouteFormatError(f"{where}.match: expected a non-empty list")
        if raw.get("kind") == "header":
            routes.append(
                HeaderRoute(raw["name"], tuple(_read_header(m, f"{where}.match[{j}]") for j, m in enumerate(matches)))
            )
        elif raw.get("kind") == "mirror":
            percentage = raw.get("percentage")
            if not isinstance(percentage, int) or isinstance(percentage, bool) or not 0 <= percentage <= 100:
                raise RouteFormatError(f"{where}.percentage: expected an integer from 0 to 100, got {percentage!r}")
            blocks = []
            for j, block in enumerate(matches):
                at = f"{where}.match[{j}]"
                if not isinstance(block, Mapping):
                    raise RouteFormatError(f"{at}: expected an object")
                headers = block.get("headers") or {}
                if not isinstance(headers, Mapping):
                    raise RouteFormatError(f"{at}.headers: expected an object")
                blocks.append(
                    RequestMatch(
                        method=_read_value(block["method"], f"{at}.method") if "method" in block else None,
                        path=_read_value(block["path"], f"{at}.path") if "path" in block else None,
                        headers=tuple(
                            HeaderMatch(str(name), _read_value(value, f"{at}.headers.{name}"))
                            for name, value in headers.items()
                        ),
                    )
                )
            routes.append(MirrorRoute(raw["name"], percentage, tuple(blocks)))
        else:
            raise RouteFormatError(f"{where}.kind: expected header or mirror, got {raw.get('kind')!r}")
    return tuple(routes)
