"""A controller's scope: the namespace it watches and its instance id (Argo's `--instance-id`).

A controller started with an instance id acts only on Rollouts and AnalysisRuns labelled
`argo-rollouts.argoproj.io/controller-instance-id=<id>`; one started without acts only on those
without that label. So several controllers can share a cluster without fighting: each sees its
own objects, and the AnalysisRuns a Rollout starts carry the Rollout's label (as Argo copies it),
so they stay with the controller that created them.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

__all__ = [
    "INSTANCE_ID_LABEL",
    "instance_id_error",
    "instance_label",
    "instance_selector",
    "namespace_error",
    "owned_by",
]

INSTANCE_ID_LABEL = "argo-rollouts.argoproj.io/controller-instance-id"

# A Kubernetes label value: at most 63 characters, alphanumerics with '-', '_' or '.' inside.
_LABEL_VALUE = re.compile(r"^[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$")
# A namespace name: a DNS label (RFC 1123), at most 63 characters.
_DNS_LABEL = re.compile(r"^[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?$")


def namespace_error(namespace: str) -> str | None:
    """Why `namespace` cannot name a namespace, or None."""
    if _DNS_LABEL.match(namespace):
        return None
    return (
        f"{namespace!r} is not a namespace name: lowercase letters, digits and '-', "
        "starting and ending with a letter or digit, at most 63 characters"
    )


def instance_id_error(instance_id: str) -> str | None:
    """Why `instance_id` cannot be a label value (it must be one, to select on it), or None."""
    if _LABEL_VALUE.match(instance_id):
        return None
    if len(instance_id) > 63:
        return f"{instance_id[:20]!r}… is {len(instance_id)} characters long: a label value has at most 63"
    return (
        f"{instance_id!r} is not a valid label value: use letters, digits, '-', '_' or '.', "
        "starting and ending with a letter or digit"
    )


def instance_selector(instance_id: str | None) -> str:
    """The label selector of the objects a controller with `instance_id` acts on."""
    return f"{INSTANCE_ID_LABEL}={instance_id}" if instance_id else f"!{INSTANCE_ID_LABEL}"


def owned_by(labels: Mapping[str, str] | None, instance_id: str | None) -> bool:
    """Whether an object with `labels` belongs to the controller with `instance_id`."""
    return (labels or {}).get(INSTANCE_ID_LABEL) == (instance_id or None)


def instance_label(labels: Mapping[str, str] | None) -> dict[str, str]:
    """The instance-id label of `labels` (a Rollout's), to copy onto what it creates; {} if none."""
    value = (labels or {}).get(INSTANCE_ID_LABEL)
    return {INSTANCE_ID_LABEL: value} if value else {}
