"""What every attack returns, and the one place that checks it and judges success.

An attack is a function ``(model, images, labels, config, generator) -> AttackOutcome``: it only
proposes adversarial images. ``judge`` re-runs the model on them, checks what every attack must
respect (pixels in [0, 1], no NaN, the perturbation within its budget) and says which are
successes, so no attack can count differently from another.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn


@dataclass(frozen=True)
class AttackOutcome:
    """An attack's proposal for a batch.

    adversarial: (N, C, H, W) float in [0, 1], on the images' device; the clean image where the
        attack found nothing better. queries: (N,) int64 model evaluations spent per image.
    details: per-image facts the result file keeps beside the verdicts, each a list of N
        JSON-ready values (the painted pixels of a pixel attack, which member of an ensemble broke
        the image).
    """

    adversarial: Tensor
    queries: Tensor
    details: dict[str, list[Any]] = field(default_factory=dict)
    meta: dict[str, Any] = field(default_factory=dict)  # facts of the run, not per image (the forward used)


AttackFn = Callable[[nn.Module, Tensor, Tensor, Any, torch.Generator], AttackOutcome]


class AttackBudgetError(RuntimeError):
    """An attack returned images outside [0, 1], with NaN, or beyond its budget: a bug, not a result."""


@dataclass(frozen=True)
class Judgement:
    """Per-image verdicts. All (N,) tensors on the CPU."""

    success: Tensor  # bool: the adversarial image is classified as a wrong label
    adv_label: Tensor  # int64
    p_true_clean: Tensor  # softmax prob of the true class on the clean image
    p_true_adv: Tensor  # ... on the adversarial image
    p_adv_label: Tensor  # softmax prob of the predicted label on the adversarial image
    abs_z: Tensor  # |p_true_adv - p_adv_label|, the paper's |Z_true - Z_adv|
    linf: Tensor
    l2: Tensor
    l1: Tensor
    l0_pixels: Tensor  # pixels (over all channels) that changed


@torch.no_grad()
def judge(
    model: nn.Module,
    images: Tensor,
    labels: Tensor,
    outcome: AttackOutcome,
    linf_budget: float | None = None,
    l2_budget: float | None = None,
    l1_budget: float | None = None,
    l0_budget: int | None = None,
    batch_size: int = 1000,
    tolerance: float = 1e-5,
) -> Judgement:
    """Check an outcome and judge each image; images must all be classified right when clean.

    On a CPU it computes with one thread: the stored numbers then do not depend on how many threads
    the executor gave the process (a serial run, ``--workers`` and Ray give the same last digit)."""
    with _one_cpu_thread(images.device):
        return _judge(model, images, labels, outcome, linf_budget, l2_budget, l1_budget, l0_budget, batch_size, tolerance)


@contextmanager
def _one_cpu_thread(device: torch.device) -> Iterator[None]:
    """torch's intra-op threads set to 1 for the block on a CPU: a sum split over N threads adds in
    another order than over M, which moves a float's last bit."""
    if device.type != "cpu":
        yield
        return
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _judge(model: nn.Module, images: Tensor, labels: Tensor, outcome: AttackOutcome, linf_budget: float | None,
           l2_budget: float | None, l1_budget: float | None, l0_budget: int | None, batch_size: int,
           tolerance: float) -> Judgement:
    adv = outcome.adversarial
    if adv.shape != images.shape:
        raise AttackBudgetError(f"attack returned shape {tuple(adv.shape)} for images {tuple(images.shape)}")
    if torch.isnan(adv).any():
        raise AttackBudgetError("attack returned NaN pixels")
    if adv.min() < 0 or adv.max() > 1:
        raise AttackBudgetError(f"attack returned pixels outside [0, 1] ({float(adv.min())}..{float(adv.max())})")
    norms = perturbation_norms(images, adv)
    linf, l2, l1, l0 = norms["linf"], norms["l2"], norms["l1"], norms["l0"]
    if linf_budget is not None and (linf > linf_budget + tolerance).any():
        raise AttackBudgetError(f"Linf perturbation {float(linf.max()):.6f} exceeds budget {linf_budget}")
    if l2_budget is not None and (l2 > l2_budget + tolerance).any():
        raise AttackBudgetError(f"L2 perturbation {float(l2.max()):.6f} exceeds budget {l2_budget}")
    if l1_budget is not None and (l1 > l1_budget + tolerance).any():
        raise AttackBudgetError(f"L1 perturbation {float(l1.max()):.6f} exceeds budget {l1_budget}")
    if l0_budget is not None and (l0 > l0_budget).any():
        raise AttackBudgetError(f"{int(l0.max())} pixels changed, budget {l0_budget}")

    p_clean = _probs(model, images, batch_size)
    p_adv = _probs(model, adv, batch_size)
    for what, p in (("clean", p_clean), ("adversarial", p_adv)):
        if not torch.isfinite(p).all():  # NaN's argmax is class 0: it would count as a verdict
            raise FloatingPointError(f"the model's outputs are NaN or infinite on {what} images: a broken model")
    if (p_clean.argmax(1) != labels).any():
        raise ValueError("judge() takes only images the model classifies correctly")
    rows = torch.arange(len(labels), device=labels.device)
    adv_label = p_adv.argmax(1)
    p_true_adv = p_adv[rows, labels]
    p_adv_label = p_adv[rows, adv_label]
    return Judgement(
        success=(adv_label != labels).cpu(),
        adv_label=adv_label.cpu(),
        p_true_clean=p_clean[rows, labels].cpu(),
        p_true_adv=p_true_adv.cpu(),
        p_adv_label=p_adv_label.cpu(),
        abs_z=(p_true_adv - p_adv_label).abs().cpu(),
        linf=linf.cpu(),
        l2=l2.cpu(),
        l1=l1.cpu(),
        l0_pixels=l0.cpu(),
    )


def check_norm_budgets(norm: str, epsilons: tuple[float, ...], norms: tuple[str, ...], attack: str) -> None:
    """The checks every config with a norm and a grid of budgets makes (PGD, APGD): a known norm,
    one or more distinct budgets > 0, Linf ones at most 1 (pixels live in [0, 1])."""
    if norm not in norms:
        raise ValueError(f"{attack} norm must be {' or '.join(norms)}, got {norm!r}")
    if not epsilons or any(not e > 0 for e in epsilons):
        raise ValueError(f"epsilons must be one or more budgets > 0, got {list(epsilons)}")
    if norm == "linf" and any(e > 1 for e in epsilons):
        raise ValueError(f"every Linf epsilon must be in (0, 1] (pixels live in [0, 1]), got {list(epsilons)}")
    if len(set(epsilons)) != len(epsilons):
        raise ValueError(f"epsilons must be distinct, got {list(epsilons)}")


def perturbation_norms(images: Tensor, adv: Tensor) -> dict[str, Tensor]:
    """Per-image size of ``adv - images`` (N, C, H, W) in every norm robench reports, each (N,):
    linf, l2, l1 over all values, and l0 as the number of pixels changed in any channel (the unit
    of a k-pixel attack; Foolbox's L0 counts values, at most C times as many)."""
    delta = (adv - images).flatten(1)
    return {
        "linf": delta.abs().amax(1) if delta.shape[1] else torch.zeros(len(images), device=images.device),
        "l2": delta.norm(dim=1),
        "l1": delta.abs().sum(1),
        "l0": (adv != images).any(dim=1).flatten(1).sum(1),
    }


class EvalMode:
    """Context manager: the model in eval mode inside, every module's own mode restored after."""

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modes: list[tuple[nn.Module, bool]] = []

    def __enter__(self) -> nn.Module:
        self.modes = [(m, m.training) for m in self.model.modules()]
        self.model.eval()
        return self.model

    def __exit__(self, *exc: object) -> None:
        for m, training in self.modes:
            m.training = training


def _probs(model: nn.Module, images: Tensor, batch_size: int) -> Tensor:
    return torch.cat([torch.softmax(model(images[i : i + batch_size]).float(), 1) for i in range(0, len(images), batch_size)])
