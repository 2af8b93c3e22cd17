"""Per-output locks, so two processes never compute the same result or checkpoint at once.

Placeholder seam (issue 13 fills in stale-lock detection and the suite's non-blocking use):
``cell_lock(path)`` holds ``<path>.lock`` for the duration of the block.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from filelock import FileLock, Timeout

from .errors import RobenchError


class CellBusy(RobenchError):
    """Another live process holds the lock of this output."""


def lock_path(path: str | Path) -> Path:
    path = Path(path)
    return path.with_name(path.name + ".lock")


@contextmanager
def cell_lock(path: str | Path, *, blocking: bool = True) -> Iterator[None]:
    """Hold the lock beside ``path``; CellBusy at once when ``blocking`` is False and it is held."""
    lock = FileLock(str(lock_path(path)), timeout=-1 if blocking else 0)
    try:
        lock.acquire()
    except Timeout:
        raise CellBusy(f"{path} is being computed by another process") from None
    try:
        yield
    finally:
        lock.release()
