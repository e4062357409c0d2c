"""A thin async layer over kubernetes_asyncio for any resource type, raw JSON in and out.

kubernetes_asyncio handles what a client must get right — kubeconfig loading, contexts,
tokens and client certificates, TLS — and its `DynamicClient.request` sends a request to any
path. We build the paths from `resources.ResourceType` (no discovery round trips), send and
receive plain dicts, and turn API errors into the store's error types so the controller
handles a 409 from Kubernetes exactly like a stale write to the SQLite store.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
from kubernetes_asyncio import client as k8s_client
from kubernetes_asyncio import config as k8s_config
from kubernetes_asyncio.client.exceptions import ApiException
from kubernetes_asyncio.dynamic import DynamicClient
from kubernetes_asyncio.dynamic.exceptions import DynamicApiError

from rollouts.platform.kubernetes.resources import POD, ResourceType
from rollouts.store.errors import AlreadyExistsError, ConflictError, NotFoundError, StoreError

Obj = dict[str, Any]

MERGE_PATCH = "application/merge-patch+json"
JSON_PATCH = "application/json-patch+json"


class ExpiredError(StoreError):
    """A watch asked for a resourceVersion the server no longer has (410 Gone): relist."""


class ApiError(StoreError):
    """Any other failure talking to the API server; the message names the request and status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def _error(exc: Exception, what: str) -> StoreError:
    status = getattr(exc, "status", None)
    body = getattr(exc, "body", None) or getattr(exc, "summary", lambda: "")()
    message = ""
    try:
        message = json.loads(body).get("message", "") if isinstance(body, str | bytes) and body else ""
    except (ValueError, AttributeError):
        message = str(body or "")
    text = f"{what}: {message or exc}"
    if status == 404:
        return NotFoundError(text)
    if status == 409:
        if "already exists" in message:
            return AlreadyExistsError(text)
        return ConflictError(text)
    if status == 410:
        return ExpiredError(text)
    return ApiError(f"{text} (HTTP {status})" if status else text, status)


def _status_error(status: int, data: Any, what: str) -> StoreError:
    message = data.get("message", "") if isinstance(data, dict) else str(data)
    text = f"{what}: {message}" if message else f"{what}: HTTP {status}"
    if status == 404:
        return NotFoundError(text)
    if status == 409:
        return AlreadyExistsError(text) if "already exists" in message else ConflictError(text)
    if status == 410:
        return ExpiredError(text)
    return ApiError(f"{text} (HTTP {status})", status)


async def load_api_client(kubeconfig: str | None = None, context: str | None = None) -> k8s_client.ApiClient:
    """An ApiClient from a kubeconfig file (or in-cluster config when none is given and one exists)."""
    configuration = k8s_client.Configuration()
    if kubeconfig is None:
        try:
            k8s_config.load_incluster_config(client_configuration=configuration)  # type: ignore[no-untyped-call]
            return k8s_client.ApiClient(configuration)
        except k8s_config.ConfigException:
            pass
    await k8s_config.load_kube_config(
        config_file=kubeconfig, context=context, client_configuration=configuration, persist_config=False
    )
    return k8s_client.ApiClient(configuration)


class KubeApi:
    def __init__(self, api_client: k8s_client.ApiClient) -> None:
        self.api_client = api_client
        self._dynamic = DynamicClient(api_client)

    async def close(self) -> None:
        await self.api_client.close()

    async def _request(self, method: str, path: str, what: str, body: Any = None, **params: Any) -> Any:
        try:
            response = await self._dynamic.request(method, path, body=body, serialize=False, **params)
            data = await response.json()
            if response.status >= 400:  # unpreloaded responses are not raised by the client
                raise _status_error(response.status, data, what)
            return data
        except (ApiException, DynamicApiError) as exc:
            raise _error(exc, what) from exc
        except OSError as exc:
            raise ApiError(f"{what}: cannot reach the Kubernetes API: {exc}") from exc

    async def get(self, rt: ResourceType, name: str, namespace: str | None = None) -> Obj | None:
        try:
            result: Obj = await self._request("get", rt.path(namespace, name), f"get {rt.kind} {name}")
        except NotFoundError:
            return None
        return result

    async def list(
        self, rt: ResourceType, namespace: str | None = None, label_selector: str | None = None
    ) -> tuple[list[Obj], str]:
        data: Obj = await self._request("get", rt.path(namespace), f"list {rt.plural}", label_selector=label_selector)
        items = list(data.get("items") or [])
        for item in items:  # list items carry no kind/apiVersion on the wire
            item.setdefault("kind", rt.kind)
            item.setdefault("apiVersion", rt.api_version)
        return items, str((data.get("metadata") or {}).get("resourceVersion", ""))

    async def create(self, rt: ResourceType, body: Obj) -> Obj:
        namespace = (body.get("metadata") or {}).get("namespace")
        name = (body.get("metadata") or {}).get("name", "")
        result: Obj = await self._request(
            "post", rt.path(namespace), f"create {rt.kind} {name}", body=body, content_type="application/json"
        )
        return result

    async def replace(self, rt: ResourceType, body: Obj, subresource: str | None = None) -> Obj:
        meta = body.get("metadata") or {}
        what = f"update {rt.kind} {meta.get('name')}" + (f"/{subresource}" if subresource else "")
        result: Obj = await self._request(
            "put",
            rt.path(meta.get("namespace"), meta.get("name"), subresource),
            what,
            body=body,
            content_type="application/json",
        )
        return result

    async def patch(
        self,
        rt: ResourceType,
        name: str,
        namespace: str | None,
        patch: Any,
        *,
        subresource: str | None = None,
        content_type: str = MERGE_PATCH,
    ) -> Obj:
        what = f"patch {rt.kind} {name}" + (f"/{subresource}" if subresource else "")
        result: Obj = await self._request(
            "patch", rt.path(namespace, name, subresource), what, body=patch, content_type=content_type
        )
        return result

    async def delete(self, rt: ResourceType, name: str, namespace: str | None = None) -> bool:
        try:
            await self._request(
                "delete", rt.path(namespace, name), f"delete {rt.kind} {name}", propagation_policy="Background"
            )
        except NotFoundError:
            return False
        return True

    async def pod_log(
        self,
        name: str,
        namespace: str,
        *,
        container: str | None = None,
        previous: bool = False,
        tail_lines: int | None = None,
        follow: bool = False,
    ) -> AsyncIterator[bytes]:
        """A container's log (GET pods/{name}/log) in chunks as they arrive: the whole log, or with
        `follow` also what the container writes next, until it stops, the pod is deleted or the
        caller stops iterating. Errors as the other calls: NotFoundError, ApiError (the server's
        message, e.g. `previous terminated container "app" in pod "x" not found`)."""
        what = f'cannot read the log of pod "{name}" in namespace "{namespace}"'
        query: list[tuple[str, str]] = [("container", container)] if container else []
        if previous:
            query.append(("previous", "true"))
        if follow:
            query.append(("follow", "true"))
        if tail_lines is not None:
            query.append(("tailLines", str(tail_lines)))
        # A followed log may stay quiet for hours: only connecting is bounded then.
        timeout = aiohttp.ClientTimeout(sock_connect=30) if follow else aiohttp.ClientTimeout(total=120)
        try:
            response = await self._dynamic.request(
                "get",
                POD.path(namespace, name, "log"),
                serialize=False,
                query_params=query,
                header_params={"Accept": "text/plain, application/json"},
                _request_timeout=timeout,
            )
        except (ApiException, DynamicApiError) as exc:
            raise _error(exc, what) from exc
        except OSError as exc:
            raise ApiError(f"{what}: cannot reach the Kubernetes API: {exc}") from exc
        try:
            if response.status >= 400:
                body = await response.read()
                try:
                    data: Any = json.loads(body)
                except ValueError:
                    data = body.decode(errors="replace").strip()
                raise _status_error(response.status, data, what)
            async for chunk in response.content.iter_any():
                yield chunk
        finally:
            response.close()  # a stream stopped early must not go back to the pool half read

    async def watch(
        self,
        rt: ResourceType,
        namespace: str | None,
        resource_version: str,
        timeout_seconds: int = 300,
        label_selector: str | None = None,
    ) -> AsyncIterator[tuple[str, Obj]]:
        """Events after `resource_version` until the server closes the stream; ExpiredError on 410.
        With `label_selector` the server sends only matching objects, an object that stops
        matching as DELETED and one that starts matching as ADDED."""
        what = f"watch {rt.plural}"
        try:
            response = await self._dynamic.request(
                "get",
                rt.path(namespace),
                serialize=False,
                watch=True,
                resource_version=resource_version,
                timeout_seconds=timeout_seconds,
                label_selector=label_selector or None,
                query_params=[("allowWatchBookmarks", "true")],
                _request_timeout=timeout_seconds + 30,
            )
        except (ApiException, DynamicApiError) as exc:
            raise _error(exc, what) from exc
        if response.status >= 400:
            data = await response.json()
            response.release()
            raise _status_error(response.status, data, what)
        try:
            async for raw in response.content:
                line = raw.strip()
                if not line:
                    continue
                event = json.loads(line)
                kind = str(event.get("type", ""))
                obj = event.get("object") or {}
                if kind == "ERROR":
                    if obj.get("code") == 410:
                        raise ExpiredError(f"{what}: {obj.get('message', 'resource version too old')}")
                    raise ApiError(f"{what}: {obj.get('message', obj)}", obj.get("code"))
                yield kind, obj
        finally:
            response.release()
