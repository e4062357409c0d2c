"""A Kubernetes API server stand-in for tests: a real HTTP server that enforces the API's rules.

- `server.KubeAPIServer`: the HTTP server (discovery, CRUD, patch, watch, test hooks).
- `storage.Store`: objects, resourceVersions, generation, subresources, finalizers, GC, watch history.
- `resources`: the resource registry, selectors, `Status` errors and patch formats.
- `fixtures`: pytest fixtures (`kube_api`, `kubeconfig`, `kube_client`, `kubelet_sim`) and `KubeletSim`.

Enforced as the real API server does: 201 on create with uid/resourceVersion/generation/
creationTimestamp, generateName, 409 AlreadyExists, 404 for a missing namespace or object,
optimistic concurrency (409 Conflict on a stale metadata.resourceVersion, on PUT, PATCH,
/status and /scale), one global resourceVersion counter, unchanged writes not written (no new
RV, no event), generation bumped by spec changes only (anything outside metadata/status for
kinds without spec), status and scale subresources (status ignored on create and by the main
resource; /status writes only status, and for custom resources no metadata), body
kind/apiVersion/namespace/name checked against the URL (400), names and labels validated
(422), ReplicaSet/Deployment selector required, matching the template and immutable, Service
clusterIP allocated and immutable, Secret stringData, "resourceVersion should not be set on
objects to be created" (500), JSON merge patch, JSON patch (test failures 422), strategic merge
patch refused for custom resources (415), finalizers and deletionTimestamp, delete
preconditions, owner-reference GC (Background, Foreground, Orphan; Jobs orphan by default;
a dependent with another live owner survives), namespace deletion, label and field selectors
(unsupported field → 400), limit/continue, watch from a resourceVersion with a bounded history
(410 Expired as an ERROR event), synthetic ADDED for a watch without resourceVersion,
objects entering/leaving a selector seen as ADDED/DELETED, bookmarks, timeoutSeconds, bearer
token auth (401), dryRun=All, pods/log (container, previous, follow, tailLines; logs per container
instance, the API server's and kubelet's 400s; see `podlogs`).

Not enforced or simplified: no OpenAPI/CRD schema validation or pruning, no defaulting beyond
replicas=1 and a few status fields, strategic merge patch is a plain merge patch for built-ins
(lists replaced whole), no server-side apply (415), no managedFields, no RBAC/admission, GC and
namespace deletion are synchronous (the real ones are asynchronous controllers), Pods are
deleted at once (no grace period), core/v1 and events.k8s.io/v1 Events are stored apart, a
continue token lists the current state rather than a snapshot, no watch-list
(sendInitialEvents), no protobuf, no aggregated discovery, no table output, no field
selectors beyond those listed per resource, no resourceVersionMatch semantics on lists, pods/log
without sinceSeconds/sinceTime/timestamps/limitBytes.
"""

from .fixtures import KubeletSim, write_kubeconfig
from .resources import ApiError, ResourceRegistry, ResourceType
from .server import DEFAULT_TOKEN, KubeAPIServer, RequestRecord
from .storage import DeleteResult, Store

__all__ = [
    "DEFAULT_TOKEN",
    "ApiError",
    "DeleteResult",
    "KubeAPIServer",
    "KubeletSim",
    "RequestRecord",
    "ResourceRegistry",
    "ResourceType",
    "Store",
    "write_kubeconfig",
]
