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
* Local copies: `routing()` and `services()` answer from what was sent (what the child has
  or is about to have, given the order), so they stay synchronous as on `ProxyServer`.
* Lifetime: the child is spawned on first use, so a follower that never leads starts none. It
  exits when the channel reaches EOF (this process exited or was killed), and `close()` asks
  it to close, then reaps it (killing it if it does not exit in time).
* Metrics: the admin listener stays here, in the controller process. Its `/metrics` is the
  controller's registry rendered here followed by the proxy's series rendered by the child,
  fetched per scrape; `/stats` is the child's, fetched per request. Why here and not in the
  child: the controller's part is the expensive one (up to ~90 ms at 10,000 rollouts) and
  lives here, the admin port is part of the host's start-up (its retry on a port the previous
  leader still holds), and `/healthz` should answer for the controller; a scrape costs the child
  only its own series. The two texts have disjoint metric families, so their concatenation is
  a valid exposition.

A child that dies unexpectedly is not restarted: calls then raise `ProxyProcessError` (an
OSError, which the runtime logs and retries as any listen failure) and the error is logged.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import socket
import sys
from typing import Any, cast

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from rollouts.platform.embedded.proxy import PortInUseError
from rollouts.platform.embedded.proxy_channel import frame, read_message
from rollouts.platform.embedded.proxy_metrics import METRICS_CONTENT_TYPE, AdminEndpoint, ProxyMetrics
from rollouts.platform.embedded.routing import RoutingTable

__all__ = ["ProxyProcess", "ProxyProcessError"]

log = logging.getLogger(__name__)

WORKER_MODULE = "rollouts.platform.embedded.proxy_worker"


class ProxyProcessError(ConnectionError):
    """The proxy process is not there to answer (it failed to start, or exited)."""


class ProxyProcess:
    """A `ProxyServer` in a child process (see the module docstring). `registry`: the
    controller's metrics, served by the admin listener before the proxy's."""

    def __init__(
        self,
        registry: CollectorRegistry | None = None,
        *,
        start_timeout: float = 15.0,
        call_timeout: float = 30.0,
        **options: Any,
    ) -> None:
        """`options`: `ProxyServer` keyword arguments (timeouts, limits), sent to the child."""
        self.registry = registry
        self.options = dict(options)
        self.start_timeout = start_timeout
        self.call_timeout = call_timeout
        self.shutdown_grace = float(options.get("shutdown_grace", 5.0))
        self.pid: int | None = None
        self.loop_name = ""
        self._proc: asyncio.subprocess.Process | None = None
        self._writer: asyncio.StreamWriter | None = None
        self._reader_task: asyncio.Task[None] | None = None
        self._starting: asyncio.Lock | None = None
        self._backlog: list[bytes] = []  # set_routing before the child is up
        self._pending: dict[int, asyncio.Future[Any]] = {}
        self._next_id = 1
        self._failed: str | None = None  # why the child is gone, once it is
        self._services: dict[str, int] = {}
        self._tables: dict[str, RoutingTable] = {}
        self._admin: _Admin | None = None
        self._closed = False

    # -- the ProxyServer API ---------------------------------------------------------------------

    async def add_service(self, name: str, port: int, host: str = "127.0.0.1") -> int:
        """Listen for `name` on `host:port` in the child; the bound port (see `ProxyServer`)."""
        if self._closed:
            raise RuntimeError("the proxy is closed")
        bound = int(await self._call("add_service", name, port, host))
        self._services[name] = bound
        self._tables.setdefault(name, RoutingTable())
        return bound

    async def remove_service(self, name: str) -> None:
        self._services.pop(name, None)
        self._tables.pop(name, None)
        if self._writer is not None and self._failed is None and not self._closed:
            await self._call("remove_service", name)

    def set_routing(self, name: str, table: RoutingTable) -> None:
        """Send the routing table of `name`; it takes effect in the child after every earlier
        call, and before every later one."""
        if not isinstance(table, RoutingTable):
            raise TypeError(f"set_routing needs a RoutingTable, got {type(table).__name__}")
        if self._tables.get(name) == table:
            return  # unchanged (the child would ignore it too): no message
        self._tables[name] = table
        if self._closed or self._failed is not None:
            return
        message = frame((0, "set_routing", (name, table)))
        if self._writer is None:
            self._backlog.append(message)  # written first thing when the child is up
        else:
            self._writer.write(message)

    def routing(self, name: str) -> RoutingTable:
        """The routing table of `name` as last sent (empty for a service without one yet)."""
        table = self._tables.get(name)
        if table is None:
            raise KeyError(f'no service "{name}" in the proxy')
        return table

    def services(self) -> dict[str, int]:
        """Listening services: name -> port."""
        return dict(self._services)

    async def stats(self, service: str | None = None) -> dict[str, Any]:
        """The child's `ProxyServer.stats` (a coroutine here: it is asked for)."""
        if self._writer is None:
            if service is not None:
                raise KeyError(f'no service "{service}" in the proxy')
            return {"services": {}}
        result: dict[str, Any] = await self._call("stats", service)
        return result

    async def metrics_text(self) -> bytes:
        """The proxy's series in Prometheus text format, rendered by the child."""
        if self._writer is None or self._failed is not None:
            return b""
        text: bytes = await self._call("metrics")
        return text

    async def start_admin(self, port: int = 0, host: str = "127.0.0.1") -> int:
        """Serve `/metrics` (the controller's and the proxy's), `/stats`, `/healthz` from this
        process; the port."""
        if self._admin is not None:
            return self._admin.port
        admin = _Admin(self)
        await admin.start(host, port)  # (PortInUseError wording: see _Admin.start)
        self._admin = admin
        return admin.port

    async def close(self) -> None:
        """Stop the admin listener, ask the child to close its proxy (requests in flight get up
        to `shutdown_grace`), then reap it; kill it if it does not exit in time."""
        if self._closed:
            return
        self._closed = True
        if self._admin is not None:
            await self._admin.aclose()
            self._admin = None
        if self._starting is not None:
            async with self._starting:  # a start in progress finishes first
                pass
        proc, writer = self._proc, self._writer
        if proc is None:
            return
        if writer is not None and self._failed is None:
            with contextlib.suppress(ProxyProcessError, TimeoutError):
                await asyncio.wait_for(self._request("close"), self.shutdown_grace + 5.0)
        await self._stop_child(proc, writer)

    # -- the child -----------------------------------------------------------------------------

    async def start(self) -> None:
        """Spawn the child (once) and wait until it is ready."""
        if self._starting is None:
            self._starting = asyncio.Lock()
        async with self._starting:
            if self._writer is not None or self._closed:
                return
            if self._failed is not None:
                raise ProxyProcessError(self._failed)
            try:
                await asyncio.wait_for(self._spawn(), self.start_timeout)
            except Exception as exc:
                self._failed = f"the proxy process did not start: {exc or type(exc).__name__}"
                if self._proc is not None:
                    await self._stop_child(self._proc, self._writer)
                raise ProxyProcessError(self._failed) from exc

    async def _spawn(self) -> None:
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        try:
            level = logging.getLevelName(logging.getLogger().getEffectiveLevel())
            self._proc = await asyncio.create_subprocess_exec(
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
        try:
            reader, writer = await asyncio.open_unix_connection(sock=ours)
        except BaseException:
            ours.close()
            raise
        try:
            writer.write(frame(self.options))
            hello = await read_message(reader)
            if not (isinstance(hello, tuple) and hello[:1] == ("ready",)):
                raise ProxyProcessError(f"unexpected first message from the proxy process: {hello!r}")
        except BaseException:
            writer.close()  # (the child then exits at EOF; `start` reaps it)
            raise
        _, self.pid, self.loop_name = hello
        backlog, self._backlog = self._backlog, []
        for message in backlog:
            writer.write(message)
        self._writer = writer
        self._reader_task = asyncio.create_task(self._read_replies(reader), name="proxy-process-replies")

    async def _read_replies(self, reader: asyncio.StreamReader) -> None:
        try:
            while True:
                request_id, ok, value = await read_message(reader)
                future = self._pending.pop(request_id, None)
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
        proc = self._proc
        code = proc.returncode if proc is not None else None
        self._failed = f"the proxy process (pid {self.pid}) exited" + (f" with code {code}" if code is not None else "")
        if not self._closed:
            log.error("%s: Services are not served until the controller restarts", self._failed)
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ProxyProcessError(self._failed))
        self._pending.clear()

    async def _call(self, op: str, *args: Any) -> Any:
        if self._writer is None:
            await self.start()
        if self._closed:
            raise RuntimeError("the proxy is closed")
        return await asyncio.wait_for(self._request(op, *args), self.call_timeout)

    async def _request(self, op: str, *args: Any) -> Any:
        writer = self._writer
        if self._failed is not None or writer is None:
            raise ProxyProcessError(self._failed or "the proxy process is not running")
        request_id = self._next_id
        self._next_id += 1
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            writer.write(frame((request_id, op, args)))
            await writer.drain()
            return await future
        finally:
            self._pending.pop(request_id, None)

    async def _stop_child(self, proc: asyncio.subprocess.Process, writer: asyncio.StreamWriter | None) -> None:
        """Close our end (the child exits at EOF if it has not yet), wait for it, kill if late."""
        if writer is not None:
            writer.close()
            with contextlib.suppress(ConnectionError, OSError):
                await writer.wait_closed()
        try:
            await asyncio.wait_for(proc.wait(), self.shutdown_grace + 5.0)
        except TimeoutError:
            log.error("proxy process %s did not exit: killing it", proc.pid)
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            await proc.wait()
        if self._reader_task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader_task
            self._reader_task = None


class _Admin(AdminEndpoint):
    """The admin listener of a `ProxyProcess`: `AdminEndpoint`'s routes and answers, but the
    proxy's part of each is fetched from the child (a coroutine)."""

    def __init__(self, proxy: ProxyProcess) -> None:
        # (no metrics or stats of its own: `_answer`, overridden, never reads them)
        super().__init__(cast(ProxyMetrics, None), _no_stats)
        self._proxy = proxy

    async def start(self, host: str, port: int) -> None:
        try:
            await super().start(host, port)
        except OSError as exc:
            if exc.errno == errno.EADDRINUSE:
                raise PortInUseError(
                    errno.EADDRINUSE, f"cannot listen for the proxy admin: port {port} on {host} is in use"
                ) from exc
            raise

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
                return 200, METRICS_CONTENT_TYPE, own + child
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


def _no_stats(service: str | None) -> dict[str, Any]:
    raise AssertionError("the proxy process's admin fetches its stats itself")


def _render(registry: CollectorRegistry) -> bytes:
    """The registry's exposition, through its own `render` when it has one (the controller's
    pre-renders its per-rollout series), as `ProxyMetrics.render` does."""
    own = getattr(registry, "render", None)
    return bytes(own()) if callable(own) else generate_latest(registry)
