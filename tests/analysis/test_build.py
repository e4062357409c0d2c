"""Building an AnalysisRun from templates (b.2).

Covers: one template with caller args, metadata and owner; merging several templates
(namespaced before cluster), duplicate metrics, conflicting and compatible args, nested
template refs (diamonds merged once, cycles and missing refs refused), unresolved args,
undeclared caller args dropped, secretKeyRef kept, dryRun / measurementRetention merging.
"""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.analysis.build import build_analysis_run
from rollouts.analysis.errors import AnalysisBuildError
from rollouts.model.analysis import AnalysisTemplate, Argument, ClusterAnalysisTemplate
from rollouts.model.meta import OwnerReference
from rollouts.model.rollout import AnalysisTemplateRef, DryRun, MeasurementRetention

Template = AnalysisTemplate | ClusterAnalysisTemplate


def template(
    name: str,
    metrics: tuple[str, ...] = (),
    *,
    args: list[dict[str, Any]] | None = None,
    refs: list[tuple[str, bool]] | None = None,
    dry_run: list[str] | None = None,
    retention: list[tuple[str, int]] | None = None,
    cluster: bool = False,
) -> Template:
    spec: dict[str, Any] = {
        "metrics": [
            {"name": m, "provider": {"web": {"url": "http://{{args.host}}/" + m if args else "http://x/" + m}}}
            for m in metrics
        ]
    }
    if args is not None:
        spec["args"] = args
    if refs is not None:
        spec["templates"] = [{"templateName": n, "clusterScope": c} for n, c in refs]
    if dry_run is not None:
        spec["dryRun"] = [{"metricName": n} for n in dry_run]
    if retention is not None:
        spec["measurementRetention"] = [{"metricName": n, "limit": limit} for n, limit in retention]
    body = {"metadata": {"name": name}, "spec": spec}
    return (ClusterAnalysisTemplate if cluster else AnalysisTemplate).model_validate(body)


class Store:
    """A lookup over a fixed set of templates, recording what was asked."""

    def __init__(self, *templates: Template) -> None:
        self.templates = {(isinstance(t, ClusterAnalysisTemplate), t.metadata.name): t for t in templates}
        self.asked: list[str] = []

    def __call__(self, ref: AnalysisTemplateRef) -> Template | None:
        self.asked.append(ref.template_name)
        return self.templates.get((bool(ref.cluster_scope), ref.template_name))


def build(templates: list[Template], args: list[Argument] | None = None, store: Store | None = None, **kw: Any) -> Any:
    return build_analysis_run(
        name="guestbook-6c5d-2-1",
        namespace="shop",
        templates=templates,
        args=args or [],
        lookup=store or Store(),
        **kw,
    )


def test_single_template_with_caller_args() -> None:
    owner = OwnerReference(api_version="argoproj.io/v1alpha1", kind="Rollout", name="guestbook", uid="u1")
    tpl = template("rate", ("success-rate",), args=[{"name": "host"}, {"name": "port", "value": "80"}])
    run = build(
        [tpl],
        [Argument(name="host", value="canary"), Argument(name="port", value="8080")],
        labels={"rollout-type": "Step"},
        annotations={"rollout.argoproj.io/revision": "2"},
        owner=owner,
    )
    assert run.to_json() == {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {
            "name": "guestbook-6c5d-2-1",
            "namespace": "shop",
            "labels": {"rollout-type": "Step"},
            "annotations": {"rollout.argoproj.io/revision": "2"},
            "ownerReferences": [
                {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": "guestbook", "uid": "u1"}
            ],
        },
        "spec": {
            "metrics": [{"name": "success-rate", "provider": {"web": {"url": "http://{{args.host}}/success-rate"}}}],
            "args": [{"name": "host", "value": "canary"}, {"name": "port", "value": "8080"}],
        },
    }
    assert run.status is None
    assert tpl.spec.args is not None and tpl.spec.args[0].value is None  # template untouched


def test_metrics_concatenated_namespaced_before_cluster() -> None:
    run = build(
        [
            template("c1", ("c-metric",), cluster=True),
            template("a", ("a1", "a2")),
            template("b", ("b1",)),
        ]
    )
    assert [m.name for m in run.spec.metrics] == ["a1", "a2", "b1", "c-metric"]
    assert run.spec.args is None


def test_duplicate_metric_names_both_templates() -> None:
    with pytest.raises(AnalysisBuildError) as info:
        build([template("a", ("latency",)), template("shared", ("latency",), cluster=True)])
    assert str(info.value) == (
        'two metrics have the same name "latency": defined in both AnalysisTemplate "a" and '
        'ClusterAnalysisTemplate "shared"; rename one of them'
    )


@pytest.mark.parametrize(
    ("first", "second", "expected"),
    [
        pytest.param({"name": "host", "value": "a"}, {"name": "host", "value": "a"}, "a", id="same-value"),
        pytest.param({"name": "host"}, {"name": "host", "value": "b"}, "b", id="later-fills-missing"),
        pytest.param({"name": "host", "value": "a"}, {"name": "host"}, "a", id="missing-does-not-clear"),
    ],
)
def test_args_merged_across_templates(first: dict[str, Any], second: dict[str, Any], expected: str) -> None:
    run = build([template("a", ("m1",), args=[first]), template("b", ("m2",), args=[second])])
    assert run.spec.args == [Argument(name="host", value=expected)]


def test_conflicting_args() -> None:
    with pytest.raises(AnalysisBuildError) as info:
        build(
            [
                template("a", ("m1",), args=[{"name": "host", "value": "a"}]),
                template("b", ("m2",), args=[{"name": "host", "value": "b"}]),
            ]
        )
    assert str(info.value).startswith(
        "Argument `host` specified multiple times with different values: "
        "'a' (AnalysisTemplate \"a\"), 'b' (AnalysisTemplate \"b\")"
    )


def test_caller_value_overrides_template_value() -> None:
    run = build([template("a", ("m",), args=[{"name": "host", "value": "stable"}])], [Argument(name="host", value="c")])
    assert run.spec.args == [Argument(name="host", value="c")]


def test_undeclared_caller_args_dropped() -> None:
    run = build(
        [template("a", ("m",), args=[{"name": "host"}])],
        [Argument(name="host", value="c"), Argument(name="extra", value="x")],
    )
    assert [a.name for a in run.spec.args or []] == ["host"]


def test_unresolved_arg() -> None:
    with pytest.raises(AnalysisBuildError) as info:
        build([template("rate", ("m",), args=[{"name": "host"}])], [Argument(name="other", value="x")])
    message = str(info.value)
    assert message.startswith("args.host was not resolved")
    assert 'AnalysisTemplate "rate"' in message
    assert "pass it in the rollout's analysis args" in message


def test_secret_key_ref_kept_in_run() -> None:
    secret = {"name": "token", "valueFrom": {"secretKeyRef": {"name": "creds", "key": "token"}}}
    run = build([template("a", ("m",), args=[secret])])
    assert [a.to_json() for a in run.spec.args or []] == [secret]


def test_nested_templates_depth_first() -> None:
    store = Store(
        template("child", ("c1",), refs=[("grandchild", True)]),
        template("grandchild", ("g1",), cluster=True),
    )
    run = build([template("parent", ("p1",), refs=[("child", False)])], store=store)
    assert [m.name for m in run.spec.metrics] == ["p1", "c1", "g1"]
    assert store.asked == ["child", "grandchild"]


def test_nested_diamond_merged_once() -> None:
    store = Store(
        template("left", ("l",), refs=[("common", False)]),
        template("right", ("r",), refs=[("common", False)]),
        template("common", ("shared",), args=[{"name": "x", "value": "1"}]),
    )
    run = build([template("top", (), refs=[("left", False), ("right", False)])], store=store)
    assert [m.name for m in run.spec.metrics] == ["l", "shared", "r"]
    assert run.spec.args == [Argument(name="x", value="1")]


def test_same_template_twice_at_top_level_merged_once() -> None:
    tpl = template("a", ("m",))
    run = build([tpl, tpl])
    assert [m.name for m in run.spec.metrics] == ["m"]


@pytest.mark.parametrize(
    ("top", "others", "chain"),
    [
        pytest.param(
            template("a", ("m",), refs=[("a", False)]),
            [template("a", ("m",), refs=[("a", False)])],
            'AnalysisTemplate "a" -> AnalysisTemplate "a"',
            id="self",
        ),
        pytest.param(
            template("a", ("m1",), refs=[("b", True)]),
            [
                template("b", ("m2",), refs=[("a", False)], cluster=True),
                template("a", ("m1",), refs=[("b", True)]),
            ],
            'AnalysisTemplate "a" -> ClusterAnalysisTemplate "b" -> AnalysisTemplate "a"',
            id="two-step",
        ),
    ],
)
def test_cycle(top: Template, others: list[Template], chain: str) -> None:
    with pytest.raises(AnalysisBuildError) as info:
        build([top], store=Store(*others))
    assert str(info.value) == (
        f"analysis templates reference each other in a cycle: {chain}: remove one of the spec.templates refs"
    )


def test_missing_nested_template() -> None:
    with pytest.raises(AnalysisBuildError) as info:
        build([template("a", ("m",), refs=[("gone", True)])])
    assert str(info.value).startswith(
        'ClusterAnalysisTemplate "gone" not found (referenced by AnalysisTemplate "a" in spec.templates)'
    )


def test_cluster_template_only() -> None:
    run = build([template("global", ("error-rate",), cluster=True)])
    assert [m.name for m in run.spec.metrics] == ["error-rate"]


def test_dry_run_and_retention_caller_first() -> None:
    run = build(
        [template("a", ("m1", "m2"), dry_run=["m1"], retention=[("m2", 20)])],
        dry_run=[DryRun(metric_name="m2")],
        measurement_retention=[MeasurementRetention(metric_name="m1", limit=3)],
    )
    assert [r.metric_name for r in run.spec.dry_run or []] == ["m2", "m1"]
    assert [(r.metric_name, r.limit) for r in run.spec.measurement_retention or []] == [("m1", 3), ("m2", 20)]


@pytest.mark.parametrize(
    ("templates", "kw", "message"),
    [
        pytest.param(
            [template("a", ("m",), dry_run=[".*"])],
            {"dry_run": [DryRun(metric_name=".*")]},
            "two Dry-Run metric rules have the same name '.*'",
            id="dry-run-caller-and-template",
        ),
        pytest.param(
            [template("a", ("m",), retention=[("m", 1)]), template("b", ("n",), retention=[("m", 2)])],
            {},
            "two Measurement Retention metric rules have the same name 'm'",
            id="retention-two-templates",
        ),
    ],
)
def test_duplicate_rules(templates: list[Template], kw: dict[str, Any], message: str) -> None:
    with pytest.raises(AnalysisBuildError) as info:
        build(templates, **kw)
    assert str(info.value).startswith(message)
