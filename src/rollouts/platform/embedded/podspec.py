"""What the embedded platform needs to run one pod as local processes."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from rollouts.platform.embedded.probespec import ContainerProbes


@dataclass(frozen=True)
class ContainerSpec:
    """One container of a pod template, as a local process.

    The process runs `command + args` with `env`, plus `PORT` (a free loopback port picked by
    the supervisor) and `ROLLOUTS_IMAGE` (= `image`). `readiness_path` is
    `readinessProbe.httpGet.path`; None means ready as soon as the process runs. `probes`, when
    set (`probespec.from_container`), are the manifest's readiness, liveness and startup probes;
    a readiness probe there takes the place of the `readiness_*` fields.
    """

    name: str
    image: str
    command: tuple[str, ...]
    args: tuple[str, ...] = ()
    env: dict[str, str] = field(default_factory=dict)
    readiness_path: str | None = None
    readiness_period_seconds: float = 1.0
    readiness_initial_delay_seconds: float = 0.0
    probes: ContainerProbes | None = None


@dataclass(frozen=True)
class PodSpec:
    """A pod: its name (`<replicaset>-<suffix>`), labels, containers and where logs go."""

    name: str
    labels: dict[str, str]
    containers: tuple[ContainerSpec, ...]
    log_dir: Path
    termination_grace_seconds: float = 5.0
