"""One self-contained HTML page of a results folder: the report's tables, seed statistics, plots,
a gallery of adversarials per model and where the numbers come from.

The page works offline and loads nothing: the CSS is inline, figures are base64 PNG data URIs,
links are anchors within the page. Every text from a file is escaped. Cell texts are the markdown
report's (``report.grids``), so the page and ``robench report --format markdown`` never disagree.
Plots need the ``plot`` extra (matplotlib); without it the page says so where they would be.
"""

from __future__ import annotations

import base64
import html
import re
import tempfile
from collections import Counter
from collections.abc import Callable, Container, Sequence
from datetime import datetime, timezone
from importlib import metadata
from pathlib import Path
from typing import Any

from .attacks import attack_names, get_attack
from .attacks.spec import registered
from .errors import ResultError, RobenchError
from .tables import LEGEND, Report, grids
from .results import list_results

WRAP_STATS = (3, 6)  # the seed statistics' long columns: schedule, per seed

CSS = """
body { font: 14px/1.45 system-ui, -apple-system, "Segoe UI", Roboto, "DejaVu Sans", sans-serif;
       color: #1b1b1b; background: #fff; margin: 0 auto; padding: 1.5em 2em 3em; max-width: 1400px; }
h1 { font-size: 1.6em; margin: 0 0 .2em; }
h2 { font-size: 1.3em; margin: 1.8em 0 .5em; padding-bottom: .2em; border-bottom: 2px solid #d0d7de; }
h3 { font-size: 1.05em; margin: 1.4em 0 .4em; }
.meta, .rule, .none { color: #57606a; }
nav a { margin-right: 1em; }
a { color: #0550ae; }
.scroll { overflow-x: auto; }
table { border-collapse: collapse; margin: .3em 0 .8em; }
th, td { border: 1px solid #8c959f; padding: 3px 8px; text-align: left; vertical-align: top; }
th { background: #eaeef2; white-space: nowrap; }
tbody tr:nth-child(even) { background: #f6f8fa; }
td { font-variant-numeric: tabular-nums; white-space: nowrap; }
td.wrap { white-space: normal; }
.paper { color: #6e7781; white-space: nowrap; }
.bound { color: #9a6700; font-weight: 600; }
ul { padding-left: 1.4em; }
li { margin: .15em 0; }
.warn { color: #9a3412; }
.caveat { background: #fff8c5; border: 1px solid #d4a72c; padding: .6em 1em; border-radius: 4px; }
figure { display: inline-block; margin: .4em 1.2em .8em 0; vertical-align: top; }
figure img { max-width: 100%; border: 1px solid #d0d7de; }
figcaption { color: #57606a; font-size: .9em; }
table.sortable th { cursor: pointer; }
table.sortable th[aria-sort="ascending"]::after { content: " \\25B2"; }
table.sortable th[aria-sort="descending"]::after { content: " \\25BC"; }
"""

# Sorts a table.sortable by the clicked column (again: the other way), by each cell's data-sort, else
# its text; numbers as numbers, blank cells last either way. Inline, so the page stays offline.
SORTER = """
document.querySelectorAll("table.sortable").forEach(function (table) {
  var heads = table.tHead.rows[0].cells;
  Array.prototype.forEach.call(heads, function (th, col) {
    th.addEventListener("click", function () {
      var down = th.getAttribute("aria-sort") === "ascending";
      Array.prototype.forEach.call(heads, function (h) { h.removeAttribute("aria-sort"); });
      th.setAttribute("aria-sort", down ? "descending" : "ascending");
      var key = function (row) {
        var cell = row.cells[col], v = cell.getAttribute("data-sort");
        return v === null ? cell.textContent.trim() : v;
      };
      var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
      rows.sort(function (a, b) {
        var x = key(a), y = key(b), blank = (x === "") - (y === "");
        if (blank) { return blank; }
        var nx = Number(x), ny = Number(y);
        var c = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y);
        return down ? -c : c;
      });
      rows.forEach(function (row) { body.appendChild(row); });
    });
  });
});
"""

CAVEAT = ("Each success count is a lower bound: an attack that fails on an image proves nothing about it, and a "
          "stronger attack, more queries or another seed may fool more images. Robust accuracies are therefore "
          "upper bounds.")
NOT_OFFICIAL = ("made on data that is not the official release (provenance.data_official false; e.g. the JPEG "
                "re-encoded CIFAR-10 of an offline machine, see the README, \"Set up a fresh machine\"): pixel "
                "values differ from the paper's, so compare with its numbers with that in mind")

# the parts of a cell text the page sets apart: the paper's number, and a lower-bound mark
_DECOR = re.compile(r"(?P<paper>\[paper [^\]]*\])|(?P<bound>‡\S+)")


def render_html(report: Report, results_dir: str | Path, seeds: str | Path | None = None,
                checkpoints: str | Path | None = "checkpoints", against: str = "relu",
                now: datetime | None = None) -> str:
    """The page for ``report``, built from ``results_dir``. With ``seeds`` (a multi-seed results
    folder), it adds the seed statistics of ``robench stats`` over ``checkpoints`` and ``seeds``."""
    results_dir = Path(results_dir)
    skipped: list[Path] = []
    results = list_results(results_dir, lambda path, err: skipped.append(path))  # build_report already warned
    now = now or datetime.now(timezone.utc)
    parts = [
        "<!DOCTYPE html>",
        '<html lang="en"><head><meta charset="utf-8">',
        '<meta name="viewport" content="width=device-width, initial-scale=1">',
        f"<title>robench report: {_e(results_dir)}</title>",
        f"<style>{CSS}</style></head><body>",
        "<h1>robench report</h1>",
        f'<p class="meta">{_e(results_dir)}, rendered {_e(now.strftime("%Y-%m-%d %H:%M %Z"))} '
        f"by robench {_e(_version('robench'))}</p>",
        '<nav><a href="#provenance">Provenance</a><a href="#tables">Tables</a>'
        + ('<a href="#seeds">Seed statistics</a>' if seeds is not None else "")
        + '<a href="#leaderboard">Leaderboard</a><a href="#pictures">Pictures</a>'
        + '<a href="#plots">Plots</a><a href="#gallery">Gallery</a></nav>',
        _provenance_section(results_dir, results, skipped),
        _tables_section(report),
    ]
    if seeds is not None:
        parts.append(_seeds_section(checkpoints, seeds, against))
    parts.append(_leaderboard_section(results_dir))
    parts.append(_pictures_section(results_dir, checkpoints if seeds is not None else None, seeds, against))
    models = sorted({r.model for t in report.tables for r in t.rows})
    parts.append(_plots_section(report, results_dir, results, models))
    parts.append(_gallery_section(results_dir, results, models))
    parts.append(f"<script>{SORTER}</script>")
    parts.append("</body></html>\n")
    return "\n".join(parts)


def _e(text: Any) -> str:
    return html.escape(str(text), quote=True)


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "(not installed)"


def _cell(text: str) -> str:
    """A cell text, escaped, with the paper's number and a lower-bound mark in their own spans."""
    out, pos = [], 0
    for m in _DECOR.finditer(text):
        out += [_e(text[pos:m.start()]), f'<span class="{m.lastgroup}">{_e(m.group(0))}</span>']
        pos = m.end()
    return "".join(out) + _e(text[pos:])


def _table(head: Sequence[str], rows: Sequence[Sequence[str]], cell: Callable[[str], str] = _e,
           wrap: Container[int] = ()) -> str:
    """A bordered table; only the columns in ``wrap`` break their text over lines."""
    th = "".join(f"<th>{_e(h)}</th>" for h in head)
    td = ['<td class="wrap">' if i in wrap else "<td>" for i in range(len(head))]
    body = "\n".join("<tr>" + "".join(f"{td[i]}{cell(c)}</td>" for i, c in enumerate(row)) + "</tr>" for row in rows)
    return f'<div class="scroll"><table>\n<thead><tr>{th}</tr></thead>\n<tbody>\n{body}\n</tbody></table></div>'


def _items(lines: Sequence[str], cls: str = "") -> str:
    """A list of lines that are HTML already (escaped by the caller)."""
    if not lines:
        return ""
    attr = f' class="{cls}"' if cls else ""
    return "<ul>" + "".join(f"<li{attr}>{line}</li>" for line in lines) + "</ul>"


def _counted(counter: Counter) -> str:
    return ", ".join(f"{_e(value)} ({n} file{'s' if n != 1 else ''})" for value, n in sorted(counter.items()))


def _provenance_section(results_dir: Path, results: list[tuple[Path, dict[str, Any]]], skipped: list[Path]) -> str:
    finished = sum(res["status"] == "complete" for _, res in results)
    lines = [f"{len(results)} result file{'s' if len(results) != 1 else ''} in {_e(results_dir)}, {finished} finished"
             + (f"; {len(skipped)} unreadable, left out: " + ", ".join(_e(p.name) for p in skipped) if skipped else "")]
    unofficial = sum(not res["provenance"]["data_official"] for _, res in results)
    if unofficial:
        lines.append(f"{unofficial} of {len(results)} results were {_e(NOT_OFFICIAL)} (marked † in the tables)")
    else:
        lines.append("every result was made on the official data release")
    data = Counter(f"{res['dataset']} {'official' if res['provenance']['data_official'] else 'not official'}"
                   + (f", sha256 {str(res['provenance']['data_sha256'])[:12]}…" if res["provenance"].get("data_sha256")
                      else "")
                   for _, res in results)
    lines.append(f"data: {_counted(data)}")
    for package in ("robench", "torch"):
        found = Counter(str(_versions(res).get(package, "not recorded")) for _, res in results)
        lines.append(f"{package} versions the results were made with: {_counted(found) or '-'}")
    return ('<section id="provenance"><h2>Provenance</h2>'
            f'<p class="caveat">{_e(CAVEAT)}</p>{_items(lines)}</section>')


def _versions(result: dict[str, Any]) -> dict[str, Any]:
    """The library versions a result records (outside the checked schema: tolerate their absence)."""
    versions = result.get("versions")
    return versions if isinstance(versions, dict) else {}


def _tables_section(report: Report) -> str:
    parts = ['<section id="tables"><h2>Tables</h2>']
    for title, head, rows in grids(report):
        parts += [f"<h3>{_e(title)}</h3>", _table(head, rows, _cell, wrap=range(4, len(head)))]  # labels stay whole
    parts.append(f"<p>{_e(LEGEND)}</p>")
    parts.append(_items([_e(n) for n in report.notes]))
    parts.append(_items([f"warning: {_e(f)}" for f in report.flags], "warn"))
    parts.append("</section>")
    return "\n".join(parts)


def _seeds_section(checkpoints: str | Path | None, seeds: str | Path, against: str) -> str:
    from .stats import HEAD, HOLM_NOTE, build_stats, row_texts

    tables, notes = build_stats(checkpoints, seeds, against)
    parts = ['<section id="seeds"><h2>Seed statistics</h2>',
             f'<p class="meta">checkpoints {_e(checkpoints)}, results {_e(seeds)}</p>']
    if not tables:
        parts.append('<p class="none">nothing to compare in these folders</p>')
    for t in tables:
        parts += [f"<h3>{_e(t.title)}</h3>", f'<p class="rule">Welch\'s t-test, two-sided; {_e(t.rule)}. {_e(HOLM_NOTE)}</p>',
                  _table(HEAD, [row_texts(r) for r in t.rows], wrap=WRAP_STATS)]
    parts += [_items([_e(n) for n in notes]), "</section>"]
    return "\n".join(parts)


def have_matplotlib() -> bool:
    try:
        import matplotlib  # noqa: F401
    except ImportError:
        return False
    return True


def _png(draw: Callable[[Path], Any]) -> bytes:
    """The PNG that ``draw(path)`` writes, read back from a temporary folder."""
    with tempfile.TemporaryDirectory(prefix="robench-html-") as tmp:
        out = Path(tmp) / "figure.png"
        draw(out)
        return out.read_bytes()


def _figure(png: bytes, caption: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return (f'<figure><img src="data:image/png;base64,{data}" alt="{_e(caption)}">'
            f"<figcaption>{_e(caption)}</figcaption></figure>")


def _quiet(path: Path, err: ResultError) -> None:
    """Malformed files were already reported once, by build_report."""


def _plots_section(report: Report, results_dir: Path, results: list[tuple[Path, dict[str, Any]]],
                   models: list[str]) -> str:
    parts = ['<section id="plots"><h2>Plots</h2>']
    if not have_matplotlib():
        parts.append("<p class=\"none\">Plots need matplotlib, which is not installed: pip install 'robench[plot]'.</p>")
        return "\n".join(parts + ["</section>"])
    from .plot import draws_curves, plot_curve, plot_eps

    fgsm = next((t for t in report.tables if t.key == "table3_fgsm"), None)
    known = set(attack_names())
    curves = sorted({(res["model"], res["attack"], res["attack_config"].get("norm")) for _, res in results
                     if res["attack"] in known and draws_curves(get_attack(res["attack"])) and res["status"] == "complete"})
    for model in models:
        figures = []
        if fgsm is not None and any(r.model == model for r in fgsm.rows):
            png = _png(lambda out: plot_eps(results_dir, model, out, _quiet))
            figures.append(_figure(png, f"FGSM successes against epsilon on {model}, mean ± std over repeats"))
        for _, attack, norm in (c for c in curves if c[0] == model):
            png = _png(lambda out: plot_curve(results_dir, attack, norm, model, out, _quiet))
            figures.append(_figure(png, f"{attack.upper()} {norm}: success rate against budget on {model}"))
        parts.append(f"<h3>{_e(model)}</h3>")
        parts.append("".join(figures) or '<p class="none">no FGSM, PGD or FMN results to plot</p>')
    return "\n".join(parts + ["</section>"])


def _pct(value: float | None) -> tuple[str, str]:
    """A fraction as a cell: its text in % and the number it sorts by."""
    return ("", "") if value is None else (f"{100 * value:.1f}", f"{value:.6f}")


def _robust_cell(cell: Any, clean: float | None) -> tuple[str, str]:
    """Robust accuracy on the test set (%, ``≤`` where none of the threat's strongest attacks ran)
    with the images left of those attacked, and the fraction it sorts by."""
    from .leaderboard import robust_accuracy

    if cell is None:
        return "", ""
    value = robust_accuracy(cell, clean)
    text, key = _pct(value) if value is not None else (f"{cell.robust}/{cell.images} left", "")
    if value is not None:
        text += f" ({cell.robust}/{cell.images})"
    return ("" if cell.strong else "≤") + text, key


def leaderboard_rows(results_dir: str | Path) -> tuple[list[str], list[list[tuple[str, str]]]]:
    """The leaderboard's header and rows of (cell text, sort key; "" to sort by the text)."""
    from .leaderboard import build_board

    board = build_board(results_dir, _quiet)
    head = ["model", "act", "data", "ckpt", "clean %", *(f"standard {t.label} %" for t in board.standard_columns),
            *(f"{t.label} %" for t in board.threat_columns), "flags"]
    rows = []
    for r in board.rows:
        flags = "; ".join(name for name, _ in r.flags)
        rows.append([(r.model, ""), (r.act, ""), (r.dataset, ""), (r.tag, ""), _pct(r.clean),
                     *(_robust_cell(r.standard.get(t), r.clean) for t in board.standard_columns),
                     *(_robust_cell(r.worst.get(t), r.clean) for t in board.threat_columns),
                     (flags, str(len(r.flags)) if r.flags else "")])
    return head, rows


def _leaderboard_section(results_dir: Path) -> str:
    head, rows = leaderboard_rows(results_dir)
    th = "".join(f'<th scope="col">{_e(h)}</th>' for h in head)
    body = "\n".join("<tr>" + "".join(f'<td data-sort="{_e(key)}">{_e(text)}</td>' if key else f"<td>{_e(text)}</td>"
                                      for text, key in row) + "</tr>" for row in rows)
    return ('<section id="leaderboard"><h2>Leaderboard</h2>'
            '<p class="rule">One row per checkpoint; click a column\'s header to sort by it, again for the other way. '
            "Robust accuracy on the test set: clean accuracy × the share of attacked (correctly classified) images "
            "that no attack fooled; the standard columns count the standard evaluation alone, the others the worst "
            "case over every attack (≤: none of the threat's strongest attacks ran). Flags: attack-failure checks that "
            "fired (stored with the standard evaluation) and gradient-masking hints.</p>"
            f'<div class="scroll"><table class="sortable" id="leaderboard-table">\n<thead><tr>{th}</tr></thead>\n'
            f"<tbody>\n{body}\n</tbody></table></div></section>")


def _pictures_section(results_dir: Path, checkpoints: str | Path | None, seeds: str | Path | None,
                      against: str) -> str:
    """Clean against robust accuracy, robust accuracy against the budget per model and norm, and
    (with seed results) the forest plot of differences to ``against``."""
    parts = ['<section id="pictures"><h2>Pictures</h2>']
    if not have_matplotlib():
        parts.append("<p class=\"none\">Pictures need matplotlib, which is not installed.</p>")
        return "\n".join(parts + ["</section>"])
    from .leaderboard import build_board
    from .plot import plot_eps_band, plot_forest, plot_tradeoff

    drawings: list[tuple[str, Callable[[Path], Any]]] = [
        ("clean against robust accuracy (worst case per threat), one point per checkpoint",
         lambda out: plot_tradeoff(checkpoints, results_dir, out, on_error=_quiet))]
    rows = build_board(results_dir, _quiet).rows
    for model, norm in sorted({(r.model, t.norm) for r in rows for t in r.worst}):
        if max(sum(t.norm == norm for t in r.worst) for r in rows if r.model == model) > 1:
            drawings.append((f"robust accuracy against the {norm} budget on {model}; band: lowest to highest seed",
                             lambda out, m=model, n=norm: plot_eps_band(results_dir, m, out, n, _quiet)))
    if seeds is not None:
        drawings.append((f"difference to {against} across training seeds, Welch 95 % CI",
                         lambda out: plot_forest(checkpoints, seeds, out, against, on_error=_quiet)))
    for caption, draw in drawings:
        try:
            parts.append(_figure(_png(draw), caption))
        except RobenchError as err:
            parts.append(f'<p class="none">no picture of {_e(caption)}: {_e(err)}</p>')
    return "\n".join(parts + ["</section>"])


def stores_adversarials(result: dict[str, Any]) -> bool:
    """Whether every repeat of ``result`` kept its adversarials: a ``stored`` mark, or painted
    pixels in every image record (what ``robench.gallery`` rebuilds them from)."""
    repeats = [rep for s in result["settings"] for rep in s["repeats"]]
    return bool(repeats) and all(rep.get("stored") or (rep["images"] and all("pixels" in r for r in rep["images"]))
                                 for rep in repeats)


def pixel_attacks() -> list[str]:
    """The attacks whose adversarials a gallery shows: those whose only threat is L0 (few pixels),
    in the report's table order (the DE before Sparse-RS)."""
    return [s.name for s in sorted(registered(), key=lambda s: s.order) if set(s.threats) == {"l0"}]


def gallery_sources(results: list[tuple[Path, dict[str, Any]]]) -> dict[str, Path]:
    """Per model, one finished pixel-attack result that stores its adversarials: in the report's
    table order of the attacks, the ReLU row first, then by file name."""
    found: dict[str, Path] = {}
    pixel = pixel_attacks()
    ranked = sorted((pixel.index(res["attack"]), res["act"] != "relu", path.name, path, res["model"])
                    for path, res in results
                    if res["attack"] in pixel and res["status"] == "complete" and stores_adversarials(res))
    for *_, path, model in ranked:
        found.setdefault(model, path)
    return found


def gallery_png(result: Path) -> bytes:
    """Clean/adversarial pairs of one result, from ``robench.gallery`` (ImportError while it is absent)."""
    from .gallery import gallery

    return _png(lambda out: gallery(result, out, images=8))


def _gallery_section(results_dir: Path, results: list[tuple[Path, dict[str, Any]]], models: list[str]) -> str:
    parts = ['<section id="gallery"><h2>Gallery</h2>']
    sources = gallery_sources(results)
    for model in models:
        parts.append(f"<h3>{_e(model)}</h3>")
        source = sources.get(model)
        if source is None:
            parts.append('<p class="none">no finished pixel-attack result of this model stores its adversarials '
                         f"(store them with python -m robench.migrate --replay {_e(results_dir)})</p>")
            continue
        try:
            png = gallery_png(source)
        except ImportError:
            parts.append(f'<p class="none">a gallery of {_e(source.name)} needs robench.gallery, '
                         "which this robench does not have yet</p>")
            continue
        except RobenchError as err:  # e.g. the dataset its clean images come from is not on this machine
            parts.append(f'<p class="none">no gallery of {_e(source.name)}: {_e(err)}</p>')
            continue
        parts.append(_figure(png, f"clean and adversarial images from {source.name}"))
    return "\n".join(parts + ["</section>"])
