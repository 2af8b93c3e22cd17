"""robench: how robust image classifiers are to adversarial attacks, by activation function.

The Python API is this small surface (everything else is reachable, but may change):

- ``evaluate(model, dataset, attacks, images, seed, out=...)``: attack any ``nn.Module`` as
  ``robench attack`` does, one result file per attack; returns an ``Evaluation``.
- ``report(folder)``: the tables of ``robench report``; ``verify(paths, model=...)``: re-check them.
- ``register_activation(name, factory)``, ``register_model(name, factory)``,
  ``register_attack(spec)``: add to robench's registries from your own code (plugins do it
  through the entry-point groups ``robench.activations``, ``robench.models``, ``robench.attacks``).
- ``build_model(name, act, ...)``: robench's models with any registered activation.
- ``AttackSpec``: what ``register_attack`` takes.

Importing ``robench`` is cheap: each name loads its module (and torch) on first use.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = ["AttackSpec", "Evaluation", "build_model", "evaluate", "register_activation", "register_attack",
           "register_model", "report", "verify"]

_WHERE = {"AttackSpec": "attacks", "Evaluation": "api", "build_model": "models", "evaluate": "api",
          "register_activation": "plugins", "register_attack": "plugins", "register_model": "plugins",
          "report": "api", "verify": "api"}


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module 'robench' has no attribute {name!r}")
    value = getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
