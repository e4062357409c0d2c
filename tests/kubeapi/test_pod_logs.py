"""The pods/log subresource: container choice, previous instances, tailLines, follow streams, errors.

Logs are written as a kubelet would collect them (`store.append_log`), containers started and
restarted with the fixtures' kubelet helpers; reads go through kubernetes_asyncio (the client
the CLI uses) and raw HTTP (for the wire: text/plain, chunked follow streams, Status errors).
"""

# ruff: noqa: F811  (test parameters named after the imported pytest fixtures)

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from kubernetes_asyncio import client

from tests.support.kubeapi import DEFAULT_TOKEN, ApiError, KubeAPIServer, KubeletSim
from tests.support.kubeapi.fixtures import (  # noqa: F401  (pytest fixtures)
    NODE_NAME,
    kube_api,
    kube_client,
    kubeconfig,
    restart_container,
    start_containers,
)

AUTH = {"Authorization": f"Bearer {DEFAULT_TOKEN}"}
LOG = "/api/v1/namespaces/default/pods/{}/log"


def make_pod(
    api: KubeAPIServer, name: str = "web-1", containers: tuple[str, ...] = ("app",), *, start: bool = True
) -> None:
    spec: dict[str, Any] = {"nodeName": NODE_NAME, "containers": [{"name": c, "image": f"{c}:1"} for c in containers]}
    api.store.create("pods", {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": name}, "spec": spec}, "default")
    if start:
        start_containers(api.store, "default", name)


@pytest.fixture
def http(kube_api: KubeAPIServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=kube_api.url, headers=AUTH, timeout=5.0) as raw:
        yield raw


def status(response: httpx.Response) -> dict[str, Any]:
    assert response.headers["content-type"] == "application/json"
    body: dict[str, Any] = response.json()
    assert body["kind"] == "Status" and body["status"] == "Failure" and body["code"] == response.status_code
    return body


async def test_the_client_reads_the_current_log(kube_api: KubeAPIServer, kube_client: Any) -> None:
    make_pod(kube_api)
    kube_api.store.append_log("default", "web-1", "app", "one\ntwo\n")
    kube_api.store.append_log("default", "web-1", "app", b"three\n")
    core = client.CoreV1Api(kube_client)
    async with asyncio.timeout(5):
        whole = await core.read_namespaced_pod_log("web-1", "default")
        last = await core.read_namespaced_pod_log("web-1", "default", container="app", tail_lines=2)
    assert whole == "one\ntwo\nthree\n"
    assert last == "two\nthree\n"


def test_the_wire_is_text_and_tail_lines_zero_is_empty(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    make_pod(kube_api)
    kube_api.store.append_log("default", "web-1", "app", "a\nb")  # no newline at the end: still a line
    response = http.get(LOG.format("web-1"), params={"tailLines": "1"})
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/plain")
    assert response.content == b"b"
    assert http.get(LOG.format("web-1"), params={"tailLines": "0"}).content == b""


def test_a_restart_moves_the_log_to_previous(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    make_pod(kube_api)
    kube_api.store.append_log("default", "web-1", "app", "first run\n")
    response = http.get(LOG.format("web-1"), params={"previous": "true"})
    assert response.status_code == 400
    body = status(response)
    assert body["reason"] == "BadRequest"
    assert body["message"] == 'previous terminated container "app" in pod "web-1" not found'

    pod = restart_container(kube_api.store, "default", "web-1", "app", exit_code=137, reason="OOMKilled")
    (entry,) = pod["status"]["containerStatuses"]
    assert entry["restartCount"] == 1 and entry["lastState"]["terminated"]["exitCode"] == 137
    kube_api.store.append_log("default", "web-1", "app", "second run\n")
    assert http.get(LOG.format("web-1"), params={"previous": "true"}).text == "first run\n"
    assert http.get(LOG.format("web-1")).text == "second run\n"


def test_many_containers_need_a_choice(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    make_pod(kube_api, containers=("app", "proxy"))
    kube_api.store.append_log("default", "web-1", "proxy", "proxy up\n")
    response = http.get(LOG.format("web-1"))
    assert response.status_code == 400
    assert status(response)["message"] == "a container name must be specified for pod web-1, choose one of: [app proxy]"
    response = http.get(LOG.format("web-1"), params={"container": "nope"})
    assert response.status_code == 400
    assert status(response)["message"] == "container nope is not valid for pod web-1"
    assert http.get(LOG.format("web-1"), params={"container": "proxy"}).text == "proxy up\n"
    assert http.get(LOG.format("web-1"), params={"container": "app"}).text == ""


def test_a_missing_pod_is_404(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    response = http.get(LOG.format("nope"))
    assert response.status_code == 404
    body = status(response)
    assert body["reason"] == "NotFound" and body["message"] == 'pods "nope" not found'
    assert body["details"] == {"name": "nope", "kind": "pods"}


@pytest.mark.parametrize(
    ("container_status", "message"),
    [
        pytest.param(
            {"state": {"waiting": {"reason": "ContainerCreating"}}},
            'container "app" in pod "web-1" is waiting to start: ContainerCreating',
            id="creating",
        ),
        pytest.param(
            {"state": {"waiting": {"reason": "ImagePullBackOff"}}},
            'container "app" in pod "web-1" is waiting to start: trying and failing to pull image',
            id="image-pull-back-off",
        ),
        pytest.param(
            {"state": {"terminated": {"exitCode": 1}}},
            'container "app" in pod "web-1" is terminated',
            id="terminated-without-id",
        ),
        pytest.param({"state": {}}, 'container "app" in pod "web-1" is waiting to start - no logs yet', id="no-state"),
        pytest.param(None, 'container "app" in pod "web-1" is not available', id="no-status"),
    ],
)
def test_the_kubelet_refuses_containers_without_a_log(
    kube_api: KubeAPIServer, http: httpx.Client, container_status: dict[str, Any] | None, message: str
) -> None:
    make_pod(kube_api, start=False)
    statuses = [{"name": "app", **container_status}] if container_status is not None else []
    kube_api.store.put_status("pods", "default", "web-1", {"phase": "Pending", "containerStatuses": statuses})
    response = http.get(LOG.format("web-1"))
    assert response.status_code == 400
    assert status(response)["message"] == message
    with pytest.raises(ApiError, match=r"waiting to start|terminated|not available"):
        kube_api.store.append_log("default", "web-1", "app", "x")  # nothing runs to write it


def test_an_unscheduled_pod_has_an_empty_log(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    body = {"metadata": {"name": "pending"}, "spec": {"containers": [{"name": "app", "image": "app:1"}]}}
    kube_api.store.create("pods", body, "default")
    for params in ({}, {"follow": "true"}):
        response = http.get(LOG.format("pending"), params=params)
        assert (response.status_code, response.content) == (200, b"")


@pytest.mark.parametrize(
    ("params", "code", "message"),
    [
        pytest.param(
            {"tailLines": "-1"},
            422,
            'PodLogOptions "web-1" is invalid: tailLines: Invalid value: -1: must be greater than or equal to 0',
            id="negative-tail",
        ),
        pytest.param({"tailLines": "x"}, 400, 'strconv.ParseInt: parsing "x": invalid syntax', id="tail-not-int"),
        pytest.param({"previous": "maybe"}, 400, 'strconv.ParseBool: parsing "maybe": invalid syntax', id="bad-bool"),
    ],
)
def test_bad_options(
    kube_api: KubeAPIServer, http: httpx.Client, params: dict[str, str], code: int, message: str
) -> None:
    make_pod(kube_api)
    response = http.get(LOG.format("web-1"), params=params)
    assert response.status_code == code
    assert status(response)["message"] == message


def test_log_is_read_only_and_discovered(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    make_pod(kube_api)
    response = http.put(LOG.format("web-1"), json={})
    assert response.status_code == 405 and status(response)["reason"] == "MethodNotAllowed"
    resources = {r["name"]: r for r in http.get("/api/v1").json()["resources"]}
    assert resources["pods/log"]["verbs"] == ["get"] and resources["pods/log"]["kind"] == "Pod"


# -- follow ---------------------------------------------------------------------------------------


class Follow:
    """A follow=true stream; `until(text)` reads until `text` arrived, `to_end()` until the stream ends
    (each read bounded by the client's 5 s timeout, each wait by its own deadline)."""

    def __init__(self, http: httpx.Client, pod: str, **params: str) -> None:
        self._ctx = http.stream("GET", LOG.format(pod), params={"follow": "true", **params})
        self.response = self._ctx.__enter__()
        self._chunks = self.response.iter_raw()
        self.text = ""
        self.ended = False

    def until(self, wanted: str, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while wanted not in self.text:
            assert time.monotonic() < deadline, f"never saw {wanted!r}; got {self.text!r}"
            try:
                self.text += next(self._chunks).decode()
            except StopIteration:
                self.ended = True
                break
        return self.text

    def to_end(self, timeout: float = 5.0) -> str:
        deadline = time.monotonic() + timeout
        while not self.ended:
            assert time.monotonic() < deadline, f"the stream did not end; got {self.text!r}"
            self.until("\0never\0", timeout=max(0.0, deadline - time.monotonic()))
        return self.text

    def close(self) -> None:
        self._ctx.__exit__(None, None, None)


def test_follow_streams_until_the_pod_is_deleted(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    make_pod(kube_api)
    kube_api.store.append_log("default", "web-1", "app", "before\n")
    stream = Follow(http, "web-1")
    try:
        assert stream.response.status_code == 200
        assert stream.response.headers["transfer-encoding"] == "chunked"
        assert stream.until("before\n") == "before\n"
        kube_api.wait_for_log_streams(1)
        kube_api.store.append_log("default", "web-1", "app", "during\n")
        assert stream.until("during\n") == "before\nduring\n"
        kube_api.store.delete("pods", "default", "web-1")
        assert stream.to_end() == "before\nduring\n"
    finally:
        stream.close()
    kube_api.wait_for_log_streams(0)
    assert kube_api.store.log_follower_count == 0


def test_follow_ends_when_the_container_restarts(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    make_pod(kube_api)
    stream = Follow(http, "web-1", tailLines="0")
    try:
        kube_api.wait_for_log_streams(1)
        kube_api.store.append_log("default", "web-1", "app", "crashing\n")
        stream.until("crashing\n")
        restart_container(kube_api.store, "default", "web-1", "app")
        kube_api.store.append_log("default", "web-1", "app", "new instance\n")
        assert stream.to_end() == "crashing\n", "a follower sees only the instance it followed"
    finally:
        stream.close()
    previous = Follow(http, "web-1", previous="true")
    try:
        assert previous.to_end() == "crashing\n", "a previous instance never grows: its stream ends at once"
    finally:
        previous.close()


def test_a_client_going_away_closes_the_stream(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    make_pod(kube_api)
    stream = Follow(http, "web-1")
    kube_api.wait_for_log_streams(1)
    assert kube_api.store.log_follower_count == 1
    stream.close()
    kube_api.wait_for_log_streams(0)
    assert kube_api.store.log_follower_count == 0
    kube_api.store.append_log("default", "web-1", "app", "nobody listens\n")  # no follower left to fail


def test_follow_errors_are_status_objects(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    response = http.get(LOG.format("nope"), params={"follow": "true"})
    assert response.status_code == 404 and status(response)["message"] == 'pods "nope" not found'
    assert kube_api.open_log_streams() == 0


def test_kubelet_sim_pods_are_scheduled_and_running(kube_api: KubeAPIServer, http: httpx.Client) -> None:
    rs = {
        "apiVersion": "apps/v1",
        "kind": "ReplicaSet",
        "metadata": {"name": "web-abc"},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": {"app": "web"}},
            "template": {
                "metadata": {"labels": {"app": "web"}},
                "spec": {"containers": [{"name": "web", "image": "web:1"}]},
            },
        },
    }
    with KubeletSim(kube_api, create_pods=True):
        kube_api.store.create("replicasets", rs, "default")
        deadline = time.monotonic() + 5
        while not (pods := kube_api.store.list("pods", "default")) or "containerStatuses" not in pods[0]["status"]:
            assert time.monotonic() < deadline, "KubeletSim made no running pod"
            time.sleep(0.01)
    (pod,) = pods
    assert pod["spec"]["nodeName"] == NODE_NAME
    assert pod["status"]["containerStatuses"][0]["state"]["running"]
    kube_api.store.append_log("default", pod["metadata"]["name"], "web", "listening on :8080\n")
    assert http.get(LOG.format(pod["metadata"]["name"])).text == "listening on :8080\n"
