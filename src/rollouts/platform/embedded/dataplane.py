"""What the runtime and the host need from the data plane, whichever runs it.

Two classes satisfy `DataPlane`: `ProxyServer` (the proxy on the caller's own event loop, the
default) and `ProxyProcess` (a facade over a `ProxyServer` in a child process, so that a busy
controller loop does not stall proxied requests; `proxy_process`).
"""

from __future__ import annotations

from typing import Protocol

from rollouts.platform.embedded.routing import RoutingTable

__all__ = ["DataPlane", "PortInUseError"]


class PortInUseError(OSError):
    """The port asked for a service (or the admin listener) is taken by another socket."""


class DataPlane(Protocol):
    async def add_service(self, name: str, port: int, host: str = "127.0.0.1") -> int:
        """Listen for `name` on `host:port` (0 = a free port); the bound port. Raises
        `PortInUseError` when the port is taken."""
        ...

    async def remove_service(self, name: str) -> None: ...

    def set_routing(self, name: str, table: RoutingTable) -> None:
        """Swap in the routing table of `name`; swaps take effect in the order they are made."""
        ...

    def routing(self, name: str) -> RoutingTable: ...

    def services(self) -> dict[str, int]: ...

    async def start_admin(self, port: int = 0, host: str = "127.0.0.1") -> int: ...

    async def close(self) -> None: ...
