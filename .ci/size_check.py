#!/usr/bin/env python3
"""The tracked tree's size budget: no tracked file over 1.5 MiB, the whole under a 200 MiB ceiling
(room for the study under adversarial training; the target after `python -m robench.migrate` is
120 MiB). Prints one line; exit 1 when over.

Usage: python3 .ci/size_check.py   (in the repository; sums `git ls-files` as `du -cb` does)
"""

from __future__ import annotations

import os
import subprocess
import sys

MAX_FILE = 1_572_864  # 1.5 MiB
MAX_TREE = 200 * 2**20


def tracked_sizes(root: str = ".") -> dict[str, int]:
    names = subprocess.run(["git", "ls-files", "-z"], cwd=root, capture_output=True, check=True).stdout
    return {n: os.path.getsize(os.path.join(root, n)) for n in names.decode().split("\0")
            if n and os.path.isfile(os.path.join(root, n))}


def over_budget(sizes: dict[str, int], max_file: int = MAX_FILE, max_tree: int = MAX_TREE) -> str | None:
    """Why ``sizes`` (path -> bytes) break the budget, in one line; None when they keep it."""
    big = sorted((s, n) for n, s in sizes.items() if s > max_file)
    total = sum(sizes.values())
    if big:
        return (f"{len(big)} tracked file(s) over {max_file / 2**20:g} MiB, the largest {big[-1][1]} "
                f"({big[-1][0] / 2**20:.2f} MiB); run python -m robench.migrate on attacks/ attacks/*/ checkpoints/")
    if total > max_tree:
        return f"the tracked tree is {total / 2**20:.1f} MiB, over the {max_tree / 2**20:g} MiB ceiling"
    return None


def main() -> int:
    sizes = tracked_sizes()
    why = over_budget(sizes)
    if why:
        print(f"size check: {why}", file=sys.stderr)
        return 1
    largest = max(sizes, key=sizes.get)
    print(f"size check: {len(sizes)} tracked files, {sum(sizes.values()) / 2**20:.1f} MiB; largest {largest} "
          f"({sizes[largest] / 2**20:.2f} MiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
