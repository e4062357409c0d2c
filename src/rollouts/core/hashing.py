"""Pod-template hashes: the name of a revision.

Argo names a ReplicaSet `<rollout>-<hash>` where the hash is computed from the pod template
(and the collision count). Ours is a SHA-256 of the canonical JSON, encoded with the same
"safe" alphabet Kubernetes uses (no vowels, so no words), 10 characters.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

_SAFE = "bcdfghjklmnpqrstvwxz2456789"
HASH_LABEL = "rollouts-pod-template-hash"


def pod_template_hash(template: dict[str, Any], collision_count: int = 0) -> str:
    clean = json.loads(json.dumps(template))
    labels = (clean.get("metadata") or {}).get("labels") or {}
    labels.pop(HASH_LABEL, None)
    payload = json.dumps(clean, sort_keys=True, separators=(",", ":")) + f"/{collision_count}"
    digest = int.from_bytes(hashlib.sha256(payload.encode()).digest()[:8], "big")
    chars = []
    for _ in range(10):
        digest, rem = divmod(digest, len(_SAFE))
        chars.append(_SAFE[rem])
    return "".join(chars)
