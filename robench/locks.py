"""Per-output locks, so two processes never compute the same result or checkpoint at once.

``cell_lock(path)`` holds ``<path>.lock`` while a cell computes and writes ``path``. That file is
an owner record, one JSON line: pid, host, boot id and process start time of the holder, and when
it took the lock. It is created under a short per-folder guard (``.robench.lock``, a filelock), so
check-and-claim is atomic; the record, not a kernel lock, is what is held, because a kernel lock
cannot say who holds it, and flock is not shared between hosts on every network filesystem.

A record left by a process that died is stale and is taken over:

- same host: the pid is gone, or is another process now (its start time or the boot id differ);
- another host: a pid there cannot be probed, so only the age counts. The holder touches its
  record every HEARTBEAT_S seconds; one older than ``max_age`` (``$ROBENCH_LOCK_MAX_AGE``,
  default 600 s) is stale. Give hosts with skewed clocks a larger age.

Release removes the record (only the holder's own), so a folder holds no ``.lock`` files once a
run ends; one left by a killed run is harmless (readers list ``*.json`` and ``*.pt`` only).
"""

from __future__ import annotations

import json
import os
import socket
import threading
import time
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from filelock import FileLock

from .errors import ReadError, RobenchError
from .reaper import alive, start_time
from .storage import atomic_write_bytes, read_json, refuse_special

HEARTBEAT_S = 30.0  # how often a holder touches its record; max_age should be several of these
DEFAULT_MAX_AGE_S = 600.0
POLL_S = 0.5  # how often a blocking cell_lock looks again at a held record
GUARD = ".robench.lock"  # one per folder, held for the milliseconds of a check-and-claim

_held: dict[Path, str] = {}  # record path -> our token, for this process's heartbeat and re-entry check
_held_lock = threading.Lock()
_heartbeat: threading.Thread | None = None


class CellBusy(RobenchError):
    """Another live process holds the lock of this output."""


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@dataclass(frozen=True)
class Owner:
    """Who holds a lock: enough to tell, on the same host, whether that process still lives."""

    pid: int
    host: str
    boot: str | None  # the kernel's boot id: a record from before a reboot is stale
    start: int | None  # the process's start time in clock ticks since boot (Linux): pids get reused
    since: float  # time.time() at acquisition
    token: str  # tells our record from a successor's, so release never removes another's

    def describe(self) -> str:
        return f"pid {self.pid} on {self.host} since {time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(self.since))}"


def current_owner() -> Owner:
    pid = os.getpid()
    return Owner(pid, socket.gethostname(), _boot_id(), start_time(pid), time.time(), os.urandom(8).hex())


def read_owner(record: Path) -> Owner | None:
    """The record's owner; None when it is missing, empty or unreadable (a writer caught mid-write
    is not possible: records are written in one call before anyone can see them, under the guard)."""
    try:
        return Owner(**read_json(record, limit=1 << 16))
    except (OSError, ValueError, TypeError, ReadError):
        return None


def is_stale(owner: Owner, record: Path, max_age: float | None = None) -> bool:
    """True when ``owner`` can no longer be holding ``record`` (see the module docstring)."""
    if owner.host != socket.gethostname():
        max_age = _max_age() if max_age is None else max_age
        try:
            return time.time() - record.stat().st_mtime > max_age
        except FileNotFoundError:
            return True
    if owner.boot is not None and owner.boot != _boot_id():
        return True
    if owner.pid == os.getpid():  # our own pid but not among our held locks: an earlier hold of ours
        return record not in _held
    if not alive(owner.pid, None):
        return True
    return owner.start is not None and start_time(owner.pid) not in (None, owner.start)


@contextmanager
def cell_lock(path: str | Path, *, blocking: bool = True, max_age: float | None = None) -> Iterator[Owner]:
    """Hold the lock of ``path`` for the block. Held by a live process elsewhere: wait for it when
    ``blocking``, else CellBusy at once; a stale lock is taken over (with a warning naming its owner).
    Held by this very process: CellBusy, since waiting on oneself would never end."""
    record = lock_path(path).absolute()
    me = current_owner()
    told: Owner | None = None
    while True:
        holder = _claim(record, me, max_age)
        if holder is None:
            break
        if not blocking or holder.pid == me.pid and holder.host == me.host:
            raise CellBusy(f"{path} is being computed by {holder.describe()}")
        if told is None or holder.token != told.token:  # once per holder, not once per poll
            warnings.warn(f"waiting for {path}: {holder.describe()} is computing it", stacklevel=3)
            told = holder
        time.sleep(POLL_S)
    try:
        yield me
    finally:
        _release(record, me)


def _claim(record: Path, me: Owner, max_age: float | None) -> Owner | None:
    """Write our record unless a live owner holds one: None when ours, else that owner."""
    with _held_lock:
        if record in _held:
            return read_owner(record) or me
    record.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(record.parent / GUARD)):
        refuse_special(record, f"the lock {record}")  # someone put it there, not a crash: never taken over
        holder = read_owner(record)
        if holder is not None and not is_stale(holder, record, max_age):
            return holder
        if holder is not None:
            warnings.warn(f"took over the stale lock {record.name} of {holder.describe()}", stacklevel=4)
        elif record.exists():  # an unreadable record: a crash between create and write cannot make one, a person can
            warnings.warn(f"took over the unreadable lock {record}", stacklevel=4)
        _write(record, me)
    with _held_lock:
        _held[record] = me.token
    _start_heartbeat()
    return None


def _release(record: Path, me: Owner) -> None:
    with _held_lock:
        _held.pop(record, None)
    with FileLock(str(record.parent / GUARD)):
        holder = read_owner(record)
        if holder is not None and holder.token == me.token:  # a successor that judged us stale keeps its own
            record.unlink(missing_ok=True)


def _write(record: Path, owner: Owner) -> None:
    atomic_write_bytes(record, (json.dumps(asdict(owner)) + "\n").encode())


def _start_heartbeat() -> None:
    """One daemon thread per process touches every record it holds, so other hosts see it live."""
    global _heartbeat
    with _held_lock:
        if _heartbeat is not None and _heartbeat.is_alive():
            return
        _heartbeat = threading.Thread(target=_beat, name="robench-lock-heartbeat", daemon=True)
        _heartbeat.start()


def _beat() -> None:
    while True:
        time.sleep(HEARTBEAT_S)
        with _held_lock:
            records = list(_held)
        for record in records:
            try:
                os.utime(record)
            except OSError:
                pass  # released meanwhile, or the folder is gone: nothing to keep alive


def _max_age() -> float:
    value = os.environ.get("ROBENCH_LOCK_MAX_AGE")
    if not value:
        return DEFAULT_MAX_AGE_S
    try:
        return float(value)
    except ValueError:
        raise ValueError(f"ROBENCH_LOCK_MAX_AGE must be a number of seconds, got {value!r}") from None


def _boot_id() -> str | None:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return None


def describe_lock(path: str | Path) -> dict[str, Any] | None:
    """The record of ``path``'s lock as a dict, or None when there is none (for messages and tests)."""
    owner = read_owner(lock_path(path))
    return None if owner is None else asdict(owner)
