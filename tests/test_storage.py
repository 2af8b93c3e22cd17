"""Writes that never follow a symlink, reads that never block on a FIFO."""

from __future__ import annotations

import os
import threading

import pytest

from robench.errors import ReadError, WriteError
from robench.storage import atomic_write_bytes, check_writable, file_sha256, read_bytes, read_json


def test_writes_refuse_a_symlink_and_keep_its_target(tmp_path):
    victim = tmp_path / "victim.txt"
    victim.write_text("mine")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    for write in (lambda: atomic_write_bytes(link, b"{}"), lambda: check_writable(link, "result")):
        with pytest.raises(WriteError, match="it is a symbolic link"):
            write()
    assert victim.read_text() == "mine" and link.is_symlink()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.json", "victim.txt"]  # no temp file left


def test_writes_refuse_a_fifo_and_a_folder(tmp_path):
    os.mkfifo(tmp_path / "fifo.json")
    (tmp_path / "dir.json").mkdir()
    with pytest.raises(WriteError, match="it is a FIFO"):
        atomic_write_bytes(tmp_path / "fifo.json", b"{}")
    with pytest.raises(WriteError, match="it is a folder"):
        atomic_write_bytes(tmp_path / "dir.json", b"{}")
    atomic_write_bytes(tmp_path / "ok.json", b"{}")
    assert (tmp_path / "ok.json").read_bytes() == b"{}"


def _within(seconds, fn):
    """fn's exception (or None), failing the test when fn is still running after ``seconds``."""
    found = []

    def run():
        try:
            fn()
            found.append(None)
        except Exception as err:  # noqa: BLE001 - handed back to the test
            found.append(err)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    t.join(seconds)
    assert found, "blocked"
    return found[0]


def test_read_bytes_never_blocks_on_a_fifo_and_caps_the_size(tmp_path):
    fifo = tmp_path / "zz.json"
    os.mkfifo(fifo)
    for read in (lambda: read_bytes(fifo), lambda: file_sha256(fifo)):
        err = _within(5, read)
        assert isinstance(err, ReadError) and "FIFO" in str(err)
    big = tmp_path / "big.json"
    big.write_bytes(b" " * 2000)
    assert isinstance(_within(5, lambda: read_bytes(big, limit=1000)), ReadError)
    assert read_bytes(big, limit=2000) == b" " * 2000


def test_read_json_refuses_deep_nesting_in_one_error(tmp_path):
    deep = tmp_path / "deep.json"
    deep.write_text("[" * 200_000 + "]" * 200_000)
    with pytest.raises(ReadError, match="nested too deeply"):
        read_json(deep)
    (tmp_path / "flat.json").write_text('{"a": [1, {"b": 2}]}')
    assert read_json(tmp_path / "flat.json") == {"a": [1, {"b": 2}]}


def test_a_read_allocates_the_file_not_the_limit(tmp_path):
    import tracemalloc

    small = tmp_path / "small.json"
    small.write_bytes(b"{}")
    tracemalloc.start()
    try:
        assert read_bytes(small, limit=1 << 40) == b"{}"  # a read(limit) would ask for a terabyte
        assert tracemalloc.get_traced_memory()[1] < 1 << 20
    finally:
        tracemalloc.stop()
