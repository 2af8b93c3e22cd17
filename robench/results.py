"""Attack result files: one JSON per run, versioned, written atomically, read by reports.

A file is written after every finished repeat with ``status: partial`` and rewritten with
``status: complete`` at the end, so an interrupted run loses at most the repeat in progress.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from .errors import ResultError
from .storage import atomic_write_json

SCHEMA = "robench-attack-result"
VERSION = 1
DEFAULT_DIR = Path("attacks")


def write_result(path: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``result`` with its schema header; returns exactly what was written."""
    stored = {"schema": SCHEMA, "version": VERSION} | result
    atomic_write_json(path, stored)
    return stored


def read_result(path: str | Path) -> dict[str, Any]:
    """A result file, checked for schema and version."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise ResultError(f"result file {path} not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ResultError(f"result file {path} is not valid JSON (corrupt?)") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultError(f"{path} is not a robench attack result")
    if data.get("version") != VERSION:
        raise ResultError(f"{path} has result schema version {data.get('version')}, this robench reads {VERSION}")
    for key in ("status", "model", "act", "dataset", "attack", "settings"):
        if key not in data:
            raise ResultError(f"{path} lacks field {key!r}")
    return data


def list_results(directory: str | Path = DEFAULT_DIR) -> list[tuple[Path, dict[str, Any]]]:
    """Every result in ``directory`` (sorted by name); unreadable files raise ResultError."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResultError(f"results folder {directory} not found")
    return [(p, read_result(p)) for p in sorted(directory.glob("*.json"))]
