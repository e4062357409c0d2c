"""The control channel between the controller process and its proxy process (`proxy_process`).

A Unix socketpair carrying length-prefixed pickled messages (a 4-byte big-endian length, then
the pickle). Pickle is safe here: both ends are this program, and the socketpair is private to
the parent and the child it spawned (no address anyone else could connect to).

Messages, parent to child: the `ProxyServer` options first (a dict), then requests
`(request_id, op, args)`; request id 0 asks for no reply (`set_routing`). Child to parent:
`("ready", pid, loop_name)` once, then replies `(request_id, ok, value)` where `value` is the
result, or the exception raised when `ok` is False. The child handles requests one at a time,
in order, so the parent's calls take effect in the order they were made.
"""

from __future__ import annotations

import asyncio
import pickle
import struct
from typing import Any

__all__ = ["frame", "read_message", "reply_error"]

_HEADER = struct.Struct("!I")


def frame(message: Any) -> bytes:
    """`message` ready to write: its length, then its pickle."""
    data = pickle.dumps(message, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(data)) + data


async def read_message(reader: asyncio.StreamReader) -> Any:
    """The next message; `asyncio.IncompleteReadError` at EOF (the other end is gone)."""
    head = await reader.readexactly(_HEADER.size)
    (size,) = _HEADER.unpack(head)
    return pickle.loads(await reader.readexactly(size))


def reply_error(exc: BaseException) -> BaseException:
    """`exc` if it survives a round trip through pickle, else a RuntimeError naming it (a reply
    must always reach the caller)."""
    try:
        pickle.loads(pickle.dumps(exc, protocol=pickle.HIGHEST_PROTOCOL))
    except Exception:
        return RuntimeError(f"{type(exc).__name__}: {exc}")
    return exc
