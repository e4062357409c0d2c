"""The resource registry of the Kubernetes API stand-in, and the wire-level helpers around it.

Besides the registry this module holds what the store and the HTTP layer share: label and
field selectors, the `Status` errors (`ApiError`, with the real server's messages) and the
three patch formats (JSON merge patch, strategic merge patch as merge patch, JSON patch).

Each `ResourceType` describes one REST resource the way the API server's discovery documents
describe it (group, version, kind, plural, singular, short names, namespaced, verbs,
subresources) plus the few storage rules that differ between kinds:

- `builtin`: a compiled-in type (core, apps, batch, ...) rather than a CustomResourceDefinition.
  Built-ins accept a body without `kind`/`apiVersion` (the server defaults them from the URL),
  accept strategic merge patch, and their list items carry no `kind`/`apiVersion` (as the real
  server's JSON). Custom resources need both fields, reject strategic merge patch (415) and
  list items keep them.
- `scale`: where the `scale` subresource reads and writes (the CRD `scale` stanza; built-ins
  read `spec.selector` as a LabelSelector).
- `field_selectors`: the field labels the real server accepts besides `metadata.name` and
  `metadata.namespace` (others → 400 "field label not supported").
- `default_propagation`: the delete propagation policy when the request names none (batch/v1
  Job orphans its Pods by default; everything else here is Background).
- `returns_deleted_object`: DELETE answers with the object (Pods, custom resources) rather
  than a `Status` of success.
"""

from __future__ import annotations

import copy
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "ALL_VERBS",
    "DEFAULT_RESOURCES",
    "PATCH_TYPES",
    "ApiError",
    "FieldRequirement",
    "LabelRequirement",
    "ResourceRegistry",
    "ResourceType",
    "ScalePaths",
    "already_exists",
    "apply_patch",
    "bad_request",
    "conflict",
    "default_registry",
    "expired",
    "field_value",
    "fields_match",
    "invalid",
    "json_patch",
    "labels_match",
    "merge_patch",
    "method_not_allowed",
    "not_found",
    "parse_field_selector",
    "parse_label_selector",
    "selector_to_string",
    "unprocessable",
    "unsupported_media_type",
]

ALL_VERBS: tuple[str, ...] = ("create", "delete", "deletecollection", "get", "list", "patch", "update", "watch")


@dataclass(frozen=True)
class ScalePaths:
    """Dotted paths of the `scale` subresource (CRD `subresources.scale`)."""

    spec_replicas: str = "spec.replicas"
    status_replicas: str = "status.replicas"
    # None: built-in, the selector is the LabelSelector at spec.selector.
    label_selector: str | None = None


@dataclass(frozen=True)
class ResourceType:
    group: str
    version: str
    kind: str
    plural: str
    singular: str
    namespaced: bool = True
    short_names: tuple[str, ...] = ()
    subresources: frozenset[str] = frozenset()
    builtin: bool = True
    scale: ScalePaths | None = None
    field_selectors: tuple[str, ...] = ()
    default_propagation: str = "Background"
    returns_deleted_object: bool = False
    categories: tuple[str, ...] = ()
    verbs: tuple[str, ...] = ALL_VERBS

    @property
    def api_version(self) -> str:
        return f"{self.group}/{self.version}" if self.group else self.version

    @property
    def group_resource(self) -> str:
        """`rollouts.argoproj.io`, `replicasets.apps`, `pods`: the name used in error messages."""
        return f"{self.plural}.{self.group}" if self.group else self.plural

    @property
    def list_kind(self) -> str:
        return f"{self.kind}List"

    @property
    def key(self) -> tuple[str, str]:
        return (self.group, self.plural)

    @property
    def has_status(self) -> bool:
        return "status" in self.subresources

    def supports_field(self, name: str) -> bool:
        return name in ("metadata.name", "metadata.namespace") or name in self.field_selectors


_POD_FIELDS = (
    "spec.nodeName",
    "spec.restartPolicy",
    "spec.schedulerName",
    "spec.serviceAccountName",
    "status.phase",
    "status.podIP",
    "status.nominatedNodeName",
)
_EVENT_FIELDS = (
    "involvedObject.kind",
    "involvedObject.namespace",
    "involvedObject.name",
    "involvedObject.uid",
    "involvedObject.apiVersion",
    "involvedObject.resourceVersion",
    "involvedObject.fieldPath",
    "reason",
    "reportingComponent",
    "source",
    "type",
)
_STATUS = frozenset({"status"})
_STATUS_SCALE = frozenset({"status", "scale"})

# fmt: off
DEFAULT_RESOURCES: tuple[ResourceType, ...] = (
    # core/v1
    ResourceType("", "v1", "Namespace", "namespaces", "namespace", namespaced=False, short_names=("ns",),
                 subresources=_STATUS, field_selectors=("status.phase",)),
    ResourceType("", "v1", "Pod", "pods", "pod", short_names=("po",), subresources=frozenset({"status", "log"}),
                 field_selectors=_POD_FIELDS, returns_deleted_object=True, categories=("all",)),
    ResourceType("", "v1", "Service", "services", "service", short_names=("svc",), subresources=_STATUS,
                 categories=("all",)),
    ResourceType("", "v1", "Secret", "secrets", "secret", field_selectors=("type",)),
    ResourceType("", "v1", "ConfigMap", "configmaps", "configmap", short_names=("cm",)),
    ResourceType("", "v1", "Event", "events", "event", short_names=("ev",), field_selectors=_EVENT_FIELDS),
    # apps/v1
    ResourceType("apps", "v1", "ReplicaSet", "replicasets", "replicaset", short_names=("rs",),
                 subresources=_STATUS_SCALE, scale=ScalePaths(), field_selectors=("status.replicas",),
                 categories=("all",)),
    ResourceType("apps", "v1", "Deployment", "deployments", "deployment", short_names=("deploy",),
                 subresources=_STATUS_SCALE, scale=ScalePaths(), categories=("all",)),
    # batch/v1
    ResourceType("batch", "v1", "Job", "jobs", "job", subresources=_STATUS, field_selectors=("status.successful",),
                 default_propagation="Orphan", categories=("all",)),
    # networking.k8s.io/v1
    ResourceType("networking.k8s.io", "v1", "Ingress", "ingresses", "ingress", short_names=("ing",),
                 subresources=_STATUS),
    # coordination.k8s.io/v1
    ResourceType("coordination.k8s.io", "v1", "Lease", "leases", "lease"),
    # events.k8s.io/v1 (a separate store here; the real server shares it with core/v1 events)
    ResourceType("events.k8s.io", "v1", "Event", "events", "event", short_names=("ev",)),
    # argoproj.io/v1alpha1 (CustomResourceDefinitions as Argo Rollouts installs them)
    ResourceType("argoproj.io", "v1alpha1", "Rollout", "rollouts", "rollout", short_names=("ro",),
                 subresources=_STATUS_SCALE, builtin=False, returns_deleted_object=True, categories=("all",),
                 scale=ScalePaths("spec.replicas", "status.HPAReplicas", "status.selector")),
    ResourceType("argoproj.io", "v1alpha1", "AnalysisRun", "analysisruns", "analysisrun", short_names=("ar",),
                 subresources=_STATUS, builtin=False, returns_deleted_object=True),
    ResourceType("argoproj.io", "v1alpha1", "AnalysisTemplate", "analysistemplates", "analysistemplate",
                 short_names=("at",), builtin=False, returns_deleted_object=True),
    ResourceType("argoproj.io", "v1alpha1", "ClusterAnalysisTemplate", "clusteranalysistemplates",
                 "clusteranalysistemplate", namespaced=False, short_names=("cat",), builtin=False,
                 returns_deleted_object=True),
    ResourceType("argoproj.io", "v1alpha1", "Experiment", "experiments", "experiment", short_names=("exp",),
                 subresources=_STATUS, builtin=False, returns_deleted_object=True),
)
# fmt: on


class ResourceRegistry:
    """Resource types by URL (group, version, plural) and by the names people type."""

    def __init__(self, resources: Iterable[ResourceType] = DEFAULT_RESOURCES) -> None:
        self._by_gvr: dict[tuple[str, str, str], ResourceType] = {}
        self._by_name: dict[str, ResourceType] = {}
        self._order: list[ResourceType] = []
        for rt in resources:
            self.register(rt)

    def register(self, rt: ResourceType) -> None:
        self._by_gvr[(rt.group, rt.version, rt.plural)] = rt
        self._order.append(rt)
        qualified = [rt.group_resource, f"{rt.kind}.{rt.group}" if rt.group else rt.kind]
        # The first registered type keeps the short forms ("events" is core/v1's).
        for name in (*qualified, rt.plural, rt.kind, rt.singular, *rt.short_names):
            self._by_name.setdefault(name.lower(), rt)

    def __iter__(self) -> Any:
        return iter(self._order)

    def by_url(self, group: str, version: str, plural: str) -> ResourceType | None:
        return self._by_gvr.get((group, version, plural))

    def resolve(self, name: str | ResourceType) -> ResourceType:
        """`Rollout`, `rollouts`, `rollouts.argoproj.io`, `ro`, `events.events.k8s.io`, ..."""
        if isinstance(name, ResourceType):
            return name
        try:
            return self._by_name[name.lower()]
        except KeyError:
            raise KeyError(f"unknown resource {name!r}") from None

    def group_versions(self) -> dict[str, list[str]]:
        """{group: [versions]} in registration order ("" is the core group)."""
        out: dict[str, list[str]] = {}
        for rt in self._order:
            versions = out.setdefault(rt.group, [])
            if rt.version not in versions:
                versions.append(rt.version)
        return out

    def in_group_version(self, group: str, version: str) -> list[ResourceType]:
        return [rt for rt in self._order if rt.group == group and rt.version == version]


def default_registry() -> ResourceRegistry:
    return ResourceRegistry(DEFAULT_RESOURCES)


# -- label selectors -----------------------------------------------------------------------------------

_LABEL_KEY = re.compile(r"^([a-z0-9]([-a-z0-9.]*[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
_LABEL_VALUE = re.compile(r"^([A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?)?$")
_SET_TERM = re.compile(r"^(?P<key>[^\s!=()]+)\s+(?P<op>in|notin)\s*\((?P<values>[^()]*)\)$")
_EQ_TERM = re.compile(r"^(?P<key>[^\s!=()]+)\s*(?P<op>==|=|!=)\s*(?P<value>[^\s!=(),]*)$")


@dataclass(frozen=True)
class LabelRequirement:
    key: str
    op: str  # "=", "!=", "in", "notin", "exists", "!"
    values: frozenset[str] = field(default_factory=frozenset)

    def matches(self, labels: Mapping[str, str]) -> bool:
        present = self.key in labels
        value = labels.get(self.key)
        if self.op == "exists":
            return present
        if self.op == "!":
            return not present
        if self.op in ("=", "in"):
            return present and value in self.values
        return not present or value not in self.values  # "!=" and "notin" match a missing label


def _split_terms(text: str) -> list[str]:
    terms: list[str] = []
    depth, start = 0, 0
    for i, ch in enumerate(text):
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
        elif ch == "," and depth == 0:
            terms.append(text[start:i])
            start = i + 1
    terms.append(text[start:])
    return [t.strip() for t in terms]


def _check_key(key: str) -> str:
    name = key.rsplit("/", 1)[-1]
    if not _LABEL_KEY.match(key) or len(name) > 63:
        raise ValueError(f"unable to parse requirement: invalid label key {key!r}")
    return key


def _check_value(value: str) -> str:
    if not _LABEL_VALUE.match(value) or len(value) > 63:
        raise ValueError(f"unable to parse requirement: invalid label value {value!r}")
    return value


def parse_label_selector(text: str | None) -> tuple[LabelRequirement, ...]:
    """`a=b,c!=d,e in (x,y),f notin (z),g,!h` → requirements (ValueError when malformed)."""
    if text is None or not text.strip():
        return ()
    reqs: list[LabelRequirement] = []
    for term in _split_terms(text):
        if not term:
            raise ValueError("unable to parse requirement: empty term")
        if term.startswith("!"):
            reqs.append(LabelRequirement(_check_key(term[1:].strip()), "!"))
        elif m := _SET_TERM.match(term):
            values = frozenset(_check_value(v.strip()) for v in m["values"].split(",")) if m["values"].strip() else None
            if not values:
                raise ValueError(
                    f"unable to parse requirement: {term!r}: for 'in', 'notin' operators, values set can't be empty"
                )
            reqs.append(LabelRequirement(_check_key(m["key"]), m["op"], values))
        elif m := _EQ_TERM.match(term):
            op = "!=" if m["op"] == "!=" else "="
            reqs.append(LabelRequirement(_check_key(m["key"]), op, frozenset({_check_value(m["value"])})))
        else:
            reqs.append(LabelRequirement(_check_key(term), "exists"))
    return tuple(reqs)


def labels_match(reqs: Iterable[LabelRequirement], labels: Mapping[str, str] | None) -> bool:
    present = labels or {}
    return all(r.matches(present) for r in reqs)


def selector_to_string(selector: Mapping[str, Any] | None) -> str:
    """A metav1.LabelSelector (matchLabels/matchExpressions) in its string form."""
    if not selector:
        return ""
    parts = [f"{k}={v}" for k, v in sorted((selector.get("matchLabels") or {}).items())]
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr.get("key", ""), expr.get("operator", ""), sorted(expr.get("values") or [])
        if op == "In":
            parts.append(f"{key} in ({','.join(values)})")
        elif op == "NotIn":
            parts.append(f"{key} notin ({','.join(values)})")
        elif op == "Exists":
            parts.append(key)
        elif op == "DoesNotExist":
            parts.append(f"!{key}")
    return ",".join(parts)


# -- field selectors -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class FieldRequirement:
    field: str
    value: str
    negate: bool

    def matches(self, obj: Mapping[str, Any]) -> bool:
        return (field_value(obj, self.field) == self.value) != self.negate


def field_value(obj: Mapping[str, Any], dotted: str) -> str:
    """The string form of a field (missing → ""), as field selectors compare it."""
    cur: Any = obj
    for part in dotted.split("."):
        if not isinstance(cur, Mapping) or part not in cur:
            return ""
        cur = cur[part]
    if cur is None:
        return ""
    if isinstance(cur, bool):
        return "true" if cur else "false"
    if isinstance(cur, Mapping):  # e.g. Event.source → "component"
        return str(cur.get("component", ""))
    return str(cur)


def parse_field_selector(text: str | None, rt: ResourceType) -> tuple[FieldRequirement, ...]:
    """`metadata.name=x,status.phase!=Running` (ValueError when malformed or unsupported)."""
    if text is None or not text.strip():
        return ()
    reqs: list[FieldRequirement] = []
    for term in text.split(","):
        term = term.strip()
        m = re.match(r"^(?P<f>[A-Za-z0-9_.]+)\s*(?P<op>==|=|!=)\s*(?P<v>.*)$", term)
        if not m:
            raise ValueError(f"invalid selector: '{text}'; can't understand '{term}'")
        if not rt.supports_field(m["f"]):
            raise ValueError(f"field label not supported: {m['f']}")
        reqs.append(FieldRequirement(m["f"], m["v"].strip(), m["op"] == "!="))
    return tuple(reqs)


def fields_match(reqs: Iterable[FieldRequirement], obj: Mapping[str, Any]) -> bool:
    return all(r.matches(obj) for r in reqs)


# -- Status errors -------------------------------------------------------------------------------------


class ApiError(Exception):
    """A failure the API answers with a `Status` object (and the HTTP code `code`)."""

    def __init__(
        self,
        code: int,
        reason: str,
        message: str,
        details: Mapping[str, Any] | None = None,
        headers: Mapping[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.code, self.reason, self.message = code, reason, message
        self.details = dict(details or {})
        self.headers = dict(headers or {})

    def to_status(self) -> dict[str, Any]:
        status: dict[str, Any] = {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure"}
        status["message"] = self.message
        if self.reason:
            status["reason"] = self.reason
        if self.details:
            status["details"] = self.details
        status["code"] = self.code
        return status


def _details(rt: ResourceType, name: str, kind: str | None = None) -> dict[str, Any]:
    details: dict[str, Any] = {"name": name} if name else {}
    if rt.group:
        details["group"] = rt.group
    details["kind"] = kind or rt.plural
    return details


MODIFIED_MESSAGE = "the object has been modified; please apply your changes to the latest version and try again"


def not_found(rt: ResourceType, name: str) -> ApiError:
    return ApiError(404, "NotFound", f'{rt.group_resource} "{name}" not found', _details(rt, name))


def already_exists(rt: ResourceType, name: str) -> ApiError:
    return ApiError(409, "AlreadyExists", f'{rt.group_resource} "{name}" already exists', _details(rt, name))


def conflict(rt: ResourceType, name: str, why: str = MODIFIED_MESSAGE) -> ApiError:
    message = f'Operation cannot be fulfilled on {rt.group_resource} "{name}": {why}'
    return ApiError(409, "Conflict", message, _details(rt, name))


_CAUSE_REASONS = {
    "Required": ("FieldValueRequired", "Required value"),
    "Invalid": ("FieldValueInvalid", "Invalid value"),
    "Forbidden": ("FieldValueForbidden", "Forbidden"),
    "NotSupported": ("FieldValueNotSupported", "Unsupported value"),
    "Duplicate": ("FieldValueDuplicate", "Duplicate value"),
}


def invalid(rt: ResourceType, name: str, causes: list[tuple[str, str, str]]) -> ApiError:
    """422 Invalid; causes are (field, "Required"|"Invalid"|"Forbidden"|..., message)."""
    qualified = f"{rt.kind}.{rt.group}" if rt.group else rt.kind
    parts = [f"{fld}: {msg}" for fld, _kind, msg in causes]
    joined = parts[0] if len(parts) == 1 else "[" + ", ".join(parts) + "]"
    details = _details(rt, name, rt.kind)
    details["causes"] = [
        {"reason": _CAUSE_REASONS.get(kind, ("FieldValueInvalid", ""))[0], "message": msg, "field": fld}
        for fld, kind, msg in causes
    ]
    return ApiError(422, "Invalid", f'{qualified} "{name}" is invalid: {joined}', details)


def bad_request(message: str) -> ApiError:
    return ApiError(400, "BadRequest", message)


def expired(message: str) -> ApiError:
    return ApiError(410, "Expired", message)


def method_not_allowed() -> ApiError:
    return ApiError(405, "MethodNotAllowed", "the server does not allow this method on the requested resource")


def unsupported_media_type(content_type: str, accepted: Iterable[str]) -> ApiError:
    message = (
        f"the body of the request was in an unknown format - accepted media types include: {', '.join(accepted)}"
        if content_type
        else "the body of the request has no Content-Type"
    )
    return ApiError(415, "UnsupportedMediaType", message)


def unprocessable(server_message: str) -> ApiError:
    """What a failed JSON patch operation gets (apiserver's generic 422 response)."""
    details = {"causes": [{"reason": "UnexpectedServerResponse", "message": server_message}]}
    return ApiError(422, "Invalid", "the server rejected our request due to an error in our request", details)


# -- patches -------------------------------------------------------------------------------------------

PATCH_TYPES = {
    "application/merge-patch+json": "merge",
    "application/strategic-merge-patch+json": "strategic",
    "application/json-patch+json": "json",
}


def merge_patch(target: Any, patch: Any) -> Any:
    """RFC 7386 JSON merge patch: objects merge recursively, null deletes, anything else replaces."""
    if not isinstance(patch, dict):
        return copy.deepcopy(patch)
    result = dict(target) if isinstance(target, dict) else {}
    for key, value in patch.items():
        if value is None:
            result.pop(key, None)
        else:
            result[key] = merge_patch(result.get(key), value)
    return result


def _json_equal(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return type(a) is type(b) and a == b
    if isinstance(a, dict) and isinstance(b, dict):
        return a.keys() == b.keys() and all(_json_equal(a[k], b[k]) for k in a)
    if isinstance(a, list) and isinstance(b, list):
        return len(a) == len(b) and all(_json_equal(x, y) for x, y in zip(a, b, strict=True))
    return bool(a == b) and (isinstance(a, int | float) == isinstance(b, int | float))


def _pointer(path: Any) -> list[str]:
    if not isinstance(path, str) or (path and not path.startswith("/")):
        raise unprocessable(f"JSON pointer {path!r} must be a string starting with '/'")
    return [p.replace("~1", "/").replace("~0", "~") for p in path.split("/")[1:]] if path else []


def _container(doc: Any, parts: list[str], path: str) -> Any:
    cur = doc
    for part in parts:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and part.isdigit() and int(part) < len(cur):
            cur = cur[int(part)]
        else:
            raise unprocessable(f"doc is missing path: {path}")
    return cur


def _index(container: list[Any], token: str, path: str, *, append: bool) -> int:
    if append and token == "-":
        return len(container)
    if not token.isdigit() or int(token) > len(container) - (0 if append else 1):
        raise unprocessable(f"Unable to access invalid index: {token} ({path})")
    return int(token)


def _op_add(doc: Any, path: str, value: Any) -> Any:
    parts = _pointer(path)
    if not parts:
        return copy.deepcopy(value)
    parent = _container(doc, parts[:-1], path)
    if isinstance(parent, dict):
        parent[parts[-1]] = copy.deepcopy(value)
    elif isinstance(parent, list):
        parent.insert(_index(parent, parts[-1], path, append=True), copy.deepcopy(value))
    else:
        raise unprocessable(f"doc is missing path: {path}")
    return doc


def _op_remove(doc: Any, path: str) -> tuple[Any, Any]:
    parts = _pointer(path)
    if not parts:
        raise unprocessable("unable to remove the whole document")
    parent = _container(doc, parts[:-1], path)
    if isinstance(parent, dict) and parts[-1] in parent:
        return doc, parent.pop(parts[-1])
    if isinstance(parent, list):
        return doc, parent.pop(_index(parent, parts[-1], path, append=False))
    raise unprocessable(f"Unable to remove nonexistent key: {parts[-1]}: missing value")


def json_patch(doc: Any, ops: Any) -> Any:
    """RFC 6902 JSON patch (add, remove, replace, move, copy, test); failures → 422."""
    doc = copy.deepcopy(doc)
    for op in ops:
        if not isinstance(op, dict):
            raise unprocessable("each JSON patch operation must be an object")
        kind, path = op.get("op"), op.get("path")
        if not isinstance(path, str):
            raise unprocessable(f"missing path for {kind} operation")
        if kind in ("add", "replace", "test") and "value" not in op:
            raise unprocessable(f"missing value for {kind} operation at {path}")
        if kind == "add":
            doc = _op_add(doc, path, op["value"])
        elif kind == "remove":
            doc, _ = _op_remove(doc, path)
        elif kind == "replace":
            if _pointer(path):
                doc, _ = _op_remove(doc, path)
            doc = _op_add(doc, path, op["value"])
        elif kind in ("move", "copy"):
            source = op.get("from")
            if kind == "move" and isinstance(source, str) and str(path).startswith(source + "/"):
                raise unprocessable(f"Unable to move {source} into its own child {path}")
            value = copy.deepcopy(_container(doc, _pointer(source), str(source)))
            if kind == "move":
                doc, _ = _op_remove(doc, str(source))
            doc = _op_add(doc, path, value)
        elif kind == "test":
            if not _json_equal(_container(doc, _pointer(path), str(path)), op["value"]):
                raise unprocessable(f"testing value {path} failed: test failed")
        else:
            raise unprocessable(f"Unexpected kind: {kind}")
    return doc


def apply_patch(doc: Any, patch: Any, patch_type: str, rt: ResourceType) -> Any:
    """Apply a patch as the API server does for `rt`.

    "strategic" (application/strategic-merge-patch+json) is applied as a JSON merge patch: the
    real server merges some lists element-wise by a key (containers by `name`, ...) and knows
    `$patch`/`$retainKeys` directives, while here every list is replaced whole. Like the real
    server, custom resources refuse it (415).
    """
    if patch_type == "json":
        if not isinstance(patch, list):
            kind = "object" if isinstance(patch, dict) else type(patch).__name__
            raise bad_request(f"json: cannot unmarshal {kind} into Go value of type jsonpatch.Patch")
        return json_patch(doc, patch)
    if patch_type == "strategic" and not rt.builtin:
        raise unsupported_media_type(
            "application/strategic-merge-patch+json",
            ["application/json-patch+json", "application/merge-patch+json", "application/apply-patch+yaml"],
        )
    if patch_type not in ("merge", "strategic"):
        raise unsupported_media_type(patch_type, PATCH_TYPES)
    if not isinstance(patch, dict):
        raise bad_request("the patch must be a JSON object")
    return merge_patch(doc, patch)
