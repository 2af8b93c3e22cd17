"""One report renderer for the CLI and the API, and one summary layout for ``robench attack`` and
``Evaluation.__str__``, checked on results committed in attacks/."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import robench
from robench.api import Evaluation
from robench.cli import app
from robench.errors import ConfigError
from robench.rendering import FORMATS, SUMMARY_HEAD, aligned_text, check_format, render, summary_grid
from robench.tables import build_report

REPO = Path(__file__).resolve().parents[1]
FOLDER = REPO / "attacks" / "cw-budgets"


@pytest.mark.parametrize("format", ["markdown", "csv", "json"])
def test_the_cli_and_the_api_render_a_report_the_same(format):
    r = CliRunner().invoke(app, ["report", "--results", str(FOLDER), "--format", format])
    assert r.exit_code == 0, r.output
    assert r.stdout_bytes.decode() == robench.report(FOLDER, format=format) == render(build_report(FOLDER), format)


def test_formats_are_checked_in_one_place():
    assert FORMATS == ("table", "markdown", "csv", "json", "html")
    with pytest.raises(ConfigError, match="unknown format 'yaml'; known: table, markdown, csv, json, html"):
        check_format("yaml")
    with pytest.raises(ConfigError, match="--out needs --format markdown, csv, json or html"):
        check_format("table", "x.md")
    with pytest.raises(ConfigError, match="unknown format 'yaml'"):
        robench.report(FOLDER, format="yaml")


def test_evaluation_prints_the_summary_the_attack_command_prints():
    paths = sorted(FOLDER.glob("*.json"))[:2]
    results = tuple(json.loads(p.read_text()) for p in paths)
    grid = summary_grid((r["attack"], r) for r in results)
    assert len(grid) == sum(len(r["settings"]) for r in results) and all(len(row) == len(SUMMARY_HEAD) for row in grid)
    first = results[0]["settings"][0]["aggregate"]
    assert grid[0][2] == f"{first['successes_mean']:.1f} ± {first['successes_std']:.1f}"
    text = str(Evaluation(tuple(paths), results))
    lines = text.splitlines()
    assert text == aligned_text(SUMMARY_HEAD, grid) and len(lines) == 1 + len(grid)
    assert lines[0].split()[:2] == ["attack", "setting"] and all(row[2] in line for row, line in zip(grid, lines[1:]))
