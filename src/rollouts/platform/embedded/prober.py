"""Runs a container's probes: each on its schedule, as an HTTP GET, a TCP connect or a command.

The I/O half of the supervisor's probes; `probes.py` decides when they run and what their
results mean. `run_probes` runs every probe of one container process in a task of its own, as
the kubelet has a worker per probe (a slow exec liveness probe does not hold readiness back),
until a liveness or startup probe says to kill the container. Nothing here raises for a
failing probe: a refused connection, a timeout, a bad status or a non-zero exit is an
`Outcome` with a one-line message ("GET http://127.0.0.1:20001/healthz -> 500"), to which the
supervisor adds "Readiness probe failed: " and the like.

* httpGet: one HTTP/1.0 request (`Connection: close`); a status of 200-399 is a success. Like
  the kubelet, HTTPS does not verify the server's certificate, and `httpHeaders` replace the
  default headers of the same name (Host, User-Agent, Accept).
* tcpSocket: connecting is a success.
* exec: the command (`command[0]` looked up in the container's `PATH`) runs with the
  container's environment and working directory, in a session of its own; exit code 0 is a
  success. At the timeout it is killed, and whatever it started is killed with it whenever it
  ends, so a probe leaves no process behind.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shlex
import shutil
import signal
import ssl
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass

from rollouts import processgroups
from rollouts.platform.embedded.probes import ContainerHealth, Verdict
from rollouts.platform.embedded.probespec import Exec, Handler, HTTPGet, Probe, ProbeKind, TCPSocket

USER_AGENT = "rollouts-probe"
_OUTPUT_LIMIT = 10 * 1024  # of an exec probe's output, as the kubelet keeps
_MESSAGE_OUTPUT = 200  # characters of that output in a message
_SHOWN_COMMAND = 80


@dataclass(frozen=True)
class Outcome:
    ok: bool
    message: str = ""  # why it failed


async def run_probes(
    health: ContainerHealth,
    *,
    run: Callable[[Probe], Awaitable[Outcome]],
    alive: Callable[[], bool],
    on_verdict: Callable[[Verdict], None],
) -> tuple[ProbeKind, str] | None:
    """Run the probes of `health`'s container process while `alive()`, each result told to
    `health` and its verdict to `on_verdict`. Returns (kind, "Liveness probe failed: ...") as
    soon as a probe says to kill the container (the caller kills it); None once every probe is
    done without that. The caller cancels it when the process ends."""
    loop = asyncio.get_running_loop()
    started = asyncio.Event()  # the startup probe has succeeded (or there is none)
    if health.started:
        started.set()

    async def worker(kind: ProbeKind) -> tuple[ProbeKind, str] | None:
        probe = health.probe(kind)
        while alive() and health.active(kind):
            due = health.next_due(kind)
            if due is None:  # readiness and liveness wait for the startup probe
                await started.wait()
                continue
            if due > loop.time():
                await asyncio.sleep(due - loop.time())
                continue
            at = loop.time()
            outcome = await run(probe)
            if not alive():
                return None
            verdict = health.record(kind, outcome.ok, outcome.message, at=at)
            if verdict.started:
                started.set()
            on_verdict(verdict)
            if verdict.kill is not None:
                return kind, verdict.kill
        return None

    workers = [asyncio.create_task(worker(kind), name=f"probe {kind.value}") for kind in health.kinds()]
    try:
        for finished in asyncio.as_completed(workers):
            killed = await finished
            if killed is not None:
                return killed
        return None
    finally:
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)


async def run(handler: Handler, *, port: int, timeout: float, env: Mapping[str, str]) -> Outcome:
    """Run `handler` once. `port` is the container's PORT (for a handler whose port is None),
    `env` the container's environment (for exec)."""
    if isinstance(handler, HTTPGet):
        return await http_get(handler, port=handler.port or port, timeout=timeout)
    if isinstance(handler, TCPSocket):
        return await tcp_socket(handler.host, handler.port or port, timeout=timeout)
    return await exec_command(handler, env=env, timeout=timeout)


async def http_get(action: HTTPGet, *, port: int, timeout: float) -> Outcome:
    host = action.host
    authority = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    url = f"{action.scheme.lower()}://{authority}{action.path}"
    headers = {"host": ("Host", authority), "user-agent": ("User-Agent", USER_AGENT), "accept": ("Accept", "*/*")}
    extra: list[tuple[str, str]] = []
    for name, value in action.headers:
        if name.lower() in headers:
            headers[name.lower()] = (name, value)
        else:
            extra.append((name, value))
    lines = [f"GET {action.path} HTTP/1.0", *(f"{n}: {v}" for n, v in [*headers.values(), *extra])]
    request = ("\r\n".join([*lines, "Connection: close", "", ""])).encode("latin-1", "replace")
    context = _insecure_tls() if action.scheme == "HTTPS" else None
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_connection(host, port, ssl=context)
            try:
                writer.write(request)
                await writer.drain()
                status_line = await reader.readline()
            finally:
                writer.close()
                with contextlib.suppress(OSError):
                    await writer.wait_closed()
    except TimeoutError:
        return Outcome(False, f"GET {url} -> no answer within {timeout:g}s")
    except ConnectionRefusedError:
        return Outcome(False, f"GET {url} -> connection refused")
    except OSError as exc:
        return Outcome(False, f"GET {url} -> {exc.strerror or exc}")
    parts = status_line.split()
    if len(parts) < 2 or not parts[0].startswith(b"HTTP/") or not parts[1].isdigit():
        return Outcome(False, f"GET {url} -> malformed response {status_line[:80]!r}")
    code = int(parts[1])
    if 200 <= code < 400:
        return Outcome(True)
    return Outcome(False, f"GET {url} -> {code}")


async def tcp_socket(host: str, port: int, *, timeout: float) -> Outcome:
    target = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"
    try:
        async with asyncio.timeout(timeout):
            _, writer = await asyncio.open_connection(host, port)
            writer.close()
            with contextlib.suppress(OSError):
                await writer.wait_closed()
    except TimeoutError:
        return Outcome(False, f"TCP connect {target} -> no answer within {timeout:g}s")
    except ConnectionRefusedError:
        return Outcome(False, f"TCP connect {target} -> connection refused")
    except OSError as exc:
        return Outcome(False, f"TCP connect {target} -> {exc.strerror or exc}")
    return Outcome(True)


async def exec_command(action: Exec, *, env: Mapping[str, str], timeout: float) -> Outcome:
    shown = shlex.join(action.command)
    if len(shown) > _SHOWN_COMMAND:
        shown = shown[: _SHOWN_COMMAND - 3] + "..."
    program = action.command[0]
    if os.sep not in program:
        found = shutil.which(program, path=env.get("PATH", os.defpath))
        if found is None:
            return Outcome(False, f"exec {shown} -> executable {program!r} not found in PATH")
        program = found
    # Output goes to a temporary file rather than a pipe: a pipe still open when the probe is
    # cut short (a timeout, its pod stopping) would leave an unclosed transport behind.
    with tempfile.TemporaryFile() as output:
        code = await _run_in_session(program, action.command[1:], env=env, output=output.fileno(), timeout=timeout)
        if isinstance(code, str):
            return Outcome(False, f"exec {shown} -> {code}")
        if code == 0:
            return Outcome(True)
        output.seek(0)
        text = " ".join(output.read(_OUTPUT_LIMIT).decode("utf-8", "replace").split())
    status = f"exit code {code}" if code >= 0 else f"killed by signal {-code}"
    if len(text) > _MESSAGE_OUTPUT:
        text = text[: _MESSAGE_OUTPUT - 3] + "..."
    return Outcome(False, f"exec {shown} -> {status}: {text}" if text else f"exec {shown} -> {status}")


async def _run_in_session(
    program: str, args: Sequence[str], *, env: Mapping[str, str], output: int, timeout: float
) -> int | str:
    """Run `program` in a session of its own, stdout and stderr to `output`; its return code, or
    why it did not finish ("timed out after 1s", "cannot run: ..."). Its session is killed when
    it ends, so nothing it started in the background lives on, nor does anything when cancelled."""
    spawning = asyncio.ensure_future(
        asyncio.create_subprocess_exec(
            program,
            *args,
            stdin=asyncio.subprocess.DEVNULL,
            stdout=output,
            stderr=asyncio.subprocess.STDOUT,
            env=dict(env),
            start_new_session=True,
        )
    )
    try:
        proc = await asyncio.shield(spawning)
    except asyncio.CancelledError:
        # Cancelled while it starts: asyncio would kill the command alone, not what it may have
        # started already, so let the start finish and kill the session.
        with contextlib.suppress(Exception):
            started = await spawning
            processgroups.signal_group(started.pid, signal.SIGKILL)
            await started.wait()
        raise
    except OSError as exc:
        return f"cannot run: {exc.strerror or exc}"
    try:
        async with asyncio.timeout(timeout):
            return await proc.wait()
    except TimeoutError:
        return f"timed out after {timeout:g}s"
    finally:
        processgroups.signal_group(proc.pid, signal.SIGKILL)
        if proc.returncode is None:
            await proc.wait()


def _insecure_tls() -> ssl.SSLContext:
    # The kubelet does not verify a probed server's certificate either: probes check that the
    # process answers, not who it is.
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context
