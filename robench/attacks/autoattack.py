"""robench's standard evaluation (AutoAttack 'standard', Croce & Hein 2020), with its failure checks.

APGD-CE, then APGD-T towards the 9 most likely wrong classes, then (Linf) Square at 5,000 queries,
each only on the images still robust, the worst case per image: an ensemble (``ensemble.py``) with
fixed members and budgets, so storage and ``verify`` are the ensemble's. AutoAttack's FAB-T is not a
member: robench's minimal-norm FMN may be added (``members``), and on the parity checkpoints it
fooled no image the others left (docs/standard_evaluation.md). Square is Linf only in robench, so
the L2 evaluation has no black-box member (AutoAttack's has an L2 Square).

Models with fewer than 4 classes cannot take the targeted DLR loss (it reads z_pi4): APGD-T is
skipped for them and the ``too_few_classes`` check says so. The attack-failure checks
(``checks.py``) run after the members and are stored with the repeat.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robench.attacks import checks
from robench.attacks.apgd import APGDConfig, apgd_images
from robench.attacks.base import AttackOutcome, EvalMode, check_norm_budgets
from robench.attacks.ensemble import EnsembleConfig, run_members
from robench.attacks.spec import BUDGET_KWARGS, AttackSpec, builtin_attack, nondefault_parts, setting_label
from robench.config import config_to_dict

DEFAULT_MEMBERS: dict[str, tuple[str, ...]] = {"linf": ("apgd", "apgd_t", "square"), "l2": ("apgd", "apgd_t")}
KNOWN_MEMBERS = ("apgd", "apgd_t", "fmn", "square")
BLACK_BOX = {"square"}


@dataclass(frozen=True)
class AutoAttackConfig:
    """The standard evaluation's threat, budgets and members' budgets (AutoAttack's by default)."""

    norm: str = "linf"  # linf or l2
    epsilons: tuple[float, ...] = (8 / 255,)
    members: tuple[str, ...] = ()  # empty: DEFAULT_MEMBERS[norm], cheap first (each repeat stores the resolved list)
    steps: int = 100  # APGD-CE and APGD-T iterations (one restart each)
    n_target_classes: int = 9  # APGD-T targets
    queries: int = 5_000  # Square's budget per image
    checks: bool = True  # run the attack-failure checks (the eps = inf run costs up to `steps` more per robust image)

    def __post_init__(self) -> None:
        object.__setattr__(self, "epsilons", tuple(float(e) for e in self.epsilons))
        check_norm_budgets(self.norm, self.epsilons, ("linf", "l2"), "autoattack")
        object.__setattr__(self, "members", tuple(self.members))
        unknown = sorted(set(self.members) - set(KNOWN_MEMBERS))
        if unknown:
            raise ValueError(f"autoattack members come from {', '.join(KNOWN_MEMBERS)}, got {', '.join(unknown)}")
        if self.steps < 1 or self.n_target_classes < 1 or self.queries < 1:
            raise ValueError("steps, n_target_classes and queries must be >= 1")
        self.ensemble(self.epsilons[0], 10)  # a member that cannot serve the norm (square for l2) fails here

    def ensemble(self, eps: float, classes: int) -> tuple[EnsembleConfig, list[str]]:
        """The ensemble at ``eps`` for a model of ``classes`` classes, and the members it skips."""
        chosen = self.members or DEFAULT_MEMBERS[self.norm]
        skipped = [m for m in chosen if m == "apgd_t" and classes < 4]
        members = tuple(m for m in chosen if m not in skipped)
        options = {"apgd": {"steps": self.steps},
                   "apgd_t": {"steps": self.steps, "n_target_classes": self.n_target_classes},
                   "square": {"queries": self.queries}}
        return EnsembleConfig(threat=self.norm, members=members, epsilons=(eps,),
                              member_options={m: options[m] for m in members if m in options}), skipped


def autoattack_attack(model: nn.Module, images: Tensor, labels: Tensor, config: AutoAttackConfig,
                      generator: torch.Generator) -> AttackOutcome:
    """The standard evaluation at ``config.epsilons[0]`` on ``images`` (N, C, H, W), ``labels`` (N,).

    details["broken_by"] names the member that fooled each image; meta["members"] holds each
    member's full config (its budget) and meta["checks"] the attack-failure checks with their evidence.
    """
    eps = config.epsilons[0]
    labels = labels.to(images.device)
    with torch.no_grad(), EvalMode(model):
        classes = int(model(images[:1]).shape[1]) if len(images) else 0
    ensemble, skipped = config.ensemble(eps, classes)
    traces: list[list[float] | None] = []
    found: list[bool] = []
    returned: list[Tensor] = []

    def observe(name: str, x: Tensor, y: Tensor, outcome: AttackOutcome, fooled: Tensor) -> None:
        if "found" in outcome.details:
            found.extend(outcome.details["found"])
            returned.append(fooled.cpu())
        if name == "apgd":
            traces.extend(outcome.details["loss_trace"])

    out = run_members(model, images, labels, ensemble, generator, observe)
    broken_by = out.details["broken_by"]
    meta: dict[str, Any] = {"members": {m: config_to_dict(ensemble.member_config(m, eps)) for m in ensemble.members}}
    if config.checks:
        standing = torch.tensor([b is None for b in broken_by], dtype=torch.bool, device=images.device)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator, device=generator.device))
        _, free = apgd_images(model, images[standing], labels[standing], APGDConfig(norm=config.norm, steps=config.steps),
                              torch.Generator().manual_seed(seed), eps=math.inf)
        meta["checks"] = [c.to_dict() for c in (
            checks.randomness(model, images), checks.probabilities(model, images),
            checks.zero_gradient(model, images, labels), checks.black_box_wins(broken_by, BLACK_BOX & set(ensemble.members)),
            checks.too_few_classes(classes, skipped), checks.incomplete_optimisation(traces),
            checks.silent_success(found, torch.cat(returned) if returned else torch.zeros(0, dtype=torch.bool)),
            checks.unbounded(free.fooled.cpu()),
        )]
    return AttackOutcome(out.adversarial, out.queries, details={"broken_by": broken_by}, meta=meta)


builtin_attack(AttackSpec(  # one repeat, as AutoAttack's protocol (its random starts are seeded, not absent)
    "autoattack", AutoAttackConfig, autoattack_attack,
    settings=lambda c: [(setting_label(c.norm, e), dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
    budget=lambda c: {BUDGET_KWARGS[c.norm]: c.epsilons[0]},
    deterministic=True,
    threat=lambda c: (c.norm, c.epsilons[0]),
    white_box=True,
    tag=lambda c: "-" + "-".join([c.norm, *nondefault_parts(c, {"norm", "epsilons"})]),
    variant=lambda c: "-".join([c.norm, *nondefault_parts(c, {"norm", "epsilons"})]),
    title="Standard evaluation (autoattack) {variant}, successes",
    order=90,
    strongest=("linf", "l2"),  # the standard evaluation of both (SPEC §7)
    headline=True,
    shorthand="eps",
    quick={"steps": 5, "n_target_classes": 2, "queries": 40},
))
