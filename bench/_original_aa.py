"""The original AutoAttack (PyPI ``pyautoattack``) as the bench scripts call it, and who fooled what.

Shared by bench/autoattack_parity.py and bench/autoattack_recheck.py so that both run the reference
the same way: ``version='standard'`` (APGD-CE, APGD-T 9 targets, FAB-T, Square), seed 0, on the CPU,
one batch. ``fool_rates`` answers the question a single disagreement raises: is robench's member
weaker on that image, or did one random start land on the other side of a hairline margin? Tests
never import this file (nor pyautoattack).
"""

from __future__ import annotations

import os
import platform
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from robench.attacks.apgd import APGDConfig, APGDTConfig, apgd_images

NORMS = {"linf": "Linf", "l2": "L2"}
# pyautoattack's member objects by the name its run_standard_evaluation logs, and robench's twin
MEMBERS = {"apgd-ce": ("apgd", "apgd"), "apgd-t": ("apgd_targeted", "apgd_t"), "fab-t": ("fab", None),
           "square": ("square", "square")}


def machine() -> str:
    """The CPU, cores, torch threads and versions, and the load: printed with every bench figure."""
    info = Path("/proc/cpuinfo").read_text().splitlines() if Path("/proc/cpuinfo").exists() else []
    cpu = next((line.split(":", 1)[1].strip() for line in info if line.startswith("model name")), platform.processor())
    return f"{cpu}, {os.cpu_count()} cores, {torch.get_num_threads()} torch thread(s), torch {torch.__version__}, " \
           f"Python {platform.python_version()}, load average {os.getloadavg()[0]:.2f}"


def robust_of(model: nn.Module, y: Tensor, adv: Tensor) -> Tensor:
    """Per image: still classified right at ``adv``."""
    with torch.no_grad():
        return model(adv).argmax(1) == y


def original_autoattack(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float,
                        seed: int = 0) -> tuple[Tensor, list[str | None]]:
    """The original's standard evaluation on ``x`` (N, C, H, W), ``y`` (N,): its adversarial images,
    and per image the member that fooled it (None: robust, or misclassified before any attack).

    The members are wrapped, not changed: each call's inputs are matched to rows of ``x`` by their
    bytes, so the record holds whichever batch the original hands its members."""
    from pyautoattack import AutoAttack

    aa = AutoAttack(model, norm=NORMS[norm], eps=eps, version="standard", seed=seed, device="cpu")
    aa.verbose = False
    row_of = {bytes(row.numpy().tobytes()): i for i, row in enumerate(x.cpu())}
    broken_by: list[str | None] = [None] * len(y)

    def wrap(name: str, member: Any) -> None:
        perturb = member.perturb

        def recorded(xb: Tensor, yb: Tensor, *args: Any, **kwargs: Any) -> Tensor:
            adv = perturb(xb, yb, *args, **kwargs)
            fooled = ~robust_of(model, yb, adv)
            for row, hit in zip(xb.cpu(), fooled.tolist(), strict=True):
                i = row_of.get(bytes(row.numpy().tobytes()))
                if hit and i is not None and broken_by[i] is None:
                    broken_by[i] = name
            return adv

        member.perturb = recorded

    for name, (attr, _) in MEMBERS.items():  # the standard version runs FAB targeted only
        wrap(name, getattr(aa, attr))
    adv = aa.run_standard_evaluation(x, y, batch_size=len(y))[0]
    return adv, broken_by


def fool_rates(model: nn.Module, x: Tensor, y: Tensor, norm: str, eps: float, member: str,
               seeds: int) -> tuple[Tensor, Tensor]:
    """Per image, the share of ``seeds`` random starts in which robench's and the original's
    ``member`` (``apgd-ce`` or ``apgd-t``, 100 steps, one restart, 9 targets) fool it alone.

    Seed s seeds both tools' CPU generators alike, so on a single image they draw the same start
    and, when robench's member follows the original's, agree run by run (the rates then say how
    borderline the image is); on a batch the starts are laid out differently and the rates are two
    independent estimates."""
    from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

    ours, theirs = torch.zeros(len(y)), torch.zeros(len(y))
    for seed in range(seeds):
        if member == "apgd-t":
            config: APGDConfig = APGDTConfig(norm=norm, epsilons=(eps,))
            ref: Any = APGDAttack_targeted(model, norm=NORMS[norm], eps=eps, n_iter=100, n_restarts=1,
                                           n_target_classes=9, seed=seed, device="cpu")
        elif member == "apgd-ce":
            config = APGDConfig(norm=norm, epsilons=(eps,))
            ref = APGDAttack(model, norm=NORMS[norm], eps=eps, n_iter=100, n_restarts=1, seed=seed, device="cpu")
        else:
            raise ValueError(f"fool rates are measured for apgd-ce and apgd-t, not {member}")
        ours += apgd_images(model, x, y, config, torch.Generator().manual_seed(seed))[1].fooled.float().cpu()
        theirs += (~robust_of(model, y, ref.perturb(x, y))).float().cpu()
    return ours / seeds, theirs / seeds
