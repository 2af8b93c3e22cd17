"""Attacks by name. Each attack registers its ``AttackSpec`` in its own module (``spec.py`` says
what a spec holds); this package only imports those modules, so that importing it registers them.
Adding an attack is one module, plus its name on the import line below."""

from __future__ import annotations

from . import ensemble, gradient, pixel, sparse_rs, square  # noqa: F401 - each registers its attacks
from . import apgd, autoattack  # noqa: F401 - after the attacks they build on (registration order is listing order)
from .spec import (ATTACKS, BUDGET_KWARGS, AttackSpec, PaperTable, attack_names, builtin_attack, eps_text, get_attack,
                   register_attack, setting_label)

__all__ = ["ATTACKS", "BUDGET_KWARGS", "AttackSpec", "PaperTable", "attack_names", "builtin_attack", "eps_text",
           "get_attack", "register_attack", "setting_label"]
