"""Few-pixel attack by differential evolution (Su et al. 2019), batched over images and population.

Each image keeps a population of candidates; a candidate is ``pixels`` rows of
``(row, col, c_1..c_C)``, row/col continuous in [0, H-1] / [0, W-1] and rounded when painted,
colours in [0, 1]. Peers evaluate one candidate (or one image) at a time; here every generation
paints the whole population of every still-active image into one batch and runs one forward
pass (chunked only to bound memory), so the only Python loops are over generations and chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome

# v = x_r1 + F * (x_r2 -/+ x_r3). "literal" is the paper's printed eq. 6, almost surely a typo:
# its sum pushes every coordinate towards the upper bound; kept so the typo's effect can be measured.
MUTATIONS: dict[str, Callable[[Tensor, Tensor, Tensor, float], Tensor]] = {
    "de": lambda a, b, c, f: a + f * (b - c),
    "literal": lambda a, b, c, f: a + f * (b + c),
}

# Both map any real coordinate into [0, upper]; "wrap" is periodic (upper itself maps to 0, which
# rounding makes harmless for rows/cols), and a zero-width range (H == 1) maps to 0.
BOUNDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "clip": lambda x, upper: torch.minimum(x.clamp_min(0), upper),
    "wrap": lambda x, upper: torch.where(upper > 0, torch.remainder(x, upper.clamp_min(1e-12)), 0.0),
}


@dataclass(frozen=True)
class PixelAttackConfig:
    """DE settings; defaults are the paper's (§8.2: population 400, at most 40 generations, F = 0.5)."""

    pixels: int = 1  # pixels changed per image (the paper uses 1, 3, 5)
    population: int = 400
    generations: int = 40  # at most this many generations after the initial population
    f: float = 0.5  # DE scale factor
    mutation: str = "de"  # a key of MUTATIONS
    bounds: str = "clip"  # a key of BOUNDS
    # Most candidate images in one forward pass; None picks 512 on a CPU and 8192 on a GPU. The
    # painted batch alone is max_batch*C*H*W floats (8192 CIFAR images = 100 MB) plus the model's
    # activations. On 2 CPU cores LeNet-5 runs 33k images/s at batches of 512 but 14k at 8192
    # (activations no longer fit in cache), so big chunks only pay on a GPU.
    max_batch: int | None = None

    def __post_init__(self) -> None:
        if self.pixels < 1:
            raise ValueError(f"pixels must be >= 1, got {self.pixels}")
        if self.population < 4:
            raise ValueError(
                f"population must be >= 4 (each member needs 3 parents distinct from each other and from itself), "
                f"got {self.population}"
            )
        if self.generations < 0:
            raise ValueError(f"generations must be >= 0, got {self.generations}")
        if not self.f > 0:
            raise ValueError(f"f must be > 0, got {self.f}")
        if self.mutation not in MUTATIONS:
            raise ValueError(f"unknown mutation {self.mutation!r}; known: {', '.join(sorted(MUTATIONS))}")
        if self.bounds not in BOUNDS:
            raise ValueError(f"unknown bounds {self.bounds!r}; known: {', '.join(sorted(BOUNDS))}")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")


def forward_batch(config: PixelAttackConfig, device: torch.device) -> int:
    """Candidate images per forward pass: ``max_batch``, or 512 on a CPU / 8192 on a GPU."""
    return config.max_batch or (8192 if device.type == "cuda" else 512)


def draw_parents(groups: int, population: int, generator: torch.Generator) -> tuple[Tensor, Tensor, Tensor]:
    """For every member i of ``groups`` populations, three parent indices, each (groups, population)
    int64 on the generator's device, distinct from each other and from i (classic DE, Storn & Price).

    Drawn without rejection or a (P, P) key matrix: r_m is a uniform pick among the P - m indices
    not yet taken, found by stepping over the taken ones in ascending order.
    """
    dev = generator.device
    own = torch.arange(population, device=dev).expand(groups, population)
    r1 = _nth_free(torch.randint(population - 1, (groups, population), generator=generator, device=dev), own[..., None])
    taken = torch.stack([own, r1], -1).sort(-1).values
    r2 = _nth_free(torch.randint(population - 2, (groups, population), generator=generator, device=dev), taken)
    taken = torch.stack([own, r1, r2], -1).sort(-1).values
    r3 = _nth_free(torch.randint(population - 3, (groups, population), generator=generator, device=dev), taken)
    return r1, r2, r3


def _nth_free(n: Tensor, taken: Tensor) -> Tensor:
    """The n-th (0-based) integer not in ``taken`` (..., t), sorted ascending along its last dim."""
    for e in taken.unbind(-1):  # t <= 3 taken values, not a loop over members
        n = n + (n >= e).long()
    return n


def mutate(pop: Tensor, r1: Tensor, r2: Tensor, r3: Tensor, f: float, rule: str) -> Tensor:
    """Mutants of ``pop`` (A, P, ...) from parent indices r1, r2, r3 (A, P) by MUTATIONS[rule]."""
    rows = torch.arange(pop.shape[0], device=pop.device)[:, None]
    return MUTATIONS[rule](pop[rows, r1], pop[rows, r2], pop[rows, r3], f)


def paint(images: Tensor, candidates: Tensor) -> Tensor:
    """Copies of ``images`` (B, C, H, W) with the pixels of ``candidates`` (B, k, 2 + C) written in.

    When two of a candidate's pixels round to the same spot the later one wins; both writes carry
    its colour, so index_put_'s unspecified order among duplicate indices cannot change the result.
    """
    return _paint_into(images.clone(), candidates)


def _paint_into(out: Tensor, candidates: Tensor) -> Tensor:
    """paint() in place on ``out``, for batches that are already fresh copies."""
    b, k, _ = candidates.shape
    rows = candidates[..., 0].round().long()
    cols = candidates[..., 1].round().long()
    spot = rows * out.shape[-1] + cols  # (B, k)
    order = torch.arange(k, device=out.device)
    last = torch.where(spot[:, :, None] == spot[:, None, :], order, -1).amax(2)  # (B, k) index of the winner
    colours = candidates[..., 2:].gather(1, last[..., None].expand(-1, -1, out.shape[1])).to(out.dtype)
    who = torch.arange(b, device=out.device)[:, None].expand(b, k)
    out.permute(0, 2, 3, 1).index_put_((who, rows, cols), colours)  # permuted view: writes (B, k, C) into out
    return out


def _evaluate(model: nn.Module, images: Tensor, labels: Tensor, cands: Tensor, max_batch: int) -> tuple[Tensor, Tensor]:
    """Fitness (softmax probability of the true class) and misclassification of every candidate.

    images (A, C, H, W), labels (A,), cands (A, P, k, D) -> two (A, P) tensors, float32 and bool.
    """
    a, p = cands.shape[:2]
    flat = cands.reshape(a * p, *cands.shape[2:])
    owner = torch.arange(a, device=images.device).repeat_interleave(p)
    fitness, fooled = [], []
    for start in range(0, a * p, max_batch):  # chunks only bound memory
        who = owner[start : start + max_batch]
        logits = model(_paint_into(images[who], flat[start : start + max_batch])).float()  # images[who] copies
        y = labels[who]
        fitness.append(logits.softmax(1).gather(1, y[:, None]).squeeze(1))
        fooled.append(logits.argmax(1) != y)
    return torch.cat(fitness).view(a, p), torch.cat(fooled).view(a, p)


@torch.no_grad()
def pixel_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: PixelAttackConfig, generator: torch.Generator
) -> AttackOutcome:
    """Untargeted k-pixel DE attack on ``images`` (N, C, H, W) in [0, 1] with ``labels`` (N,).

    Initial rows/cols and colours are uniform over their ranges. Su et al. drew colours from
    N(128, 127) on 0-255, which puts about a third of them outside the range, piled on 0 and 255
    by clipping; uniform covers the colour cube evenly, needs no clipping, and SPEC fixes no init.
    Trials (mutants, no crossover: Su et al.'s recombination 1) replace parents when no worse.
    An image stops at its first misclassified candidate, which becomes its adversarial image;
    the others get their lowest-fitness candidate. All randomness comes from ``generator``, which
    may live on another device than the images. queries (N,) counts candidates evaluated.
    """
    device = images.device
    n, c, h, w = images.shape
    p, k = config.population, config.pixels
    labels = labels.to(device)
    upper = torch.tensor([h - 1, w - 1] + [1.0] * c, device=device)  # (D,), D = 2 + C; lower bounds are 0
    chunk = forward_batch(config, device)

    def draw_uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=generator.device).to(device)

    modes = [(m, m.training) for m in model.modules()]
    model.eval()
    try:
        queries = torch.full((n,), p, dtype=torch.int64, device=device)
        winner = torch.zeros(n, k, 2 + c, device=device)  # the candidate each image ends with
        idx = torch.arange(n, device=device)  # original index of each active image
        pop = draw_uniform(n, p, k, 2 + c) * upper
        fit, fooled = _evaluate(model, images, labels, pop, chunk)
        trial = pop
        for generation in range(config.generations + 1):
            hit = fooled.any(1)  # (A,)
            first = fooled.to(torch.uint8).argmax(1)  # argmax returns the first maximal index
            winner[idx[hit]] = trial[hit, first[hit]]
            idx, pop, fit = idx[~hit], pop[~hit], fit[~hit]
            if generation == config.generations or len(idx) == 0:
                break
            r1, r2, r3 = (r.to(device) for r in draw_parents(len(idx), p, generator))
            trial = BOUNDS[config.bounds](mutate(pop, r1, r2, r3, config.f, config.mutation), upper)
            trial_fit, fooled = _evaluate(model, images[idx], labels[idx], trial, chunk)
            queries[idx] += p
            better = trial_fit <= fit
            pop = torch.where(better[..., None, None], trial, pop)
            fit = torch.where(better, trial_fit, fit)
        winner[idx] = pop[torch.arange(len(idx), device=device), fit.argmin(1)]
        return AttackOutcome(adversarial=paint(images, winner), queries=queries)
    finally:
        for m, training in modes:
            m.training = training
