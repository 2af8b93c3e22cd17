"""Scaling a suite out: serial against ``--workers N`` against Ray, on this machine.

    ROBENCH_DATA=DIR python bench/suite_scaling.py [--part attack|overhead|all] [--workers 2] [--images 30]
        [--population 400] [--generations 40] [--epsilons 12] [--out bench/results/suite_scaling-cpu.json]

Part ``attack``: the attack phase of ``configs/seeds-lenet5.yaml``, reduced as issue 13 says: its 25
checkpoints (5 activations × training seeds 0-4, all shipped under ``checkpoints/``), the 1-pixel DE
at the paper's budget (population 400, 40 generations) on the first 30 correctly classified test
images of the seed-0 set, one repeat; 25 cells. Each executor runs the same cells into a fresh
folder: serial (this process, torch's default threads, one per core), ``--workers N`` (N processes
of cores/N threads) and Ray (a local cluster of N CPUs, one thread per task); ``--modes`` may add
``serial1``, serial on one thread, the baseline a process pool is usually measured against. A run's wall time
counts everything after the suite is expanded: starting the workers or the cluster, every cell,
every write, shutting down. The per-image outcomes of the three runs must be identical.

Part ``overhead``: a simulated study of many tiny cells: FGSM at one epsilon on 2 images, one result
file per (checkpoint, epsilon): 25 × 12 = 300 cells. Per cell, the scheduling overhead is the time
from the walk's submit to its outcome, minus the time the cell took inside ``run_cell`` (what the
executor adds: queues, pickling, Ray's scheduling, the driver's writes). Startup (making the
executor, and the extra wait of each slot's first cell) is reported apart; throughput is cells per
second over the whole run.

Part ``threads``: why a process pool may not beat one process here. The serial run already uses
every core through torch's intra-op threads; the DE's forward (LeNet-5, chunks of 512 candidate
images) is timed on one thread and on all of them. If N threads run s times faster than one, N
single-thread workers can be at most N/s times faster than serial on that work.

Prints a table per part and writes every figure, with the command and the machine, as JSON (each part
with its command and machine state; parts run separately are merged into the file that is there).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import torch

from robench.cells import CellContext, Outcome
from robench.executors import make_executor
from robench.suite import SuiteAttack, SuiteConfig, walk

ACTS = ("relu", "sapl", "prelu", "apl", "swish")
SEEDS = (0, 1, 2, 3, 4)


class ForeignCPU:
    """CPU seconds that processes outside this one's tree (another user's tests on a shared machine)
    used while a run lasted, sampled from /proc every second: a run that shared its cores says so."""

    def __init__(self) -> None:
        self.tick = os.sysconf("SC_CLK_TCK")
        self.seconds = 0.0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._watch, daemon=True)

    def __enter__(self) -> ForeignCPU:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop.set()
        self.thread.join()

    def _watch(self) -> None:
        before = self._foreign()
        while not self.stop.wait(1.0):
            now = self._foreign()
            self.seconds += sum(t - before.get(pid, 0) for pid, t in now.items()) / self.tick
            before = now

    @staticmethod
    def _foreign() -> dict[int, int]:
        """utime + stime ticks of every process not descended from this one."""
        procs = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            procs[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))
        mine, foreign = os.getpid(), {}
        for pid, (ppid, ticks) in procs.items():
            seen = pid
            while seen not in (mine, 0, 1) and seen in procs:
                seen = procs[seen][0]
            if seen != mine:
                foreign[pid] = ticks
        return foreign


def timed_run(suite: SuiteConfig, mode: str, workers: int, data_dir: str | None) -> dict[str, Any]:
    """Run every cell of ``suite`` on one executor; wall time and per-cell timings."""
    cells = suite.cells()
    todo = {c.id for c in cells if c.state() != "done"}
    assert len(todo) == len(cells), "results folder not fresh"
    submitted: dict[str, float] = {}
    ended: dict[str, tuple[float, Outcome]] = {}
    threads = torch.get_num_threads()
    if mode == "serial1":  # the reference a process pool is usually measured against
        torch.set_num_threads(1)
    load = ForeignCPU().__enter__()
    start = time.perf_counter()
    executor = make_executor(CellContext(data_dir, "cpu"), lambda *a: None,
                             workers=workers if mode in ("workers", "ray") else 1,
                             ray="local" if mode == "ray" else None)
    started = time.perf_counter() - start
    try:
        walk(cells, executor, lambda c: submitted.setdefault(c.id, time.perf_counter()),
             lambda c, o: ended.__setitem__(c.id, (time.perf_counter(), o)), todo)
    finally:
        executor.close()
        torch.set_num_threads(threads)
        load.__exit__()
    wall = time.perf_counter() - start
    bad = {i: o.message for i, (_, o) in ended.items() if o.status != "ran"}
    if bad:
        sys.exit(f"{mode}: cells did not run: {bad}")
    order = sorted(ended, key=lambda i: ended[i][0])
    slots = executor.slots
    overhead = [ended[i][0] - submitted[i] - ended[i][1].seconds for i in order]
    return {
        "mode": mode, "slots": slots, "cells": len(cells), "wall_s": round(wall, 2),
        "cell_s_sum": round(sum(o.seconds for _, o in ended.values()), 2),
        "executor_start_s": round(started, 2),  # workers forked from a preloaded forkserver, or Ray's init
        "first_outcome_s": round(ended[order[0]][0] - start, 2),
        "startup_overhead_s": [round(x, 3) for x in overhead[:slots]],  # each slot's first cell waits for it to start
        "overhead_ms_median": round(1000 * statistics.median(overhead[slots:]), 1),
        "overhead_ms_mean": round(1000 * statistics.fmean(overhead[slots:]), 1),
        "overhead_ms_max": round(1000 * max(overhead[slots:]), 1),
        "cells_per_s": round(len(cells) / wall, 3),
        "foreign_cpu_s": round(load.seconds, 1),  # other users' CPU during the run: near 0 on a quiet machine
    }


def outcomes(folder: Path) -> dict[str, Any]:
    found = {}
    for path in sorted(folder.glob("*.json")):
        res = json.loads(path.read_text())
        found[path.name] = [[(r["seed"], r.get("adversarial_sha256"), r["images"]) for r in s["repeats"]]
                            for s in res["settings"]]
    return found


def part(name: str, make: Any, args: argparse.Namespace, work: Path, modes: list[str]) -> dict[str, Any]:
    runs, found = {}, {}
    for mode in modes:
        suite = make(work / f"{name}-{mode}")
        print(f"# {name}: {mode} ...", file=sys.stderr, flush=True)
        runs[mode] = timed_run(suite, mode, args.workers, args.data_dir)
        found[mode] = outcomes(Path(suite.results))
    same = {mode: found[mode] == found[modes[0]] for mode in modes[1:]}
    serial = runs["serial"]["wall_s"]
    print(f"\n{name}: {runs['serial']['cells']} cells; identical per-image outcomes to serial: {same}")
    print("| executor | slots | wall s | speed-up vs serial | cells/s | overhead ms/cell median (mean, max) "
          "| startup s | others' CPU s |")
    print("|---|---|---|---|---|---|---|---|")
    for mode, r in runs.items():
        print(f"| {mode} | {r['slots']} | {r['wall_s']} | {serial / r['wall_s']:.2f}x | {r['cells_per_s']} | "
              f"{r['overhead_ms_median']} ({r['overhead_ms_mean']}, {r['overhead_ms_max']}) | "
              f"{r['executor_start_s'] + max(r['startup_overhead_s']):.1f} | {r['foreign_cpu_s']} |")
    return {"runs": runs, "identical_to_serial": same}


def thread_scaling(batch: int = 512, rounds: int = 40) -> dict[str, Any]:
    """Images/s of the DE's forward (lenet5-relu-cifar10-s0, eval) on one thread and on every core."""
    from robench.checkpoints import load_checkpoint

    model = load_checkpoint("checkpoints/lenet5-relu-cifar10-s0.pt", device="cpu").model.eval()
    x = torch.rand(batch, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    threads, rates = torch.get_num_threads(), {}
    try:
        for n in sorted({1, os.cpu_count() or 1}):
            torch.set_num_threads(n)
            with torch.inference_mode():
                for _ in range(5):
                    model(x)
                best = float("inf")
                for _ in range(3):  # the best of three runs: the machine's noise only slows a run down
                    start = time.perf_counter()
                    for _ in range(rounds):
                        model(x)
                    best = min(best, time.perf_counter() - start)
            rates[n] = round(batch * rounds / best)
    finally:
        torch.set_num_threads(threads)
    cores = max(rates)
    speedup = rates[cores] / rates[1]
    print(f"\nthreads: LeNet-5 forward, batch {batch}: {rates[1]} images/s on 1 thread, {rates[cores]} on {cores} "
          f"({speedup:.2f}x); so {cores} one-thread workers can be at most {cores / speedup:.2f}x serial on it")
    return {"batch": batch, "images_per_s": rates, "thread_speedup": round(speedup, 3),
            "workers_ceiling_vs_serial": round(cores / speedup, 3)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--part", default="all", choices=("attack", "overhead", "threads", "all"))
    p.add_argument("--workers", type=int, default=2)
    p.add_argument("--images", type=int, default=30)
    p.add_argument("--population", type=int, default=400)
    p.add_argument("--generations", type=int, default=40)
    p.add_argument("--epsilons", type=int, default=12, help="overhead part: cells per checkpoint")
    p.add_argument("--modes", default="serial,workers,ray", help="also serial1: serial on one torch thread")
    p.add_argument("--data-dir", default=None)
    p.add_argument("--out", default="bench/results/suite_scaling-cpu.json")
    args = p.parse_args()
    modes = args.modes.split(",")
    names = [f"lenet5-{a}-cifar10-s{s}.pt" for a in ACTS for s in SEEDS]
    missing = [n for n in names if not (Path("checkpoints") / n).exists()]
    if missing:
        sys.exit(f"missing checkpoints (robench suite configs/seeds-lenet5.yaml trains them): {missing}")

    def grid(results: Path, attacks: tuple[SuiteAttack, ...], images: int) -> SuiteConfig:
        return SuiteConfig(name=results.name, models=("lenet5",), acts=ACTS, train_seeds=SEEDS, attacks=attacks,
                           images=images, results=str(results), checkpoints="checkpoints")

    de = (SuiteAttack("pixel", {"pixels": 1, "population": args.population, "generations": args.generations}, 1),)
    fgsm = tuple(SuiteAttack("fgsm", {"epsilons": [round(0.001 * (k + 1), 3)]}, 1) for k in range(args.epsilons))
    out = Path(args.out)
    report: dict[str, Any] = json.loads(out.read_text()) if out.is_file() else {}
    command = "python bench/suite_scaling.py " + " ".join(sys.argv[1:])
    machine = {"cores": os.cpu_count(), "processor": platform.processor() or platform.machine(),
               "torch": torch.__version__, "torch_threads_serial": torch.get_num_threads(),
               "python": platform.python_version(), "load_average_start": os.getloadavg()}
    found: dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="suite-scaling-") as tmp:
        work = Path(tmp)
        if args.part in ("attack", "all"):
            found["attack"] = part("attack", lambda r: grid(r, de, args.images), args, work, modes)
        if args.part in ("overhead", "all"):
            found["overhead"] = part("overhead", lambda r: grid(r, fgsm, 2), args, work, modes)
        shutil.rmtree(work, ignore_errors=True)
    if args.part in ("threads", "all"):
        found["threads"] = thread_scaling()
    machine["load_average_end"] = os.getloadavg()
    for name, figures in found.items():  # each part keeps the command and machine state it was measured with
        report[name] = figures | {"command": command, "machine": machine, "settings": vars(args)}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=1) + "\n")
    print(f"\n# {command}; {os.cpu_count()} cores, torch {torch.__version__}; load average "
          f"{machine['load_average_start']} -> {machine['load_average_end']}; wrote {args.out}")

if __name__ == "__main__":
    main()
