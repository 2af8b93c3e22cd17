"""Attacks by name. Each entry knows its config dataclass, its function, how one config splits
into the settings a table reports (FGSM: one per epsilon), and the budget ``judge`` enforces."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..registry import Registry
from .base import AttackFn
from .gradient import CWConfig, FGSMConfig, cw_attack, fgsm_attack
from .pixel import PixelAttackConfig, pixel_attack


@dataclass(frozen=True)
class AttackSpec:
    name: str
    config_cls: type
    fn: AttackFn
    settings: Callable[[Any], list[tuple[str, Any]]]  # config -> [(label, config of one setting)]
    budget: Callable[[Any], dict[str, Any]]  # one setting's config -> judge() budget kwargs
    deterministic: bool  # True: repeats are identical, so one is enough


def _fgsm_one(model, images, labels, config, generator):  # type: ignore[no-untyped-def]
    return fgsm_attack(model, images, labels, config, generator)[config.epsilons[0]]


ATTACKS: Registry[AttackSpec] = Registry("attack")
for _spec in (
    AttackSpec(
        "pixel", PixelAttackConfig, pixel_attack,
        settings=lambda c: [(f"{c.pixels}px", c)],
        budget=lambda c: {"l0_budget": c.pixels},
        deterministic=False,
    ),
    AttackSpec(
        "fgsm", FGSMConfig, _fgsm_one,
        settings=lambda c: [(f"eps={e:g}", dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
        budget=lambda c: {"linf_budget": c.epsilons[0]},
        deterministic=False,  # random_start makes it random; without it repeats are identical
    ),
    AttackSpec(
        "cw", CWConfig, cw_attack,
        settings=lambda c: [(f"l2={c.l2_budget:g}", c)],
        budget=lambda c: {"l2_budget": c.l2_budget},
        deterministic=True,
    ),
):
    ATTACKS.add(_spec.name, _spec)


def attack_names() -> list[str]:
    return ATTACKS.names()


def get_attack(name: str) -> AttackSpec:
    return ATTACKS.get(name)
