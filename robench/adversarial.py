"""Adversarial training: PGD-AT (Madry et al. 2018), TRADES (Zhang et al. 2019) and FGSM with a
random start (Wong et al. 2020), all served by one projected-gradient loop, ``perturb``.

BatchNorm and dropout during the inner attack: the model is put in **eval mode** while the
perturbation is searched (running BatchNorm statistics, no dropout), so the attack sees one fixed
function and the adversarial batch never enters the running statistics twice; the weight update
that follows runs in **train mode**, on the adversarial batch (TRADES: on the clean and the
adversarial batch), as any training step does.

Every random start draws from an explicit ``torch.Generator``: a seeded run is reproducible bit
for bit on the same machine, and a resumed run continues the same stream.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn import functional as F

EVAL_IMAGES = 500  # the fixed, seeded held-out subset robust accuracy is tracked on, per epoch
EVAL_STEPS = 10  # PGD-10 on it, step 2.5 eps / steps (SPEC section 6's rule)

# Catastrophic overfitting (Wong et al. 2020; Rice et al. 2020): held-out PGD accuracy that falls by
# at least this much in one epoch, to below half of the best epoch's, is a collapse, not noise.
COLLAPSE_DROP = 0.20
COLLAPSE_FRACTION = 0.5

LossFn = Callable[[Tensor], Tensor]  # adversarial logits (N, K) -> per-image loss to maximise (N,)


@dataclass(frozen=True)
class Threat:
    """A perturbation budget and the steps that search it. eps, step_size in pixel units ([0, 1])."""

    eps: float
    step_size: float
    steps: int
    norm: str = "linf"


def _per_image(values: Tensor, like: Tensor) -> Tensor:
    """(N,) -> (N, 1, 1, ...), broadcasting one value per image over ``like``'s image axes."""
    return values.reshape(-1, *([1] * (like.dim() - 1)))


def _project(delta: Tensor, threat: Threat) -> Tensor:
    if threat.norm == "linf":
        return delta.clamp(-threat.eps, threat.eps)
    norms = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * _per_image((threat.eps / norms).clamp(max=1.0), delta)


def _ascent(grad: Tensor, threat: Threat) -> Tensor:
    """The steepest-ascent direction of unit norm: sign for Linf, the normalised gradient for L2."""
    if threat.norm == "linf":
        return grad.sign()
    return grad / _per_image(grad.flatten(1).norm(dim=1).clamp_min(1e-12), grad)


def random_start(images: Tensor, threat: Threat, generator: torch.Generator, scale: float | None = None) -> Tensor:
    """A start drawn in the budget ball: uniform in the Linf box or the L2 ball; with ``scale``, a
    small Gaussian (TRADES starts at x + 0.001 N(0, 1)). images: (N, ...) -> delta of that shape."""
    noise = torch.randn if scale is not None or threat.norm == "l2" else torch.rand
    draw = noise(images.shape, generator=generator, device=generator.device).to(images.device, images.dtype)
    if scale is not None:
        return draw * scale
    if threat.norm == "linf":
        return (2 * draw - 1) * threat.eps
    dims = images[0].numel()
    radius = torch.rand(images.shape[0], generator=generator, device=generator.device).to(images.device) ** (1 / dims)
    return draw / _per_image(draw.flatten(1).norm(dim=1).clamp_min(1e-12), draw) * _per_image(radius * threat.eps, draw)


def perturb(model: nn.Module, images: Tensor, loss_fn: LossFn, threat: Threat, start: Tensor) -> Tensor:
    """Projected gradient ascent of ``loss_fn`` from ``images + start``: the one loop of every method
    here. Runs the model in eval mode (restored after). images: (N, C, H, W) in [0, 1] -> (N, C, H, W)
    in [0, 1], within ``threat.eps`` of ``images``."""
    was_training = model.training
    model.eval()
    delta = ((images + _project(start, threat)).clamp(0, 1) - images).detach()
    for _ in range(threat.steps):
        delta.requires_grad_(True)
        loss = loss_fn(model(images + delta)).sum()
        (grad,) = torch.autograd.grad(loss, delta)
        with torch.no_grad():
            delta = _project(delta + threat.step_size * _ascent(grad, threat), threat)
            delta = (images + delta).clamp(0, 1) - images  # pixels stay in [0, 1]
    model.train(was_training)
    return (images + delta).detach()


def ce_loss(labels: Tensor) -> LossFn:
    return lambda logits: F.cross_entropy(logits, labels, reduction="none")


def kl_loss(clean_logits: Tensor) -> LossFn:
    """TRADES' inner loss: KL(f(x) || f(x')) per image, f(x) fixed."""
    target = F.softmax(clean_logits.detach(), dim=1)
    return lambda logits: F.kl_div(F.log_softmax(logits, dim=1), target, reduction="none").sum(1)


def training_loss(model: nn.Module, images: Tensor, labels: Tensor, method: str, threat: Threat, beta: float,
                  generator: torch.Generator) -> Tensor:
    """One batch's training loss under ``method`` (the model is in train mode for it).

    - pgd: CE on the PGD adversarial (uniform start, K steps);
    - fgsm-rs: the same with one step (K = 1, step 1.25 eps by default);
    - trades: CE(f(x), y) + beta * KL(f(x) || f(x')), x' from K steps on the KL from x + 0.001 N(0, 1).
    images: (N, C, H, W) float in [0, 1]; labels: (N,)."""
    if method == "trades":
        with torch.no_grad():
            was_training = model.training
            clean_for_attack = model.eval()(images)
            model.train(was_training)
        adv = perturb(model, images, kl_loss(clean_for_attack), threat, random_start(images, threat, generator, 0.001))
        logits = model(images)
        robust = F.kl_div(F.log_softmax(model(adv), dim=1), F.softmax(logits, dim=1), reduction="batchmean")
        return F.cross_entropy(logits, labels) + beta * robust
    adv = perturb(model, images, ce_loss(labels), threat, random_start(images, threat, generator))
    return F.cross_entropy(model(adv), labels)


def eval_threat(eps: float, norm: str) -> Threat:
    """The held-out check's attack: PGD-10, step 2.5 eps / 10."""
    return Threat(eps=eps, step_size=2.5 * eps / EVAL_STEPS, steps=EVAL_STEPS, norm=norm)


def robust_accuracy(model: nn.Module, images: Tensor, labels: Tensor, threat: Threat, generator: torch.Generator,
                    batch_size: int = 250) -> tuple[float, float]:
    """(clean accuracy, PGD robust accuracy) on ``images`` (N, C, H, W) in [0, 1]; an image counts as
    robust when it is classified right both clean and after the attack. Batches of ``batch_size``
    bound the memory to that many images' activations and gradients."""
    was_training = model.training
    model.eval()
    clean = robust = 0
    for start in range(0, images.shape[0], batch_size):
        x, y = images[start : start + batch_size], labels[start : start + batch_size]
        with torch.no_grad():
            right = model(x).argmax(1) == y
        adv = perturb(model, x, ce_loss(y), threat, random_start(x, threat, generator))
        with torch.no_grad():
            robust += int((right & (model(adv).argmax(1) == y)).sum())
        clean += int(right.sum())
    model.train(was_training)
    n = max(images.shape[0], 1)
    return clean / n, robust / n


def collapsed(robust_history: list[float]) -> bool:
    """Catastrophic overfitting at the last epoch of ``robust_history`` (held-out robust accuracy per
    epoch): it fell by at least COLLAPSE_DROP since the epoch before, to below COLLAPSE_FRACTION of
    the best epoch before it."""
    if len(robust_history) < 2:
        return False
    *before, now = robust_history
    return before[-1] - now >= COLLAPSE_DROP and now < COLLAPSE_FRACTION * max(before)
