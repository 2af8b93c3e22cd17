"""The cells of a suite and the one function that runs a cell, whatever executor calls it.

A cell trains one checkpoint or runs one attack; its id is its output's file name (unique within a
suite: checkpoints end in ``.pt``, results in ``.json``). An attack cell of a suite that trains
``needs`` the training cell of its checkpoint, so a failed training skips only its own attacks.

``run_cell`` never raises for the cell's own failure: a failed, busy or interrupted cell is an
Outcome, so one bad cell cannot stop the others and every executor reports the same way. Seeds come
from the cell (the training config's seed; run_attack's ``seed, setting, repeat``), never from the
order in which an executor happens to run cells.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Literal

from .adversarials import npz_files
from .attacks import get_attack
from .attacks.runner import AttackRun, ResultExistsError, request_difference, run_attack
from .checkpoints import history_path, read_meta, sidecar_path
from .config import TrainConfig, config_difference
from .errors import ResultError, RobenchError
from .locks import CellBusy
from .results import read_result
from .train import resume_path, train

Status = Literal["ran", "resumed", "skipped", "busy", "failed", "not run", "interrupted"]
# ran / resumed: computed here; skipped: found finished (before, or by another process meanwhile);
# busy: another live process holds its lock (come back later); not run: a cell it needs failed.


@dataclass(frozen=True)
class Cell:
    """Train ``train`` into ``out``, or attack with ``run`` into ``out``."""

    out: Path
    train: TrainConfig | None = None
    run: AttackRun | None = None
    needs: tuple[str, ...] = ()  # ids of the cells whose outputs this one reads

    @property
    def id(self) -> str:
        return self.out.name

    @property
    def kind(self) -> str:
        return "train" if self.train is not None else "attack"

    def outputs(self) -> list[Path]:
        """Every file the cell has written, in the order a copy of them must be written (a sidecar
        before its .pt, an .npz before the result naming it); the last is the one that says 'finished'."""
        if self.train is not None:
            return [resume_path(self.out), history_path(self.out), sidecar_path(self.out), self.out]
        return [*npz_files(self.out), self.out]  # named by content: whichever are there now

    def state(self) -> str:
        """'done', 'partial' (an interrupted run to resume), 'missing', or 'conflict': the output is
        there but answers another request (running the cell fails, saying which fields differ)."""
        return self.plan()[0]

    def plan(self) -> tuple[str, str]:
        """(state, why): ``why`` names the fields a conflicting output differs in, after filling in
        what an older robench did not record (config.config_difference); else ''."""
        if self.train is not None:
            if resume_path(self.out).exists():
                return "partial", ""
            if not self.out.exists():
                return "missing", ""
            try:
                differ = config_difference(read_meta(self.out).get("train_config"), self.train)
            except RobenchError as err:
                return "conflict", str(err).splitlines()[0]
            return ("conflict", "trained with another " + ", ".join(differ)) if differ else ("done", "")
        assert self.run is not None
        if not self.out.exists():
            return "missing", ""
        try:
            stored = read_result(self.out)
        except ResultError:
            return "partial", ""  # an unreadable file is rerun; run_attack reports it if it cannot be
        differ = request_difference(stored, replace(self.run, checkpoint=str(self.run.checkpoint_path())))
        if differ:
            return "conflict", "made with a different " + ", ".join(differ)
        return ("done" if stored["status"] == "complete" else "partial"), ""

    def steps(self) -> tuple[int, int]:
        """(finished, total) epochs or attack repeats, for a progress bar."""
        if self.train is not None:
            return 0, self.train.epochs
        assert self.run is not None
        spec = get_attack(self.run.attack)
        per_setting = 1 if spec.deterministic else self.run.repeats
        total = len(spec.settings(self.run.attack_config())) * per_setting
        if self.out.exists():
            try:
                return min(total, sum(len(s["repeats"]) for s in read_result(self.out)["settings"])), total
            except ResultError:
                pass
        return 0, total

    def moved_to(self, folder: Path) -> Cell:
        """The same cell writing into ``folder`` (what a Ray task does, away from the real outputs)."""
        return replace(self, out=folder / self.out.name)


@dataclass(frozen=True)
class Outcome:
    """What became of one cell: ``message`` says why for failed and not-run cells."""

    id: str
    status: Status
    message: str = ""
    seconds: float = 0.0


@dataclass(frozen=True)
class CellContext:
    """What every cell of one suite run shares."""

    data_dir: str | None = None
    device: str = "auto"


Progress = Callable[[int, int], None]  # (finished, total) steps of the running cell


def run_cell(cell: Cell, ctx: CellContext, progress: Progress | None = None) -> Outcome:
    """Run ``cell`` where its paths point, under its output's lock (never waiting for it)."""
    start = time.perf_counter()
    resumed = cell.state() == "partial"
    try:
        if cell.train is not None:
            done = train(cell.train, out=cell.out, data_dir=ctx.data_dir, device=ctx.device, wait=False,
                         on_epoch=progress)
            status: Status = "skipped" if done.stored else "resumed" if resumed else "ran"
        else:
            assert cell.run is not None
            finished, total = cell.steps()
            step = _repeat_counter(finished, total, progress)
            run_attack(cell.run, out=cell.out, data_dir=ctx.data_dir, device=ctx.device, wait=False, on_repeat=step)
            status = "resumed" if resumed else "ran"
    except ResultExistsError:
        status = "skipped"  # finished by another process between our look and its lock
    except CellBusy as busy:
        return Outcome(cell.id, "busy", str(busy))
    except KeyboardInterrupt:
        return Outcome(cell.id, "interrupted", "interrupted", time.perf_counter() - start)
    except Exception as err:  # noqa: BLE001 - one cell's failure is reported, the suite goes on
        return Outcome(cell.id, "failed", failure_line(err), time.perf_counter() - start)
    return Outcome(cell.id, status, "", time.perf_counter() - start)


def failure_line(err: BaseException) -> str:
    """One line for a failed cell, as ``robench`` prints errors: a user's error as it stands, a bug
    with its type (its traceback would be one per cell, and from another process)."""
    if isinstance(err, OSError) and not isinstance(err, RobenchError):
        where = f" {err.filename}" if err.filename else ""
        return f"cannot access{where}: {err.strerror or err}"
    if isinstance(err, RobenchError | ValueError | FloatingPointError):
        return str(err).splitlines()[0] if str(err) else type(err).__name__
    return f"{type(err).__name__}: {err}".splitlines()[0]


def _repeat_counter(finished: int, total: int, progress: Progress | None) -> Callable[[str, int], None] | None:
    if progress is None:
        return None
    count = [finished]

    def step(label: str, repeat: int) -> None:
        count[0] += 1
        progress(count[0], total)

    return step
