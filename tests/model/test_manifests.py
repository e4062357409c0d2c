"""Loading manifests: documents, kinds, YAML/JSON errors, pydantic errors in plain words.

Covers `load_yaml_documents`, `load_files`, `parse_resource` and `Finding.__str__`: multi-document
YAML, empty documents, syntax errors as findings (never exceptions), which kinds are parsed,
warned about or passed over, strict typing with messages that name the field and the fix, and
round trips that keep unknown fields.
"""

from __future__ import annotations

import io
import json
from pathlib import Path
from typing import Any

import pytest

from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate
from rollouts.model.manifests import (
    Finding,
    LoadedDocument,
    ManifestError,
    load_files,
    load_yaml_documents,
    parse_resource,
)
from rollouts.model.rollout import Rollout
from rollouts.model.service import Secret, Service

ROLLOUT_YAML = """\
apiVersion: argoproj.io/v1alpha1
kind: Rollout
metadata:
  name: demo
spec:
  replicas: 2
  selector:
    matchLabels: {app: demo}
  template:
    metadata:
      labels: {app: demo}
    spec:
      containers:
        - name: app
          image: rollouts-demo:v1
          command: [python, -m, rollouts.demo.app]
  strategy:
    canary:
      steps:
        - setWeight: 20
        - pause: {duration: 30s}
"""


def _rollout_raw(**spec_overrides: Any) -> dict[str, Any]:
    raw: dict[str, Any] = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": "demo"},
        "spec": {
            "selector": {"matchLabels": {"app": "demo"}},
            "template": {
                "metadata": {"labels": {"app": "demo"}},
                "spec": {"containers": [{"name": "app", "image": "demo:v1", "command": ["run"]}]},
            },
            "strategy": {"canary": {"steps": [{"setWeight": 20}]}},
        },
    }
    raw["spec"].update(spec_overrides)
    return raw


def _only(findings: list[Finding]) -> Finding:
    assert len(findings) == 1, [str(f) for f in findings]
    return findings[0]


# --- documents -----------------------------------------------------------------------------------


def test_multi_document_yaml_skips_empty_documents_and_keeps_indices() -> None:
    text = (
        "---\n"
        + ROLLOUT_YAML
        + "---\n---\n# only a comment\n---\napiVersion: v1\nkind: Service\nmetadata: {name: demo}\n"
    )
    docs, findings = load_yaml_documents(text, "demo.yaml")
    assert findings == []
    assert [(d.index, d.kind, d.name) for d in docs] == [(1, "Rollout", "demo"), (4, "Service", "demo")]
    assert isinstance(docs[0].resource, Rollout)
    assert isinstance(docs[1].resource, Service)
    assert docs[0].source == "demo.yaml"


@pytest.mark.parametrize(
    ("text", "expected_line", "expected_col", "expected_fix"),
    [
        pytest.param(
            "apiVersion: v1\nkind: Service\n  metadata: {}\n",
            3,
            11,
            "check the indentation",
            id="bad-indentation",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Service\nmetadata:\n\tname: x\n",
            4,
            1,
            "indent with spaces, not tabs",
            id="tab",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Service\nmetadata: {name: x\n",
            4,
            1,
            "",
            id="unclosed-flow-mapping",
        ),
        pytest.param(
            'apiVersion: v1\nkind: Service\nmetadata:\n  name: "x\n',
            5,
            1,
            "close the quoted string",
            id="unclosed-quote",
        ),
        pytest.param(
            "apiVersion: v1\nkind: Service\nmetadata: {name: \x07x}\n",
            3,
            18,
            "remove the non-printable character",
            id="control-character",
        ),
        pytest.param(
            "apiVersion: v1\nkind: !!python/object:os.system Service\n",
            2,
            7,
            "remove the tag",
            id="python-tag",
        ),
    ],
)
def test_yaml_syntax_error_is_one_finding_with_line_and_column(
    text: str, expected_line: int, expected_col: int, expected_fix: str
) -> None:
    docs, findings = load_yaml_documents(text, "bad.yaml")
    finding = _only(findings)
    assert docs == []
    assert finding.severity == "error"
    assert finding.source == "bad.yaml"
    assert finding.document == 1
    assert finding.message.startswith(f"YAML syntax error at line {expected_line}, column {expected_col}: ")
    assert expected_fix in finding.message


def test_yaml_syntax_error_in_a_later_document_keeps_the_earlier_ones() -> None:
    text = ROLLOUT_YAML + "---\napiVersion: v1\nkind: Service\nmetadata: [oops\n"
    docs, findings = load_yaml_documents(text, "two.yaml")
    assert [d.kind for d in docs] == ["Rollout"]
    finding = _only(findings)
    assert finding.document == 2
    assert "YAML syntax error at line" in finding.message


def test_duplicate_keys_are_an_error_naming_the_line() -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: a\n  name: b\n"
    docs, findings = load_yaml_documents(text, "dup.yaml")
    finding = _only(findings)
    assert finding.message.startswith("duplicate key 'name' at line 5, column 3")
    assert docs[0].name == "b"


def test_timestamps_stay_strings() -> None:
    raw = _rollout_raw(restartAt="2024-05-01T12:00:00Z")
    text = json.dumps(raw).replace('"2024-05-01T12:00:00Z"', "2024-05-01T12:00:00Z")
    docs, findings = load_yaml_documents(text, "ts.yaml")
    assert findings == []
    resource = docs[0].resource
    assert isinstance(resource, Rollout)
    assert resource.spec.restart_at == "2024-05-01T12:00:00Z"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        pytest.param("- a\n- b\n", "a document must be one object", id="list"),
        pytest.param("just a string\n", "a document must be one object", id="scalar"),
        pytest.param("kind: Rollout\nmetadata: {name: x}\n", "apiVersion: missing", id="no-api-version"),
        pytest.param("apiVersion: v1\nmetadata: {name: x}\n", "kind: missing", id="no-kind"),
        pytest.param("apiVersion: 1\nkind: Rollout\n", "apiVersion: expected a string", id="api-version-not-string"),
    ],
)
def test_document_shape_errors(text: str, expected: str) -> None:
    docs, findings = load_yaml_documents(text, "x.yaml")
    assert expected in str(_only(findings))
    assert all(d.resource is None for d in docs)


# --- kinds ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("raw", "expected_type"),
    [
        pytest.param(_rollout_raw(), Rollout, id="rollout"),
        pytest.param(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AnalysisTemplate",
                "metadata": {"name": "t"},
                "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]},
            },
            AnalysisTemplate,
            id="analysis-template",
        ),
        pytest.param(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "ClusterAnalysisTemplate",
                "metadata": {"name": "t"},
                "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]},
            },
            ClusterAnalysisTemplate,
            id="cluster-analysis-template",
        ),
        pytest.param(
            {
                "apiVersion": "argoproj.io/v1alpha1",
                "kind": "AnalysisRun",
                "metadata": {"name": "r"},
                "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://x"}}}]},
            },
            AnalysisRun,
            id="analysis-run",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}, "spec": {"ports": [{"port": 80}]}},
            Service,
            id="service",
        ),
        pytest.param(
            {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "s"}, "data": {"k": "dg=="}},
            Secret,
            id="secret",
        ),
    ],
)
def test_our_kinds_are_parsed(raw: dict[str, Any], expected_type: type) -> None:
    docs, findings = load_yaml_documents(json.dumps(raw), "x.json")
    assert findings == []
    assert isinstance(docs[0].resource, expected_type)
    assert isinstance(parse_resource(raw), expected_type)


@pytest.mark.parametrize(
    "text",
    [
        pytest.param("apiVersion: networking.k8s.io/v1\nkind: Ingress\nmetadata: {name: i}\n", id="ingress"),
        pytest.param(
            "apiVersion: networking.istio.io/v1beta1\nkind: VirtualService\nmetadata: {name: v}\n",
            id="virtual-service",
        ),
        pytest.param("apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: d}\n", id="deployment"),
        pytest.param("apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c}\n", id="core-configmap"),
    ],
)
def test_other_api_groups_are_passed_over(text: str) -> None:
    docs, findings = load_yaml_documents(text, "x.yaml")
    assert findings == []
    assert len(docs) == 1
    assert docs[0].resource is None


def test_experiment_is_a_warning_not_an_error() -> None:
    text = "apiVersion: argoproj.io/v1alpha1\nkind: Experiment\nmetadata: {name: exp}\nspec: {}\n"
    docs, findings = load_yaml_documents(text, "exp.yaml")
    finding = _only(findings)
    assert finding.severity == "warning"
    assert str(finding) == (
        "exp.yaml:1 Experiment/exp: warning: Experiment is valid Argo Rollouts but not supported by rollouts "
        "yet; it is not checked further and will not run"
    )
    assert docs[0].resource is None


def test_unknown_argoproj_kind_is_an_error() -> None:
    text = "apiVersion: argoproj.io/v1alpha1\nkind: Canary\nmetadata: {name: c}\n"
    _, findings = load_yaml_documents(text, "x.yaml")
    assert _only(findings).message == (
        "unknown kind Canary in argoproj.io/v1alpha1; expected Rollout, AnalysisTemplate, "
        "ClusterAnalysisTemplate, AnalysisRun or Experiment"
    )


def test_unknown_argoproj_version_is_an_error() -> None:
    text = "apiVersion: argoproj.io/v1beta1\nkind: Rollout\nmetadata: {name: c}\n"
    _, findings = load_yaml_documents(text, "x.yaml")
    finding = _only(findings)
    assert finding.path == "apiVersion"
    assert finding.message == "unknown version argoproj.io/v1beta1; Argo Rollouts kinds are argoproj.io/v1alpha1"


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        pytest.param(
            {"apiVersion": "networking.k8s.io/v1", "kind": "Ingress", "metadata": {"name": "i"}},
            "kind: networking.k8s.io/v1 Ingress is not a kind rollouts manages",
            id="other-group",
        ),
        pytest.param(
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "Experiment", "metadata": {"name": "e"}},
            "kind: Experiment is not supported by rollouts yet",
            id="experiment",
        ),
        pytest.param(
            {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rolout", "metadata": {"name": "e"}},
            "(did you mean Rollout?)",
            id="typo-kind",
        ),
    ],
)
def test_parse_resource_refuses_what_it_cannot_return(raw: dict[str, Any], expected: str) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_resource(raw)
    assert expected in str(caught.value)
    assert all(f.severity == "error" for f in caught.value.findings)


def test_list_kind_is_unpacked() -> None:
    items = [_rollout_raw(), {"apiVersion": "v1", "kind": "Service", "metadata": {"name": "s"}}]
    docs, findings = load_yaml_documents(json.dumps({"apiVersion": "v1", "kind": "List", "items": items}), "l.json")
    assert findings == []
    assert [type(d.resource) for d in docs] == [Rollout, Service]
    assert [d.index for d in docs] == [1, 1]


# --- metadata.name -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("metadata", "expected"),
    [
        pytest.param(None, "metadata.name: missing", id="no-metadata"),
        pytest.param({}, "metadata.name: missing (give the object a name", id="no-name"),
        pytest.param({"name": ""}, "metadata.name: missing", id="empty-name"),
        pytest.param({"name": "Bad_Name"}, "metadata.name: 'Bad_Name' is not a valid name", id="invalid-name"),
        pytest.param({"name": 5}, "metadata.name: expected a string, got 5", id="name-not-string"),
    ],
)
def test_metadata_name_is_required(metadata: dict[str, Any] | None, expected: str) -> None:
    raw = _rollout_raw()
    if metadata is None:
        del raw["metadata"]
    else:
        raw["metadata"] = metadata
    with pytest.raises(ManifestError) as caught:
        parse_resource(raw)
    assert expected in str(_only(caught.value.findings))


# --- pydantic errors in plain words ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("spec_overrides", "expected_path", "expected_message"),
    [
        pytest.param(
            {"strategy": {"canary": {"steps": [{"setWeight": "ten"}]}}},
            "spec.strategy.canary.steps[0].setWeight",
            "expected an integer, got 'ten'",
            id="int-got-word",
        ),
        pytest.param(
            {"replicas": "3"},
            "spec.replicas",
            "expected an integer, got the string '3' (remove the quotes)",
            id="int-got-quoted-number",
        ),
        pytest.param(
            {"replicas": 2.5},
            "spec.replicas",
            "expected an integer, got 2.5",
            id="int-got-float",
        ),
        pytest.param(
            {"strategy": {"canary": {"maxSurge": [1]}}},
            "spec.strategy.canary.maxSurge",
            "expected an integer or a string, got a list",
            id="int-or-string-union",
        ),
        pytest.param(
            {"paused": "yes please"},
            "spec.paused",
            "expected true or false, got 'yes please'",
            id="bool",
        ),
        pytest.param(
            {"strategy": {"canary": {"steps": "setWeight: 10"}}},
            "spec.strategy.canary.steps",
            "expected a list, got 'setWeight: 10'",
            id="list",
        ),
        pytest.param(
            {"strategy": {"canary": {"steps": [{"pause": 30}]}}},
            "spec.strategy.canary.steps[0].pause",
            "expected a mapping (key: value), got 30",
            id="mapping",
        ),
        pytest.param(
            {
                "strategy": {
                    "canary": {
                        "steps": [
                            {
                                "analysis": {
                                    "templates": [{"templateName": "t"}],
                                    "args": [{"name": "threshold", "value": 1}],
                                }
                            }
                        ]
                    }
                }
            },
            "spec.strategy.canary.steps[0].analysis.args[0].value",
            'expected a string, got 1 (quote it: "1")',
            id="string-got-int",
        ),
        pytest.param(
            {
                "strategy": {
                    "canary": {
                        "steps": [
                            {
                                "analysis": {
                                    "templates": [{"templateName": "t"}],
                                    "args": [{"name": "h", "valueFrom": {"podTemplateHashValue": "stable"}}],
                                }
                            }
                        ]
                    }
                }
            },
            "spec.strategy.canary.steps[0].analysis.args[0].valueFrom.podTemplateHashValue",
            "expected one of 'Stable', 'Latest', got 'stable'",
            id="literal",
        ),
        pytest.param(
            {"template": {"spec": {"containers": [{"image": "demo:v1"}]}}},
            "spec.template.spec.containers[0].name",
            "missing (add name: ...)",
            id="missing-field",
        ),
    ],
)
def test_validation_errors_name_the_field_and_the_fix(
    spec_overrides: dict[str, Any], expected_path: str, expected_message: str
) -> None:
    with pytest.raises(ManifestError) as caught:
        parse_resource(_rollout_raw(**spec_overrides))
    finding = _only(caught.value.findings)
    assert (finding.path, finding.message) == (expected_path, expected_message)
    assert (finding.kind, finding.name) == ("Rollout", "demo")
    assert "pydantic" not in str(caught.value)
    assert "http" not in finding.message


def test_several_bad_fields_give_one_finding_each() -> None:
    raw = _rollout_raw(replicas="two", paused="maybe")
    docs, findings = load_yaml_documents(json.dumps(raw), "x.json")
    assert [f.path for f in findings] == ["spec.replicas", "spec.paused"]
    assert all(f.document == 1 and f.source == "x.json" for f in findings)
    assert docs[0].resource is None


# --- round trip ---------------------------------------------------------------------------------


def test_unknown_fields_survive_a_round_trip() -> None:
    raw = _rollout_raw()
    raw["spec"]["someFutureField"] = {"nested": [1, 2]}
    raw["spec"]["strategy"]["canary"]["steps"][0]["vendorExtension"] = "kept"
    raw["spec"]["template"]["spec"]["containers"][0]["resources"] = {"limits": {"cpu": "100m"}}
    raw["spec"]["template"]["spec"]["volumes"] = [{"name": "v", "emptyDir": {}}]
    raw["metadata"]["annotations"] = {"a": "b"}
    out = parse_resource(raw).to_json()
    assert out["spec"]["someFutureField"] == {"nested": [1, 2]}
    assert out["spec"]["strategy"]["canary"]["steps"][0]["vendorExtension"] == "kept"
    assert out["spec"]["template"]["spec"]["containers"][0]["resources"] == {"limits": {"cpu": "100m"}}
    assert _without_empty_template_name(out) == raw


def _without_empty_template_name(out: dict[str, Any]) -> dict[str, Any]:
    # ObjectMeta.name defaults to "" (not None), so a pod template's metadata gains `name: ""`.
    meta = out["spec"]["template"].get("metadata", {})
    if meta.get("name") == "":
        del meta["name"]
    return out


def test_example_text_round_trips() -> None:
    docs, findings = load_yaml_documents(ROLLOUT_YAML, "demo.yaml")
    assert findings == []
    resource = docs[0].resource
    assert resource is not None
    assert _without_empty_template_name(resource.to_json()) == docs[0].raw


# --- Finding ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("finding", "expected"),
    [
        pytest.param(
            Finding(
                "error",
                "examples/bad.yaml",
                3,
                "Rollout",
                "q2q-ai",
                "spec.strategy.canary.steps[2].setWeight",
                "140 is not between 0 and 100 (use a weight from 0 to 100)",
            ),
            "examples/bad.yaml:3 Rollout/q2q-ai: error: spec.strategy.canary.steps[2].setWeight: "
            "140 is not between 0 and 100 (use a weight from 0 to 100)",
            id="full",
        ),
        pytest.param(
            Finding("warning", "-", 1, "Rollout", "x", "", "whole object"),
            "-:1 Rollout/x: warning: whole object",
            id="no-path",
        ),
        pytest.param(
            Finding("error", "a.yaml", 2, "", "", "", "YAML syntax error"),
            "a.yaml:2: error: YAML syntax error",
            id="no-object",
        ),
        pytest.param(
            Finding("error", "missing.yaml", 0, "", "", "", "cannot read file"),
            "missing.yaml: error: cannot read file",
            id="no-document",
        ),
        pytest.param(
            Finding("error", "a.yaml", 1, "Rollout", "", "metadata.name", "missing"),
            "a.yaml:1 Rollout: error: metadata.name: missing",
            id="no-name",
        ),
    ],
)
def test_finding_str(finding: Finding, expected: str) -> None:
    assert str(finding) == expected


def test_finding_at_places_it() -> None:
    finding = Finding("error", "-", 0, "Rollout", "x", "spec", "m").at("f.yaml", 4)
    assert (finding.source, finding.document) == ("f.yaml", 4)


# --- files ----------------------------------------------------------------------------------------


def test_load_files_reads_a_directory_sorted(tmp_path: Path) -> None:
    (tmp_path / "b.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: b}\n")
    (tmp_path / "a.yml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: a}\n")
    (tmp_path / "c.json").write_text(json.dumps({"apiVersion": "v1", "kind": "Service", "metadata": {"name": "c"}}))
    (tmp_path / "notes.txt").write_text("not a manifest")
    (tmp_path / "sub").mkdir()
    (tmp_path / "sub" / "d.yaml").write_text("apiVersion: v1\nkind: Service\nmetadata: {name: d}\n")
    docs, findings = load_files([str(tmp_path)])
    assert findings == []
    assert [d.name for d in docs] == ["a", "b", "c"]
    docs, _ = load_files([str(tmp_path)], recursive=True)
    assert [d.name for d in docs] == ["a", "b", "c", "d"]


def test_load_files_reports_a_missing_file() -> None:
    docs, findings = load_files(["/nonexistent/rollout.yaml"])
    assert docs == []
    assert str(_only(findings)) == (
        "/nonexistent/rollout.yaml: error: cannot read file: no such file or directory (check the path)"
    )


def test_load_files_warns_about_an_empty_directory(tmp_path: Path) -> None:
    (tmp_path / "sub").mkdir()
    _, findings = load_files([str(tmp_path)])
    finding = _only(findings)
    assert finding.severity == "warning"
    assert "no .yaml, .yml or .json files in this directory" in finding.message


def test_load_files_reads_stdin(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr("sys.stdin", io.StringIO(ROLLOUT_YAML))
    docs, findings = load_files(["-"])
    assert findings == []
    assert [(d.source, d.index, d.kind) for d in docs] == [("-", 1, "Rollout")]


def test_json_syntax_error_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "bad.json"
    path.write_text('{"apiVersion": "v1",\n "kind": }')
    _, findings = load_files([str(path)])
    assert _only(findings).message.startswith("JSON syntax error at line 2, column 10:")


def test_non_utf8_file_is_a_finding(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"\xff\xfe\x00bad")
    _, findings = load_files([str(path)])
    assert _only(findings).message == "cannot read file: it is not UTF-8 text"


def test_loaded_document_kind_and_name_tolerate_junk() -> None:
    doc = LoadedDocument("x", 1, {"kind": 5, "metadata": "nope"}, None)
    assert (doc.kind, doc.name) == ("", "")
