"""S-APL's compiled kernel alone, against the general 2S-hinge kernel it replaced and against ReLU,
on one layer's activations (LeNet-5's first layer by default: 128 x 6 x 28 x 28).

    python bench/hinge_kernel.py [--shape 128,6,28,28] [--repeats 30] [--iters 10]

``one-side`` is what ``SAPL`` runs (``_symmetric_hinge``: S hinges of |x|, hand-written backward);
``general`` is ``HingeUnit.forward`` on the same module (2S hinges of x, autograd-derived backward,
the form before issue 11's last stop). Forward+backward takes the gradient of x and both slope sets
for a fixed upstream gradient; inference is a no-grad forward. Repeats interleave the three, and
min and median per call are printed (this host's speed drifts; compare within a run).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import torch

from robench.activations import SAPL, HingeUnit


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--shape", default="128,6,28,28")
    p.add_argument("--repeats", type=int, default=30)
    p.add_argument("--iters", type=int, default=10)
    a = p.parse_args()
    shape = tuple(int(n) for n in a.shape.split(","))
    print(f"# {' '.join(sys.argv)}")
    print(f"# torch {torch.__version__}, threads {torch.get_num_threads()}, shape {shape}")
    torch.manual_seed(0)
    one_side, general = SAPL(shape[1]), SAPL(shape[1])
    general.forward = HingeUnit.forward.__get__(general)  # the 2S-hinge form on the same parameters
    with torch.no_grad():
        for unit in (one_side, general):
            unit.a_pos.copy_(torch.tensor([[1.0], [0.2], [-0.1], [0.05]]))
            unit.a_neg.copy_(torch.tensor([[0.1], [0.2], [-0.1], [0.05]]))
    x, grad = torch.randn(shape), torch.randn(shape)

    def train(unit) -> float:
        start = time.perf_counter()
        for _ in range(a.iters):
            leaf = x.requires_grad_()
            torch.autograd.grad(unit(leaf), (leaf, unit.a_pos, unit.a_neg), grad)
        return (time.perf_counter() - start) / a.iters * 1e6

    def relu_train() -> float:
        start = time.perf_counter()
        for _ in range(a.iters):
            leaf = x.requires_grad_()
            torch.autograd.grad(torch.relu(leaf), leaf, grad)
        return (time.perf_counter() - start) / a.iters * 1e6

    @torch.no_grad()
    def infer(unit) -> float:
        start = time.perf_counter()
        for _ in range(a.iters):
            unit(x)
        return (time.perf_counter() - start) / a.iters * 1e6

    cases = {
        "one-side fwd+bwd": lambda: train(one_side), "general fwd+bwd": lambda: train(general),
        "relu fwd+bwd": relu_train, "one-side infer": lambda: infer(one_side), "general infer": lambda: infer(general),
    }
    for run in cases.values():  # compile and warm up
        run()
    times: dict[str, list[float]] = {name: [] for name in cases}
    for _ in range(a.repeats):
        for name, run in cases.items():
            times[name].append(run())
    for name, t in times.items():
        print(f"{name:18s} min {min(t):8.0f} us   median {statistics.median(t):8.0f} us")


if __name__ == "__main__":
    main()
