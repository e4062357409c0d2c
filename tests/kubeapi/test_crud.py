"""The stand-in's discovery, create/get/list/delete and error shapes, through kubernetes_asyncio and raw HTTP."""

# ruff: noqa: F811  (test parameters named after the imported pytest fixtures)

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client, config
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.kubeapi import DEFAULT_TOKEN, KubeAPIServer
from tests.support.kubeapi.fixtures import kube_api, kube_client, kubeconfig  # noqa: F401  (pytest fixtures)

ARGO = ("argoproj.io", "v1alpha1")
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


def status_of(exc: ApiException) -> dict[str, Any]:
    """The Status object the server answered with (kubernetes_asyncio keeps the raw body)."""
    parsed: dict[str, Any] = json.loads(exc.body or b"{}")
    return parsed


def rollout(name: str, replicas: int = 1, labels: dict[str, str] | None = None) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name, "labels": labels or {}}
    return {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "metadata": meta, "spec": {"replicas": replicas}}


def configmap(name: str, labels: dict[str, str] | None = None) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name, "labels": labels or {}}}


async def test_kubeconfig_loads_through_the_default_configuration(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    previous = client.Configuration.get_default_copy()
    try:
        async with asyncio.timeout(5):
            await config.load_kube_config(config_file=str(kubeconfig))  # sets the process-wide default
            async with client.ApiClient() as api:
                version = await client.VersionApi(api).get_code()
                namespaces = await client.CoreV1Api(api).list_namespace()
    finally:
        client.Configuration.set_default(previous)
    assert version.git_version == "v1.31.0"
    assert {ns.metadata.name for ns in namespaces.items} == {"default", "kube-system"}
    assert namespaces.items[0].status.phase == "Active"
    assert ("GET", "/version/", {}) in kube_api.requests  # kubernetes_asyncio asks with a trailing slash


async def test_discovery_lists_groups_resources_and_subresources(kube_client: Any) -> None:
    async with asyncio.timeout(5):
        groups = await client.ApisApi(kube_client).get_api_versions()
        core = await client.CoreV1Api(kube_client).get_api_resources()
        argo = await client.CustomObjectsApi(kube_client).get_api_resources(*ARGO)
    names = {g.name for g in groups.groups}
    assert {"apps", "batch", "networking.k8s.io", "coordination.k8s.io", "events.k8s.io", "argoproj.io"} <= names
    by_name = {r.name: r for r in argo.resources}
    assert by_name["rollouts"].kind == "Rollout" and by_name["rollouts"].short_names == ["ro"]
    assert by_name["rollouts"].singular_name == "rollout" and by_name["rollouts"].namespaced
    assert "watch" in by_name["rollouts"].verbs
    assert by_name["rollouts/status"].verbs == ["get", "patch", "update"]
    assert (by_name["rollouts/scale"].group, by_name["rollouts/scale"].kind) == ("autoscaling", "Scale")
    assert by_name["analysisruns/status"].kind == "AnalysisRun"
    assert not by_name["clusteranalysistemplates"].namespaced
    core_names = {r.name for r in core.resources}
    assert {"pods", "pods/status", "services", "secrets", "configmaps", "events", "namespaces"} <= core_names


async def test_create_answers_201_with_system_fields(kube_api: KubeAPIServer, kube_client: Any) -> None:
    async with asyncio.timeout(5):
        created = await client.CustomObjectsApi(kube_client).create_namespaced_custom_object(
            *ARGO, "default", "rollouts", rollout("web")
        )
        async with httpx.AsyncClient(base_url=kube_api.url, headers=AUTH) as raw:
            resp = await raw.post("/apis/argoproj.io/v1alpha1/namespaces/default/rollouts", json=rollout("api"))
    assert isinstance(created, dict)  # the body, not None: the server answered 201 with the object
    meta = created["metadata"]
    assert meta["name"] == "web" and meta["namespace"] == "default" and meta["generation"] == 1
    assert meta["uid"] and meta["creationTimestamp"].endswith("Z") and int(meta["resourceVersion"]) > 0
    assert resp.status_code == 201 and resp.json()["metadata"]["name"] == "api"
    assert int(resp.json()["metadata"]["resourceVersion"]) > int(meta["resourceVersion"])


async def test_generate_name_and_already_exists(kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    async with asyncio.timeout(5):
        made = await core.create_namespaced_config_map("default", {"metadata": {"generateName": "cfg-"}})
        await core.create_namespaced_config_map("default", configmap("fixed"))
        with pytest.raises(ApiException) as caught:
            await core.create_namespaced_config_map("default", configmap("fixed"))
    assert made.metadata.name.startswith("cfg-") and len(made.metadata.name) == len("cfg-") + 5
    assert made.api_version == "v1" and made.kind == "ConfigMap"  # defaulted from the URL for built-ins
    assert caught.value.status == 409
    assert status_of(caught.value)["reason"] == "AlreadyExists"
    assert status_of(caught.value)["message"] == 'configmaps "fixed" already exists'


async def test_missing_namespace_and_missing_object_are_404(kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        with pytest.raises(ApiException) as no_ns:
            await custom.create_namespaced_custom_object(*ARGO, "nowhere", "rollouts", rollout("web"))
        with pytest.raises(ApiException) as no_obj:
            await custom.get_namespaced_custom_object(*ARGO, "default", "rollouts", "ghost")
        core: Any = client.CoreV1Api(kube_client)
        await core.create_namespace({"metadata": {"name": "team-a"}})
        created = await custom.create_namespaced_custom_object(*ARGO, "team-a", "rollouts", rollout("web"))
    assert no_ns.value.status == 404 and status_of(no_ns.value)["message"] == 'namespaces "nowhere" not found'
    assert no_obj.value.status == 404
    assert status_of(no_obj.value)["message"] == 'rollouts.argoproj.io "ghost" not found'
    assert status_of(no_obj.value)["details"] == {"name": "ghost", "group": "argoproj.io", "kind": "rollouts"}
    assert created["metadata"]["namespace"] == "team-a"


async def test_body_must_match_the_url(kube_api: KubeAPIServer) -> None:
    base = "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts"
    async with asyncio.timeout(5), httpx.AsyncClient(base_url=kube_api.url, headers=AUTH) as raw:
        wrong_kind = await raw.post(base, json={**rollout("a"), "kind": "Experiment"})
        wrong_version = await raw.post(base, json={**rollout("a"), "apiVersion": "argoproj.io/v1"})
        no_kind = await raw.post(base, json={"apiVersion": "argoproj.io/v1alpha1", "metadata": {"name": "a"}})
        other_ns = await raw.post(base, json={**rollout("a"), "metadata": {"name": "a", "namespace": "kube-system"}})
        no_name = await raw.post(base, json={**rollout("a"), "metadata": {}})
        bad_name = await raw.post(base, json={**rollout("a"), "metadata": {"name": "Web_1"}})
        with_rv = await raw.post(base, json={**rollout("a"), "metadata": {"name": "a", "resourceVersion": "5"}})
        await raw.post(base, json=rollout("a"))
        renamed = await raw.put(f"{base}/a", json=rollout("b"))
        not_json = await raw.post(base, content=b"{nope", headers={"Content-Type": "application/json"})
    for resp in (wrong_kind, wrong_version, no_kind, other_ns, renamed, not_json):
        assert resp.status_code == 400, resp.text
        assert resp.json()["reason"] == "BadRequest" and resp.json()["kind"] == "Status"
    assert "does not match the expected API version (argoproj.io/v1alpha1)" in wrong_version.json()["message"]
    assert "Object 'Kind' is missing" in no_kind.json()["message"]
    assert renamed.json()["message"] == "the name of the object (b) does not match the name on the URL (a)"
    assert no_name.status_code == 422 and no_name.json()["reason"] == "Invalid"
    assert no_name.json()["message"] == (
        'Rollout.argoproj.io "" is invalid: metadata.name: Required value: name or generateName is required'
    )
    assert no_name.json()["details"]["causes"][0]["field"] == "metadata.name"
    assert bad_name.status_code == 422 and "RFC 1123 subdomain" in bad_name.json()["message"]
    assert with_rv.status_code == 500
    assert with_rv.json()["message"] == "resourceVersion should not be set on objects to be created"


async def test_replicaset_validation_and_defaults(kube_client: Any) -> None:
    apps: Any = client.AppsV1Api(kube_client)
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    good: dict[str, Any] = {
        "metadata": {"name": "web-1"},
        "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template},
    }
    mismatched = {"metadata": {"name": "web-2"}, "spec": {**good["spec"], "selector": {"matchLabels": {"app": "x"}}}}
    async with asyncio.timeout(5):
        made = await apps.create_namespaced_replica_set("default", good)
        with pytest.raises(ApiException) as caught:
            await apps.create_namespaced_replica_set("default", mismatched)
        with pytest.raises(ApiException) as immutable:
            await apps.patch_namespaced_replica_set(
                "web-1", "default", {"spec": {"selector": {"matchLabels": {"app": "web", "v": "2"}}}}
            )
    assert made.spec.replicas == 1  # defaulted
    assert made.status.replicas == 0 and made.status.ready_replicas is None  # reset on create, as serialized
    assert (
        caught.value.status == 422
        and "`selector` does not match template `labels`" in status_of(caught.value)["message"]
    )
    assert immutable.value.status == 422 and "field is immutable" in status_of(immutable.value)["message"]


async def test_list_with_label_and_field_selectors(kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    specs = {
        "a": {"app": "web", "tier": "front"},
        "b": {"app": "web", "tier": "back"},
        "c": {"app": "db"},
        "d": {},
    }
    async with asyncio.timeout(5):
        for name, labels in specs.items():
            await core.create_namespaced_config_map("default", configmap(name, labels))
        await core.create_namespaced_config_map("kube-system", configmap("e", {"app": "web"}))

        async def names(**kwargs: Any) -> list[str]:
            result = await core.list_namespaced_config_map("default", **kwargs)
            return [item.metadata.name for item in result.items]

        assert await names(label_selector="app=web") == ["a", "b"]
        assert await names(label_selector="app==web,tier!=back") == ["a"]
        assert await names(label_selector="tier!=back") == ["a", "c", "d"]  # != matches a missing label
        assert await names(label_selector="app in (web, db)") == ["a", "b", "c"]
        assert await names(label_selector="app notin (web)") == ["c", "d"]
        assert await names(label_selector="tier") == ["a", "b"]
        assert await names(label_selector="!tier") == ["c", "d"]
        assert await names(field_selector="metadata.name=c") == ["c"]
        assert await names(field_selector="metadata.name!=c,metadata.namespace=default") == ["a", "b", "d"]
        everywhere = await core.list_config_map_for_all_namespaces(label_selector="app=web")
        assert [(i.metadata.namespace, i.metadata.name) for i in everywhere.items] == [
            ("default", "a"),
            ("default", "b"),
            ("kube-system", "e"),
        ]
        with pytest.raises(ApiException) as bad_field:
            await core.list_namespaced_config_map("default", field_selector="data.x=1")
        with pytest.raises(ApiException) as bad_label:
            await core.list_namespaced_config_map("default", label_selector="app in web")
    assert (
        bad_field.value.status == 400 and status_of(bad_field.value)["message"] == "field label not supported: data.x"
    )
    assert bad_label.value.status == 400


async def test_list_shape_and_pagination(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        for i in range(5):
            await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout(f"r{i}"))
        first = await custom.list_namespaced_custom_object(*ARGO, "default", "rollouts", limit=2)
        second = await custom.list_namespaced_custom_object(
            *ARGO, "default", "rollouts", limit=2, _continue=first["metadata"]["continue"]
        )
        async with httpx.AsyncClient(base_url=kube_api.url, headers=AUTH) as raw:
            pods = (await raw.get("/api/v1/namespaces/default/configmaps")).json()
    assert first["kind"] == "RolloutList" and first["apiVersion"] == "argoproj.io/v1alpha1"
    assert [i["metadata"]["name"] for i in first["items"]] == ["r0", "r1"]
    assert first["metadata"]["remainingItemCount"] == 3
    assert [i["metadata"]["name"] for i in second["items"]] == ["r2", "r3"]
    assert first["items"][0]["kind"] == "Rollout"  # custom resources keep kind in list items
    assert pods["kind"] == "ConfigMapList" and pods["metadata"]["resourceVersion"] == str(
        kube_api.store.resource_version
    )


async def test_delete_answers_status_or_object(kube_client: Any) -> None:
    core: Any = client.CoreV1Api(kube_client)
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        await core.create_namespaced_config_map("default", configmap("cm"))
        await custom.create_namespaced_custom_object(*ARGO, "default", "rollouts", rollout("web"))
        status = await core.delete_namespaced_config_map("cm", "default")
        deleted = await custom.delete_namespaced_custom_object(*ARGO, "default", "rollouts", "web")
        with pytest.raises(ApiException) as again:
            await custom.delete_namespaced_custom_object(*ARGO, "default", "rollouts", "web")
    assert status.status == "Success" and status.details.name == "cm" and status.details.kind == "configmaps"
    assert deleted["metadata"]["name"] == "web"
    assert again.value.status == 404


async def test_cluster_scoped_custom_resources(kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    body = {"apiVersion": "argoproj.io/v1alpha1", "kind": "ClusterAnalysisTemplate", "metadata": {"name": "rate"}}
    async with asyncio.timeout(5):
        made = await custom.create_cluster_custom_object(*ARGO, "clusteranalysistemplates", {**body, "spec": {}})
        got = await custom.get_cluster_custom_object(*ARGO, "clusteranalysistemplates", "rate")
        listed = await custom.list_cluster_custom_object(*ARGO, "clusteranalysistemplates")
    assert "namespace" not in made["metadata"] and got["metadata"]["uid"] == made["metadata"]["uid"]
    assert [i["metadata"]["name"] for i in listed["items"]] == ["rate"]


async def test_auth_token_is_required(kube_api: KubeAPIServer) -> None:
    async with asyncio.timeout(5), httpx.AsyncClient(base_url=kube_api.url) as raw:
        anonymous = await raw.get("/api/v1/namespaces")
        wrong = await raw.get("/api/v1/namespaces", headers={"Authorization": "Bearer nope"})
        version = await raw.get("/version")
        unknown = await raw.get("/apis/nothing.example.com/v1/things", headers=AUTH)
        bad_method = await raw.post("/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web", headers=AUTH)
    assert anonymous.status_code == wrong.status_code == 401
    assert anonymous.json()["reason"] == "Unauthorized"
    assert version.status_code == 200
    assert unknown.status_code == 404 and unknown.json()["reason"] == "NotFound"
    assert bad_method.status_code == 405 and bad_method.json()["reason"] == "MethodNotAllowed"


def test_sync_clients_and_the_store_api(kube_api: KubeAPIServer) -> None:
    with httpx.Client(base_url=kube_api.url, headers=AUTH, timeout=5) as raw:
        made = raw.post(
            "/api/v1/namespaces/default/secrets", json={"metadata": {"name": "s"}, "stringData": {"k": "v"}}
        )
        assert made.status_code == 201 and made.json()["data"] == {"k": "dg=="}
    stored = kube_api.store.get("Secret", "default", "s")
    assert stored is not None and stored["metadata"]["uid"] == made.json()["metadata"]["uid"]
    assert kube_api.store.get("secrets", "default", "missing") is None
    kube_api.store.create("rollouts.argoproj.io", rollout("web", labels={"app": "web"}), "default")
    assert [o["metadata"]["name"] for o in kube_api.store.list("ro", label_selector="app=web")] == ["web"]


def collection_url(api: KubeAPIServer, resource: str) -> str:
    rt = api.registry.resolve(resource)
    prefix = f"/apis/{rt.group}/{rt.version}" if rt.group else "/api/v1"
    return f"{prefix}/namespaces/default/{rt.plural}" if rt.namespaced else f"{prefix}/{rt.plural}"


@pytest.mark.parametrize(
    "resource",
    [
        "services",
        "pods",
        "secrets",
        "configmaps",
        "events",
        "namespaces",
        "replicasets.apps",
        "deployments.apps",
        "jobs.batch",
        "ingresses.networking.k8s.io",
        "leases.coordination.k8s.io",
        "events.events.k8s.io",
        "rollouts.argoproj.io",
        "analysisruns.argoproj.io",
        "analysistemplates.argoproj.io",
        "clusteranalysistemplates.argoproj.io",
        "experiments.argoproj.io",
    ],
)
def test_every_resource_round_trips_through_its_url(kube_api: KubeAPIServer, resource: str) -> None:
    rt = kube_api.registry.resolve(resource)
    body: dict[str, Any] = {"apiVersion": rt.api_version, "kind": rt.kind, "metadata": {"name": "x1"}}
    if rt.kind in ("ReplicaSet", "Deployment"):
        labels = {"app": "x"}
        body["spec"] = {"selector": {"matchLabels": labels}, "template": {"metadata": {"labels": labels}}}
    url = collection_url(kube_api, resource)
    with httpx.Client(base_url=kube_api.url, headers=AUTH, timeout=5) as raw:
        created = raw.post(url, json=body)
        fetched = raw.get(f"{url}/x1")
        listed = raw.get(url)
        dry = raw.delete(f"{url}/x1", params={"dryRun": "All"})
        deleted = raw.delete(f"{url}/x1")
        gone = raw.get(f"{url}/x1")
    assert created.status_code == 201, created.text
    assert fetched.status_code == 200 and fetched.json()["metadata"]["uid"] == created.json()["metadata"]["uid"]
    assert fetched.json()["kind"] == rt.kind and fetched.json()["apiVersion"] == rt.api_version
    assert "x1" in [item["metadata"]["name"] for item in listed.json()["items"]]
    assert listed.json()["kind"] == f"{rt.kind}List"
    assert dry.status_code == 200 and deleted.status_code == 200
    assert gone.status_code == 404
    assert gone.json()["message"] == f'{rt.group_resource} "x1" not found'
    if rt.has_status and not rt.builtin:
        assert "status" not in created.json()


def test_dry_run_writes_nothing(kube_api: KubeAPIServer) -> None:
    url = "/api/v1/namespaces/default/configmaps"
    rv = kube_api.store.resource_version
    with httpx.Client(base_url=kube_api.url, headers=AUTH, timeout=5) as raw:
        made = raw.post(url, params={"dryRun": "All"}, json={"metadata": {"name": "cm"}, "data": {"a": "1"}})
    assert made.status_code == 201 and made.json()["metadata"]["uid"]
    assert kube_api.store.get("configmaps", "default", "cm") is None
    assert kube_api.store.resource_version == rv
