"""Text output shaped like `kubectl argo rollouts get rollout` and `list rollouts`."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, datetime

from rollouts.cli.info import ICONS, RolloutInfo
from rollouts.core.durations import format_duration
from rollouts.core.routes import ActiveRoute, HeaderRoute, RequestMatch, ValueMatch
from rollouts.store.sqlite import Event


def _icon(status: str) -> str:
    return ICONS.get(status, "?")


def _age(moment: datetime | None, now: datetime) -> str:
    if moment is None:
        return ""
    return format_duration(max(0.0, (now - moment).total_seconds()))


def render_rollout(info: RolloutInfo, events: Sequence[Event] = (), now: datetime | None = None) -> str:
    now = now or datetime.now(UTC)
    lines = [
        f"Name:            {info.name}",
        f"Namespace:       {info.namespace}",
        f"Status:          {_icon(info.status)} {info.status}",
    ]
    if info.message:
        lines.append(f"Message:         {info.message}")
    lines.append(f"Strategy:        {info.strategy}")
    if info.strategy == "Canary":
        if info.step is not None:
            lines.append(f"  Step:          {info.step}")
        lines.append(f"  SetWeight:     {info.set_weight}")
        lines.append(f"  ActualWeight:  {info.actual_weight}")
        for route in info.routes:
            label = "HeaderRoute:" if isinstance(route, HeaderRoute) else "MirrorRoute:"
            lines.append(f"  {label:<15}{describe_route(route)}")
    for i, (image, roles) in enumerate(info.images):
        label = "Images:          " if i == 0 else "                 "
        suffix = f" ({', '.join(roles)})" if roles else ""
        lines.append(f"{label}{image}{suffix}")
    lines += [
        "Replicas:",
        f"  Desired:       {info.desired}",
        f"  Current:       {info.current}",
        f"  Updated:       {info.updated}",
        f"  Ready:         {info.ready}",
        f"  Available:     {info.available}",
        "",
    ]
    rows: list[tuple[str, str, str, str, str]] = [
        (f"⟳ {info.name}", "Rollout", f"{_icon(info.status)} {info.status}", _age(info.age, now), "")
    ]
    for ri, revision in enumerate(info.revisions):
        last_rev = ri == len(info.revisions) - 1
        branch = "└──" if last_rev else "├──"
        cont = "   " if last_rev else "│  "
        rows.append((f"{branch}# revision:{revision.revision}", "", "", "", ""))
        children: list[tuple[str, object]] = [("rs", rs) for rs in revision.replica_sets]
        children += [("run", run) for run in revision.runs]
        for ci, (kind, child) in enumerate(children):
            last_child = ci == len(children) - 1
            cbranch = "└──" if last_child else "├──"
            ccont = "   " if last_child else "│  "
            if kind == "rs":
                from rollouts.cli.info import ReplicaSetInfo

                assert isinstance(child, ReplicaSetInfo)
                rows.append(
                    (
                        f"{cont}{cbranch}⧉ {child.name}",
                        "ReplicaSet",
                        f"{_icon(child.status)} {child.status}",
                        _age(child.age, now),
                        ",".join(child.roles),
                    )
                )
                for pi, pod in enumerate(child.pods):
                    pbranch = "└──" if pi == len(child.pods) - 1 else "├──"
                    status = pod.status if pod.ready or pod.status != "Running" else "Running"
                    icon = "✔" if pod.ready else ("✖" if pod.status == "Failed" else "◌")
                    info_text = f"ready:{1 if pod.ready else 0}/1"
                    if pod.restarts:
                        info_text += f",restarts:{pod.restarts}"
                    rows.append(
                        (
                            f"{cont}{ccont}{pbranch}□ {pod.name}",
                            "Pod",
                            f"{icon} {status}",
                            _age(pod.age, now),
                            info_text,
                        )
                    )
            else:
                from rollouts.cli.info import RunInfo

                assert isinstance(child, RunInfo)
                counts = []
                if child.successful:
                    counts.append(f"✔ {child.successful}")
                if child.failed:
                    counts.append(f"✖ {child.failed}")
                if child.errors:
                    counts.append(f"⚠ {child.errors}")
                if child.inconclusive:
                    counts.append(f"? {child.inconclusive}")
                rows.append(
                    (
                        f"{cont}{cbranch}α {child.name}",
                        "AnalysisRun",
                        f"{_icon(child.phase)} {child.phase}",
                        _age(child.age, now),
                        ",".join(counts),
                    )
                )
    width = max(len(r[0]) for r in rows) + 2
    lines.append(f"{'NAME':<{width}}{'KIND':<13}{'STATUS':<16}{'AGE':<8}INFO")
    for name, kind, status, age, extra in rows:
        lines.append(f"{name:<{width}}{kind:<13}{status:<16}{age:<8}{extra}".rstrip())
    if events:
        lines += ["", "Events:"]
        for event in events[-10:]:
            lines.append(f"  {event.time}  {event.type:<8} {event.reason:<24} {event.message}")
    return "\n".join(lines)


def _value(match: ValueMatch) -> str:
    return f'{match.kind} "{match.value}"'


def _request(block: RequestMatch) -> str:
    parts = []
    if block.method is not None:
        parts.append(f"method {_value(block.method)}")
    if block.path is not None:
        parts.append(f"path {_value(block.path)}")
    parts += [f"{header.name} {_value(header.value)}" for header in block.headers]
    return " and ".join(parts) or "any request"


def describe_route(route: ActiveRoute) -> str:
    """One line for a managed route in effect: its name and what it matches.

    `canary-header: X-Canary exact "yes"` (any match sends the request to the canary);
    `mirror-api: 50% of method exact "GET" and path prefix "/api"` (matching requests copied).
    """
    if isinstance(route, HeaderRoute):
        matches = " or ".join(f"{m.name} {_value(m.value)}" for m in route.matches)
        return f"{route.name}: {matches}"
    blocks = " or ".join(_request(block) for block in route.matches)
    return f"{route.name}: {route.percentage}% of {blocks}"


def render_list(infos: Sequence[RolloutInfo]) -> str:
    header = ("NAME", "STRATEGY", "STATUS", "STEP", "SET-WEIGHT", "READY", "DESIRED", "UP-TO-DATE", "AVAILABLE")
    rows = [header]
    for i in infos:
        rows.append(
            (
                i.name,
                i.strategy,
                i.status,
                i.step or "-",
                "-" if i.set_weight is None else str(i.set_weight),
                f"{i.ready}/{i.desired}",
                str(i.desired),
                str(i.updated),
                str(i.available),
            )
        )
    widths = [max(len(r[c]) for r in rows) + 2 for c in range(len(header))]
    return "\n".join("".join(f"{v:<{w}}" for v, w in zip(r, widths, strict=True)).rstrip() for r in rows)
