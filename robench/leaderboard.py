"""One row per checkpoint of a results folder: clean accuracy, robust accuracy under the standard
evaluation where it was run, the worst case per threat model and the attack-failure flags.

The worst case is ``robench.robustness``'s, over every finished result; the standard evaluation's
cells are the same computation over the results of the standard evaluation alone. A result is one
when its attack spec says so (``headline``) or when its repeats carry attack-failure ``checks``
(which only the standard evaluation stores); results without checks show no flag. The HTML page's
leaderboard and the pictures of ``robench.plot`` read these rows.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attacks import get_attack
from .results import OnError, list_results, warn_skipped
from .robustness import (RobustCell, RowKey, Threat, gather, result_ident, robust_test_accuracy, sanity_flags,
                         worst_case)
from .tables import checkpoint_tag


@dataclass
class BoardRow:
    """One checkpoint: its row key's parts, clean accuracy (a fraction; None where no result
    recorded it), the standard evaluation's and the worst case's cells per threat, and flags as
    (short name, evidence) pairs."""

    model: str
    dataset: str
    tag: str
    act: str
    clean: float | None = None
    standard: dict[Threat, RobustCell] = field(default_factory=dict)
    worst: dict[Threat, RobustCell] = field(default_factory=dict)
    flags: list[tuple[str, str]] = field(default_factory=list)

    @property
    def name(self) -> str:
        return f"{self.model}-{self.act}-{self.dataset}-{self.tag}"


@dataclass
class Board:
    rows: list[BoardRow]
    standard_columns: list[Threat]
    threat_columns: list[Threat]


def robust_accuracy(cell: RobustCell, clean: float | None) -> float | None:
    """Robust accuracy on the test set: clean accuracy times the share of attacked (correctly
    classified) images no attack fooled, so it is never above clean accuracy; None without both."""
    return robust_test_accuracy(clean, cell.robust, cell.images)


def is_standard(result: dict[str, Any]) -> bool:
    """A result of the standard evaluation: its spec says so, or its repeats carry failure checks."""
    if getattr(get_attack(result["attack"]), "headline", False):
        return True
    return any("checks" in rep for s in result["settings"] for rep in s["repeats"])


def failure_flags(result: dict[str, Any]) -> list[tuple[str, str]]:
    """The flagged attack-failure checks of every repeat of ``result``, as (name at its setting,
    evidence), read defensively: a repeat without ``checks``, or a check not shaped as a record
    with a name and a flag, adds nothing."""
    flags = []
    for setting in result["settings"]:
        for rep in setting["repeats"]:
            checks = rep.get("checks")
            for check in checks if isinstance(checks, list) else []:
                if isinstance(check, dict) and check.get("flagged") is True and isinstance(check.get("name"), str):
                    flags.append((f"{check['name']} ({setting['label']})", str(check.get("evidence", ""))))
    return flags


def finished_results(results_dir: str | Path, on_error: OnError | None = warn_skipped
                     ) -> list[tuple[str, dict[str, Any]]]:
    """The complete results of attacks this robench knows, as (file name, result)."""
    finished = []
    for path, res in list_results(results_dir, on_error):
        if res["status"] != "complete":
            continue
        try:
            result_ident(res)
        except ValueError:  # an attack this robench does not know: the report names it
            continue
        finished.append((path.name, res))
    return finished


def build_board(results_dir: str | Path, on_error: OnError | None = warn_skipped) -> Board:
    """The leaderboard of ``results_dir``: one row per checkpoint, ReLU first within a model."""
    finished = finished_results(results_dir, on_error)
    evidence = gather(finished, checkpoint_tag)
    worst = worst_case(evidence)
    standard = worst_case(gather([f for f in finished if is_standard(f[1])], checkpoint_tag))
    rows: dict[RowKey, BoardRow] = {}
    for _, res in finished:
        tag = checkpoint_tag(res)
        key = (res["model"], res["dataset"], tag, res["act"])
        row = rows.setdefault(key, BoardRow(*key))
        clean = res["checkpoint"].get("clean_test_accuracy")
        if row.clean is None and isinstance(clean, int | float):
            row.clean = float(clean)
        row.flags += [f for f in failure_flags(res) if f not in row.flags]
    for text in sanity_flags(evidence):
        for key, row in rows.items():
            if text.startswith("/".join(key) + " "):
                row.flags.append(("masking hint", text))
    for key, row in rows.items():
        row.worst, row.standard = worst.get(key, {}), standard.get(key, {})
    ordered = sorted(rows.values(), key=lambda r: (r.model, r.dataset, r.tag, r.act != "relu", r.act))
    columns = sorted({t for r in ordered for t in r.standard}, key=Threat.sort_key)
    threats = sorted({t for r in ordered for t in r.worst}, key=Threat.sort_key)
    return Board(ordered, columns, threats)
