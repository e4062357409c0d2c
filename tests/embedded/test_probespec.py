"""From a pod template's container to the probes the supervisor runs (`probespec`).

Covers Kubernetes' defaults, ports (a number or a named port; the container's declared port means
its PORT), each handler, specs that cannot run (the same words as `rollouts lint`), and
`effective`: the older `readiness_path` fields and the implicit TCP probe of the traffic container.
"""

from __future__ import annotations

from typing import Any

import pytest

from rollouts.model.pod import Container
from rollouts.platform.embedded.probespec import (
    IMPLICIT_POLL_SECONDS,
    ContainerProbes,
    Exec,
    HTTPGet,
    Probe,
    TCPSocket,
    effective,
    from_container,
)

HEALTHZ = {"httpGet": {"path": "/healthz", "port": 8080}}
PORTS = [{"name": "http", "containerPort": 8080}, {"name": "admin", "containerPort": 9090}]


def container(**fields: Any) -> Container:
    return Container.model_validate({"name": "app", "image": "app:v1", "command": ["app"], **fields})


CASES = [
    pytest.param(
        {"readinessProbe": HEALTHZ},
        ContainerProbes(readiness=Probe(HTTPGet(path="/healthz"), period=10.0, timeout=1.0, failure_threshold=3)),
        id="kubernetes-defaults-and-undeclared-port-means-PORT",
    ),
    pytest.param(
        {
            "livenessProbe": {
                **HEALTHZ,
                "initialDelaySeconds": 3,
                "periodSeconds": 2,
                "timeoutSeconds": 4,
                "successThreshold": 1,
                "failureThreshold": 5,
            }
        },
        ContainerProbes(
            liveness=Probe(HTTPGet(path="/healthz"), initial_delay=3.0, period=2.0, timeout=4.0, failure_threshold=5)
        ),
        id="timing-fields",
    ),
    pytest.param(
        {"readinessProbe": {**HEALTHZ, "periodSeconds": 0, "timeoutSeconds": 0, "failureThreshold": 0}},
        ContainerProbes(readiness=Probe(HTTPGet(path="/healthz"))),
        id="zero-means-the-default",
    ),
    pytest.param(
        {"ports": PORTS, "readinessProbe": {"httpGet": {"path": "/ready", "port": "http"}}},
        ContainerProbes(readiness=Probe(HTTPGet(path="/ready"))),
        id="named-first-declared-port-means-PORT",
    ),
    pytest.param(
        {"ports": PORTS, "readinessProbe": {"httpGet": {"path": "/ready", "port": "admin"}}},
        ContainerProbes(readiness=Probe(HTTPGet(path="/ready", port=9090))),
        id="named-other-declared-port-is-probed-as-written",
    ),
    pytest.param(
        {"ports": PORTS, "readinessProbe": {"tcpSocket": {"port": 8080}}},
        ContainerProbes(readiness=Probe(TCPSocket())),
        id="tcp-first-declared-port-number-means-PORT",
    ),
    pytest.param(
        {"ports": PORTS, "readinessProbe": {"tcpSocket": {"port": 7000}}},
        ContainerProbes(readiness=Probe(TCPSocket(port=7000))),
        id="tcp-undeclared-port-with-declared-ports-is-probed-as-written",
    ),
    pytest.param(
        {"readinessProbe": {"httpGet": {"path": "/x", "port": 8080, "host": "10.1.2.3"}}},
        ContainerProbes(readiness=Probe(HTTPGet(path="/x", port=8080, host="10.1.2.3"))),
        id="another-host-keeps-its-port",
    ),
    pytest.param(
        {
            "readinessProbe": {
                "httpGet": {
                    "path": "ready",
                    "port": 8080,
                    "scheme": "HTTPS",
                    "httpHeaders": [{"name": "X-Probe", "value": "1"}],
                }
            }
        },
        ContainerProbes(readiness=Probe(HTTPGet(path="/ready", scheme="HTTPS", headers=(("X-Probe", "1"),)))),
        id="https-headers-and-a-path-without-slash",
    ),
    pytest.param(
        {"startupProbe": {"exec": {"command": ["cat", "/tmp/started"]}, "periodSeconds": 1, "failureThreshold": 30}},
        ContainerProbes(startup=Probe(Exec(("cat", "/tmp/started")), period=1.0, failure_threshold=30)),
        id="exec-startup",
    ),
    pytest.param(
        {"livenessProbe": {**HEALTHZ, "exec": {"command": ["true"]}}},
        ContainerProbes(error="livenessProbe: sets 2 handlers (httpGet, exec); set exactly one"),
        id="two-handlers",
    ),
    pytest.param(
        {"readinessProbe": {"httpget": {"port": 8080}}},
        ContainerProbes(
            error="readinessProbe: sets no handler (unknown field 'httpget'); set exactly one of httpGet, tcpSocket "
            "or exec"
        ),
        id="unknown-handler",
    ),
    pytest.param(
        {"livenessProbe": {"tcpSocket": {"port": 70000}}},
        ContainerProbes(error="livenessProbe.tcpSocket.port: 70000 is out of range (use 1-65535)"),
        id="port-out-of-range",
    ),
    pytest.param(
        {"livenessProbe": {**HEALTHZ, "successThreshold": 2}},
        ContainerProbes(error="livenessProbe.successThreshold: 2 must be 1 for a liveness probe (or leave it unset)"),
        id="liveness-success-threshold",
    ),
    pytest.param(
        {"readinessProbe": {"httpGet": {"port": "web"}}},
        ContainerProbes(
            error="readinessProbe.httpGet.port: 'web' is not a named port of this container (name it in ports[] or "
            "use a number)"
        ),
        id="unknown-named-port",
    ),
    pytest.param(
        {"readinessProbe": {"grpc": {"port": 9000}}},
        ContainerProbes(error="readinessProbe.grpc: grpc probes are not supported by the embedded platform"),
        id="grpc-cannot-run-here",
    ),
]


@pytest.mark.parametrize(("fields", "expected"), CASES)
def test_from_container(fields: dict[str, Any], expected: ContainerProbes) -> None:
    assert from_container(container(**fields)) == expected


def legacy(probes: ContainerProbes | None, *, path: str | None = None, traffic: bool = True) -> ContainerProbes:
    return effective(
        probes, readiness_path=path, readiness_period=0.5, readiness_initial_delay=2.0, traffic=traffic, timeout=0.3
    )


LIVENESS = Probe(Exec(("true",)))
EFFECTIVE_CASES = [
    pytest.param(
        legacy(None, path="healthz"),
        ContainerProbes(
            readiness=Probe(HTTPGet(path="/healthz"), initial_delay=2.0, period=0.5, timeout=0.3, failure_threshold=1)
        ),
        id="readiness-path-settled-by-each-result",
    ),
    pytest.param(
        legacy(ContainerProbes(liveness=LIVENESS)),
        ContainerProbes(
            readiness=Probe(
                TCPSocket(), period=0.5, timeout=0.3, failure_threshold=1, poll_until_success=IMPLICIT_POLL_SECONDS
            ),
            liveness=LIVENESS,
        ),
        id="traffic-container-gets-implicit-tcp-readiness",
    ),
    pytest.param(legacy(None, traffic=False), ContainerProbes(), id="other-container-runs-no-probe"),
    pytest.param(
        legacy(ContainerProbes(readiness=Probe(Exec(("ok",)))), path="/ignored"),
        ContainerProbes(readiness=Probe(Exec(("ok",)))),
        id="manifest-readiness-wins",
    ),
    pytest.param(legacy(ContainerProbes(error="bad"), path="/x"), ContainerProbes(error="bad"), id="an-error-is-kept"),
]


@pytest.mark.parametrize(("got", "expected"), EFFECTIVE_CASES)
def test_effective(got: ContainerProbes, expected: ContainerProbes) -> None:
    assert got == expected
