"""CustomResourceDefinitions for the argoproj.io kinds, generated from the resource models.

The models are the one source of truth for the shape of a Rollout, AnalysisTemplate,
ClusterAnalysisTemplate and AnalysisRun; this module turns their pydantic JSON schema into
the *structural* OpenAPI v3 schema that apiextensions.k8s.io/v1 requires, and wraps it in a
CRD with Argo Rollouts' names, short names, scope, subresources and printer columns, so that
`kubectl get ro` and an HPA on a Rollout behave as they do with Argo.

Conversion rules (pydantic JSON schema → structural schema):

- every `$ref` is inlined (the models have no recursion; a recursive model is an error);
- `X | None` (`anyOf` with `{"type": "null"}`) becomes plain `X`: the API server prunes a
  null in a non-nullable field, which is what "unset" means to the models;
- `int | str` becomes `x-kubernetes-int-or-string: true` (no `type`, as Kubernetes demands);
- `extra="allow"` models (all of ours) and free-form `dict[str, Any]` become
  `x-kubernetes-preserve-unknown-fields: true`, so Argo fields we do not model are stored
  unchanged; `dict[str, str]` keeps `additionalProperties: {type: string}`;
- `const` becomes a one-value `enum`; `title`, `description` and `default` are dropped
  (defaults are applied by the planning code, never by the API server);
- at the root, `apiVersion`/`kind` are strings and `metadata` is `{type: object}` (the only
  form Kubernetes allows there), and unknown root fields are not preserved.

Any other JSON-schema construct (a union of models, a keyword not listed here) raises
`SchemaError` instead of producing a schema the API server would reject.

Run `python -m rollouts.model.crds` to print the CRDs, or with
`--write deploy/kubernetes/crds` to refresh the committed files (tests/model/test_crds.py
fails when they are out of date).
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import yaml

from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate
from rollouts.model.base import Model
from rollouts.model.rollout import Rollout

Obj = dict[str, Any]

GROUP = "argoproj.io"
VERSION = "v1alpha1"
WRITE_COMMAND = "python -m rollouts.model.crds --write deploy/kubernetes/crds"

INT_OR_STRING = "x-kubernetes-int-or-string"
PRESERVE_UNKNOWN = "x-kubernetes-preserve-unknown-fields"

# JSON-schema keywords copied as they are: all legal in a structural schema.
_PASSTHROUGH = frozenset(
    {
        "type",
        "enum",
        "format",
        "pattern",
        "minimum",
        "maximum",
        "exclusiveMinimum",
        "exclusiveMaximum",
        "multipleOf",
        "minLength",
        "maxLength",
        "minItems",
        "maxItems",
        "uniqueItems",
        "minProperties",
        "maxProperties",
    }
)
# Keywords with no place in a CRD schema: documentation, or defaults we must not apply.
_DROPPED = frozenset({"title", "description", "default", "examples"})
_NULL = {"type": "null"}
_ROOT_FIELDS = {"apiVersion": {"type": "string"}, "kind": {"type": "string"}, "metadata": {"type": "object"}}


class SchemaError(ValueError):
    """A model's JSON schema has a construct a structural CRD schema cannot express."""


@dataclass(frozen=True)
class CrdKind:
    """One argoproj.io kind: its model and the CRD facts that are not in the model."""

    model: type[Model]
    kind: str
    plural: str
    short_names: tuple[str, ...]
    scope: Literal["Namespaced", "Cluster"]
    filename: str
    status_subresource: bool = False
    scale: Mapping[str, str] | None = None
    columns: tuple[Mapping[str, str], ...] = field(default_factory=tuple)


_AGE: Mapping[str, str] = {
    "name": "Age",
    "type": "date",
    "jsonPath": ".metadata.creationTimestamp",
    "description": "Time since resource was created",
}

KINDS: tuple[CrdKind, ...] = (
    CrdKind(
        model=Rollout,
        kind="Rollout",
        plural="rollouts",
        short_names=("ro",),
        scope="Namespaced",
        filename="rollout-crd.yaml",
        status_subresource=True,
        scale={
            "specReplicasPath": ".spec.replicas",
            "statusReplicasPath": ".status.HPAReplicas",
            "labelSelectorPath": ".status.selector",
        },
        columns=(
            {
                "name": "Desired",
                "type": "integer",
                "jsonPath": ".spec.replicas",
                "description": "Number of desired pods",
            },
            {
                "name": "Current",
                "type": "integer",
                "jsonPath": ".status.replicas",
                "description": "Total number of non-terminated pods targeted by this rollout",
            },
            {
                "name": "Up-to-date",
                "type": "integer",
                "jsonPath": ".status.updatedReplicas",
                "description": "Total number of non-terminated pods targeted by this rollout that have the desired template spec",
            },
            {
                "name": "Available",
                "type": "integer",
                "jsonPath": ".status.availableReplicas",
                "description": "Total number of available pods (ready for at least minReadySeconds) targeted by this rollout",
            },
            _AGE,
        ),
    ),
    CrdKind(
        model=AnalysisTemplate,
        kind="AnalysisTemplate",
        plural="analysistemplates",
        short_names=("at",),
        scope="Namespaced",
        filename="analysis-template-crd.yaml",
        columns=(_AGE,),
    ),
    CrdKind(
        model=ClusterAnalysisTemplate,
        kind="ClusterAnalysisTemplate",
        plural="clusteranalysistemplates",
        short_names=("cat",),
        scope="Cluster",
        filename="cluster-analysis-template-crd.yaml",
        columns=(_AGE,),
    ),
    CrdKind(
        model=AnalysisRun,
        kind="AnalysisRun",
        plural="analysisruns",
        short_names=("ar",),
        scope="Namespaced",
        filename="analysis-run-crd.yaml",
        status_subresource=True,
        columns=(
            {"name": "Status", "type": "string", "jsonPath": ".status.phase", "description": "AnalysisRun status"},
            _AGE,
        ),
    ),
)


# --- schema conversion -----------------------------------------------------------------------


def structural_schema(model: type[Model]) -> Obj:
    """The openAPIV3Schema of `model`'s CRD: structural, no `$ref`, no null, no defaults."""
    source = model.model_json_schema(by_alias=True)
    defs: Mapping[str, Any] = source.get("$defs", {})
    root = {k: v for k, v in source.items() if k != "$defs"}
    schema = _convert(root, defs, (model.__name__,))
    properties: Obj = schema.get("properties", {})
    properties.update(_ROOT_FIELDS)
    schema["properties"] = properties
    required = [name for name in schema.get("required", []) if name not in _ROOT_FIELDS]
    if required:
        schema["required"] = required
    else:
        schema.pop("required", None)
    schema.pop(PRESERVE_UNKNOWN, None)
    return schema


def _convert(node: Mapping[str, Any], defs: Mapping[str, Any], trail: tuple[str, ...]) -> Obj:
    where = ".".join(trail)
    if "$ref" in node:
        _check_only(node, {"$ref"}, where)
        name = str(node["$ref"]).removeprefix("#/$defs/")
        if name not in defs:
            raise SchemaError(f"{where}: unresolvable $ref {node['$ref']!r}")
        if name in trail:
            raise SchemaError(f"{where}: model {name} refers to itself; a CRD schema cannot be recursive")
        return _convert(defs[name], defs, (*trail, name))
    if "anyOf" in node:
        _check_only(node, {"anyOf"}, where)
        return _convert_union(node["anyOf"], defs, trail)
    if "allOf" in node or "oneOf" in node or "not" in node:
        raise SchemaError(f"{where}: allOf/oneOf/not are not supported in a structural schema")

    out: Obj = {}
    for key, value in node.items():
        if key in _DROPPED:
            continue
        if key == "properties":
            out["properties"] = {name: _convert(sub, defs, (*trail, name)) for name, sub in value.items()}
        elif key == "items":
            out["items"] = _convert(value, defs, (*trail, "[]"))
        elif key == "additionalProperties":
            if value is True:
                out[PRESERVE_UNKNOWN] = True
            elif isinstance(value, Mapping):
                out["additionalProperties"] = _convert(value, defs, (*trail, "*"))
            # False (extra="forbid"): the API server prunes unknown fields by default.
        elif key == "required":
            out["required"] = list(value)
        elif key == "const":
            out["enum"] = [value]
        elif key in _PASSTHROUGH:
            if key == "type" and not isinstance(value, str):
                raise SchemaError(f"{where}: type {value!r} is not a single type")
            out[key] = value
        else:
            raise SchemaError(f"{where}: JSON-schema keyword {key!r} has no structural equivalent here")
    if "properties" in out and "additionalProperties" in out:
        raise SchemaError(f"{where}: properties and additionalProperties cannot be combined in a CRD schema")
    if "type" not in out:
        # `Any`: any JSON value, kept as it is.
        out[PRESERVE_UNKNOWN] = True
    return out


def _convert_union(options: Sequence[Mapping[str, Any]], defs: Mapping[str, Any], trail: tuple[str, ...]) -> Obj:
    kept = [option for option in options if dict(option) != _NULL]
    if len(kept) == 1:
        return _convert(kept[0], defs, trail)
    if sorted(str(option.get("type")) for option in kept) == ["integer", "string"] and all(
        set(option) == {"type"} for option in kept
    ):
        return {INT_OR_STRING: True}
    raise SchemaError(
        f"{'.'.join(trail)}: the union {list(options)!r} has no structural equivalent "
        "(only `X | None` and `int | str` do)"
    )


def _check_only(node: Mapping[str, Any], allowed: set[str], where: str) -> None:
    extra = set(node) - allowed - _DROPPED
    if extra:
        raise SchemaError(f"{where}: unexpected keywords {sorted(extra)} next to {sorted(allowed)}")


# --- CRDs ------------------------------------------------------------------------------------


def crd_for(kind: CrdKind) -> Obj:
    version: Obj = {
        "name": VERSION,
        "served": True,
        "storage": True,
        "schema": {"openAPIV3Schema": structural_schema(kind.model)},
    }
    subresources: Obj = {}
    if kind.status_subresource:
        subresources["status"] = {}
    if kind.scale is not None:
        subresources["scale"] = dict(kind.scale)
    if subresources:
        version["subresources"] = subresources
    if kind.columns:
        version["additionalPrinterColumns"] = [dict(column) for column in kind.columns]
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": f"{kind.plural}.{GROUP}",
            "labels": {
                "app.kubernetes.io/name": f"{kind.plural}.{GROUP}",
                "app.kubernetes.io/part-of": "rollouts",
            },
        },
        "spec": {
            "group": GROUP,
            "names": {
                "kind": kind.kind,
                "listKind": f"{kind.kind}List",
                "plural": kind.plural,
                "singular": kind.kind.lower(),
                "shortNames": list(kind.short_names),
            },
            "scope": kind.scope,
            "versions": [version],
        },
    }


def generate_crds() -> list[Obj]:
    """The four argoproj.io/v1alpha1 CRDs: Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun."""
    return [crd_for(kind) for kind in KINDS]


_HEADER = f"# Generated from the models in src/rollouts/model by `{WRITE_COMMAND}`. Do not edit.\n"


def _dump(doc: Obj) -> str:
    return yaml.safe_dump(doc, sort_keys=True, default_flow_style=False, width=120)


def render_files() -> dict[str, str]:
    """The contents of deploy/kubernetes/crds/, by file name: one file per CRD and a kustomization."""
    files = {kind.filename: _HEADER + _dump(crd) for kind, crd in zip(KINDS, generate_crds(), strict=True)}
    kustomization: Obj = {
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [kind.filename for kind in KINDS],
    }
    files["kustomization.yaml"] = _HEADER + _dump(kustomization)
    return files


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m rollouts.model.crds",
        description="Print the argoproj.io CRDs generated from the resource models, or write them to a directory.",
    )
    parser.add_argument("--write", metavar="DIR", type=Path, help="write one file per CRD (and a kustomization) here")
    args = parser.parse_args(argv)
    if args.write is None:
        sys.stdout.write("---\n".join(_dump(crd) for crd in generate_crds()))
        return 0
    directory: Path = args.write
    directory.mkdir(parents=True, exist_ok=True)
    for name, text in render_files().items():
        (directory / name).write_text(text, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
