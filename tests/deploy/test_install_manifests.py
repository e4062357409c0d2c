"""deploy/kubernetes: the install renders, validates, and is safe and least-privileged.

No kustomize binary here, so `render` implements the part of kustomize this install uses
(`resources` files and directories, `namespace`, `labels`, `images`) and refuses any other
field, so that a kustomization change the test cannot follow fails loudly.

Covers:
- every rendered object passes kubernetes-validate (Kubernetes 1.30, strict), CRDs included,
  and the CRDs are the generated ones;
- the controller Deployment: two replicas, leader election, probes, resources, non-root,
  read-only root filesystem, no privilege escalation, no capabilities, RuntimeDefault seccomp;
- the metrics Service reaches the controller pods;
- RBAC: no wildcards, no secret writes, leases only in the controller's namespace, and a
  table of what the controller can and cannot do.

The Dockerfile that builds the image: test_dockerfile.py.
"""

from __future__ import annotations

import copy
import functools
import re
import tomllib
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from rollouts.model import crds

Obj = dict[str, Any]

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy" / "kubernetes"
KUBERNETES_VERSION = "1.30.0"

# Kinds kustomize's namespace transformer leaves alone (a subset of its built-in list).
CLUSTER_SCOPED_KINDS = frozenset(
    {
        "Namespace",
        "ClusterRole",
        "ClusterRoleBinding",
        "CustomResourceDefinition",
        "PriorityClass",
        "StorageClass",
        "PersistentVolume",
        "ValidatingWebhookConfiguration",
        "MutatingWebhookConfiguration",
        "APIService",
    }
)
SUPPORTED_FIELDS = frozenset({"apiVersion", "kind", "namespace", "labels", "resources", "images"})


# --- a small kustomize -----------------------------------------------------------------------


def load(directory: Path) -> tuple[Obj, list[Obj]]:
    """Read a kustomization and its resources, each resource directory already rendered."""
    kustomization: Obj = yaml.safe_load((directory / "kustomization.yaml").read_text(encoding="utf-8"))
    objects: list[Obj] = []
    for entry in kustomization.get("resources", []):
        path = directory / entry
        if path.is_dir():
            objects.extend(render(path))
        else:
            objects.extend(doc for doc in yaml.safe_load_all(path.read_text(encoding="utf-8")) if doc)
    return kustomization, objects


def render(directory: Path) -> list[Obj]:
    kustomization, objects = load(directory)
    return transform(kustomization, objects)


def transform(kustomization: Obj, objects: Iterable[Obj]) -> list[Obj]:
    """Apply a kustomization's transformers to its resources (pure: the inputs are not changed)."""
    unsupported = set(kustomization) - SUPPORTED_FIELDS
    if unsupported:
        raise ValueError(f"kustomization fields this test cannot render: {sorted(unsupported)}")
    out = [copy.deepcopy(obj) for obj in objects]
    namespace = kustomization.get("namespace")
    for obj in out:
        metadata = obj.setdefault("metadata", {})
        if namespace and obj["kind"] not in CLUSTER_SCOPED_KINDS:
            metadata["namespace"] = namespace
        if namespace and obj["kind"] in ("RoleBinding", "ClusterRoleBinding"):
            # kustomize rewrites only subjects named "default".
            for subject in obj.get("subjects", []):
                if subject.get("name") == "default":
                    subject["namespace"] = namespace
        for entry in kustomization.get("labels", []):
            _apply_labels(obj, entry)
        for image in kustomization.get("images", []):
            for container in _containers(obj):
                container["image"] = _retag(container["image"], image)
    ids = [(o["apiVersion"], o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]) for o in out]
    duplicates = {i for i in ids if ids.count(i) > 1}
    if duplicates:
        raise ValueError(f"objects defined twice: {sorted(map(str, duplicates))}")
    return out


def _apply_labels(obj: Obj, entry: Obj) -> None:
    unsupported = set(entry) - {"pairs", "includeTemplates", "includeSelectors"}
    if unsupported or entry.get("includeSelectors"):
        raise ValueError(f"labels entry this test cannot render: {entry}")
    obj["metadata"].setdefault("labels", {}).update(entry["pairs"])
    template = obj.get("spec", {}).get("template")
    if entry.get("includeTemplates") and isinstance(template, dict):
        template.setdefault("metadata", {}).setdefault("labels", {}).update(entry["pairs"])


def _containers(obj: Obj) -> list[Obj]:
    pod = obj.get("spec", {}).get("template", {}).get("spec", {}) if obj["kind"] != "Pod" else obj.get("spec", {})
    return [*pod.get("containers", []), *pod.get("initContainers", [])]


_IMAGE = re.compile(r"^(?P<name>[^@]+?)(?::(?P<tag>[^:/@]+))?(?:@(?P<digest>.+))?$")


def _retag(image: str, rule: Obj) -> str:
    match = _IMAGE.match(image)
    assert match is not None, image
    if match["name"] != rule["name"]:
        return image
    name = str(rule.get("newName", match["name"]))
    if "digest" in rule:
        return f"{name}@{rule['digest']}"
    tag: str | None = rule.get("newTag", match["tag"])
    digest: str | None = None if "newTag" in rule else match["digest"]
    return name + (f":{tag}" if tag else "") + (f"@{digest}" if digest else "")


@pytest.mark.parametrize(
    ("image", "rule", "expected"),
    [
        pytest.param("ctl", {"name": "ctl", "newTag": "1.0"}, "ctl:1.0", id="add-tag"),
        pytest.param("ctl:0.9", {"name": "ctl", "newTag": "1.0"}, "ctl:1.0", id="replace-tag"),
        pytest.param("ctl:0.9", {"name": "ctl", "newName": "r.io/x/ctl"}, "r.io/x/ctl:0.9", id="rename"),
        pytest.param("r.io:5000/ctl:0.9", {"name": "r.io:5000/ctl", "newTag": "1"}, "r.io:5000/ctl:1", id="port"),
        pytest.param("ctl:0.9", {"name": "ctl", "digest": "sha256:ab"}, "ctl@sha256:ab", id="digest"),
        pytest.param("other:0.9", {"name": "ctl", "newTag": "1.0"}, "other:0.9", id="other-image"),
    ],
)
def test_image_rule(image: str, rule: Obj, expected: str) -> None:
    assert _retag(image, rule) == expected


def test_transform_namespaces_only_namespaced_objects() -> None:
    objects: list[Obj] = [
        {"apiVersion": "v1", "kind": "ServiceAccount", "metadata": {"name": "sa"}},
        {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "ns"}},
        {
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": {"name": "b"},
            "subjects": [{"kind": "ServiceAccount", "name": "default"}, {"kind": "ServiceAccount", "name": "sa"}],
        },
    ]
    sa, ns, binding = transform({"namespace": "x", "labels": [{"pairs": {"a": "b"}}]}, objects)
    assert sa["metadata"] == {"name": "sa", "namespace": "x", "labels": {"a": "b"}}
    assert ns["metadata"] == {"name": "ns", "labels": {"a": "b"}}
    assert binding["subjects"] == [
        {"kind": "ServiceAccount", "name": "default", "namespace": "x"},
        objects[2]["subjects"][1],
    ]
    assert "namespace" not in objects[0]["metadata"]
    with pytest.raises(ValueError, match="patches"):
        transform({"patches": []}, objects)
    with pytest.raises(ValueError, match="defined twice"):
        transform({}, [objects[0], objects[0]])


# --- the install -----------------------------------------------------------------------------


@functools.cache
def _install() -> tuple[Obj, ...]:
    return tuple(render(DEPLOY))


def _kustomization() -> Obj:
    kustomization: Obj = yaml.safe_load((DEPLOY / "kustomization.yaml").read_text(encoding="utf-8"))
    return kustomization


def _one(kind: str, name: str | None = None) -> Obj:
    found = [o for o in _install() if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]


def _id(obj: Obj) -> str:
    return f"{obj['kind']}/{obj['metadata']['name']}"


def test_install_has_every_part() -> None:
    kinds = sorted(_id(o) for o in _install())
    assert kinds == sorted(
        [
            "Namespace/rollouts",
            "CustomResourceDefinition/rollouts.argoproj.io",
            "CustomResourceDefinition/analysistemplates.argoproj.io",
            "CustomResourceDefinition/clusteranalysistemplates.argoproj.io",
            "CustomResourceDefinition/analysisruns.argoproj.io",
            "ServiceAccount/rollouts-controller",
            "ClusterRole/rollouts-controller",
            "ClusterRoleBinding/rollouts-controller",
            "Role/rollouts-controller-leader-election",
            "RoleBinding/rollouts-controller-leader-election",
            "Deployment/rollouts-controller",
            "Service/rollouts-controller-metrics",
        ]
    )


def _invalid(obj: Obj) -> str | None:
    try:
        kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
    except kubernetes_validate.ValidationError as exc:
        return f"{_id(obj)}: {'.'.join(map(str, exc.path))}: {exc.message}"
    return None


def test_every_object_is_valid_kubernetes() -> None:
    problems = [problem for obj in _install() if (problem := _invalid(obj))]
    assert problems == []


@pytest.mark.parametrize(
    ("kind", "path", "value", "message"),
    [
        pytest.param("Deployment", ("spec", "replicas"), "two", "'two' is not of type 'integer'", id="type"),
        pytest.param("Deployment", ("spec", "replica"), 2, "'replica' was unexpected", id="strict-unknown-field"),
        pytest.param(
            "CustomResourceDefinition",
            ("spec", "versions", 0, "schema", "openAPIV3Schema", "properties", "spec", "const"),
            "x",
            "'const' was unexpected",
            id="crd-schema-keyword",
        ),
    ],
)
def test_validation_is_not_vacuous(kind: str, path: tuple[str | int, ...], value: Any, message: str) -> None:
    obj = copy.deepcopy(next(o for o in _install() if o["kind"] == kind))
    target: Any = obj
    for part in path[:-1]:
        target = target[part]
    target[path[-1]] = value
    problem = _invalid(obj)
    assert problem is not None and message in problem, problem


def test_every_object_is_namespaced_and_labelled() -> None:
    namespace = _kustomization()["namespace"]
    assert _one("Namespace")["metadata"]["name"] == namespace
    for obj in _install():
        expected = None if obj["kind"] in CLUSTER_SCOPED_KINDS else namespace
        assert obj["metadata"].get("namespace") == expected, _id(obj)
        assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "rollouts", _id(obj)


def test_crds_are_the_generated_ones() -> None:
    installed = {o["metadata"]["name"]: o for o in _install() if o["kind"] == "CustomResourceDefinition"}
    generated = {c["metadata"]["name"]: c for c in crds.generate_crds()}
    assert installed.keys() == generated.keys()
    for name, crd in installed.items():
        assert crd["spec"] == generated[name]["spec"], name


def test_namespace_enforces_the_restricted_pod_security_standard() -> None:
    assert _one("Namespace")["metadata"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


# --- the controller Deployment ---------------------------------------------------------------


def _deployment() -> Obj:
    return _one("Deployment", "rollouts-controller")


def _pod() -> Obj:
    pod: Obj = _deployment()["spec"]["template"]["spec"]
    return pod


def _container() -> Obj:
    containers: list[Obj] = _pod()["containers"]
    assert len(containers) == 1
    return containers[0]


def test_two_replicas_with_leader_election() -> None:
    assert _deployment()["spec"]["replicas"] == 2
    container = _container()
    assert [*container["command"], *container["args"]] == [
        "rollouts",
        "controller",
        "--platform",
        "kubernetes",
        "--leader-elect",
    ]
    env = {e["name"]: e for e in container["env"]}
    assert env["POD_NAMESPACE"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.namespace"
    assert env["POD_NAME"]["valueFrom"]["fieldRef"]["fieldPath"] == "metadata.name"


def test_rolling_update_keeps_a_controller_up() -> None:
    assert _deployment()["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0


def test_selector_matches_the_pod_template() -> None:
    deployment = _deployment()
    selector = deployment["spec"]["selector"]["matchLabels"]
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert selector.items() <= labels.items()


def test_ports_and_probes() -> None:
    container = _container()
    assert {p["name"]: p["containerPort"] for p in container["ports"]} == {"metrics": 8090, "healthz": 8080}
    for probe in ("livenessProbe", "readinessProbe"):
        assert container[probe]["httpGet"] == {"path": "/healthz", "port": "healthz"}, probe


def test_resources_are_requested_and_limited() -> None:
    resources = _container()["resources"]
    for bound in ("requests", "limits"):
        assert set(resources[bound]) == {"cpu", "memory"}, bound


def test_runs_as_non_root_on_a_read_only_root_filesystem() -> None:
    pod, container = _pod(), _container()
    security = container["securityContext"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == security["runAsUser"] == 65532
    assert security["runAsNonRoot"] is True
    assert security["readOnlyRootFilesystem"] is True
    assert security["allowPrivilegeEscalation"] is False
    assert security.get("privileged", False) is False
    assert security["capabilities"] == {"drop": ["ALL"]}
    assert security["seccompProfile"] == pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    assert not pod.get("hostNetwork") and not pod.get("hostPID") and not pod.get("hostIPC")
    # The one writable path is an emptyDir.
    [mount] = container["volumeMounts"]
    assert mount["mountPath"] == "/tmp"
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mount["name"]]


def test_image_is_tagged_with_the_package_version() -> None:
    version = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["version"]
    assert _container()["image"] == f"rollouts-controller:{version}"
    assert _container()["imagePullPolicy"] == "IfNotPresent"


def test_metrics_service_reaches_the_controller() -> None:
    service = _one("Service", "rollouts-controller-metrics")
    labels = _deployment()["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    [port] = service["spec"]["ports"]
    assert (port["name"], port["port"], port["targetPort"]) == ("metrics", 8090, "metrics")


# --- RBAC ------------------------------------------------------------------------------------


def _rules(kind: str) -> list[Obj]:
    rules: list[Obj] = _one(kind)["rules"]
    return rules


def _allows(rules: list[Obj], group: str, resource: str, verb: str) -> bool:
    return any(
        group in rule.get("apiGroups", []) and resource in rule.get("resources", []) and verb in rule["verbs"]
        for rule in rules
    )


def test_no_wildcards_anywhere() -> None:
    for kind in ("ClusterRole", "Role"):
        for rule in _rules(kind):
            for key in ("apiGroups", "resources", "verbs", "resourceNames"):
                assert "*" not in rule.get(key, []), (kind, rule)
            assert "nonResourceURLs" not in rule, (kind, rule)
            assert not {"escalate", "bind", "impersonate"} & set(rule["verbs"]), (kind, rule)


def test_secrets_are_read_only() -> None:
    for kind in ("ClusterRole", "Role"):
        for rule in _rules(kind):
            if "secrets" in rule["resources"]:
                assert set(rule["verbs"]) <= {"get", "list", "watch"}, (kind, rule)


CLUSTER_CAN = [
    ("argoproj.io", "rollouts", "watch"),
    ("argoproj.io", "rollouts", "patch"),
    ("argoproj.io", "rollouts/status", "update"),
    ("argoproj.io", "analysisruns", "create"),
    ("argoproj.io", "analysisruns", "delete"),
    ("argoproj.io", "analysisruns/status", "patch"),
    ("argoproj.io", "analysistemplates", "get"),
    ("argoproj.io", "clusteranalysistemplates", "list"),
    ("argoproj.io", "experiments", "watch"),
    ("apps", "replicasets", "create"),
    ("apps", "replicasets", "delete"),
    ("", "services", "patch"),
    ("", "pods", "delete"),
    ("", "pods", "update"),
    ("", "pods/log", "get"),
    ("", "secrets", "get"),
    ("", "events", "create"),
    ("events.k8s.io", "events", "create"),
    ("networking.k8s.io", "ingresses", "create"),
    ("networking.k8s.io", "ingresses", "delete"),
    ("batch", "jobs", "create"),
    ("batch", "jobs", "delete"),
]
CLUSTER_CANNOT = [
    ("argoproj.io", "rollouts", "create"),
    ("argoproj.io", "rollouts", "delete"),
    ("argoproj.io", "analysistemplates", "update"),
    ("argoproj.io", "clusteranalysistemplates", "delete"),
    ("", "secrets", "create"),
    ("", "secrets", "update"),
    ("", "secrets", "patch"),
    ("", "secrets", "delete"),
    ("", "pods", "create"),
    ("", "pods/exec", "create"),
    ("", "services", "create"),
    ("", "services", "delete"),
    ("", "configmaps", "get"),
    ("apps", "deployments", "update"),
    ("coordination.k8s.io", "leases", "update"),
    ("rbac.authorization.k8s.io", "clusterroles", "create"),
]


@pytest.mark.parametrize(("group", "resource", "verb"), CLUSTER_CAN, ids=lambda v: v or "core")
def test_cluster_role_allows(group: str, resource: str, verb: str) -> None:
    assert _allows(_rules("ClusterRole"), group, resource, verb)


@pytest.mark.parametrize(("group", "resource", "verb"), CLUSTER_CANNOT, ids=lambda v: v or "core")
def test_cluster_role_denies(group: str, resource: str, verb: str) -> None:
    assert not _allows(_rules("ClusterRole"), group, resource, verb)


def test_leases_only_in_the_controller_namespace() -> None:
    role = _one("Role")
    assert role["metadata"]["namespace"] == _kustomization()["namespace"]
    assert role["rules"] == [
        {"apiGroups": ["coordination.k8s.io"], "resources": ["leases"], "verbs": ["get", "create", "update"]}
    ]


@pytest.mark.parametrize(("binding", "role"), [("ClusterRoleBinding", "ClusterRole"), ("RoleBinding", "Role")])
def test_bindings_grant_the_controller_service_account(binding: str, role: str) -> None:
    bound = _one(binding)
    account = _one("ServiceAccount")
    assert bound["roleRef"] == {
        "apiGroup": "rbac.authorization.k8s.io",
        "kind": role,
        "name": _one(role)["metadata"]["name"],
    }
    # kustomize does not rewrite these subjects: they must name the install's namespace.
    assert bound["subjects"] == [
        {"kind": "ServiceAccount", "name": account["metadata"]["name"], "namespace": account["metadata"]["namespace"]}
    ]
    assert _pod()["serviceAccountName"] == account["metadata"]["name"]
