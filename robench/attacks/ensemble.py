"""Worst case over several attacks at one threat model (AutoAttack's rule, Croce & Hein 2020).

An image counts as robust only when every member fails on it. Members run in the order given
(cheap first by default); each gets only the images still standing, and the result records which
member broke which image. Members are registered attacks: the ensemble asks each for its config at
the threat's budget (``AttackSpec.at_budget``) and judges its proposals with ``judge`` before
trusting them, so a member cannot count a success the runner would not.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome, judge
from robench.attacks.spec import (BUDGET_KWARGS, AttackSpec, builtin_attack, canonical_name, default_members, get_attack,
                                  setting_label)

THREATS = ("l0", "linf", "l2", "l1")
# Which attacks an ensemble holds by default, in which order (cheap first), under which aliases and
# with which options are facts of each attack's spec (default_in, cost, aliases, member_defaults).


@dataclass(frozen=True)
class EnsembleConfig:
    """Threat model, budget and members. ``pixels`` is the budget of the l0 threat; ``epsilons``
    those of the others (each its own setting). ``member_options`` holds extra options per member
    (``{"pixel": {"strategy": "best1"}}``), on top of the budget the ensemble sets."""

    threat: str = "l0"
    members: tuple[str, ...] = ()  # empty: the threat's default members (spec.default_members)
    pixels: int = 1
    epsilons: tuple[float, ...] = (8 / 255,)
    member_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        if self.threat not in THREATS:
            raise ValueError(f"unknown threat {self.threat!r}; known: {', '.join(THREATS)}")
        members = tuple(canonical_name(m) for m in (self.members or default_members(self.threat)))
        object.__setattr__(self, "members", members)
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        object.__setattr__(self, "member_options", {canonical_name(k): dict(v) for k, v in self.member_options.items()})
        if len(set(members)) != len(members):
            raise ValueError(f"ensemble members must be distinct, got {list(members)}")
        stray = sorted(set(self.member_options) - set(members))
        if stray:
            raise ValueError(f"member_options for {', '.join(stray)}, which are not members")
        if self.pixels < 1:
            raise ValueError(f"pixels must be >= 1, got {self.pixels}")
        if not self.epsilons or any(not e > 0 for e in self.epsilons):
            raise ValueError(f"epsilons must be one or more budgets > 0, got {list(self.epsilons)}")
        if not members:
            raise ValueError(f"no registered attack joins the default {self.threat} ensemble; name its members")
        for name in members:  # unknown names, composites, members that cannot serve this threat, bad budgets: all fail at load
            if get_attack(name).behind is not None:
                raise ValueError(f"an ensemble cannot contain an ensemble ({name} is one)")
            for budget in self.budgets:
                self.member_config(name, budget)

    @property
    def budgets(self) -> tuple[float, ...]:
        return (float(self.pixels),) if self.threat == "l0" else self.epsilons

    def member_config(self, name: str, budget: float) -> Any:
        spec = get_attack(name)
        if spec.at_budget is None or self.threat not in spec.threats:
            raise ValueError(f"attack {name} cannot serve the {self.threat} threat "
                             f"({name} serves: {', '.join(spec.threats) or 'none in an ensemble'})")
        return spec.at_budget(self.threat, budget, dict(spec.member_defaults) | self.member_options.get(name, {}))


def _threat_from_budget(options: dict[str, Any]) -> dict[str, Any]:
    """On the command line the threat follows the budget given: linf for --eps, l0 for --pixels."""
    if "threat" not in options:
        if "epsilons" in options:
            return options | {"threat": "linf"}
        if "pixels" in options:
            return options | {"threat": "l0"}
    return options


def _member_generator(generator: torch.Generator) -> torch.Generator:
    """A generator for one member, seeded from the ensemble's: members never share a stream."""
    return torch.Generator().manual_seed(int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device)))


# Called after each member that ran: (member name, its images, their labels, its outcome, which it fooled).
Observer = Callable[[str, Tensor, Tensor, AttackOutcome, Tensor], None]


def ensemble_attack(
    model: nn.Module, images: Tensor, labels: Tensor, config: EnsembleConfig, generator: torch.Generator
) -> AttackOutcome:
    """Run the members at ``config.budgets[0]`` on ``images`` (N, C, H, W), ``labels`` (N,).

    The proposal of an image is the first member's success on it, else the clean image. queries
    (N,) sums what every member spent on the image; details["broken_by"] names the member that
    fooled each image (None: robust to all), and a member's own details (the DE's pixels) are kept
    for the images it broke.
    """
    return run_members(model, images, labels, config, generator)


def run_members(model: nn.Module, images: Tensor, labels: Tensor, config: EnsembleConfig, generator: torch.Generator,
                observe: Observer | None = None) -> AttackOutcome:
    """``ensemble_attack``, with ``observe`` shown each member's outcome (the standard evaluation's
    attack-failure checks read the members' own details there)."""
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
        if observe is not None:
            observe(name, x, y, outcome, fooled)
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


builtin_attack(AttackSpec(
    "ensemble", EnsembleConfig, ensemble_attack,
    settings=lambda c: [(setting_label(c.threat, b), dataclasses.replace(c, pixels=int(b)) if c.threat == "l0"
                         else dataclasses.replace(c, epsilons=(b,))) for b in c.budgets],
    budget=lambda c: {BUDGET_KWARGS[c.threat]: c.budgets[0]},
    deterministic=False,  # any random member makes it random
    threat=lambda c: (c.threat, c.budgets[0]),
    white_box=True,  # it holds the white-box members of its threat, where there are any
    tag=lambda c: f"-{c.threat}" + (f"-{c.pixels}px" if c.threat == "l0" else "") + "-" + "+".join(c.members),
    variant=lambda c: f"{c.threat}-" + "+".join(c.members),
    title="Worst case over {variant}, successes",
    order=80,
    behind=lambda c: c.members,
    shorthand="eps",
    flag_fields={"norm": "threat"},
    fill_options=_threat_from_budget,
))
