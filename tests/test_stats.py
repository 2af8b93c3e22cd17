"""Seed statistics: grouping by training seed, the reference rules and Welch's t-test."""

from __future__ import annotations

import json
import math
import warnings
from pathlib import Path

import pytest
from typer.testing import CliRunner

from robench.cli import app
from robench.results import write_result
from robench.stats import (attack_groups, best_baseline, build_stats, checkpoint_groups, compare, holm, seed_from_tag,
                           welch)

runner = CliRunner()


def fake_checkpoint(folder, model, act, seed, error, epochs=8, dataset="cifar10"):
    """A sidecar with the fields stats reads; the .pt beside it is never opened when a sidecar exists."""
    stem = folder / f"{model}-{act}-{dataset}-s{seed}"
    stem.with_suffix(".pt").write_bytes(b"")
    meta = {"model_args": {"name": model, "act": act}, "dataset": dataset, "clean_test_error_pct": error,
            "history": [{"train_loss": 9.0}, {"train_loss": error / 100}],
            "train_config": {"epochs": epochs, "batch_size": 128, "lr": 0.05, "seed": seed, "augment": False,
                             "act_options": {}}}
    stem.with_suffix(".json").write_text(json.dumps(meta))


from tests.conftest import committed_result  # noqa: E402

TEMPLATE = committed_result("lenet5-relu-cifar10-s0--pixel1px-seed0", "seeds")


def fake_result(folder, act, seed, successes, status="complete", tag=None):
    """A committed result made over: another activation and checkpoint, one repeat per success count
    (whose avg|Z| is successes / 100, so that it is told apart)."""
    tag = tag or f"s{seed}"
    res = json.loads(TEMPLATE.read_text())
    (setting,) = res["settings"]
    setting["repeats"] = [setting["repeats"][0] | {"repeat": r, "successes": s, "avg_abs_z": s / 100}
                          for r, s in enumerate(successes)]
    setting.pop("aggregate")
    res |= {"act": act, "status": status, "checkpoint": res["checkpoint"] | {"path": f"checkpoints/lenet5-{act}-cifar10-{tag}.pt"}}
    path = folder / f"lenet5-{act}-cifar10-{tag}--pixel1px-seed0.json"
    write_result(path, {k: v for k, v in res.items() if k not in ("schema", "version")})
    return path


def test_welch_matches_the_formula():
    a, b = [1.0, 2.0, 4.0], [3.0, 5.0, 6.0, 9.0]
    ma, mb = sum(a) / 3, sum(b) / 4
    va = sum((x - ma) ** 2 for x in a) / 2
    vb = sum((x - mb) ** 2 for x in b) / 3
    t, p = welch(a, b)
    assert t == pytest.approx((ma - mb) / math.sqrt(va / 3 + vb / 4))
    assert 0 < p < 1
    scipy_stats = pytest.importorskip("scipy.stats")
    reference = scipy_stats.ttest_ind(a, b, equal_var=False)
    assert (t, p) == pytest.approx((float(reference.statistic), float(reference.pvalue)), rel=1e-9)
    assert welch([1.0], [2.0, 3.0]) == (None, None)  # one seed is no test
    assert welch([1.0, 1.0], [2.0, 2.0]) == (None, None)  # no spread on either side: undefined


def test_welch_with_one_side_of_identical_values_is_defined_and_silent():
    # three seeds with the same test error (the PSSiLU MLPs): scipy would warn of catastrophic cancellation
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        t, p = welch([1.76, 1.76, 1.76], [2.24, 2.23, 2.34, 2.28, 2.22])
    assert t is not None and t < 0 and p is not None and p < 0.01


def test_seed_from_tag():
    assert seed_from_tag("s3") == 3 and seed_from_tag("s12") == 12
    assert seed_from_tag("custom") is None and seed_from_tag("aug-s1") == 1  # aug: its scheme, kept apart below


def test_adversarially_trained_results_group_by_seed_apart_from_standard_ones(tmp_path):
    for seed, (plain, defended) in enumerate([(30, 10), (34, 12), (32, 11)]):
        fake_result(tmp_path, "relu", seed, [plain])
        fake_result(tmp_path, "relu", seed, [defended], tag=f"pgd0.1k10-s{seed}")
    groups, notes = attack_groups(tmp_path)
    successes = sorted((g for g in groups if g.metric.endswith("successes")), key=lambda g: g.schedule)
    assert not notes and len(successes) == 2
    assert [g.values for g in successes] == [{0: 30.0, 1: 34.0, 2: 32.0}, {0: 10.0, 1: 12.0, 2: 11.0}]
    assert successes[1].schedule.startswith("pgd0.1k10 checkpoints, ")


def test_checkpoint_groups_by_schedule_and_best_baseline(tmp_path):
    for seed, (r, p, s) in enumerate([(31.0, 30.0, 29.0), (32.0, 30.5, 29.5), (33.0, 31.0, 30.0)]):
        fake_checkpoint(tmp_path, "lenet5", "relu", seed, r)
        fake_checkpoint(tmp_path, "lenet5", "prelu", seed, p)
        fake_checkpoint(tmp_path, "lenet5", "sapl", seed, s)
    fake_checkpoint(tmp_path, "lenet5", "relu", 9, 50.0, epochs=1)  # another schedule: its own family
    (tmp_path / "junk.pt").write_bytes(b"not a checkpoint")
    groups, notes = checkpoint_groups(tmp_path)
    assert len(groups) == 8 and any("junk.pt" in n for n in notes)  # 4 cells x (error, final loss)
    loss = next(g for g in groups if g.act == "sapl" and g.metric == "final train loss")
    assert loss.values == {0: 0.29, 1: 0.295, 2: 0.30}  # the last epoch's loss, not the first
    rows = [r for r in compare(groups, best_baseline) if r.group.metric == "clean error %"]
    by_act = {(r.group.act, r.group.schedule.startswith("1 ")): r for r in rows}
    sapl, prelu, relu = by_act[("sapl", False)], by_act[("prelu", False)], by_act[("relu", False)]
    assert prelu.is_reference and sapl.reference == "prelu" and relu.reference == "prelu"
    assert sapl.mean == pytest.approx(29.5) and sapl.diff == pytest.approx(-1.0)
    assert sapl.t == pytest.approx(welch([29.0, 29.5, 30.0], [30.0, 30.5, 31.0])[0]) and sapl.t < 0
    lone = by_act[("relu", True)]
    assert lone.is_reference and lone.t is None  # alone in its schedule: nothing to test against


def test_best_baseline_never_picks_sapl_family(tmp_path):
    for seed in range(2):
        fake_checkpoint(tmp_path, "mlp", "sapl_positive", seed, 1.0 + seed, dataset="mnist")
        fake_checkpoint(tmp_path, "mlp", "relu", seed, 2.0 + seed, dataset="mnist")
    groups, _ = checkpoint_groups(tmp_path)
    assert best_baseline(groups).act == "relu"


def test_attack_groups_average_repeats_per_seed(tmp_path):
    for seed, (relu, sapl) in enumerate([(30, 40), (34, 38), (32, 45)]):
        fake_result(tmp_path, "relu", seed, [relu, relu + 2])
        fake_result(tmp_path, "sapl", seed, [sapl])
    fake_result(tmp_path, "sapl", 7, [1], status="partial")
    fake_result(tmp_path, "sapl", 0, [1], tag="custom")
    groups, notes = attack_groups(tmp_path)
    relu = next(g for g in groups if g.act == "relu" and g.metric.endswith("successes"))
    assert relu.values == {0: 31.0, 1: 35.0, 2: 33.0}
    z = next(g for g in groups if g.act == "relu" and g.metric.endswith("avg|Z|"))  # the paper's second metric
    assert z.values == pytest.approx({0: 0.31, 1: 0.35, 2: 0.33})
    assert len(notes) == 2
    rows = compare(groups, "relu")
    sapl = next(r for r in rows if r.group.act == "sapl" and r.group.metric.endswith("successes"))
    assert sapl.reference == "relu" and sapl.diff == pytest.approx(41.0 - 33.0) and sapl.p is not None


def test_stats_cli(tmp_path):
    ck, res = tmp_path / "ck", tmp_path / "res"
    ck.mkdir()
    res.mkdir()
    for seed in range(3):
        fake_checkpoint(ck, "lenet5", "relu", seed, 30.0 + seed)
        fake_checkpoint(ck, "lenet5", "sapl", seed, 29.0 + seed / 2)
        fake_result(res, "relu", seed, [30 + seed])
        fake_result(res, "sapl", seed, [40 + seed])
    r = runner.invoke(app, ["stats", "--checkpoints", str(ck), "--results", str(res), "--format", "json"])
    assert r.exit_code == 0, r.output
    data = json.loads(r.output)
    assert [len(t["rows"]) for t in data["tables"]] == [4, 4]  # error, final loss; successes, avg|Z|
    tables, _ = build_stats(ck, res)
    assert [r.reference for r in tables[0].rows] == [None, "relu"] * 2  # relu is the only baseline here
    assert "Welch" in runner.invoke(app, ["stats", "--checkpoints", str(ck), "--format", "markdown"]).output
    md = runner.invoke(app, ["stats", "--results", str(res), "--checkpoints", str(ck), "--format", "markdown"]).output
    rows = [line for line in md.splitlines() if line.startswith("| lenet5")]
    assert rows and {line.replace("\\|", "").count("|") for line in rows} == {16}  # avg|Z| does not split a cell
    r = runner.invoke(app, ["stats", "--checkpoints", str(ck), "--results", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "not found" in r.output and "Traceback" not in r.output
    r = runner.invoke(app, ["stats", "--checkpoints", str(tmp_path / "res")])
    assert r.exit_code == 1 and "nothing to compare" in r.output


def test_best_baseline_prefers_groups_with_most_seeds(tmp_path):
    for seed in range(3):
        fake_checkpoint(tmp_path, "mlp", "relu", seed, 2.0 + seed / 10, dataset="mnist")
    fake_checkpoint(tmp_path, "mlp", "leaky_relu", 0, 1.0, dataset="mnist")  # one lucky run
    groups, _ = checkpoint_groups(tmp_path)
    assert best_baseline([g for g in groups if g.metric == "clean error %"]).act == "relu"


@pytest.mark.parametrize("name,edit,message", [
    ("oops", lambda r: r.update(settings="oops"), "settings must be a list, got str"),
    ("nockpt", lambda r: r.pop("checkpoint"), "checkpoint is missing"),
    ("nan", lambda r: r["settings"][0]["repeats"][0].update(success_rate=float("nan")),
     "settings[0].repeats[0].success_rate must be a number, got NaN"),
    ("str", lambda r: r["settings"][0]["repeats"][0].update(successes="31"),
     "settings[0].repeats[0].successes must be an integer, got str"),
])
def test_stats_cli_skips_a_malformed_result_with_one_warning(tmp_path, name, edit, message):
    ck, res = tmp_path / "ck", tmp_path / "res"
    ck.mkdir()
    res.mkdir()
    for seed in range(2):
        fake_result(res, "relu", seed, [30 + seed])
        fake_result(res, "sapl", seed, [40 + seed])
    bad = fake_result(res, "sapl", 2, [1])
    broken = json.loads(bad.read_text())
    edit(broken)
    bad.write_text(json.dumps(broken))
    r = runner.invoke(app, ["stats", "--checkpoints", str(ck), "--results", str(res), "--format", "json"])
    assert r.exit_code == 0 and r.exception is None, r.output
    assert r.stderr.splitlines() == [f"robench: warning: skipped {bad}: {message}"]
    (table,) = json.loads(r.stdout)["tables"]
    assert {row["group"]["act"]: row["group"]["values"] for row in table["rows"]} == {
        "relu": {"0": 30.0, "1": 31.0}, "sapl": {"0": 40.0, "1": 41.0}}  # the bad file's seed 2 is left out


def test_effect_interval_matches_scipy_welch_and_d_its_formula():
    from scipy import stats as sps

    from robench.stats import effect

    a, b = [38.0, 41.0, 35.0, 44.0, 40.0], [31.0, 47.0, 36.0, 42.0, 45.0]
    ci, d = effect(a, b)
    want = sps.ttest_ind(a, b, equal_var=False).confidence_interval(0.95)
    assert ci == pytest.approx((want.low, want.high))
    va, vb = sps.tstd(a) ** 2, sps.tstd(b) ** 2
    assert d == pytest.approx((sum(a) / 5 - sum(b) / 5) / ((va + vb) / 2) ** 0.5)
    assert effect([1.0], [2.0, 3.0]) == (None, None) and effect([2.0, 2.0], [3.0, 3.0]) == (None, None)


def test_minimal_norm_results_give_a_median_distance_per_seed(tmp_path):
    def fmn(act, seed, distances):
        path = fake_result(tmp_path, act, seed, [0])
        res = json.loads(path.read_text())
        (setting,) = res["settings"]
        images = setting["repeats"][0]["images"][:len(distances)]
        for rec, dist in zip(images, distances):
            rec |= {"success": dist is not None, "l2": dist or 0.0}
        setting |= {"label": "min-l2", "repeats": [setting["repeats"][0] | {"images": images}]}
        res |= {"attack": "fmn"}
        write_result(path, {k: v for k, v in res.items() if k not in ("schema", "version")})

    fmn("relu", 0, [0.1, 0.3, 0.2])
    fmn("relu", 1, [0.4, None, 0.5])
    fmn("sapl", 0, [None, None, 0.1])  # fooled under half: no median
    groups, notes = attack_groups(tmp_path)
    (relu,) = [g for g in groups if g.act == "relu"]
    assert relu.metric == "fmn min-l2 median distance" and relu.values == {0: 0.2, 1: 0.5}
    assert not [g for g in groups if g.act == "sapl"] and any("under half" in n for n in notes)


def test_adversarially_trained_checkpoints_are_never_grouped_with_standard_seeds(tmp_path):
    fake_checkpoint(tmp_path, "lenet5", "relu", 0, 31.0)  # the same schedule and seed as the defended one below
    meta = json.loads((tmp_path / "lenet5-relu-cifar10-s0.json").read_text())
    meta["clean_test_error_pct"] = 49.0
    meta["train_config"] |= {"adv": "fgsm-rs", "adv_eps": 8 / 255, "adv_steps": 1, "adv_step_size": 10 / 255}
    adv = tmp_path / "lenet5-relu-cifar10-fgsmrs8of255-s0.json"
    adv.write_text(json.dumps(meta))
    adv.with_suffix(".pt").write_bytes(b"")
    groups, notes = checkpoint_groups(tmp_path)
    errors = [g for g in groups if g.metric == "clean error %"]
    assert not notes and sorted(g.values[0] for g in errors) == [31.0, 49.0]
    assert sum("adv fgsm-rs" in g.schedule for g in errors) == 1


def test_stats_names_a_mismatched_checkpoint_pair_it_leaves_out(tmp_path):
    fake_checkpoint(tmp_path, "lenet5", "relu", 0, 30.0)
    side = tmp_path / "lenet5-relu-cifar10-s0.json"
    side.write_text(json.dumps(json.loads(side.read_text()) | {"pt_sha256": "0" * 64}))  # the sidecar of other weights
    r = runner.invoke(app, ["stats", "--checkpoints", str(tmp_path)])
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 1 and len(lines) == 1, r.output
    assert "nothing to compare" in lines[0] and "lenet5-relu-cifar10-s0.pt: left out" in lines[0], r.output


def test_the_last_epoch_twin_of_an_adversarial_run_is_not_a_seed(tmp_path):
    fake_checkpoint(tmp_path, "lenet5", "relu", 0, 31.0)
    best = tmp_path / "lenet5-relu-cifar10-s0.json"
    meta = json.loads(best.read_text())
    last = tmp_path / "lenet5-relu-cifar10-s0-last.json"  # sorts before its best twin
    last.write_text(json.dumps(meta | {"clean_test_error_pct": 45.0}))
    last.with_suffix(".pt").write_bytes(best.with_suffix(".pt").read_bytes())
    groups, notes = checkpoint_groups(tmp_path)
    errors = [g for g in groups if g.metric == "clean error %"]
    assert not notes and [g.values for g in errors] == [{0: 31.0}]


def test_against_best_of_picks_the_lowest_mean_among_the_named_activations(tmp_path):
    """``--against best-of:silu,gelu`` (issue 26: each activation vs the best smooth one): the
    reference is the named activation with the lowest mean, never one outside the list."""
    for seed, (relu, silu, gelu, sapl) in enumerate([(30, 28, 25, 20), (32, 27, 26, 21), (31, 29, 24, 22)]):
        for act, n in (("relu", relu), ("silu", silu), ("gelu", gelu), ("sapl", sapl)):
            fake_result(tmp_path, act, seed, [n])
    (table,) = build_stats(None, tmp_path, against="best-of:silu,gelu")[0]
    successes = [r for r in table.rows if r.group.metric.endswith("successes")]
    assert {r.group.act: r.reference for r in successes} == {"relu": "gelu", "silu": "gelu", "gelu": None, "sapl": "gelu"}
    assert next(r for r in successes if r.group.act == "sapl").diff == pytest.approx(21.0 - 25.0)
    assert "best mean among silu, gelu" in table.rule
    r = runner.invoke(app, ["stats", "--checkpoints", str(tmp_path), "--results", str(tmp_path), "--against", "best-of:"])
    assert r.exit_code == 1 and "names no activation" in r.output and "Traceback" not in r.output


def test_holm_adjusts_each_family_by_hand():
    """Holm: the k-th smallest of m p-values times (m - k + 1), never below the one before, at most 1."""
    assert holm([0.01, None, 0.04, 0.03]) == pytest.approx([0.03, None, 0.06, 0.06])
    assert holm([0.5, 0.9]) == pytest.approx([1.0, 1.0]) and holm([None]) == [None]


def test_every_tested_row_carries_its_family_adjusted_p(tmp_path):
    for seed, (relu, silu, gelu) in enumerate([(30, 28, 20), (32, 27, 21), (31, 29, 19)]):
        for act, n in (("relu", relu), ("silu", silu), ("gelu", gelu)):
            fake_result(tmp_path, act, seed, [n])
    (table,) = build_stats(None, tmp_path)[0]
    for metric in {r.group.metric for r in table.rows}:
        rows = [r for r in table.rows if r.group.metric == metric]
        assert [r.p_holm for r in rows] == pytest.approx(holm([r.p for r in rows]), nan_ok=True)
        assert all(r.p_holm is None if r.p is None else r.p_holm >= r.p for r in rows)


def test_the_standard_evaluation_gives_robust_accuracy_per_seed_and_its_best_is_the_highest(tmp_path):
    """Issue 26: clean and robust accuracy per seed. Robust accuracy = clean accuracy x the share of
    attacked images left unfooled (the report's headline number); higher is better, so best-of picks
    the highest mean there and the lowest for successes."""
    from tests.conftest import committed_result

    template = json.loads(committed_result("mlp-relu-mnist-pgd0.1k10-s0--autoattack-linf-seed0-9d0116",
                                           "at-seeds-mlp").read_text())
    for act, fooled in (("silu", [10, 12]), ("gelu", [4, 6]), ("relu", [20, 22])):
        for seed, n in enumerate(fooled):
            res = json.loads(json.dumps(template))
            for setting in res["settings"]:
                rep = setting["repeats"][0]
                rep["images"] = [img | {"success": i < n} for i, img in enumerate(rep["images"])]
                rep["successes"] = n
                setting.pop("aggregate", None)
            res |= {"act": act, "checkpoint": res["checkpoint"] | {"path": f"checkpoints/mlp-{act}-mnist-pgd0.1k10-s{seed}.pt",
                                                                   "clean_test_accuracy": 0.98}}
            write_result(tmp_path / f"mlp-{act}-mnist-pgd0.1k10-s{seed}--autoattack.json",
                         {k: v for k, v in res.items() if k not in ("schema", "version")})
    (table,) = build_stats(None, tmp_path, against="best-of:silu,gelu")[0]
    images = len(template["settings"][0]["repeats"][0]["images"])
    robust = {r.group.act: r for r in table.rows if r.group.metric == "autoattack eps=0.1 robust accuracy %"}
    assert robust["gelu"].group.values == pytest.approx({0: 98 * (1 - 4 / images), 1: 98 * (1 - 6 / images)})
    assert robust["relu"].reference == "gelu" and robust["gelu"].is_reference  # the highest robust accuracy
    fooled = {r.group.act: r for r in table.rows if r.group.metric == "autoattack eps=0.1 successes"}
    assert fooled["relu"].reference == "gelu"  # and the fewest successes
    assert not any(r.group.metric.endswith("robust accuracy %") for r in build_stats(None, TEMPLATE.parent)[0][0].rows)
