"""Throughput of LeNet-5 per activation on CIFAR-sized batches (S-APL must not be the bottleneck;
issue 11's target: sapl training >= 0.9x relu).

    python bench/activations.py [--batch 128] [--iters 40] [--rounds 5] [--device cpu]
                                [--acts relu,sapl,...] [--train-only]

Prints images/s (median over rounds) for a full SGD step and for an eval-mode forward, and the
ratio to relu. ``sapl`` is what robench trains with (the compiled kernel); ``sapl-eager`` the
plain sum of hinge terms, the reference the compiled kernel replaces. Warm-up
(including torch.compile) is not timed. This host's speed drifts within a run; rounds interleave
the activations and more rounds of fewer iterations give steadier medians.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import time

import torch
from torch.nn import functional as F

from robench.models import build_model

CASES = [("relu", {}), ("prelu", {}), ("swish", {}), ("apl", {}), ("sapl", {}), ("sapl-eager", {"compiled": False})]


def setup(act: str, options: dict, batch: int, device: str) -> tuple:
    """A LeNet-5 with ``act``, its optimiser and one fixed batch, warmed up (compiled) already."""
    torch.manual_seed(0)
    model = build_model("lenet5", act=act.split("-")[0], act_options=options).to(device)
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.rand(batch, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (batch,), device=device)

    def step() -> None:
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    @torch.no_grad()
    def infer() -> None:
        model(x)

    def train_mode() -> None:
        model.train()

    def eval_mode() -> None:
        model.eval()

    for mode, fn in ((train_mode, step), (eval_mode, infer)):
        mode()
        for _ in range(5):
            fn()
    return (train_mode, step), (eval_mode, infer)


def rate(mode, fn, iters: int, batch: int, device: str) -> float:
    mode()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    if device.startswith("cuda"):
        torch.cuda.synchronize()
    return iters * batch / (time.perf_counter() - start)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--iters", type=int, default=40)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--device", default="cpu")
    p.add_argument("--acts", default=",".join(name for name, _ in CASES),
                   help="comma-separated rows to run (relu first: the ratios are to it)")
    p.add_argument("--train-only", action="store_true",
                   help="time training steps only (a training loop does not switch to eval every round)")
    a = p.parse_args()
    chosen = a.acts.split(",")
    if chosen[0] != "relu" or not set(chosen) <= {name for name, _ in CASES}:
        p.error(f"--acts: relu first, then any of {', '.join(name for name, _ in CASES)}")
    print(f"# {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, {platform.processor() or platform.machine()}, threads {torch.get_num_threads()}, device {a.device}")
    cases = {name: setup(name, opts, a.batch, a.device) for name, opts in CASES if name in chosen}
    # Rounds interleave the activations, so drift in machine load hits all of them alike.
    rates: dict[str, tuple[list[float], list[float]]] = {name: ([], []) for name in cases}
    for _ in range(a.rounds):
        for name, (train_fns, infer_fns) in cases.items():
            rates[name][0].append(rate(*train_fns, a.iters, a.batch, a.device))
            if not a.train_only:
                rates[name][1].append(rate(*infer_fns, a.iters, a.batch, a.device))
    rows = [(name, statistics.median(tr), statistics.median(inf) if inf else float("nan"))
            for name, (tr, inf) in rates.items()]
    relu_train, relu_infer = rows[0][1], rows[0][2]
    print(f"{'act':12s} {'train img/s':>12s} {'x relu':>7s} {'infer img/s':>12s} {'x relu':>7s}")
    for name, tr, inf in rows:
        print(f"{name:12s} {tr:12.0f} {tr / relu_train:7.2f} {inf:12.0f} {inf / relu_infer:7.2f}")


if __name__ == "__main__":
    main()
