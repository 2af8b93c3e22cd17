"""The HTML page: the report's own numbers, well-formed tables, nothing fetched from a network, text
escaped, plots and gallery embedded or named as missing, and a page a browser actually draws."""

from __future__ import annotations

import base64
import json
import re
import shutil
import subprocess
import sys
from datetime import datetime, timezone
from html.parser import HTMLParser
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robench import html_report
from robench.cli import app
from robench.html_report import render_html
from robench.tables import build_report
from tests.conftest import edit_json, pgd_results, robust_by_hand

ROOT = Path(__file__).parent.parent
ATTACKS = ROOT / "attacks"
NOW = datetime(2026, 1, 2, 3, 4, tzinfo=timezone.utc)
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
TABLE_TAGS = ("table", "thead", "tbody", "tr", "td", "th")


def committed(act: str, attack: str) -> str:
    """The committed lenet5 seed-0 result of ``attack`` on ``act`` (any settings hash in its name)."""
    (path,) = ATTACKS.glob(f"lenet5-{act}-cifar10-s0--{attack}-seed0*.json")
    return path.name


class Page(HTMLParser):
    """What the tests look at: table tags balanced, tables by their heading, every link and image."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.unbalanced: list[str] = []
        self.tags: list[str] = []
        self.links: list[str] = []  # every src and href
        self.images: list[str] = []
        self.styles: list[str] = []
        self.text: list[str] = []
        self.tables: dict[str, list[list[str]]] = {}  # title (the h3 before it) -> rows of cell texts
        self._heading: str | None = None
        self._title = ""
        self._cell: list[str] | None = None
        self._rows: list[list[str]] | None = None
        self._in_style = False
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        found = dict(attrs)
        self.links += [v or "" for k, v in attrs if k in ("src", "href")]
        if tag == "img":
            self.images.append(found.get("src") or "")
        if tag in TABLE_TAGS:
            self.stack.append(tag)
        if tag == "h3":
            self._heading = ""
        elif tag == "table":
            self._rows = self.tables.setdefault(self._title, [])
        elif tag == "tr" and self._rows is not None:
            self._rows.append([])
        elif tag in ("td", "th"):
            self._cell = []
        self._in_style = tag == "style"

    def handle_endtag(self, tag: str) -> None:
        if tag in TABLE_TAGS:
            if not self.stack or self.stack[-1] != tag:
                self.unbalanced.append(f"</{tag}> with {self.stack[-1:] or 'nothing'} open")
            else:
                self.stack.pop()
        if tag == "h3" and self._heading is not None:
            self._title, self._heading = self._heading, None
        elif tag in ("td", "th") and self._cell is not None and self._rows:
            self._rows[-1].append("".join(self._cell))
            self._cell = None
        elif tag == "table":
            self._rows = None
        self._in_style = False

    def handle_data(self, data: str) -> None:
        self.text.append(data)
        if self._in_style:
            self.styles.append(data)
        if self._heading is not None:
            self._heading += data
        if self._cell is not None:
            self._cell.append(data)

    def column(self, title: str, act: str, column: str) -> str:
        head, *rows = self.tables[title]
        row = next(r for r in rows if r[1] == act)
        return row[head.index(column)]


@pytest.fixture(scope="module")
def page() -> tuple[str, Page]:
    text = render_html(build_report(ATTACKS), ATTACKS, now=NOW)
    return text, Page(text)


def test_page_is_well_formed_and_offline(page):
    text, parsed = page
    assert text.startswith("<!DOCTYPE html>") and parsed.tags.count("html") == 1
    assert parsed.unbalanced == [] and parsed.stack == []
    assert all(link.startswith(("#", "data:image/png;base64,")) for link in parsed.links), parsed.links
    assert "http://" not in text and "https://" not in text
    assert "url(" not in "".join(parsed.styles) and "@import" not in "".join(parsed.styles)
    assert not any(tag in parsed.tags for tag in ("link", "iframe"))
    assert parsed.tags.count("script") == 1 and html_report.SORTER in text  # the inline sorter, nothing loaded


def test_page_holds_the_reports_numbers(page):
    _, parsed = page
    assert "Table 2: few-pixel DE attack, successes" in parsed.tables
    stored = json.loads((ATTACKS / committed("relu", "pixel1px")).read_text())
    agg = stored["settings"][0]["aggregate"]
    cell = parsed.column("Table 2: few-pixel DE attack, successes", "relu", "1px")
    assert cell.startswith(f"{agg['successes_mean']:.1f} ± {agg['successes_std']:.1f}")
    assert "[paper 61]" in cell  # the paper's Table 2, ReLU, 1 pixel
    sapl = parsed.column("Table 2: few-pixel DE attack, successes", "sapl", "1px")
    assert "%)" in sapl  # the gain vs ReLU, as the markdown gives it
    assert any(t.startswith("Robust accuracy") for t in parsed.tables)
    text = "".join(parsed.text)
    for note in build_report(ATTACKS).notes:
        assert note in text
    assert "lower bound" in text and "data_official" in text and "2026-01-02 03:04 UTC" in text
    assert f"{len(list(ATTACKS.glob('*.json')))} result files" in text
    assert f"torch versions the results were made with: {stored['versions']['torch']}" in text


def test_images_are_png_data_uris(page):
    _, parsed = page
    pytest.importorskip("matplotlib")
    assert parsed.images, "the FGSM plot is missing"
    for src in parsed.images:
        assert src.startswith("data:image/png;base64,")
        assert base64.b64decode(src.split(",", 1)[1]).startswith(PNG_MAGIC)


def _copy(results: Path, names: list[str], edit=None) -> Path:
    results.mkdir(parents=True)
    for name in names:
        data = json.loads((ATTACKS / name).read_text())
        if edit is not None:
            edit(data)
        (results / name).write_text(json.dumps(data))
    return results


def test_text_is_escaped_and_plots_name_their_extra(tmp_path, monkeypatch):
    monkeypatch.setattr(html_report, "have_matplotlib", lambda: False)
    results = _copy(tmp_path / "a<b>&c", [committed("relu", "fgsm")])
    text = render_html(build_report(results), results, now=NOW)
    parsed = Page(text)
    assert "b" not in parsed.tags and "a&lt;b&gt;&amp;c" in text and "a<b>&c" in "".join(parsed.text)
    assert parsed.images == []
    assert text.count("pip install 'robench[plot]'") == 1


def _stored(data: dict) -> None:
    for setting in data["settings"]:
        for rep in setting["repeats"]:
            rep["stored"] = "pixels"


def _unstored(data: dict) -> None:
    for setting in data["settings"]:
        for rep in setting["repeats"]:
            rep.pop("stored", None)
            for record in rep["images"]:
                record.pop("pixels", None)


def test_gallery_embeds_one_pixel_result_per_model(tmp_path, monkeypatch):
    monkeypatch.setattr(html_report, "have_matplotlib", lambda: False)
    names = [committed("relu", "pixel1px"), committed("sapl", "pixel1px"), committed("relu", "fgsm")]
    results = _copy(tmp_path / "r", names, _stored)
    drawn = []
    monkeypatch.setattr(html_report, "gallery_png", lambda path: drawn.append(path.name) or PNG_MAGIC)
    parsed = Page(render_html(build_report(results), results, now=NOW))
    assert drawn == [committed("relu", "pixel1px")]  # the ReLU row's DE result, not FGSM's
    assert parsed.images == ["data:image/png;base64," + base64.b64encode(PNG_MAGIC).decode()]


def test_gallery_attacks_are_the_l0_only_specs_in_table_order():
    assert html_report.pixel_attacks() == ["pixel", "sparse_rs"]  # the DE first, as the literal list had it


def test_gallery_absent_or_failing_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(html_report, "have_matplotlib", lambda: False)
    results = _copy(tmp_path / "r", [committed("relu", "pixel1px")], _stored)
    monkeypatch.setitem(sys.modules, "robench.gallery", None)  # `from .gallery import gallery` raises ImportError
    text = render_html(build_report(results), results, now=NOW)
    assert "needs robench.gallery" in text and Page(text).images == []
    monkeypatch.setattr(html_report, "gallery_png", lambda path: (_ for _ in ()).throw(
        html_report.ResultError("no data <here>")))
    text = render_html(build_report(results), results, now=NOW)
    assert f"no gallery of {committed('relu', 'pixel1px')}: no data &lt;here&gt;" in text
    plain = _copy(tmp_path / "plain", [committed("relu", "pixel1px")], _unstored)
    text = render_html(build_report(plain), plain, now=NOW)
    assert "stores its adversarials" in text and Page(text).images == []


def test_seed_statistics_only_when_asked(page, tmp_path, monkeypatch):
    monkeypatch.setattr(html_report, "have_matplotlib", lambda: False)
    assert 'id="seeds"' not in page[0]
    results = _copy(tmp_path / "r", [committed("relu", "fgsm")])
    parsed = Page(render_html(build_report(results), results, seeds=ATTACKS / "seeds", checkpoints=ROOT / "checkpoints",
                              now=NOW))
    assert parsed.unbalanced == [] and "Attack successes across training seeds (mean over repeats per seed)" in parsed.tables
    title = "Clean test error (%) and final training loss across training seeds (Tables 1 and 7, figure 3)"
    head, *rows = parsed.tables[title]
    assert head[-2:] == ["p", "p Holm"] and rows


def _one_error_line(r, text):
    lines = [line for line in r.output.splitlines() if line.strip()]
    return len(lines) == 1 and lines[0].startswith("robench: error:") and text in lines[0]


def test_cli_writes_the_page_and_refuses_an_unwritable_out(tmp_path):
    runner = CliRunner()
    out = tmp_path / "site" / "report.html"
    r = runner.invoke(app, ["report", "--results", str(ATTACKS), "--format", "html", "--out", str(out)])
    assert r.exit_code == 0, r.output
    assert f"wrote {out}" in r.output and Page(out.read_text()).tables
    r = runner.invoke(app, ["report", "--results", str(ATTACKS), "--format", "html", "--out", str(tmp_path)])
    assert r.exit_code == 1 and _one_error_line(r, f"cannot write report {tmp_path}: it is a folder"), r.output
    r = runner.invoke(app, ["report", "--results", str(ATTACKS), "--seeds", str(ATTACKS / "seeds")])
    assert r.exit_code == 1 and _one_error_line(r, "--seeds needs --format html"), r.output


def _chromium() -> str | None:
    return next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)


@pytest.mark.skipif(_chromium() is None, reason="no chromium, chromium-browser or google-chrome on PATH")
def test_a_browser_draws_the_page(page, tmp_path):
    import numpy as np
    from PIL import Image

    html_file, shot = tmp_path / "report.html", tmp_path / "shot.png"
    html_file.write_text(page[0])
    subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu", f"--user-data-dir={tmp_path / 'profile'}",
                    f"--screenshot={shot}", "--window-size=1280,2000", html_file.as_uri()],
                   capture_output=True, timeout=120, check=True)
    pixels = np.asarray(Image.open(shot).convert("L"), dtype=np.float64)
    assert pixels.shape == (2000, 1280)
    assert pixels.std() > 10 and (pixels < 250).mean() > 0.02  # text, borders and figures, not a blank page


def _checked(data: dict) -> None:
    """A result made over into a standard evaluation's: every repeat carries failure checks, one flagged."""
    for setting in data["settings"]:
        for rep in setting["repeats"]:
            rep["checks"] = [{"name": "zero_gradient", "flagged": True, "evidence": "no gradient on 3 images"},
                             {"name": "randomness", "flagged": False, "evidence": ""}]


def test_leaderboard_rows_hold_clean_robust_standard_and_flags(tmp_path):
    results = pgd_results(tmp_path / "r", seeds=(0,))
    (sapl,) = results.glob("mlp-sapl-*.json")
    edit_json(sapl, _checked)
    head, rows = html_report.leaderboard_rows(results)
    assert head[:5] == ["model", "act", "data", "ckpt", "clean %"] and head[-1] == "flags"
    assert "standard linf 0.1 %" in head and "linf 0.1 %" in head
    by_act = {row[1][0]: row for row in rows}
    assert [row[1][0] for row in rows] == ["relu", "sapl"]  # ReLU first, one row per checkpoint
    for act, row in by_act.items():
        (src,) = results.glob(f"mlp-{act}-*.json")
        stored = json.loads(src.read_text())
        assert float(row[4][1]) == pytest.approx(stored["checkpoint"]["clean_test_accuracy"])
        assert float(row[head.index("linf 0.1 %")][1]) == pytest.approx(robust_by_hand(src)[0.1], abs=1e-6)
    assert by_act["relu"][head.index("standard linf 0.1 %")] == ("", "")  # no standard evaluation, no number
    assert by_act["sapl"][head.index("standard linf 0.1 %")] == by_act["sapl"][head.index("linf 0.1 %")]
    assert by_act["relu"][-1] == ("", "")  # a result without checks shows no flag
    flags, count = by_act["sapl"][-1]
    assert "zero_gradient (eps=0.1)" in flags and "randomness" not in flags and count == "4"  # one per budget


def test_pictures_are_embedded_inline(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    monkeypatch.setattr(html_report, "gallery_png", lambda path: PNG_MAGIC)
    results = pgd_results(tmp_path / "r", seeds=(0, 1))
    text = render_html(build_report(results), results, seeds=results, checkpoints=None, now=NOW)
    section = text[text.index('<section id="pictures">'):text.index('<section id="plots">')]
    captions = re.findall(r"<figcaption>(.*?)</figcaption>", section)
    assert captions == ["clean against robust accuracy (worst case per threat), one point per checkpoint",
                        "robust accuracy against the linf budget on mlp; band: lowest to highest seed",
                        "difference to relu across training seeds, Welch 95 % CI"]
    for src in Page(section).images:
        assert base64.b64decode(src.removeprefix("data:image/png;base64,")).startswith(PNG_MAGIC)


def _leaderboard(text: str) -> tuple[list[str], list[list[str]]]:
    table = re.search(r'<table class="sortable" id="leaderboard-table">.*?</table>', text, re.S)
    head, *rows = Page(table.group(0)).tables[""]
    return head, rows


@pytest.mark.skipif(_chromium() is None, reason="no chromium, chromium-browser or google-chrome on PATH")
def test_clicking_a_leaderboard_header_sorts_its_rows_in_a_browser(tmp_path, monkeypatch):
    monkeypatch.setattr(html_report, "have_matplotlib", lambda: False)
    results = pgd_results(tmp_path / "r", seeds=(0, 1))
    text = render_html(build_report(results), results, now=NOW)
    head, rows = _leaderboard(text)
    col = head.index("linf 0.1 %")
    value = lambda row: float(row[col].split()[0])  # noqa: E731
    assert [value(r) for r in rows] != sorted(value(r) for r in rows)  # unsorted before a click

    def clicked(times: int) -> list[list[str]]:
        page = tmp_path / f"clicked{times}.html"
        click = f"document.querySelectorAll('#leaderboard-table th')[{col}].click();" * times
        page.write_text(text.replace("</body>", f"<script>{click}</script></body>"))
        dom = subprocess.run([_chromium(), "--headless", "--no-sandbox", "--disable-gpu",
                              f"--user-data-dir={tmp_path / 'profile'}", "--dump-dom", page.as_uri()],
                             capture_output=True, text=True, timeout=120, check=True).stdout
        return _leaderboard(dom)[1]

    once, twice = clicked(1), clicked(2)
    assert [value(r) for r in once] == sorted(value(r) for r in rows)
    assert [value(r) for r in twice] == sorted((value(r) for r in rows), reverse=True)
    assert sorted(map(tuple, once)) == sorted(map(tuple, rows))  # the same rows, moved whole
