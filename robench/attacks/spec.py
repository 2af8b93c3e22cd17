"""What robench knows about an attack, in one record per attack, and the registry that holds them.

Each attack registers itself in its own module, beside its function (timm's ``@register_model``
pattern): ``builtin_attack(AttackSpec(...))`` for robench's own, ``robench.register_attack`` (or an
entry point in the ``robench.attacks`` group) for a plugin. The spec carries every fact that other
modules would otherwise hard-code by name: the report's title and table order, the paper's table,
the threat model and budget, whether the attack joins the default ensemble of a threat and at what
cost, whether it is the strongest there, its aliases and its command-line shorthand. The report,
the worst-case tables, the ensemble and the option parser read these fields and name no attack.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

from ..config import budget_text
from ..errors import ConfigError
from ..registry import Registry
from .base import AttackFn

BUDGET_KWARGS = {"linf": "linf_budget", "l2": "l2_budget", "l1": "l1_budget", "l0": "l0_budget"}


@dataclass(frozen=True)
class PaperTable:
    """The paper's table an attack reproduces: its key in ``paper_numbers.yaml``, its title, the
    settings pooled for the avg|Z| column (None: all), and the paper's key for every cell when it
    prints one number per row (Table 4's ``cw``; None: the cell's own label)."""

    key: str
    title: str
    z_settings: tuple[str, ...] | None = None
    column: str | None = None


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
    # The report: its table title ({variant} is the variant as variant_format writes it; None: the
    # attack's name and variant), the table's place among the others, and the paper's table it fills.
    title: str | None = None
    variant_format: str = "{}"
    order: int = 1000
    paper_table: PaperTable | None = None
    # The default ensemble: the threats whose default member list holds it, cheapest (lowest cost) first.
    default_in: tuple[str, ...] = ()
    cost: int = 100
    member_defaults: Mapping[str, Any] = field(default_factory=dict)  # its options inside an ensemble
    strongest: tuple[str, ...] = ()  # threats where it is the strongest attack (SPEC §6)
    aliases: tuple[str, ...] = ()  # other names for it in an ensemble's member list ("de" for the DE)
    # The registered attacks a composite attack's config runs (an ensemble's members); None: itself.
    behind: Callable[[Any], tuple[str, ...]] | None = None
    single_step_of: str | None = None  # the iterative attack it is one step of (FGSM of PGD): a sanity check
    monotone: bool = False  # successes must not fall as its budget grows (an iterative attack): a sanity check
    shorthand: str | None = None  # the flag that ``NAME:VALUE`` sets in the Python API's attack strings
    flag_fields: Mapping[str, str] = field(default_factory=dict)  # a command-line flag -> its config field
    # Options inferred from the others given on the command line (the ensemble's threat from --eps).
    fill_options: Callable[[dict[str, Any]], dict[str, Any]] | None = None
    quick: Mapping[str, Any] = field(default_factory=dict)  # options for a run of seconds (the contract test)
    # The standard evaluation: the report's headline table shows its robust accuracy beside clean
    # accuracy, with the attack-failure checks its repeats store.
    headline: bool = False


def checked_spec(name: str, obj: Any) -> AttackSpec:
    """A plugin's entry point names an AttackSpec (or a function that returns one) of its own name."""
    spec = obj() if callable(obj) and not isinstance(obj, AttackSpec) else obj
    if not isinstance(spec, AttackSpec):
        raise ConfigError(f"attack plugin {name!r} gives a {type(spec).__name__}, not a robench.AttackSpec")
    if spec.name != name:
        raise ConfigError(f"attack plugin {name!r} gives an AttackSpec named {spec.name!r}")
    return spec


ATTACKS: Registry[AttackSpec] = Registry("attack", group="robench.attacks", check=checked_spec)


def builtin_attack(spec: AttackSpec) -> AttackSpec:
    """Register one of robench's own attacks: one call in the attack's module, beside its function."""
    return ATTACKS.add(spec.name, spec)


def register_attack(spec: Any) -> AttackSpec:
    """Register an attack from outside robench (``robench.register_attack``); the same registry."""
    checked = checked_spec(getattr(spec, "name", "?"), spec)
    return ATTACKS.add(checked.name, checked, external=True)


def attack_names() -> list[str]:
    return ATTACKS.names()


def get_attack(name: str) -> AttackSpec:
    return ATTACKS.get(name)


def registered() -> list[AttackSpec]:
    """The specs registered so far, in registration order (plugins not yet asked for are not loaded)."""
    return ATTACKS.loaded()


def eps_text(eps: float) -> str:
    """An Linf budget as people write it: ``8/255`` when it is a whole number of 8-bit steps."""
    return budget_text(eps)


def setting_label(norm: str, budget: float) -> str:
    """Column label of one budget: ``3px``, ``eps=8/255``, ``l2=0.5``."""
    if norm == "l0":
        return f"{int(budget)}px"
    return f"eps={eps_text(budget)}" if norm == "linf" else f"{norm}={budget:g}"


def nondefault_parts(config: Any, skip: set[str]) -> list[str]:
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


def member_options(options: dict[str, Any], budget_keys: set[str], name: str) -> dict[str, Any]:
    """An ensemble member's options, refusing those the ensemble's budget sets."""
    clash = sorted(budget_keys & set(options))
    if clash:
        raise ValueError(f"member_options for {name}: {', '.join(clash)} is set by the ensemble's budget")
    return options


def default_members(threat: str) -> tuple[str, ...]:
    """The default ensemble of a threat: every registered attack that joins it, cheapest first."""
    joining = [s for s in registered() if threat in s.default_in]
    return tuple(s.name for s in sorted(joining, key=lambda s: s.cost))


def strongest_for(threat: str) -> tuple[str, ...]:
    """The registered attacks that are the strongest for a threat, in registration order."""
    return tuple(s.name for s in registered() if threat in s.strongest)


def canonical_name(name: str) -> str:
    """A member name with its alias resolved (``de`` -> the DE's registered name)."""
    for spec in registered():
        if name in spec.aliases:
            return spec.name
    return name
