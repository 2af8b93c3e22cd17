"""Attack-failure checks: signs that a robust accuracy measures the attack's failure, not the model.

AutoAttack's own checks (Croce & Hein 2020, ``checks.py`` of the original code) and the indicators
of attack failure of Pintor et al. (NeurIPS 2022). Each check is a small function that returns a
``Check``: its name, whether it is flagged, and the evidence in words. The standard evaluation
(``autoattack``) runs them and stores them with each repeat; ``robench report`` shows them per
model and prints a flagged model's robust accuracy as unreliable.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robench.attacks.base import EvalMode

# name -> what a flag means, for the report's legend
MEANINGS: dict[str, str] = {
    "randomness": "two identical forward passes disagree: a randomised model needs EOT, not plain gradients",
    "probabilities": "the outputs are already probabilities (rows sum to 1): logit-based losses are squashed",
    "zero_gradient": "the margin's gradient is zero at some start points: gradient attacks cannot move there",
    "black_box_wins": "the black-box Square fooled images the white-box attacks did not: gradients may be masked",
    "too_few_classes": "too few classes for DLR (3) or the targeted DLR (4): those members were skipped",
    "incomplete_optimisation": "the loss was still rising over the last 10 % of the steps: more steps may fool more",
    "silent_success": "a misclassified point was found but not returned",
    "unbounded": "an attack without a budget (eps = inf) did not fool every image: the attack, not the model, fails",
    "eps_monotone": "robust accuracy does not fall as eps grows",
}


@dataclass(frozen=True)
class Check:
    name: str
    flagged: bool
    evidence: str

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def _logits(model: nn.Module, images: Tensor, chunk: int = 1000) -> Tensor:
    with torch.no_grad(), EvalMode(model):
        return torch.cat([model(images[i : i + chunk]).float() for i in range(0, len(images), chunk)])


def randomness(model: nn.Module, images: Tensor) -> Check:
    """Outputs of two identical forward passes on ``images`` (N, C, H, W)."""
    a, b = _logits(model, images), _logits(model, images)
    gap = float((a - b).abs().max()) if len(a) else 0.0
    changed = int((a.argmax(1) != b.argmax(1)).sum())
    flagged = gap > 1e-5 * max(float(a.abs().max()) if len(a) else 1.0, 1.0)
    return Check("randomness", flagged, f"largest output difference {gap:.3g}; {changed} of {len(a)} predictions changed")


def probabilities(model: nn.Module, images: Tensor) -> Check:
    """Whether the outputs are non-negative rows summing to 1."""
    z = _logits(model, images)
    sums = z.sum(1)
    flagged = bool(len(z)) and bool((z >= 0).all()) and bool(((sums - 1).abs() < 1e-4).all())
    return Check("probabilities", flagged, f"outputs in [{float(z.min()):.3g}, {float(z.max()):.3g}], "
                                           f"row sums in [{float(sums.min()):.4g}, {float(sums.max()):.4g}]")


def zero_gradient(model: nn.Module, images: Tensor, labels: Tensor) -> Check:
    """The gradient of the margin (best other logit minus the true one; it does not saturate as
    cross-entropy does on a confident image) at ``images``: flagged where it is exactly zero."""
    x = images.detach().clone().requires_grad_(True)
    with torch.enable_grad(), EvalMode(model):
        z = model(x).float()
        true = z.gather(1, labels[:, None])[:, 0]
        other = z.scatter(1, labels[:, None], -math.inf).amax(1)
        grad = torch.autograd.grad((other - true).sum(), x)[0]
    zero = int((grad.flatten(1).abs().amax(1) == 0).sum())
    return Check("zero_gradient", zero > 0, f"{zero} of {len(images)} start points have a zero gradient")


def black_box_wins(broken_by: Sequence[str | None], black_box: set[str]) -> Check:
    """Images broken by a black-box member after every white-box member failed on them."""
    won = [i for i, name in enumerate(broken_by) if name in black_box]
    return Check("black_box_wins", bool(won), f"{len(won)} of {len(broken_by)} images fooled only by "
                                              f"{'/'.join(sorted(black_box)) or 'no black-box member'}")


def too_few_classes(classes: int, skipped: Sequence[str]) -> Check:
    return Check("too_few_classes", bool(skipped), f"{classes} classes" + (f"; skipped {', '.join(skipped)}" if skipped else ""))


def incomplete_optimisation(traces: Sequence[Sequence[float] | None], share: float = 0.05) -> Check:
    """Best-loss traces (each at 0 %, 10 %, ..., 100 % of the steps; None for a fooled image): flagged
    when an image still standing gained over ``share`` of its whole gain in the last 10 % of steps."""
    kept = [t for t in traces if t is not None and len(t) >= 2]
    late = [t for t in kept if t[-1] - t[-2] > share * max(t[-1] - t[0], 0.0) and t[-1] - t[-2] > 1e-4]
    return Check("incomplete_optimisation", bool(late),
                 f"{len(late)} of {len(kept)} robust images still gained over {share:.0%} of their loss late")


def silent_success(found: Sequence[bool], returned: Tensor) -> Check:
    """Images whose search found a misclassified point (``found``) that the returned one is not."""
    silent = [i for i, (f, r) in enumerate(zip(found, returned.tolist())) if f and not r]
    return Check("silent_success", bool(silent), f"{len(silent)} of {len(found)} image attacks found a misclassified "
                                                 "point and did not return it")


def unbounded(fooled: Tensor) -> Check:
    """``fooled`` (M,): whether an attack without a budget fooled each image it was given."""
    left = int((~fooled).sum())
    return Check("unbounded", left > 0, f"{left} of {len(fooled)} images survived eps = inf")


def eps_monotone(curve: Sequence[tuple[float, float]]) -> Check:
    """(eps, robust count) pairs: flagged when a larger eps leaves more images robust."""
    ordered = sorted(curve)
    rises = [(a, b) for a, b in zip(ordered, ordered[1:]) if b[1] > a[1]]
    text = "; ".join(f"{ra:g} robust at eps {ea:.4g} but {rb:g} at {eb:.4g}" for (ea, ra), (eb, rb) in rises)
    return Check("eps_monotone", bool(rises), text or f"robust counts fall or stay over {len(ordered)} budgets")
