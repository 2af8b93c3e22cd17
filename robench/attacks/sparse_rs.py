"""Sparse-RS (Croce et al., AAAI 2022): score-based random search for k-pixel perturbations.

Each image holds one current candidate: k distinct pixel positions, each painted a corner of the
colour cube ({0, 1}^C, the L0 threat's most extreme colours). Every iteration proposes, per
still-active image, a new candidate that moves ``m`` of its k pixels to positions not yet used
(with fresh corner colours) and keeps it when the untargeted margin loss (true logit minus the
best other logit) goes down. ``m`` starts at ``p_init * k`` and shrinks on the paper's
piecewise-constant schedule, rescaled to the query budget, so the search goes from broad moves
to single-pixel refinements. An image stops at its first misclassified candidate.

Candidates use the DE's encoding (``candidates.py``) and are scored by the same evaluator: one
batched forward pass per iteration over the candidates of all still-active images.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome
from robench.attacks.candidates import (FORWARDS, SEARCH_DTYPES, EvalMode, check_search_budget, evaluate, few_pixel_spec, forward_batch,
                                        paint, pixel_records, scheduled_share, search_forward)
from robench.attacks.spec import builtin_attack, nondefault_parts

# The paper's L0 schedule: iteration (on a 10,000-query scale) above which p_init is divided by
# the factor, read in order; below the first threshold p = p_init.
_SCHEDULE = ((8000, 20), (6000, 15), (4000, 12), (2000, 10), (1000, 8), (500, 6), (200, 5), (50, 4), (0, 2))


@dataclass(frozen=True)
class SparseRSConfig:
    """Sparse-RS settings. The default budget, 16,400 queries, is the paper DE's full budget
    (population 400 x (1 + 40 generations)), so the two attacks compare at equal cost."""

    pixels: int = 1
    queries: int = 16_400  # most model evaluations per image, the initial candidate included
    p_init: float = 0.8  # fraction of the k pixels moved at first (Sparse-RS's alpha_init for L0)
    # Most candidate images in one forward pass (None: 512 on a CPU, 8192 on a GPU). One candidate
    # per image per iteration, so this only binds for more images than that.
    max_batch: int | None = None
    forward: str = "auto"  # the search's forward: auto, incremental, eager or compiled (candidates.search_forward)
    search_dtype: str = "float32"  # the search's precision: float32, bf16 or fp16; verdicts stay float32

    def __post_init__(self) -> None:
        if self.forward not in FORWARDS:
            raise ValueError(f"unknown forward {self.forward!r}; known: {', '.join(FORWARDS)}")
        if self.search_dtype not in SEARCH_DTYPES:
            raise ValueError(f"unknown search dtype {self.search_dtype!r}; known: {', '.join(SEARCH_DTYPES)}")
        if self.pixels < 1:
            raise ValueError(f"pixels must be >= 1, got {self.pixels}")
        check_search_budget(self.queries, self.p_init, self.max_batch)


def pixels_to_move(iteration: int, config: SparseRSConfig) -> int:
    """How many of the k pixels iteration ``iteration`` (1-based) moves: p(it) * k, at least 1."""
    p = scheduled_share(iteration, config.queries, config.p_init, _SCHEDULE)
    return max(int(p * config.pixels), 1)


def _corners(shape: tuple[int, ...], generator: torch.Generator, device: torch.device) -> Tensor:
    return torch.randint(2, shape, generator=generator, device=generator.device).to(device, torch.float32)


def _free_positions(used: Tensor, count: int, spots: int, generator: torch.Generator) -> Tensor:
    """``count`` distinct positions (A, count) per row, uniform among the ``spots`` not in ``used`` (A, u)."""
    keys = torch.rand(used.shape[0], spots, generator=generator, device=generator.device).to(used.device)
    keys.scatter_(1, used, -1.0)  # used positions sort last
    return keys.topk(count, dim=1).indices


def _coordinates(h: int, w: int, device: torch.device) -> Tensor:
    """(H*W, 2) float (row, col) of each flat position, for the shared candidate encoding."""
    spots = torch.arange(h * w, device=device)
    return torch.stack([torch.div(spots, w, rounding_mode="floor"), spots % w], -1).float()


@torch.no_grad()
def sparse_rs_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: SparseRSConfig, generator: torch.Generator
) -> AttackOutcome:
    """Untargeted k-pixel Sparse-RS on ``images`` (N, C, H, W) in [0, 1] with ``labels`` (N,).

    A proposal replaces the current candidate when its margin is strictly lower (as in Sparse-RS);
    a misclassified proposal ends the image's search and becomes its adversarial image. Images the
    search did not fool get their lowest-margin candidate. queries (N,) counts model evaluations;
    details["pixels"] holds each image's painted candidate. All randomness comes from ``generator``.
    """
    device = images.device
    n, c, h, w = images.shape
    k = config.pixels
    spots = h * w
    if k > spots:
        raise ValueError(f"pixels {k} exceeds the {spots} pixels of a {h}x{w} image")
    labels = labels.to(device)
    chunk = forward_batch(config.max_batch, device)

    # one proposal per standing image: the batch shrinks as images fall, so "auto" never compiles
    with EvalMode(model):
        fwd = search_forward(model, config.forward, n * config.queries, images, min(n, chunk), fixed_batch=False,
                             dtype=config.search_dtype)
        coords = _coordinates(h, w, device)
        empty = torch.zeros(n, 0, dtype=torch.int64, device=device)
        positions = _free_positions(empty, k, spots, generator)  # (N, k) distinct flat positions
        colours = _corners((n, k, c), generator, device)
        best = torch.cat([coords[positions], colours], -1)
        margin, fooled = (t[:, 0] for t in evaluate(model, images, labels, best[:, None], "margin", chunk, fwd))
        queries = torch.ones(n, dtype=torch.int64, device=device)
        # The state of the images still searching, compacted: idx (A,) their indices, the rest theirs.
        idx = (~fooled).nonzero().flatten()
        positions, colours, proposal_best, margin = positions[idx], colours[idx], best[idx], margin[idx]
        iteration = 0
        for iteration in range(1, config.queries):
            if len(idx) == 0:
                break
            m = pixels_to_move(iteration, config)
            a = len(idx)
            # Which m of the k slots move (per image), where to, and in which corner colour.
            slots = torch.rand(a, k, generator=generator, device=generator.device).to(device).topk(m, dim=1).indices
            new_pos = positions.scatter(1, slots, _free_positions(positions, m, spots, generator))
            new_col = colours.scatter(1, slots[..., None].expand(-1, -1, c), _corners((a, m, c), generator, device))
            proposal = torch.cat([coords[new_pos], new_col], -1)
            new_margin, new_fooled = (t[:, 0] for t in evaluate(model, images, labels, proposal[:, None], "margin",
                                                                chunk, fwd, rows=idx))
            take = (new_margin < margin) | new_fooled
            positions = torch.where(take[:, None], new_pos, positions)
            colours = torch.where(take[:, None, None], new_col, colours)
            proposal_best = torch.where(take[:, None, None], proposal, proposal_best)
            margin = torch.where(take, new_margin, margin)
            if new_fooled.any():  # these stop here, with 1 + iteration queries
                best[idx[new_fooled]] = proposal_best[new_fooled]
                queries[idx[new_fooled]] = 1 + iteration
                stay = ~new_fooled
                idx, positions, colours, proposal_best, margin = (t[stay] for t in (idx, positions, colours,
                                                                                   proposal_best, margin))
        best[idx] = proposal_best  # never fooled: their lowest-margin candidate, after every query
        queries[idx] = 1 + iteration
    return AttackOutcome(adversarial=paint(images, best), queries=queries, details={"pixels": pixel_records(best)},
                         meta=fwd.meta())


builtin_attack(few_pixel_spec(
    "sparse_rs", SparseRSConfig, sparse_rs_attack,
    tag=lambda c: "-".join([f"{c.pixels}px", *nondefault_parts(c, {"pixels", "max_batch", "forward", "search_dtype"})]),
    variant=lambda c: "-".join(nondefault_parts(c, {"pixels", "max_batch", "forward"})),
    title="Sparse-RS k-pixel attack{variant}, successes",
    variant_format=" ({})",
    order=20,
    cost=20,
    strongest=("l0",),
    quick={"queries": 40},
))
