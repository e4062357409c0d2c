"""`lint_documents`: findings over a set of documents, names from the file and the store, summary.

Covers: load findings come through; references resolved against the documents and
`known_from_store`; cross-object checks (Service selectors, template arguments); an Istio
router lints with a warning only; duplicates; ordering; the one-line summary.
"""

from __future__ import annotations

import pytest

from rollouts.model.lint import LintReport, lint_documents
from rollouts.model.manifests import Finding, load_yaml_documents
from rollouts.model.validation import KnownObjects

ROLLOUT = """\
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata: {name: web}
spec:
  replicas: 3
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - {name: web, image: "web:v1", command: [python, -m, rollouts.demo.app]}
  strategy:
    canary:
      canaryService: web-canary
      stableService: web
      steps:
        - setWeight: 20
        - analysis:
            templates: [{templateName: error-rate}]
            args: [{name: service, value: web-canary}]
"""
SERVICES = """\
apiVersion: v1
kind: Service
metadata: {name: web}
spec: {selector: {app: web}, ports: [{port: 18000}]}
---
apiVersion: v1
kind: Service
metadata: {name: web-canary}
spec: {selector: {app: web}, ports: [{port: 18001}]}
"""
TEMPLATE = """\
apiVersion: argoproj.io/v1alpha1
kind: AnalysisTemplate
metadata: {name: error-rate}
spec:
  args: [{name: service}]
  metrics:
    - name: error-rate
      interval: 10s
      count: 3
      successCondition: result[0] < 0.01
      provider: {prometheus: {address: "http://127.0.0.1:9090", query: up}}
"""


def lint(text: str, *, known: KnownObjects | None = None) -> LintReport:
    docs, findings = load_yaml_documents(text, "f.yaml")
    return lint_documents(docs, findings, known_from_store=known)


def lines(report: LintReport) -> list[str]:
    return [str(f) for f in report.findings]


def test_a_complete_file_lints_clean() -> None:
    report = lint("---\n".join([ROLLOUT, SERVICES, TEMPLATE]))
    assert lines(report) == []
    assert (report.objects, report.errors, report.warnings, report.ok) == (4, 0, 0, True)
    assert report.summary() == "4 objects checked: 0 errors, 0 warnings"


def test_references_missing_from_the_file_are_warnings() -> None:
    report = lint(ROLLOUT)
    assert lines(report) == [
        'f.yaml:1 Rollout/web: warning: spec.strategy.canary.canaryService: service "web-canary" not found: '
        "apply it before the rollout runs",
        'f.yaml:1 Rollout/web: warning: spec.strategy.canary.stableService: service "web" not found: '
        "apply it before the rollout runs",
        "f.yaml:1 Rollout/web: warning: spec.strategy.canary.steps[1].analysis.templates[0].templateName: "
        'analysis template "error-rate" not found: apply it before the rollout runs',
    ]
    assert report.ok
    assert report.summary() == "1 object checked: 0 errors, 3 warnings"


def test_names_from_the_store_count_as_known() -> None:
    known = KnownObjects(services={"web", "web-canary"}, templates={"error-rate"})
    report = lint(ROLLOUT, known=known)
    assert lines(report) == []


def test_cross_object_checks_use_the_objects_in_the_file() -> None:
    rollout = ROLLOUT.replace("args: [{name: service, value: web-canary}]", "args: []")
    services = SERVICES.replace(
        "{selector: {app: web}, ports: [{port: 18001}]}", "{selector: {app: api}, ports: [{port: 18001}]}"
    )
    report = lint("---\n".join([rollout, services, TEMPLATE]))
    assert lines(report) == [
        'f.yaml:1 Rollout/web: error: spec.strategy.canary.canaryService: service "web-canary" selects app=api, '
        "which the pod template labels do not carry, so it would reach no pod of this rollout (fix the Service "
        "selector or the template labels)",
        "f.yaml:1 Rollout/web: error: spec.strategy.canary.steps[1].analysis.args: args.service was not resolved: "
        'analysis template "error-rate" declares it without a value (add - name: service, value: ... under '
        "spec.strategy.canary.steps[1].analysis.args)",
    ]
    assert report.summary() == "4 objects checked: 2 errors, 0 warnings"
    assert not report.ok


def test_istio_router_is_a_warning_only() -> None:
    rollout = ROLLOUT.replace(
        "      stableService: web\n",
        "      stableService: web\n      trafficRouting:\n        istio:\n          virtualService: {name: web-vs}\n",
    )
    virtual_service = "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: web-vs}\n"
    report = lint("---\n".join([rollout, SERVICES, TEMPLATE, virtual_service]))
    assert lines(report) == [
        "f.yaml:1 Rollout/web: warning: spec.strategy.canary.trafficRouting.istio: the istio traffic router is "
        "not supported by rollouts yet; the controller will mark this rollout InvalidSpec",
    ]
    assert report.ok
    assert report.summary() == "5 objects checked: 0 errors, 1 warning"


def test_load_findings_come_first_and_count() -> None:
    report = lint("---\n".join([TEMPLATE, "apiVersion: argoproj.io/v1alpha1\nkind: Canary\nmetadata: {name: c}\n"]))
    assert [f.severity for f in report.findings] == ["error"]
    assert report.findings[0].document == 2
    assert report.summary() == "2 objects checked: 1 error, 0 warnings"


def test_findings_are_ordered_by_document() -> None:
    bad_template = TEMPLATE.replace("name: error-rate}", "name: other}").replace("count: 3", "count: -1")
    bad_rollout = ROLLOUT.replace("setWeight: 20", "setWeight: 120")
    report = lint("---\n".join([bad_template, bad_rollout]), known=KnownObjects({"web", "web-canary"}, {"error-rate"}))
    assert [(f.document, f.kind, f.path) for f in report.findings] == [
        (1, "AnalysisTemplate", "spec.metrics[0].count"),
        (2, "Rollout", "spec.strategy.canary.steps[0].setWeight"),
    ]


def test_duplicate_objects_with_different_content_are_warned_about() -> None:
    changed = SERVICES.replace("18000", "18005")
    report = lint("---\n".join([SERVICES, changed]))
    assert lines(report) == [
        "f.yaml:3 Service/web: warning: also defined in f.yaml:1 with different content; the last one applied wins",
    ]
    assert lint("---\n".join([SERVICES, SERVICES])).findings == []


def test_service_without_a_port_is_a_warning() -> None:
    report = lint("apiVersion: v1\nkind: Service\nmetadata: {name: s}\nspec: {selector: {app: s}}\n")
    assert lines(report) == [
        "f.yaml:1 Service/s: warning: spec.ports: no port: the embedded platform serves a Service on its first "
        "port (add - port: 8080)",
    ]


def test_analysis_runs_and_secrets_are_checked() -> None:
    run = TEMPLATE.replace("kind: AnalysisTemplate", "kind: AnalysisRun")
    secret = "apiVersion: v1\nkind: Secret\nmetadata: {name: s}\nstringData: {token: x}\n"
    report = lint("---\n".join([run, secret]))
    assert lines(report) == [
        "f.yaml:1 AnalysisRun/error-rate: error: spec.args[0]: args.service was not resolved (give it a value)"
    ]


@pytest.mark.parametrize(
    ("objects", "errors", "warnings", "expected"),
    [
        pytest.param(0, 0, 0, "0 objects checked: 0 errors, 0 warnings", id="none"),
        pytest.param(1, 1, 1, "1 object checked: 1 error, 1 warning", id="singular"),
        pytest.param(3, 2, 0, "3 objects checked: 2 errors, 0 warnings", id="plural"),
    ],
)
def test_summary(objects: int, errors: int, warnings: int, expected: str) -> None:
    findings = [Finding("error", "-", 1, "", "", "", "e")] * errors + [
        Finding("warning", "-", 1, "", "", "", "w")
    ] * warnings
    assert LintReport(findings, objects, errors, warnings).summary() == expected


def test_a_file_with_broken_yaml_keeps_its_place_among_the_others() -> None:
    docs_a, found_a = load_yaml_documents(TEMPLATE.replace("count: 3", "count: -1"), "a.yaml")
    docs_b, found_b = load_yaml_documents("kind: [\n", "b.yaml")
    docs_c, found_c = load_yaml_documents(TEMPLATE.replace("count: 3", "count: -2"), "c.yaml")
    report = lint_documents(docs_a + docs_b + docs_c, found_a + found_b + found_c)
    assert list(dict.fromkeys(f.source for f in report.findings)) == ["a.yaml", "b.yaml", "c.yaml"]
