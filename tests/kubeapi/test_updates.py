"""Replace, patch, status/scale subresources, generation, optimistic concurrency and finalizers."""

# ruff: noqa: F811  (test parameters named after the imported pytest fixtures)

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client
from kubernetes_asyncio.client.exceptions import ApiException

from tests.support.kubeapi import DEFAULT_TOKEN, KubeAPIServer
from tests.support.kubeapi.fixtures import kube_api, kube_client, kubeconfig  # noqa: F401  (pytest fixtures)

ARGO = ("argoproj.io", "v1alpha1")
MERGE: dict[str, Any] = {"_content_type": "application/merge-patch+json"}  # not in the stubs
JSON_PATCH = "application/json-patch+json"
AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}


def status_of(exc: ApiException) -> dict[str, Any]:
    """The Status object the server answered with (kubernetes_asyncio keeps the raw body)."""
    parsed: dict[str, Any] = json.loads(exc.body or b"{}")
    return parsed


def rollout(name: str, replicas: int = 1) -> dict[str, Any]:
    return {
        "apiVersion": "argoproj.io/v1alpha1",
        "kind": "Rollout",
        "metadata": {"name": name},
        "spec": {"replicas": replicas, "strategy": {"canary": {"steps": [{"setWeight": 20}]}}},
    }


async def make(custom: Any, name: str = "web", replicas: int = 1) -> dict[str, Any]:
    made: dict[str, Any] = await custom.create_namespaced_custom_object(
        *ARGO, "default", "rollouts", rollout(name, replicas)
    )
    return made


async def test_replace_with_a_stale_resource_version_is_409(kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        first = await make(custom)
        first["spec"]["replicas"] = 2
        second = await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "web", first)
        first["spec"]["replicas"] = 3  # still carries the first resourceVersion
        with pytest.raises(ApiException) as caught:
            await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "web", first)
        unconditional = {**first, "metadata": {"name": "web"}}  # no resourceVersion: last write wins
        third = await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "web", unconditional)
    assert int(second["metadata"]["resourceVersion"]) > int(first["metadata"]["resourceVersion"])
    assert caught.value.status == 409
    assert status_of(caught.value) == {
        "kind": "Status",
        "apiVersion": "v1",
        "metadata": {},
        "status": "Failure",
        "message": 'Operation cannot be fulfilled on rollouts.argoproj.io "web": the object has been modified; '
        "please apply your changes to the latest version and try again",
        "reason": "Conflict",
        "details": {"name": "web", "group": "argoproj.io", "kind": "rollouts"},
        "code": 409,
    }
    assert third["spec"]["replicas"] == 3 and third["metadata"]["uid"] == first["metadata"]["uid"]


async def test_status_subresource_isolation_both_ways(kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        made = await make(custom)
        # PUT on the main resource: status changes are dropped, spec changes kept.
        changed = {**made, "spec": {**made["spec"], "replicas": 4}, "status": {"phase": "Healthy"}}
        main = await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "web", changed)
        # PUT on /status: only status changes, spec/labels ignored.
        changed = {**main, "spec": {"replicas": 9}, "status": {"phase": "Progressing"}}
        changed["metadata"] = {**main["metadata"], "labels": {"x": "y"}}
        status = await custom.replace_namespaced_custom_object_status(*ARGO, "default", "rollouts", "web", changed)
        # PATCH, both ways, same isolation.
        patched_main = await custom.patch_namespaced_custom_object(
            *ARGO,
            "default",
            "rollouts",
            "web",
            {"spec": {"paused": True}, "status": {"phase": "X"}},
            **MERGE,
        )
        patched_status = await custom.patch_namespaced_custom_object_status(
            *ARGO,
            "default",
            "rollouts",
            "web",
            {"spec": {"paused": False}, "status": {"HPAReplicas": 4}},
            **MERGE,
        )
        # A stale resourceVersion on /status is a conflict too.
        with pytest.raises(ApiException) as stale:
            await custom.replace_namespaced_custom_object_status(*ARGO, "default", "rollouts", "web", main)
    assert "status" not in made  # ignored on create
    assert main["spec"]["replicas"] == 4 and "status" not in main
    assert status["spec"]["replicas"] == 4 and status["status"] == {"phase": "Progressing"}
    assert "labels" not in status["metadata"]
    assert patched_main["spec"]["paused"] is True and patched_main["status"] == {"phase": "Progressing"}
    assert patched_status["spec"]["paused"] is True
    assert patched_status["status"] == {"phase": "Progressing", "HPAReplicas": 4}
    assert stale.value.status == 409


async def test_generation_counts_spec_changes_only(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    core: Any = client.CoreV1Api(kube_client)

    async def patch(body: dict[str, Any], *, status: bool = False) -> dict[str, Any]:
        fn = custom.patch_namespaced_custom_object_status if status else custom.patch_namespaced_custom_object
        result: dict[str, Any] = await fn(*ARGO, "default", "rollouts", "web", body, **MERGE)
        return result

    async with asyncio.timeout(5):
        made = await make(custom)
        labelled = await patch({"metadata": {"labels": {"a": "b"}, "annotations": {"c": "d"}}})
        with_status = await patch({"status": {"phase": "Healthy"}}, status=True)
        respec = await patch({"spec": {"replicas": 5}})
        cm = await core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"k": "1"}})
        cm2 = await core.patch_namespaced_config_map("cm", "default", {"data": {"k": "2"}})
        cm3 = await core.patch_namespaced_config_map("cm", "default", {"metadata": {"labels": {"x": "y"}}})
    assert made["metadata"]["generation"] == 1
    assert labelled["metadata"]["generation"] == 1
    assert with_status["metadata"]["generation"] == 1
    assert respec["metadata"]["generation"] == 2
    rvs = [int(o["metadata"]["resourceVersion"]) for o in (made, labelled, with_status, respec)]
    assert rvs == sorted(rvs) and len(set(rvs)) == 4  # every write bumps the global counter
    # A kind without spec: anything outside metadata counts.
    assert (cm.metadata.generation, cm2.metadata.generation, cm3.metadata.generation) == (1, 2, 2)


async def test_an_unchanged_write_is_not_a_write(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        made = await make(custom)
        same = await custom.replace_namespaced_custom_object(*ARGO, "default", "rollouts", "web", made)
        patched = await custom.patch_namespaced_custom_object(
            *ARGO, "default", "rollouts", "web", {"spec": {"replicas": 1}}, **MERGE
        )
    assert (
        same["metadata"]["resourceVersion"]
        == patched["metadata"]["resourceVersion"]
        == made["metadata"]["resourceVersion"]
    )
    assert kube_api.store.resource_version == int(made["metadata"]["resourceVersion"])


async def test_merge_patch_and_json_patch(kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        await make(custom)
        merged = await custom.patch_namespaced_custom_object(
            *ARGO,
            "default",
            "rollouts",
            "web",
            {"metadata": {"labels": {"a": "1"}}, "spec": {"strategy": None, "paused": True}},
            **MERGE,
        )
        ops = [
            {"op": "test", "path": "/spec/paused", "value": True},
            {"op": "add", "path": "/metadata/annotations", "value": {"note/x": "1"}},
            {"op": "replace", "path": "/spec/replicas", "value": 3},
            {"op": "add", "path": "/spec/steps", "value": [{"pause": {}}]},
            {"op": "add", "path": "/spec/steps/-", "value": {"setWeight": 50}},
            {"op": "add", "path": "/spec/steps/0", "value": {"setWeight": 10}},
            {"op": "copy", "from": "/spec/replicas", "path": "/spec/minReplicas"},
            {"op": "move", "from": "/metadata/labels/a", "path": "/metadata/labels/b"},
            {"op": "remove", "path": "/spec/paused"},
        ]
        # A list body is sent as application/json-patch+json by kubernetes_asyncio.
        patched = await custom.patch_namespaced_custom_object(*ARGO, "default", "rollouts", "web", ops)
        with pytest.raises(ApiException) as failed_test:
            await custom.patch_namespaced_custom_object(
                *ARGO, "default", "rollouts", "web", [{"op": "test", "path": "/spec/replicas", "value": 7}]
            )
        with pytest.raises(ApiException) as missing:
            await custom.patch_namespaced_custom_object(
                *ARGO, "default", "rollouts", "web", [{"op": "remove", "path": "/spec/nothing"}]
            )
    assert "strategy" not in merged["spec"] and merged["spec"]["paused"] is True
    assert merged["metadata"]["labels"] == {"a": "1"}
    assert patched["spec"]["replicas"] == 3 and patched["spec"]["minReplicas"] == 3
    assert patched["spec"]["steps"] == [{"setWeight": 10}, {"pause": {}}, {"setWeight": 50}]
    assert patched["metadata"]["labels"] == {"b": "1"} and patched["metadata"]["annotations"] == {"note/x": "1"}
    assert "paused" not in patched["spec"]
    assert failed_test.value.status == 422 and status_of(failed_test.value)["reason"] == "Invalid"
    assert "testing value /spec/replicas failed" in str(status_of(failed_test.value)["details"])
    assert missing.value.status == 422


async def test_patch_content_types_as_the_real_server_handles_them(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    core: Any = client.CoreV1Api(kube_client)
    url = "/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/web"
    async with asyncio.timeout(5):
        await make(custom)
        # kubernetes_asyncio sends a dict body to a custom object as JSON patch unless told
        # otherwise; the real server cannot decode an object as a JSON patch: 400.
        with pytest.raises(ApiException) as dict_as_json_patch:
            await custom.patch_namespaced_custom_object(*ARGO, "default", "rollouts", "web", {"spec": {"replicas": 2}})
        # Built-ins get strategic merge patch by default (applied here as a merge patch).
        await core.create_namespaced_config_map("default", {"metadata": {"name": "cm"}, "data": {"a": "1"}})
        strategic = await core.patch_namespaced_config_map("cm", "default", {"data": {"b": "2"}})
        async with httpx.AsyncClient(base_url=kube_api.url, headers=AUTH) as raw:
            smp = await raw.patch(
                url, content=b'{"spec":{}}', headers={"Content-Type": "application/strategic-merge-patch+json"}
            )
            apply = await raw.patch(url, content=b"{}", headers={"Content-Type": "application/apply-patch+yaml"})
    assert dict_as_json_patch.value.status == 400
    assert (
        "cannot unmarshal object into Go value of type jsonpatch.Patch"
        in status_of(dict_as_json_patch.value)["message"]
    )
    assert strategic.data == {"a": "1", "b": "2"}
    assert smp.status_code == 415 and smp.json()["reason"] == "UnsupportedMediaType"
    assert apply.status_code == 415


async def test_patch_with_a_resource_version_is_a_precondition(kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        made = await make(custom)
        rv = made["metadata"]["resourceVersion"]
        await custom.patch_namespaced_custom_object(
            *ARGO,
            "default",
            "rollouts",
            "web",
            {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 2}},
            **MERGE,
        )
        with pytest.raises(ApiException) as stale:
            await custom.patch_namespaced_custom_object(
                *ARGO,
                "default",
                "rollouts",
                "web",
                {"metadata": {"resourceVersion": rv}, "spec": {"replicas": 3}},
                **MERGE,
            )
    assert stale.value.status == 409


async def test_scale_subresource(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    apps: Any = client.AppsV1Api(kube_client)
    template = {"metadata": {"labels": {"app": "web"}}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    rs_body = {"metadata": {"name": "rs"}, "spec": {"selector": {"matchLabels": {"app": "web"}}, "template": template}}
    async with asyncio.timeout(5):
        made = await make(custom, replicas=2)
        kube_api.store.put_status("rollouts", "default", "web", {"HPAReplicas": 2, "selector": "app=web"})
        scale = await custom.get_namespaced_custom_object_scale(*ARGO, "default", "rollouts", "web")
        scaled = await custom.patch_namespaced_custom_object_scale(
            *ARGO, "default", "rollouts", "web", {"spec": {"replicas": 5}}, **MERGE
        )
        after = await custom.get_namespaced_custom_object(*ARGO, "default", "rollouts", "web")
        await apps.create_namespaced_replica_set("default", rs_body)
        await apps.replace_namespaced_replica_set_scale(
            "rs", "default", {"metadata": {"name": "rs"}, "spec": {"replicas": 3}}
        )
        rs_scale = await apps.read_namespaced_replica_set_scale("rs", "default")
        with pytest.raises(ApiException) as negative:
            await apps.patch_namespaced_replica_set_scale("rs", "default", {"spec": {"replicas": -1}})
    assert scale["kind"] == "Scale" and scale["apiVersion"] == "autoscaling/v1"
    assert scale["spec"] == {"replicas": 2} and scale["status"] == {"replicas": 2, "selector": "app=web"}
    assert scaled["spec"]["replicas"] == 5
    assert after["spec"]["replicas"] == 5 and after["metadata"]["generation"] == made["metadata"]["generation"] + 1
    assert rs_scale.spec.replicas == 3 and rs_scale.status.selector == "app=web"
    assert negative.value.status == 422


async def test_lease_create_and_update_conflicts(kube_client: Any) -> None:
    leases: Any = client.CoordinationV1Api(kube_client)
    body = {"metadata": {"name": "rollouts-controller"}, "spec": {"holderIdentity": "a", "leaseDurationSeconds": 15}}
    async with asyncio.timeout(5):
        mine = await leases.create_namespaced_lease("kube-system", body)
        with pytest.raises(ApiException) as taken:
            await leases.create_namespaced_lease("kube-system", body)
        theirs = await leases.read_namespaced_lease("rollouts-controller", "kube-system")
        theirs.spec.holder_identity = "b"
        await leases.replace_namespaced_lease("rollouts-controller", "kube-system", theirs)
        mine.spec.renew_time = None
        mine.spec.holder_identity = "a"
        with pytest.raises(ApiException) as lost:
            await leases.replace_namespaced_lease("rollouts-controller", "kube-system", mine)
        current = await leases.read_namespaced_lease("rollouts-controller", "kube-system")
    assert taken.value.status == 409 and status_of(taken.value)["reason"] == "AlreadyExists"
    assert lost.value.status == 409 and status_of(lost.value)["reason"] == "Conflict"
    assert 'leases.coordination.k8s.io "rollouts-controller"' in status_of(lost.value)["message"]
    assert current.spec.holder_identity == "b"


async def test_finalizers_hold_deletion_until_removed(kube_api: KubeAPIServer, kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        made = await make(custom)
        await custom.patch_namespaced_custom_object(
            *ARGO,
            "default",
            "rollouts",
            "web",
            {"metadata": {"finalizers": ["example.com/hold"]}},
            **MERGE,
        )
        pending = await custom.delete_namespaced_custom_object(*ARGO, "default", "rollouts", "web")
        with pytest.raises(ApiException) as no_new:
            await custom.patch_namespaced_custom_object(
                *ARGO,
                "default",
                "rollouts",
                "web",
                {"metadata": {"finalizers": ["example.com/hold", "b/c"]}},
                **MERGE,
            )
        await custom.patch_namespaced_custom_object(
            *ARGO, "default", "rollouts", "web", {"metadata": {"finalizers": None}}, **MERGE
        )
    assert pending["metadata"]["deletionTimestamp"]
    assert pending["metadata"]["generation"] == made["metadata"]["generation"] + 1
    assert no_new.value.status == 422
    assert kube_api.store.get("rollouts", "default", "web") is None


async def test_delete_preconditions(kube_client: Any) -> None:
    custom: Any = client.CustomObjectsApi(kube_client)
    async with asyncio.timeout(5):
        made = await make(custom)
        with pytest.raises(ApiException) as wrong_uid:
            await custom.delete_namespaced_custom_object(
                *ARGO, "default", "rollouts", "web", body={"preconditions": {"uid": "other"}}
            )
        await custom.delete_namespaced_custom_object(
            *ARGO, "default", "rollouts", "web", body={"preconditions": {"uid": made["metadata"]["uid"]}}
        )
    assert (
        wrong_uid.value.status == 409
        and "Precondition failed: UID in precondition: other" in status_of(wrong_uid.value)["message"]
    )


def test_store_writes_behave_like_a_controller(kube_api: KubeAPIServer) -> None:
    store = kube_api.store
    made = store.create("rollouts", rollout("web"), "default")
    seen: list[dict[str, Any]] = []
    sub = store.watch("rollouts", "default", seen.append, since=made["metadata"]["resourceVersion"])
    updated = store.put_status("rollouts", "default", "web", {"phase": "Healthy"})
    again = store.put_status("rollouts", "default", "web", {"phase": "Healthy"})  # no change: no write
    store.patch_status("rollouts", "default", "web", {"message": "ok"})
    store.unwatch(sub)
    assert int(updated["metadata"]["resourceVersion"]) > int(made["metadata"]["resourceVersion"])
    assert again["metadata"]["resourceVersion"] == updated["metadata"]["resourceVersion"]
    assert [e["type"] for e in seen] == ["MODIFIED", "MODIFIED"]
    assert seen[-1]["object"]["status"] == {"phase": "Healthy", "message": "ok"}


async def test_builtin_status_subresource_keeps_spec_but_takes_labels(kube_client: Any) -> None:
    apps: Any = client.AppsV1Api(kube_client)
    labels = {"app": "web"}
    template = {"metadata": {"labels": labels}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
    body = {
        "metadata": {"name": "rs"},
        "spec": {"replicas": 1, "selector": {"matchLabels": labels}, "template": template},
    }
    async with asyncio.timeout(5):
        made = await apps.create_namespaced_replica_set("default", body)
        made.spec.replicas = 7
        made.metadata.labels = {"seen": "yes"}
        made.status.replicas = 1
        made.status.ready_replicas = 1
        updated = await apps.replace_namespaced_replica_set_status("rs", "default", made)
        assert updated.spec.replicas == 1 and updated.status.ready_replicas == 1
        assert updated.metadata.labels == {"seen": "yes"}  # the apps/v1 status strategy only resets spec
        # ... and on the main resource the status stays as it was.
        updated.status.ready_replicas = 0
        updated.spec.replicas = 2
        main = await apps.replace_namespaced_replica_set("rs", "default", updated)
    assert main.spec.replicas == 2 and main.status.ready_replicas == 1
    assert main.metadata.generation == 2
