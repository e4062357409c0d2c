"""Ephemeral metadata (canary/stable, preview/active role labels), planned purely.

`MetaSim` is the planner's `Sim` plus what a platform does with `SetEphemeralMetadata`: the
ReplicaSet's pod template, its pods (relabelled in place) and its bookkeeping annotation.
Pods created by `settle` take their ReplicaSet's template metadata, as on a cluster. Each
scenario ends with one more reconcile that must plan no metadata change (idempotence).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import pytest

from rollouts.core import metadata
from rollouts.core import plan as p
from rollouts.core.hashing import HASH_LABEL
from rollouts.model.rollout import PodMetadata
from rollouts.ops import patches
from tests.core.sim import T0, Sim, blue_green_rollout, canary_rollout

STEPS: list[dict[str, Any]] = [{"setWeight": 25}, {"pause": {}}]
CANARY = {"labels": {"role": "canary"}, "annotations": {"note": "canary"}}
STABLE = {"labels": {"role": "stable"}, "annotations": {"note": "stable"}}
PREVIEW = {"labels": {"role": "preview"}}
ACTIVE = {"labels": {"role": "active"}}
# The keys any case's role metadata uses: what a pod carries of them is what the cases compare.
ROLE_KEYS = ("role", "tier", "note", "team", "app", HASH_LABEL)


def relabel(pod: p.PodView, change: p.SetEphemeralMetadata) -> p.PodView:
    meta: dict[str, Any] = {"labels": dict(pod.labels), "annotations": dict(pod.annotations)}
    metadata.apply_to(meta, change)
    return replace(pod, labels=metadata.pairs(meta.get("labels")), annotations=metadata.pairs(meta.get("annotations")))


class MetaSim(Sim):
    def __init__(self, manifest: dict[str, Any]) -> None:
        super().__init__(manifest)
        self.changes: list[p.SetEphemeralMetadata] = []

    def _apply(self, action: p.Action) -> None:
        if not isinstance(action, p.SetEphemeralMetadata):
            super()._apply(action)
            return
        self.changes.append(action)
        rs = self.rs[action.name]
        template = copy.deepcopy(rs.template)
        metadata.apply_to_template(template, action)
        self.rs[action.name] = replace(
            rs,
            template=template,
            pods=tuple(relabel(pod, action) for pod in rs.pods),
            ephemeral=None if action.wanted.empty else action.wanted,
        )

    def settle(self) -> None:
        super().settle()
        for name, rs in self.rs.items():
            meta = rs.template.get("metadata") or {}
            born = [
                pod
                if pod.labels
                else replace(
                    pod, labels=metadata.pairs(meta.get("labels")), annotations=metadata.pairs(meta.get("annotations"))
                )
                for pod in rs.pods
            ]
            self.rs[name] = replace(rs, pods=tuple(born))

    # --- what the cases look at --------------------------------------------------------------

    def rs_of(self, revision: int) -> p.ReplicaSetView:
        return next(rs for rs in self.rs.values() if rs.revision == revision)

    def roles(self, revision: int) -> dict[str, str]:
        """The role keys every pod of the revision carries (they must all agree), labels and
        annotations merged; the template must carry the same."""
        rs = self.rs_of(revision)
        seen = []
        for pod in rs.pods:
            seen.append(
                {k: v for k, v in (*pod.labels, *pod.annotations) if k in ROLE_KEYS and k not in ("app", HASH_LABEL)}
            )
        meta = rs.template.get("metadata") or {}
        from_template = {
            k: v
            for k, v in {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}.items()
            if k in ROLE_KEYS and k not in ("app", HASH_LABEL)
        }
        assert all(s == from_template for s in seen), (revision, seen, from_template)
        return from_template


# --- steps a case drives -----------------------------------------------------------------------

Step = Callable[[MetaSim], None]


def image(tag: str) -> Step:
    def run(sim: MetaSim) -> None:
        sim.set_image(f"app:{tag}")
        sim.converge()

    return run


def promote(sim: MetaSim) -> None:
    sim.status = patches.promote(sim.rollout().to_json()).obj["status"]
    sim.converge()


def abort(sim: MetaSim) -> None:
    sim.status = patches.abort(sim.rollout().to_json()).obj["status"]
    sim.converge()


def strategy(field: str, value: dict[str, Any] | None) -> Step:
    """Edit (None: delete) a field of the strategy block, e.g. canaryMetadata."""

    def run(sim: MetaSim) -> None:
        block = next(iter(sim.manifest["spec"]["strategy"].values()))
        if value is None:
            block.pop(field, None)
        else:
            block[field] = value
        sim.manifest["metadata"]["generation"] += 1
        sim.converge()

    return run


def after(seconds: int) -> Step:
    def run(sim: MetaSim) -> None:
        sim.advance(seconds)
        sim.converge()

    return run


def with_template_labels(manifest: dict[str, Any], **labels: str) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    manifest["spec"]["template"]["metadata"]["labels"].update(labels)
    return manifest


def canary(**fields: Any) -> dict[str, Any]:
    return canary_rollout(STEPS, **fields)


def blue_green(**fields: Any) -> dict[str, Any]:
    return blue_green_rollout(autoPromotionEnabled=False, **fields)


C = {"canaryMetadata": CANARY, "stableMetadata": STABLE}
BG = {"previewMetadata": PREVIEW, "activeMetadata": ACTIVE}
CANARY_ROLE = {"role": "canary", "note": "canary"}
STABLE_ROLE = {"role": "stable", "note": "stable"}

CASES = [
    pytest.param(canary(**C), [], {1: STABLE_ROLE}, id="first-deploy-is-stable"),
    pytest.param(canary(**C), [image("v2")], {1: STABLE_ROLE, 2: CANARY_ROLE}, id="canary-start"),
    pytest.param(canary(**C), [image("v2"), promote], {1: {}, 2: STABLE_ROLE}, id="promotion-swaps-roles"),
    pytest.param(
        canary(**C), [image("v2"), promote, after(30)], {2: STABLE_ROLE}, id="old-stable-scaled-down-after-promotion"
    ),
    pytest.param(canary(**C), [image("v2"), abort], {1: STABLE_ROLE, 2: CANARY_ROLE}, id="abort-keeps-roles"),
    pytest.param(
        canary(**C), [image("v2"), image("v3")], {1: STABLE_ROLE, 2: {}, 3: CANARY_ROLE}, id="superseded-canary-cleared"
    ),
    pytest.param(
        canary(canaryMetadata=CANARY), [image("v2"), promote], {1: {}, 2: {}}, id="canary-only-cleared-on-promotion"
    ),
    pytest.param(canary(stableMetadata=STABLE), [image("v2")], {1: STABLE_ROLE, 2: {}}, id="stable-only-canary-plain"),
    pytest.param(
        canary(**C),
        [image("v2"), strategy("canaryMetadata", {"labels": {"role": "canary-2", "tier": "web"}})],
        {1: STABLE_ROLE, 2: {"role": "canary-2", "tier": "web"}},
        id="metadata-changed-in-spec",
    ),
    pytest.param(
        canary(**C), [image("v2"), strategy("stableMetadata", None)], {1: {}, 2: CANARY_ROLE}, id="spec-field-deleted"
    ),
    pytest.param(
        with_template_labels(canary(canaryMetadata={"labels": {"team": "canary", "role": "canary"}}), team="payments"),
        [image("v2"), promote],
        {1: {"team": "payments"}, 2: {"team": "payments"}},
        id="user-label-never-injected-nor-removed",
    ),
    pytest.param(
        canary(canaryMetadata={"labels": {"app": "other", HASH_LABEL: "x", "role": "canary"}}),
        [image("v2")],
        {1: {}, 2: {"role": "canary"}},
        id="selector-and-hash-labels-never-injected",
    ),
    pytest.param(blue_green(**BG), [], {1: {"role": "active"}}, id="blue-green-first-deploy-is-active"),
    pytest.param(
        blue_green(**BG), [image("v2")], {1: {"role": "active"}, 2: {"role": "preview"}}, id="blue-green-preview"
    ),
    pytest.param(
        blue_green(**BG), [image("v2"), promote], {1: {}, 2: {"role": "active"}}, id="blue-green-preview-becomes-active"
    ),
    pytest.param(
        blue_green(**BG), [image("v2"), abort], {1: {"role": "active"}, 2: {"role": "preview"}}, id="blue-green-abort"
    ),
    pytest.param(
        blue_green(activeMetadata=ACTIVE),
        [image("v2"), strategy("activeMetadata", {"annotations": {"note": "active"}})],
        {1: {"note": "active"}, 2: {}},
        id="blue-green-label-replaced-by-annotation",
    ),
]


@pytest.mark.parametrize(("manifest", "steps", "expected"), CASES)
def test_role_metadata_follows_the_replica_sets(
    manifest: dict[str, Any], steps: list[Step], expected: dict[int, dict[str, str]]
) -> None:
    sim = MetaSim(manifest)
    sim.converge()
    for step in steps:
        step(sim)
    for revision, roles in expected.items():
        rs = sim.rs_of(revision)
        assert sim.roles(revision) == roles, revision
        recorded = rs.ephemeral
        injected = dict((*recorded.labels, *recorded.annotations)) if recorded is not None else {}
        # "team" is the user's own template label in its case: never recorded as injected.
        assert injected == {k: v for k, v in roles.items() if k != "team"}, revision
        assert all(dict(pod.labels).get("app") == "app" for pod in rs.pods), "the selector label stays"
    sim.changes.clear()
    sim.reconcile()
    assert sim.changes == [], "an idempotent reconcile plans no metadata change"


def test_no_metadata_configured_plans_nothing() -> None:
    sim = MetaSim(canary())
    sim.converge()
    image("v2")(sim)
    promote(sim)
    assert sim.changes == []


def test_new_pods_need_no_change_while_pods_missing_the_role_get_one() -> None:
    """A pod born from the template already carries the role; one that does not (created from
    the template before it was changed) is relabelled on the next reconcile."""
    sim = MetaSim(canary(**C))
    sim.converge()
    image("v2")(sim)
    v1 = sim.rs_of(1)
    sim.changes.clear()
    sim.rs[v1.name] = replace(v1, pods=(*v1.pods, p.PodView("late", T0, True, labels=(("app", "app"),))))
    sim.reconcile()
    assert [c.name for c in sim.changes] == [v1.name]
    assert dict(sim.rs_of(1).pods[-1].labels)["role"] == "stable"


# --- `sync` on one ReplicaSet ---------------------------------------------------------------------


def view(
    template_labels: dict[str, str],
    recorded: dict[str, str] | None = None,
    pod_labels: list[dict[str, str]] | None = None,
    *,
    terminating: bool = False,
) -> p.ReplicaSetView:
    return p.ReplicaSetView(
        name="app-abc",
        pod_hash="abc",
        revision=1,
        replicas=len(pod_labels or []),
        ready=0,
        available=0,
        template={"metadata": {"labels": template_labels}, "spec": {}},
        pods=tuple(
            p.PodView(f"pod{i}", T0, True, terminating=terminating, labels=metadata.pairs(labels))
            for i, labels in enumerate(pod_labels or [])
        ),
        ephemeral=None if recorded is None else p.EphemeralMetadata(labels=metadata.pairs(recorded)),
    )


ROLE = {"labels": {"role": "canary"}}


@pytest.mark.parametrize(
    ("rs", "role", "expected"),
    [
        pytest.param(view({"app": "a"}), None, None, id="nothing-recorded-nothing-wanted"),
        pytest.param(
            view({"app": "a", "role": "canary"}, {"role": "canary"}, [{"app": "a", "role": "canary"}]),
            ROLE,
            None,
            id="applied-everywhere",
        ),
        pytest.param(view({"app": "a"}), ROLE, ({"role": "canary"}, ()), id="first-injection"),
        pytest.param(
            view({"app": "a", "role": "stable"}, {"role": "stable"}, [{"app": "a", "role": "stable"}]),
            None,
            ({}, ("role",)),
            id="removal-of-recorded-key",
        ),
        pytest.param(
            view({"app": "a", "role": "canary"}, {"role": "canary"}, [{"app": "a"}]),
            ROLE,
            ({"role": "canary"}, ()),
            id="a-pod-lacks-the-role",
        ),
        pytest.param(
            view({"app": "a", "role": "canary"}, {"role": "canary"}, [{"app": "a"}], terminating=True),
            ROLE,
            None,
            id="terminating-pods-ignored",
        ),
        pytest.param(
            view({"app": "a", "role": "canary", "old": "x"}, {"role": "canary", "old": "x"}, []),
            ROLE,
            ({"role": "canary"}, ("old",)),
            id="widened-bookkeeping-after-a-crash",
        ),
        pytest.param(view({"app": "a", "role": "mine"}), ROLE, None, id="template-own-key-is-the-users"),
    ],
)
def test_sync_one_replica_set(
    rs: p.ReplicaSetView, role: dict[str, Any] | None, expected: tuple[dict[str, str], tuple[str, ...]] | None
) -> None:
    change = metadata.sync(rs, PodMetadata.model_validate(role) if role else None, {"app", HASH_LABEL})
    if expected is None:
        assert change is None
    else:
        assert change is not None
        assert dict(change.wanted.labels) == expected[0]
        assert change.remove_labels == expected[1]


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        pytest.param(None, None, id="absent"),
        pytest.param('{"labels":{"role":"canary"}}', p.EphemeralMetadata(labels=(("role", "canary"),)), id="argo-json"),
        pytest.param("not json", p.EphemeralMetadata(), id="unreadable-records-nothing"),
        pytest.param('["role"]', p.EphemeralMetadata(), id="not-an-object"),
    ],
)
def test_bookkeeping_parse(value: str | None, expected: p.EphemeralMetadata | None) -> None:
    notes = {} if value is None else {metadata.EPHEMERAL_ANNOTATION: value}
    assert metadata.parse_bookkeeping(notes) == expected


def test_bookkeeping_round_trip_and_removal_drops_empty_maps() -> None:
    meta = p.EphemeralMetadata(labels=(("role", "canary"),), annotations=(("note", "x"),))
    value = metadata.bookkeeping_value(meta)
    assert value == '{"annotations":{"note":"x"},"labels":{"role":"canary"}}'
    assert metadata.parse_bookkeeping({metadata.EPHEMERAL_ANNOTATION: value}) == meta
    rs: dict[str, Any] = {"metadata": {"annotations": {metadata.EPHEMERAL_ANNOTATION: value}}}
    metadata.set_bookkeeping(rs, p.EphemeralMetadata())
    assert rs == {"metadata": {}}
    template: dict[str, Any] = {"spec": {}}
    change = p.SetEphemeralMetadata("x", meta)
    assert metadata.apply_to_template(template, change)
    assert template["metadata"] == {"labels": {"role": "canary"}, "annotations": {"note": "x"}}
    removal = p.SetEphemeralMetadata("x", p.EphemeralMetadata(), ("role",), ("note",))
    assert metadata.apply_to_template(template, removal)
    assert template == {"spec": {}, "metadata": {}}


def test_undo_to_a_replica_set_with_role_metadata_restores_its_own_template() -> None:
    """The stable ReplicaSet's template carries stableMetadata; undo copies it without the role
    keys, so the rollout's template hashes to that revision again (a fast-tracked rollback)."""
    sim = MetaSim(canary(**C))
    sim.converge()
    v1_hash = sim.hash_of(1)
    image("v2")(sim)
    stable = sim.rs_of(1)
    assert (stable.template.get("metadata") or {}).get("labels", {}).get("role") == "stable"
    value = metadata.bookkeeping_value(stable.ephemeral or p.EphemeralMetadata())
    assert value is not None
    rs_obj = {
        "metadata": {
            "labels": {HASH_LABEL: v1_hash},
            "annotations": {"rollout.argoproj.io/revision": "1", metadata.EPHEMERAL_ANNOTATION: value},
        },
        "spec": {"template": stable.template},
    }
    current = {
        "metadata": {"labels": {HASH_LABEL: sim.hash_of(2)}, "annotations": {"rollout.argoproj.io/revision": "2"}}
    }
    sim.manifest = patches.undo(sim.rollout().to_json(), [rs_obj, current]).obj
    sim.manifest.pop("status", None)
    template = sim.manifest["spec"]["template"]
    assert template["metadata"]["labels"] == {"app": "app"}
    assert "annotations" not in template["metadata"]
    sim.converge()
    assert sim.status is not None and sim.status["currentPodHash"] == v1_hash == sim.status["stableRS"]
    assert sim.roles(1) == STABLE_ROLE
