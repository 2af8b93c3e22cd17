"""The leaderboard's rows: one per checkpoint, robust accuracy on the test set, the standard
evaluation told apart by its checks, and flags read defensively."""

from __future__ import annotations

import json

import pytest

from robench import leaderboard
from robench.leaderboard import build_board, failure_flags, is_standard, robust_accuracy
from robench.robustness import RobustCell
from tests.conftest import edit_json, pgd_results, robust_by_hand


def test_robust_accuracy_is_clean_accuracy_times_the_share_left():
    cell = RobustCell(robust=30, images=40, attacks=["x"], strongest="x", strongest_fooled=10)
    assert robust_accuracy(cell, 0.8) == pytest.approx(0.6)
    assert robust_accuracy(cell, None) is None
    assert robust_accuracy(RobustCell(0, 0, [], "x", 0), 0.9) is None


def test_one_row_per_checkpoint_relu_first_with_its_worst_case(tmp_path):
    results = pgd_results(tmp_path / "r", seeds=(0, 1))
    board = build_board(results)
    assert [(r.act, r.tag) for r in board.rows] == [("relu", "s0"), ("sapl", "s0"), ("relu", "s1"), ("sapl", "s1")]
    assert [t.label for t in board.threat_columns] == ["linf 0.025", "linf 0.05", "linf 0.1", "linf 51/255"]
    assert board.standard_columns == []  # plain PGD results: no standard evaluation
    for row in board.rows:
        (src,) = results.glob(f"{row.name}--*.json")
        by_hand = robust_by_hand(src)
        assert row.clean == json.loads(src.read_text())["checkpoint"]["clean_test_accuracy"]
        assert {t.budget: robust_accuracy(c, row.clean) for t, c in row.worst.items()} == pytest.approx(by_hand)
        assert row.flags == []


@pytest.mark.parametrize("checks", [
    "not a list", [["zero_gradient", True]], [{"name": "zero_gradient", "flagged": "yes"}], [{"flagged": True}]])
def test_checks_of_another_shape_add_no_flag(tmp_path, checks):
    results = pgd_results(tmp_path / "r", acts=("relu",), seeds=(0,))
    (src,) = results.glob("*.json")

    def edit(data):
        for setting in data["settings"]:
            for rep in setting["repeats"]:
                rep["checks"] = checks

    edit_json(src, edit)
    data = json.loads(src.read_text())
    assert is_standard(data) and failure_flags(data) == []
    (row,) = build_board(results).rows
    assert row.flags == [] and set(row.standard) == set(row.worst)  # counted as the standard evaluation still


def test_a_masking_hint_goes_to_the_row_it_names(tmp_path, monkeypatch):
    results = pgd_results(tmp_path / "r", seeds=(0,))
    hint = "mlp/mnist/s0/sapl linf 0.1: black-box square (50) beats every white-box attack"
    monkeypatch.setattr(leaderboard, "sanity_flags", lambda evidence: [hint, "mlp/mnist/s0/sapl_x linf 0.1: other"])
    relu, sapl = build_board(results).rows
    assert relu.flags == [] and sapl.flags == [("masking hint", hint)]
