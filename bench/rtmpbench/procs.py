"""Process accounting from /proc: CPU seconds and RSS of a process and its descendants.

CPU time is `utime + stime` of /proc/<pid>/stat (clock ticks), which includes every thread
the process ever had (also threads that already exited), so node's libuv pool and nginx's
master + worker are all counted. RSS is the sum of VmRSS over the tree (shared pages are
counted once per process, as `ps` does).
"""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

_TICK = float(os.sysconf("SC_CLK_TCK"))
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _stat_fields(pid: int) -> list[str] | None:
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces: split after the last ')'.
    return raw[raw.rindex(")") + 2 :].split()


def descendants(pid: int) -> list[int]:
    """`pid` and every live process below it."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        fields = _stat_fields(int(entry.name))
        if fields is not None:
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    out = [pid]
    i = 0
    while i < len(out):
        out.extend(children.get(out[i], []))
        i += 1
    return out


def cpu_times(pid: int) -> tuple[float, float]:
    """(user, system) CPU seconds of `pid` and its live descendants."""
    user = system = 0
    for p in descendants(pid):
        fields = _stat_fields(p)
        if fields is not None:
            user += int(fields[11])  # utime (field 14 of stat)
            system += int(fields[12])  # stime (field 15)
    return user / _TICK, system / _TICK


def cpu_seconds(pid: int) -> float:
    """User + system CPU seconds of `pid` and its live descendants."""
    return sum(cpu_times(pid))


def rss_bytes(pid: int) -> int:
    """Resident set size of `pid` and its live descendants."""
    total = 0
    for p in descendants(pid):
        try:
            pages = int(Path(f"/proc/{p}/statm").read_text().split()[1])
        except (OSError, IndexError, ValueError):
            continue
        total += pages * _PAGE
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float, alive: object = None) -> bool:
    """Wait until 127.0.0.1:`port` accepts a connection."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False


def load_average() -> tuple[float, float, float]:
    return os.getloadavg()
