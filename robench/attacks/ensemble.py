"""Worst case over several attacks at one threat model (AutoAttack's rule, Croce & Hein 2020).

An image counts as robust only when every member fails on it. Members run in the order given
(cheap first by default); each gets only the images still standing, and the result records which
member broke which image. Members are registered attacks: the ensemble asks each for its config at
the threat's budget (``AttackSpec.at_budget``) and judges its proposals with ``judge`` before
trusting them, so a member cannot count a success the runner would not.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome, judge

THREATS = ("l0", "linf", "l2", "l1")
# Cheap first: a black-box DE before Sparse-RS, one gradient step before 100, FMN, then Linf's
# gradient-free Square on what the gradients left standing (as AutoAttack's standard set ends with
# it): a worst case made only of gradient attacks would flatter a model whose gradients are masked.
DEFAULT_MEMBERS: dict[str, tuple[str, ...]] = {
    "l0": ("pixel", "sparse_rs"),
    "linf": ("fgsm", "pgd", "fmn", "square"),
    "l2": ("pgd", "fmn", "cw"),
    "l1": ("fmn",),
}
ALIASES = {"de": "pixel"}  # the DE is registered as "pixel"; "de" reads better in a member list
# A worst case wants each member at its strongest: inside an ensemble the DE runs its best1 base with
# per-pixel crossover (84 of 100 at 3 px on the shipped ReLU LeNet-5, against the paper scheme's 50,
# and faster, as it stops earlier). member_options override these.
MEMBER_DEFAULTS: dict[str, dict[str, Any]] = {"pixel": {"strategy": "best1", "crossover": "pixel"}}


@dataclass(frozen=True)
class EnsembleConfig:
    """Threat model, budget and members. ``pixels`` is the budget of the l0 threat; ``epsilons``
    those of the others (each its own setting). ``member_options`` holds extra options per member
    (``{"pixel": {"strategy": "best1"}}``), on top of the budget the ensemble sets."""

    threat: str = "l0"
    members: tuple[str, ...] = ()  # empty: DEFAULT_MEMBERS[threat]
    pixels: int = 1
    epsilons: tuple[float, ...] = (8 / 255,)
    member_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threat not in THREATS:
            raise ValueError(f"unknown threat {self.threat!r}; known: {', '.join(THREATS)}")
        members = tuple(ALIASES.get(m, m) for m in (self.members or DEFAULT_MEMBERS[self.threat]))
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        object.__setattr__(self, "member_options", {ALIASES.get(k, k): dict(v) for k, v in self.member_options.items()})
        if len(set(members)) != len(members):
            raise ValueError(f"ensemble members must be distinct, got {list(members)}")
        stray = sorted(set(self.member_options) - set(members))
        if stray:
            raise ValueError(f"member_options for {', '.join(stray)}, which are not members")
        if self.pixels < 1:
            raise ValueError(f"pixels must be >= 1, got {self.pixels}")
        if not self.epsilons or any(not e > 0 for e in self.epsilons):
            raise ValueError(f"epsilons must be one or more budgets > 0, got {list(self.epsilons)}")
        if "ensemble" in members:
            raise ValueError("an ensemble cannot contain an ensemble")
        for name in members:  # unknown names, members that cannot serve this threat, bad budgets: all fail at load
            for budget in self.budgets:
                self.member_config(name, budget)

    @property
    def budgets(self) -> tuple[float, ...]:
        return (float(self.pixels),) if self.threat == "l0" else self.epsilons

    def member_config(self, name: str, budget: float) -> Any:
        from robench.attacks import get_attack  # the registry imports this module

        spec = get_attack(name)
        if spec.at_budget is None or self.threat not in spec.threats:
            raise ValueError(f"attack {name} cannot serve the {self.threat} threat "
                             f"({name} serves: {', '.join(spec.threats) or 'none in an ensemble'})")
        return spec.at_budget(self.threat, budget, MEMBER_DEFAULTS.get(name, {}) | self.member_options.get(name, {}))


def _member_generator(generator: torch.Generator) -> torch.Generator:
    """A generator for one member, seeded from the ensemble's: members never share a stream."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))


def ensemble_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: EnsembleConfig, generator: torch.Generator
) -> AttackOutcome:
    """Run the members at ``config.budgets[0]`` on ``images`` (N, C, H, W), ``labels`` (N,).

    The proposal of an image is the first member's success on it, else the clean image. queries
    (N,) sums what every member spent on the image; details["broken_by"] names the member that
    fooled each image (None: robust to all), and a member's own details (the DE's pixels) are kept
    for the images it broke.
    """
    from robench.attacks import get_attack

    budget = config.budgets[0]
    labels = labels.to(images.device)
    n = len(images)
    adv = images.clone()
    queries = torch.zeros(n, dtype=torch.int64, device=images.device)
    broken_by: list[str | None] = [None] * n
    details: dict[str, list[Any]] = {}
    standing = torch.arange(n, device=images.device)
    for name in config.members:
        spec = get_attack(name)
        setting = config.member_config(name, budget)
        member_gen = _member_generator(generator)  # drawn even when no image stands: seeds do not shift
        if len(standing) == 0:
            continue
        x, y = images[standing], labels[standing]
        outcome = spec.fn(model, x, y, setting, member_gen)
        fooled = judge(model, x, y, outcome, **spec.budget(setting)).success.to(images.device)
        queries[standing] += outcome.queries
        won = standing[fooled]
        adv[won] = outcome.adversarial[fooled]
        for i in won.tolist():
            broken_by[i] = name
        for key, values in outcome.details.items():
            column = details.setdefault(key, [None] * n)
            for i, value, hit in zip(standing.tolist(), values, fooled.tolist()):
                if hit:
                    column[i] = value
        standing = standing[~fooled]
    return AttackOutcome(adversarial=adv, queries=queries, details={"broken_by": broken_by, **details})
