"""Tables like the paper's Tables 2-4 and the strong attacks', rebuilt from stored result files only.

A row is one model × activation × dataset × checkpoint tag (``s0`` for the shipped seed-0
checkpoints); a column is one attack setting (1px, eps=0.04, l2=0.5). Each cell holds our mean ±
std over repeats, the gain over the ReLU row of the same model (SPEC §4: ``1 - ours/relu``) and the
paper's number where it prints one. The paper's figures come from ``paper_numbers.yaml``.

Every attack variant gets its own table (the paper's DE, Sparse-RS, PGD per norm, FMN per norm, each
ensemble). A minimal-norm attack's table gives successes at standard budgets, read off its stored
distances, and the median minimal distance. Then, per threat model, robust accuracy under the worst
case over every attack in the folder (``robustness.py``), with counts that a stronger attack beats
marked as lower bounds and sanity flags for gradient masking.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import yaml

from .attacks import get_attack
from .attacks.checks import MEANINGS, eps_monotone
from .attacks.ensemble import THREATS
from .attacks.metrics import aggregate, gain_vs_relu, mean_std
from .attacks.spec import strongest_for
from .config import config_from_dict
from .errors import ConfigError, ResultError
from .registry import file_name_part
from .results import OnError, list_results, warn_skipped
from .robustness import (RobustCell, Threat, gather, lower_bounds, median_distance, result_ident, robust_test_accuracy,
                         sanity_flags, threat, unconverged_flags, worst_case)


@dataclass
class Cell:
    mean: float | None
    std: float | None
    repeats: int
    images: int
    avg_abs_z: float | None
    paper: float | None = None
    gain_vs_relu: float | None = None
    lower_bound_by: str | None = None  # a stronger attack at the same budget finds clearly more


@dataclass
class Row:
    model: str
    act: str
    dataset: str
    tag: str
    data_official: bool
    cells: dict[str, Cell] = field(default_factory=dict)
    avg_abs_z: float | None = None
    paper_avg_abs_z: float | None = None
    files: list[str] = field(default_factory=list)
    median_distance: float | None = None  # minimal-norm tables only


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[Row]
    ident: str = ""  # attack plus variant: the attack part of `robench check` cell names
    minimal_norm: str | None = None  # set for a minimal-norm attack's table


@dataclass
class RobustRow:
    model: str
    act: str
    dataset: str
    tag: str
    cells: dict[str, RobustCell] = field(default_factory=dict)


@dataclass
class StandardCell:
    """One budget of a standard evaluation (the headline attack's): images left robust of those attacked,
    and the attack-failure checks of its repeat (name, flagged, evidence)."""

    robust: int
    images: int
    checks: list[dict[str, Any]] = field(default_factory=list)

    @property
    def flagged(self) -> list[str]:
        return [c["name"] for c in self.checks if c["flagged"]]


@dataclass
class StandardRow:
    model: str
    act: str
    dataset: str
    tag: str
    clean_accuracy: float | None
    attack: str  # the standard evaluation's registered name (its spec has headline=True)
    cells: dict[str, StandardCell] = field(default_factory=dict)


@dataclass
class Report:
    tables: list[Table]
    notes: list[str]
    robust_columns: list[str] = field(default_factory=list)
    robust_rows: list[RobustRow] = field(default_factory=list)
    flags: list[str] = field(default_factory=list)
    standard_columns: list[str] = field(default_factory=list)
    standard_rows: list[StandardRow] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        standard = {"standard_evaluation": {"columns": self.standard_columns, "rows": [
            asdict(r) | {"unreliable": {k: c.flagged for k, c in r.cells.items() if c.flagged}}
            for r in self.standard_rows]}} if self.standard_rows else {}  # reports without one read as before
        return {"tables": [asdict(t) for t in self.tables], "notes": self.notes,
                "robust_accuracy": {"columns": self.robust_columns, "rows": [asdict(r) for r in self.robust_rows]},
                **standard, "flags": self.flags}


def paper_numbers() -> dict[str, Any]:
    return yaml.safe_load(resources.files("robench").joinpath("paper_numbers.yaml").read_text())


def checkpoint_tag(result: dict[str, Any]) -> str:
    """``s0`` for checkpoints/<model>-<act>-<dataset>-s0.pt; the whole stem for other names;
    ``w`` and the weights' fingerprint for a module evaluated from Python (it has no file)."""
    if result["checkpoint"].get("external") == "module":
        return "w" + result["checkpoint"]["sha256"][:6]
    stem = Path(result["checkpoint"]["path"]).stem
    prefix = f"{file_name_part(result['model'])}-{file_name_part(result['act'])}-{result['dataset']}-"
    return stem[len(prefix):] if stem.startswith(prefix) else stem


def _sort_key(label: str) -> tuple[float, str]:
    """Columns in budget order: ``3px``, ``eps=0.02``, ``eps=8/255``, ``l2=0.5``."""
    value = label.split("=", 1)[-1].removesuffix("px").removeprefix("l0 ")
    try:
        num, _, den = value.partition("/")
        return float(num) / (float(den) if den else 1.0), label
    except ValueError:
        return float("inf"), label


def _table_order(ident: str, attack: str) -> tuple[int, str]:
    return get_attack(attack).order, ident


def build_report(results_dir: str | Path, on_error: OnError | None = warn_skipped) -> Report:
    """Read every result in ``results_dir`` and build the tables; unfinished runs are skipped. A
    malformed file goes to ``on_error`` (a warning) and is left out; ``on_error=None`` raises its
    ResultError instead, as `robench check` wants."""
    paper = paper_numbers()
    notes: list[str] = []
    groups: dict[str, tuple[str, str, list[tuple[Path, dict[str, Any]]]]] = {}  # ident -> (attack, variant, files)
    finished = []
    for path, res in list_results(results_dir, on_error):
        if res["status"] != "complete":
            notes.append(f"{path.name}: unfinished run, left out (rerun its command to finish it)")
            continue
        try:
            ident, _ = result_ident(res)
            for setting in res["settings"]:
                _point_of(res, setting)
        except ValueError as err:  # an attack this robench does not know
            notes.append(f"{path.name}: left out ({err})")
            continue
        except ConfigError as err:  # a config its attack cannot read: the file is malformed
            bad = ResultError(f"{path}: {err}")
            if on_error is None:
                raise bad from None
            on_error(path, bad)
            continue
        variant = ident[len(res["attack"]) + 1:]
        groups.setdefault(ident, (res["attack"], variant, []))[2].append((path, res))
        finished.append((path.name, res))
    evidence = gather(finished, checkpoint_tag)
    marks = lower_bounds(evidence)

    tables = []
    for ident, (attack, variant, files) in sorted(groups.items(), key=lambda kv: _table_order(kv[0], kv[1][0])):
        spec = get_attack(attack)
        printed = spec.paper_table if not variant else None
        if printed is not None:
            key, title, z_settings = printed.key, printed.title, printed.z_settings
        else:
            shown = spec.variant_format.format(variant) if variant else ""
            key, title, z_settings = ident, (spec.title or ident + " ({variant})").format(variant=shown), None
        table = _build_table(key, title, ident, attack, files, z_settings, notes, evidence, marks)
        if printed is not None:
            _add_paper(table, paper.get(printed.key, {}), printed.column)
        tables.append(table)
    if any(not r.data_official for t in tables for r in t.rows):
        notes.append("† made on data that is not the official release (e.g. the JPEG re-encoded CIFAR-10 of an "
                     "offline machine); compare with the paper with that in mind")
    if marks:
        notes.append("‡ a lower bound: another attack at the same budget on the same model fools clearly more images "
                     "(by more than max(1, 2 std)); the robust-accuracy table gives the worst case")
    robust = worst_case(evidence)
    if any(not c.strong for cells in robust.values() for c in cells.values()):
        strongest = ", ".join(f"{t}: {' or '.join(strongest_for(t))}" for t in THREATS if strongest_for(t))
        notes.append("≤ robust accuracy no stronger than this: none of the threat's strongest attacks was run here "
                     f"({strongest}); run one, or an ensemble holding one")
    points = sorted({p for cells in robust.values() for p in cells}, key=Threat.sort_key)
    robust_rows = [RobustRow(m, a, d, t, {p.label: cells[p] for p in points if p in cells})
                   for (m, d, t, a), cells in sorted(robust.items(), key=lambda kv: (kv[0][0], kv[0][1], kv[0][2],
                                                                                   kv[0][3] != "relu", kv[0][3]))]
    flags = sanity_flags(evidence) + unconverged_flags(finished, checkpoint_tag)
    standard = standard_rows(finished)
    flags += [f"{'/'.join((r.model, r.act, r.dataset, r.tag))} {r.attack} {label}: {c['name']} ({c['evidence']}): "
              f"{MEANINGS[c['name']]}" for r in standard for label, cell in r.cells.items() for c in cell.checks if c["flagged"]]
    standard_columns = sorted({label for r in standard for label in r.cells}, key=_sort_key)
    return Report(tables, notes, [p.label for p in points], robust_rows, flags, standard_columns, standard)


def standard_rows(finished: list[tuple[str, dict[str, Any]]]) -> list[StandardRow]:
    """The standard evaluation's rows: per model, its clean accuracy and, per budget, the images the
    headline attack (``AttackSpec.headline``) left robust with the checks of its (first) repeat. Every
    budget above a model's smallest of a norm also gets the ``eps_monotone`` check against the one below."""
    rows: dict[tuple[str, str, str, str], StandardRow] = {}
    for _, res in finished:
        if not get_attack(res["attack"]).headline:
            continue
        key = (res["model"], res["dataset"], checkpoint_tag(res), res["act"])
        row = rows.setdefault(key, StandardRow(res["model"], res["act"], res["dataset"], key[2],
                                               res["checkpoint"].get("clean_test_accuracy"), res["attack"]))
        for setting in res["settings"]:
            if setting["repeats"]:
                rep = setting["repeats"][0]
                row.cells.setdefault(setting["label"], StandardCell(sum(not r["success"] for r in rep["images"]),
                                                                    len(rep["images"]), list(rep.get("checks", []))))
    for row in rows.values():
        by_norm: dict[str, list[tuple[float, float, str]]] = {}
        for label, cell in row.cells.items():
            norm = "linf" if label.startswith("eps=") else label.split("=", 1)[0]
            by_norm.setdefault(norm, []).append((_sort_key(label)[0], cell.robust / max(cell.images, 1), label))
        for curve in by_norm.values():
            curve.sort()
            for (e1, r1, _), (e2, r2, label) in zip(curve, curve[1:]):
                row.cells[label].checks.append(eps_monotone([(e1, r1), (e2, r2)]).to_dict())
    return sorted(rows.values(), key=lambda r: (r.model, r.dataset, r.tag, r.act != "relu", r.act))


def _build_table(key: str, title: str, ident: str, attack: str, files: list[tuple[Path, dict[str, Any]]],
                 z_settings: tuple[str, ...] | None, notes: list[str], evidence: Any, marks: dict) -> Table:
    rows: dict[tuple[str, str, str, str], Row] = {}
    columns: set[str] = set()
    z_per_row: dict[tuple, list[float]] = {}
    minimal_norm = None
    for path, res in files:
        tag = checkpoint_tag(res)
        key4 = (res["model"], res["dataset"], tag, res["act"])
        row = rows.setdefault(key4, Row(res["model"], res["act"], res["dataset"], tag,
                                        bool(res["provenance"]["data_official"])))
        row.files.append(path.name)
        for setting in res["settings"]:
            agg = setting.get("aggregate") or aggregate(setting["repeats"])
            norm, budget = _threat_of(res, setting)
            if budget is None:  # minimal norm: one column per budget read off the distances
                minimal_norm = norm
                row.median_distance = median_distance(setting, norm)
                for point, items in evidence.by_row.get(key4, {}).items():
                    for e in items:
                        if e.ident == ident and e.derived:
                            columns.add(point.label)
                            row.cells[point.label] = Cell(e.successes, e.std, agg["repeats"], len(e.attacked), None,
                                                          lower_bound_by=marks.get((key4, ident, point)))
                continue
            label = setting["label"]
            if label in row.cells:
                notes.append(f"{path.name}: {label} of {'/'.join(key4)} already given by another file; kept the first")
                continue
            columns.add(label)
            point = _point_of(res, setting)
            row.cells[label] = Cell(agg["successes_mean"], agg["successes_std"], agg["repeats"],
                                    len(res["image_set"]["indices"]), agg["avg_abs_z_mean"],
                                    lower_bound_by=marks.get((key4, ident, point)) if point else None)
            if (z_settings is None or label in z_settings) and agg["avg_abs_z_mean"] is not None:
                z_per_row.setdefault(key4, []).append(agg["avg_abs_z_mean"])
    for key4, row in rows.items():
        row.avg_abs_z = mean_std(z_per_row.get(key4, []))[0]
        relu = rows.get(key4[:3] + ("relu",))
        for label, cell in row.cells.items():
            if relu is not None and label in relu.cells and cell.mean is not None and relu.cells[label].mean is not None:
                cell.gain_vs_relu = gain_vs_relu(cell.mean, relu.cells[label].mean)
    ordered = sorted(rows.values(), key=lambda r: (r.model, r.dataset, r.tag, r.act != "relu", r.act))
    return Table(key, title, sorted(columns, key=_sort_key), ordered, ident, minimal_norm)


def _threat_of(res: dict[str, Any], setting: dict[str, Any]) -> tuple[str, float | None]:
    spec = get_attack(res["attack"])
    return spec.threat(config_from_dict(spec.config_cls, dict(setting["config"]), res["attack"]))


def _point_of(res: dict[str, Any], setting: dict[str, Any]) -> Threat | None:
    norm, budget = _threat_of(res, setting)
    return None if budget is None else threat(norm, budget)


def _add_paper(table: Table, printed_by_model: dict[str, Any], column: str | None) -> None:
    """The paper's numbers beside ours (CIFAR-10 rows only: the paper reports no other dataset);
    ``column`` is the paper's key for every cell of a row, None for the cell's own label."""
    for row in table.rows:
        printed = printed_by_model.get(row.model, {}).get(row.act, {}) if row.dataset == "cifar10" else {}
        row.paper_avg_abs_z = printed.get("avg_abs_z")
        for label, cell in row.cells.items():
            cell.paper = printed.get(column or label)


def _fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


def cell_text(cell: Cell | None) -> str:
    if cell is None:
        return ""
    text = f"{_fmt(cell.mean)} ± {_fmt(cell.std)}"
    if cell.gain_vs_relu is not None and cell.gain_vs_relu != 0:
        text += f" ({100 * cell.gain_vs_relu:+.0f}%)"
    if cell.paper is not None:
        text += f" [paper {cell.paper:g}]"
    if cell.lower_bound_by is not None:
        text += f" ‡{cell.lower_bound_by}"
    return text


def _row_label(row: Row) -> list[str]:
    dagger = "" if row.data_official else " †"
    images = sorted({c.images for c in row.cells.values()})
    return [row.model, row.act, f"{row.dataset}{dagger}", row.tag, "/".join(map(str, images))]


def _z_text(row: Row) -> str:
    text = _fmt(row.avg_abs_z, 3)
    return text + (f" [paper {row.paper_avg_abs_z:g}]" if row.paper_avg_abs_z is not None else "")


def _last_column(t: Table) -> tuple[str, Any]:
    """avg|Z| for success tables; the median minimal distance for a minimal-norm table."""
    if t.minimal_norm is not None:
        unit = " (px)" if t.minimal_norm == "l0" else ""
        return f"median min {t.minimal_norm}{unit}", lambda r: _fmt(r.median_distance, 4) if r.median_distance is not None \
            else "> half robust"
    return "avg|Z|", _z_text


def robust_text(cell: RobustCell | None) -> str:
    if cell is None:
        return ""
    union = cell.images - cell.robust > cell.strongest_fooled  # attacks together beat the strongest alone
    bound = "" if cell.strong else "≤"
    return f"{bound}{cell.robust}/{cell.images} [{cell.strongest}{'+' if union else ''}]"


def standard_text(cell: StandardCell | None, clean: float | None) -> str:
    """``80.1% (81/100)``: the test-set robust accuracy (clean accuracy x the share of the attacked,
    correctly classified images left robust), or ``unreliable`` when a failure check flagged it."""
    if cell is None:
        return ""
    count = f"{cell.robust}/{cell.images}"
    if cell.flagged:
        return f"unreliable ({count}; {', '.join(cell.flagged)})"
    accuracy = robust_test_accuracy(clean, cell.robust, cell.images)
    return f"{100 * accuracy:.1f}% ({count})" if accuracy is not None else count


def grids(report: Report) -> list[tuple[str, list[str], list[list[str]]]]:
    """Every table as (title, header, rows of text), shared by the markdown and terminal renderers."""
    out = []
    if report.standard_rows:  # the headline: robust accuracy under the standard evaluation
        attacks = ", ".join(sorted({r.attack for r in report.standard_rows}))
        out.append((f"Standard evaluation ({attacks}): robust accuracy, clean accuracy beside it",
                    ["model", "act", "data", "ckpt", "clean", *report.standard_columns],
                    [[r.model, r.act, r.dataset, r.tag, "-" if r.clean_accuracy is None else f"{100 * r.clean_accuracy:.1f}%",
                      *(standard_text(r.cells.get(c), r.clean_accuracy) for c in report.standard_columns)]
                     for r in report.standard_rows]))
        names = list(MEANINGS)
        out.append(("Attack-failure checks of the standard evaluation (FLAG: see the warnings for the evidence)",
                    ["model", "act", "data", "ckpt", "budget", *names],
                    [[r.model, r.act, r.dataset, r.tag, label,
                      *({c["name"]: "FLAG" if c["flagged"] else "ok" for c in cell.checks}.get(n, "-") for n in names)]
                     for r in report.standard_rows for label, cell in sorted(r.cells.items(), key=lambda kv: _sort_key(kv[0]))]))
    for t in report.tables:
        last, text = _last_column(t)
        out.append((t.title, ["model", "act", "data", "ckpt", "images", *t.columns, last],
                    [_row_label(r) + [cell_text(r.cells.get(c)) for c in t.columns] + [text(r)] for r in t.rows]))
    if report.robust_rows:
        out.append(("Robust accuracy under the worst case over every attack above, per threat model",
                    ["model", "act", "data", "ckpt", *report.robust_columns],
                    [[r.model, r.act, r.dataset, r.tag, *(robust_text(r.cells.get(c)) for c in report.robust_columns)]
                     for r in report.robust_rows]))
    return out


LEGEND = ("Cells: successes out of the images attacked, mean ± std over repeats (gain vs ReLU = 1 - ours/ReLU) "
          "[the paper's number, out of 100 images]. Robust accuracy: images that no attack fooled in any repeat, "
          "of those every attack at that budget attacked [the strongest single attack there; + where the attacks "
          "together fool more than it alone].")


def render_markdown(report: Report) -> str:
    out = []
    for title, head, rows in grids(report):
        out.append(f"### {title}\n")
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        out += ["| " + " | ".join(row) + " |" for row in rows]
        out.append("")
    out.append(LEGEND)
    out += [f"- {n}" for n in report.notes]
    out += [f"- warning: {f}" for f in report.flags]
    return "\n".join(out) + "\n"


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "model", "act", "dataset", "tag", "data_official", "setting", "successes_mean", "successes_std",
                "repeats", "images", "avg_abs_z", "gain_vs_relu", "paper", "lower_bound_by"])
    for t in report.tables:
        for r in t.rows:
            for label in t.columns:
                c = r.cells.get(label)
                if c is not None:
                    w.writerow([t.key, r.model, r.act, r.dataset, r.tag, r.data_official, label, c.mean, c.std,
                                c.repeats, c.images, c.avg_abs_z, c.gain_vs_relu, c.paper, c.lower_bound_by])
    return buf.getvalue()


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=1) + "\n"


def render_rich(report: Report) -> list[Any]:
    from rich.markup import escape
    from rich.table import Table as RichTable

    out: list[Any] = []
    for title, head, rows in grids(report):
        table = RichTable(title=title)
        for col in head:
            table.add_column(col)
        for row in rows:
            table.add_row(*map(escape, row))
        out.append(table)
    out.append(escape(LEGEND))
    out += [escape(n) for n in report.notes]
    out += [f"[yellow]warning:[/yellow] {escape(f)}" for f in report.flags]
    return out


RENDERERS = {"markdown": render_markdown, "csv": render_csv, "json": render_json}
