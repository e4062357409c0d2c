"""Names and shapes of the objects the embedded platform keeps in the store.

ReplicaSets and Pods are stored like their Kubernetes counterparts, so the CLI can draw the
same tree on either platform. The traffic router's state lives in annotations on the stable
Service: the canary revision, its weight and the managed routes.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from rollouts.core.timeutil import parse_rfc3339

REVISION_ANNOTATION = "rollout.argoproj.io/revision"
SCALE_DOWN_DEADLINE_ANNOTATION = "scale-down-deadline"
CANARY_WEIGHT_ANNOTATION = "rollouts.io/canary-weight"
CANARY_HASH_ANNOTATION = "rollouts.io/canary-pod-template-hash"
CANARY_SERVICE_ANNOTATION = "rollouts.io/canary-service"
# The managed routes in effect (setHeaderRoute/setMirrorRoute), `core.routes.routes_json`; absent = none.
MANAGED_ROUTES_ANNOTATION = "rollouts.io/managed-routes"
ROLLOUT_LABEL = "rollout"

Obj = dict[str, Any]


def annotations_of(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def labels_of(obj: Obj) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("labels") or {})


def owner_name(obj: Obj, kind: str) -> str | None:
    for ref in (obj.get("metadata") or {}).get("ownerReferences") or []:
        if ref.get("kind") == kind:
            return str(ref.get("name"))
    return None


def scale_down_deadline(rs: Obj) -> datetime | None:
    return parse_rfc3339(annotations_of(rs).get(SCALE_DOWN_DEADLINE_ANNOTATION))


def selector_matches(selector: dict[str, str], pod_labels: dict[str, str]) -> bool:
    return all(pod_labels.get(k) == v for k, v in selector.items())
