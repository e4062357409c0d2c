"""Free loopback ports for embedded pods (and anything else that needs one).

`free_port` picks a port below the kernel's ephemeral range (which starts at 32768 on
Linux) and checks it binds: a pod keeps its port across restarts, and a port from the
ephemeral range may meanwhile be taken as the source port of some outgoing connection,
which would leave the pod crash-looping on "address in use". It falls back to asking the
kernel (bind to port 0) if that range is exhausted. It remembers
every port it hands out in a process-wide set so that two callers asking in quick succession
never get the same port, even before the first one has bound it. `release_port` forgets a
port once its owner is done with it (the supervisor does this when a pod stops).
"""

from __future__ import annotations

import random
import socket
import threading

_MAX_ATTEMPTS = 200

# Below Linux's default ip_local_port_range (32768-60999) and above well-known services.
_RANGE = (20000, 32767)

_lock = threading.Lock()
_handed_out: set[int] = set()


def free_port(host: str = "127.0.0.1") -> int:
    """A port on `host` that is free now and not handed out before (until released)."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    for _ in range(_MAX_ATTEMPTS):
        port = random.randint(*_RANGE)
        with _lock:
            if port in _handed_out:
                continue
        try:
            with socket.socket(family, socket.SOCK_STREAM) as sock:
                sock.bind((host, port))
        except OSError:
            continue
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    for _ in range(_MAX_ATTEMPTS):
        with socket.socket(family, socket.SOCK_STREAM) as sock:
            sock.bind((host, 0))
            port = int(sock.getsockname()[1])
        with _lock:
            if port not in _handed_out:
                _handed_out.add(port)
                return port
    raise RuntimeError(f"no free port on {host} after {_MAX_ATTEMPTS} attempts")


def release_port(port: int) -> None:
    """Allow `port` to be handed out again."""
    with _lock:
        _handed_out.discard(port)


def handed_out() -> frozenset[int]:
    """The ports currently handed out (for diagnostics and tests)."""
    with _lock:
        return frozenset(_handed_out)
