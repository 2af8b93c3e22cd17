import pytest
import torch
from torch import nn
from torch.nn import functional as F

from robench.adversarial import (
    Threat, ce_loss, collapsed, eval_threat, kl_loss, perturb, random_start, robust_accuracy, training_loss,
)


class _Centre(nn.Module):
    """Normalisation as robench's models own it: pixels in [0, 1] to about [-2, 2]."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - 0.5) * 4


def _model(seed: int = 0, dropout: float = 0.0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(_Centre(), nn.Flatten(), nn.Linear(12, 16), nn.BatchNorm1d(16), nn.ReLU(),
                         nn.Dropout(dropout), nn.Linear(16, 3))


def _batch(n: int = 8, seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 3, 2, 2, generator=g), torch.randint(0, 3, (n,), generator=g)


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_perturb_stays_in_budget_and_pixels_and_raises_the_loss(norm):
    model = _model().eval()
    x, y = _batch()
    threat = Threat(eps=0.3, step_size=0.1, steps=10, norm=norm)
    adv = perturb(model, x, ce_loss(y), threat, random_start(x, threat, torch.Generator().manual_seed(0)))
    size = (adv - x).flatten(1).abs().amax(1) if norm == "linf" else (adv - x).flatten(1).norm(dim=1)
    assert (size <= 0.3 + 1e-6).all() and adv.min() >= 0 and adv.max() <= 1
    with torch.no_grad():
        assert F.cross_entropy(model(adv), y) > F.cross_entropy(model(x), y)


def test_perturb_is_plain_pgd():
    """The loop equals a few lines of plain-torch Linf PGD from the same start."""
    model = _model().eval()
    x, y = _batch()
    threat = Threat(eps=0.1, step_size=0.03, steps=5)
    start = random_start(x, threat, torch.Generator().manual_seed(4))
    delta = start.clone()
    for _ in range(5):
        delta = ((x + delta).clamp(0, 1) - x).requires_grad_(True)
        (g,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y, reduction="sum"), delta)
        delta = (delta + 0.03 * g.sign()).clamp(-0.1, 0.1).detach()
    expected = (x + delta).clamp(0, 1)
    torch.testing.assert_close(perturb(model, x, ce_loss(y), threat, start), expected)


def test_random_starts_fill_their_ball_and_follow_the_generator():
    x = torch.rand(200, 3, 4, 4)
    box = random_start(x, Threat(0.1, 0.1, 1), torch.Generator().manual_seed(0))
    assert box.abs().max() <= 0.1 and box.abs().max() > 0.09 and box.min() < -0.09
    ball = random_start(x, Threat(0.5, 0.1, 1, "l2"), torch.Generator().manual_seed(0))
    norms = ball.flatten(1).norm(dim=1)
    assert (norms <= 0.5 + 1e-6).all() and norms.max() > 0.45
    again = random_start(x, Threat(0.1, 0.1, 1), torch.Generator().manual_seed(0))
    other = random_start(x, Threat(0.1, 0.1, 1), torch.Generator().manual_seed(1))
    assert torch.equal(box, again) and not torch.equal(box, other)
    small = random_start(x, Threat(0.1, 0.1, 1), torch.Generator().manual_seed(0), scale=0.001)
    assert 0 < small.abs().max() < 0.01


def test_the_inner_attack_runs_in_eval_mode_and_the_update_in_train_mode():
    """BatchNorm's running statistics do not move during the attack; the model is back in train mode."""
    model = _model(dropout=0.5).train()
    x, y = _batch(16)
    bn = model[3]
    seen = []
    model.register_forward_pre_hook(lambda m, inp: seen.append(m.training))
    before = bn.running_mean.clone()
    adv = perturb(model, x, ce_loss(y), Threat(0.1, 0.05, 3), torch.zeros_like(x))
    assert seen == [False] * 3 and model.training and torch.equal(bn.running_mean, before)
    # eval mode: no dropout, so the same start gives the same adversarial twice
    assert torch.equal(adv, perturb(model, x, ce_loss(y), Threat(0.1, 0.05, 3), torch.zeros_like(x)))
    seen.clear()
    training_loss(model, x, y, "pgd", Threat(0.1, 0.05, 3), 6.0, torch.Generator().manual_seed(0))
    assert seen == [False] * 3 + [True] and not torch.equal(bn.running_mean, before)


def test_fgsm_rs_is_one_step_from_a_uniform_start():
    model = _model().eval()
    x, y = _batch()
    threat = Threat(eps=0.1, step_size=0.125, steps=1)
    loss = training_loss(model, x, y, "fgsm-rs", threat, 6.0, torch.Generator().manual_seed(3))
    start = random_start(x, threat, torch.Generator().manual_seed(3))
    delta = (x + start).clamp(0, 1) - x
    delta.requires_grad_(True)
    (g,) = torch.autograd.grad(F.cross_entropy(model(x + delta), y, reduction="sum"), delta)
    adv = (x + (delta + 0.125 * g.sign()).clamp(-0.1, 0.1)).clamp(0, 1)
    torch.testing.assert_close(loss, F.cross_entropy(model(adv), y))


def test_trades_is_clean_ce_plus_beta_kl():
    model = _model().eval()  # eval: both passes see the same function, so the terms can be rebuilt
    x, y = _batch()
    threat = Threat(eps=0.2, step_size=0.05, steps=4)
    zero = training_loss(model, x, y, "trades", threat, 0.0, torch.Generator().manual_seed(0))
    torch.testing.assert_close(zero, F.cross_entropy(model(x), y))
    six = training_loss(model, x, y, "trades", threat, 6.0, torch.Generator().manual_seed(0))
    adv = perturb(model, x, kl_loss(model(x)), threat, random_start(x, threat, torch.Generator().manual_seed(0), 0.001))
    kl = F.kl_div(F.log_softmax(model(adv), 1), F.softmax(model(x), 1), reduction="batchmean")
    assert kl > 0
    torch.testing.assert_close(six, zero + 6.0 * kl)


def test_robust_accuracy_counts_only_images_right_before_and_after():
    model = _model().eval()
    x, y = _batch(40)
    with torch.no_grad():
        y = model(x).argmax(1)  # every image right at first
    y[:10] = (y[:10] + 1) % 3  # ten wrong
    clean, robust = robust_accuracy(model, x, y, eval_threat(0.0, "linf"), torch.Generator().manual_seed(0), 16)
    assert clean == robust == 0.75
    clean, robust = robust_accuracy(model, x, y, eval_threat(1.0, "linf"), torch.Generator().manual_seed(0), 16)
    assert clean == 0.75 and robust < 0.75
    assert eval_threat(8 / 255, "linf").step_size == pytest.approx(2 / 255)


@pytest.mark.parametrize(("history", "expected"), [
    ([0.5, 0.52, 0.1], True),     # fell 42 points, below half the best
    ([0.3, 0.09], True),          # 21 points, below 0.15
    ([0.5, 0.29], False),         # 21 points but above half the best: a bad epoch, not a collapse
    ([0.6, 0.45, 0.3], False),    # a slide of 15 points per epoch is not a collapse in one epoch
    ([0.6], False),
])
def test_catastrophic_overfitting_rule(history, expected):
    assert collapsed(history) is expected


@pytest.mark.slow
def test_the_shipped_pgd_trained_mlp_is_robust_where_the_standard_one_is_not():
    """On 200 real MNIST test images, PGD-10 at the training eps (0.1): the defended MLP keeps most of
    its accuracy, the standard one (same architecture and activation) loses most of it."""
    import os
    from pathlib import Path

    from robench.checkpoints import load_checkpoint
    from robench.data import load_split, to_float

    root = os.environ.get("ROBENCH_DATA")
    defended, standard = Path("checkpoints/mlp-relu-mnist-pgd0.1k10-s0.pt"), Path("checkpoints/mlp-relu-mnist-s0.pt")
    if not root or not os.path.isdir(os.path.join(root, "MNIST")) or not defended.exists():
        pytest.skip("offline MNIST or the shipped checkpoints not here")
    split, _ = load_split("mnist", train=False, data_dir=root)
    x, y = to_float(split.images[:200]), split.labels[:200]
    robust = {}
    for path in (defended, standard):
        clean, robust[path] = robust_accuracy(load_checkpoint(path).model, x, y, eval_threat(0.1, "linf"),
                                              torch.Generator().manual_seed(0))
        assert clean > 0.95, path
    assert robust[defended] > 0.8 and robust[standard] < 0.5
    assert robust[defended] == pytest.approx(load_checkpoint(defended).meta["robust_accuracy"], abs=0.06)
