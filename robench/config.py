"""Frozen dataclass configs, loaded from and dumped to YAML.

Unknown keys are an error (a typo must not silently fall back to a default), and every stored
result or checkpoint keeps the exact config that made it.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, TypeVar

import yaml

from .errors import ConfigError

C = TypeVar("C")


def config_from_dict(cls: type[C], data: dict[str, Any], where: str = "config") -> C:
    """Build ``cls`` from a plain dict, refusing unknown keys; lists become tuples."""
    if not isinstance(data, dict):
        raise ConfigError(f"{where}: expected a mapping, got {type(data).__name__}")
    known = {f.name for f in fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(data) - known)
    if unknown:
        raise ConfigError(f"{where}: unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values = {k: tuple(v) if isinstance(v, list) else v for k, v in data.items()}
    try:
        return cls(**values)
    except (TypeError, ValueError) as err:
        raise ConfigError(f"{where}: {err}") from None


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON/YAML-ready dict (tuples become lists). A field added after files were written with its
    class (``metadata={"omit_at_default": True}``) is left out at its default, so those files'
    dicts still compare equal to a new run's and hash to the same names."""

    def plain(v: Any) -> Any:
        if isinstance(v, tuple | list):
            return [plain(x) for x in v]
        if isinstance(v, dict):
            return {k: plain(x) for k, x in v.items()}
        return v

    omit = {f.name for f in dataclasses.fields(config) if f.metadata.get("omit_at_default")
            and getattr(config, f.name) == f.default}
    return {k: plain(v) for k, v in dataclasses.asdict(config).items() if k not in omit}


def load_yaml(path: str | Path) -> Any:
    try:
        with open(path) as f:
            return yaml.safe_load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} not found") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"config file {path} is not valid YAML: {str(err).splitlines()[0]}") from None


def dump_yaml(path: str | Path, config: Any) -> None:
    from .storage import atomic_write_bytes

    atomic_write_bytes(path, yaml.safe_dump(config_to_dict(config), sort_keys=False).encode())


@dataclass(frozen=True)
class TrainConfig:
    """One training run. Defaults are the schedule the shipped LeNet5/MLP checkpoints used.

    SGD with Nesterov momentum and a cosine learning-rate decay to zero; weight decay applies to
    conv/linear weights only (not to BatchNorm, biases or activation parameters, whose decay
    toward 0 would pull S-APL away from its ReLU start for no reason).
    """

    model: str = "lenet5"
    act: str = "relu"
    dataset: str = "cifar10"
    epochs: int = 8
    batch_size: int = 128
    lr: float = 0.05
    momentum: float = 0.9
    weight_decay: float = 5e-4
    augment: bool = False
    decay_activations: bool = False  # weight decay on activation parameters too
    seed: int = 0
    act_options: dict[str, Any] = field(default_factory=dict)
    # Train on the first N training images only (0: all of them): for a toy run of a big grid on a
    # CPU (bench/gpu_paper.sh --toy). The checkpoint's name ends in -n<N>, so it never passes for a full run.
    train_images: int = field(default=0, metadata={"omit_at_default": True})

    def __post_init__(self) -> None:
        if self.train_images < 0:
            raise ValueError(f"train_images must be >= 0 (0: all), got {self.train_images}")
        if 0 < self.train_images < self.batch_size:
            raise ValueError(f"train_images ({self.train_images}) must be at least batch_size ({self.batch_size})")
        if self.epochs < 1:
            raise ValueError(f"epochs must be >= 1, got {self.epochs}")
        if self.batch_size < 2:
            raise ValueError(f"batch_size must be >= 2 (BatchNorm), got {self.batch_size}")
        if not self.lr > 0:
            raise ValueError(f"lr must be > 0, got {self.lr}")
        if self.weight_decay < 0 or not 0 <= self.momentum < 1:
            raise ValueError("weight_decay must be >= 0 and momentum in [0, 1)")

    @property
    def run_name(self) -> str:
        """``<model>-<act>-<dataset>[-aug]-s<seed>[-n<train_images>]``: the checkpoint's file stem."""
        from .checkpoints import default_checkpoint

        return default_checkpoint(self.model, self.act, self.dataset, self.augment, self.seed,
                                  train_images=self.train_images).stem
