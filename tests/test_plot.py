"""The pictures of issue 26: the forest plot draws stats' differences and Welch CIs, the trade-off
plot clean and robust accuracy per checkpoint, the budget plot the worst case's mean and min-max
band over seeds; each checked against numbers computed here from the files the test made."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.plot import eps_bands, forest_panels, plot_eps_band, plot_forest, plot_tradeoff, tradeoff_points
from robench.stats import effect, seed_split
from tests.conftest import pgd_results, robust_by_hand
from tests.test_stats import fake_checkpoint, fake_result

pytest.importorskip("matplotlib")
PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
runner = CliRunner()


def test_forest_panels_are_stats_differences_and_welch_intervals(tmp_path):
    relu, sapl = [30.0, 31.5, 32.0], [26.0, 27.0, 28.5]
    for seed, (r, s) in enumerate(zip(relu, sapl)):
        fake_checkpoint(tmp_path, "lenet5", "relu", seed, r)
        fake_checkpoint(tmp_path, "lenet5", "sapl", seed, s)
    fake_checkpoint(tmp_path, "lenet5", "swish", 0, 31.0)  # one seed: a difference, no interval
    (panel,) = forest_panels(tmp_path, None, "relu", metric="clean error")
    assert (panel.metric, panel.reference, panel.reference_seeds) == ("clean error %", "relu", 3)
    rows = {r.group.act: r for r in panel.rows}
    assert set(rows) == {"sapl", "swish"}
    assert rows["sapl"].diff == pytest.approx(sum(sapl) / 3 - sum(relu) / 3)
    assert rows["sapl"].ci95 == pytest.approx(effect(sapl, relu)[0])
    assert rows["sapl"].ci95[1] < 0  # sapl's error is lower on every seed here
    assert rows["swish"].ci95 is None and rows["swish"].diff == pytest.approx(31.0 - sum(relu) / 3)
    assert plot_forest(tmp_path, None, tmp_path / "f.png", metric="clean error").read_bytes().startswith(PNG_MAGIC)


def test_forest_panels_take_attack_metrics_from_results(tmp_path):
    for seed, (r, s) in enumerate([(30, 40), (34, 38), (32, 45)]):
        fake_result(tmp_path, "relu", seed, [r])
        fake_result(tmp_path, "sapl", seed, [s])
    panels = forest_panels(None, tmp_path, "relu")
    successes = next(p for p in panels if p.metric.endswith("successes"))
    (row,) = successes.rows
    assert row.group.act == "sapl" and row.diff == pytest.approx(41.0 - 32.0)
    assert row.ci95 == pytest.approx(effect([40.0, 38.0, 45.0], [30.0, 34.0, 32.0])[0])
    with pytest.raises(Exception, match="no activation to compare with gelu"):
        forest_panels(None, tmp_path, "gelu")
    (best,) = [p for p in forest_panels(None, tmp_path, "best-of:relu,sapl") if p.metric.endswith("successes")]
    assert best.reference == "relu" and [r.group.act for r in best.rows] == ["sapl"]  # relu: fewer successes


def defended_sidecar(folder: Path, act: str, clean: float, robust: float) -> Path:
    fake_checkpoint(folder, "mlp", act, 0, 100 * (1 - clean), dataset="mnist")
    plain = folder / f"mlp-{act}-mnist-s0.json"
    meta = json.loads(plain.read_text())
    meta |= {"clean_test_accuracy": clean, "robust_accuracy": robust,
             "adversarial": {"method": "pgd", "norm": "linf", "eps": 0.1, "steps": 10,
                             "check": {"attack": "pgd", "steps": 10, "images": 500}}}
    side = folder / f"mlp-{act}-mnist-pgd0.1k10-s0.json"
    side.write_text(json.dumps(meta))
    side.with_suffix(".pt").write_bytes(b"")
    return side


def test_tradeoff_points_from_sidecars_and_from_results(tmp_path):
    ckpts = tmp_path / "ckpts"
    ckpts.mkdir()
    defended_sidecar(ckpts, "relu", 0.97, 0.88)
    defended_sidecar(ckpts, "sapl", 0.98, 0.90)  # the standard mlp-*-s0 sidecars beside them store no robust accuracy
    points = tradeoff_points(ckpts)
    assert [(p.name, p.act, p.model, p.clean, p.robust) for p in points] == [
        ("mlp-relu-mnist-pgd0.1k10-s0", "relu", "mlp mnist", 0.97, 0.88),
        ("mlp-sapl-mnist-pgd0.1k10-s0", "sapl", "mlp mnist", 0.98, 0.90)]
    assert points[0].threat == "linf 0.1, pgd-10 (training check)"
    results = pgd_results(tmp_path / "r", seeds=(0,))
    from_results = tradeoff_points(None, results, threat="linf 0.1")
    assert {p.act for p in from_results} == {"relu", "sapl"} and len(from_results) == 2
    for p in from_results:
        (src,) = results.glob(f"mlp-{p.act}-mnist-s0--*.json")
        assert p.robust == pytest.approx(robust_by_hand(src)[0.1])
        assert p.clean == json.loads(src.read_text())["checkpoint"]["clean_test_accuracy"] >= p.robust
    assert plot_tradeoff(ckpts, results, tmp_path / "t.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(Exception, match="only adversarially trained checkpoints store one"):
        tradeoff_points(ckpts, threat="l2")


def test_eps_bands_are_the_mean_and_the_lowest_and_highest_seed(tmp_path):
    results = pgd_results(tmp_path / "r")
    bands = {b.act: b for b in eps_bands(results, "mlp")}
    assert set(bands) == {"relu", "sapl"}
    for act, band in bands.items():
        seeds = [robust_by_hand(p) for p in sorted(results.glob(f"mlp-{act}-*.json"))]
        assert band.seeds == (0, 1, 2) and band.schedule == ""
        assert list(band.budgets) == sorted(seeds[0])
        for i, eps in enumerate(band.budgets):
            values = [s[round(eps, 9)] for s in seeds]
            assert band.mean[i] == pytest.approx(sum(values) / 3)
            assert (band.low[i], band.high[i]) == (pytest.approx(min(values)), pytest.approx(max(values)))
        assert any(lo < hi for lo, hi in zip(band.low, band.high))  # the seeds differ: a band, not a line
    assert bands["sapl"].mean[2] > bands["relu"].mean[2]  # at eps 0.1 the committed S-APL seeds are more robust
    assert plot_eps_band(results, "mlp", tmp_path / "e.png").read_bytes().startswith(PNG_MAGIC)
    with pytest.raises(Exception, match="no finished l2 results"):
        eps_bands(results, "mlp", "l2")


def test_a_training_schedule_in_the_tag_is_its_own_band():
    assert seed_split("pgd0.1k10-s3") == ("pgd0.1k10", 3)
    assert seed_split("s0") == ("", 0)
    assert seed_split("custom") == ("custom", None)


def test_plot_commands_write_pngs_and_fail_in_one_line(tmp_path):
    results = pgd_results(tmp_path / "r", seeds=(0, 1))
    for args in (["forest", "--results", str(results)], ["tradeoff", "--results", str(results), "--threat", "linf 0.05"],
                 ["eps-band", "--model", "mlp", "--results", str(results)]):
        out = tmp_path / f"{args[0]}.png"
        r = runner.invoke(app, ["plot", *args, "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert out.read_bytes().startswith(PNG_MAGIC)
    for args, message in ((["forest"], "needs --checkpoints, --results or both"),
                          (["tradeoff", "--checkpoints", str(tmp_path)], "only adversarially trained"),
                          (["eps-band", "--model", "lenet5", "--results", str(results)], "no finished linf results")):
        r = runner.invoke(app, ["plot", *args, "--out", str(tmp_path / "x.png")])
        lines = [line for line in r.output.splitlines() if line.strip()]
        assert r.exit_code == 1 and len(lines) == 1 and message in lines[0], r.output


def test_curve_attacks_come_from_the_specs():
    from robench.attacks import attack_names, get_attack
    from robench.plot import draws_curves, minimal_norm

    assert {n for n in attack_names() if draws_curves(get_attack(n))} == {"fmn", "pgd", "apgd", "apgd_t"}  # the specs: minimal-norm or monotone
    assert minimal_norm(get_attack("fmn")) and not minimal_norm(get_attack("pgd"))
    r = runner.invoke(app, ["plot", "curve", "--attack", "square", "--out", "x.png"])
    assert r.exit_code == 1 and "curves come from minimal-norm or iterative attacks, not square" in r.output
