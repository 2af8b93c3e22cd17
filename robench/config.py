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


def _plain(v: Any) -> Any:
    if isinstance(v, tuple | list):
        return [_plain(x) for x in v]
    if isinstance(v, dict):
        return {k: _plain(x) for k, x in v.items()}
    return v


def config_to_dict(config: Any) -> dict[str, Any]:
    """JSON/YAML-ready dict (tuples become lists). A field added after files were written with its
    class (``metadata={"omit_at_default": True}``) is left out at its default, so those files'
    dicts still compare equal to a new run's and hash to the same names."""
    omit = {f.name for f in dataclasses.fields(config) if f.metadata.get("omit_at_default")
            and getattr(config, f.name) == f.default}
    return {k: _plain(v) for k, v in dataclasses.asdict(config).items() if k not in omit}


def field_default(f: dataclasses.Field) -> Any:
    """A dataclass field's default, calling its factory."""
    if f.default_factory is not dataclasses.MISSING:
        return f.default_factory()
    return f.default


def normalised(cls: type, stored: dict[str, Any]) -> dict[str, Any]:
    """A stored config of ``cls`` with every field it lacks at the value it ran with: today's
    default, or, for a field whose default has changed since (declared on the field as
    ``metadata={"default_was": old}``), the old one. Values are plain (lists, not tuples); keys
    ``cls`` no longer knows are kept, so they count as a difference."""
    out = dict(stored)
    for f in fields(cls):
        if f.name not in out:
            out[f.name] = f.metadata["default_was"] if "default_was" in f.metadata else field_default(f)
    return _plain(out)


def config_difference(stored: dict[str, Any], today: Any) -> list[str]:
    """The fields in which a stored config (a dict an older robench may have written) and today's
    request (a config dataclass) differ once the stored one is normalised; [] when they describe the
    same run. An option added since, at its default, is no difference; a changed default is."""
    if not isinstance(stored, dict):
        return ["(not a mapping)"]
    old = normalised(type(today), stored)
    new = _plain(dataclasses.asdict(today))
    return sorted(k for k in old.keys() | new.keys() if k not in new or k not in old or old[k] != new[k])


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


def checkpoint_stem(model: str, act: str, dataset: str, augment: bool = False, seed: int = 0,
                    train_images: int = 0, adv: str = "") -> str:
    """``<model>-<act>-<dataset>[-aug][-<adv>]-s<seed>[-n<train_images>]``: the one place a
    checkpoint's name is made (``checkpoints.default_checkpoint`` puts it in a folder)."""
    from .registry import file_name_part

    aug = "-aug" if augment else ""
    adv = f"-{adv}" if adv else ""
    subset = f"-n{train_images}" if train_images else ""
    return f"{file_name_part(model)}-{file_name_part(act)}-{dataset}{aug}{adv}-s{seed}{subset}"


def budget_text(eps: float, over: str = "/") -> str:
    """A budget as people write it: ``8/255`` (``8of255`` in file names) when it is a whole number
    of 8-bit steps, else ``0.1``."""
    steps = round(eps * 255)
    return f"{steps}{over}255" if steps >= 1 and abs(eps * 255 - steps) < 1e-6 else f"{eps:g}"


ADV_METHODS = ("none", "pgd", "trades", "fgsm-rs")  # adversarial training (robench/adversarial.py)
ADV_NORMS = ("linf", "l2")


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
    # Adversarial training (robench/adversarial.py). "none" is standard training, and a sidecar
    # stored before these fields existed reads as that. 0 means "the default for this dataset and
    # method" (SPEC section 7), filled in here so that a stored config names every value it used.
    adv: str = field(default="none", metadata={"omit_at_default": True})  # none, pgd, trades or fgsm-rs
    adv_norm: str = field(default="linf", metadata={"omit_at_default": True})
    adv_eps: float = field(default=0.0, metadata={"omit_at_default": True})
    adv_steps: int = field(default=0, metadata={"omit_at_default": True})
    adv_step_size: float = field(default=0.0, metadata={"omit_at_default": True})
    trades_beta: float = field(default=6.0, metadata={"omit_at_default": True})

    def __post_init__(self) -> None:
        self._check_adversarial()
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

    def _check_adversarial(self) -> None:
        """Validate the adversarial fields and fill their per-dataset defaults (SPEC section 7):
        eps 0.3 (MNIST) or 8/255, K 40 (MNIST) or 10, step 0.01 at MNIST's 0.3 and else 2.5 eps / K
        (2/255 at 8/255); FGSM-RS one step of 1.25 eps."""
        if self.adv not in ADV_METHODS:
            raise ValueError(f"adv must be one of {', '.join(ADV_METHODS)}, got {self.adv!r}")
        if self.adv_norm not in ADV_NORMS:
            raise ValueError(f"adv_norm must be one of {', '.join(ADV_NORMS)}, got {self.adv_norm!r}")
        if self.adv_eps < 0 or self.adv_steps < 0 or self.adv_step_size < 0 or self.trades_beta < 0:
            raise ValueError("adv_eps, adv_steps, adv_step_size and trades_beta must be >= 0")
        if self.adv == "none":
            if (self.adv_eps, self.adv_steps, self.adv_step_size, self.adv_norm) != (0.0, 0, 0.0, "linf"):
                raise ValueError("adv_eps, adv_steps, adv_step_size and adv_norm need adv (pgd, trades or fgsm-rs)")
            return
        if self.trades_beta != 6.0 and self.adv != "trades":
            raise ValueError(f"trades_beta applies to adv=trades, not {self.adv}")
        if self.adv == "fgsm-rs" and self.adv_steps not in (0, 1):
            raise ValueError(f"fgsm-rs takes one step, got adv_steps={self.adv_steps}")
        mnist = self.dataset == "mnist"
        eps = self.adv_eps or (0.3 if mnist else 8 / 255)
        steps = 1 if self.adv == "fgsm-rs" else self.adv_steps or (40 if mnist else 10)
        if self.adv == "fgsm-rs":
            step = 1.25 * eps
        else:
            step = 0.01 if mnist and eps == 0.3 and steps == 40 else 2.5 * eps / steps
        for name, value in (("adv_eps", eps), ("adv_steps", steps), ("adv_step_size", self.adv_step_size or step)):
            object.__setattr__(self, name, value)  # frozen: the defaults are filled once, here

    @property
    def adv_tag(self) -> str:
        """How the run was trained, for its file name: ``""`` (standard), ``pgd0.1k10``,
        ``trades8of255k10b6``, ``fgsmrs8of255``, with ``l2`` after the budget for L2."""
        if self.adv == "none":
            return ""
        eps = budget_text(self.adv_eps, over="of")
        norm = "l2" if self.adv_norm == "l2" else ""
        k = "" if self.adv == "fgsm-rs" else f"k{self.adv_steps}"
        beta = f"b{self.trades_beta:g}" if self.adv == "trades" else ""
        return f"{self.adv.replace('-', '')}{eps}{norm}{k}{beta}"

    @property
    def run_name(self) -> str:
        """``<model>-<act>-<dataset>[-aug][-<adv_tag>]-s<seed>[-n<train_images>]``: the checkpoint's file stem."""
        return checkpoint_stem(self.model, self.act, self.dataset, self.augment, self.seed,
                               train_images=self.train_images, adv=self.adv_tag)
