"""The rules of a controller's scope: instance ids, their selectors and Leases, the Lease's namespace."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from rollouts.kube_host import lease_namespace_for
from rollouts.model.scope import (
    INSTANCE_ID_LABEL,
    instance_id_error,
    instance_label,
    instance_selector,
    namespace_error,
    owned_by,
)
from rollouts.platform.kubernetes.leader import lease_name

DNS_SUBDOMAIN = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")


@pytest.mark.parametrize(
    ("instance_id", "valid"),
    [
        pytest.param("blue", True, id="word"),
        pytest.param("Team_A.v2-x", True, id="capitals-underscore-dot"),
        pytest.param("a" * 63, True, id="63-chars"),
        pytest.param("a" * 64, False, id="64-chars"),
        pytest.param("-blue", False, id="leading-dash"),
        pytest.param("blue.", False, id="trailing-dot"),
        pytest.param("blue green", False, id="space"),
        pytest.param("blue/green", False, id="slash"),
    ],
)
def test_an_instance_id_must_be_a_label_value(instance_id: str, valid: bool) -> None:
    problem = instance_id_error(instance_id)
    assert (problem is None) == valid, problem
    if problem is not None:
        assert "\n" not in problem and "label value" in problem


@pytest.mark.parametrize(
    ("namespace", "valid"),
    [
        pytest.param("team-a", True, id="dns-label"),
        pytest.param("Team-A", False, id="capitals"),
        pytest.param("team_a", False, id="underscore"),
        pytest.param("team.a", False, id="dot"),
        pytest.param("a" * 64, False, id="too-long"),
    ],
)
def test_a_namespace_must_be_a_dns_label(namespace: str, valid: bool) -> None:
    assert (namespace_error(namespace) is None) == valid


@pytest.mark.parametrize(
    ("instance_id", "labels", "owned"),
    [
        pytest.param("blue", {INSTANCE_ID_LABEL: "blue"}, True, id="id-same"),
        pytest.param("blue", {INSTANCE_ID_LABEL: "green"}, False, id="id-other"),
        pytest.param("blue", {}, False, id="id-unlabelled"),
        pytest.param(None, {}, True, id="none-unlabelled"),
        pytest.param(None, None, True, id="none-no-labels"),
        pytest.param(None, {INSTANCE_ID_LABEL: "blue"}, False, id="none-labelled"),
        pytest.param("", {}, True, id="empty-is-none"),
    ],
)
def test_ownership_matches_the_selector(instance_id: str | None, labels: dict[str, str] | None, owned: bool) -> None:
    assert owned_by(labels, instance_id) is owned


def test_selectors_and_copied_labels() -> None:
    assert instance_selector("blue") == f"{INSTANCE_ID_LABEL}=blue"
    assert instance_selector(None) == f"!{INSTANCE_ID_LABEL}"
    assert instance_label({"app": "web", INSTANCE_ID_LABEL: "blue"}) == {INSTANCE_ID_LABEL: "blue"}
    assert instance_label({"app": "web"}) == {}
    assert instance_label(None) == {}


@pytest.mark.parametrize(
    ("instance_id", "expected"),
    [
        pytest.param(None, "rollouts-controller", id="none"),
        pytest.param("", "rollouts-controller", id="empty"),
        pytest.param("blue", "rollouts-controller-blue", id="dns-safe-id-as-is"),
        pytest.param("team-a.v2", None, id="dot-cleaned-and-hashed"),
        pytest.param("Blue", None, id="capitals-cleaned-and-hashed"),
        pytest.param("blue_x", None, id="underscore-cleaned-and-hashed"),
    ],
)
def test_each_instance_id_has_its_own_lease(instance_id: str | None, expected: str | None) -> None:
    name = lease_name(instance_id)
    assert DNS_SUBDOMAIN.match(name) and len(name) <= 253, name
    if expected is not None:
        assert name == expected
    else:
        assert name.startswith("rollouts-controller-") and name != lease_name(None)


def test_ids_that_clean_to_the_same_text_keep_distinct_leases() -> None:
    names = {lease_name(i) for i in ("blue", "Blue", "BLUE", "blue_", "blue.x", "blue-x", "blue_x")}
    assert len(names) == 7


@pytest.mark.parametrize(
    ("env", "mounted", "in_cluster", "watched", "expected"),
    [
        pytest.param({"POD_NAMESPACE": "ops"}, "sa-ns", True, "team-a", "ops", id="downward-api-first"),
        pytest.param({}, "sa-ns\n", True, "team-a", "sa-ns", id="in-cluster-service-account"),
        pytest.param({}, "sa-ns", False, "team-a", "team-a", id="kubeconfig-given-ignores-the-pod"),
        pytest.param({}, None, True, "team-a", "team-a", id="no-pod-watched"),
        pytest.param({}, None, False, None, "default", id="no-pod-all-namespaces"),
        pytest.param({}, "", True, None, "default", id="empty-file"),
    ],
)
def test_the_lease_lives_in_the_controllers_namespace(
    tmp_path: Path, env: dict[str, str], mounted: str | None, in_cluster: bool, watched: str | None, expected: str
) -> None:
    sa_file = tmp_path / "namespace"
    if mounted is not None:
        sa_file.write_text(mounted)
    found = lease_namespace_for(watched, in_cluster=in_cluster, env=env, service_account_file=sa_file)
    assert found == expected
