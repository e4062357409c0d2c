"""The CLI against a Kubernetes API server: `rollouts --platform kubernetes --kubeconfig K …`.

The commands run in-process (CliRunner) against the API stand-in, through a kubeconfig as
against a cluster; assertions read the objects the stand-in holds and the requests it saw.
No controller runs: the tests play it by writing status through the stand-in's store.
"""

# ruff: noqa: F811
from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

from rollouts.cli.main import cli
from tests.support.kubeapi.fixtures import kube_api, kubeconfig  # noqa: F401
from tests.support.kubeapi.server import KubeAPIServer

EXAMPLES = Path(__file__).resolve().parents[2] / "examples"
RO = "teei-q2q-ai"
RO_PATH = f"/apis/argoproj.io/v1alpha1/namespaces/default/rollouts/{RO}"


def run(kubeconfig: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--platform", "kubernetes", "--kubeconfig", str(kubeconfig), *args])
    assert result.exception is None or isinstance(result.exception, SystemExit), repr(result.exception)
    return result.exit_code, result.output


def ok(kubeconfig: Path, *args: str) -> str:
    code, output = run(kubeconfig, *args)
    assert code == 0, output
    return output


def rollout(kube_api: KubeAPIServer) -> dict[str, Any]:
    obj = kube_api.store.get("rollouts", "default", RO)
    assert obj is not None
    return obj


@pytest.fixture
def applied(kube_api: KubeAPIServer, kubeconfig: Path) -> Path:
    output = ok(kubeconfig, "apply", "-f", str(EXAMPLES / "q2q-ai"))
    assert f"rollout.argoproj.io/{RO} created" in output
    return kubeconfig


def test_apply_creates_then_reports_unchanged(kube_api: KubeAPIServer, kubeconfig: Path) -> None:
    output = ok(kubeconfig, "apply", "-f", str(EXAMPLES / "q2q-ai"))
    assert "service/teei-q2q-ai created" in output
    assert "analysistemplate.argoproj.io/" in output
    assert kube_api.store.get("services", "default", "teei-q2q-ai-canary") is not None
    assert len(kube_api.store.list("analysistemplates", "default")) == 3
    again = ok(kubeconfig, "apply", "-f", str(EXAMPLES / "q2q-ai"))
    assert "created" not in again and "configured" not in again, again
    assert f"rollout.argoproj.io/{RO} unchanged" in again


def test_apply_changed_manifest_is_configured(applied: Path, kube_api: KubeAPIServer, tmp_path: Path) -> None:
    manifest = (EXAMPLES / "q2q-ai" / "rollout.yaml").read_text().replace("replicas: 4", "replicas: 5")
    (tmp_path / "rollout.yaml").write_text(manifest)
    output = ok(applied, "apply", "-f", str(tmp_path / "rollout.yaml"))
    assert f"rollout.argoproj.io/{RO} configured" in output
    assert rollout(kube_api)["spec"]["replicas"] == 5
    assert rollout(kube_api)["metadata"]["generation"] == 2


def test_lint_sees_the_cluster_objects(applied: Path, tmp_path: Path) -> None:
    # Only the rollout: its services and templates are found on the cluster.
    code, output = run(applied, "lint", "-f", str(EXAMPLES / "q2q-ai" / "rollout.yaml"))
    assert code == 0, output
    assert output.strip().splitlines()[-1].endswith("0 errors, 0 warnings")


def test_get_and_list_render_from_the_cluster(applied: Path, kube_api: KubeAPIServer) -> None:
    kube_api.store.create(
        "events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": f"{RO}.1", "namespace": "default"},
            "involvedObject": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": RO},
            "reason": "RolloutUpdated",
            "message": "Rollout updated to revision 1",
            "type": "Normal",
            "lastTimestamp": "2026-01-01T00:00:00Z",
        },
    )
    kube_api.store.create(
        "events",
        {
            "apiVersion": "v1",
            "kind": "Event",
            "metadata": {"name": "other.1", "namespace": "default"},
            "involvedObject": {"kind": "Rollout", "name": "other"},
            "reason": "NotAboutThisOne",
            "message": "x",
            "type": "Normal",
        },
    )
    output = ok(applied, "get", "rollout", RO)
    assert f"Name:            {RO}" in output or RO in output.splitlines()[0], output
    assert "RolloutUpdated" in output
    assert "NotAboutThisOne" not in output
    listing = ok(applied, "list", "rollouts")
    assert RO in listing
    assert "No rollouts found." in ok(applied, "-n", "kube-system", "list", "rollouts")
    assert RO in ok(applied, "list", "rollouts", "-A")


def test_events_of_one_second_are_shown_in_the_order_they_happened(applied: Path, kube_api: KubeAPIServer) -> None:
    # Event times have whole seconds; names (generateName suffixes) are random: creation order wins.
    for name, reason in (("zz-first", "RolloutUpdated"), ("aa-second", "RolloutPaused")):
        kube_api.store.create(
            "events",
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": name, "namespace": "default"},
                "involvedObject": {"apiVersion": "argoproj.io/v1alpha1", "kind": "Rollout", "name": RO},
                "reason": reason,
                "message": reason,
                "type": "Normal",
                "lastTimestamp": "2026-01-01T00:00:00Z",
            },
        )
    shown = ok(applied, "get", "rollout", RO).split("Events:", 1)[1]
    assert shown.index("RolloutUpdated") < shown.index("RolloutPaused"), shown


def test_status_without_watch(applied: Path) -> None:
    code, output = run(applied, "status", RO, "--no-watch")
    assert code == 0, output
    assert output.strip()


def test_abort_and_retry_write_the_status_subresource(applied: Path, kube_api: KubeAPIServer) -> None:
    kube_api.clear_requests()
    assert "aborted" in ok(applied, "abort", RO)
    assert rollout(kube_api)["status"]["abort"] is True
    assert ("PUT", f"{RO_PATH}/status") in [(r.method, r.path) for r in kube_api.requests]
    assert not [r for r in kube_api.requests if r.method == "PUT" and r.path == RO_PATH]
    assert "retried" in ok(applied, "retry", "rollout", RO)
    assert rollout(kube_api)["status"]["abort"] is False


def test_promote_clears_the_pause_through_status(applied: Path, kube_api: KubeAPIServer) -> None:
    kube_api.store.patch_status(
        "rollouts",
        "default",
        RO,
        {"controllerPause": True, "pauseConditions": [{"reason": "CanaryPauseStep"}], "currentStepIndex": 1},
    )
    assert "promoted" in ok(applied, "promote", RO)
    status = rollout(kube_api)["status"]
    assert "pauseConditions" not in status
    assert "fully promoted" in ok(applied, "promote", RO, "--full")
    assert rollout(kube_api)["status"]["promoteFull"] is True


def test_pause_and_set_image_write_the_spec(applied: Path, kube_api: KubeAPIServer) -> None:
    assert "paused" in ok(applied, "pause", RO)
    assert rollout(kube_api)["spec"]["paused"] is True
    kube_api.clear_requests()
    assert "image updated" in ok(applied, "set", "image", RO, "q2q-ai=ghcr.io/acme/q2q:v9")
    ro = rollout(kube_api)
    assert ro["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/q2q:v9"
    assert ro["metadata"]["generation"] == 3
    assert [r.method for r in kube_api.requests if r.path == RO_PATH] == ["GET", "PUT"]


def test_a_conflict_is_retried_on_fresh_data(applied: Path, kube_api: KubeAPIServer) -> None:
    kube_api.fail_next("PUT", f"{RO_PATH}$", 409)
    kube_api.clear_requests()
    assert "image updated" in ok(applied, "set", "image", RO, "q2q-ai=ghcr.io/acme/q2q:v10")
    assert rollout(kube_api)["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/q2q:v10"
    assert [r.method for r in kube_api.requests if r.path == RO_PATH] == ["GET", "PUT", "GET", "PUT"]


def test_undo_rolls_back_to_a_previous_revision(applied: Path, kube_api: KubeAPIServer) -> None:
    ro = rollout(kube_api)
    template = ro["spec"]["template"]
    old = {**template, "spec": {"containers": [{"name": "q2q-ai", "image": "ghcr.io/acme/q2q:v0"}]}}
    for revision, tmpl, pod_hash in ((1, old, "aaa"), (2, template, "bbb")):
        kube_api.store.create(
            "replicasets",
            {
                "apiVersion": "apps/v1",
                "kind": "ReplicaSet",
                "metadata": {
                    "name": f"{RO}-{pod_hash}",
                    "namespace": "default",
                    "labels": {**tmpl["metadata"]["labels"], "rollouts-pod-template-hash": pod_hash},
                    "annotations": {"rollout.argoproj.io/revision": str(revision)},
                    "ownerReferences": [
                        {
                            "apiVersion": "argoproj.io/v1alpha1",
                            "kind": "Rollout",
                            "name": RO,
                            "uid": ro["metadata"]["uid"],
                        }
                    ],
                },
                "spec": {
                    "replicas": 0,
                    "selector": {"matchLabels": {"rollouts-pod-template-hash": pod_hash}},
                    "template": {
                        **tmpl,
                        "metadata": {"labels": {**tmpl["metadata"]["labels"], "rollouts-pod-template-hash": pod_hash}},
                    },
                },
            },
        )
    kube_api.store.patch_status("rollouts", "default", RO, {"currentPodHash": "bbb"})
    code, output = run(applied, "undo", RO)
    assert code == 0, output
    assert rollout(kube_api)["spec"]["template"]["spec"]["containers"][0]["image"] == "ghcr.io/acme/q2q:v0"


def test_delete_removes_from_the_cluster(applied: Path, kube_api: KubeAPIServer) -> None:
    assert "deleted" in ok(applied, "delete", "rollout", RO)
    assert kube_api.store.get("rollouts", "default", RO) is None
    code, output = run(applied, "delete", "rollout", RO)
    assert code == 1 and output.startswith("error: "), output


@pytest.mark.parametrize(
    ("args", "message"),
    [
        pytest.param(("promote", "nope"), 'error: rollout "nope" not found in namespace "default"', id="missing"),
        pytest.param(("abort", "nope"), 'error: rollout "nope" not found', id="abort-missing"),
        pytest.param(("retry", "rollout", RO), f'error: rollout "{RO}" is not aborted', id="not-aborted"),
        pytest.param(("set", "image", RO, "nope=x:1"), 'has no container "nope"', id="no-container"),
    ],
)
def test_errors_are_one_line(applied: Path, args: tuple[str, ...], message: str) -> None:
    code, output = run(applied, *args)
    assert code == 1
    assert message in output
    assert len(output.strip().splitlines()) == 1, output


def test_server_errors_are_one_line(applied: Path, kube_api: KubeAPIServer) -> None:
    kube_api.fail_next("GET", f"{RO_PATH}$", 500, message="etcd is on fire")
    code, output = run(applied, "abort", RO)
    assert code == 1
    assert output.startswith("error: ") and "etcd is on fire" in output
    assert len(output.strip().splitlines()) == 1, output
    kube_api.fail_next("PUT", f"{RO_PATH}$", 409, times=20)
    code, output = run(applied, "pause", RO)
    assert code == 1 and "kept changing" in output, output


def test_unreachable_server_and_bad_kubeconfig(kube_api: KubeAPIServer, tmp_path: Path) -> None:
    code, output = run(tmp_path / "missing", "list", "rollouts")
    assert code == 1
    assert output.startswith("error: cannot load the Kubernetes configuration"), output
    assert len(output.strip().splitlines()) == 1
    config = kube_api.write_kubeconfig(tmp_path / "kubeconfig")
    config.write_text(config.read_text().replace(kube_api.url, "http://127.0.0.1:1"))
    code, output = run(config, "get", "rollout", RO)
    assert code == 1
    assert output.startswith("error: ") and "cannot reach the Kubernetes API" in output, output
    assert len(output.strip().splitlines()) == 1


def test_analysis_run_commands_use_the_cluster(applied: Path, kube_api: KubeAPIServer) -> None:
    assert "No analysisruns found." in ok(applied, "list", "analysisruns")
    kube_api.store.create(
        "analysisruns",
        {
            "apiVersion": "argoproj.io/v1alpha1",
            "kind": "AnalysisRun",
            "metadata": {"name": "smoke", "namespace": "default"},
            "spec": {"metrics": [{"name": "m", "provider": {"web": {"url": "http://127.0.0.1:1/"}}}]},
        },
    )
    assert "smoke" in ok(applied, "list", "analysisruns")
    code, output = run(applied, "terminate", "analysisrun", "smoke")
    assert code == 0, output
    run_obj = kube_api.store.get("analysisruns", "default", "smoke")
    assert run_obj is not None and run_obj["spec"]["terminate"] is True
