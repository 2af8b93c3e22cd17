"""The standard evaluation: worst case over its members, stored and verified, reported as the headline."""

import json

import pytest
import torch

from robench.attacks import get_attack
from robench.attacks.autoattack import DEFAULT_MEMBERS, AutoAttackConfig, autoattack_attack
from robench.attacks.base import judge
from tests.test_attacks_apgd import _distances, _linear_case
from tests.test_attacks_pixel import gen


@pytest.mark.parametrize(("norm", "dual"), [("linf", 1.0), ("l2", 2.0)])
def test_fools_exactly_the_images_within_reach_of_a_linear_model(norm, dual):
    model, x, y = _linear_case()
    dist = _distances(model, x, y, dual)
    eps = float(dist.median())
    out = autoattack_attack(model, x, y, AutoAttackConfig(norm=norm, epsilons=(eps,), steps=20, queries=100), gen(0))
    fooled = judge(model, x, y, out, **{f"{norm}_budget": eps}).success
    assert fooled[dist < eps * 0.999].all() and not fooled[dist > eps * 1.001].any()
    assert list(out.meta["members"]) == list(DEFAULT_MEMBERS[norm])
    assert {b for b in out.details["broken_by"]} <= {None, *DEFAULT_MEMBERS[norm]}
    assert out.meta["members"]["apgd_t"]["n_target_classes"] == 9 and out.meta["members"]["apgd"]["steps"] == 20
    # cheap first: APGD-CE breaks what it can before APGD-T sees anything
    assert out.details["broken_by"].count("apgd") >= out.details["broken_by"].count("apgd_t")


def test_bad_settings_are_value_errors():
    with pytest.raises(ValueError, match="square cannot serve the l2 threat"):
        AutoAttackConfig(norm="l2", members=("apgd", "square"))
    with pytest.raises(ValueError, match="autoattack members come from"):
        AutoAttackConfig(members=("pixel",))
    with pytest.raises(ValueError, match="autoattack norm must be linf or l2"):
        AutoAttackConfig(norm="l1")
    assert get_attack("autoattack").deterministic  # one repeat, as AutoAttack's own protocol
    assert get_attack("autoattack").tag(AutoAttackConfig(norm="l2")) == "-l2"


def test_stored_verified_and_reported_as_the_headline(tmp_path_factory):
    from robench.attacks.runner import AttackRun, run_attack
    from robench.tables import build_report, render_json, render_markdown
    from robench.verification import verify_results
    from tests.conftest import edit_json, train_tiny_lenet

    root, ck = train_tiny_lenet(tmp_path_factory)
    out = tmp_path_factory.mktemp("attacks")
    path, result = run_attack(
        AttackRun(attack="autoattack", options={"epsilons": [2 / 255, 16 / 255], "steps": 5, "queries": 20,
                                                "n_target_classes": 3},
                  model="lenet5", act="relu", images=6, repeats=5, seed=0, checkpoint=str(ck)),
        out=out / "aa.json", data_dir=root, device="cpu")
    reps = [rep for s in result["settings"] for rep in s["repeats"]]
    assert len(reps) == 2  # one repeat per budget
    assert all(set(rep["members"]) == {"apgd", "apgd_t", "square"} and rep["members"]["square"]["queries"] == 20
               for rep in reps)
    assert all({c["name"] for c in rep["checks"]} >= {"randomness", "unbounded", "black_box_wins"} for rep in reps)
    (done,) = verify_results([out], data_dir=root, device="cpu")
    assert done.ok, [str(m) for m in done.mismatches]

    report = build_report(out)
    (row,) = report.standard_rows
    assert all(c.strong for c in report.robust_rows[0].cells.values())  # it stands behind the worst case, no "≤"
    assert row.clean_accuracy == result["checkpoint"]["clean_test_accuracy"]
    robust = {s["label"]: sum(not r["success"] for r in s["repeats"][0]["images"]) for s in result["settings"]}
    assert {k: c.robust for k, c in row.cells.items()} == robust
    assert [c["name"] for c in row.cells["eps=16/255"].checks if c["name"] == "eps_monotone"] == ["eps_monotone"]
    assert not row.cells["eps=16/255"].flagged and robust["eps=16/255"] <= robust["eps=2/255"]
    text = render_markdown(report)
    assert text.index("Standard evaluation (autoattack): robust accuracy") < text.index("Robust accuracy under the worst")
    first = robust["eps=2/255"]
    assert f"{100 * row.clean_accuracy * first / 6:.1f}% ({first}/6)" in text
    assert json.loads(render_json(report))["standard_evaluation"]["rows"][0]["clean_accuracy"] == row.clean_accuracy

    def flag(res):  # a stored check flagged, and more images robust at the larger budget
        res["settings"][0]["repeats"][0]["checks"][0]["flagged"] = True
        for s, success in zip(res["settings"], (True, False)):
            for rec in s["repeats"][0]["images"]:
                rec["success"] = success

    edit_json(path, flag)
    report = build_report(out)
    text = render_markdown(report)
    assert "unreliable (0/6; randomness)" in text and "unreliable (6/6; eps_monotone)" in text
    assert any("autoattack eps=2/255: randomness" in f for f in report.flags)
    assert json.loads(render_json(report))["standard_evaluation"]["rows"][0]["unreliable"] == {
        "eps=2/255": ["randomness"], "eps=16/255": ["eps_monotone"]}
