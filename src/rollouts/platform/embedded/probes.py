"""When a container's probes run and what their results mean: kubelet's prober, without I/O.

`ContainerHealth` follows one container process from its start. It is pure: the caller passes
the time (`now`/`at`, any monotonic clock; the supervisor uses its event loop's) and each
probe's result, runs the probes itself (`prober.py`) and acts on the `Verdict`s (`pods.py`).

Kubernetes' semantics:

* a probe runs first at start + initialDelaySeconds, then every periodSeconds after the start
  of its previous run;
* a result settles after successThreshold consecutive successes or failureThreshold
  consecutive failures; until then the previous one stands. Readiness starts as a failure
  (not ready), liveness as a success (alive);
* a startup probe gates the others: until it succeeds, readiness and liveness are not run and
  the container is not ready; once it succeeds it stops, and the others run at once if their
  initial delay is over;
* liveness or startup settling on a failure means the container must be killed (the
  supervisor restarts it, with its back-off); nothing is probed after that;
* the container is ready once started and readiness has settled on a success (without a
  readiness probe: once started).

Verdicts carry an event only on a transition (ready to unready, a kill), so a probe failing
every second does not write an event every second.
"""

from __future__ import annotations

from dataclasses import dataclass

from rollouts.platform.embedded.probespec import ContainerProbes, Probe, ProbeKind


@dataclass(frozen=True)
class Verdict:
    """What a probe result changed."""

    ready_changed: bool = False
    started: bool = False  # the startup probe just succeeded: readiness and liveness begin
    kill: str | None = None  # "Liveness probe failed: ...": kill the container
    event: str | None = None  # the message of a Warning/Unhealthy event to record


@dataclass
class _Track:
    """One probe's counters."""

    probe: Probe
    result: bool | None  # the settled result; None: none yet
    due: float  # when to run next
    last: bool | None = None  # the last raw result
    run: int = 0  # how many raw results in a row equal `last`
    succeeded: bool = False  # ever
    failure: str = ""  # the last failure's message


class ContainerHealth:
    """The probe state of one container process; see the module docstring."""

    def __init__(self, probes: ContainerProbes, *, started_at: float, adopted: bool = False) -> None:
        """`started_at`: when the process started. An `adopted` process (started by an earlier
        supervisor) is long past its initial delays."""
        self._tracks: dict[ProbeKind, _Track] = {}
        for kind in ProbeKind:
            probe = probes.get(kind)
            if probe is None:
                continue
            initial = None
            if kind is ProbeKind.READINESS:
                initial = False
            elif kind is ProbeKind.LIVENESS:
                initial = True
            delay = 0.0 if adopted else probe.initial_delay
            self._tracks[kind] = _Track(probe, result=initial, due=started_at + delay)
        self.started = ProbeKind.STARTUP not in self._tracks
        self.kill_reason: str | None = None

    # -- what the caller asks -----------------------------------------------------------------

    def kinds(self) -> list[ProbeKind]:
        """The probes this container has."""
        return list(self._tracks)

    def probe(self, kind: ProbeKind) -> Probe:
        return self._tracks[kind].probe

    def active(self, kind: ProbeKind) -> bool:
        """Whether `kind` may still run on this process: not once it is being killed, nor the
        startup probe once it has succeeded."""
        if self.kill_reason is not None or kind not in self._tracks:
            return False
        return not (kind is ProbeKind.STARTUP and self.started)

    def next_due(self, kind: ProbeKind) -> float | None:
        """When to run `kind` next; None while it cannot run (see `active`) or waits for the
        startup probe to succeed."""
        if not self.active(kind):
            return None
        if kind is not ProbeKind.STARTUP and not self.started:
            return None
        return self._tracks[kind].due

    @property
    def ready(self) -> bool:
        if self.kill_reason is not None or not self.started:
            return False
        readiness = self._tracks.get(ProbeKind.READINESS)
        return readiness is None or readiness.result is True

    @property
    def message(self) -> str:
        """Why the container is not (or soon not) healthy; "" when nothing failed."""
        if self.kill_reason is not None:
            return self.kill_reason
        startup = self._tracks.get(ProbeKind.STARTUP)
        if not self.started and startup is not None and startup.last is False:
            return _failed(ProbeKind.STARTUP, startup.failure)
        readiness = self._tracks.get(ProbeKind.READINESS)
        if readiness is not None and not self.ready and readiness.last is False:
            return _failed(ProbeKind.READINESS, readiness.failure)
        return ""

    # -- what the caller tells ----------------------------------------------------------------

    def record(self, kind: ProbeKind, ok: bool, message: str, *, at: float) -> Verdict:
        """The result of a `kind` probe that started at `at`; `message` says why it failed."""
        if not self.active(kind) or (kind is not ProbeKind.STARTUP and not self.started):
            return Verdict()  # a result that arrived after a kill: it no longer counts
        track = self._tracks[kind]
        was_ready = self.ready
        track.run = track.run + 1 if track.last is ok else 1
        track.last = ok
        if ok:
            track.succeeded = True
        else:
            track.failure = message
        probe = track.probe
        poll = probe.poll_until_success
        track.due = at + (poll if poll is not None and not track.succeeded else probe.period)
        if track.run >= (probe.success_threshold if ok else probe.failure_threshold):
            track.result = ok

        started = False
        kill: str | None = None
        event: str | None = None
        if kind is ProbeKind.STARTUP and track.result is True:
            self.started = started = True
            for other in self._tracks.values():  # the others' initial delays ran meanwhile
                other.due = max(other.due, at)
        elif kind is not ProbeKind.READINESS and track.result is False:
            kill = event = self.kill_reason = _failed(kind, track.failure)
        if was_ready and not self.ready and kill is None:
            event = _failed(ProbeKind.READINESS, track.failure)
        return Verdict(ready_changed=was_ready != self.ready, started=started, kill=kill, event=event)

    def adopted_probe(self, ok: bool, message: str, *, at: float) -> None:
        """The readiness probe run once when a supervisor adopts this process: one that answers
        is ready at once (it has passed its startup probe under the earlier supervisor)."""
        readiness = self._tracks.get(ProbeKind.READINESS)
        if ok:
            self.started = True
        if readiness is None:
            return
        readiness.last = ok
        readiness.run = 1
        readiness.result = ok
        readiness.succeeded = ok
        readiness.failure = "" if ok else message
        poll = readiness.probe.poll_until_success
        readiness.due = at + (poll if poll is not None and not ok else readiness.probe.period)


def _failed(kind: ProbeKind, message: str) -> str:
    return f"{kind.value} probe failed: {message}"
