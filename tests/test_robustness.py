"""Worst case per threat model, lower-bound marks and masking flags, from hand-made results."""

from pathlib import Path

import pytest

from robench.attacks import get_attack
from robench.attacks.metrics import aggregate
from robench.config import config_to_dict
from robench.tables import build_report, render_markdown
from robench.results import write_result
from robench.robustness import robust_test_accuracy

IMAGES = list(range(10, 20))


def _result(folder: Path, attack: str, options: dict, fooled_per_repeat: dict[str, list[set[int]]],
            act: str = "relu", distances: dict[int, float] | None = None) -> None:
    """A finished result whose setting ``label`` fools the given test indices in each repeat."""
    spec = get_attack(attack)
    config = spec.config_cls(**options)
    settings = []
    for label, setting in spec.settings(config):
        repeats = []
        for r, fooled in enumerate(fooled_per_repeat[label]):
            d = distances or {}
            records = [{"index": i, "label": 0, "adv_label": 1 if i in fooled else 0, "success": i in fooled,
                        "p_true_clean": 0.9, "p_true_adv": 0.4 if i in fooled else 0.9, "abs_z": 0.5,
                        "linf": d.get(i, 0.0), "l2": d.get(i, 0.0), "l1": d.get(i, 0.0), "l0_pixels": int(d.get(i, 0)),
                        "queries": 1} for i in IMAGES]
            repeats.append({"attacked": len(IMAGES), "successes": len(fooled), "success_rate": len(fooled) / len(IMAGES),
                            "avg_abs_z": 0.5 if fooled else None, "repeat": r, "seed": r, "images": records})
        settings.append({"label": label, "config": config_to_dict(setting), "repeats": repeats,
                         "aggregate": aggregate(repeats)})
    name = f"lenet5-{act}-cifar10-s0--{attack}{spec.tag(config)}-seed0.json"
    write_result(folder / name, {
        "status": "complete", "model": "lenet5", "act": act, "dataset": "cifar10", "attack": attack,
        "attack_config": config_to_dict(config), "run": {}, "seed": 0,
        "checkpoint": {"path": f"checkpoints/lenet5-{act}-cifar10-s0.pt", "sha256": "0" * 64},
        "provenance": {"data_official": True}, "repeats_per_setting": len(repeats), "settings": settings,
        "image_set": {"requested": len(IMAGES), "selection_seed": 0, "indices": IMAGES, "drawn": len(IMAGES)}})


def test_robust_accuracy_is_the_union_over_attacks_and_repeats(tmp_path):
    _result(tmp_path, "pixel", {"pixels": 3}, {"3px": [{10, 11}, {11, 12}]})
    _result(tmp_path, "sparse_rs", {"pixels": 3}, {"3px": [{10, 13, 14, 15, 16}]})
    rep = build_report(tmp_path)
    assert rep.robust_columns == ["l0 3px"]
    (row,) = rep.robust_rows
    cell = row.cells["l0 3px"]
    assert (cell.robust, cell.images) == (10 - 7, 10)  # {10..16} fooled by someone
    assert cell.strongest == "sparse_rs" and cell.strongest_fooled == 5
    # the DE's 2 ± 0 is a lower bound: Sparse-RS finds 5 on the same images
    (de,) = [t for t in rep.tables if t.ident == "pixel"]
    assert de.rows[0].cells["3px"].lower_bound_by == "sparse_rs"
    (rs,) = [t for t in rep.tables if t.ident == "sparse_rs"]
    assert rs.rows[0].cells["3px"].lower_bound_by is None
    md = render_markdown(rep)
    assert "‡sparse_rs" in md and "3/10 [sparse_rs+]" in md


def test_a_close_count_is_not_marked_a_lower_bound(tmp_path):
    _result(tmp_path, "pixel", {"pixels": 1}, {"1px": [{10, 11, 12}]})
    _result(tmp_path, "sparse_rs", {"pixels": 1}, {"1px": [{10, 11, 12, 13}]})
    rep = build_report(tmp_path)
    assert all(c.lower_bound_by is None for t in rep.tables for r in t.rows for c in r.cells.values())


def test_fmn_distances_give_successes_at_every_budget_and_the_median(tmp_path):
    dist = {10: 0.5 / 255, 11: 1.5 / 255, 12: 3 / 255, 13: 7 / 255, 14: 20 / 255}
    _result(tmp_path, "fmn", {"norm": "linf"}, {"min-linf": [set(dist)]}, distances=dist)
    _result(tmp_path, "pgd", {"epsilons": (2 / 255,)}, {"eps=2/255": [{10, 11, 19}]})
    rep = build_report(tmp_path)
    (fmn,) = [t for t in rep.tables if t.ident == "fmn-linf"]
    cells = fmn.rows[0].cells
    assert {k: c.mean for k, c in cells.items()} == {"linf 1/255": 1, "linf 2/255": 2, "linf 4/255": 3, "linf 8/255": 4}
    assert fmn.rows[0].median_distance is None  # 5 of 10 fooled: the median image is not
    robust = rep.robust_rows[0].cells["linf 2/255"]
    assert (robust.robust, robust.images) == (10 - 3, 10)  # {10, 11} by both, 19 by PGD alone


def test_sanity_flags(tmp_path):
    _result(tmp_path, "fgsm", {"epsilons": (0.01, 0.02)}, {"eps=0.01": [{10, 11, 12, 13}], "eps=0.02": [{10, 11}]})
    _result(tmp_path, "pgd", {"epsilons": (0.01, 0.02)}, {"eps=0.01": [{10}], "eps=0.02": [{10, 11, 12, 13, 14}]})
    rep = build_report(tmp_path)
    text = "\n".join(rep.flags)
    assert "pgd-linf (1) succeeds less often than fgsm (4)" in text
    assert not any("successes fall" in f for f in rep.flags)  # 1 -> 5 is monotone
    _result(tmp_path, "pgd", {"epsilons": (0.03, 0.04)}, {"eps=0.03": [{10, 11, 12, 13}], "eps=0.04": [{10}]}, act="sapl")
    _result(tmp_path, "square", {"epsilons": (0.03,)}, {"eps=0.03": [{10, 11, 12, 13, 14, 15}]}, act="sapl")
    _result(tmp_path, "sparse_rs", {"pixels": 1}, {"1px": [{10, 11, 12, 13}]}, act="sapl")
    _result(tmp_path, "fmn", {"norm": "l0"}, {"min-l0": [{10}]}, act="sapl", distances={10: 1})
    flags = "\n".join(build_report(tmp_path).flags)
    assert "successes fall from 4 at linf 0.03 to 1 at linf 0.04" in flags
    assert "black-box square (6) beats every white-box attack (best pgd-linf, 4): gradients may be masked" in flags
    assert "sparse_rs" not in flags  # in L0 a score-based search beats gradients on any model


def test_a_minimal_norm_run_that_leaves_images_unfooled_is_flagged(tmp_path):
    # 9 of 10 fooled at some distance: 1 left is over 5 %, flagged; all 10 fooled on sapl: not flagged.
    dist = {i: 0.1 * (i - 9) for i in IMAGES}
    _result(tmp_path, "fmn", {"norm": "l2"}, {"min-l2": [set(IMAGES[:9])]}, distances=dist)
    _result(tmp_path, "fmn", {"norm": "l2"}, {"min-l2": [set(IMAGES)]}, act="sapl", distances=dist)
    _result(tmp_path, "fmn", {"norm": "l2", "epsilon": 0.3}, {"l2=0.3": [{10, 11, 12}]}, act="apl", distances=dist)
    flags = build_report(tmp_path).flags
    assert flags == ["lenet5/cifar10/s0/relu fmn-l2: 1 of 10 images not fooled at any distance; the attack stopped "
                     "short, so its l2 successes at every budget, and robust accuracy resting on them, flatter the "
                     "model (check with another l2 attack)"]  # a budgeted run (apl) leaves images by design


@pytest.mark.parametrize("text,expected", [("8/255", (8 / 255,)), ("0.02, 1/255", (0.02, 1 / 255))])
def test_budgets_parse_fractions(text, expected):
    from robench.attacks.options import parse_budgets

    assert parse_budgets(text) == pytest.approx(expected)


def test_curves_from_fmn_and_pgd_with_a_band_across_seeds(tmp_path):
    pytest.importorskip("matplotlib")
    from robench.plot import plot_curve, success_curves

    dist = {10: 0.1, 11: 0.3, 12: 0.2}
    _result(tmp_path, "fmn", {"norm": "l2"}, {"min-l2": [set(dist)]}, distances=dist)
    curves = success_curves(tmp_path, "fmn", "l2", "lenet5")
    ((tag, budgets, rates),) = curves["relu"]
    assert tag == "s0" and budgets == [0.0, 0.1, 0.2, 0.3] and rates == pytest.approx([0, 0.1, 0.2, 0.3])
    _result(tmp_path, "pgd", {"norm": "l2", "epsilons": (0.1, 0.5)}, {"l2=0.1": [{10}], "l2=0.5": [{10, 11, 12, 13}]})
    assert success_curves(tmp_path, "pgd", "l2", "lenet5")["relu"][0][2] == pytest.approx([0.1, 0.4])
    out = plot_curve(tmp_path, "fmn", "l2", "lenet5", tmp_path / "curve.png")
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_robust_accuracy_without_the_threats_strongest_attack_is_an_upper_bound(tmp_path):
    _result(tmp_path, "pixel", {"pixels": 3}, {"3px": [{10, 11}]})
    _result(tmp_path, "fgsm", {"epsilons": (0.01,)}, {"eps=0.01": [{10}]})
    rep = build_report(tmp_path)
    cells = rep.robust_rows[0].cells
    assert not cells["l0 3px"].strong and not cells["linf 0.01"].strong
    assert "≤8/10 [pixel]" in render_markdown(rep)
    _result(tmp_path, "ensemble", {"threat": "l0", "pixels": 3, "members": ("de", "sparse_rs")}, {"3px": [{12}]})
    cells = build_report(tmp_path).robust_rows[0].cells
    assert cells["l0 3px"].strong and cells["l0 3px"].robust == 7  # an ensemble holding sparse_rs counts


def test_robust_test_accuracy_scales_the_unfooled_share_by_the_clean_accuracy():
    # 60 of 80 attacked (correctly classified) images left robust on a model with 80 % clean accuracy
    assert robust_test_accuracy(0.8, 60, 80) == pytest.approx(0.6)
    assert robust_test_accuracy(0.8, 80, 80) == pytest.approx(0.8)  # never above the clean accuracy
    assert robust_test_accuracy(None, 60, 80) is None
    assert robust_test_accuracy(0.8, 0, 0) is None  # nothing attacked: no number, not 0 %
