"""The argoproj.io CRDs: generated from the models, committed, structural, and faithful to Argo.

Covers:
- deploy/kubernetes/crds/ is exactly what `rollouts.model.crds` generates now (else: regenerate);
- every schema is structural as apiextensions.k8s.io/v1 requires (a type on every node, or
  int-or-string / preserve-unknown-fields; no `$ref`, no null, no junctors, no defaults);
- names, short names, scope, subresources and printer columns are Argo's, and every path
  they name exists in the schema with the right type;
- every argoproj.io manifest in examples/ (and its round trip through the model) validates
  against the schema, and values of the wrong type do not;
- the converter refuses what a structural schema cannot express.
"""

from __future__ import annotations

import copy
import functools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import jsonschema  # type: ignore[import-untyped]
import pytest
import yaml

from rollouts.model import crds
from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate
from rollouts.model.base import Model
from rollouts.model.rollout import Rollout

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
CRD_DIR = ROOT / "deploy" / "kubernetes" / "crds"
EXAMPLES = ROOT / "examples"
MODELS: dict[str, type[Model]] = {
    "Rollout": Rollout,
    "AnalysisTemplate": AnalysisTemplate,
    "ClusterAnalysisTemplate": ClusterAnalysisTemplate,
    "AnalysisRun": AnalysisRun,
}


@functools.cache
def _crds() -> dict[str, Obj]:
    """Generated once per session (tests only read it)."""
    return {crd["spec"]["names"]["kind"]: crd for crd in crds.generate_crds()}


def _schema(kind: str) -> Obj:
    schema: Obj = _crds()[kind]["spec"]["versions"][0]["schema"]["openAPIV3Schema"]
    return schema


# --- committed files -------------------------------------------------------------------------


def test_committed_crds_match_the_models() -> None:
    expected = crds.render_files()
    actual = {path.name: path.read_text(encoding="utf-8") for path in CRD_DIR.glob("*") if path.is_file()}
    stale = sorted(name for name in expected if actual.get(name) != expected[name])
    extra = sorted(set(actual) - set(expected))
    if stale or extra:
        pytest.fail(
            f"deploy/kubernetes/crds is out of date (differs: {stale}, not generated: {extra}): "
            f"run `{crds.WRITE_COMMAND}`"
        )


def test_module_prints_the_crds(capsys: pytest.CaptureFixture[str]) -> None:
    assert crds.main([]) == 0
    printed = [doc for doc in yaml.safe_load_all(capsys.readouterr().out) if doc]
    assert printed == crds.generate_crds()


def test_module_writes_the_crd_directory(tmp_path: Path) -> None:
    assert crds.main(["--write", str(tmp_path / "crds")]) == 0
    written = {path.name: path.read_text(encoding="utf-8") for path in (tmp_path / "crds").iterdir()}
    assert written == crds.render_files()
    kustomization = yaml.safe_load(written["kustomization.yaml"])
    assert sorted(kustomization["resources"]) == sorted(set(written) - {"kustomization.yaml"})


# --- structural schema -----------------------------------------------------------------------


def _nodes(node: Obj, path: str) -> Iterator[tuple[str, Obj]]:
    yield path, node
    for name, sub in node.get("properties", {}).items():
        yield from _nodes(sub, f"{path}.{name}")
    if isinstance(node.get("items"), dict):
        yield from _nodes(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), dict):
        yield from _nodes(node["additionalProperties"], f"{path}.*")


def _structural_problems(schema: Obj) -> list[str]:
    problems = []
    for path, node in _nodes(schema, ""):
        where = path or "<root>"
        if "$ref" in node:
            problems.append(f"{where}: $ref")
        for junctor in ("anyOf", "oneOf", "allOf", "not"):
            if junctor in node:
                problems.append(f"{where}: {junctor} (null members: {_NULL_TYPE in node[junctor]})")
        if node.get("type") == "null":
            problems.append(f"{where}: type null")
        int_or_string = node.get(crds.INT_OR_STRING) is True
        preserve = node.get(crds.PRESERVE_UNKNOWN) is True
        if not (isinstance(node.get("type"), str) or int_or_string or preserve):
            problems.append(f"{where}: no type")
        if int_or_string and "type" in node:
            problems.append(f"{where}: int-or-string with a type")
        if "properties" in node and "additionalProperties" in node:
            problems.append(f"{where}: properties and additionalProperties")
        for noise in ("title", "default", "const", "description", "$defs"):
            if noise in node:
                problems.append(f"{where}: {noise}")
        missing = set(node.get("required", [])) - set(node.get("properties", {}))
        if missing:
            problems.append(f"{where}: required but not a property: {sorted(missing)}")
    return problems


_NULL_TYPE = {"type": "null"}


@pytest.mark.parametrize("kind", list(MODELS))
def test_schema_is_structural(kind: str) -> None:
    schema = _schema(kind)
    assert _structural_problems(schema) == []
    # At the root Kubernetes allows `metadata` only as a plain object (name/generateName aside).
    assert schema["type"] == "object"
    assert schema["properties"]["metadata"] == {"type": "object"}
    assert schema["properties"]["apiVersion"] == schema["properties"]["kind"] == {"type": "string"}
    assert crds.PRESERVE_UNKNOWN not in schema
    assert schema["required"] == ["spec"]


def test_structural_check_catches_what_kubernetes_refuses() -> None:
    bad = {
        "type": "object",
        "properties": {
            "a": {"$ref": "#/$defs/A"},
            "b": {"anyOf": [{"type": "string"}, {"type": "null"}]},
            "c": {"properties": {}},
            "d": {"type": "integer", crds.INT_OR_STRING: True, "default": 1},
        },
    }
    problems = _structural_problems(bad)
    assert ".a: $ref" in problems
    assert ".b: anyOf (null members: True)" in problems
    assert ".c: no type" in problems
    assert ".d: int-or-string with a type" in problems
    assert ".d: default" in problems


@pytest.mark.parametrize(
    ("kind", "path", "expected"),
    [
        pytest.param("Rollout", "spec.strategy.canary.maxSurge", {crds.INT_OR_STRING: True}, id="max-surge"),
        pytest.param(
            "Rollout", "spec.strategy.canary.steps[].pause.duration", {crds.INT_OR_STRING: True}, id="pause-duration"
        ),
        pytest.param("AnalysisRun", "spec.metrics[].failureLimit", {crds.INT_OR_STRING: True}, id="failure-limit"),
        pytest.param(
            "AnalysisTemplate",
            "spec.metrics[].provider",
            {"type": "object", crds.PRESERVE_UNKNOWN: True},
            id="free-provider",
        ),
        pytest.param(
            "Rollout",
            "spec.strategy.canary.trafficRouting.istio",
            {"type": "object", crds.PRESERVE_UNKNOWN: True},
            id="free-istio",
        ),
        pytest.param(
            "Rollout",
            "spec.template.metadata.labels",
            {"type": "object", "additionalProperties": {"type": "string"}},
            id="string-map",
        ),
        pytest.param(
            "Rollout",
            "spec.strategy.canary.steps[].analysis.args[].valueFrom.podTemplateHashValue",
            {"type": "string", "enum": ["Stable", "Latest"]},
            id="enum",
        ),
        pytest.param("Rollout", "status.HPAReplicas", {"type": "integer"}, id="alias-hpa-replicas"),
        pytest.param("Rollout", "status.stableRS", {"type": "string"}, id="alias-stable-rs"),
        pytest.param("Rollout", "status.duration.totalManualPauseDurationSeconds", {"type": "number"}, id="float"),
    ],
)
def test_conversion_rules(kind: str, path: str, expected: Obj) -> None:
    assert _at(_schema(kind), path) == expected


def test_modelled_objects_keep_unknown_fields() -> None:
    """extra="allow" models keep Argo fields we do not model, as the models themselves do."""
    for kind in MODELS:
        for path, node in _nodes(_schema(kind), kind):
            if "properties" in node and path != kind:
                assert node.get(crds.PRESERVE_UNKNOWN) is True, path


def _at(schema: Obj, path: str) -> Obj:
    node = schema
    for part in path.split("."):
        name, _, rest = part.partition("[]")
        node = node["properties"][name]
        if part.endswith("[]"):
            assert node["type"] == "array"
            node = node["items"]
        assert not rest
    return node


# --- CRD facts -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "plural", "short", "scope"),
    [
        pytest.param("Rollout", "rollouts", "ro", "Namespaced", id="rollout"),
        pytest.param("AnalysisTemplate", "analysistemplates", "at", "Namespaced", id="analysis-template"),
        pytest.param("ClusterAnalysisTemplate", "clusteranalysistemplates", "cat", "Cluster", id="cluster-template"),
        pytest.param("AnalysisRun", "analysisruns", "ar", "Namespaced", id="analysis-run"),
    ],
)
def test_names_and_scope(kind: str, plural: str, short: str, scope: str) -> None:
    crd = _crds()[kind]
    assert crd["metadata"]["name"] == f"{plural}.argoproj.io"
    assert crd["spec"]["group"] == "argoproj.io"
    assert crd["spec"]["names"] == {
        "kind": kind,
        "listKind": f"{kind}List",
        "plural": plural,
        "singular": kind.lower(),
        "shortNames": [short],
    }
    assert crd["spec"]["scope"] == scope
    [version] = crd["spec"]["versions"]
    assert (version["name"], version["served"], version["storage"]) == ("v1alpha1", True, True)


def test_rollout_has_status_and_scale_subresources() -> None:
    version = _crds()["Rollout"]["spec"]["versions"][0]
    scale = version["subresources"]["scale"]
    assert version["subresources"]["status"] == {}
    assert scale == {
        "specReplicasPath": ".spec.replicas",
        "statusReplicasPath": ".status.HPAReplicas",
        "labelSelectorPath": ".status.selector",
    }
    schema = _schema("Rollout")
    assert _at(schema, scale["specReplicasPath"][1:])["type"] == "integer"
    assert _at(schema, scale["statusReplicasPath"][1:])["type"] == "integer"
    assert _at(schema, scale["labelSelectorPath"][1:])["type"] == "string"


@pytest.mark.parametrize(
    ("kind", "status", "columns"),
    [
        pytest.param("Rollout", True, ["Desired", "Current", "Up-to-date", "Available", "Age"], id="rollout"),
        pytest.param("AnalysisTemplate", False, ["Age"], id="analysis-template"),
        pytest.param("ClusterAnalysisTemplate", False, ["Age"], id="cluster-template"),
        pytest.param("AnalysisRun", True, ["Status", "Age"], id="analysis-run"),
    ],
)
def test_subresources_and_printer_columns(kind: str, status: bool, columns: list[str]) -> None:
    version = _crds()[kind]["spec"]["versions"][0]
    assert ("status" in version.get("subresources", {})) is status
    assert [c["name"] for c in version["additionalPrinterColumns"]] == columns
    schema = _schema(kind)
    for column in version["additionalPrinterColumns"]:
        if column["jsonPath"] == ".metadata.creationTimestamp":
            assert column["type"] == "date"
            continue
        assert _at(schema, column["jsonPath"][1:])["type"] == column["type"], column


# --- examples validate -----------------------------------------------------------------------


def _json_schema(node: Obj) -> Obj:
    """The CRD schema as plain JSON Schema, as strict as the API server's strict field validation."""
    out: Obj = {}
    if node.get(crds.INT_OR_STRING):
        out["type"] = ["integer", "string"]
    elif "type" in node:
        out["type"] = [node["type"], "null"] if node.get("nullable") else node["type"]
    for key in ("enum", "required", "minimum", "maximum", "pattern", "minItems", "maxItems"):
        if key in node:
            out[key] = node[key]
    if "properties" in node:
        out["properties"] = {name: _json_schema(sub) for name, sub in node["properties"].items()}
        if not node.get(crds.PRESERVE_UNKNOWN):
            out["additionalProperties"] = False
    if isinstance(node.get("additionalProperties"), dict):
        out["additionalProperties"] = _json_schema(node["additionalProperties"])
    if "items" in node:
        out["items"] = _json_schema(node["items"])
    return out


@functools.cache
def _validator(kind: str) -> Any:
    return jsonschema.Draft202012Validator(_json_schema(_schema(kind)))


def _errors(kind: str, doc: Obj) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in _validator(kind).iter_errors(doc)]


def _example_documents() -> list[Any]:
    params = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        if "invalid" in path.relative_to(EXAMPLES).parts:
            continue  # refused by lint or the controller, not necessarily by the schema
        for index, doc in enumerate(yaml.safe_load_all(path.read_text(encoding="utf-8"))):
            if isinstance(doc, dict) and doc.get("kind") in MODELS:
                name = f"{path.relative_to(EXAMPLES)}#{index}:{doc['kind']}"
                params.append(pytest.param(doc, id=name))
    return params


EXAMPLE_DOCUMENTS = _example_documents()


def test_examples_include_every_kind_with_a_spec() -> None:
    kinds = {param.values[0]["kind"] for param in EXAMPLE_DOCUMENTS}
    assert {"Rollout", "AnalysisTemplate"} <= kinds


@pytest.mark.parametrize("doc", EXAMPLE_DOCUMENTS)
def test_example_validates_against_the_crd(doc: Obj) -> None:
    kind = doc["kind"]
    assert doc["apiVersion"] == "argoproj.io/v1alpha1"
    assert _errors(kind, doc) == []
    # What the controller writes back (the model's dump) is admitted too.
    assert _errors(kind, MODELS[kind].from_json(doc).to_json()) == []


def test_full_analysis_run_with_status_validates() -> None:
    run = {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "AnalysisRun",
        "metadata": {"name": "r", "namespace": "default"},
        "spec": {
            "metrics": [
                {
                    "name": "m",
                    "interval": "30s",
                    "count": 3,
                    "failureLimit": "1",
                    "successCondition": "result[0] > 0.9",
                    "provider": {"prometheus": {"address": "http://p:9090", "query": "up"}},
                }
            ],
            "args": [{"name": "a", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}}],
            "ttlStrategy": {"secondsAfterCompletion": 60},
        },
        "status": {
            "phase": "Running",
            "startedAt": "2024-01-01T00:00:00Z",
            "metricResults": [
                {
                    "name": "m",
                    "phase": "Running",
                    "count": 1,
                    "measurements": [{"phase": "Successful", "value": "[0.95]", "startedAt": "2024-01-01T00:00:00Z"}],
                    "metadata": {"ResolvedPrometheusQuery": "up"},
                }
            ],
            "runSummary": {"count": 1, "successful": 1},
        },
    }
    assert _errors("AnalysisRun", run) == []
    assert _errors("AnalysisRun", AnalysisRun.from_json(run).to_json()) == []


_BASE_ROLLOUT: Obj = {
    "apiVersion": "argoproj.io/v1alpha1",
    "kind": "Rollout",
    "metadata": {"name": "r"},
    "spec": {
        "replicas": 2,
        "selector": {"matchLabels": {"app": "r"}},
        "template": {
            "metadata": {"labels": {"app": "r"}},
            "spec": {"containers": [{"name": "app", "image": "app:v1", "resources": {"limits": {"cpu": "1"}}}]},
        },
        "strategy": {"canary": {"maxSurge": "25%", "steps": [{"setWeight": 20}, {"pause": {"duration": "1m"}}]}},
    },
}


@pytest.mark.parametrize(
    ("path", "value", "error"),
    [
        pytest.param(("spec", "replicas"), "three", "spec.replicas: 'three' is not of type 'integer'", id="replicas"),
        pytest.param(
            ("spec", "strategy", "canary", "maxSurge"),
            1.5,
            "spec.strategy.canary.maxSurge: 1.5 is not of type 'integer', 'string'",
            id="int-or-string",
        ),
        pytest.param(("spec", "paused"), "yes", "spec.paused: 'yes' is not of type 'boolean'", id="bool"),
        pytest.param(
            ("spec", "template", "metadata", "labels"),
            {"app": 1},
            "spec.template.metadata.labels.app: 1 is not of type 'string'",
            id="label-value",
        ),
        pytest.param(("spec", "selector"), [], "spec.selector: [] is not of type 'object'", id="object"),
        pytest.param(("specs",), {}, "Additional properties are not allowed ('specs' was unexpected)", id="root"),
    ],
)
def test_wrong_types_are_refused(path: tuple[str, ...], value: Any, error: str) -> None:
    doc = copy.deepcopy(_BASE_ROLLOUT)
    assert _errors("Rollout", doc) == []
    target = doc
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    assert any(error in message for message in _errors("Rollout", doc)), _errors("Rollout", doc)


def test_required_fields_are_required() -> None:
    doc = copy.deepcopy(_BASE_ROLLOUT)
    del doc["spec"]["template"]["spec"]["containers"][0]["name"]
    assert _errors("Rollout", doc) == ["spec.template.spec.containers.0: 'name' is a required property"]
    assert _errors("Rollout", {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": {}}) == [
        ": 'spec' is a required property"
    ]


def test_unmodelled_argo_fields_are_kept() -> None:
    doc = copy.deepcopy(_BASE_ROLLOUT)
    doc["spec"]["template"]["spec"]["containers"][0]["securityContext"] = {"runAsNonRoot": True}
    doc["spec"]["strategy"]["canary"]["steps"].append(
        {"experiment": {"templates": [{"name": "x", "specRef": "canary"}]}}
    )
    doc["spec"]["workloadRef"] = {"apiVersion": "apps/v1", "kind": "Deployment", "name": "d"}
    assert _errors("Rollout", doc) == []


# --- the converter refuses what it cannot express ----------------------------------------------


class _A(Model):
    a: int


class _B(Model):
    b: str


class _Union(Model):
    spec: _A | _B


class _Node(Model):
    children: list[_Node] | None = None


class _Tree(Model):
    spec: _Node


@pytest.mark.parametrize(
    ("model", "message"),
    [
        pytest.param(_Union, "_Union.spec: the union", id="union-of-models"),
        pytest.param(_Tree, "model _Node refers to itself", id="recursive"),
    ],
)
def test_unrepresentable_models_are_refused(model: type[Model], message: str) -> None:
    with pytest.raises(crds.SchemaError, match=message):
        crds.structural_schema(model)
