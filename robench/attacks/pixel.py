"""Few-pixel attack by differential evolution (Su et al. 2019), batched over images and population.

Each image keeps a population of candidates in the shared encoding of ``candidates.py``
(``pixels`` rows of ``(row, col, c_1..c_C)``). Peers evaluate one candidate (or one image) at a
time; here every generation paints the whole population of every still-active image into one
batch and runs one forward pass (chunked only to bound memory), so the only Python loops are over
generations and chunks.

Defaults are the paper's scheme (rand/1 base, no crossover). Two standard DE options make it much
stronger at k > 1 pixels: a best/1 base (scipy's default, used by torchattacks and ART) and a
per-pixel crossover, so a trial keeps most of its parent's pixels while one is tried anew.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome
from robench.memory import require
from robench.attacks.candidates import (BOUNDS, FORWARDS, SEARCH_DTYPES, EvalMode, evaluate, few_pixel_spec, paint, pixel_records,
                                        pixel_upper, search_forward)
from robench.attacks.candidates import forward_batch as _forward_batch
from robench.attacks.spec import PaperTable, builtin_attack

# v = base + F * (x_a -/+ x_b). "literal" is the paper's printed eq. 6, almost surely a typo:
# its sum pushes every coordinate towards the upper bound; kept so the typo's effect can be measured.
MUTATIONS: dict[str, Callable[[Tensor, Tensor, Tensor, float], Tensor]] = {
    "de": lambda a, b, c, f: a + f * (b - c),
    "literal": lambda a, b, c, f: a + f * (b + c),
}

# The base vector of a mutant: a random member distinct from the others (rand/1, Su et al. and the
# paper) or the image's current best member (best/1, scipy's default).
STRATEGIES = ("rand1", "best1")
CROSSOVERS = ("none", "pixel")

__all__ = ["BOUNDS", "MUTATIONS", "PixelAttackConfig", "draw_parents", "forward_batch", "mutate", "paint",
           "pixel_attack"]


@dataclass(frozen=True)
class PixelAttackConfig:
    """DE settings; defaults are the paper's (§8.2: population 400, at most 40 generations, F = 0.5)."""

    pixels: int = 1  # pixels changed per image (the paper uses 1, 3, 5)
    population: int = 400
    generations: int = 40  # at most this many generations after the initial population
    f: float = 0.5  # DE scale factor
    mutation: str = "de"  # a key of MUTATIONS
    bounds: str = "clip"  # a key of BOUNDS
    strategy: str = "rand1"  # base vector: rand1 (the paper) or best1 (the image's best member)
    crossover: str = "none"  # none (the paper: a trial is the mutant) or pixel (binomial, per pixel)
    # Probability that a pixel of the trial comes from the mutant (crossover "pixel"); one pixel
    # always does, so a trial never equals its parent. None means 1/pixels: one new pixel per trial
    # on average, which keeps the good pixels already found.
    crossover_rate: float | None = None
    # Most candidate images in one forward pass; None picks 512 on a CPU and 8192 on a GPU
    # (candidates.forward_batch says why).
    max_batch: int | None = None
    forward: str = "auto"  # the search's forward: auto, incremental, eager or compiled (candidates.search_forward)
    search_dtype: str = "float32"  # the search's precision: float32, bf16 or fp16; verdicts stay float32
    # Stop an image at its first misclassified candidate (Su et al.: enough to count a success).
    # False searches every generation and keeps the misclassified candidate of lowest true-class
    # probability: an image once fooled stays fooled, and |Z_true - Z_adv| grows, as the paper's
    # avg|Z| values suggest it was measured (REPRODUCTION.md). It costs the full query budget.
    early_stop: bool = True

    def __post_init__(self) -> None:
        if self.forward not in FORWARDS:
            raise ValueError(f"unknown forward {self.forward!r}; known: {', '.join(FORWARDS)}")
        if self.search_dtype not in SEARCH_DTYPES:
            raise ValueError(f"unknown search dtype {self.search_dtype!r}; known: {', '.join(SEARCH_DTYPES)}")
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
        if self.strategy not in STRATEGIES:
            raise ValueError(f"unknown strategy {self.strategy!r}; known: {', '.join(STRATEGIES)}")
        if self.crossover not in CROSSOVERS:
            raise ValueError(f"unknown crossover {self.crossover!r}; known: {', '.join(CROSSOVERS)}")
        if self.crossover_rate is not None and not 0 < self.crossover_rate <= 1:
            raise ValueError(f"crossover_rate must be in (0, 1], got {self.crossover_rate}")
        if self.crossover_rate is not None and self.crossover == "none":
            raise ValueError("crossover_rate needs crossover: pixel")
        if self.max_batch is not None and self.max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {self.max_batch}")

    @property
    def rate(self) -> float:
        """The crossover rate in use (1/pixels unless set)."""
        return self.crossover_rate if self.crossover_rate is not None else 1.0 / self.pixels


def _keep_lowest_fooled(winner: Tensor, kept_fit: Tensor, idx: Tensor, trial: Tensor, trial_fit: Tensor,
                        fooled: Tensor) -> None:
    """Per image (rows ``idx`` of ``winner``/``kept_fit``), keep the misclassified trial of lowest
    true-class probability seen so far, in place."""
    masked = torch.where(fooled, trial_fit, torch.full_like(trial_fit, float("inf")))
    low, j = masked.min(1)
    better = low < kept_fit[idx]
    winner[idx[better]] = trial[better, j[better]]
    kept_fit[idx[better]] = low[better]


def forward_batch(config: PixelAttackConfig, device: torch.device) -> int:
    """Candidate images per forward pass: ``max_batch``, or 512 on a CPU / 8192 on a GPU."""
    return _forward_batch(config.max_batch, device)


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


def crossover(parent: Tensor, mutant: Tensor, rate: float, generator: torch.Generator) -> Tensor:
    """Binomial crossover per pixel: each of a trial's k pixels (A, P, k, D) comes whole from the
    mutant with probability ``rate``, else from the parent; one random pixel always comes from the
    mutant (DE's j_rand), so every trial differs from its parent."""
    a, p, k = parent.shape[:3]
    dev = generator.device
    take = torch.rand(a, p, k, generator=generator, device=dev) < rate
    forced = torch.randint(k, (a, p), generator=generator, device=dev)
    take = take | (torch.arange(k, device=dev) == forced[..., None])
    return torch.where(take.to(parent.device)[..., None], mutant, parent)


def population_bytes(images: int, population: int, pixels: int, channels: int) -> int:
    """An upper bound on what the DE keeps per run: the population, its trials and mutants and their
    fitness (float32, up to 4 copies of (N, P, k, 2 + C)) and the parents' int64 indices with their
    temporaries (about 8 per member)."""
    return images * population * (4 * 4 * pixels * (2 + channels) + 8 * 8)


@torch.no_grad()
def pixel_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: PixelAttackConfig, generator: torch.Generator
) -> AttackOutcome:
    """Untargeted k-pixel DE attack on ``images`` (N, C, H, W) in [0, 1] with ``labels`` (N,).

    Initial rows/cols and colours are uniform over their ranges. Su et al. drew colours from
    N(128, 127) on 0-255, which puts about a third of them outside the range, piled on 0 and 255
    by clipping; uniform covers the colour cube evenly, needs no clipping, and SPEC fixes no init.
    Trials (mutants, crossed with their parent when ``crossover`` is pixel) replace parents when no
    worse. Fitness is the softmax probability of the true class (``candidates.evaluate``, loss
    "prob"). An image stops at its first misclassified candidate, which becomes its adversarial
    image (with ``early_stop`` False, every image runs every generation and ends with its lowest-
    fitness misclassified candidate); the others get their lowest-fitness candidate. All randomness comes from ``generator``,
    which may live on another device than the images. queries (N,) counts candidates evaluated;
    details["pixels"] holds each image's painted candidate.
    """
    device = images.device
    n, c, h, w = images.shape
    p, k = config.population, config.pixels
    require(population_bytes(n, p, k, c), f"a DE population of {p} x {k} pixels for {n} images", device,
            "--population, --pixels or --images")
    labels = labels.to(device)
    upper = pixel_upper(images.shape, device)  # (D,), D = 2 + C; lower bounds are 0
    chunk = forward_batch(config, device)

    def draw_uniform(*shape: int) -> Tensor:
        return torch.rand(shape, generator=generator, device=generator.device).to(device)

    with EvalMode(model):
        fwd = search_forward(model, config.forward, n * p * (config.generations + 1), images, chunk, fixed_batch=True,
                             dtype=config.search_dtype)
        queries = torch.full((n,), p, dtype=torch.int64, device=device)
        winner = torch.zeros(n, k, 2 + c, device=device)  # the candidate each image ends with
        idx = torch.arange(n, device=device)  # original index of each active image
        pop = draw_uniform(n, p, k, 2 + c) * upper
        fit, fooled = evaluate(model, images, labels, pop, "prob", chunk, fwd)
        trial, trial_fit = pop, fit
        kept_fit = torch.full((n,), float("inf"), device=device)  # without early stop: the best misclassified so far
        for generation in range(config.generations + 1):
            if config.early_stop:
                hit = fooled.any(1)  # (A,)
                first = fooled.to(torch.uint8).argmax(1)  # argmax returns the first maximal index
                winner[idx[hit]] = trial[hit, first[hit]]
                idx, pop, fit = idx[~hit], pop[~hit], fit[~hit]
            else:
                _keep_lowest_fooled(winner, kept_fit, idx, trial, trial_fit, fooled)
            if generation == config.generations or len(idx) == 0:
                break
            r1, r2, r3 = (r.to(device) for r in draw_parents(len(idx), p, generator))
            if config.strategy == "best1":  # base: the image's best member, differences from r1, r2
                best = fit.argmin(1, keepdim=True).expand(-1, p)
                mutant = mutate(pop, best, r1, r2, config.f, config.mutation)
            else:
                mutant = mutate(pop, r1, r2, r3, config.f, config.mutation)
            mutant = BOUNDS[config.bounds](mutant, upper)
            trial = crossover(pop, mutant, config.rate, generator) if config.crossover == "pixel" else mutant
            trial_fit, fooled = evaluate(model, images, labels, trial, "prob", chunk, fwd, rows=idx)
            queries[idx] += p
            better = trial_fit <= fit
            pop = torch.where(better[..., None, None], trial, pop)
            fit = torch.where(better, trial_fit, fit)
        unfooled = ~torch.isfinite(kept_fit[idx])  # images still searching (all, without early stop) never fooled
        winner[idx[unfooled]] = pop[unfooled, fit[unfooled].argmin(1)]
    return AttackOutcome(adversarial=paint(images, winner), queries=queries, details={"pixels": pixel_records(winner)},
                         meta=fwd.meta())


def de_variant(c: PixelAttackConfig) -> str:
    """The DE scheme when it is not the paper's (it changes the numbers): ``best1-xpixel``."""
    parts = [c.strategy] if c.strategy != "rand1" else []
    if c.crossover != "none":
        parts.append(f"x{c.crossover}" + (f"{c.crossover_rate:g}" if c.crossover_rate is not None else ""))
    if not c.early_stop:
        parts.append("noearlystop")
    return "-".join(parts)


builtin_attack(few_pixel_spec(
    "pixel", PixelAttackConfig, pixel_attack,
    tag=lambda c: f"{c.pixels}px" + (f"-{de_variant(c)}" if de_variant(c) else ""),
    variant=de_variant,
    title="Few-pixel DE ({variant}), successes",
    order=10,
    paper_table=PaperTable("table2_pixel", "Table 2: few-pixel DE attack, successes"),
    cost=10,
    # A worst case wants each member at its strongest: inside an ensemble the DE runs its best1 base with
    # per-pixel crossover (84 of 100 at 3 px on the shipped ReLU LeNet-5, against the paper scheme's 50,
    # and faster, as it stops earlier). member_options override these.
    member_defaults={"strategy": "best1", "crossover": "pixel"},
    aliases=("de",),  # "de" reads better in a member list
    quick={"population": 12, "generations": 2},
))
