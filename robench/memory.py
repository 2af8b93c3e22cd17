"""Memory bounds: a config whose estimate exceeds the machine is refused before it allocates, and
an out-of-memory error from torch, wherever it happens, is told as one line.

Estimates are upper-bound rules of thumb for the arrays an attack keeps for its whole run (the DE
population and its per-generation copies), not for the chunked forward passes, whose size
``max_batch`` already bounds.
"""

from __future__ import annotations

import os
import sys

import torch

from .errors import ConfigError


def device_bytes(device: torch.device) -> int | None:
    """Memory an allocation on ``device`` can at most get: a GPU's total memory, else the
    machine's physical memory; None when it cannot be told."""
    if device.type == "cuda":
        return torch.cuda.get_device_properties(device).total_memory
    try:
        return os.sysconf("SC_PHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


def require(need: int, what: str, device: torch.device, lower: str) -> None:
    """A ConfigError when ``need`` bytes exceed what ``device`` has: ``what`` is the request in the
    user's words, ``lower`` the options that would shrink it."""
    have = device_bytes(device)
    if have is not None and need > have:
        raise ConfigError(f"{what} needs about {_gib(need)} of memory, more than the {_gib(have)} this "
                          f"{'GPU' if device.type == 'cuda' else 'machine'} has; lower {lower}")


def is_out_of_memory(err: BaseException) -> bool:
    """torch's out-of-memory on a GPU (torch.OutOfMemoryError) or on the CPU (a RuntimeError from
    its allocator), or Python's MemoryError."""
    if isinstance(err, MemoryError):
        return True
    oom = getattr(sys.modules.get("torch"), "OutOfMemoryError", None)
    return (oom is not None and isinstance(err, oom)) or (
        isinstance(err, RuntimeError) and "can't allocate memory" in str(err))


def out_of_memory_message(err: BaseException) -> str:
    """One line for an out-of-memory error: what the allocator said, and what to lower."""
    said = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
    said = said.split("DefaultCPUAllocator: ")[-1]  # the CPU allocator's message starts with C++ source noise
    return f"out of memory ({said}); lower --images, --batch-size, --population or max_batch"


def _gib(n: int) -> str:
    return f"{n / 2**30:.1f} GiB"
