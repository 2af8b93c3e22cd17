"""Robustness regression checks against a committed baseline (for CI).

A baseline lists cells (model, act, dataset, checkpoint tag, attack, setting) with the success
count they had. A cell fails when its success count now exceeds the baseline by more than its
tolerance, or when it has no result at all. The tolerance is
``max(absolute, std_factor * max(baseline std, current std))``: absolute alone for deterministic
attacks, wider where the repeats themselves spread. Fewer successes (more robust) pass, unless
the baseline sets ``two_sided: true``: with fixed checkpoints (as in CI) fewer successes mean an
attack got weaker, which must fail too.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from .config import load_yaml
from .errors import ConfigError
from .tables import build_report
from .storage import atomic_write_bytes

BASELINE_VERSION = 1


@dataclass(frozen=True)
class Verdict:
    cell: str
    baseline: float
    now: float | None
    tolerance: float
    passed: bool
    reason: str


def _cells(results_dir: str | Path) -> dict[str, dict[str, Any]]:
    cells = {}
    for table in build_report(results_dir, on_error=None).tables:  # a malformed file is bad input: exit 2
        attack = table.ident
        for row in table.rows:
            for label, cell in row.cells.items():
                key = f"{row.model}/{row.act}/{row.dataset}/{row.tag}/{attack}/{label}"
                cells[key] = {"successes": cell.mean, "std": cell.std or 0.0, "repeats": cell.repeats}
    return cells


def load_baseline(path: str | Path) -> dict[str, Any]:
    try:
        data = load_yaml(path)
    except OSError as err:  # a folder where the file should be, no permission
        raise ConfigError(f"cannot read {path}: {err.strerror or err}") from None
    if not isinstance(data, dict) or data.get("version") != BASELINE_VERSION or not isinstance(data.get("cells"), dict):
        raise ConfigError(f"{path} is not a robench baseline (version {BASELINE_VERSION} with a 'cells' mapping)")
    tol = data.get("tolerance", {})
    if not isinstance(tol, dict) or set(tol) - {"absolute", "std_factor", "two_sided"}:
        raise ConfigError(f"{path}: tolerance takes 'absolute', 'std_factor' and 'two_sided'")
    for key, cell in data["cells"].items():
        if not isinstance(cell, dict) or "successes" not in cell:
            raise ConfigError(f"{path}: cell {key} needs a 'successes' value")
    return data


def check_baseline(baseline_path: str | Path, results_dir: str | Path) -> list[Verdict]:
    """Compare current results with the baseline; one verdict per baseline cell."""
    baseline = load_baseline(baseline_path)
    default_tol = {"absolute": 0.0, "std_factor": 0.0, "two_sided": False} | baseline.get("tolerance", {})
    now = _cells(results_dir)
    verdicts = []
    for key, cell in baseline["cells"].items():
        tol_spec = default_tol | cell.get("tolerance", {})
        base = float(cell["successes"])
        current = now.get(key)
        if current is None:
            verdicts.append(Verdict(key, base, None, 0.0, False, "missing: no result for this cell"))
            continue
        spread = max(float(cell.get("std", 0.0)), current["std"])
        tol = max(float(tol_spec["absolute"]), float(tol_spec["std_factor"]) * spread)
        diff = current["successes"] - base
        if diff > tol:
            passed, reason = False, f"{diff:+.2f} successes: less robust than the baseline"
        elif tol_spec["two_sided"] and -diff > tol:
            passed, reason = False, f"{diff:+.2f} successes: the attack got weaker"
        else:
            passed, reason = True, "ok"
        verdicts.append(Verdict(key, base, current["successes"], tol, passed, reason))
    return verdicts


def update_baseline(baseline_path: str | Path, results_dir: str | Path, absolute: float = 2.0, std_factor: float = 2.0) -> int:
    """Rewrite the baseline from current results, keeping its tolerance if it has one."""
    tolerance: dict[str, Any] = {"absolute": absolute, "std_factor": std_factor, "two_sided": False}
    if Path(baseline_path).is_file():
        tolerance = load_baseline(baseline_path).get("tolerance", tolerance)
    cells = {k: {"successes": round(v["successes"], 4), "std": round(v["std"], 4)} for k, v in _cells(results_dir).items()}
    doc = {"version": BASELINE_VERSION, "results": str(results_dir), "tolerance": tolerance, "cells": cells}
    header = "# robench check baseline: rewrite with `robench check --update`\n"
    try:
        atomic_write_bytes(baseline_path, (header + yaml.safe_dump(doc, sort_keys=False)).encode())
    except OSError as err:  # a read-only folder, a folder where the file should be
        raise ConfigError(f"cannot write {baseline_path}: {err.strerror or err}") from None
    return len(cells)
