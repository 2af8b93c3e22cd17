"""Attacks by name. Each entry knows its config dataclass, its function, how one config splits
into the settings a table reports (FGSM, PGD: one per epsilon), the budget ``judge`` enforces,
the threat model each setting belongs to, and how to build it at a given budget (for ensembles)."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from ..errors import ConfigError
from ..registry import Registry
from .base import AttackFn
from .ensemble import EnsembleConfig, ensemble_attack
from .gradient import CWConfig, FGSMConfig, FMNConfig, PGDConfig, cw_attack, fgsm_attack, fmn_attack, pgd_attack
from .pixel import PixelAttackConfig, pixel_attack
from .sparse_rs import SparseRSConfig, sparse_rs_attack
from .square import SquareConfig, square_attack

BUDGET_KWARGS = {"linf": "linf_budget", "l2": "l2_budget", "l1": "l1_budget", "l0": "l0_budget"}


@dataclass(frozen=True)
class AttackSpec:
    name: str
    config_cls: type
    fn: AttackFn
    settings: Callable[[Any], list[tuple[str, Any]]]  # config -> [(label, config of one setting)]
    budget: Callable[[Any], dict[str, Any]]  # one setting's config -> judge() budget kwargs
    deterministic: bool  # True: repeats are identical, so one is enough
    # One setting's threat model: (norm, budget), budget None for a minimal-norm attack (FMN), whose
    # successes at any budget are read off the stored distances.
    threat: Callable[[Any], tuple[str, float | None]]
    white_box: bool  # uses gradients (sanity flags compare black-box against white-box results)
    tag: Callable[[Any], str] = lambda c: ""  # what the result file name adds after the attack name
    # What sets one run apart from another of the same attack beyond its budgets (the DE's scheme,
    # PGD's norm): the report gives each variant a table of its own. "" for the attack's default.
    variant: Callable[[Any], str] = lambda c: ""
    threats: tuple[str, ...] = ()  # threat norms it can serve inside an ensemble
    at_budget: Callable[[str, float, dict[str, Any]], Any] | None = None  # (norm, budget, options) -> config


def eps_text(eps: float) -> str:
    """An Linf budget as people write it: ``8/255`` when it is a whole number of 8-bit steps."""
    steps = eps * 255
    return f"{round(steps)}/255" if abs(steps - round(steps)) < 1e-6 and round(steps) >= 1 else f"{eps:g}"


def setting_label(norm: str, budget: float) -> str:
    """Column label of one budget: ``3px``, ``eps=8/255``, ``l2=0.5``."""
    if norm == "l0":
        return f"{int(budget)}px"
    return f"eps={eps_text(budget)}" if norm == "linf" else f"{norm}={budget:g}"


def _one(fn: Callable[..., dict[float, Any]]) -> AttackFn:
    def run(model, images, labels, config, generator):  # type: ignore[no-untyped-def]
        return fn(model, images, labels, config, generator)[config.epsilons[0]]

    return run


def _de_variant(c: PixelAttackConfig) -> str:
    """The DE scheme when it is not the paper's (it changes the numbers): ``best1-xpixel``."""
    parts = [c.strategy] if c.strategy != "rand1" else []
    if c.crossover != "none":
        parts.append(f"x{c.crossover}" + (f"{c.crossover_rate:g}" if c.crossover_rate is not None else ""))
    if not c.early_stop:
        parts.append("noearlystop")
    return "-".join(parts)


def _nondefault(config: Any, skip: set[str]) -> list[str]:
    """``steps20``, ``lossmargin``: the fields of ``config`` that differ from their defaults, outside
    ``skip`` (budgets, which are columns, and batch sizes, which change no number)."""
    parts = []
    for f in dataclasses.fields(config):
        value = getattr(config, f.name)
        if f.name in skip or value == f.default:
            continue
        text = "+".join(map(str, value)) if isinstance(value, tuple) else f"{value:g}" if isinstance(value, float) else str(value)
        parts.append(f"{f.name.replace('_', '')}{text}")
    return parts


def _options(options: dict[str, Any], budget_keys: set[str], name: str) -> dict[str, Any]:
    clash = sorted(budget_keys & set(options))
    if clash:
        raise ValueError(f"member_options for {name}: {', '.join(clash)} is set by the ensemble's budget")
    return options


def _plugin_spec(name: str, obj: Any) -> AttackSpec:
    """A plugin's entry point names an AttackSpec (or a function that returns one) of its own name."""
    spec = obj() if callable(obj) and not isinstance(obj, AttackSpec) else obj
    if not isinstance(spec, AttackSpec):
        raise ConfigError(f"attack plugin {name!r} gives a {type(spec).__name__}, not a robench.AttackSpec")
    if spec.name != name:
        raise ConfigError(f"attack plugin {name!r} gives an AttackSpec named {spec.name!r}")
    return spec


ATTACKS: Registry[AttackSpec] = Registry("attack", group="robench.attacks", check=_plugin_spec)
for _spec in (
    AttackSpec(
        "pixel", PixelAttackConfig, pixel_attack,
        settings=lambda c: [(f"{c.pixels}px", c)],
        budget=lambda c: {"l0_budget": c.pixels},
        deterministic=False,
        threat=lambda c: ("l0", float(c.pixels)),
        white_box=False,
        tag=lambda c: f"{c.pixels}px" + (f"-{_de_variant(c)}" if _de_variant(c) else ""),
        variant=_de_variant,
        threats=("l0",),
        at_budget=lambda norm, b, o: PixelAttackConfig(pixels=int(b), **_options(o, {"pixels"}, "pixel")),
    ),
    AttackSpec(
        "sparse_rs", SparseRSConfig, sparse_rs_attack,
        settings=lambda c: [(f"{c.pixels}px", c)],
        budget=lambda c: {"l0_budget": c.pixels},
        deterministic=False,
        threat=lambda c: ("l0", float(c.pixels)),
        white_box=False,
        tag=lambda c: "-".join([f"{c.pixels}px", *_nondefault(c, {"pixels", "max_batch", "forward", "search_dtype"})]),
        variant=lambda c: "-".join(_nondefault(c, {"pixels", "max_batch", "forward"})),
        threats=("l0",),
        at_budget=lambda norm, b, o: SparseRSConfig(pixels=int(b), **_options(o, {"pixels"}, "sparse_rs")),
    ),
    AttackSpec(
        "fgsm", FGSMConfig, _one(fgsm_attack),
        settings=lambda c: [(f"eps={e:g}", dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
        budget=lambda c: {"linf_budget": c.epsilons[0]},
        deterministic=False,  # random_start makes it random; without it repeats are identical
        threat=lambda c: ("linf", c.epsilons[0]),
        white_box=True,
        threats=("linf",),
        at_budget=lambda norm, b, o: FGSMConfig(epsilons=(b,), **_options(o, {"epsilons"}, "fgsm")),
    ),
    AttackSpec(
        "pgd", PGDConfig, pgd_attack,
        settings=lambda c: [(setting_label(c.norm, e), dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
        budget=lambda c: {BUDGET_KWARGS[c.norm]: c.epsilons[0]},
        deterministic=False,  # random start
        threat=lambda c: (c.norm, c.epsilons[0]),
        white_box=True,
        tag=lambda c: "-" + "-".join([c.norm, *_nondefault(c, {"norm", "epsilons", "max_batch"})]),
        variant=lambda c: "-".join([c.norm, *_nondefault(c, {"norm", "epsilons", "max_batch"})]),
        threats=("linf", "l2"),
        at_budget=lambda norm, b, o: PGDConfig(norm=norm, epsilons=(b,), **_options(o, {"norm", "epsilons"}, "pgd")),
    ),
    AttackSpec(
        "square", SquareConfig, square_attack,
        settings=lambda c: [(setting_label("linf", e), dataclasses.replace(c, epsilons=(e,))) for e in c.epsilons],
        budget=lambda c: {"linf_budget": c.epsilons[0]},
        deterministic=False,
        threat=lambda c: ("linf", c.epsilons[0]),
        white_box=False,  # the black-box check on the gradient attacks' Linf numbers
        tag=lambda c: "".join(f"-{part}" for part in _nondefault(c, {"epsilons", "max_batch"})),
        variant=lambda c: "-".join(_nondefault(c, {"epsilons", "max_batch"})),
        threats=("linf",),
        at_budget=lambda norm, b, o: SquareConfig(epsilons=(b,), **_options(o, {"epsilons"}, "square")),
    ),
    AttackSpec(
        "fmn", FMNConfig, fmn_attack,
        settings=lambda c: [(f"min-{c.norm}" if c.epsilon is None else setting_label(c.norm, c.epsilon), c)],
        budget=lambda c: {} if c.epsilon is None else {BUDGET_KWARGS[c.norm]: c.epsilon},
        deterministic=True,
        threat=lambda c: (c.norm, c.epsilon),
        white_box=True,
        tag=lambda c: "-" + "-".join([c.norm, *_nondefault(c, {"norm", "max_batch"})]),
        variant=lambda c: "-".join([c.norm, *_nondefault(c, {"norm", "epsilon", "max_batch"})]),
        threats=("linf", "l2", "l1", "l0"),
        at_budget=lambda norm, b, o: FMNConfig(norm=norm, epsilon=b, **_options(o, {"norm", "epsilon"}, "fmn")),
    ),
    AttackSpec(
        "cw", CWConfig, cw_attack,
        settings=lambda c: [(f"l2={c.l2_budget:g}", c)],
        budget=lambda c: {"l2_budget": c.l2_budget},
        deterministic=True,
        threat=lambda c: ("l2", c.l2_budget),
        white_box=True,
        threats=("l2",),
        at_budget=lambda norm, b, o: CWConfig(l2_budget=b, **_options(o, {"l2_budget"}, "cw")),
    ),
    AttackSpec(
        "ensemble", EnsembleConfig, ensemble_attack,
        settings=lambda c: [(setting_label(c.threat, b), dataclasses.replace(c, pixels=int(b)) if c.threat == "l0"
                             else dataclasses.replace(c, epsilons=(b,))) for b in c.budgets],
        budget=lambda c: {BUDGET_KWARGS[c.threat]: c.budgets[0]},
        deterministic=False,  # any random member makes it random
        threat=lambda c: (c.threat, c.budgets[0]),
        white_box=True,  # it holds the white-box members of its threat, where there are any
        tag=lambda c: f"-{c.threat}" + (f"-{c.pixels}px" if c.threat == "l0" else "") + "-" + "+".join(c.members),
        variant=lambda c: f"{c.threat}-" + "+".join(c.members),
    ),
):
    ATTACKS.add(_spec.name, _spec)


def attack_names() -> list[str]:
    return ATTACKS.names()


def get_attack(name: str) -> AttackSpec:
    return ATTACKS.get(name)
