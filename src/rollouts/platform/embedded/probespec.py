"""A container's probes, as the embedded pod supervisor runs them.

`from_container` reads `readinessProbe`, `livenessProbe` and `startupProbe` of a pod
template's container and applies Kubernetes' defaults (periodSeconds 10, timeoutSeconds 1,
successThreshold 1, failureThreshold 3; 0 also means the default). Timing is kept in float
seconds: the manifest's fields are whole seconds, but the supervisor's own probes and tests
use fractions.

Ports: a container process listens on the `PORT` the supervisor gives it, not on the port its
manifest declares. So a probe port (a number, or a name resolved against `containers[].ports`)
on loopback that is the container's first declared port, or any port when the container
declares none, means "the container's PORT" (`port=None` here); any other port is probed as
written (a port the process opens itself). A probe whose spec breaks a rule of
`model/validate_probes.py` is not built: `ContainerProbes.error` says why, with the same words
as `rollouts lint`, and the supervisor fails the pod with it.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from rollouts.model import pod as model
from rollouts.model.validate_probes import named_port, probe_problems

LOOPBACK = "127.0.0.1"
DEFAULT_PERIOD = 10.0
DEFAULT_TIMEOUT = 1.0
DEFAULT_SUCCESS_THRESHOLD = 1
DEFAULT_FAILURE_THRESHOLD = 3
# The supervisor's own probe of a traffic container without a readiness probe polls this
# often until it first answers, so a fresh pod joins the routing table quickly.
IMPLICIT_POLL_SECONDS = 0.1


class ProbeKind(StrEnum):
    """Which probe; the value starts Kubernetes' messages ("Liveness probe failed: ...")."""

    READINESS = "Readiness"
    LIVENESS = "Liveness"
    STARTUP = "Startup"


@dataclass(frozen=True)
class HTTPGet:
    """GET `scheme://host:port/path`; a status of 200-399 is a success."""

    path: str = "/"
    port: int | None = None  # None: the container's PORT
    host: str = LOOPBACK
    scheme: str = "HTTP"
    headers: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class TCPSocket:
    """Open a TCP connection to `host:port`; connecting is a success."""

    port: int | None = None  # None: the container's PORT
    host: str = LOOPBACK


@dataclass(frozen=True)
class Exec:
    """Run `command` with the container's environment; exit code 0 is a success."""

    command: tuple[str, ...]


Handler = HTTPGet | TCPSocket | Exec


@dataclass(frozen=True)
class Probe:
    handler: Handler
    initial_delay: float = 0.0
    period: float = DEFAULT_PERIOD
    timeout: float = DEFAULT_TIMEOUT
    success_threshold: int = DEFAULT_SUCCESS_THRESHOLD
    failure_threshold: int = DEFAULT_FAILURE_THRESHOLD
    # Probe this often (instead of `period`) until the first success: only the supervisor's
    # implicit readiness probe sets it; Kubernetes probes have no such thing.
    poll_until_success: float | None = None


@dataclass(frozen=True)
class ContainerProbes:
    readiness: Probe | None = None
    liveness: Probe | None = None
    startup: Probe | None = None
    error: str = ""  # set: the probes cannot run, and neither can the container

    def get(self, kind: ProbeKind) -> Probe | None:
        if kind is ProbeKind.READINESS:
            return self.readiness
        if kind is ProbeKind.LIVENESS:
            return self.liveness
        return self.startup


def from_container(container: model.Container) -> ContainerProbes:
    """The probes of a pod template's container (see the module docstring)."""
    errors = [p for p in probe_problems(container) if p.severity == "error"]
    if errors:
        return ContainerProbes(error=f"{errors[0].path}: {errors[0].message}")
    built: dict[str, Probe | None] = {}
    for kind, spec in (
        ("readiness", container.readiness_probe),
        ("liveness", container.liveness_probe),
        ("startup", container.startup_probe),
    ):
        if spec is None:
            built[kind] = None
            continue
        handler = _handler(container, spec)
        if handler is None:  # a grpc probe: valid Kubernetes, but nothing here can run it
            return ContainerProbes(error=f"{kind}Probe.grpc: grpc probes are not supported by the embedded platform")
        built[kind] = Probe(
            handler=handler,
            initial_delay=float(spec.initial_delay_seconds or 0),
            period=float(spec.period_seconds or DEFAULT_PERIOD),
            timeout=float(spec.timeout_seconds or DEFAULT_TIMEOUT),
            success_threshold=spec.success_threshold or DEFAULT_SUCCESS_THRESHOLD,
            failure_threshold=spec.failure_threshold or DEFAULT_FAILURE_THRESHOLD,
        )
    return ContainerProbes(readiness=built["readiness"], liveness=built["liveness"], startup=built["startup"])


def effective(
    probes: ContainerProbes | None,
    *,
    readiness_path: str | None,
    readiness_period: float,
    readiness_initial_delay: float,
    traffic: bool,
    timeout: float,
) -> ContainerProbes:
    """The probes the supervisor runs for a container.

    `probes` (from the manifest) win. Without a readiness probe there, the older
    `readiness_path` fields give an HTTP readiness probe on PORT that any single result
    settles; failing that, the pod's traffic container (its first) gets a TCP readiness probe
    on PORT, polled quickly until it first connects, so a pod is routed to only once it
    listens. `timeout` applies to those two.
    """
    probes = probes or ContainerProbes()
    if probes.readiness is not None or probes.error:
        return probes
    readiness: Probe | None = None
    period = max(readiness_period, 0.01)
    if readiness_path is not None:
        path = readiness_path if readiness_path.startswith("/") else "/" + readiness_path
        readiness = Probe(
            HTTPGet(path=path),
            initial_delay=readiness_initial_delay,
            period=period,
            timeout=timeout,
            failure_threshold=1,
        )
    elif traffic:
        readiness = Probe(
            TCPSocket(),
            period=period,
            timeout=timeout,
            failure_threshold=1,
            poll_until_success=min(period, IMPLICIT_POLL_SECONDS),
        )
    return ContainerProbes(readiness=readiness, liveness=probes.liveness, startup=probes.startup)


def _handler(container: model.Container, spec: model.Probe) -> Handler | None:
    if spec.http_get is not None:
        action = spec.http_get
        host = action.host or LOOPBACK
        path = action.path or "/"
        return HTTPGet(
            path=path if path.startswith("/") else "/" + path,
            port=_port(container, action.port, host),
            host=host,
            scheme=action.scheme or "HTTP",
            headers=tuple((h.name, h.value or "") for h in action.http_headers or []),
        )
    if spec.tcp_socket is not None:
        host = spec.tcp_socket.host or LOOPBACK
        return TCPSocket(port=_port(container, spec.tcp_socket.port, host), host=host)
    if spec.exec is not None:
        return Exec(tuple(part for part in spec.exec.command or [] if part))
    return None


def _port(container: model.Container, value: int | str | None, host: str) -> int | None:
    """The port to probe; None for the container's PORT (see the module docstring)."""
    number = named_port(container, value) if isinstance(value, str) else value
    if number is None:  # validated already: cannot happen
        return None
    if not _is_loopback(host):
        return number
    declared = container.ports or []
    if not declared or number == declared[0].container_port:
        return None
    return number


def _is_loopback(host: str) -> bool:
    return host in ("localhost", "::1") or host.startswith("127.")
