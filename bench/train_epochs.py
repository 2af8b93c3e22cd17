"""Epoch time of ``robench train`` per activation: the training command itself, data loading,
augmentation and the per-epoch test evaluation included (issue 11: S-APL training >= 0.9x ReLU).

    ROBENCH_DATA=/tmp/rbdata python bench/train_epochs.py [--runs relu,sapl,apl]
                                                         [--epochs 3] [--repeats 2] [--model lenet5]

Each run is ``robench train --model M --act A [--act-opt O] --epochs E --seed 0`` into a temporary
directory; the runs interleave (repeat 1 of every run, then repeat 2, ...) so drift in the machine's
speed hits them alike. The first epoch holds torch.compile's warm-up and is reported apart; the
steady figure is the mean of the later epochs' ``epoch_s`` from the checkpoint's JSON sidecar,
best repeat kept. ``bench/activations.py`` times bare SGD steps on one fixed batch instead.
"""

from __future__ import annotations

import argparse
import json
import platform
import subprocess
import sys
import tempfile
from pathlib import Path

import torch


def train_once(model: str, run: str, epochs: int, dataset: str, folder: Path) -> list[float]:
    """Epoch times (s) of one ``robench train`` run; ``run`` is ``act`` or ``act:KEY=VALUE``."""
    act, _, option = run.partition(":")
    out = folder / f"{model}-{run.replace(':', '-').replace('=', '-')}.pt"
    command = [sys.executable, "-m", "robench.cli", "train", "--model", model, "--act", act, "--dataset", dataset,
               "--epochs", str(epochs), "--seed", "0", "--out", str(out), "--force", "--quiet"]
    if option:
        command += ["--act-opt", option]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(command)} failed:\n{done.stderr[-2000:]}")
    return [epoch["epoch_s"] for epoch in json.loads(out.with_suffix(".json").read_text())["history"]]


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--runs", default="relu,sapl",
                   help="comma-separated act[:KEY=VALUE]; the first is the reference of the ratios")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--repeats", type=int, default=2)
    a = p.parse_args()
    if a.epochs < 2:
        p.error("--epochs: at least 2 (the first holds the compile warm-up)")
    runs = a.runs.split(",")
    print(f"# {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, "
          f"threads {torch.get_num_threads()}, model {a.model}, dataset {a.dataset}")
    times: dict[str, list[list[float]]] = {run: [] for run in runs}
    with tempfile.TemporaryDirectory() as folder:
        for _ in range(a.repeats):
            for run in runs:
                times[run].append(train_once(a.model, run, a.epochs, a.dataset, Path(folder)))
    steady = {run: min(sum(t[1:]) / len(t[1:]) for t in reps) for run, reps in times.items()}
    reference = steady[runs[0]]
    print(f"{'run':28s} {'first epoch s':>13s} {'later epochs s':>14s} {'speed x ' + runs[0]:>14s}")
    for run in runs:
        first = min(t[0] for t in times[run])
        print(f"{run:28s} {first:13.2f} {steady[run]:14.2f} {reference / steady[run]:14.2f}")


if __name__ == "__main__":
    main()
