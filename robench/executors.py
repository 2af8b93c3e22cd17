"""Where a suite's cells run: in this process, in N worker processes, or as Ray tasks.

All three run ``cells.run_cell`` and share one small interface, so the suite's graph walk does not
know which it has:

- ``submit(cell)``: start it (the walk never submits more than ``slots`` at once);
- ``wait(timeout)``: the Outcomes of cells that ended (progress goes to ``on_progress`` meanwhile);
- ``interrupt()``: stop the running cells, keeping what they finished, and return their Outcomes;
- ``close()``.

Serial and process executors run a cell on the real files, under the cell's lock. The Ray
executor takes the lock in the driver, ships the cell's inputs (its checkpoint, and a partial
result or resume file to continue) to a task that works in a scratch folder, and writes what the
task sends back atomically, so the cluster needs no shared filesystem. Ray is imported only here,
and only when asked for.
"""

from __future__ import annotations

import logging
import multiprocessing
import os
import queue
import signal
import tempfile
import time
import warnings
from collections.abc import Callable
from contextlib import ExitStack
from dataclasses import replace
from pathlib import Path
from typing import Any, Protocol

from .cells import Cell, CellContext, Outcome, failure_line, run_cell
from .checkpoints import sidecar_path
from .errors import ConfigError, RobenchError
from .locks import CellBusy, cell_lock
from .reaper import descendants, die_with, watch_cluster
from .storage import atomic_write_bytes

OnProgress = Callable[[str, int, int], None]  # cell id, finished steps, total steps

GRACE_S = 2.0  # after Ctrl-C, how long workers get to notice it themselves before it is passed on
STOP_S = 60.0  # and how long they get to stop after that, before they are terminated


class Executor(Protocol):
    slots: int

    def submit(self, cell: Cell) -> None: ...

    def wait(self, timeout: float | None) -> list[Outcome]: ...

    def interrupt(self) -> list[Outcome]: ...

    def close(self) -> None: ...


def make_executor(ctx: CellContext, on_progress: OnProgress, workers: int = 1, ray: str | None = None) -> Executor:
    """Serial for one worker, a process pool for more, Ray when ``ray`` names a cluster ('local'
    starts one here; 'auto' or an address joins one)."""
    if workers < 1:
        raise ConfigError(f"--workers must be >= 1, got {workers}")
    if ray is not None:
        return RayExecutor(ray, ctx, on_progress, workers if workers > 1 else None)
    if workers == 1:
        return SerialExecutor(ctx, on_progress)
    return ProcessExecutor(workers, ctx, on_progress)


class SerialExecutor:
    """One cell at a time, in this process: ``wait`` runs the submitted cell."""

    slots = 1

    def __init__(self, ctx: CellContext, on_progress: OnProgress) -> None:
        self.ctx, self.on_progress = ctx, on_progress
        self.cell: Cell | None = None

    def submit(self, cell: Cell) -> None:
        self.cell = cell

    def wait(self, timeout: float | None) -> list[Outcome]:
        if self.cell is None:
            if timeout:
                time.sleep(timeout)
            return []
        cell, self.cell = self.cell, None
        return [run_cell(cell, self.ctx, lambda done, total: self.on_progress(cell.id, done, total))]

    def interrupt(self) -> list[Outcome]:
        return []  # the running cell was this process: it has already returned 'interrupted'

    def close(self) -> None:
        pass


class ProcessExecutor:
    """``workers`` processes with ``cores // workers`` torch threads each, fed one cell at a time
    through a queue. They are forked from a forkserver that has imported robench and run nothing
    (torch's thread pools, started by the first op, do not survive a fork; an import is safe), so
    the ~10 s import of torch and robench is paid once per process that runs suites, not once per
    worker and suite."""

    def __init__(self, workers: int, ctx: CellContext, on_progress: OnProgress) -> None:
        self.devices = worker_devices(ctx.device, workers)
        self.slots, self.ctx, self.on_progress = len(self.devices), ctx, on_progress
        if "forkserver" in multiprocessing.get_all_start_methods():
            self.mp = multiprocessing.get_context("forkserver")
            self.mp.set_forkserver_preload([__name__])
        else:  # Windows: each worker imports for itself
            self.mp = multiprocessing.get_context("spawn")
        self.tasks: Any = self.mp.Queue()
        self.events: Any = self.mp.Queue()
        self.threads = max(1, (os.cpu_count() or 1) // self.slots)
        # Workers answer Ctrl-C as this process does: a suite started with SIGINT ignored (nohup, a
        # background job of a script) must not be stopped through its workers.
        self.interruptible = signal.getsignal(signal.SIGINT) is not signal.SIG_IGN
        self.procs = [self._spawn(device) for device in self.devices]
        self.running: dict[str, int] = {}  # cell id -> pid of the worker on it
        self.queued: dict[str, Cell] = {}

    def _spawn(self, device: str) -> Any:
        ctx = replace(self.ctx, device=device)
        args = (self.tasks, self.events, ctx, self.threads, self.interruptible, os.getcwd(), os.getpid())
        proc = self.mp.Process(target=_worker, args=args, daemon=True)
        proc.start()
        return proc

    def submit(self, cell: Cell) -> None:
        self.queued[cell.id] = cell
        self.tasks.put(cell)

    def wait(self, timeout: float | None) -> list[Outcome]:
        if not self.running and not self.queued:
            if timeout:
                time.sleep(timeout)
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            outcomes = self._drain(0.5 if deadline is None else max(0.0, min(0.5, deadline - time.monotonic())))
            outcomes += self._reap()
            if outcomes or (deadline is not None and time.monotonic() >= deadline):
                return outcomes

    def _drain(self, block: float) -> list[Outcome]:
        """Handle every event waiting (the first for up to ``block`` seconds)."""
        outcomes = []
        try:
            event = self.events.get(timeout=block) if block > 0 else self.events.get_nowait()
            while True:
                kind, *rest = event
                if kind == "start":
                    self.running[rest[0]] = rest[1]
                    self.queued.pop(rest[0], None)
                elif kind == "progress":
                    self.on_progress(*rest)
                elif kind == "warning":
                    warnings.warn(rest[0], stacklevel=1)
                else:
                    outcomes.append(rest[0])
                    self.running.pop(rest[0].id, None)
                event = self.events.get_nowait()
        except queue.Empty:
            return outcomes

    def _reap(self) -> list[Outcome]:
        """A worker that died (killed, out of memory) fails its cell and is replaced."""
        outcomes = []
        for i, proc in enumerate(self.procs):
            if proc.is_alive():
                continue
            for cell_id, pid in list(self.running.items()):
                if pid == proc.pid:
                    del self.running[cell_id]
                    outcomes.append(Outcome(cell_id, "failed", f"its worker process died (exit code {proc.exitcode})"))
            self.procs[i] = self._spawn(self.devices[i])
        return outcomes

    def interrupt(self) -> list[Outcome]:
        """Ctrl-C on a terminal reaches the workers too; a SIGINT sent to this process alone does not,
        so after GRACE_S it is passed on to the workers still busy. Cells never started are dropped."""
        while True:  # cells queued but not yet taken
            try:
                self.tasks.get_nowait()
            except queue.Empty:
                break
        outcomes = [Outcome(cell_id, "interrupted", "never started") for cell_id in self.queued]
        self.queued.clear()
        end = time.monotonic() + GRACE_S
        while self.running and time.monotonic() < end:
            outcomes += self._drain(0.1)
        for pid in set(self.running.values()):
            try:
                os.kill(pid, signal.SIGINT)
            except ProcessLookupError:
                pass
        end = time.monotonic() + STOP_S
        while self.running and time.monotonic() < end:
            outcomes += self._drain(0.2) + self._reap()
        return outcomes

    def close(self) -> None:
        for _ in self.procs:
            self.tasks.put(None)
        for proc in self.procs:
            proc.join(timeout=10)
            if proc.is_alive():
                proc.terminate()
                proc.join(timeout=5)


def worker_devices(device: str, workers: int, gpus: int | None = None) -> list[str]:
    """Each worker's device: ``workers`` per GPU when the suite runs on CUDA and there are several
    GPUs (``--workers`` counts per device), else ``workers`` on ``device`` (one GPU is shared)."""
    if gpus is None:
        import torch

        gpus = torch.cuda.device_count() if device in ("auto", "cuda") else 0
    if gpus > 1:
        return [f"cuda:{g}" for g in range(gpus) for _ in range(workers)]
    return [device] * workers


def _worker(tasks: Any, events: Any, ctx: CellContext, threads: int, interruptible: bool, cwd: str, suite: int) -> None:
    """A worker's loop. SIGINT is ignored between cells (an idle worker has nothing to stop) and
    raises inside one, where run_cell turns it into an 'interrupted' Outcome after the lock is let go.
    It works in the suite's folder (a forkserver's children start in the forkserver's), so relative
    paths mean what they mean to the suite, and dies with the suite's process (pid ``suite``), killed
    or not."""
    die_with(suite)
    os.chdir(cwd)
    on_sigint = signal.default_int_handler if interruptible else signal.SIG_IGN
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # Warnings go to the parent, which shows each once (as the CLI shows its own), not one per worker.
    warnings.showwarning = lambda message, *args, **kwargs: events.put(("warning", str(message)))
    logging.getLogger("torch.utils.cpp_extension").setLevel(logging.ERROR)  # as run_guarded: CUDA-search noise
    import torch

    torch.set_num_threads(threads)
    while (cell := tasks.get()) is not None:
        events.put(("start", cell.id, os.getpid()))
        outcome = None
        try:
            signal.signal(signal.SIGINT, on_sigint)
            outcome = run_cell(cell, ctx, lambda done, total, i=cell.id: events.put(("progress", i, done, total)))
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        except KeyboardInterrupt:  # arrived between run_cell's return and the line after it
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        events.put(("done", outcome or Outcome(cell.id, "interrupted", "interrupted")))


class RayExecutor:
    """Cells as Ray tasks, one CPU each (or a GPU, or ``1/per_gpu`` of one, when the cluster has
    GPUs and the device allows). The driver holds each cell's lock while its task runs."""

    def __init__(self, address: str, ctx: CellContext, on_progress: OnProgress, per_device: int | None) -> None:
        try:
            import ray
        except ImportError:
            raise RobenchError("--ray needs Ray: pip install 'robench[ray]'") from None
        self.ray = ray
        self.started = not ray.is_initialized()
        if self.started:
            local = address == "local"
            ray.init(address=None if local else address, num_cpus=per_device if local else None,
                     include_dashboard=False, log_to_driver=False, logging_level="ERROR")
        # A cluster this driver started goes down with it, even when it is SIGKILLed before close().
        self.watcher = watch_cluster(descendants(os.getpid())) if self.started and address == "local" else None
        resources = ray.cluster_resources()
        gpus = resources.get("GPU", 0) if not ctx.device.startswith(("cpu", "mps")) else 0
        if ctx.device.startswith("cuda") and not gpus:
            raise RobenchError(f"--device {ctx.device} asked for, but the Ray cluster has no GPU")
        if gpus:
            self.slots = int(gpus * (per_device or 1))
            options = {"num_gpus": 1 / (per_device or 1), "num_cpus": 1}
        else:
            self.slots = max(1, int(resources.get("CPU", 1)))
            options = {"num_cpus": 1}
        data_dir = None if ctx.data_dir is None else str(Path(ctx.data_dir).absolute())  # tasks run elsewhere
        self.ctx, self.on_progress = replace(ctx, data_dir=data_dir), on_progress
        self.task = ray.remote(_ray_cell).options(max_retries=0, num_returns=2, **options)
        self.running: dict[Any, tuple[Cell, Any, ExitStack]] = {}  # outcome ref -> cell, files ref, its lock
        self.ready: list[Outcome] = []  # outcomes known at submit (busy, finished by another process)
        self.checkpoints: dict[str, Any] = {}  # checkpoint path -> ref to {name: bytes}
        from ray.util.queue import Queue

        self.progress = Queue(actor_options={"num_cpus": 0})  # tasks' finished repeats/epochs, for the display

    def submit(self, cell: Cell) -> None:
        lock = ExitStack()
        try:
            lock.enter_context(cell_lock(cell.out, blocking=False))
        except CellBusy as busy:
            self.ready.append(Outcome(cell.id, "busy", str(busy)))
            return
        if cell.state() == "done":  # finished by another process since the suite looked
            lock.close()
            self.ready.append(Outcome(cell.id, "skipped"))
            return
        try:
            carried = {p.name: p.read_bytes() for p in cell.outputs() if p.exists()}
            inputs = self._checkpoint(cell) if cell.run is not None else None
        except (OSError, RobenchError) as err:
            lock.close()
            self.ready.append(Outcome(cell.id, "failed", failure_line(err)))
            return
        outcome_ref, files_ref = self.task.remote(cell, carried, inputs, self.ctx, self.progress)
        self.running[outcome_ref] = (cell, files_ref, lock)
        if cell.train is not None:
            self.checkpoints[str(cell.out)] = files_ref  # its attacks read the .pt straight from the task

    def _checkpoint(self, cell: Cell) -> Any:
        """A ref to the checkpoint's files (the .pt and its sidecar, whose metadata the result cites)."""
        assert cell.run is not None
        path = cell.run.checkpoint_path()
        if str(path) not in self.checkpoints:
            if not path.is_file():
                raise RobenchError(f"checkpoint {path} not found")
            files = {p.name: p.read_bytes() for p in (path, sidecar_path(path)) if p.is_file()}
            self.checkpoints[str(path)] = self.ray.put(files)
        return self.checkpoints[str(path)]

    def wait(self, timeout: float | None) -> list[Outcome]:
        if self.ready:
            done, self.ready = self.ready, []
            return done
        if not self.running:
            if timeout:
                time.sleep(timeout)
            return []
        end = None if timeout is None else time.monotonic() + timeout
        while True:  # wakes twice a second to pass the tasks' progress on
            step = 0.5 if end is None else max(0.0, min(0.5, end - time.monotonic()))
            finished, _ = self.ray.wait(list(self.running), num_returns=1, timeout=step)
            if finished:  # and any other that ended meanwhile
                finished, _ = self.ray.wait(list(self.running), num_returns=len(self.running), timeout=0)
            for event in self.progress.get_nowait_batch(self.progress.qsize()):
                self.on_progress(*event)
            if finished or (end is not None and time.monotonic() >= end):
                return [self._collect(ref) for ref in finished]

    def _collect(self, ref: Any) -> Outcome:
        """Write what a finished task sent back, in the cell's output order, then let its lock go."""
        cell, files_ref, lock = self.running.pop(ref)
        with lock:
            try:
                outcome, files = self.ray.get(ref), self.ray.get(files_ref)
            except self.ray.exceptions.TaskCancelledError:
                return Outcome(cell.id, "interrupted", "interrupted")
            except Exception as err:  # noqa: BLE001 - a task that crashed (its worker died) fails its cell
                return Outcome(cell.id, "failed", f"its Ray task failed: {str(err).strip().splitlines()[-1][:300]}")
            if not files:  # the task ended before its scratch copy existed: nothing to mirror
                return outcome
            for name, data in files.items():  # in the task's output order: an .npz before the JSON naming it
                if data is not None:
                    atomic_write_bytes(cell.out.with_name(name), data)
            for path in cell.outputs():  # what the task's run removed (a resume file once trained, a replaced .npz)
                if files.get(path.name) is None:
                    path.unlink(missing_ok=True)
            return outcome

    def interrupt(self) -> list[Outcome]:
        """Cancelling raises KeyboardInterrupt in each task, which sends back the repeats it finished."""
        for ref in self.running:
            self.ray.cancel(ref)
        outcomes = list(self.ready)
        self.ready = []
        end = time.monotonic() + STOP_S
        while self.running and time.monotonic() < end:
            outcomes += self.wait(1.0)
        return outcomes

    def close(self) -> None:
        for cell, _, lock in self.running.values():
            lock.close()
        self.running.clear()
        if self.started:
            self.ray.shutdown()
        if self.watcher is not None:  # shut down in order: stand the watcher down
            self.watcher.kill()
            self.watcher.wait()


def _ray_cell(cell: Cell, carried: dict[str, bytes], checkpoint: dict[str, bytes] | None,
              ctx: CellContext, progress: Any) -> tuple[Outcome, dict[str, bytes | None]]:
    """A Ray task: run ``cell`` in a scratch folder and send back its outputs (None: absent).

    The scratch folder becomes the working directory, so a relative checkpoint path (as suites
    write them) resolves to the copy shipped here and the result records the very path a serial
    run records. An absolute path must hold the same file on every node."""
    import torch

    torch.set_num_threads(1)  # the task was given one CPU
    home = os.getcwd()
    with tempfile.TemporaryDirectory(prefix="robench-cell-") as scratch:
        os.chdir(scratch)
        try:
            local = cell.moved_to(Path(scratch))
            for name, data in carried.items():
                (Path(scratch) / name).write_bytes(data)
            if cell.run is not None and checkpoint is not None:
                _place_checkpoint(cell.run.checkpoint_path(), checkpoint)
            outcome = run_cell(local, ctx, lambda done, total: progress.put_nowait((cell.id, done, total)))
            return outcome, {p.name: p.read_bytes() if p.exists() else None for p in local.outputs()}
        except (OSError, RobenchError) as err:
            return Outcome(cell.id, "failed", failure_line(err)), {}
        finally:
            os.chdir(home)


def _place_checkpoint(path: Path, files: dict[str, bytes | None]) -> None:
    """Put the shipped checkpoint and sidecar where the cell reads them (a relative path lands in the
    task's scratch folder); an absolute path must already hold the very same file on this node."""
    data = files.get(path.name)
    if data is None:
        raise RobenchError(f"checkpoint {path.name} did not come with its attack cell")
    if path.is_absolute():
        if not path.is_file() or path.read_bytes() != data:
            raise RobenchError(f"checkpoint {path} is not on this Ray node (or differs from the driver's); "
                               "use relative paths (checkpoints:, results:) in a suite run on a cluster")
        return
    for target in (sidecar_path(path), path):  # sidecar first, as save_checkpoint writes them
        if files.get(target.name) is not None:
            atomic_write_bytes(target, files[target.name])
