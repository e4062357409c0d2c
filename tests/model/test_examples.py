"""The manifests in `examples/`: the brief's two rollouts lint clean; each invalid one gives its finding.

Also pins what the examples promise the rest of the product (names, ports, strategy
settings), so a change to them is a deliberate one.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from rollouts.model.analysis import AnalysisTemplate
from rollouts.model.lint import lint_documents
from rollouts.model.manifests import load_files
from rollouts.model.rollout import Rollout
from rollouts.model.service import Service

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"


@pytest.mark.parametrize(
    "paths",
    [
        pytest.param(["api-gateway"], id="api-gateway"),
        pytest.param(["q2q-ai"], id="q2q-ai"),
        pytest.param(["api-gateway", "q2q-ai"], id="both-together"),
    ],
)
def test_examples_lint_clean(paths: list[str]) -> None:
    docs, findings = load_files([str(EXAMPLES / p) for p in paths])
    report = lint_documents(docs, findings)
    assert [str(f) for f in report.findings] == []
    assert report.objects == len(docs) > 0


def _resources(directory: str) -> dict[tuple[str, str], object]:
    docs, findings = load_files([str(EXAMPLES / directory)])
    assert findings == []
    return {(d.kind, d.name): d.resource for d in docs}


def test_api_gateway_example_is_the_briefs_blue_green() -> None:
    objects = _resources("api-gateway")
    rollout = objects[("Rollout", "teei-api-gateway")]
    assert isinstance(rollout, Rollout)
    assert rollout.spec.replicas == 2
    container = rollout.spec.template.spec.containers[0] if rollout.spec.template else None
    assert container is not None
    assert (container.name, container.image) == ("api-gateway", "ghcr.io/henrigkroine/teei-api-gateway:v1.2.2")
    assert container.command == ["python", "-m", "rollouts.demo.app"]
    bg = rollout.spec.strategy.blue_green
    assert bg is not None
    assert (bg.active_service, bg.preview_service) == ("teei-api-gateway", "teei-api-gateway-preview")
    assert (bg.auto_promotion_enabled, bg.scale_down_delay_seconds, bg.scale_down_delay_revision_limit) == (
        False,
        300,
        2,
    )
    assert bg.pre_promotion_analysis is not None
    assert [t.template_name for t in bg.pre_promotion_analysis.templates or []] == [
        "api-gateway-smoke-test",
        "success-rate-analysis",
    ]
    assert {a.name: a.value for a in bg.pre_promotion_analysis.args or []} == {
        "service-name": "teei-api-gateway-preview",
        "error-threshold": "1",
    }
    ports = {name: svc.port() for (kind, name), svc in objects.items() if isinstance(svc, Service)}
    assert ports == {"teei-api-gateway": 18080, "teei-api-gateway-preview": 18081}
    smoke = objects[("AnalysisTemplate", "api-gateway-smoke-test")]
    assert isinstance(smoke, AnalysisTemplate)
    assert "web" in (smoke.spec.metrics or [])[0].provider


def test_q2q_example_is_the_briefs_canary() -> None:
    objects = _resources("q2q-ai")
    rollout = objects[("Rollout", "teei-q2q-ai")]
    assert isinstance(rollout, Rollout)
    canary = rollout.spec.strategy.canary
    assert canary is not None and rollout.spec.replicas == 4
    assert (canary.canary_service, canary.stable_service) == ("teei-q2q-ai-canary", "teei-q2q-ai")
    shape = []
    for step in canary.steps or []:
        if step.set_weight is not None:
            shape.append(f"w{step.set_weight}")
        elif step.pause is not None:
            shape.append(f"p{step.pause.duration}")
        elif step.analysis is not None:
            shape.append("+".join(t.template_name for t in step.analysis.templates or []))
    assert shape == [
        "w10",
        "p5m",
        "success-rate-analysis+latency-analysis+q2q-ai-quality-analysis",
        "w25",
        "p5m",
        "success-rate-analysis",
        "w50",
        "p10m",
        "success-rate-analysis",
        "w100",
    ]
    for name in ("success-rate-analysis", "latency-analysis", "q2q-ai-quality-analysis"):
        template = objects[("AnalysisTemplate", name)]
        assert isinstance(template, AnalysisTemplate)
        assert (template.spec.metrics or [])[0].provider["prometheus"]["address"] == "http://127.0.0.1:9090"


def test_shared_template_is_identical_in_both_examples() -> None:
    gateway = _resources("api-gateway")[("AnalysisTemplate", "success-rate-analysis")]
    q2q = _resources("q2q-ai")[("AnalysisTemplate", "success-rate-analysis")]
    assert isinstance(gateway, AnalysisTemplate) and isinstance(q2q, AnalysisTemplate)
    assert gateway.to_json() == q2q.to_json()


@pytest.mark.parametrize(
    ("file", "expected"),
    [
        pytest.param(
            "set-weight-140.yaml",
            "examples/invalid/set-weight-140.yaml:1 Rollout/q2q-ai: error: spec.strategy.canary.steps[2].setWeight: "
            "140 is not between 0 and 100 (use a weight from 0 to 100)",
            id="set-weight-140",
        ),
        pytest.param(
            "two-kinds-in-step.yaml",
            "examples/invalid/two-kinds-in-step.yaml:1 Rollout/two-kinds: error: spec.strategy.canary.steps[1]: "
            "sets both setWeight and pause; a step must set exactly one",
            id="two-kinds-in-step",
        ),
        pytest.param(
            "both-strategies.yaml",
            "examples/invalid/both-strategies.yaml:1 Rollout/both-strategies: error: spec.strategy: sets both "
            "canary and blueGreen; a rollout uses exactly one strategy (remove one of them)",
            id="both-strategies",
        ),
        pytest.param(
            "selector-mismatch.yaml",
            "examples/invalid/selector-mismatch.yaml:1 Rollout/selector-mismatch: error: spec.selector: does not "
            "match the template labels app=api-gateway; make spec.template.metadata.labels carry every selector "
            "label (app=api)",
            id="selector-mismatch",
        ),
        pytest.param(
            "bad-duration.yaml",
            "examples/invalid/bad-duration.yaml:1 Rollout/bad-duration: error: "
            "spec.strategy.canary.steps[1].pause.duration: invalid duration 'five minutes': expected a number and "
            "a unit (ns, us, ms, s, m, h), e.g. '30s'",
            id="bad-duration",
        ),
        pytest.param(
            "syntax-error.yaml",
            "examples/invalid/syntax-error.yaml:1: error: YAML syntax error at line 8, column 13: mapping values "
            "are not allowed here; check the indentation of this line, and quote values that contain ': '",
            id="syntax-error",
        ),
        pytest.param(
            "unknown-kind.yaml",
            "examples/invalid/unknown-kind.yaml:1 Rolout/typo: error: kind: unknown kind Rolout in "
            "argoproj.io/v1alpha1; expected Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun or "
            "Experiment (did you mean Rollout?)",
            id="unknown-kind",
        ),
    ],
)
def test_invalid_examples_give_their_finding(file: str, expected: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(EXAMPLES.parent)
    docs, findings = load_files([f"examples/invalid/{file}"])
    report = lint_documents(docs, findings)
    assert [str(f) for f in report.findings] == [expected]
    assert report.errors == 1


def test_every_invalid_example_is_covered() -> None:
    files = sorted(p.name for p in (EXAMPLES / "invalid").glob("*.yaml"))
    assert files == [
        "bad-duration.yaml",
        "both-strategies.yaml",
        "selector-mismatch.yaml",
        "set-weight-140.yaml",
        "syntax-error.yaml",
        "two-kinds-in-step.yaml",
        "unknown-kind.yaml",
    ]
