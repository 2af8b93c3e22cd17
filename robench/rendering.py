"""Reports and attack summaries as people read them, chosen in one place for the CLI and the API.

``render(report, format)`` is the only dispatch on a report's output format (``robench report``,
``robench suite`` and ``robench.report`` all call it); ``summary_grid`` is the one layout of an
attack's per-setting summary (``robench attack`` prints it as a table, ``Evaluation.__str__`` as
aligned text).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from .attacks.runner import summary_rows
from .errors import ConfigError
from .tables import RENDERERS, Report, render_rich

FORMATS = ("table", *RENDERERS, "html")  # table: Rich tables on a terminal; html: one offline page
SUMMARY_HEAD = ["attack", "setting", "successes", "success rate", "avg|Z_true - Z_adv|", "repeats"]


def check_format(format: str, out: str | Path | None = None) -> None:
    """A ConfigError for an unknown format, or for a terminal table asked to go to a file."""
    if format not in FORMATS:
        raise ConfigError(f"unknown format {format!r}; known: {', '.join(FORMATS)}")
    if format == "table" and out is not None:
        raise ConfigError(f"--out needs --format {', '.join(FORMATS[1:-1])} or html")


def render(report: Report, format: str, results: str | Path | None = None, *, console: Any = None,
           seeds: str | Path | None = None, checkpoints: str | Path | None = "checkpoints") -> str:
    """``report`` as text in ``format`` (markdown, csv, json, or html built from the ``results``
    folder, with seed statistics from ``seeds``). ``table`` prints Rich tables to ``console``
    (a new one when None) and returns ""."""
    check_format(format)
    if format == "table":
        if console is None:
            from rich.console import Console

            console = Console()
        for item in render_rich(report):
            console.print(item)
        return ""
    if format == "html":
        from .html_report import render_html

        if results is None:
            raise ConfigError("an html report is built from its results folder; name it")
        return render_html(report, Path(results), seeds=seeds, checkpoints=checkpoints)
    return RENDERERS[format](report)


def summary_grid(named_results: Iterable[tuple[str, dict[str, Any]]]) -> list[list[str]]:
    """One row of text per setting of each ``(attack, result)``, columns as ``SUMMARY_HEAD``."""
    rows = []
    for attack, result in named_results:
        for row in summary_rows(result):
            z = "-" if row["avg_abs_z_mean"] is None else f"{row['avg_abs_z_mean']:.3f} ± {row['avg_abs_z_std']:.3f}"
            rows.append([attack, row["setting"], f"{row['successes_mean']:.1f} ± {row['successes_std']:.1f}",
                         f"{row['success_rate_mean']:.3f}", z, str(row["repeats"])])
    return rows


def aligned_text(head: Sequence[str], rows: Sequence[Sequence[str]]) -> str:
    """A plain-text table: each column as wide as its widest cell, text left, the rest right."""
    widths = [max(len(str(r[i])) for r in [head, *rows]) for i in range(len(head))]
    lines = []
    for r in [head, *rows]:
        lines.append("  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths))).rstrip())
    return "\n".join(lines)
