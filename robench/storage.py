"""Atomic writes, hashing and the facts every stored file records about its making."""

from __future__ import annotations

import hashlib
import json
import os
import platform
import tempfile
from pathlib import Path
from typing import Any

import torch

from .errors import WriteError


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write to a temp file in the same folder, then rename over ``path``: readers see the old
    file or the new one, never half of one, even if the process dies mid-write."""
    path = Path(path)
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
    if path.is_dir():
        raise WriteError(f"cannot write {what} {path}: it is a folder")
    fd, probe = _temp_beside(path, ".probe", f"{what} {path}")
    os.close(fd)
    os.unlink(probe)
    return path


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
    strict parsers reject (allow_nan=False raises ValueError)."""
    atomic_write_bytes(path, (json.dumps(obj, indent=1, sort_keys=False, allow_nan=False) + "\n").encode())


def atomic_torch_save(path: str | os.PathLike, obj: Any) -> None:
    import io

    buf = io.BytesIO()
    torch.save(obj, buf)
    atomic_write_bytes(path, buf.getvalue())


def file_sha256(path: str | os.PathLike) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
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
