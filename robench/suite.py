"""Experiment grids from one YAML file: models × activations × training seeds × attacks.

A suite expands into cells (``robench/cells.py``): with a ``train:`` section, one training cell per
checkpoint it lacks (same schedule for every model, activation and seed); then one attack cell per
result file, each needing its checkpoint's training cell. The graph walk here runs what is missing,
skips what is finished and resumes what was interrupted (the attack runner keeps finished repeats),
so rerunning a suite after a crash, or after adding a row, does only the new work. Without
``train:``, a missing checkpoint fails its attack cells: a suite never silently trains something the
user did not describe.

Cells run in this process, in N worker processes or on Ray (``robench/executors.py``); the walk
does not care which. Every cell holds its output's lock while it runs, so two suites on one folder
split the work: a cell another process holds is retried until it is free, and then found finished.
"""

from __future__ import annotations

import time
import warnings
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rich.progress import TaskID

from .attacks import get_attack
from .attacks.runner import AttackRun
from .cells import Cell, CellContext, Outcome
from .checkpoints import default_checkpoint
from .config import TrainConfig, config_from_dict, load_yaml
from .errors import ConfigError, RobenchError
from .executors import Executor, SerialExecutor, make_executor
from .progress import progress_bar
from .storage import check_writable


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
        """The checkpoint a cell attacks: its training run's name (augmentation, adversarial training and a
        subset show in it) when the suite trains, else the standard run's."""
        if self.train is None:
            return default_checkpoint(model, act, self.dataset, seed=train_seed, directory=Path(self.checkpoints))
        return Path(self.checkpoints) / f"{self.train_config(model, act, train_seed).run_name}.pt"

    def train_config(self, model: str, act: str, train_seed: int) -> TrainConfig:
        return config_from_dict(TrainConfig, {**(self.train or {}), "model": model, "act": act, "dataset": self.dataset,
                                              "seed": train_seed})

    def trainings(self) -> list[tuple[TrainConfig, Path]]:
        """The training run behind every checkpoint the grid needs (empty without ``train:``)."""
        if self.train is None:
            return []
        return [(self.train_config(m, a, s), self.checkpoint(m, a, s))
                for m in self.models for a in self.acts for s in self.train_seeds]

    def cells(self) -> list[Cell]:
        """The suite's graph: training cells, then attack cells (each needing its checkpoint's training
        cell when the suite trains), in grid order; a cell listed twice is one cell."""
        trains = [Cell(path, train=config) for config, path in self.trainings()]
        needs = {str(c.out): (c.id,) for c in trains}
        attacks = [Cell(Path(self.results) / run.result_name(), run=run, needs=needs.get(str(run.checkpoint), ()))
                   for run in self.runs()]
        return list({c.id: c for c in trains + attacks}.values())

    def runs(self) -> list[AttackRun]:
        """Every cell of the grid, in order: model, activation, training seed, attack."""
        return [
            AttackRun(model=m, act=a, dataset=self.dataset, attack=at.attack, options=dict(at.options),
                      images=self.images, repeats=at.repeats, seed=self.seed,
                      checkpoint=str(self.checkpoint(m, a, s)))
            for m in self.models for a in self.acts for s in self.train_seeds for at in self.attacks
        ]


def plan(suite: SuiteConfig) -> list[tuple[Cell, str, str]]:
    """Every cell of ``suite`` with its state and, for a conflict, why (Cell.plan): what ``robench
    suite --dry-run`` lists. Nothing runs and nothing is written."""
    return [(cell, *cell.plan()) for cell in suite.cells()]


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


def warn_outside_working_folder(suite: SuiteConfig) -> None:
    """One warning per output folder of ``suite`` that lies outside the working folder (``../..``, an
    absolute path elsewhere): a suite file from someone else must not write elsewhere without a word."""
    cwd = Path.cwd().resolve()
    folders = [("results", suite.results)] + ([("checkpoints", suite.checkpoints)] if suite.train is not None else [])
    for what, folder in folders:
        where = (cwd / folder).resolve()
        if not where.is_relative_to(cwd):
            warnings.warn(f"suite {suite.name} writes its {what} to {where}, outside the working folder {cwd}", stacklevel=3)


class SuiteIncomplete(RobenchError):
    """Some cells failed (or were not run because a cell they need failed); the others finished.
    ``done`` is what run_suite would have returned, ``failures`` one (cell id, reason) per cell."""

    def __init__(self, done: list[tuple[Path, str]], failures: list[tuple[str, str]]) -> None:
        super().__init__(f"{len(failures)} cells did not finish: " + "; ".join(f"{i}: {why}" for i, why in failures))
        self.done = done
        self.failures = failures


def run_suite(
    suite: SuiteConfig,
    data_dir: str | Path | None = None,
    device: str = "auto",
    show_progress: bool = False,
    on_cell: Callable[[AttackRun, str], None] | None = None,
    on_train: Callable[[Path, str], None] | None = None,
    workers: int = 1,
    ray: str | None = None,
) -> list[tuple[Path, str]]:
    """Train missing checkpoints (with ``train:``), then run every unfinished attack cell, on
    ``workers`` processes or on Ray (``ray``: 'local', 'auto' or an address); returns (result path,
    what happened: skipped/ran/resumed) per attack cell, in grid order. A failed cell stops only the
    cells that need it; SuiteIncomplete lists them at the end."""
    cells = suite.cells()
    warn_outside_working_folder(suite)
    for cell in cells:  # every output location answers before any compute
        check_writable(cell.out, "checkpoint" if cell.train is not None else "result")
    todo = {c.id for c in cells if c.state() != "done"}  # read once: a result is parsed to know
    display = SuiteDisplay(show_progress, suite.name, todo)

    def started(cell: Cell) -> None:
        display.start(cell)
        if cell.train is not None and on_train is not None:
            on_train(cell.out, "resuming" if cell.state() == "partial" else "training")

    def ended(cell: Cell, outcome: Outcome) -> None:
        display.end(cell, outcome)
        if cell.run is not None and on_cell is not None:
            on_cell(cell.run, outcome.status)

    ctx = CellContext(None if data_dir is None else str(data_dir), device)
    with display:  # a finished suite starts no worker and no cluster
        executor = make_executor(ctx, display.step, workers, ray) if todo else SerialExecutor(ctx, display.step)
        try:
            outcomes = walk(cells, executor, started, ended, todo)
        finally:
            executor.close()
    done = [(c.out, outcomes[c.id].status) for c in cells if c.run is not None]
    failures = [(c.id, o.message) for c in cells if (o := outcomes[c.id]).status in ("failed", "not run")]
    if failures:
        raise SuiteIncomplete(done, failures)
    return done


RETRY_S = 1.0  # how often a cell another process holds is tried again


def walk(cells: list[Cell], executor: Executor, on_start: Callable[[Cell], None],
         on_end: Callable[[Cell, Outcome], None], todo: set[str] | None = None) -> dict[str, Outcome]:
    """Run every cell once the cells it needs have finished, at most ``executor.slots`` at once, in
    the given order; returns each cell's Outcome. A finished cell (not in ``todo``, by default the
    cells whose state is not 'done') is skipped without being sent anywhere; a busy one is retried
    every RETRY_S; a failed one marks the cells that need it 'not run'. Ctrl-C stops the running
    cells (their finished repeats are kept) and is raised again."""
    todo = {c.id for c in cells if c.state() != "done"} if todo is None else todo
    outcomes: dict[str, Outcome] = {}
    waiting: list[Cell] = []
    ready: deque[Cell] = deque()
    later: list[tuple[float, Cell]] = []
    running: dict[str, Cell] = {}
    started: set[str] = set()  # a busy cell is submitted again, but starts once

    def finish(cell: Cell, outcome: Outcome) -> None:
        outcomes[cell.id] = outcome
        on_end(cell, outcome)

    def release() -> None:
        """Move the waiting cells whose needs have ended to ready (or to 'not run')."""
        for cell in list(waiting):
            ended = [outcomes.get(need) for need in cell.needs]
            bad = next((o for o in ended if o is not None and o.status in ("failed", "not run")), None)
            if bad is not None:
                waiting.remove(cell)
                why = "failed" if bad.status == "failed" else "did not run"
                finish(cell, Outcome(cell.id, "not run", f"needs {bad.id}, which {why}"))
            elif all(o is not None for o in ended):
                waiting.remove(cell)
                ready.append(cell)

    for cell in cells:
        if cell.id not in todo:
            finish(cell, Outcome(cell.id, "skipped"))
        else:
            waiting.append(cell)
    try:
        while True:
            release()
            now = time.monotonic()
            ready.extend(c for t, c in later if t <= now)
            later = [(t, c) for t, c in later if t > now]
            while ready and len(running) < executor.slots:
                cell = ready.popleft()
                running[cell.id] = cell
                if cell.id not in started:
                    started.add(cell.id)
                    on_start(cell)
                executor.submit(cell)
            if not running and not ready:
                if not later:
                    break
                time.sleep(max(0.0, min(t for t, _ in later) - now))
                continue
            for outcome in executor.wait(None if not later else max(0.05, min(t for t, _ in later) - now)):
                cell = running.pop(outcome.id)
                if outcome.status == "busy":
                    later.append((time.monotonic() + RETRY_S, cell))
                    continue
                finish(cell, outcome)
                if outcome.status == "interrupted":
                    raise KeyboardInterrupt
    except KeyboardInterrupt:
        for outcome in executor.interrupt():
            if outcome.id in running:
                finish(running.pop(outcome.id), outcome)
        raise
    for cell in waiting:  # a need that is no cell of this suite: cannot happen from SuiteConfig.cells
        finish(cell, Outcome(cell.id, "not run", f"needs {', '.join(cell.needs)}, which is not in the suite"))
    return outcomes


class SuiteDisplay:
    """One Rich display for a whole suite: cells finished out of those to run, with an ETA, and a
    bar per running cell (its epochs or repeats). Silent unless enabled and on a terminal."""

    def __init__(self, enabled: bool, name: str, todo: set[str]) -> None:
        self.progress = progress_bar(enabled)
        self.todo = todo
        self.overall = self.progress.add_task(f"suite {name}: cells", total=len(self.todo))
        self.bars: dict[str, TaskID] = {}

    def __enter__(self) -> SuiteDisplay:
        self.progress.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.stop()

    def start(self, cell: Cell) -> None:
        if cell.id not in self.bars:
            finished, total = cell.steps()
            self.bars[cell.id] = self.progress.add_task(f"  {cell.id}", total=total, completed=finished)

    def step(self, cell_id: str, finished: int, total: int) -> None:
        if cell_id in self.bars:
            self.progress.update(self.bars[cell_id], completed=finished, total=total)

    def end(self, cell: Cell, outcome: Outcome) -> None:
        bar = self.bars.pop(cell.id, None)
        if bar is not None:
            self.progress.remove_task(bar)
        if cell.id in self.todo:
            self.progress.advance(self.overall)
