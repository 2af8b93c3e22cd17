"""Experiment grids from one YAML file: models × activations × training seeds × attacks.

Each cell is one ``robench attack`` run with its own result file. A suite runs what is missing,
skips what is finished and resumes what was interrupted (the attack runner keeps finished
repeats), so rerunning a suite after a crash, or after adding a row, does only the new work.

With a ``train:`` section a suite also trains the checkpoints it lacks (same schedule for every
model, activation and seed), so a comparison across training seeds is one command. Without it, a
missing checkpoint is an error: a suite never silently trains something the user did not describe.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from .attacks import get_attack
from .attacks.runner import AttackRun, run_attack
from .checkpoints import default_checkpoint
from .config import TrainConfig, config_from_dict, load_yaml
from .errors import ConfigError, ResultError
from .results import read_result
from .storage import check_writable
from .train import resume_path, train


@dataclass(frozen=True)
class SuiteAttack:
    attack: str
    options: dict[str, Any] = field(default_factory=dict)
    repeats: int = 5


@dataclass(frozen=True)
class SuiteConfig:
    name: str
    models: tuple[str, ...]
    acts: tuple[str, ...]
    attacks: tuple[SuiteAttack, ...]
    dataset: str = "cifar10"
    images: int = 100
    seed: int = 0
    train_seeds: tuple[int, ...] = (0,)
    results: str = "attacks"
    checkpoints: str = "checkpoints"
    train: dict[str, Any] | None = None  # TrainConfig fields other than model/act/dataset/seed

    def __post_init__(self) -> None:
        if not self.train_seeds:
            raise ValueError("train_seeds must not be empty")
        if self.train is not None:
            fixed = sorted({"model", "act", "dataset", "seed"} & set(self.train))
            if fixed:
                raise ValueError(f"train: {', '.join(fixed)}: set by the grid (models, acts, dataset, train_seeds), "
                                 "not by 'train'")
            config_from_dict(TrainConfig, dict(self.train), "train")  # invalid schedules fail at load

    def checkpoint(self, model: str, act: str, train_seed: int) -> Path:
        augment = bool((self.train or {}).get("augment", False))
        return default_checkpoint(model, act, self.dataset, augment=augment, seed=train_seed,
                                  directory=Path(self.checkpoints))

    def trainings(self) -> list[tuple[TrainConfig, Path]]:
        """The training run behind every checkpoint the grid needs (empty without ``train:``)."""
        if self.train is None:
            return []
        return [
            (config_from_dict(TrainConfig, {**self.train, "model": m, "act": a, "dataset": self.dataset, "seed": s}),
             self.checkpoint(m, a, s))
            for m in self.models for a in self.acts for s in self.train_seeds
        ]

    def runs(self) -> list[AttackRun]:
        """Every cell of the grid, in order: model, activation, training seed, attack."""
        return [
            AttackRun(model=m, act=a, dataset=self.dataset, attack=at.attack, options=dict(at.options),
                      images=self.images, repeats=at.repeats, seed=self.seed,
                      checkpoint=str(self.checkpoint(m, a, s)))
            for m in self.models for a in self.acts for s in self.train_seeds for at in self.attacks
        ]


def load_suite(path: str | Path) -> SuiteConfig:
    data = load_yaml(path)
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: a suite is a mapping")
    attacks = data.get("attacks")
    if not isinstance(attacks, list) or not (attacks or data.get("train")):
        raise ConfigError(f"{path}: 'attacks' must be a non-empty list (it may be empty in a suite with 'train:')")
    data = dict(data)
    data["attacks"] = tuple(config_from_dict(SuiteAttack, a, f"{path}: attacks[{i}]") for i, a in enumerate(attacks))
    suite = config_from_dict(SuiteConfig, data, str(path))
    for run in suite.runs():  # every cell's attack name and options are valid before anything runs
        get_attack(run.attack)
        run.attack_config()
    return suite


def cell_status(path: Path) -> str:
    """'missing', 'partial' or 'complete'."""
    if not path.exists():
        return "missing"
    try:
        return "complete" if read_result(path)["status"] == "complete" else "partial"
    except ResultError:
        return "partial"  # an unreadable file is rerun; run_attack reports it if it cannot be


def run_suite(
    suite: SuiteConfig,
    data_dir: str | Path | None = None,
    device: str = "auto",
    show_progress: bool = False,
    on_cell: Callable[[AttackRun, str], None] | None = None,
    on_train: Callable[[Path, str], None] | None = None,
) -> list[tuple[Path, str]]:
    """Train missing checkpoints (with ``train:``), then run every unfinished cell; returns
    (result path, what happened: skipped/ran/resumed)."""
    for config, path in suite.trainings():  # every output location answers before any compute
        check_writable(path, "checkpoint")
    for run in suite.runs():
        check_writable(Path(suite.results) / run.result_name(), "result")
    for config, path in suite.trainings():
        if path.exists() and not resume_path(path).exists():
            continue
        if on_train is not None:
            on_train(path, "resuming" if resume_path(path).exists() else "training")
        train(config, out=path, data_dir=data_dir, device=device, show_progress=show_progress)
    done = []
    for run in suite.runs():
        path = Path(suite.results) / run.result_name()
        status = cell_status(path)
        if status == "complete":
            done.append((path, "skipped"))
        else:
            run_attack(run, out=path, data_dir=data_dir, device=device, show_progress=show_progress)
            done.append((path, "resumed" if status == "partial" else "ran"))
        if on_cell is not None:
            on_cell(run, done[-1][1])
    return done
