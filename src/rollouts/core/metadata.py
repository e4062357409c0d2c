"""Ephemeral pod metadata: role labels and annotations that follow a ReplicaSet's role.

`canary.canaryMetadata`/`stableMetadata` and `blueGreen.previewMetadata`/`activeMetadata` are
injected into the pod template of the ReplicaSet holding the role, and into its running pods
in place (no restart). Roles as in Argo's `reconcileEphemeralMetadata`: while an update is in
flight (status.stableRS set and not the current template's hash) the new ReplicaSet is the
canary/preview and the stable one is stable/active; once fully rolled out (or on the first
deploy) the new ReplicaSet is stable/active. Every other ReplicaSet carries none, so a role
change removes the old role's keys and adds the new role's.

The ReplicaSet's annotation `rollout.argoproj.io/ephemeral-metadata` (Argo's JSON
`{"labels": {...}, "annotations": {...}}`) records exactly the keys that were injected, so
removal never touches a label the user set. Keys the pod template sets itself, the selector's
labels and the pod-template-hash label are never injected: the first belong to the user, the
others decide which pods a ReplicaSet and a Service select.

A platform carries out `SetEphemeralMetadata` with the helpers below, in an order that a crash
at any point leaves recoverable: (1) the pod template changes, with the bookkeeping widened to
old + new keys; (2) the pods; (3) the bookkeeping narrowed to the new keys. Whatever step was
missed shows as a difference on the next reconcile, and the same action runs again.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from rollouts.core.context import Reconcile
from rollouts.core.hashing import HASH_LABEL
from rollouts.core.plan import DeleteReplicaSet, EphemeralMetadata, ReplicaSetView, SetEphemeralMetadata
from rollouts.model.rollout import PodMetadata, Rollout

EPHEMERAL_ANNOTATION = "rollout.argoproj.io/ephemeral-metadata"


# --- the rollout's side ----------------------------------------------------------------------


def role_metadata(rollout: Rollout) -> tuple[PodMetadata | None, PodMetadata | None]:
    """(metadata of the new revision while it is not stable, metadata of the stable revision)."""
    strategy = rollout.spec.strategy
    if strategy.canary is not None:
        return strategy.canary.canary_metadata, strategy.canary.stable_metadata
    if strategy.blue_green is not None:
        return strategy.blue_green.preview_metadata, strategy.blue_green.active_metadata
    return None, None


def configured(rollout: Rollout) -> bool:
    return any(meta is not None for meta in role_metadata(rollout))


def wants_pods(rollout: Rollout, rs_annotations: Mapping[str, str], replicas: int) -> bool:
    """Whether a platform must list this ReplicaSet's pods (with their labels and annotations)
    for `plan_ephemeral_metadata`: it runs pods, and the rollout uses ephemeral metadata or the
    ReplicaSet still records injected keys (the spec field was deleted: they must go). Pods
    of a ReplicaSet scaled to 0 are going: as Argo, they are not checked."""
    return replicas > 0 and (configured(rollout) or EPHEMERAL_ANNOTATION in rs_annotations)


# --- the bookkeeping annotation --------------------------------------------------------------


def pairs(values: Mapping[str, Any] | None) -> tuple[tuple[str, str], ...]:
    return tuple(sorted((str(k), str(v)) for k, v in (values or {}).items()))


def parse_bookkeeping(rs_annotations: Mapping[str, str]) -> EphemeralMetadata | None:
    """What the ReplicaSet records as injected; None without the annotation. An unreadable
    value counts as recording nothing (as Argo), so it is rewritten on the next sync."""
    raw = rs_annotations.get(EPHEMERAL_ANNOTATION)
    if raw is None:
        return None
    try:
        data = json.loads(raw)
    except ValueError:
        return EphemeralMetadata()
    if not isinstance(data, dict):
        return EphemeralMetadata()
    labels, annotations = data.get("labels"), data.get("annotations")
    return EphemeralMetadata(
        labels=pairs(labels) if isinstance(labels, dict) else (),
        annotations=pairs(annotations) if isinstance(annotations, dict) else (),
    )


def bookkeeping_value(meta: EphemeralMetadata) -> str | None:
    """The annotation's value for `meta` (Argo's JSON shape); None: no annotation."""
    if meta.empty:
        return None
    body: dict[str, dict[str, str]] = {}
    if meta.labels:
        body["labels"] = dict(meta.labels)
    if meta.annotations:
        body["annotations"] = dict(meta.annotations)
    return json.dumps(body, sort_keys=True, separators=(",", ":"))


def widened(recorded: EphemeralMetadata | None, change: SetEphemeralMetadata) -> EphemeralMetadata:
    """Step (1)'s bookkeeping: the keys still to remove plus the keys being injected."""
    old = recorded or EphemeralMetadata()
    labels = {k: v for k, v in old.labels if k in change.remove_labels} | dict(change.wanted.labels)
    annotations = {k: v for k, v in old.annotations if k in change.remove_annotations} | dict(change.wanted.annotations)
    return EphemeralMetadata(pairs(labels), pairs(annotations))


def set_bookkeeping(rs: dict[str, Any], meta: EphemeralMetadata) -> None:
    """Write `meta` into a ReplicaSet object's annotations (in place)."""
    value = bookkeeping_value(meta)
    notes = rs.setdefault("metadata", {}).setdefault("annotations", {})
    if value is None:
        notes.pop(EPHEMERAL_ANNOTATION, None)
        if not notes:
            del rs["metadata"]["annotations"]
    else:
        notes[EPHEMERAL_ANNOTATION] = value


def apply_to(meta: dict[str, Any], change: SetEphemeralMetadata) -> bool:
    """Apply `change` to an object metadata dict (a pod's, or a pod template's) in place.

    Returns whether anything changed. A labels/annotations map emptied by a removal is
    dropped, so a template that had none before the injection reads the same after it.
    """
    changed = False
    for field, wanted, remove in (
        ("labels", change.wanted.labels, change.remove_labels),
        ("annotations", change.wanted.annotations, change.remove_annotations),
    ):
        current = meta.get(field)
        values: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
        for key in remove:
            if key in values:
                del values[key]
                changed = True
        for key, value in wanted:
            if values.get(key) != value:
                values[key] = value
                changed = True
        if values:
            meta[field] = values
        else:
            meta.pop(field, None)
    return changed


def apply_to_template(template: dict[str, Any], change: SetEphemeralMetadata) -> bool:
    """`apply_to` on a pod template's metadata, adding `metadata` only when something goes in."""
    current = template.get("metadata")
    meta: dict[str, Any] = dict(current) if isinstance(current, dict) else {}
    changed = apply_to(meta, change)
    if meta or isinstance(current, dict):
        template["metadata"] = meta
    return changed


# --- planning --------------------------------------------------------------------------------


def plan_ephemeral_metadata(ctx: Reconcile) -> None:
    """Append a `SetEphemeralMetadata` for every ReplicaSet whose template, pods or bookkeeping
    differ from its role's metadata (after the strategy planned this reconcile's status)."""
    new_role, stable_role = role_metadata(ctx.rollout)
    stable_hash = ctx.status.stable_rs
    roles: dict[str, PodMetadata | None] = {}
    if stable_hash is None or stable_hash == ctx.new_hash:
        roles[ctx.new_hash] = stable_role
    else:
        roles[ctx.new_hash] = new_role
        roles[stable_hash] = stable_role
    selector = ctx.rollout.spec.selector
    protected = {HASH_LABEL, *((selector.match_labels or {}) if selector else {})}
    deleted = {a.name for a in ctx.plan.actions if isinstance(a, DeleteReplicaSet)}
    for rs in _replica_sets(ctx):
        if rs.name in deleted or not rs.pod_hash:
            continue
        change = sync(rs, roles.get(rs.pod_hash), protected)
        if change is not None:
            ctx.plan.actions.append(change)


def _replica_sets(ctx: Reconcile) -> list[ReplicaSetView]:
    """The observed ReplicaSets, with the one the strategy created this reconcile."""
    sets = list(ctx.snap.replica_sets)
    if ctx.new_rs is not None and all(rs.name != ctx.new_rs.name for rs in sets):
        sets.append(ctx.new_rs)
    return sets


def sync(rs: ReplicaSetView, role: PodMetadata | None, protected: Iterable[str] = ()) -> SetEphemeralMetadata | None:
    """The change that makes `rs` carry exactly `role`'s metadata (None: none), or None when it does."""
    recorded = rs.ephemeral or EphemeralMetadata()
    template_meta = rs.template.get("metadata") or {}
    wanted = EphemeralMetadata(
        labels=_injectable(role.labels if role else None, template_meta.get("labels"), recorded.labels, protected),
        annotations=_injectable(
            role.annotations if role else None, template_meta.get("annotations"), recorded.annotations, ()
        ),
    )
    wanted_labels, wanted_annotations = dict(wanted.labels), dict(wanted.annotations)
    remove_labels = tuple(k for k, _ in recorded.labels if k not in wanted_labels)
    remove_annotations = tuple(k for k, _ in recorded.annotations if k not in wanted_annotations)
    change = SetEphemeralMetadata(rs.name, wanted, remove_labels, remove_annotations)
    booked = rs.ephemeral is None if wanted.empty else rs.ephemeral == wanted
    if booked and not apply_to(dict(template_meta), change) and _pods_carry(rs, change):
        return None
    return change


def _injectable(
    role: Mapping[str, str] | None,
    template: Any,
    recorded: tuple[tuple[str, str], ...],
    protected: Iterable[str],
) -> tuple[tuple[str, str], ...]:
    """The role's keys minus those the user's template sets itself and the protected ones.

    The template's own keys are its keys that the bookkeeping does not record as injected.
    """
    injected = {k for k, _ in recorded}
    own = {k for k in (template if isinstance(template, dict) else {}) if k not in injected}
    skip = own | set(protected)
    return pairs({k: v for k, v in (role or {}).items() if k not in skip})


def _pods_carry(rs: ReplicaSetView, change: SetEphemeralMetadata) -> bool:
    for pod in rs.pods:
        if pod.terminating:
            continue
        meta = {"labels": dict(pod.labels), "annotations": dict(pod.annotations)}
        if apply_to(meta, change):
            return False
    return True
