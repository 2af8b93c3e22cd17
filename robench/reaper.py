"""Processes that die with the one they work for: suite workers and a local Ray cluster.

A worker that outlives a SIGKILLed suite keeps its memory (gigabytes with a model and a dataset)
and waits on a queue nobody feeds, for good. Two guards, since neither covers every case:

- Linux's parent-death signal (``prctl(PR_SET_PDEATHSIG, SIGKILL)``) kills the process the moment
  its parent exits; a forkserver's child has the forkserver as its parent, which exits when the
  suite does.
- A watchdog thread polls the pid it serves (and, on Linux, that pid's start time, since pids are
  reused) every ``POLL_S`` seconds and kills its own process when that one is gone.

``watch_cluster`` does the same from outside for a local Ray cluster, whose processes are not the
driver's to take down with it.
"""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

POLL_S = 1.0
PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def start_time(pid: int) -> int | None:
    """Field 22 of /proc/<pid>/stat (after the command name, which may hold spaces); None off Linux
    or when the process is gone."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
        return int(stat[stat.rindex(")") + 2 :].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def alive(pid: int, started: int | None) -> bool:
    """Whether ``pid`` still runs and is the process that started at ``started`` (when known)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # exists, belongs to another user
        return True
    return started is None or start_time(pid) in (None, started)


def die_with(pid: int) -> None:
    """Make this process die (SIGKILL) when ``pid`` does: a parent-death signal on Linux (our parent
    is ``pid``, or a forkserver that exits with it) and a watchdog thread on ``pid`` everywhere."""
    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)
        except (OSError, AttributeError):
            pass  # no prctl here: the watchdog alone
    started = start_time(pid)
    if not alive(pid, started):  # it died before the signal was armed
        os.kill(os.getpid(), signal.SIGKILL)
    threading.Thread(target=_watch, args=(pid, started), name="robench-reaper", daemon=True).start()


def _watch(pid: int, started: int | None) -> None:
    while alive(pid, started):
        time.sleep(POLL_S)
    os.kill(os.getpid(), signal.SIGKILL)


def descendants(pid: int) -> list[int]:
    """Every process below ``pid`` (children, their children, ...), from /proc; empty off Linux."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir() if Path("/proc").is_dir() else []:
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
            ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        for child in children.get(todo.pop(), []):
            found.append(child)
            todo.append(child)
    return found


WATCHER = """
import os, signal, sys, time
from robench.reaper import alive, descendants
pid, started, pids = int(sys.argv[1]), int(sys.argv[2]) if sys.argv[2] != "-" else None, [int(p) for p in sys.argv[3:]]
while alive(pid, started):
    time.sleep(float(os.environ.get("ROBENCH_REAPER_POLL_S", "1")))
for p in pids + [d for p in pids for d in descendants(p)]:
    try:
        os.kill(p, signal.SIGKILL)
    except OSError:
        pass
"""


def watch_cluster(pids: list[int]) -> subprocess.Popen | None:
    """A detached watcher that SIGKILLs ``pids`` (a local Ray cluster's processes) and everything
    below them once this process is gone without shutting them down (kill it to stand it down)."""
    if not pids:
        return None
    me = os.getpid()
    started = start_time(me)
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}  # robench as this process finds it
    return subprocess.Popen([sys.executable, "-c", WATCHER, str(me), "-" if started is None else str(started),
                             *map(str, pids)], start_new_session=True, stdin=subprocess.DEVNULL, env=env)
