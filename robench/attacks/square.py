"""Square attack (Andriushchenko et al., ECCV 2020): score-based random search under an Linf budget.

robench's gradient-free check on its Linf numbers. PGD and FMN follow the model's gradient, so a
model whose gradient is uninformative (saturated, shattered, masked) looks robust to them without
being robust; Square only reads the logits, as Sparse-RS does for the L0 threat. Where Square
fools clearly more images than every gradient attack at the same budget, ``robench report`` says
the gradients may be masked.

Each image starts from vertical stripes of +-eps (one sign per channel and column) and holds one
current perturbation. Every iteration proposes, per still-active image, a new perturbation that
sets one random s x s square to +-eps (one sign per channel, drawn again when it would change
nothing) and keeps it when the margin (true logit minus the best other logit) goes down; an image
stops at its first misclassified proposal. The square's area is p(it) of the image, p starting at
``p_init`` and halving on the paper's piecewise-constant schedule, rescaled to the query budget.
Positions and signs are drawn per image, so the whole batch moves in one forward pass per
iteration (the reference implementation loops over images; AutoAttack's draws one square for the
whole batch).
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome, EvalMode
from robench.attacks.candidates import LOSSES, check_search_budget, forward_batch, scheduled_share
from robench.attacks.spec import AttackSpec, builtin_attack, member_options, nondefault_parts, setting_label

# The paper's schedule (AutoAttack's copy of it): iteration on a 10,000-query scale above which
# p_init is divided by the factor, read in order; at or below the first threshold p = p_init.
_SCHEDULE = ((8000, 512), (6000, 256), (4000, 128), (2000, 64), (1000, 32), (500, 16), (200, 8), (50, 4), (10, 2))
_REDRAWS = 16  # most sign draws for a square that would leave an image unchanged (each repeats w.p. 2^-C)


@dataclass(frozen=True)
class SquareConfig:
    """Square attack settings. The defaults are AutoAttack's (5,000 queries, p_init 0.8, margin
    loss), the black-box member reviewers expect beside PGD. epsilons are Linf budgets on the
    [0, 1] pixel scale, each its own setting (the same grid as PGD's)."""

    epsilons: tuple[float, ...] = (1 / 255, 2 / 255, 4 / 255, 8 / 255)
    queries: int = 5_000  # most model evaluations per image, the initial stripes included
    p_init: float = 0.8  # fraction of the image the first squares cover
    # Most images in one forward pass (None: 512 on a CPU, 8192 on a GPU); one proposal per image per
    # iteration, so this only binds for more images than that.
    max_batch: int | None = None

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        if not self.epsilons or any(not 0 < e <= 1 for e in self.epsilons):
            raise ValueError(f"every epsilon must be in (0, 1] (pixels live in [0, 1]), got {list(self.epsilons)}")
        if len(set(self.epsilons)) != len(self.epsilons):
            raise ValueError(f"epsilons must be distinct, got {list(self.epsilons)}")
        check_search_budget(self.queries, self.p_init, self.max_batch)


def square_side(iteration: int, config: SquareConfig, height: int, width: int) -> int:
    """Side of the square iteration ``iteration`` (1-based) redraws: sqrt(p(it) * H * W), rounded,
    at least 1 and below the image's shorter side (as in the paper's code)."""
    p = scheduled_share(iteration, config.queries, config.p_init, _SCHEDULE)
    return max(min(round(math.sqrt(p * height * width)), min(height, width) - 1), 1)


def _signs(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(2, shape, generator=generator, device=generator.device).to(device, torch.float32) * 2 - 1


def _margins(model: nn.Module, images: Tensor, labels: Tensor, chunk: int) -> tuple[Tensor, Tensor]:
    """Margin (A,) and misclassification (A,) of ``images`` (A, C, H, W), in chunks of ``chunk``."""
    margin, fooled = [], []
    for start in range(0, len(images), chunk):  # chunks only bound memory
        logits = model(images[start : start + chunk]).float()
        y = labels[start : start + chunk]
        margin.append(LOSSES["margin"](logits, y))
        fooled.append(logits.argmax(1) != y)
    return torch.cat(margin), torch.cat(fooled)


@torch.no_grad()
def square_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: SquareConfig, generator: torch.Generator
) -> AttackOutcome:
    """Untargeted Linf Square attack at ``config.epsilons[0]`` on ``images`` (N, C, H, W) in [0, 1]
    with ``labels`` (N,).

    A proposal replaces the current image when its margin is strictly lower; a misclassified
    proposal ends the image's search and is its adversarial image. Images the search did not fool
    get their lowest-margin image. queries (N,) counts model evaluations. Every image stays within
    eps of its clean self and in [0, 1]. All randomness comes from ``generator``.
    """
    device = images.device
    n, c, h, w = images.shape
    eps = config.epsilons[0]
    labels = labels.to(device)
    chunk = forward_batch(config.max_batch, device)
    rows_idx = torch.arange(h, device=device)
    cols_idx = torch.arange(w, device=device)
    with EvalMode(model):
        best = (images + eps * _signs((n, c, 1, w), generator, device)).clamp(0, 1)  # vertical stripes
        margin, fooled = _margins(model, best, labels, chunk)
        queries = torch.ones(n, dtype=torch.int64, device=device)  # the stripes; each image's count set when it leaves
        spent = 1
        # The standing images' state, compacted: rows leave when fooled, so no step gathers from all N.
        who = (~fooled).nonzero().flatten()
        clean, y, current, margin = images[who], labels[who], best[who], margin[who]
        for iteration in range(1, config.queries):
            if len(who) == 0:
                break
            a = len(who)
            s = square_side(iteration, config, h, w)
            top = torch.randint(h - s + 1, (a, 1), generator=generator, device=generator.device).to(device)
            left = torch.randint(w - s + 1, (a, 1), generator=generator, device=generator.device).to(device)
            inside = (((rows_idx >= top) & (rows_idx < top + s))[:, :, None] &
                      ((cols_idx >= left) & (cols_idx < left + s))[:, None, :])[:, None]  # (A, 1, H, W)
            proposal = _square(clean, current, inside, eps, generator)
            same = (proposal == current).flatten(1).all(1)
            for _ in range(_REDRAWS):  # redraw the signs of squares that would change nothing
                if not same.any():
                    break
                r = same.nonzero().flatten()
                proposal[r] = _square(clean[r], current[r], inside[r], eps, generator)
                same[r] = (proposal[r] == current[r]).flatten(1).all(1)
            new_margin, new_fooled = _margins(model, proposal, y, chunk)
            spent += 1
            take = (new_margin < margin) | new_fooled
            current = torch.where(take[:, None, None, None], proposal, current)
            margin = torch.where(take, new_margin, margin)
            if new_fooled.any():
                best[who[new_fooled]] = current[new_fooled]
                queries[who[new_fooled]] = spent
                keep = ~new_fooled
                who, clean, y, current, margin = who[keep], clean[keep], y[keep], current[keep], margin[keep]
        best[who], queries[who] = current, spent
    return AttackOutcome(adversarial=best, queries=queries)


def _square(clean: Tensor, current: Tensor, inside: Tensor, eps: float, generator: torch.Generator) -> Tensor:
    """``current`` (A, C, H, W) with its ``inside`` squares (A, 1, H, W) set to clip(clean +- eps),
    one random sign per image and channel."""
    signs = _signs((*clean.shape[:2], 1, 1), generator, clean.device)
    return torch.where(inside, (clean + eps * signs).clamp(0, 1), current)


builtin_attack(AttackSpec(
    "square", SquareConfig, square_attack,
    settings=lambda c: [(setting_label("linf", e), dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
    budget=lambda c: {"linf_budget": c.epsilons[0]},
    deterministic=False,
    threat=lambda c: ("linf", c.epsilons[0]),
    white_box=False,  # the black-box check on the gradient attacks' Linf numbers
    tag=lambda c: "".join(f"-{part}" for part in nondefault_parts(c, {"epsilons", "max_batch"})),
    variant=lambda c: "-".join(nondefault_parts(c, {"epsilons", "max_batch"})),
    threats=("linf",),
    at_budget=lambda norm, b, o: SquareConfig(epsilons=(b,), **member_options(o, {"epsilons"}, "square")),
    title="Square attack (Linf, black-box{variant}), successes",
    variant_format=", {}",
    order=50,
    # Linf's gradient-free Square runs last, on what the gradients left standing (as AutoAttack's
    # standard set ends with it): a worst case made only of gradient attacks would flatter a model
    # whose gradients are masked.
    default_in=("linf",),
    cost=50,
    shorthand="eps",
    quick={"queries": 40},
))
