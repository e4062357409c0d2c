"""The planner's cheap copies are safe: what it shares, nobody changes.

A reconcile copies the observed status once (`model.clone.deep_copy`, a faster
`model_copy(deep=True)`) and builds the planning view of the rollout once
(`Reconcile.canary_strategy` / `planning_rollout`, shallow copies that share the observed spec).
That is only the same as before if (a) the copy equals pydantic's deep copy in every respect
(values, set fields, extras, private attributes, aliasing) and shares nothing mutable with
the original, and (b) no planning step changes the observed rollout or the memoised planning
view. (b) is checked by running every scenario of the core scenario modules through a `plan`
that fingerprints its inputs before and after.
"""

from __future__ import annotations

import copy
import importlib
import inspect
import sys
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from types import CodeType, ModuleType
from typing import Any

import pytest
from pydantic import BaseModel, PrivateAttr

from rollouts.core import plan as p
from rollouts.core import planner
from rollouts.core.context import Reconcile
from rollouts.core.planner import plan as real_plan
from rollouts.model.base import Model
from rollouts.model.clone import deep_copy
from rollouts.model.rollout import Condition, RolloutStatus
from tests.core import sim, test_canary_steps

SCENARIO_MODULES: tuple[ModuleType, ...] = tuple(
    importlib.import_module(f"tests.core.{name}")
    for name in (
        "test_bluegreen",
        "test_canary_steps",
        "test_ephemeral_metadata",
        "test_history_limits",
        "test_phase_conditions",
        "test_progress_deadline",
        "test_restart",
        "test_routes",
        "test_scaling",
        "test_scenario_regressions",
        "test_update_outcomes",
    )
)


# --- fingerprints ---------------------------------------------------------------------------


def fingerprint(value: Any) -> Any:
    """Everything a deep copy must reproduce: types, values, set fields, extras, private attrs."""
    if isinstance(value, BaseModel):
        private = getattr(value, "__pydantic_private__", None)
        return (
            type(value).__qualname__,
            tuple((k, fingerprint(v)) for k, v in value.__dict__.items()),
            tuple(sorted(value.__pydantic_fields_set__)),
            fingerprint(value.__pydantic_extra__),
            fingerprint(private),
        )
    if isinstance(value, dict):
        return ("dict", tuple((fingerprint(k), fingerprint(v)) for k, v in value.items()))
    if isinstance(value, list):
        return ("list", tuple(fingerprint(v) for v in value))
    if isinstance(value, tuple):
        return ("tuple", tuple(fingerprint(v) for v in value))
    return (type(value).__qualname__, value)


def mutable_ids(value: Any, seen: set[int] | None = None) -> set[int]:
    """ids of every model, dict and list reachable from `value`."""
    seen = set() if seen is None else seen
    if isinstance(value, BaseModel | dict | list) and id(value) not in seen:
        seen.add(id(value))
        if isinstance(value, BaseModel):
            children: Iterator[Any] = iter([*value.__dict__.values(), value.__pydantic_extra__])
        elif isinstance(value, dict):
            children = iter(value.values())
        else:
            children = iter(value)
        for child in children:
            mutable_ids(child, seen)
    return seen


# --- (a) deep_copy is pydantic's deep copy ------------------------------------------------------


class Inner(Model):
    name: str | None = None
    values: list[int] | None = None


class WithPrivate(Model):
    label: str | None = None
    _cache: dict[str, Any] = PrivateAttr(default_factory=dict)


class OwnDeepcopy(Model):
    label: str | None = None

    def __deepcopy__(self, memo: dict[int, Any] | None = None) -> OwnDeepcopy:
        return OwnDeepcopy(label=f"copied {self.label}")


class Outer(Model):
    first: Inner | None = None
    second: Inner | None = None
    items: list[Inner] | None = None
    when: datetime | None = None
    pair: tuple[int, list[int]] | None = None
    private: WithPrivate | None = None
    own: OwnDeepcopy | None = None


def _aliased() -> Outer:
    shared = Inner(name="x", values=[1, 2])
    return Outer(first=shared, second=shared, items=[shared, Inner(name="y")])


def _with_private() -> Outer:
    model = WithPrivate(label="p")
    model._cache["k"] = [1, {"a": 2}]
    return Outer(private=model)


def _status_with_extras() -> RolloutStatus:
    return RolloutStatus.model_validate(
        {
            "phase": "Progressing",
            "conditions": [{"type": "Available", "status": "True", "futureField": {"a": [1, 2]}}],
            "unknownTopLevel": {"nested": [{"x": 1}]},
            "canary": {"weights": {"canary": {"weight": 20}, "stable": {"weight": 80}, "extraSide": [1]}},
        }
    )


COPY_CASES = [
    pytest.param(lambda: RolloutStatus(), id="empty-status"),
    pytest.param(_status_with_extras, id="status-extras-unknown-fields"),
    pytest.param(
        lambda: RolloutStatus(conditions=[Condition(type="Paused", status="False")], abort=None), id="set-to-none"
    ),
    pytest.param(_aliased, id="one-object-referenced-twice"),
    pytest.param(lambda: Outer(when=datetime(2026, 1, 1, tzinfo=UTC), pair=(1, [2, 3])), id="datetime-and-tuple"),
    pytest.param(_with_private, id="private-attributes"),
    pytest.param(lambda: Outer(own=OwnDeepcopy(label="a")), id="model-with-own-deepcopy"),
]


@pytest.mark.parametrize("make", COPY_CASES)
def test_deep_copy_is_pydantic_deep_copy(make: Callable[[], BaseModel]) -> None:
    original = make()
    before = fingerprint(original)
    ours, theirs = deep_copy(original), original.model_copy(deep=True)
    assert fingerprint(ours) == fingerprint(theirs)
    assert fingerprint(original) == before
    # Nothing mutable is shared with the original (tuples copied by deepcopy's own rules).
    assert not (mutable_ids(ours) & mutable_ids(original))


def test_deep_copy_keeps_aliasing_within_the_copy() -> None:
    copied = deep_copy(_aliased())
    assert copied.first is copied.second
    assert copied.items is not None and copied.items[0] is copied.first
    assert copied.first is not None and copied.first.values is not None
    copied.first.values.append(3)
    assert copied.second is not None and copied.second.values == [1, 2, 3]


def test_deep_copy_private_attributes_are_independent() -> None:
    original = _with_private()
    copied = deep_copy(original)
    assert copied.private is not None and original.private is not None
    copied.private._cache["k"][1]["a"] = 99
    assert original.private._cache == {"k": [1, {"a": 2}]}


# --- (b) planning never changes what it shares --------------------------------------------------


class Watch:
    """A `plan` that checks, around each call, that the observed rollout and the memoised
    planning views are unchanged, and that the planned status shares nothing with the observed."""

    def __init__(self) -> None:
        self.calls = 0
        self.statuses = 0

    def __call__(self, snap: p.Snapshot) -> p.Plan:
        self.calls += 1
        observed = fingerprint(snap.rollout)
        if snap.rollout.status is not None:
            self.statuses += 1
            assert fingerprint(deep_copy(snap.rollout.status)) == fingerprint(snap.rollout.status.model_copy(deep=True))
        views: list[tuple[Any, Any]] = []
        real_strategy, real_planning = Reconcile.canary_strategy, Reconcile.planning_rollout

        def canary_strategy(ctx: Reconcile) -> Any:
            result = real_strategy(ctx)
            views.append((result, fingerprint(result)))
            return result

        def planning_rollout(ctx: Reconcile) -> Any:
            result = real_planning(ctx)
            # Its status is this reconcile's live status by design; the rest must stay as built.
            views.append((result.spec, fingerprint(result.spec)))
            return result

        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(Reconcile, "canary_strategy", canary_strategy)
            mp.setattr(Reconcile, "planning_rollout", planning_rollout)
            result = real_plan(snap)
        assert fingerprint(snap.rollout) == observed, "plan changed the observed rollout"
        for view, built in views:
            assert fingerprint(view) == built, "a planning step changed the memoised planning view"
        assert not (mutable_ids(result.status) & mutable_ids(snap.rollout)), "planned status shares with observed"
        return result


def _expand(func: Callable[..., None]) -> list[tuple[str, dict[str, Any]]]:
    """The calls a test function's `parametrize` marks make (their ids, keyword arguments)."""
    calls: list[tuple[str, dict[str, Any]]] = [("", {})]
    for mark in getattr(func, "pytestmark", []):
        if mark.name != "parametrize":
            continue
        names, values = mark.args[0], mark.args[1]
        names = [n.strip() for n in names.split(",")] if isinstance(names, str) else list(names)
        expanded = []
        for index, value in enumerate(values):
            given = value.values if hasattr(value, "values") and hasattr(value, "marks") else value
            args = given if len(names) > 1 else (given[0] if hasattr(value, "marks") else given,)
            case_id = getattr(value, "id", None) or str(index)
            expanded.append((case_id, dict(zip(names, args, strict=True))))
        calls = [(f"{a}-{b}".strip("-"), {**ka, **kb}) for a, ka in calls for b, kb in expanded]
    return calls


def _names(code: CodeType) -> set[str]:
    names = set(code.co_names)
    for const in code.co_consts:
        if isinstance(const, CodeType):
            names |= _names(const)
    return names


def _drives_the_planner(func: Callable[..., Any], module: ModuleType, depth: int = 2) -> bool:
    """Whether `func` (or a helper of its module that it calls) runs `Sim.reconcile`/`converge`."""
    names = _names(func.__code__)
    if names & {"reconcile", "converge"}:
        return True
    helpers = [vars(module)[n] for n in names if inspect.isfunction(vars(module).get(n))]
    return depth > 0 and any(_drives_the_planner(h, module, depth - 1) for h in helpers)


def _scenarios() -> list[Any]:
    """Every test function of the scenario modules that plans through `Sim`, with
    each of its parameter sets, whose arguments all come from `parametrize` (the rest use
    fixtures and are left out; tests of single pure functions do not plan)."""
    cases = []
    for module in SCENARIO_MODULES:
        for name, func in sorted(vars(module).items()):
            if not (name.startswith("test_") and inspect.isfunction(func) and _drives_the_planner(func, module)):
                continue
            wanted = set(inspect.signature(func).parameters)
            for case_id, kwargs in _expand(func):
                if set(kwargs) != wanted:
                    continue
                label = f"{module.__name__.rsplit('.', 1)[-1]}::{name}" + (f"[{case_id}]" if case_id else "")
                cases.append(pytest.param(func, kwargs, id=label))
    return cases


SCENARIOS = _scenarios()


def test_the_scenario_table_is_not_empty() -> None:
    assert len(SCENARIOS) > 50


@pytest.mark.parametrize(("scenario", "kwargs"), SCENARIOS)
def test_planning_changes_nothing_it_shares(
    scenario: Callable[..., None], kwargs: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    watch = Watch()
    monkeypatch.setattr(sim, "plan", watch)
    scenario(**kwargs)
    assert watch.calls > 0


def test_memoised_views_are_built_once_and_match_a_fresh_build() -> None:
    rollout = sim.Sim(sim.canary_rollout([{"setWeight": 20}])).rollout()
    snap = p.Snapshot(rollout, (), (), sim.T0, implicit_router=True)
    ctx = Reconcile(snap)
    first = ctx.planning_rollout()
    assert ctx.planning_rollout() is first and ctx.canary_strategy() is ctx.canary_strategy()
    assert first.status is ctx.status
    fresh = copy.copy(ctx)
    fresh._canary_strategy = fresh._planning_rollout = None
    assert fingerprint(fresh.planning_rollout()) == fingerprint(first)
    assert first.spec.strategy.canary is not None and first.spec.strategy.canary.traffic_routing is not None


def _plan_changing_the_observed_spec(snap: p.Snapshot) -> p.Plan:
    result = planner.plan(snap)
    snap.rollout.spec.replicas = (snap.rollout.spec.replicas or 0) + 1
    return result


def _plan_changing_the_planning_view(snap: p.Snapshot) -> p.Plan:
    Reconcile(snap).canary_strategy().max_surge = "77%"
    return planner.plan(snap)


@pytest.mark.parametrize(
    "bad_plan",
    [
        pytest.param(_plan_changing_the_observed_spec, id="observed-spec-changed"),
        pytest.param(_plan_changing_the_planning_view, id="planning-view-changed"),
    ],
)
def test_the_watch_catches_a_planner_that_changes_what_it_shares(
    bad_plan: Callable[[p.Snapshot], p.Plan], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(sys.modules[__name__], "real_plan", bad_plan)
    monkeypatch.setattr(sim, "plan", Watch())
    with pytest.raises(AssertionError, match="changed the"):
        test_canary_steps.test_update_walks_steps_with_weights_and_replicas()
