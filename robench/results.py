"""Attack result files: one JSON per run, versioned, written atomically, read by reports.

A file is written after every finished repeat with ``status: partial`` and rewritten with
``status: complete`` at the end, so an interrupted run loses at most the repeat in progress.

Reading checks the file against ``RESULT``: every field a reader (report, robustness, stats,
check, plot, verify) takes, with its type. Fields beyond it are allowed (attacks add per-image
details such as ``pixels`` or ``broken_by``), so a newer writer's additions never break a reader.
"""

from __future__ import annotations

import json
import math
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from itertools import repeat
from operator import itemgetter
from pathlib import Path
from typing import Any

from .errors import ReadError, ResultError
from .storage import atomic_write_json, is_regular, read_json

SCHEMA = "robench-attack-result"
VERSION = 1
DEFAULT_DIR = Path("attacks")


@dataclass(frozen=True)
class Scalar:
    """A JSON value of one of ``types`` (``bool`` is never an ``int`` here: a count of True is a bug)."""

    what: str  # "an integer", as the error message says it
    types: frozenset[type]
    choices: frozenset[Any] = frozenset()  # when set, the only values allowed

    def accepts_all(self, values: Sequence[Any]) -> bool:
        """The fast path: C-level loops over a column of values (hundreds of image records)."""
        if not set(map(type, values)) <= self.types:
            return False
        if self.choices and not set(values) <= self.choices:
            return False
        if float not in self.types:
            return True
        numbers = filter(None, values) if type(None) in self.types else values  # drops nulls (and finite zeros)
        try:  # a sum is finite when every term is, unless finite terms overflow it: then ask each one
            return math.isfinite(sum(numbers)) or all(map(math.isfinite, filter(None, values)))
        except OverflowError:  # an integer too large for a float
            return False

    def accepts(self, value: Any) -> bool:
        return self.accepts_all([value])


@dataclass(frozen=True)
class Obj:
    """A JSON object with these ``fields`` (and these ``optional`` ones when present); others pass."""

    fields: dict[str, Spec]
    optional: dict[str, Spec] = field(default_factory=dict)


@dataclass(frozen=True)
class ListOf:
    item: Spec


Spec = Scalar | Obj | ListOf

STR = Scalar("a string", frozenset({str}))
INT = Scalar("an integer", frozenset({int}))
NUMBER = Scalar("a number", frozenset({int, float}))
NUMBER_OR_NULL = Scalar("a number or null", frozenset({int, float, type(None)}))
BOOL = Scalar("true or false", frozenset({bool}))
DICT = Obj({})  # a mapping whose content belongs to someone else (an attack's config, provenance)

IMAGE = Obj({
    "index": INT, "label": INT, "adv_label": INT, "success": BOOL, "p_true_clean": NUMBER, "p_true_adv": NUMBER,
    "abs_z": NUMBER, "linf": NUMBER, "l2": NUMBER, "l0_pixels": INT, "queries": INT,
}, optional={"l1": NUMBER})  # l1 came later: the first results lack it
REPEAT = Obj({"repeat": INT, "seed": INT, "attacked": INT, "successes": INT, "success_rate": NUMBER, "avg_abs_z": NUMBER_OR_NULL,
              "images": ListOf(IMAGE)})
AGGREGATE = Obj({"repeats": INT, "successes_mean": NUMBER_OR_NULL, "successes_std": NUMBER_OR_NULL,
                 "success_rate_mean": NUMBER_OR_NULL, "avg_abs_z_mean": NUMBER_OR_NULL})
SETTING = Obj({"label": STR, "config": DICT, "repeats": ListOf(REPEAT)},
              optional={"aggregate": AGGREGATE})  # written when the setting's last repeat is done
RESULT = Obj({
    "model": STR, "act": STR, "dataset": STR, "attack": STR,
    "status": Scalar("partial or complete", frozenset({str}), frozenset({"partial", "complete"})),
    "seed": INT, "attack_config": DICT, "run": DICT,
    "checkpoint": Obj({"path": STR, "sha256": STR}),
    "provenance": Obj({"data_official": BOOL}),
    "image_set": Obj({"requested": INT, "selection_seed": INT, "indices": ListOf(INT), "drawn": INT}),
    "repeats_per_setting": INT,
    "settings": ListOf(SETTING),
}, optional={"wall_time_s": NUMBER})


_ABSENT = object()  # an optional field a record does not have


class _Invalid(Exception):
    def __init__(self, where: str, problem: str) -> None:
        super().__init__(f"{where} {problem}")


class _NonFinite:
    """What a NaN, Infinity or -Infinity literal parses to. JSON has no such numbers, and no check
    accepts this type, so the error names the field that holds one."""

    def __init__(self, literal: str) -> None:
        self.literal = literal


def _got(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, _NonFinite):
        return value.literal
    if isinstance(value, float) and not math.isfinite(value):  # 1e999 parses to inf
        return "Infinity" if value > 0 else "-Infinity"
    return type(value).__name__


def _check(values: Sequence[Any], spec: Spec, where: Callable[[int], str]) -> None:
    """Check every value in ``values`` against ``spec``, a column at a time (one field of every
    record): ``where(i)`` names the field that holds ``values[i]``. Raises _Invalid at the first bad one."""
    if isinstance(spec, Scalar):
        if not spec.accepts_all(values):
            i = next(i for i, v in enumerate(values) if not spec.accepts(v))
            got = repr(values[i]) if spec.choices and isinstance(values[i], str) else _got(values[i])
            raise _Invalid(where(i), f"must be {spec.what}, got {got}")
        return
    container, what = (list, "a list") if isinstance(spec, ListOf) else (dict, "an object")
    if not set(map(type, values)) <= {container}:
        i = next(i for i, v in enumerate(values) if type(v) is not container)
        raise _Invalid(where(i), f"must be {what}, got {_got(values[i])}")
    if isinstance(spec, ListOf):
        for i, items in enumerate(values):
            _check(items, spec.item, lambda j, i=i: f"{where(i)}[{j}]")
        return
    for (key, sub), column in zip(spec.fields.items(), _columns(values, list(spec.fields), where)):
        _check(column, sub, lambda i, key=key: _join(where(i), key))
    for key, sub in spec.optional.items():
        column = list(map(dict.get, values, repeat(key), repeat(_ABSENT)))
        if _ABSENT not in column:
            _check(column, sub, lambda i, key=key: _join(where(i), key))
        elif column.count(_ABSENT) < len(column):
            have = [i for i, v in enumerate(column) if v is not _ABSENT]
            _check([column[i] for i in have], sub, lambda j, key=key, have=have: _join(where(have[j]), key))


def _columns(records: list[dict[str, Any]], keys: list[str], where: Callable[[int], str]) -> list[Sequence[Any]]:
    """The values of each of ``keys`` across ``records``, in one pass; a missing key is _Invalid."""
    if not keys:
        return []
    try:
        rows = list(map(itemgetter(*keys), records))
    except KeyError:
        i, key = next((i, k) for i, r in enumerate(records) for k in keys if k not in r)
        raise _Invalid(_join(where(i), key), "is missing") from None
    if len(keys) == 1:  # itemgetter of one key gives the value, not a 1-tuple
        return [rows]
    return list(zip(*rows)) if rows else [()] * len(keys)


def _join(where: str, key: str) -> str:
    return f"{where}.{key}" if where else key


def _find_non_finite(value: Any, where: str = "") -> str | None:
    """The path of the first NaN/Infinity literal in ``value`` (only walked once one was seen)."""
    if isinstance(value, _NonFinite):
        return where or "the file"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for key, v in items:
        found = _find_non_finite(v, f"{where}[{key}]" if isinstance(key, int) else _join(where, key))
        if found is not None:
            return found
    return None


def validate(data: dict[str, Any]) -> str | None:
    """What is wrong with a parsed result, as '<field path> <problem>'; None when it matches RESULT."""
    try:
        _check([data], RESULT, lambda i: "")
    except _Invalid as err:
        return str(err)
    return None


def write_result(path: str | Path, result: dict[str, Any]) -> dict[str, Any]:
    """Write ``result`` with its schema header; returns exactly what was written."""
    stored = {"schema": SCHEMA, "version": VERSION} | result
    atomic_write_json(path, stored)
    return stored


def read_result(path: str | Path) -> dict[str, Any]:
    """A result file, checked for schema, version and the type of every field readers use.

    A ResultError's message is one line, ``<path>: <what is wrong>``, naming the first bad field
    (``settings[0].repeats[1].successes must be an integer, got str``)."""
    path = Path(path)
    non_finite: list[_NonFinite] = []

    def constant(literal: str) -> _NonFinite:
        non_finite.append(_NonFinite(literal))
        return non_finite[-1]

    try:
        data = read_json(path, parse_constant=constant)
    except ReadError as err:  # a FIFO, a device, a huge or absurdly nested file: never blocks, never recurses away
        raise ResultError(f"{path}: cannot read it ({err.reason})") from None
    except FileNotFoundError:
        raise ResultError(f"{path}: result file not found") from None
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ResultError(f"{path}: not valid JSON (corrupt?)") from None
    except OSError as err:  # a folder named *.json, no permission
        raise ResultError(f"{path}: cannot read it ({err.strerror or err})") from None
    if not isinstance(data, dict) or data.get("schema") != SCHEMA:
        raise ResultError(f"{path}: not a robench attack result")
    if data.get("version") != VERSION:
        raise ResultError(f"{path}: result schema version {data.get('version')!r}, this robench reads {VERSION}")
    problem = validate(data)
    if problem is None and non_finite:  # one outside the checked fields still makes the file invalid JSON
        try:
            where = _find_non_finite(data)
        except RecursionError:
            where = "a deeply nested value"
        problem = f"{where} must be a finite number, got {non_finite[0].literal}"
    if problem is not None:
        raise ResultError(f"{path}: {problem}")
    return data


OnError = Callable[[Path, ResultError], None]


def result_paths(directory: Path) -> list[Path]:
    """The ``*.json`` files of ``directory`` (sorted); anything else by that name (a FIFO, a socket,
    a device, a folder) is left out with one warning, since opening a FIFO would block."""
    paths = sorted(directory.glob("*.json"))
    special = [p for p in paths if not is_regular(p)]
    if special:
        warnings.warn(f"skipped {len(special)} entries in {directory} that are not regular files: "
                      f"{', '.join(p.name for p in special)}", stacklevel=3)
    return [p for p in paths if p not in special]


def warn_skipped(path: Path, err: ResultError) -> None:
    """An ``on_error`` for :func:`list_results`: one warning line naming the file and the fault."""
    warnings.warn(f"skipped {err}", stacklevel=2)


def list_results(directory: str | Path = DEFAULT_DIR,
                 on_error: OnError | None = None) -> list[tuple[Path, dict[str, Any]]]:
    """Every result in ``directory`` (sorted by name). A file that does not read raises its
    ResultError, or, given ``on_error`` (e.g. :func:`warn_skipped`), goes to it and is left out."""
    directory = Path(directory)
    if not directory.is_dir():
        raise ResultError(f"results folder {directory} not found")
    results = []
    for path in result_paths(directory):
        try:
            results.append((path, read_result(path)))
        except ResultError as err:
            if on_error is None:
                raise
            on_error(path, err)
    return results
