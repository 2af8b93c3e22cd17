"""Attack-failure checks: a tiny model built to trip each one, and a plain model that trips none."""

import pytest
import torch
from torch import nn

from robench.attacks import checks
from robench.attacks.autoattack import AutoAttackConfig, autoattack_attack
from tests.test_attacks_apgd import Linear, _distances, _linear_case
from tests.test_attacks_pixel import gen


class Randomised(nn.Module):
    """A linear model with noise on its logits, drawn afresh at every forward pass (as a randomised defence)."""

    def __init__(self) -> None:
        super().__init__()
        self.inner = Linear(5, 48)
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        z = self.inner(x)
        return z + 10 * torch.randn(z.shape, generator=torch.Generator().manual_seed(self.calls))


class Softmaxed(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.inner = Linear(5, 48)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(self.inner(x), 1)


class Staircase(nn.Module):
    """Four classes; class 1 iff channel 0's mean exceeds 0.5 + margin, else class 0. The logits go
    through torch.round, whose gradient is zero everywhere: only a score-based search can fool it."""

    def __init__(self, margin: float) -> None:
        super().__init__()
        self.margin = margin
        self.scale = nn.Parameter(torch.tensor(50.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = torch.round((x[:, 0].flatten(1).mean(1) - 0.5 - self.margin) * 1000) / 1000 * self.scale
        return torch.stack([-z, z, -z - 1, -z - 2], 1)


class Unfoolable(nn.Module):
    """Class 0 wins for every input in [0, 1], yet the gradient is never zero: an attack without a
    budget must fail on it, so a robust accuracy that rests on this is the model's, by construction."""

    def __init__(self) -> None:
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = torch.tanh(x.flatten(1).mean(1) * self.w)
        return torch.stack([10 + t, 2 * t, -t, 0 * t], 1)


def _flagged(outcome) -> set[str]:  # type: ignore[no-untyped-def]
    return {c["name"] for c in outcome.meta["checks"] if c["flagged"]}


def _grey(n: int = 4) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.full((n, 3, 4, 4), 0.5), torch.zeros(n, dtype=torch.long)


def test_a_plain_model_trips_no_check():
    model, x, y = _linear_case()
    eps = float(_distances(model, x, y, 1.0).median())
    out = autoattack_attack(model, x, y, AutoAttackConfig(epsilons=(eps,), steps=20, queries=200), gen(0))
    names = {c["name"] for c in out.meta["checks"]}
    assert names == set(checks.MEANINGS) - {"eps_monotone"}  # that one compares budgets, in the report
    assert _flagged(out) == set(), out.meta["checks"]
    assert 0 < out.details["broken_by"].count(None) < len(y)  # some images stand, some fall: the checks saw both


def test_a_randomised_model_trips_randomness():
    model, x, y = _linear_case()
    check = checks.randomness(Randomised(), x)
    assert check.flagged and "predictions changed" in check.evidence
    assert not checks.randomness(model, x).flagged


def test_a_softmax_output_trips_probabilities():
    _, x, _ = _linear_case()
    assert checks.probabilities(Softmaxed(), x).flagged
    assert not checks.probabilities(Linear(5, 48), x).flagged


def test_a_staircase_trips_zero_gradient_and_only_square_fools_it():
    eps = 8 / 255
    model = Staircase(margin=eps / 2)
    x, y = _grey()
    out = autoattack_attack(model, x, y, AutoAttackConfig(epsilons=(eps,), steps=10, queries=1000), gen(0))
    assert out.details["broken_by"] == ["square"] * 4
    assert {"zero_gradient", "black_box_wins"} <= _flagged(out)
    evidence = {c["name"]: c["evidence"] for c in out.meta["checks"]}
    assert evidence["black_box_wins"] == "4 of 4 images fooled only by square"
    assert evidence["zero_gradient"] == "4 of 4 start points have a zero gradient"


def test_a_model_no_input_can_fool_trips_unbounded():
    x, y = _grey()
    out = autoattack_attack(Unfoolable(), x, y, AutoAttackConfig(epsilons=(0.1,), steps=10, queries=50), gen(0))
    assert out.details["broken_by"] == [None] * 4
    assert "unbounded" in _flagged(out)
    assert "zero_gradient" not in _flagged(out)
    assert next(c for c in out.meta["checks"] if c["name"] == "unbounded")["evidence"] == "4 of 4 images survived eps = inf"


@pytest.mark.parametrize("classes", [2, 3])
def test_too_few_classes_skips_apgd_t_and_says_so(classes):
    model = Linear(classes, 48)
    x = 0.5 + 0.02 * torch.randn(6, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        y = model(x).argmax(1)
    out = autoattack_attack(model, x, y, AutoAttackConfig(epsilons=(0.01,), steps=5, queries=20), gen(0))
    assert "apgd_t" not in out.meta["members"] and "apgd" in out.meta["members"]
    assert "too_few_classes" in _flagged(out)
    assert next(c for c in out.meta["checks"] if c["name"] == "too_few_classes")["evidence"] == \
        f"{classes} classes; skipped apgd_t"


def test_incomplete_optimisation_reads_the_last_tenth_of_the_trace():
    rising = [float(i) for i in range(11)]  # still gaining 10 % of its whole gain in the last tenth
    flat = [0.0, 5, 8, 9, 9.5, 9.8, 9.9, 10, 10, 10, 10]
    assert checks.incomplete_optimisation([rising, None, flat]).flagged
    check = checks.incomplete_optimisation([flat, None])
    assert not check.flagged and check.evidence.startswith("0 of 1 robust images")


def test_silent_success_and_eps_monotone():
    assert checks.silent_success([True, False], torch.tensor([False, False])).flagged
    assert not checks.silent_success([True, False], torch.tensor([True, False])).flagged
    assert checks.eps_monotone([(0.1, 50), (0.2, 60)]).flagged
    assert not checks.eps_monotone([(0.1, 50), (0.2, 40), (0.3, 40)]).flagged
