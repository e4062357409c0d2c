"""The proxy process: a `ProxyServer` on its own event loop, driven over the control channel.

Started by `ProxyProcess` as `python -m rollouts.platform.embedded.proxy_worker --fd N`, where
N is its end of the socketpair (`proxy_channel` describes the messages). It never outlives the
controller: when the channel reaches EOF (the parent closed it, exited or was killed, even with
`kill -9`) it closes the proxy and exits. SIGINT is ignored: Ctrl-C on a terminal reaches the
whole process group, and the controller's orderly shutdown (a "close" request) must be what
stops the data plane, after the controller stopped routing to it.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import signal
import socket
import sys
from collections.abc import Coroutine
from typing import Any

from rollouts.platform.embedded.proxy import ProxyServer
from rollouts.platform.embedded.proxy_channel import frame, read_message, reply_error
from rollouts.platform.embedded.proxy_metrics import ProxyMetrics

log = logging.getLogger(__name__)


async def _handle(proxy: ProxyServer, op: str, args: tuple[Any, ...]) -> Any:
    if op == "add_service":
        return await proxy.add_service(*args)
    if op == "remove_service":
        return await proxy.remove_service(*args)
    if op == "set_routing":
        return proxy.set_routing(*args)
    if op == "stats":
        return proxy.stats(*args)
    if op == "metrics":
        return proxy.metrics.render()
    if op == "services":
        return proxy.services()
    raise ValueError(f"unknown proxy request {op!r}")


async def serve(sock: socket.socket) -> None:
    """Answer the parent's requests on `sock` until a "close" request or EOF."""
    reader, writer = await asyncio.open_unix_connection(sock=sock)
    proxy: ProxyServer | None = None
    try:
        options: dict[str, Any] = await read_message(reader)
        proxy = ProxyServer(ProxyMetrics(), **options)
        loop_name = type(asyncio.get_running_loop()).__module__.split(".")[0]
        writer.write(frame(("ready", os.getpid(), loop_name)))
        while True:
            request_id, op, args = await read_message(reader)
            if op == "close":
                await proxy.close()
                writer.write(frame((request_id, True, None)))
                await writer.drain()
                return
            try:
                value = await _handle(proxy, op, args)
            except Exception as exc:
                if request_id:
                    writer.write(frame((request_id, False, reply_error(exc))))
                else:  # no one waits for the answer (set_routing): say it here
                    log.exception("proxy process: %s failed", op)
            else:
                if request_id:
                    writer.write(frame((request_id, True, value)))
            await writer.drain()
    except (asyncio.IncompleteReadError, ConnectionError):
        pass  # the controller is gone: stop serving its Services
    finally:
        if proxy is not None:
            await proxy.close()
        writer.close()
        with contextlib.suppress(ConnectionError, OSError):
            await writer.wait_closed()


def _run(coro: Coroutine[Any, Any, None]) -> None:
    try:
        import uvloop
    except ImportError:
        asyncio.run(coro)
    else:
        uvloop.run(coro)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--fd", type=int, required=True, help="this process's end of the control socketpair")
    parser.add_argument("--log-level", default="WARNING", help="logging level (the controller's)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    logging.basicConfig(
        level=args.log_level, format="%(asctime)s %(levelname)s %(name)s[proxy %(process)d]: %(message)s"
    )
    sock = socket.socket(fileno=args.fd)
    _run(serve(sock))
    return 0


if __name__ == "__main__":
    sys.exit(main())
