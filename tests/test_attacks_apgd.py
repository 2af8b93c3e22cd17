"""APGD: the step-size schedule, exact answers on linear models, budgets, seeding, early stop, too few classes."""

import math

import pytest
import torch
from torch import nn

from robench.attacks import get_attack
from robench.attacks.apgd import APGDConfig, APGDTConfig, TooFewClassesError, apgd_attack, apgd_images, checkpoints
from robench.attacks.base import judge
from tests.test_attacks_pixel import gen


class Linear(nn.Module):
    """logits = W x.flatten() + b, seeded; distances to each class boundary are known in closed form."""

    def __init__(self, classes: int, features: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.w = nn.Parameter(torch.randn(classes, features, generator=g))
        self.b = nn.Parameter(torch.zeros(classes))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x.flatten(1) @ self.w.T + self.b


def _linear_case(classes: int = 5, n: int = 40):
    """Images near 0.5 (so [0, 1] never binds at the budgets used), labelled by the model itself."""
    model = Linear(classes, 3 * 4 * 4)
    x = 0.5 + 0.02 * torch.randn(n, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    return model, x, y


def _distances(model: Linear, x: torch.Tensor, y: torch.Tensor, dual: float) -> torch.Tensor:
    """Smallest perturbation (in the norm whose dual is ``dual``) that makes some other class win."""
    with torch.no_grad():
        z = model(x)
        diff = model.w[y][:, None, :] - model.w[None, :, :]  # (N, K, F): w_y - w_j
        gap = z.gather(1, y[:, None]) - z
        d = gap / diff.norm(p=dual, dim=2).clamp_min(1e-12)
        d[torch.arange(len(y)), y] = math.inf
    return d.amin(1)


def test_checkpoints_follow_spec_p_j():
    # p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06): 22, 41, 57, 70, 80, 87, 93, 99 steps
    p, prev, marks = 0.22, 0.0, []
    while round(p * 100) <= 100:
        marks.append(round(p * 100) - 1)
        p, prev = p + max(p - prev - 0.03, 0.06), p
    assert checkpoints(100) == marks == [21, 40, 56, 69, 79, 86, 92, 98]
    assert checkpoints(1) == [0] and checkpoints(10)[0] == 1


@pytest.mark.parametrize(("norm", "dual"), [("linf", 1.0), ("l2", 2.0)])
def test_apgd_t_fools_exactly_the_images_within_reach_of_a_linear_model(norm, dual):
    model, x, y = _linear_case()
    dist = _distances(model, x, y, dual)
    eps = float(dist.median())
    out = apgd_attack(model, x, y, APGDTConfig(norm=norm, epsilons=(eps,), steps=20), gen(0))
    verdict = judge(model, x, y, out, **{f"{norm}_budget": eps})
    reach = dist < eps * 0.999
    clear = dist > eps * 1.001
    assert verdict.success[reach].all() and not verdict.success[clear].any()
    assert 0 < int(reach.sum()) < len(y)


@pytest.mark.parametrize("norm", ["linf", "l2"])
@pytest.mark.parametrize("loss", ["ce", "dlr"])
def test_stays_within_budget_and_box_and_seeded_runs_repeat(norm, loss):
    model, x, y = _linear_case()
    eps = 0.05 if norm == "linf" else 0.3
    config = APGDConfig(norm=norm, epsilons=(eps,), steps=15, loss=loss, restarts=2)
    a = apgd_attack(model, x, y, config, gen(3))
    b = apgd_attack(model, x, y, config, gen(3))
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.queries, b.queries)
    verdict = judge(model, x, y, a, **{f"{norm}_budget": eps})  # raises beyond the budget or the box
    assert verdict.success.any()
    found = torch.tensor(a.details["found"])
    assert torch.equal(found, verdict.success)  # what the search found is what it returns (no silent success)


def test_early_stop_per_image_and_a_monotone_trace_for_those_left_standing():
    model, x, y = _linear_case()
    dist = _distances(model, x, y, 1.0)
    eps = float(dist.median())
    steps = 20
    out, run = apgd_images(model, x, y, APGDTConfig(epsilons=(eps,), steps=steps, n_target_classes=3), gen(0))
    fooled = run.fooled
    assert (out.queries[~fooled] == 3 * (steps + 1)).all()  # every target row ran every step
    assert (out.queries[fooled] < 3 * (steps + 1)).all()  # its rows left at the first success
    for f, trace in zip(fooled.tolist(), out.details["loss_trace"]):
        assert (trace is None) == f
        if trace is not None:
            assert len(trace) == 11 and all(b >= a for a, b in zip(trace, trace[1:]))


def test_a_checkpoint_halves_the_step_of_stalled_images_and_sends_them_to_their_best_point():
    """Row 0's loss rose at every step, row 1's at 2 of 5 (under 75 %), row 2's at 4 of 5 but it
    was not reduced last time and its best loss has not moved since: rows 1 and 2 halve and restart."""
    from robench.attacks.apgd import _review

    steps, i, since = 10, 5, 5
    history = torch.zeros(3, steps)
    history[0, :6] = torch.arange(6.0)
    history[1, :6] = torch.tensor([1.0, 2, 1, 0, 1, 0])
    history[2, :6] = torch.tensor([0.0, 1, 2, 3, 4, 3])
    x, best_x = torch.zeros(3, 1, 1, 1), torch.ones(3, 1, 1, 1)
    s = {"history": history, "x": x, "x_best": best_x, "grad": x.clone(), "grad_best": best_x.clone(),
         "step": torch.full((3, 1, 1, 1), 0.4), "reduced": torch.tensor([True, True, False]),
         "best": torch.tensor([5.0, 2.0, 4.0]), "best_at_check": torch.tensor([0.0, 0.0, 4.0])}
    s, gap = _review(s, i, since, steps)
    assert s["step"].flatten().tolist() == pytest.approx([0.4, 0.2, 0.2])
    assert s["x"].flatten().tolist() == [0.0, 1.0, 1.0] and s["grad"].flatten().tolist() == [0.0, 1.0, 1.0]
    assert s["reduced"].tolist() == [False, True, True] and s["best_at_check"].tolist() == [5.0, 2.0, 4.0]
    assert gap == max(since - 1, 1)


def test_too_few_classes_is_a_clear_error_and_ce_still_runs():
    two = Linear(2, 3 * 4 * 4)
    x = 0.5 + 0.02 * torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = two(x).argmax(1)
    with pytest.raises(TooFewClassesError, match="dlr loss needs at least 3 classes; this model has 2"):
        apgd_attack(two, x, y, APGDConfig(epsilons=(0.1,), loss="dlr"), gen(0))
    with pytest.raises(TooFewClassesError, match="at least 4 classes"):
        apgd_attack(Linear(3, 48), x, Linear(3, 48)(x).argmax(1), APGDTConfig(epsilons=(0.1,)), gen(0))
    out = apgd_attack(two, x, y, APGDConfig(epsilons=(0.2,), steps=5), gen(0))
    judge(two, x, y, out, linf_budget=0.2)


def test_bad_settings_are_value_errors_and_both_attacks_are_registered():
    for bad in (dict(norm="l1"), dict(epsilons=()), dict(epsilons=(2.0,)), dict(steps=0), dict(loss="dlr_targeted")):
        with pytest.raises(ValueError):
            APGDConfig(**bad)
    with pytest.raises(ValueError, match="n_target_classes"):
        APGDTConfig(n_target_classes=0)
    with pytest.raises(ValueError, match="loss"):
        APGDTConfig(loss="ce")
    assert get_attack("apgd").config_cls is APGDConfig and get_attack("apgd_t").config_cls is APGDTConfig
    assert get_attack("apgd_t").at_budget("l2", 0.5, {}) == APGDTConfig(norm="l2", epsilons=(0.5,))
    assert get_attack("apgd").tag(APGDConfig(loss="dlr")) == "-linf-lossdlr"


def test_an_apgd_result_verifies(tmp_path_factory):
    from robench.attacks.runner import AttackRun, run_attack
    from robench.verification import verify_results
    from tests.conftest import train_tiny_lenet

    root, ck = train_tiny_lenet(tmp_path_factory)
    out = tmp_path_factory.mktemp("attacks")
    run_attack(AttackRun(attack="apgd_t", options={"epsilons": [2 / 255, 8 / 255], "steps": 5, "n_target_classes": 3},
                         model="lenet5", act="relu", images=5, repeats=2, seed=0, checkpoint=str(ck)),
               out=out / "apgd_t.json", data_dir=root, device="cpu")
    (done,) = verify_results([out], data_dir=root, device="cpu")
    assert done.ok and done.repeats == 4, [str(m) for m in done.mismatches]
