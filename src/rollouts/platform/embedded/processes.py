"""Container processes on this machine, recognised across supervisors.

A container process outlives the supervisor that started it (it runs in a session of its
own), so a later supervisor must tell whether a recorded PID is still that process: a PID is
reused once its process is gone. A process is identified by its PID *and* its start time
(`/proc/<pid>/stat` field 22, clock ticks since boot). Linux-only, read from `/proc`.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Collection

_ADOPTED_POLL_SECONDS = 0.1


def _proc_stat(pid: int) -> list[bytes] | None:
    """The fields of `/proc/<pid>/stat` from field 3 (state) on; None when there is no such process."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as stat:
            raw = stat.read()
    except OSError:
        return None
    return raw[raw.rfind(b")") + 2 :].split()


def process_start_time(pid: int) -> int | None:
    """When process `pid` started (`/proc/<pid>/stat` field 22, clock ticks since boot); None if
    there is no such process."""
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20:
        return None
    try:
        return int(fields[19])
    except ValueError:
        return None


def process_is(pid: int, start_time: int) -> bool:
    """Whether `pid` is the live (non-zombie) process that started at `start_time` and still leads
    its own process group, i.e. a container process we started: a reused PID is not."""
    fields = _proc_stat(pid)
    if fields is None or len(fields) < 20 or fields[0] in (b"Z", b"X"):
        return False
    try:
        return int(fields[19]) == start_time and int(fields[2]) == pid
    except ValueError:
        return False


def find_session_leaders(env_name: str, values: Collection[str]) -> dict[int, str]:
    """Live session leaders (as container processes are) whose environment sets `env_name` to
    one of `values`: pid -> value. Used to find container processes that were started but
    never recorded (a controller killed in between)."""
    wanted = {value.encode() for value in values}
    prefix = env_name.encode() + b"="
    found: dict[int, str] = {}
    if not wanted:
        return found
    try:
        entries = os.listdir("/proc")
    except OSError:
        return found
    for entry in entries:
        if not entry.isdigit():
            continue
        pid = int(entry)
        fields = _proc_stat(pid)
        if fields is None or len(fields) < 4 or fields[0] in (b"Z", b"X") or int(fields[3]) != pid:
            continue
        try:
            with open(f"/proc/{pid}/environ", "rb") as environ:
                variables = environ.read().split(b"\0")
        except OSError:
            continue
        for variable in variables:
            if variable.startswith(prefix) and variable[len(prefix) :] in wanted:
                found[pid] = variable[len(prefix) :].decode()
                break
    return found


class AdoptedProcess:
    """A container process started by an earlier supervisor. It is not our child, so there is no
    waitpid: its end is seen by polling `/proc`, and its exit code is unknown (`wait` returns 0)."""

    def __init__(self, pid: int, start_time: int) -> None:
        self.pid = pid
        self.start_time = start_time
        self._returncode: int | None = None

    @property
    def returncode(self) -> int | None:
        if self._returncode is None and not process_is(self.pid, self.start_time):
            self._returncode = 0
        return self._returncode

    async def wait(self) -> int:
        while self.returncode is None:
            await asyncio.sleep(_ADOPTED_POLL_SECONDS)
        return 0
