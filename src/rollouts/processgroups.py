"""Process groups on this machine: signal one, and tell whether it still has live members.

Both the embedded pod supervisor and the embedded `job` metric provider run commands in a
session of their own and stop them by signalling the whole group, so nothing they spawned
survives. Pure OS plumbing, shared by layers that may not import each other.
"""

from __future__ import annotations

import contextlib
import os
import signal


def signal_group(pgid: int, sig: signal.Signals) -> None:
    """Send `sig` to process group `pgid`; a group already gone (or no longer ours) is fine."""
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


def group_alive(pgid: int) -> bool:
    """Whether process group `pgid` still has a live (non-zombie) member."""
    try:
        os.killpg(pgid, 0)
    except (ProcessLookupError, PermissionError):  # PermissionError: the id is someone else's group now
        return False
    # Orphaned members are reaped by init, which may be slow (or never, in some containers):
    # zombies do not count.
    try:
        entries = os.listdir("/proc")
    except OSError:
        return True
    for entry in entries:
        if not entry.isdigit():
            continue
        try:
            with open(f"/proc/{entry}/stat", "rb") as stat:
                raw = stat.read()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        if len(fields) > 2 and int(fields[2]) == pgid and fields[0] not in (b"Z", b"X"):
            return True
    return False
