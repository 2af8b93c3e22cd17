"""Command-line attack options -> the fields of an attack's config.

One table says which attacks take which flag and under which config field, so ``robench attack``
stays thin and a flag given to an attack that does not use it is a one-line error, not a silent
no-op.
"""

from __future__ import annotations

from fractions import Fraction
from typing import Any

from ..errors import ConfigError

# flag name (as the CLI spells it, minus the dashes) -> {attack: config field}
OPTION_FIELDS: dict[str, dict[str, str]] = {
    "pixels": {"pixel": "pixels", "sparse_rs": "pixels", "ensemble": "pixels"},
    "population": {"pixel": "population"},
    "generations": {"pixel": "generations"},
    "mutation": {"pixel": "mutation"},
    "strategy": {"pixel": "strategy"},
    "crossover": {"pixel": "crossover"},
    "crossover-rate": {"pixel": "crossover_rate"},
    "queries": {"sparse_rs": "queries", "square": "queries"},
    "p-init": {"sparse_rs": "p_init", "square": "p_init"},
    "eps": {"fgsm": "epsilons", "pgd": "epsilons", "square": "epsilons", "ensemble": "epsilons", "fmn": "epsilon"},
    "norm": {"pgd": "norm", "fmn": "norm", "ensemble": "threat"},
    "steps": {"pgd": "steps", "fmn": "steps", "cw": "steps"},
    "restarts": {"pgd": "restarts"},
    "loss": {"pgd": "loss"},
    "members": {"ensemble": "members"},
    "l2-budget": {"cw": "l2_budget"},
    "forward": {"pixel": "forward", "sparse_rs": "forward"},
    "search-dtype": {"pixel": "search_dtype", "sparse_rs": "search_dtype"},
    "early-stop": {"pixel": "early_stop"},
}


def parse_budgets(text: str) -> tuple[float, ...]:
    """``"1/255,8/255,0.05"`` -> floats; fractions are how Linf budgets are usually written."""
    try:
        return tuple(float(Fraction(x.strip())) for x in text.split(",") if x.strip())
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"--eps takes comma-separated numbers or fractions (8/255), got {text!r}") from None


def attack_options(attack: str, given: dict[str, Any]) -> dict[str, Any]:
    """Config fields for ``attack`` from the flags the user gave (None = not given).

    ``eps`` arrives as text and becomes a tuple (one value for fmn's single budget); ``members`` as
    comma-separated names. An ensemble's threat defaults to l0 when --pixels is given and to linf
    when --eps is.
    """
    from . import get_attack

    get_attack(attack)  # an unknown attack name is the error to report, not a misplaced flag
    options: dict[str, Any] = {}
    for flag, value in given.items():
        if value is None:
            continue
        owners = OPTION_FIELDS[flag]
        if attack not in owners:
            raise ConfigError(f"--{flag} applies to --attack {' or '.join(sorted(owners))}, not {attack}")
        if flag == "eps":
            value = parse_budgets(value)
            if attack == "fmn":
                if len(value) != 1:
                    raise ConfigError("--eps takes one budget for fmn (successes at other budgets come from the report)")
                value = value[0]
        elif flag == "members":
            value = tuple(m.strip() for m in value.split(",") if m.strip())
        options[owners[attack]] = value
    if attack == "ensemble" and "threat" not in options:
        if "epsilons" in options:
            options["threat"] = "linf"
        elif "pixels" in options:
            options["threat"] = "l0"
    return options


# The flag ``NAME:VALUE`` sets in the Python API's short attack strings (``pixel:3``, ``fgsm:0.02,0.04``).
SHORTHAND: dict[str, str] = {"pixel": "pixels", "sparse_rs": "pixels", "fgsm": "eps", "pgd": "eps", "square": "eps", "fmn": "eps",
                             "cw": "l2-budget", "ensemble": "eps"}


def parse_attack(item: Any) -> tuple[str, dict[str, Any]]:
    """An attack as the Python API takes it -> (name, config fields).

    ``"pixel"``, ``"pixel:3"``, ``"fgsm:1/255,8/255"`` (the budget, parsed as the CLI flag it stands
    for); ``("pgd", {"norm": "l2", "epsilons": [0.5]})`` or ``{"attack": "pgd", ...}`` (config fields);
    or a config object of a registered attack (``PGDConfig(...)``)."""
    import dataclasses

    from . import ATTACKS, get_attack

    if isinstance(item, str):
        name, sep, value = item.partition(":")
        get_attack(name)
        if not sep:
            return name, {}
        if name not in SHORTHAND:
            raise ConfigError(f"attack {name!r} has no NAME:VALUE shorthand; give it as (name, {{options}})")
        flag = SHORTHAND[name]
        if flag == "pixels":
            try:
                parsed: Any = int(value)
            except ValueError:
                raise ConfigError(f"{item!r}: the pixel count must be a whole number") from None
        elif flag == "l2-budget":
            parsed = parse_budgets(value)
            if len(parsed) != 1:
                raise ConfigError(f"{item!r}: cw takes one L2 budget")
            parsed = parsed[0]
        else:
            parsed = value
        return name, attack_options(name, {flag: parsed})
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str) and isinstance(item[1], dict):
        get_attack(item[0])
        return item[0], dict(item[1])
    if isinstance(item, dict):
        options = dict(item)
        name = options.pop("attack", None)
        if not isinstance(name, str):
            raise ConfigError(f"an attack given as a mapping needs an 'attack' key, got {sorted(item)}")
        get_attack(name)
        return name, options
    if dataclasses.is_dataclass(item) and not isinstance(item, type):
        owners = [n for n in ATTACKS.names() if get_attack(n).config_cls is type(item)]
        if len(owners) != 1:
            raise ConfigError(f"{type(item).__name__} is the config of no registered attack")
        blank = type(item)()  # only what differs from the defaults, as the command line would give it
        return owners[0], {f.name: getattr(item, f.name) for f in dataclasses.fields(item)
                           if getattr(item, f.name) != getattr(blank, f.name)}
    raise ConfigError(f"cannot read {item!r} as an attack: give 'name', 'name:budget', (name, options) or a config object")
