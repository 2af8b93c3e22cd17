"""Registering activations, models and attacks from outside robench.

Called from a user's code (a notebook, a training script) or, through Python entry points, from
an installed plugin package: ``[project.entry-points."robench.activations"] mish = "pkg:mish"``
makes ``--act mish`` work with nothing imported until it is used (see ``registry.Registry``).
Registered names live in this process: worker processes (``robench suite --workers``) see the
plugins installed as entry points, not names registered by a call in the parent.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

from torch import nn

F = TypeVar("F", bound=Callable[..., nn.Module])


def _register(registry: Any, name: str, factory: F | None) -> Any:
    if factory is None:  # decorator form: @register_activation("mish")
        return lambda f: registry.add(name, registry.check(name, f), external=True)
    return registry.add(name, registry.check(name, factory), external=True)


def register_activation(name: str, factory: F | None = None) -> Any:
    """Make ``name`` an activation: ``factory(channels, **options)`` returns a module for a layer
    of ``channels`` channels (dim 1 of its input). Usable as a decorator; returns the factory."""
    from .activations import ACTIVATIONS

    return _register(ACTIVATIONS, name, factory)


def register_model(name: str, factory: F | None = None) -> Any:
    """Make ``name`` a model: ``factory(act=, num_classes=, in_channels=[, image_size=])`` returns
    the network body, which takes normalised images (robench puts the dataset's normalisation in
    front, as for its own models) and calls ``act(channels)`` for each activation it wants swapped.
    Usable as a decorator; returns the factory."""
    from .models import MODELS

    return _register(MODELS, name, factory)


def register_attack(spec: Any) -> Any:
    """Add an attack: a ``robench.AttackSpec`` (its config class, its function on a batch, how its
    config splits into reported settings, the budget ``judge`` enforces). Returns the spec."""
    from .attacks import register_attack as add

    return add(spec)
