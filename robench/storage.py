"""Atomic writes, hashing and the facts every stored file records about its making."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import stat
import tempfile
from pathlib import Path
from typing import Any, BinaryIO

import torch

from .errors import ReadError, WriteError

MAX_READ_BYTES = 1 << 30  # what a reader loads into memory at most: a results folder is shared, its files are not trusted


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over ``path``: readers see the old
    file or the new one, never half of one, even if the process dies mid-write. The temp file is
    made with O_EXCL|O_NOFOLLOW (mkstemp), and a symlink, FIFO or folder at ``path`` is refused:
    whoever can write to a shared folder must not choose which file robench overwrites."""
    path = Path(path)
    refuse_special(path, str(path))
    fd, tmp = _temp_beside(path, ".tmp", str(path))
    try:
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; results are meant to be shared
        with os.fdopen(fd, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except OSError as err:  # a full disk, a folder in the way: one line, and the old file stays
        Path(tmp).unlink(missing_ok=True)
        raise WriteError(f"cannot write {path}: {err.strerror or err}") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """Fail before any compute when ``path`` cannot be written: a folder in its place, a file in
    its folder's place, or a folder that refuses a new file (read-only, full, not ours). Creates
    the missing folders, as the write itself would; a WriteError says which, in one line."""
    path = Path(path)
    refuse_special(path, f"{what} {path}")
    fd, probe = _temp_beside(path, ".probe", f"{what} {path}")
    os.close(fd)
    os.unlink(probe)
    return path


def refuse_special(path: Path, named: str) -> None:
    """A WriteError when ``path`` exists as anything but a regular file (a symlink is refused even
    when it points at one: a rename would replace the link, an open would write through it)."""
    try:
        mode = os.lstat(path).st_mode
    except OSError:
        return  # missing (or unreachable: the write itself says why)
    if not stat.S_ISREG(mode):
        raise WriteError(f"cannot write {named}: it is {_kind(mode)}, not a regular file; remove it first")


def _kind(mode: int) -> str:
    kinds = ((stat.S_ISLNK, "a symbolic link"), (stat.S_ISDIR, "a folder"), (stat.S_ISFIFO, "a FIFO"),
             (stat.S_ISSOCK, "a socket"), (stat.S_ISCHR, "a device"), (stat.S_ISBLK, "a device"))
    return next((what for test, what in kinds if test(mode)), "a special file")


def open_regular(path: str | os.PathLike, limit: int = MAX_READ_BYTES) -> BinaryIO:
    """``path`` opened for reading when it is a regular file (a symlink to one is followed) of at
    most ``limit`` bytes. A FIFO, device, socket or folder is a ReadError without blocking (opened
    O_NONBLOCK, then fstat), as is a larger file; a missing one is FileNotFoundError, as from open()."""
    fd = os.open(path, os.O_RDONLY | os.O_NONBLOCK | getattr(os, "O_CLOEXEC", 0))
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise ReadError(path, f"is {_kind(info.st_mode)}, not a regular file")
        if info.st_size > limit:
            raise ReadError(path, f"is {info.st_size} bytes, more than robench reads ({limit})")
        os.set_blocking(fd, True)
        return os.fdopen(fd, "rb")
    except BaseException:
        os.close(fd)
        raise


def read_bytes(path: str | os.PathLike, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file of at most ``limit`` bytes; see open_regular."""
    with open_regular(path, limit) as f:
        size = os.fstat(f.fileno()).st_size
        data = f.read(size + 1)  # read(n) allocates n bytes: the file's size, never the limit
    if len(data) > size:  # robench replaces files whole; one that grows while read is someone else's
        raise ReadError(path, "grew while it was read")
    return data


def read_json(path: str | os.PathLike, limit: int = MAX_READ_BYTES, **options: Any) -> Any:
    """A JSON file read through read_bytes (``options`` go to json.loads). Nesting deeper than the
    parser's recursion allows is a ReadError, not a RecursionError's hundred-line traceback;
    malformed text raises json.JSONDecodeError or UnicodeDecodeError, as json.loads does."""
    data = read_bytes(path, limit)
    try:
        return json.loads(data, **options)
    except RecursionError:
        raise ReadError(path, "holds JSON nested too deeply to be a robench file") from None


def is_regular(path: str | os.PathLike) -> bool:
    """True for a regular file or a symlink to one: what a reader may open without blocking."""
    try:
        return stat.S_ISREG(os.stat(path).st_mode)
    except OSError:
        return False


def _temp_beside(path: Path, suffix: str, named: str) -> tuple[int, str]:
    """A new temp file in ``path``'s folder (made when missing): what an atomic write starts with,
    and what proves the folder writable. A refusal is a WriteError naming ``named``."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        return tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=suffix)
    except OSError as err:
        raise WriteError(f"cannot write {named}: {err.strerror or err}") from None


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """JSON as the standard has it: a NaN or infinity is a bug to surface, not a bare literal that
    strict parsers reject (allow_nan=False raises ValueError). Written compactly (no indent, no
    spaces): results and sidecars are read by robench, and ``robench report --format json`` is
    there for people; indenting made them 40 % larger."""
    atomic_write_bytes(path, (json.dumps(obj, separators=(",", ":"), allow_nan=False) + "\n").encode())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open_regular(path, limit=1 << 62) as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def library_versions() -> dict[str, str]:
    """Versions that can change a number: python, torch, torchvision, foolbox, numpy, robench."""
    from importlib import metadata

    versions = {"python": platform.python_version(), "platform": platform.platform()}
    for pkg in ("robench", "torch", "torchvision", "foolbox", "numpy", "scipy"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = "not installed"
    return versions


def resolve_device(name: str) -> torch.device:
    """``auto`` picks CUDA, then Apple MPS, then the CPU; anything else must exist here."""
    if name == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if getattr(torch.backends, "mps", None) is not None and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"unknown device {name!r}; use auto, cpu, cuda or cuda:N") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {name} asked for but CUDA is not available here; use --device auto")
    return device
