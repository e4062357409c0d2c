"""The data plane in its own process: `ProxyProcess`, a facade with `ProxyServer`'s methods.

Opt-in (`EmbeddedHost(proxy_process=True)`, `rollouts controller --proxy-process`): by default
the proxy shares the controller's event loop, so a reconcile stalls every proxied request for as
long as it runs (bench/RESULTS.md, Addendum 2: loop lag p99 15–58 ms, max 415 ms at 10,000
rollouts). Here a child process (`proxy_worker`) runs a real `ProxyServer` on its own loop
(uvloop when installed), and the controller's loop only sends it commands.

* Channel (`proxy_channel`): a socketpair, length-prefixed pickled messages, asyncio at both
  ends. The child handles requests one at a time, in order. `add_service`, `remove_service`,
  `stats` and `close` wait for the child's reply, which carries the child's exception
  (`PortInUseError` with its message, `KeyError`). `set_routing` is fire-and-forget but ordered
  behind every earlier call; RoutingTables are frozen dataclasses, sent by value.
* Local state: the services (name -> port and host, as last added) and routing tables (as last
  set) are kept here. `routing()` and `services()` answer from them, so they stay synchronous
  as on `ProxyServer`, and a new child is brought up from them (below).
* Lifetime: the child is spawned on first use, so a follower that never leads starts none (if
  that first start fails, the call raises `ProxyProcessError` and the next call tries again). It
  exits when the channel reaches EOF (this process exited or was killed), and `close()` asks
  it to close, then reaps it (killing it if it does not exit in time).
* Supervision: a child that dies on its own (OOM-killed, `kill -9`, a crash) is reaped, its
  exit logged (pid, exit code or signal), and a new one spawned after a backoff (`restart_delay`
  doubling up to `restart_delay_max`; back to `restart_delay` once a child had stayed up for
  `stable_after` seconds; a spawn that fails backs off further). A new child is restored before
  anything else reaches it: in one batch written to its channel, `add_service` of every service
  on its last port and host, then every last routing table; later calls queue behind the batch.
  A port the restored service cannot bind yet (still held by the dying child, say) is retried
  (0.1 s doubling to 1 s) until it binds or the caller adds or removes that service itself.
  `restarts` counts the restarts; the admin's `/metrics` shows it as
  `rollouts_proxy_process_restarts_total`.
* While a child is being restarted (from its EOF until the new one is restored): `set_routing`
  and `remove_service` only change the local state, which the restore applies (the latest table
  wins; a removed service is not restored), so neither is lost nor fails. `add_service` and
  `stats` fail at once with `ProxyProcessError` ("restarting"), an OSError that the runtime logs
  and retries as any listen failure (rather than stall its loop for up to the backoff); calls in
  flight when the child died fail with it too (`remove_service` excepted: the service is gone
  from the state a new child is restored from). `/metrics` shows the controller's series alone.
* Metrics: the admin listener stays here, in the controller process. Its `/metrics` is the
  controller's registry rendered here followed by the proxy's series rendered by the child,
  fetched per scrape; `/stats` is the child's, fetched per request. Why here and not in the
  child: the controller's part is the expensive one (up to ~90 ms at 10,000 rollouts) and
  lives here, the admin port is part of the host's start-up (its retry on a port the previous
  leader still holds), and `/healthz` should answer for the controller; a scrape costs the child
  only its own series. The texts have disjoint metric families, so their concatenation is a
  valid exposition.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import signal
import socket
import sys
import time
from collections.abc import Awaitable, Callable
from typing import Any, cast

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.exposition import generate_latest

from rollouts.platform.embedded.proxy_channel import frame, read_message
from rollouts.platform.embedded.proxy_metrics import METRICS_CONTENT_TYPE, AdminEndpoint, ProxyMetrics
from rollouts.platform.embedded.routing import RoutingTable
from rollouts.tasks import stop_task

__all__ = ["ProxyProcess", "ProxyProcessError"]

log = logging.getLogger(__name__)

WORKER_MODULE = "rollouts.platform.embedded.proxy_worker"

REBIND_DELAY = 0.1  # first retry of a port a restored service could not bind yet, doubling...
REBIND_DELAY_MAX = 1.0  # ...up to this (the runtime retries its own binds every second too)


class ProxyProcessError(ConnectionError):
    """The proxy process is not there to answer (it failed to start, exited, or is restarting)."""


class _Child:
    """One incarnation of the proxy process: its process, our end of its channel, its calls."""

    def __init__(self, proc: asyncio.subprocess.Process, writer: asyncio.StreamWriter, started: float) -> None:
        self.proc = proc
        self.pid = proc.pid
        self.writer = writer
        self.started = started  # (the injected clock's time)
        self.pending: dict[int, asyncio.Future[Any]] = {}
        self.reader: asyncio.Task[None] | None = None  # done at EOF: the child is gone

    def exit_text(self) -> str:
        """How it ended: `exited with code C`, `was killed by SIGKILL` (once reaped), `exited`."""
        code = self.proc.returncode
        if code is None:
            return f"the proxy process (pid {self.pid}) exited"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"the proxy process (pid {self.pid}) was killed by {signal.Signals(-code).name}"
        return f"the proxy process (pid {self.pid}) exited with code {code}"


class ProxyProcess:
    """A `ProxyServer` in a child process, restarted when it dies (see the module docstring).
    `registry`: the controller's metrics, served by the admin listener before the proxy's."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        start_timeout: float = 15.0,
        call_timeout: float = 30.0,
        restart_delay: float = 0.1,
        restart_delay_max: float = 5.0,
        stable_after: float = 10.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        """`options`: `ProxyServer` keyword arguments (timeouts, limits), sent to the child.
        `sleep` and `clock`: the restart backoff's waits and the children's up time (tests)."""
        self.registry = registry
        self.options = dict(options)
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self.restart_delay = restart_delay
        self.restart_delay_max = restart_delay_max
        self.stable_after = stable_after
        self.shutdown_grace = float(options.get("shutdown_grace", 5.0))
        self.pid: int | None = None  # the current (or last) child's
        self.loop_name = ""
        self.restarts = 0
        self._sleep = sleep
        self._clock = clock
        self._child: _Child | None = None  # up and restored; None before start, while restarting
        self._down: str | None = None  # why the child is being restarted, while it is
        self._dying: _Child | None = None  # a dead child the supervisor is reaping
        self._starting: asyncio.Lock | None = None
        self._supervisor: asyncio.Task[None] | None = None  # from the first start to close
        self._rebinding: asyncio.Task[None] | None = None  # a restore's ports not bound yet
        self._restoring: dict[str, tuple[int, str]] = {}  # (those the restore still owns)
        self._next_id = 1
        self._services: dict[str, tuple[int, str]] = {}  # name -> (port, host), as last added
        self._tables: dict[str, RoutingTable] = {}
        self._admin: _Admin | None = None
        self._closed = False
        self.own_metrics = CollectorRegistry(auto_describe=True)
        self._restarts_total = Counter(
            "rollouts_proxy_process_restarts",
            "Times the proxy process died and was started again",
            registry=self.own_metrics,
        )

    # -- the ProxyServer API ---------------------------------------------------------------------

    async def add_service(self, name: str, port: int, host: str = "127.0.0.1") -> int:
        """Listen for `name` on `host:port` in the child; the bound port (see `ProxyServer`).
        Raises `ProxyProcessError` while the child is restarting."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        self._restoring.pop(name, None)  # this call decides its listener now, not the restore
        bound = int(await self._call("add_service", name, port, host))
        self._services[name] = (bound, host)
        self._tables.setdefault(name, RoutingTable())
        return bound

    async def remove_service(self, name: str) -> None:
        """Stop listening for `name` and forget its routing; never fails for want of a child
        (one being restarted is restored without it)."""
        self._services.pop(name, None)
        self._tables.pop(name, None)
        self._restoring.pop(name, None)
        if self._child is None or self._closed:
            return
        with contextlib.suppress(ProxyProcessError):  # died meanwhile: its successor lacks it
            await self._call("remove_service", name)

    def set_routing(self, name: str, table: RoutingTable) -> None:
        """Send the routing table of `name`; it takes effect in the child after every earlier
        call, and before every later one (while restarting: the restore sends the latest)."""
        if not isinstance(table, RoutingTable):
            raise TypeError(f"set_routing needs a RoutingTable, got {type(table).__name__}")
        if self._tables.get(name) == table:
            return  # unchanged (the child would ignore it too): no message
        self._tables[name] = table
        child = self._child
        if child is not None and not self._closed and child.reader is not None and not child.reader.done():
            child.writer.write(frame((0, "set_routing", (name, table))))
        # (no child: the first start, or the restart, sends every table from `_tables`)

    def routing(self, name: str) -> RoutingTable:
        """The routing table of `name` as last sent (empty for a service without one yet)."""
        table = self._tables.get(name)
        if table is None:
            raise KeyError(f'no service "{name}" in the proxy')
        return table

    def services(self) -> dict[str, int]:
        """Listening services (while restarting: those the new child will listen for): name -> port."""
        return {name: port for name, (port, _) in self._services.items()}

    async def stats(self, service: str | None = None) -> dict[str, Any]:
        """The child's `ProxyServer.stats` (a coroutine here: it is asked for)."""
        if self._child is None and self._supervisor is None:  # never started
            if service is not None:
                raise KeyError(f'no service "{service}" in the proxy')
            return {"services": {}}
        result: dict[str, Any] = await self._call("stats", service)
        return result

    async def metrics_text(self) -> bytes:
        """The proxy's series in Prometheus text format, rendered by the child (none while
        there is no child)."""
        if self._child is None:
            return b""
        text: bytes = await self._call("metrics")
        return text

    async def start_admin(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve `/metrics` (the controller's and the proxy's), `/stats`, `/healthz` from this
        process; the port."""
        if self._admin is not None:
            return self._admin.port
        admin = _Admin(self)
        await admin.start(host, port)  # (PortInUseError when taken: AdminEndpoint.start)
        self._admin = admin
        return admin.port

    async def close(self) -> None:
        """Stop the admin listener and the supervision (a restart in progress included), ask the
        child to close its proxy (requests in flight get up to `shutdown_grace`), then reap it;
        kill it if it does not exit in time."""
        if self._closed:
            return
        self._closed = True
        if self._admin is not None:
            await self._admin.aclose()
            self._admin = None
        if self._starting is not None:
            async with self._starting:  # a first start in progress finishes first
                pass
        for task in (self._supervisor, self._rebinding):
            if task is not None:  # (a spawn in progress kills its half-started child)
                await stop_task(task)
        self._supervisor = self._rebinding = None
        dying, self._dying = self._dying, None
        if dying is not None:
            await self._reap(dying)
        child, self._child = self._child, None
        if child is None:
            return
        if child.reader is not None and not child.reader.done():
            with contextlib.suppress(ProxyProcessError, TimeoutError):
                await asyncio.wait_for(self._request(child, "close"), self.shutdown_grace + 5.0)
        await self._stop_child(child)

    # -- the child -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the child (once: later ones are the supervisor's) and wait until it is ready."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._closed or self._supervisor is not None:
                return
            try:
                async with asyncio.timeout(self.start_timeout):
                    child = await self._spawn()
            except Exception as exc:  # (the next call tries again)
                raise ProxyProcessError(f"the proxy process did not start: {exc or type(exc).__name__}") from exc
            self._restore(child)
            self._supervisor = asyncio.create_task(self._supervise(child), name="proxy-process-supervisor")

    async def _supervise(self, child: _Child) -> None:
        """Until `close()`: when the child dies, reap it and start another, restored."""
        try:
            await self._supervise_children(child)
        except Exception:  # (a bug: say so, rather than stop restarting in silence)
            log.exception("proxy process supervision failed: a proxy process that exits is not restarted")
            raise

    async def _supervise_children(self, child: _Child) -> None:
        delay = self.restart_delay
        while True:
            assert child.reader is not None
            await asyncio.shield(child.reader)  # (close() cancels us, not the reader)
            if self._closed:
                return
            if self._child is child:
                self._child = None
            if self._clock() - child.started >= self.stable_after:
                delay = self.restart_delay  # it had been up for a while: not a crash loop
            self._down = child.exit_text()
            self._dying = child  # (reaped by close() if it cancels us meanwhile)
            await self._reap(child)
            self._dying = None
            if self._closed:  # (close() cancels us; this holds even if a cancel was lost)
                return
            self._down = child.exit_text()  # (now with its exit code or signal)
            log.error(
                "%s after %.1f s up; restarting it in %.1f s (its Services are not served meanwhile)",
                self._down,
                self._clock() - child.started,
                delay,
            )
            while True:
                await self._sleep(delay)
                if self._closed:
                    return
                delay = min(delay * 2, self.restart_delay_max)
                try:
                    async with asyncio.timeout(self.start_timeout):
                        child = await self._spawn()
                except Exception as exc:
                    log.error(
                        "the proxy process did not start again: %s; next try in %.1f s",
                        exc or type(exc).__name__,
                        delay,
                    )
                    continue
                break
            if self._closed:  # (too late to serve: close() is stopping us; let it not cut this short)
                await asyncio.shield(self._stop_child(child))
                return
            self.restarts += 1
            self._restarts_total.inc()
            self._restore(child)
            self._down = None
            log.warning(
                "proxy process restarted (pid %s, restart %d): %d services and %d routing tables restored",
                child.pid,
                self.restarts,
                len(self._services),
                len(self._tables),
            )

    def _restore(self, child: _Child) -> None:
        """Bring `child` to the local state and make it the current child, in one step (no
        await): its channel gets every service's `add_service`, then every routing table, before
        any later call can write to it."""
        adds: list[tuple[str, tuple[int, str], asyncio.Future[Any]]] = []
        for name, (port, host) in self._services.items():
            adds.append((name, (port, host), self._send(child, "add_service", (name, port, host))))
        for name, table in self._tables.items():
            child.writer.write(frame((0, "set_routing", (name, table))))
        self._restoring = {name: where for name, where, _ in adds}
        self._child = child
        if self._rebinding is not None:
            self._rebinding.cancel()  # (a previous child's: it would stop on its own)
            self._rebinding = None
        if adds:
            self._rebinding = asyncio.create_task(self._rebind(child, adds), name="proxy-process-rebind")

    async def _rebind(self, child: _Child, adds: list[tuple[str, tuple[int, str], asyncio.Future[Any]]]) -> None:
        """Await the restore's `add_service` replies; retry those that could not bind (a port
        still held, say) while the restore owns them (no `add_service`/`remove_service` since)."""
        with contextlib.suppress(ConnectionError):
            await child.writer.drain()
        delay = REBIND_DELAY
        retried: set[str] = set()
        while adds:
            failed: list[tuple[str, tuple[int, str]]] = []
            for name, where, future in adds:
                try:
                    await future
                except OSError as exc:  # PortInUseError, ProxyProcessError
                    if self._child is not child or self._closed:
                        return  # the child died (its successor restores afresh) or we closed
                    if self._restoring.get(name) == where:
                        if name not in retried:
                            log.warning("service %s: cannot listen again after the restart: %s (retrying)", name, exc)
                        retried.add(name)
                        failed.append((name, where))
                    continue
                except Exception:
                    log.exception("service %s: cannot listen again after the restart", name)
                else:
                    if name in retried:
                        log.warning("service %s: listening again on %s:%s", name, where[1], where[0])
                if self._restoring.get(name) == where:
                    del self._restoring[name]
            if not failed:
                return
            await asyncio.sleep(delay)
            delay = min(delay * 2, REBIND_DELAY_MAX)
            if self._child is not child or self._closed:
                return
            adds = [
                (name, (port, host), self._send(child, "add_service", (name, port, host)))
                for name, (port, host) in failed
                if self._restoring.get(name) == (port, host)
            ]

    async def _spawn(self) -> _Child:
        """A new child, ready (its "ready" message read), its reader started; on any failure
        (cancellation included) the half-started child is killed and reaped."""
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                "-m",
                WORKER_MODULE,
                "--fd",
                str(theirs.fileno()),
                "--log-level",
                str(level),
                pass_fds=(theirs.fileno(),),
                stdin=asyncio.subprocess.DEVNULL,
            )
        except BaseException:
            ours.close()
            raise
        finally:
            theirs.close()  # the child has its copy; ours must not keep the channel open
        self.pid = proc.pid
        writer: asyncio.StreamWriter | None = None
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
            writer.write(frame(self.options))
            hello = await read_message(reader)
            if not (isinstance(hello, tuple) and hello[:1] == ("ready",)):
                raise ProxyProcessError(f"unexpected first message from the proxy process: {hello!r}")
        except BaseException:
            if writer is None:
                ours.close()
            else:
                writer.close()
            with contextlib.suppress(ProcessLookupError):
                proc.kill()  # (it serves nothing yet: no grace)
            with contextlib.suppress(asyncio.CancelledError):
                await asyncio.shield(proc.wait())
            raise
        _, _, self.loop_name = hello
        child = _Child(proc, writer, self._clock())
        child.reader = asyncio.create_task(self._read_replies(child, reader), name="proxy-process-replies")
        return child

    async def _read_replies(self, child: _Child, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, ok, value = await read_message(reader)
                future = child.pending.pop(request_id, None)
                if future is None or future.done():
                    continue
                if ok:
                    future.set_result(value)
                else:
                    future.set_exception(value)
        except (asyncio.IncompleteReadError, ConnectionError):
            pass
        except Exception:
            log.exception("proxy process: bad message on the control channel")
        # EOF: the child is gone (or going). Its calls in flight fail; the supervisor restarts it.
        gone = child.exit_text()
        for future in child.pending.values():
            if not future.done():
                future.set_exception(ProxyProcessError(gone))
        child.pending.clear()

    async def _call(self, op: str, *args: Any) -> Any:
        if self._closed:
            raise RuntimeError("the proxy is closed")
        if self._child is None and self._supervisor is None:
            await self.start()
        child = self._child
        if child is None:
            if self._closed:
                raise RuntimeError("the proxy is closed")
            raise ProxyProcessError(f"{self._down or 'the proxy process exited'}; it is being restarted")
        return await asyncio.wait_for(self._request(child, op, *args), self.call_timeout)

    def _send(self, child: _Child, op: str, args: tuple[Any, ...]) -> asyncio.Future[Any]:
        """Write a request to `child`; the future of its reply."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        if child.reader is not None and child.reader.done():
            future.set_exception(ProxyProcessError(child.exit_text()))
            return future
        request_id = self._next_id
        self._next_id += 1
        child.pending[request_id] = future
        # A restore's replies may be left unawaited (a newer restore, close()): no "exception was
        # never retrieved" for them. Awaiting callers still get the exception.
        future.add_done_callback(_retrieve)
        child.writer.write(frame((request_id, op, args)))
        return future

    async def _request(self, child: _Child, op: str, *args: Any) -> Any:
        future = self._send(child, op, args)
        try:
            await child.writer.drain()
        except ConnectionError as exc:
            future.cancel()
            raise ProxyProcessError(child.exit_text()) from exc
        return await future

    async def _reap(self, child: _Child) -> None:
        """Wait for a child whose channel reached EOF to exit (it does at EOF); kill it if late.
        (`asyncio.timeout`, not `wait_for`: on 3.11 `wait_for` can drop a cancel of ours.)"""
        child.writer.close()
        with contextlib.suppress(ConnectionError, OSError, TimeoutError):
            async with asyncio.timeout(1.0):  # (our end: it closes at once)
                await child.writer.wait_closed()
        try:
            async with asyncio.timeout(self.shutdown_grace + 5.0):
                await child.proc.wait()
        except TimeoutError:
            log.error("proxy process %s did not exit: killing it", child.pid)
            with contextlib.suppress(ProcessLookupError):
                child.proc.kill()
            try:  # SIGKILL cannot be refused; a bound all the same, so close() always returns
                async with asyncio.timeout(5.0):
                    await child.proc.wait()
            except TimeoutError:
                log.error("proxy process %s was killed but not reaped within 5 s", child.pid)

    async def _stop_child(self, child: _Child) -> None:
        """Close our end (the child exits at EOF if it has not yet), wait for it, kill if late."""
        await self._reap(child)
        if child.reader is not None:  # (it ends at EOF, which closing our end brings)
            await asyncio.wait([child.reader], timeout=1.0)


class _Admin(AdminEndpoint):
    """The admin listener of a `ProxyProcess`: `AdminEndpoint`'s routes and answers, but the
    proxy's part of each is fetched from the child (a coroutine)."""

    def __init__(self, proxy: ProxyProcess) -> None:
        # (no metrics or stats of its own: `_answer`, overridden, never reads them)
        super().__init__(cast(ProxyMetrics, None), _no_stats)
        self._proxy = proxy

    async def aclose(self) -> None:
        self.close()
        await self.wait_closed()

    async def _answer(self, method: bytes, path: str) -> tuple[int, str, bytes]:
        text = "text/plain; charset=utf-8"
        if method not in (b"GET", b"HEAD"):
            return 405, text, b"405 method not allowed\n"
        proxy = self._proxy
        try:
            if path == "/metrics":
                child = await proxy.metrics_text()
                own = _render(proxy.registry) if proxy.registry is not None else b""
                return 200, METRICS_CONTENT_TYPE, own + generate_latest(proxy.own_metrics) + child
            if path == "/stats" or path == "/stats/":
                return 200, "application/json", json.dumps(await proxy.stats(None)).encode()
            if path.startswith("/stats/"):
                name = path[len("/stats/") :]
                try:
                    data = await proxy.stats(name)
                except KeyError:
                    return 404, text, f'404 no service "{name}" in the proxy\n'.encode()
                return 200, "application/json", json.dumps(data).encode()
        except (ProxyProcessError, TimeoutError) as exc:
            return 503, text, f"503 {exc or 'the proxy process did not answer'}\n".encode()
        if path in ("/healthz", "/"):
            return 200, text, b"ok\n"
        return 404, text, b"404 not found\n"


def _retrieve(future: asyncio.Future[Any]) -> None:
    if not future.cancelled():
        future.exception()


def _no_stats(service: str | None) -> dict[str, Any]:
    raise AssertionError("the proxy process's admin fetches its stats itself")


def _render(registry: CollectorRegistry) -> bytes:
    """The registry's exposition, through its own `render` when it has one (the controller's
    pre-renders its per-rollout series), as `ProxyMetrics.render` does."""
    own = getattr(registry, "render", None)
    return bytes(own()) if callable(own) else generate_latest(registry)
