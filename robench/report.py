"""Tables like the paper's Tables 2-4, rebuilt from stored result files only.

A row is one model × activation × dataset × checkpoint tag (``s0`` for the shipped seed-0
checkpoints); a column is one attack setting (1px, eps=0.04, l2=0.5). Each cell holds our mean ±
std over repeats, the gain over the ReLU row of the same model (SPEC §4: ``1 - ours/relu``) and the
paper's number where it prints one. The paper's figures come from ``paper_numbers.yaml``.
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

from .attacks.metrics import aggregate, gain_vs_relu, mean_std
from .results import list_results


@dataclass(frozen=True)
class TableSpec:
    key: str  # key in paper_numbers.yaml
    title: str
    attack: str
    z_settings: tuple[str, ...] | None  # settings pooled for the avg|Z| column; None = all


TABLES = (
    TableSpec("table2_pixel", "Table 2: few-pixel DE attack, successes", "pixel", None),
    TableSpec("table3_fgsm", "Table 3: FGSM, successes (avg|Z| at eps=0.04)", "fgsm", ("eps=0.04",)),
    TableSpec("table4_cw", "Table 4: Carlini-Wagner L2, successes", "cw", None),
)


@dataclass
class Cell:
    mean: float | None
    std: float | None
    repeats: int
    images: int
    avg_abs_z: float | None
    paper: float | None = None
    gain_vs_relu: float | None = None


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


@dataclass
class Table:
    key: str
    title: str
    columns: list[str]
    rows: list[Row]


@dataclass
class Report:
    tables: list[Table]
    notes: list[str]

    def to_dict(self) -> dict[str, Any]:
        return {"tables": [asdict(t) for t in self.tables], "notes": self.notes}


def paper_numbers() -> dict[str, Any]:
    return yaml.safe_load(resources.files("robench").joinpath("paper_numbers.yaml").read_text())


def checkpoint_tag(result: dict[str, Any]) -> str:
    """``s0`` for checkpoints/<model>-<act>-<dataset>-s0.pt; the whole stem for other names."""
    stem = Path(result["checkpoint"]["path"]).stem
    prefix = f"{result['model']}-{result['act']}-{result['dataset']}-"
    return stem[len(prefix):] if stem.startswith(prefix) else stem


def _sort_key(label: str) -> tuple[float, str]:
    digits = "".join(ch for ch in label if ch.isdigit() or ch == ".")
    try:
        return float(digits.strip(".")), label
    except ValueError:
        return float("inf"), label


def build_report(results_dir: str | Path) -> Report:
    """Read every result in ``results_dir`` and build the tables; unfinished runs are skipped."""
    paper = paper_numbers()
    notes: list[str] = []
    tables = []
    loaded = list_results(results_dir)
    for spec in TABLES:
        rows: dict[tuple[str, str, str, str], Row] = {}
        columns: set[str] = set()
        z_per_row: dict[tuple, list[float]] = {}
        for path, res in loaded:
            if res["attack"] != spec.attack:
                continue
            if res["status"] != "complete":
                notes.append(f"{path.name}: unfinished run, left out (rerun its command to finish it)")
                continue
            key = (res["model"], res["dataset"], checkpoint_tag(res), res["act"])
            row = rows.setdefault(key, Row(res["model"], res["act"], res["dataset"], key[2],
                                           bool(res["provenance"]["data_official"])))
            row.files.append(path.name)
            for setting in res["settings"]:
                label = setting["label"]
                agg = setting.get("aggregate") or aggregate(setting["repeats"])
                if label in row.cells:
                    notes.append(f"{path.name}: {label} of {'/'.join(key)} already given by another file; kept the first")
                    continue
                columns.add(label)
                row.cells[label] = Cell(agg["successes_mean"], agg["successes_std"], agg["repeats"],
                                        len(res["image_set"]["indices"]), agg["avg_abs_z_mean"])
                if (spec.z_settings is None or label in spec.z_settings) and agg["avg_abs_z_mean"] is not None:
                    z_per_row.setdefault(key, []).append(agg["avg_abs_z_mean"])
        for key, row in rows.items():
            row.avg_abs_z = mean_std(z_per_row.get(key, []))[0]
            relu = rows.get(key[:3] + ("relu",))
            printed = paper.get(spec.key, {}).get(row.model, {}).get(row.act, {}) if row.dataset == "cifar10" else {}
            row.paper_avg_abs_z = printed.get("avg_abs_z")
            for label, cell in row.cells.items():
                cell.paper = printed.get("cw" if spec.attack == "cw" else label)
                if relu is not None and label in relu.cells and cell.mean is not None and relu.cells[label].mean is not None:
                    cell.gain_vs_relu = gain_vs_relu(cell.mean, relu.cells[label].mean)
        ordered = sorted(rows.values(), key=lambda r: (r.model, r.dataset, r.tag, r.act != "relu", r.act))
        if ordered:
            tables.append(Table(spec.key, spec.title, sorted(columns, key=_sort_key), ordered))
    if any(not r.data_official for t in tables for r in t.rows):
        notes.append("† made on data that is not the official release (e.g. the JPEG re-encoded CIFAR-10 of an "
                     "offline machine); compare with the paper with that in mind")
    return Report(tables, notes)


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
    return text


def _row_label(row: Row) -> list[str]:
    dagger = "" if row.data_official else " †"
    images = sorted({c.images for c in row.cells.values()})
    return [row.model, row.act, f"{row.dataset}{dagger}", row.tag, "/".join(map(str, images))]


def _z_text(row: Row) -> str:
    text = _fmt(row.avg_abs_z, 3)
    return text + (f" [paper {row.paper_avg_abs_z:g}]" if row.paper_avg_abs_z is not None else "")


def render_markdown(report: Report) -> str:
    out = []
    for t in report.tables:
        out.append(f"### {t.title}\n")
        head = ["model", "act", "data", "ckpt", "images", *t.columns, "avg abs Z"]
        out.append("| " + " | ".join(head) + " |")
        out.append("|" + "---|" * len(head))
        for r in t.rows:
            out.append("| " + " | ".join(_row_label(r) + [cell_text(r.cells.get(c)) for c in t.columns] + [_z_text(r)]) + " |")
        out.append("")
    out.append("Cells: successes out of the images attacked, mean ± std over repeats (gain vs ReLU = 1 - ours/ReLU) "
               "[the paper's number, out of 100 images].")
    out += [f"- {n}" for n in report.notes]
    return "\n".join(out) + "\n"


def render_csv(report: Report) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(["table", "model", "act", "dataset", "tag", "data_official", "setting", "successes_mean", "successes_std",
                "repeats", "images", "avg_abs_z", "gain_vs_relu", "paper"])
    for t in report.tables:
        for r in t.rows:
            for label in t.columns:
                c = r.cells.get(label)
                if c is not None:
                    w.writerow([t.key, r.model, r.act, r.dataset, r.tag, r.data_official, label, c.mean, c.std,
                                c.repeats, c.images, c.avg_abs_z, c.gain_vs_relu, c.paper])
    return buf.getvalue()


def render_json(report: Report) -> str:
    return json.dumps(report.to_dict(), indent=1) + "\n"


def render_rich(report: Report) -> list[Any]:
    from rich.markup import escape
    from rich.table import Table as RichTable

    out: list[Any] = []
    for t in report.tables:
        table = RichTable(title=t.title)
        for col in ["model", "act", "data", "ckpt", "images", *t.columns, "avg|Z|"]:
            table.add_column(col)
        for r in t.rows:
            texts = _row_label(r) + [cell_text(r.cells.get(c)) for c in t.columns] + [_z_text(r)]
            table.add_row(*map(escape, texts))
        out.append(table)
    out.append(escape("cells: successes out of the images attacked, mean ± std over repeats (gain vs ReLU) [paper, of 100]"))
    out += [escape(n) for n in report.notes]
    return out


RENDERERS = {"markdown": render_markdown, "csv": render_csv, "json": render_json}
