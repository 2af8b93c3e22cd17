"""Command-line attack options -> the fields of an attack's config.

Options are declared once, in each attack's config dataclass. A flag sets the config field of its
name (``--crossover-rate`` -> ``crossover_rate``; ``--eps`` -> ``epsilons``, or what the attack's
``AttackSpec.flag_fields`` says), so ``robench attack`` stays thin, and a flag given to an attack
whose config has no such field is a one-line error that names the attacks it applies to.
``--attack-opt KEY=VALUE`` reaches every other field, its keys checked against the same config.
"""

from __future__ import annotations

import dataclasses
from fractions import Fraction
from typing import Any

from ..errors import ConfigError
from .spec import AttackSpec, attack_names, get_attack, registered

FLAG_FIELDS = {"eps": "epsilons"}  # flags whose field is not their own name, unless a spec says otherwise


def config_fields(spec: AttackSpec) -> list[str]:
    return [f.name for f in dataclasses.fields(spec.config_cls)]


def flag_field(spec: AttackSpec, flag: str) -> str | None:
    """The config field a command-line flag sets for an attack, None when its config has none."""
    name = spec.flag_fields.get(flag) or FLAG_FIELDS.get(flag) or flag.replace("-", "_")
    return name if name in config_fields(spec) else None


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
    spec = get_attack(attack)  # an unknown attack name is the error to report, not a misplaced flag
    options: dict[str, Any] = {}
    for flag, value in given.items():
        if value is None:
            continue
        name = flag_field(spec, flag)
        if name is None:
            owners = sorted(s.name for s in registered() if flag_field(s, flag) is not None)
            raise ConfigError(f"--{flag} applies to --attack {' or '.join(owners)}, not {attack}")
        if flag == "eps":
            value = parse_budgets(value)
            if not name.endswith("s"):  # a field of one budget
                if len(value) != 1:
                    raise ConfigError(f"--eps takes one budget for {attack} (successes at other budgets come from the report)")
                value = value[0]
        elif flag == "members":
            value = tuple(m.strip() for m in value.split(",") if m.strip())
        options[name] = value
    return spec.fill_options(options) if spec.fill_options is not None else options


def check_option_keys(attack: str, options: dict[str, Any], flag: str = "--attack-opt") -> dict[str, Any]:
    """``options`` as given, once every key is a field of the attack's config (else a one-line
    error that lists the known keys)."""
    known = config_fields(get_attack(attack))
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise ConfigError(f"{flag} {unknown[0]}: {attack} has no such option; known: {', '.join(known)}")
    return options


def parse_attack(item: Any) -> tuple[str, dict[str, Any]]:
    """An attack as the Python API takes it -> (name, config fields).

    ``"pixel"``, ``"pixel:3"``, ``"fgsm:1/255,8/255"`` (the budget, parsed as the CLI flag it stands
    for); ``("pgd", {"norm": "l2", "epsilons": [0.5]})`` or ``{"attack": "pgd", ...}`` (config fields);
    or a config object of a registered attack (``PGDConfig(...)``)."""
    if isinstance(item, str):
        name, sep, value = item.partition(":")
        flag = get_attack(name).shorthand
        if not sep:
            return name, {}
        if flag is None:
            raise ConfigError(f"attack {name!r} has no NAME:VALUE shorthand; give it as (name, {{options}})")
        if flag == "pixels":
            try:
                parsed: Any = int(value)
            except ValueError:
                raise ConfigError(f"{item!r}: the pixel count must be a whole number") from None
        elif flag == "l2-budget":
            parsed = parse_budgets(value)
            if len(parsed) != 1:
                raise ConfigError(f"{item!r}: {name} takes one L2 budget")
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
        owners = [n for n in attack_names() if get_attack(n).config_cls is type(item)]
        if len(owners) != 1:
            raise ConfigError(f"{type(item).__name__} is the config of no registered attack")
        blank = type(item)()  # only what differs from the defaults, as the command line would give it
        return owners[0], {f.name: getattr(item, f.name) for f in dataclasses.fields(item)
                           if getattr(item, f.name) != getattr(blank, f.name)}
    raise ConfigError(f"cannot read {item!r} as an attack: give 'name', 'name:budget', (name, options) or a config object")
