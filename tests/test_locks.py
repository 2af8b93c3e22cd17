"""Cell locks: an owner record beside the output, taken over only when its owner is gone."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robench.locks import CellBusy, cell_lock, current_owner, describe_lock, lock_path

HOLD = """
import sys, time
from pathlib import Path
from robench.locks import cell_lock
with cell_lock(sys.argv[1]):
    Path(sys.argv[2]).touch()
    time.sleep(float(sys.argv[3]))
"""


def _hold_elsewhere(out: Path, seconds: float, tmp_path: Path) -> subprocess.Popen:
    """Another process holding ``out``'s lock for ``seconds`` (returns once it holds it)."""
    flag = tmp_path / "held"
    proc = subprocess.Popen([sys.executable, "-c", HOLD, str(out), str(flag), str(seconds)])
    while not flag.exists():
        assert proc.poll() is None, "the holder died before taking the lock"
        time.sleep(0.05)
    return proc


def _dead_pid() -> int:
    proc = subprocess.Popen([sys.executable, "-c", "pass"])
    proc.wait()
    return proc.pid


def _record(out: Path, **fields: object) -> None:
    me = current_owner()
    record = {"pid": me.pid, "host": me.host, "boot": me.boot, "start": me.start, "since": time.time(), "token": "x"}
    lock_path(out).write_text(json.dumps(record | fields) + "\n")


def test_lock_records_its_owner_and_leaves_nothing(tmp_path):
    out = tmp_path / "r.json"
    with cell_lock(out):
        held = describe_lock(out)
        assert held is not None and held["pid"] == os.getpid() and held["host"] == socket.gethostname()
        with pytest.raises(CellBusy, match=f"pid {os.getpid()}"):  # this very process: busy, never a deadlock
            with cell_lock(out):
                pass
    assert not lock_path(out).exists() and describe_lock(out) is None


def test_live_holder_elsewhere_is_busy_then_waited_for(tmp_path):
    out = tmp_path / "r.json"
    holder = _hold_elsewhere(out, 1.5, tmp_path)
    with pytest.raises(CellBusy, match=f"pid {holder.pid} on {socket.gethostname()}"):
        with cell_lock(out, blocking=False):
            pass
    start = time.monotonic()
    with cell_lock(out):  # blocking: waits for the holder to finish
        assert describe_lock(out)["pid"] == os.getpid()
    assert time.monotonic() - start > 0.5 and holder.wait() == 0


def test_stale_records_are_taken_over(tmp_path):
    out = tmp_path / "r.json"
    _record(out, pid=_dead_pid(), start=None)  # a killed process on this host
    with pytest.warns(UserWarning, match="took over the stale lock"), cell_lock(out, blocking=False):
        assert describe_lock(out)["pid"] == os.getpid()
    parent = os.getppid()  # alive, but not the process that wrote the record: its pid was reused
    _record(out, pid=parent, start=-1)
    with pytest.warns(UserWarning, match="stale"), cell_lock(out, blocking=False):
        pass
    _record(out, boot="another-boot")  # written before a reboot
    with pytest.warns(UserWarning, match="stale"), cell_lock(out, blocking=False):
        pass


def test_another_hosts_record_is_stale_only_when_old(tmp_path, monkeypatch):
    out = tmp_path / "r.json"
    _record(out, host="elsewhere", pid=1)
    with pytest.raises(CellBusy, match="pid 1 on elsewhere"):  # its pid cannot be probed from here
        with cell_lock(out, blocking=False, max_age=60):
            pass
    old = time.time() - 120
    os.utime(lock_path(out), (old, old))  # no heartbeat for two minutes
    monkeypatch.setenv("ROBENCH_LOCK_MAX_AGE", "60")
    with pytest.warns(UserWarning, match="stale"), cell_lock(out, blocking=False):
        pass


def test_release_keeps_a_successors_record(tmp_path):
    out = tmp_path / "r.json"
    with cell_lock(out):
        _record(out, pid=12345, token="successor")  # someone judged us stale and took over
    assert describe_lock(out)["token"] == "successor"


def test_a_symlinked_lock_record_is_refused_and_its_target_kept(tmp_path):
    from robench.errors import WriteError

    out = tmp_path / "r.json"
    victim = tmp_path / "victim.txt"
    victim.write_text("someone's file")
    lock_path(out).symlink_to(victim)
    with pytest.raises(WriteError, match="symbolic link"):
        with cell_lock(out, blocking=False):
            pass
    assert victim.read_text() == "someone's file" and lock_path(out).is_symlink()


def test_a_fifo_lock_record_is_refused_without_blocking(tmp_path):
    import threading

    from robench.errors import WriteError

    out = tmp_path / "r.json"
    os.mkfifo(lock_path(out))
    found = []

    def take():
        try:
            with cell_lock(out, blocking=False):
                found.append("held")
        except WriteError as err:
            found.append(str(err))

    t = threading.Thread(target=take, daemon=True)
    t.start()
    t.join(10)
    assert found and "FIFO" in found[0]


def test_waiting_for_a_live_holder_says_whose_lock_once(tmp_path):
    import warnings

    out = tmp_path / "r.json"
    holder = _hold_elsewhere(out, 1.5, tmp_path)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        with cell_lock(out):
            pass
    waits = [str(w.message) for w in seen if "waiting for" in str(w.message)]
    assert len(waits) == 1, waits  # once, though it polled about three times
    assert waits[0].startswith(f"waiting for {out}: pid {holder.pid} on {socket.gethostname()} since "), waits
    assert holder.wait() == 0
