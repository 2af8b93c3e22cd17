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
    "queries": {"sparse_rs": "queries"},
    "p-init": {"sparse_rs": "p_init"},
    "eps": {"fgsm": "epsilons", "pgd": "epsilons", "ensemble": "epsilons", "fmn": "epsilon"},
    "norm": {"pgd": "norm", "fmn": "norm", "ensemble": "threat"},
    "steps": {"pgd": "steps", "fmn": "steps", "cw": "steps"},
    "restarts": {"pgd": "restarts"},
    "loss": {"pgd": "loss"},
    "members": {"ensemble": "members"},
    "l2-budget": {"cw": "l2_budget"},
    "forward": {"pixel": "forward", "sparse_rs": "forward"},
    "search-dtype": {"pixel": "search_dtype", "sparse_rs": "search_dtype"},
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
