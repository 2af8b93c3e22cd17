"""PGD and FMN through Foolbox: budgets, a known answer for each, seeding."""

import pytest
import torch
from torch import nn

from robench.attacks.base import judge
from robench.attacks.gradient import FGSMConfig, FMNConfig, PGDConfig, fgsm_attack, fmn_attack, pgd_attack
from tests.test_attacks_gradient import fitted, gen, plain_fgsm  # noqa: F401  (fixture)


class Linear(nn.Module):
    """Two classes, logits (0, w·x + b): the distance to the boundary is |w·x + b| / ||w|| in L2
    and |w·x + b| / ||w||_1 in Linf, as long as the closest point stays inside [0, 1]."""

    def __init__(self, w: torch.Tensor, b: float) -> None:
        super().__init__()
        self.w = nn.Parameter(w.flatten())
        self.b = b

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = x.flatten(1) @ self.w + self.b
        return torch.stack([torch.zeros_like(z), z], 1)


@pytest.fixture
def linear() -> tuple[Linear, torch.Tensor, torch.Tensor]:
    w = torch.randn(1, 6, 6, generator=gen(0))
    x = 0.4 + 0.2 * torch.rand(8, 1, 6, 6, generator=gen(1))  # mid-range: the boundary point stays in [0, 1]
    model = Linear(w, 0.0)
    model.b = float(-(x.flatten(1) @ model.w.detach()).max()) - 0.3  # every image class 0, margins >= 0.3
    return model, x, torch.zeros(8, dtype=torch.long)


def test_pgd_one_full_step_without_random_start_is_fgsm(fitted):  # noqa: F811
    model, x, y = fitted
    cfg = PGDConfig(epsilons=(0.03,), steps=1, rel_stepsize=1.0, random_start=False)
    out = pgd_attack(model, x, y, cfg, gen())
    assert torch.allclose(out.adversarial, plain_fgsm(model, x, y, 0.03), atol=1e-6)


def test_pgd_stays_in_budget_is_seeded_and_beats_fgsm(fitted):  # noqa: F811
    model, x, y = fitted
    for norm, eps in (("linf", 0.01), ("l2", 0.3)):
        cfg = PGDConfig(norm=norm, epsilons=(eps,), steps=20, restarts=2)
        a, b = pgd_attack(model, x, y, cfg, gen(3)), pgd_attack(model, x, y, cfg, gen(3))
        assert torch.equal(a.adversarial, b.adversarial)
        verdict = judge(model, x, y, a, **{f"{norm}_budget": eps})  # raises if outside the ball
        assert ((a.queries == 20) | (a.queries == 40)).all()  # a second restart only where the first failed
        assert torch.equal(a.queries == 20, verdict.success) or verdict.success.sum() >= (a.queries == 20).sum()
    pgd = judge(model, x, y, pgd_attack(model, x, y, PGDConfig(epsilons=(0.01,)), gen()), linf_budget=0.01)
    one = judge(model, x, y, fgsm_attack(model, x, y, FGSMConfig(epsilons=(0.01,)), gen())[0.01], linf_budget=0.01)
    assert pgd.success.sum() >= one.success.sum()


@pytest.mark.parametrize("norm,dual", [("l2", 2), ("linf", 1)])
def test_fmn_finds_the_analytic_minimal_distance_of_a_linear_model(linear, norm, dual):
    model, x, y = linear
    out = fmn_attack(model, x, y, FMNConfig(norm=norm), gen())
    verdict = judge(model, x, y, out)
    assert verdict.success.all()
    with torch.no_grad():
        exact = -model(x)[:, 1] / model.w.norm(p=dual)
    found = getattr(verdict, norm)
    assert (found >= exact * (1 - 1e-3)).all()  # nothing can beat the true minimum
    assert (found <= exact * 1.01).all(), (found / exact)  # Foolbox's own L2 FMN gave up to 1.29


def test_fmn_budget_drops_farther_adversarials(linear):
    model, x, y = linear
    free = judge(model, x, y, fmn_attack(model, x, y, FMNConfig(norm="l2"), gen()))
    cut = float(free.l2.median())
    capped = fmn_attack(model, x, y, FMNConfig(norm="l2", epsilon=cut), gen())
    verdict = judge(model, x, y, capped, l2_budget=cut)
    assert torch.equal(verdict.success, free.l2 <= cut)
    assert torch.equal(capped.adversarial[~verdict.success], x[~verdict.success])


def test_fmn_l2_restarts_from_a_crossing_where_its_first_run_stalled(linear):
    """Images a first L2 FMN run left unfooled (as the projected FMN does on MNIST MLPs) get Foolbox's
    unprojected walk and a projected FMN from its crossing: they end at the analytic minimum; the
    images already fooled keep their adversarial and their query count."""
    from robench.attacks.base import AttackOutcome
    from robench.attacks.gradient import _l2_restart

    model, x, y = linear
    cfg = FMNConfig(norm="l2")
    done = fmn_attack(model, x, y, cfg, gen())
    stalled = torch.arange(len(x)) < 3
    first = AttackOutcome(adversarial=torch.where(stalled[:, None, None, None], x, done.adversarial),
                          queries=done.queries.clone())
    out = _l2_restart(model, x, y, cfg, first)
    verdict = judge(model, x, y, out)
    assert verdict.success.all()
    with torch.no_grad():
        exact = -model(x)[:, 1] / model.w.norm(p=2)
    assert (verdict.l2[stalled] <= exact[stalled] * 1.01).all(), verdict.l2 / exact
    assert torch.equal(out.adversarial[~stalled], done.adversarial[~stalled])
    assert torch.equal(out.queries[~stalled], done.queries[~stalled]) and (out.queries[stalled] > done.queries[stalled]).all()
    capped = _l2_restart(model, x, y, FMNConfig(norm="l2", epsilon=float(exact[:3].min()) * 0.5), first)
    assert torch.equal(capped.adversarial[stalled], x[stalled])  # beyond the budget: the clean image


def test_bad_settings_are_value_errors():
    with pytest.raises(ValueError, match="linf or l2"):
        PGDConfig(norm="l1")
    with pytest.raises(ValueError, match="fmn norm"):
        FMNConfig(norm="l3")
    with pytest.raises(ValueError, match="in \\(0, 1\\]"):
        PGDConfig(epsilons=(1.5,))
