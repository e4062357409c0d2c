"""Core v1 Service: on the embedded platform a Service is a listener of the built-in proxy."""

from __future__ import annotations

from typing import Literal

from rollouts.model.base import Model
from rollouts.model.meta import ObjectMeta


class ServicePort(Model):
    port: int
    name: str | None = None
    target_port: int | str | None = None
    protocol: str | None = None


class ServiceSpec(Model):
    ports: list[ServicePort] | None = None
    selector: dict[str, str] | None = None
    type: str | None = None


class Service(Model):
    api_version: Literal["v1"] = "v1"
    kind: Literal["Service"] = "Service"
    metadata: ObjectMeta
    spec: ServiceSpec | None = None

    def port(self) -> int | None:
        ports = self.spec.ports if self.spec else None
        return ports[0].port if ports else None


class Secret(Model):
    """v1 Secret: analysis `secretKeyRef` arguments read it (values base64 in `data`)."""

    api_version: Literal["v1"] = "v1"
    kind: Literal["Secret"] = "Secret"
    metadata: ObjectMeta
    data: dict[str, str] | None = None
    string_data: dict[str, str] | None = None
    type: str | None = None
