"""Reading manifests: YAML/JSON text → documents → typed resources, with findings for bad input.

Used by `rollouts lint`, `apply` and anything else that reads manifests a person wrote. The
rules follow `kubectl`: a file holds one or more documents; each document is one object with
`apiVersion` and `kind`. The argoproj.io/v1alpha1 kinds we run (Rollout, AnalysisTemplate,
ClusterAnalysisTemplate, AnalysisRun) and core v1 Service and Secret are parsed into models;
`Experiment` is valid Argo but not supported (a warning); any other argoproj.io kind is an
error; objects of other API groups (Ingress, VirtualService, ConfigMap, ...) are passed over.

Bad input never raises out of the loaders: every problem is a `Finding` that names the file,
the document, the field in manifest form (`spec.strategy.canary.steps[2].setWeight`) and the
fix. Parsing is strict in the way the Kubernetes API server is (a string is not an integer,
`3.5` is not an int32), so what lints clean here is what a cluster accepts.
"""

from __future__ import annotations

import json
import os
import re
import sys
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Literal

import pydantic
import yaml

from rollouts.model.analysis import AnalysisRun, AnalysisTemplate, ClusterAnalysisTemplate
from rollouts.model.rollout import Rollout
from rollouts.model.service import Secret, Service

Resource = Rollout | AnalysisTemplate | ClusterAnalysisTemplate | AnalysisRun | Service | Secret
Severity = Literal["error", "warning"]

ARGO_GROUP = "argoproj.io"
ARGO_API_VERSION = "argoproj.io/v1alpha1"
CORE_API_VERSION = "v1"

ARGO_KINDS: dict[str, type[Rollout | AnalysisTemplate | ClusterAnalysisTemplate | AnalysisRun]] = {
    "Rollout": Rollout,
    "AnalysisTemplate": AnalysisTemplate,
    "ClusterAnalysisTemplate": ClusterAnalysisTemplate,
    "AnalysisRun": AnalysisRun,
}
ARGO_UNSUPPORTED_KINDS = frozenset({"Experiment"})
CORE_KINDS: dict[str, type[Service | Secret]] = {"Service": Service, "Secret": Secret}
MANIFEST_SUFFIXES = (".yaml", ".yml", ".json")

_EXPECTED_ARGO_KINDS = "Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun or Experiment"
# RFC 1123 subdomain: what Kubernetes accepts as an object name.
_NAME_RE = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
_NAME_MAX = 253


@dataclass(frozen=True)
class Finding:
    """One problem in a manifest: where it is, how bad, and what to do about it.

    `document` is the 1-based index of the document in its source (0 when not tied to one,
    e.g. an unreadable file); `path` is the field in manifest form, empty for the whole object.
    """

    severity: Severity
    source: str
    document: int
    kind: str
    name: str
    path: str
    message: str

    def __str__(self) -> str:
        where = self.source if self.document <= 0 else f"{self.source}:{self.document}"
        if self.kind or self.name:
            where += f" {self.kind}/{self.name}" if self.name else f" {self.kind}"
        what = f"{self.path}: {self.message}" if self.path else self.message
        return f"{where}: {self.severity}: {what}"

    def at(self, source: str, document: int) -> Finding:
        """The same finding, placed in a file and document."""
        return replace(self, source=source, document=document)


def error(path: str, message: str, *, kind: str = "", name: str = "") -> Finding:
    """An error finding not yet placed in a source (`source` "-", document 0)."""
    return Finding("error", "-", 0, kind, name, path, message)


def warning(path: str, message: str, *, kind: str = "", name: str = "") -> Finding:
    """A warning finding not yet placed in a source (`source` "-", document 0)."""
    return Finding("warning", "-", 0, kind, name, path, message)


class ManifestError(Exception):
    """A manifest that cannot become a resource; `findings` say why (at least one error)."""

    def __init__(self, findings: Sequence[Finding]) -> None:
        self.findings = list(findings)
        super().__init__("\n".join(str(f) for f in self.findings) or "invalid manifest")


@dataclass(frozen=True)
class LoadedDocument:
    """One document of a source; `resource` is None if it failed to parse or is not ours."""

    source: str
    index: int
    raw: dict[str, Any] = field(repr=False)
    resource: Resource | None

    @property
    def kind(self) -> str:
        kind = self.raw.get("kind")
        return kind if isinstance(kind, str) else ""

    @property
    def name(self) -> str:
        meta = self.raw.get("metadata")
        name = meta.get("name") if isinstance(meta, dict) else None
        return name if isinstance(name, str) else ""


# --- parsing one object ------------------------------------------------------------------------


def parse_resource(raw: dict[str, Any]) -> Resource:
    """The typed resource for one manifest object; raises ManifestError for bad input.

    Only the kinds in `Resource` parse; anything else (an Experiment, an Ingress, an unknown
    argoproj.io kind) raises with an error that says what is accepted.
    """
    if not isinstance(raw, dict):
        raise ManifestError([error("", f"expected an object (a mapping), got {_describe(raw)}")])
    kind = raw.get("kind")
    name = _raw_name(raw)
    problems = _check_type_meta(raw)
    if problems:
        raise ManifestError(problems)
    api_version = raw["apiVersion"]
    model: type[Resource]
    if api_version == ARGO_API_VERSION and kind in ARGO_KINDS:
        model = ARGO_KINDS[kind]
    elif api_version == CORE_API_VERSION and kind in CORE_KINDS:
        model = CORE_KINDS[kind]
    else:
        accepted = (
            "argoproj.io/v1alpha1 Rollout, AnalysisTemplate, ClusterAnalysisTemplate, AnalysisRun, v1 Service or Secret"
        )
        finding = error("kind", f"{api_version} {kind} is not a kind rollouts manages (expected {accepted})")
        if api_version == ARGO_API_VERSION and kind in ARGO_UNSUPPORTED_KINDS:
            finding = error("kind", f"{kind} is not supported by rollouts yet (use a Rollout or an AnalysisRun)")
        elif _group(api_version) == ARGO_GROUP:
            problems = _check_argo_type(raw)
            finding = problems[0] if problems else finding
        raise ManifestError([replace(finding, kind=str(kind), name=name)])
    problems = _check_metadata(raw)
    if problems:
        raise ManifestError([replace(p, kind=str(kind), name=name) for p in problems])
    try:
        return model.model_validate(raw, strict=True)
    except pydantic.ValidationError as exc:
        raise ManifestError(
            [replace(f, kind=str(kind), name=name) for f in findings_from_validation_error(exc)]
        ) from None


def _check_type_meta(raw: dict[str, Any]) -> list[Finding]:
    findings: list[Finding] = []
    api_version = raw.get("apiVersion")
    kind = raw.get("kind")
    if api_version is None or api_version == "":
        findings.append(
            error(
                "apiVersion",
                "missing (set apiVersion: argoproj.io/v1alpha1 for Argo Rollouts kinds, v1 for Service and Secret)",
            )
        )
    elif not isinstance(api_version, str):
        findings.append(
            error("apiVersion", f"expected a string such as argoproj.io/v1alpha1, got {_describe(api_version)}")
        )
    if kind is None or kind == "":
        findings.append(error("kind", "missing (set kind: Rollout, AnalysisTemplate, Service, ...)"))
    elif not isinstance(kind, str):
        findings.append(error("kind", f"expected a string such as Rollout, got {_describe(kind)}"))
    return findings


def _check_argo_type(raw: dict[str, Any]) -> list[Finding]:
    """Errors for an argoproj.io object whose version or kind Argo Rollouts does not define."""
    api_version, kind = raw["apiVersion"], raw["kind"]
    if api_version != ARGO_API_VERSION:
        return [error("apiVersion", f"unknown version {api_version}; Argo Rollouts kinds are {ARGO_API_VERSION}")]
    if kind not in ARGO_KINDS and kind not in ARGO_UNSUPPORTED_KINDS:
        hint = _closest(kind, [*ARGO_KINDS, *ARGO_UNSUPPORTED_KINDS])
        fix = f" (did you mean {hint}?)" if hint else ""
        return [error("kind", f"unknown kind {kind} in {ARGO_API_VERSION}; expected {_EXPECTED_ARGO_KINDS}{fix}")]
    return []


def _check_metadata(raw: dict[str, Any]) -> list[Finding]:
    meta = raw.get("metadata")
    if meta is None:
        return [error("metadata.name", "missing (every object needs metadata: {name: ...})")]
    if not isinstance(meta, dict):
        return [error("metadata", f"expected a mapping with a name, got {_describe(meta)}")]
    name = meta.get("name")
    if name is None or name == "":
        return [error("metadata.name", "missing (give the object a name, e.g. metadata: {name: my-app})")]
    if not isinstance(name, str):
        return [error("metadata.name", f"expected a string, got {_describe(name)}")]
    if len(name) > _NAME_MAX or not _NAME_RE.match(name):
        return [
            error(
                "metadata.name",
                f"{name!r} is not a valid name (use lowercase letters, digits, '-' and '.', "
                "starting and ending with a letter or digit)",
            )
        ]
    return []


def _group(api_version: str) -> str:
    return api_version.split("/", 1)[0] if "/" in api_version else ""


def _raw_name(raw: dict[str, Any]) -> str:
    meta = raw.get("metadata")
    name = meta.get("name") if isinstance(meta, dict) else None
    return name if isinstance(name, str) else ""


# --- pydantic errors in plain words ------------------------------------------------------------

# Parts of a pydantic error location that name a union member, not a field.
_UNION_TAG = re.compile(
    r"^(int|str|bool|float|none|bytes|list\[.*\]|dict\[.*\]|set\[.*\]|tuple\[.*\]|literal\[.*\]"
    r"|function-[a-z]+\[.*\]|tagged-union\[.*\]|json-or-python\[.*\]|lax-or-strict\[.*\]"
    r"|is-instance\[.*\]|nullable\[.*\]|constrained-.*)$"
)
_TYPE_WORDS = {
    "int": "an integer",
    "str": "a string",
    "bool": "true or false",
    "float": "a number",
    "list": "a list",
    "dict": "a mapping",
    "model": "a mapping",
    "literal": "one of the allowed values",
}


def findings_from_validation_error(exc: pydantic.ValidationError) -> list[Finding]:
    """One error finding per bad field, in manifest paths and plain words (no pydantic text)."""
    grouped: dict[str, list[dict[str, Any]]] = {}
    for err in exc.errors(include_url=False):
        path = manifest_path(err["loc"])
        grouped.setdefault(path, []).append(dict(err))
    findings: list[Finding] = []
    for path, errors in grouped.items():
        findings.append(error(path, _message_for(errors)))
    return findings


def manifest_path(loc: Sequence[int | str]) -> str:
    """`('spec', 'steps', 2, 'setWeight')` → `spec.steps[2].setWeight` (union tags dropped)."""
    out = ""
    for part in loc:
        if isinstance(part, int):
            out += f"[{part}]"
        elif _UNION_TAG.match(part):
            continue
        else:
            out += f".{part}" if out else part
    return out


def _message_for(errors: list[dict[str, Any]]) -> str:
    if len(errors) == 1:
        return _plain(errors[0])
    # A union (e.g. int or string): every member refused the value.
    value = errors[0].get("input")
    if all(e["type"] == "missing" for e in errors):
        return _plain(errors[0])
    wanted: list[str] = []
    for e in errors:
        word = _expected_word(e)
        if word and word not in wanted:
            wanted.append(word)
    if wanted:
        return f"expected {' or '.join(wanted)}, got {_describe(value)}"
    return _plain(errors[0])


def _expected_word(err: dict[str, Any]) -> str:
    kind = err["type"]
    if kind.startswith("int"):
        return _TYPE_WORDS["int"]
    if kind.startswith("string") or kind.startswith("str"):
        return _TYPE_WORDS["str"]
    if kind.startswith("bool"):
        return _TYPE_WORDS["bool"]
    if kind.startswith("float"):
        return _TYPE_WORDS["float"]
    if kind.startswith("list"):
        return _TYPE_WORDS["list"]
    if kind.startswith("dict") or kind.startswith("model"):
        return _TYPE_WORDS["dict"]
    return ""


def _plain(err: dict[str, Any]) -> str:
    kind: str = err["type"]
    value = err.get("input")
    ctx = err.get("ctx") or {}
    field_name = next((p for p in reversed(err["loc"]) if isinstance(p, str) and not _UNION_TAG.match(p)), "")
    if kind == "missing":
        return f"missing (add {field_name}: ...)" if field_name else "missing (add this field)"
    if kind in ("int_type", "int_parsing"):
        if isinstance(value, str) and value.strip().lstrip("-").isdigit():
            return f"expected an integer, got the string {value!r} (remove the quotes)"
        return f"expected an integer, got {_describe(value)}"
    if kind == "int_from_float":
        return f"expected a whole number, got {value!r}"
    if kind in ("string_type", "string_unicode"):
        if isinstance(value, bool | int | float):
            shown = json.dumps(value)
            return f'expected a string, got {_describe(value)} (quote it: "{shown}")'
        return f"expected a string, got {_describe(value)}"
    if kind in ("bool_type", "bool_parsing"):
        return f"expected true or false, got {_describe(value)}"
    if kind in ("float_type", "float_parsing"):
        return f"expected a number, got {_describe(value)}"
    if kind in ("dict_type", "model_type", "model_attributes_type", "mapping_type"):
        return f"expected a mapping (key: value), got {_describe(value)}"
    if kind in ("list_type", "tuple_type", "iterable_type"):
        return f"expected a list, got {_describe(value)}"
    if kind == "literal_error":
        expected = str(ctx.get("expected", "")).replace(" or ", ", ")
        return f"expected one of {expected}, got {_describe(value)}"
    if kind in ("too_short", "too_long"):
        return f"has the wrong number of items ({_describe(value)})"
    message = str(err.get("msg", "is invalid"))
    message = message[:1].lower() + message[1:]
    return f"{message}, got {_describe(value)}"


def _describe(value: Any) -> str:
    if value is None:
        return "nothing (null)"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if isinstance(value, str):
        return repr(value) if len(value) <= 60 else repr(value[:57] + "...")
    return repr(value)


def _closest(word: str, choices: Sequence[str]) -> str | None:
    import difflib

    lowered = {c.lower(): c for c in choices}
    if word.lower() in lowered:
        return lowered[word.lower()]
    match = difflib.get_close_matches(word.lower(), list(lowered), n=1, cutoff=0.75)
    return lowered[match[0]] if match else None


# --- YAML and JSON text -----------------------------------------------------------------------


class _Loader(yaml.SafeLoader):
    """Safe YAML as Kubernetes reads it: timestamps stay strings; duplicate keys are noted."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.duplicate_keys: list[tuple[str, int, int]] = []

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            if isinstance(key_node, yaml.ScalarNode):
                key = key_node.value
                if key in seen:
                    mark = key_node.start_mark
                    self.duplicate_keys.append((str(key), mark.line + 1, mark.column + 1))
                seen.add(key)
        return super().construct_mapping(node, deep=deep)


_Loader.yaml_implicit_resolvers = {
    first: [(tag, rx) for tag, rx in resolvers if tag != "tag:yaml.org,2002:timestamp"]
    for first, resolvers in yaml.SafeLoader.yaml_implicit_resolvers.items()
}


def _yaml_fix(problem: str) -> str:
    p = problem.lower()
    if "'\\t'" in p:
        return "indent with spaces, not tabs"
    if "mapping values are not allowed" in p:
        return "check the indentation of this line, and quote values that contain ': '"
    if "could not find expected ':'" in p or "expected ':'" in p:
        return "add the missing ':' after the key, or quote the value"
    if "expected <block end>" in p or "expected ',' or" in p or "expected ',' or ']'" in p:
        return "check the indentation, and that every '[', '{' and quote is closed"
    if "could not determine a constructor" in p:
        return "remove the tag: only plain YAML values are allowed"
    if "found undefined alias" in p:
        return "define the anchor (&name) before using the alias (*name)"
    if "unacceptable character" in p or "special characters are not allowed" in p:
        return "remove the non-printable character or quote the value"
    if "while scanning a quoted scalar" in p or "found unexpected end of stream" in p:
        return "close the quoted string"
    if "found character '@'" in p or "found character '`'" in p or "cannot start any token" in p:
        return "quote the value: it starts with a character YAML reserves"
    return "check the indentation, quotes and brackets around this spot"


def _yaml_error_finding(exc: yaml.YAMLError, source: str, index: int) -> Finding:
    mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
    problem = getattr(exc, "problem", None) or str(exc)
    context = getattr(exc, "context", None)
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    detail = f"{problem} ({context})" if context else str(problem)
    message = f"YAML syntax error{where}: {detail}; {_yaml_fix(str(problem) + ' ' + str(context or ''))}"
    return Finding("error", source, index, "", "", "", message)


def _iter_yaml(text: str, source: str) -> Iterator[tuple[int, Any, list[Finding]]]:
    """(index, data, findings) for each document; a syntax error ends the stream with a finding."""
    current = 1
    loader: _Loader | None = None
    try:
        loader = _Loader(text)
        while loader.check_data():  # type: ignore[no-untyped-call]
            before = len(loader.duplicate_keys)
            data = loader.get_data()
            found = [
                Finding(
                    "error",
                    source,
                    current,
                    "",
                    "",
                    "",
                    f"duplicate key {key!r} at line {line}, column {col} (Kubernetes refuses duplicate "
                    "fields: keep one)",
                )
                for key, line, col in loader.duplicate_keys[before:]
            ]
            yield current, data, found
            current += 1
    except yaml.reader.ReaderError as exc:
        line = text.count("\n", 0, exc.position) + 1
        column = exc.position - (text.rfind("\n", 0, exc.position) + 1) + 1
        message = (
            f"YAML syntax error at line {line}, column {column}: unacceptable character #x{exc.character:04x}; "
            "remove the non-printable character"
        )
        yield current, None, [Finding("error", source, current, "", "", "", message)]
    except yaml.YAMLError as exc:
        yield current, None, [_yaml_error_finding(exc, source, current)]
    finally:
        if loader is not None:
            loader.dispose()


def _iter_json(text: str, source: str) -> Iterator[tuple[int, Any, list[Finding]]]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        message = (
            f"JSON syntax error at line {exc.lineno}, column {exc.colno}: {exc.msg.lower()}; "
            "check for a missing comma, quote or bracket"
        )
        yield 1, None, [Finding("error", source, 1, "", "", "", message)]
        return
    yield 1, data, []


def load_yaml_documents(text: str, source: str) -> tuple[list[LoadedDocument], list[Finding]]:
    """Every document of a YAML (or JSON) text, parsed where it is one of ours.

    A `source` ending in `.json` is read as JSON, anything else (stdin too) as YAML, which
    also reads JSON. Empty documents are skipped. A `v1 List` is unpacked into its items
    (same document index). Problems come back as findings, never as exceptions.
    """
    docs: list[LoadedDocument] = []
    findings: list[Finding] = []
    stream = _iter_json(text, source) if source.endswith(".json") else _iter_yaml(text, source)
    for index, data, found in stream:
        findings.extend(found)
        if data is None:
            continue
        if not isinstance(data, dict):
            findings.append(
                Finding(
                    "error",
                    source,
                    index,
                    "",
                    "",
                    "",
                    f"a document must be one object (a mapping with apiVersion, kind and metadata), got {_describe(data)}",
                )
            )
            continue
        items = _list_items(data)
        if items is None:
            doc, doc_findings = _load_one(data, source, index)
            docs.append(doc)
            findings.extend(doc_findings)
            continue
        for n, item in enumerate(items):
            if not isinstance(item, dict):
                findings.append(
                    Finding(
                        "error", source, index, "List", "", f"items[{n}]", f"expected an object, got {_describe(item)}"
                    )
                )
                continue
            doc, doc_findings = _load_one(item, source, index)
            docs.append(doc)
            findings.extend(doc_findings)
    return docs, findings


def _list_items(data: dict[str, Any]) -> list[Any] | None:
    if data.get("apiVersion") == CORE_API_VERSION and data.get("kind") == "List":
        items = data.get("items")
        return items if isinstance(items, list) else []
    return None


def _load_one(raw: dict[str, Any], source: str, index: int) -> tuple[LoadedDocument, list[Finding]]:
    kind = raw.get("kind") if isinstance(raw.get("kind"), str) else ""
    name = _raw_name(raw)
    problems = _check_type_meta(raw)
    if problems:
        return LoadedDocument(source, index, raw, None), [
            replace(p, source=source, document=index, kind=str(kind), name=name) for p in problems
        ]
    api_version = raw["apiVersion"]
    if _group(api_version) == ARGO_GROUP:
        problems = _check_argo_type(raw)
        if problems:
            return LoadedDocument(source, index, raw, None), [
                replace(p, source=source, document=index, kind=str(kind), name=name) for p in problems
            ]
        if kind in ARGO_UNSUPPORTED_KINDS:
            problems = _check_metadata(raw)
            note = warning(
                "",
                f"{kind} is valid Argo Rollouts but not supported by rollouts yet; it is not checked "
                "further and will not run",
            )
            return LoadedDocument(source, index, raw, None), [
                replace(p, source=source, document=index, kind=str(kind), name=name) for p in [*problems, note]
            ]
    elif not (api_version == CORE_API_VERSION and kind in CORE_KINDS):
        return LoadedDocument(source, index, raw, None), []
    try:
        resource = parse_resource(raw)
    except ManifestError as exc:
        return LoadedDocument(source, index, raw, None), [f.at(source, index) for f in exc.findings]
    return LoadedDocument(source, index, raw, resource), []


def load_files(paths: Sequence[str], *, recursive: bool = False) -> tuple[list[LoadedDocument], list[Finding]]:
    """Documents of every file named; "-" reads stdin; a directory gives its manifests, sorted.

    A directory contributes its `*.yaml`, `*.yml` and `*.json` files (and those of its
    subdirectories when `recursive`), like `kubectl -f DIR` (`-R`).
    """
    docs: list[LoadedDocument] = []
    findings: list[Finding] = []
    for path in paths:
        if path == "-":
            text = sys.stdin.read()
            more_docs, more_findings = load_yaml_documents(text, "-")
            docs.extend(more_docs)
            findings.extend(more_findings)
            continue
        for file, problem in _expand(path, recursive=recursive):
            if problem is not None:
                findings.append(problem)
                continue
            try:
                text = Path(file).read_text(encoding="utf-8")
            except UnicodeDecodeError:
                findings.append(Finding("error", file, 0, "", "", "", "cannot read file: it is not UTF-8 text"))
                continue
            except OSError as exc:
                reason = exc.strerror or str(exc)
                findings.append(Finding("error", file, 0, "", "", "", f"cannot read file: {reason} (check the path)"))
                continue
            more_docs, more_findings = load_yaml_documents(text, file)
            docs.extend(more_docs)
            findings.extend(more_findings)
    return docs, findings


def _expand(path: str, *, recursive: bool) -> list[tuple[str, Finding | None]]:
    if not os.path.exists(path):
        return [
            (
                path,
                Finding("error", path, 0, "", "", "", "cannot read file: no such file or directory (check the path)"),
            )
        ]
    if not os.path.isdir(path):
        return [(path, None)]
    root = Path(path)
    candidates = root.rglob("*") if recursive else root.iterdir()
    files = sorted(str(p) for p in candidates if p.is_file() and p.suffix in MANIFEST_SUFFIXES)
    if files:
        return [(f, None) for f in files]
    has_subdirs = any(p.is_dir() for p in root.iterdir())
    hint = " (its subdirectories are not read: name them, or read recursively)" if has_subdirs and not recursive else ""
    return [(path, Finding("warning", path, 0, "", "", "", f"no .yaml, .yml or .json files in this directory{hint}"))]
