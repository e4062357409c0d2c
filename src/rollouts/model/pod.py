"""The parts of a Kubernetes pod template the controller and the embedded platform read."""

from __future__ import annotations

from typing import Any

from rollouts.model.base import Model


class SecretKeySelector(Model):
    name: str
    key: str


class EnvVarSource(Model):
    secret_key_ref: SecretKeySelector | None = None
    field_ref: dict[str, Any] | None = None


class EnvVar(Model):
    name: str
    value: str | None = None
    value_from: EnvVarSource | None = None


class ContainerPort(Model):
    container_port: int
    name: str | None = None
    protocol: str | None = None


class HTTPHeader(Model):
    name: str
    value: str | None = None


class HTTPGetAction(Model):
    path: str | None = None
    port: int | str | None = None
    host: str | None = None
    scheme: str | None = None
    http_headers: list[HTTPHeader] | None = None


class TCPSocketAction(Model):
    port: int | str | None = None
    host: str | None = None


class ExecAction(Model):
    command: list[str] | None = None


class Probe(Model):
    http_get: HTTPGetAction | None = None
    tcp_socket: TCPSocketAction | None = None
    exec: ExecAction | None = None
    grpc: dict[str, Any] | None = None
    initial_delay_seconds: int | None = None
    period_seconds: int | None = None
    timeout_seconds: int | None = None
    success_threshold: int | None = None
    failure_threshold: int | None = None


class Container(Model):
    name: str
    image: str | None = None
    command: list[str] | None = None
    args: list[str] | None = None
    env: list[EnvVar] | None = None
    ports: list[ContainerPort] | None = None
    readiness_probe: Probe | None = None
    liveness_probe: Probe | None = None
    startup_probe: Probe | None = None


class PodSpec(Model):
    containers: list[Container]
    init_containers: list[Container] | None = None
    termination_grace_period_seconds: int | None = None


class TemplateMeta(Model):
    """A pod template's metadata: unlike an object's, its name is optional (and rarely set)."""

    name: str | None = None
    labels: dict[str, str] | None = None
    annotations: dict[str, str] | None = None


class PodTemplateSpec(Model):
    metadata: TemplateMeta | None = None
    spec: PodSpec
