"""Kubernetes' rules for a container's probes (readinessProbe, livenessProbe, startupProbe).

The API server refuses a pod template whose probe sets no handler or more than one, a port
outside 1-65535, a negative timing field, or a liveness/startup probe with a successThreshold
other than 1; a named port the container does not declare is accepted there but can never be
probed, so it is an error here too. A grpc probe is valid Kubernetes that the embedded
platform cannot run: a warning. Zero in a timing field means "the default", as in Kubernetes.

Pure functions over the typed model: `validation` reports the problems as findings under
`spec.template.spec.containers[i]`, and the embedded pod supervisor refuses to start a
container whose probes have an error (`platform/embedded/probespec.py`), with the same words.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from rollouts.model.findings import Findings
from rollouts.model.pod import Container, HTTPGetAction, Probe, TCPSocketAction

# (field in the manifest, attribute of Container, the words for it)
PROBE_FIELDS = (
    ("readinessProbe", "readiness_probe", "readiness"),
    ("livenessProbe", "liveness_probe", "liveness"),
    ("startupProbe", "startup_probe", "startup"),
)
HANDLERS = ("httpGet", "tcpSocket", "exec")
SCHEMES = ("HTTP", "HTTPS")
# Probe fields that are not handlers; anything else unknown where a handler is missing is
# probably a misspelt handler (`httpget`).
_OTHER_PROBE_FIELDS = frozenset({"terminationGracePeriodSeconds"})
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)

_Report = Callable[[str, str], None]  # error(path under the probe, message)


@dataclass(frozen=True)
class ProbeProblem:
    severity: str  # "error" or "warning"
    path: str  # under the container, e.g. "livenessProbe.httpGet.port"
    message: str


def validate_container_probes(out: Findings, path: str, container: Container) -> None:
    """Add the findings for `container`'s probes; `path` is the container's (`...containers[0]`)."""
    for problem in probe_problems(container):
        if problem.severity == "error":
            out.error(f"{path}.{problem.path}", problem.message)
        else:
            out.warning(f"{path}.{problem.path}", problem.message)


def probe_problems(container: Container) -> list[ProbeProblem]:
    """Every rule `container`'s probes break, in field order."""
    problems: list[ProbeProblem] = []
    for field, attribute, words in PROBE_FIELDS:
        probe: Probe | None = getattr(container, attribute)
        if probe is not None:
            problems.extend(_probe_problems(container, probe, field, words))
    return problems


def named_port(container: Container, name: str) -> int | None:
    """The number of the port `container` declares under `name`, or None."""
    for port in container.ports or []:
        if port.name == name:
            return port.container_port
    return None


def _probe_problems(container: Container, probe: Probe, base: str, words: str) -> list[ProbeProblem]:
    problems: list[ProbeProblem] = []

    def error(path: str, message: str) -> None:
        problems.append(ProbeProblem("error", f"{base}.{path}" if path else base, message))

    handlers = [
        name
        for name, value in (
            ("httpGet", probe.http_get),
            ("tcpSocket", probe.tcp_socket),
            ("exec", probe.exec),
            ("grpc", probe.grpc),
        )
        if value is not None
    ]
    if not handlers:
        unknown = [key for key in probe.model_extra or {} if key not in _OTHER_PROBE_FIELDS]
        hint = f" (unknown field {unknown[0]!r})" if unknown else ""
        error("", f"sets no handler{hint}; set exactly one of httpGet, tcpSocket or exec")
    elif len(handlers) > 1:
        error("", f"sets {len(handlers)} handlers ({', '.join(handlers)}); set exactly one")
    if probe.http_get is not None:
        _http_get_problems(container, probe.http_get, error)
    if probe.tcp_socket is not None:
        _port_problems(container, probe.tcp_socket, "tcpSocket.port", error)
    if probe.exec is not None and not [part for part in probe.exec.command or [] if part]:
        error("exec.command", "empty (give the command to run, e.g. [cat, /tmp/healthy])")
    if probe.grpc is not None and len(handlers) == 1:
        problems.append(
            ProbeProblem(
                "warning",
                f"{base}.grpc",
                "not supported by the embedded platform, which runs httpGet, tcpSocket and exec probes "
                "(fine on Kubernetes)",
            )
        )
    for name, value in (
        ("initialDelaySeconds", probe.initial_delay_seconds),
        ("periodSeconds", probe.period_seconds),
        ("timeoutSeconds", probe.timeout_seconds),
        ("successThreshold", probe.success_threshold),
        ("failureThreshold", probe.failure_threshold),
    ):
        if value is not None and value < 0:
            error(name, f"{value} is negative (use 0 or more; 0 means the default)")
    # Only readiness counts successes: a liveness or startup probe is settled by one.
    if words != "readiness" and probe.success_threshold not in (None, 0, 1):
        error("successThreshold", f"{probe.success_threshold} must be 1 for a {words} probe (or leave it unset)")
    return problems


def _http_get_problems(container: Container, action: HTTPGetAction, error: _Report) -> None:
    _port_problems(container, action, "httpGet.port", error)
    if action.scheme is not None and action.scheme not in SCHEMES:
        error("httpGet.scheme", f"{action.scheme!r} is not a scheme (use HTTP or HTTPS)")
    for i, header in enumerate(action.http_headers or []):
        if not _TOKEN.match(header.name):
            error(f"httpGet.httpHeaders[{i}].name", f"{header.name!r} is not a valid header name (letters, digits, -)")
        if "\r" in (header.value or "") or "\n" in (header.value or ""):
            error(f"httpGet.httpHeaders[{i}].value", "contains a line break (use a single line)")


def _port_problems(container: Container, action: HTTPGetAction | TCPSocketAction, path: str, error: _Report) -> None:
    port = action.port
    if port is None or port == "":
        error(path, "missing (set a port number or the name of one of the container's ports)")
    elif isinstance(port, str):
        if named_port(container, port) is None:
            error(path, f"{port!r} is not a named port of this container (name it in ports[] or use a number)")
    elif not 1 <= port <= 65535:
        error(path, f"{port} is out of range (use 1-65535)")
