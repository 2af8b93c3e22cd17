"""The black-box searches' forward, eager against torch.compile'd: time and image-by-image agreement.

    ROBENCH_DATA=DIR python bench/search_forward.py [--act relu] [--images 100] [--queries 4000] [--threads 2]
                                                   [--device auto] [--max-batch N] [--search-dtype float32|bf16|fp16]

On the shipped ``lenet5-<act>-cifar10-s0`` checkpoint and the first N correctly classified test
images of the seed-0 set, the paper's 1-pixel DE (population 400, 40 generations) and a 3-pixel
Sparse-RS run twice with the same seeds: ``forward=eager`` and ``forward=compiled``. It prints each
run's attack time (without compiling), the one-off compile time, the speed-up, and every image whose
painted pixels or verdict differ between the two (compiled kernels may round differently, which
can flip a greedy selection). Verdicts come from ``judge`` (eager float32) in both cases.
"""

from __future__ import annotations

import argparse
import os
import platform
import time

import torch

from robench.attacks.base import judge
from robench.attacks.pixel import PixelAttackConfig, pixel_attack
from robench.attacks.runner import select_images
from robench.attacks.sparse_rs import SparseRSConfig, sparse_rs_attack
from robench.checkpoints import load_checkpoint
from robench.data import load_split, to_float
from robench.storage import resolve_device


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--act", default="relu")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--queries", type=int, default=4000, help="Sparse-RS budget per image")
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--max-batch", type=int, default=None, help="candidate images per forward (default 512 CPU / 8192 GPU)")
    p.add_argument("--search-dtype", default="float32", help="float32, bf16 or fp16 (a GPU's)")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    model = load_checkpoint(f"checkpoints/lenet5-{args.act}-cifar10-s0.pt", device=dev).model
    test, _ = load_split("cifar10", train=False)
    idx, _ = select_images(model, test.images, test.labels, args.images, 0, dev)
    images, labels = to_float(test.images[idx]).to(dev), test.labels[idx].to(dev)
    common = {"max_batch": args.max_batch, "search_dtype": args.search_dtype}
    searches = {
        "de-1px": (pixel_attack, lambda f: PixelAttackConfig(pixels=1, forward=f, **common)),
        f"sparse_rs-3px-{args.queries}q": (sparse_rs_attack,
                                           lambda f: SparseRSConfig(pixels=3, queries=args.queries, forward=f, **common)),
    }
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""
    print(f"# lenet5-{args.act}, {args.images} images, {args.threads} threads, {dev} {gpu}, search {args.search_dtype}, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| search | forward | attack s | compile s | successes | speed-up |")
    print("|---|---|---|---|---|---|")
    for name, (fn, config) in searches.items():
        outs = {}
        for forward in ("eager", "compiled"):
            start = time.perf_counter()
            out = fn(model, images, labels, config(forward), torch.Generator().manual_seed(0))
            if dev.type == "cuda":
                torch.cuda.synchronize(dev)
            took = time.perf_counter() - start - out.meta["compile_s"]
            wins = int(judge(model, images, labels, out, l0_budget=3).success.sum())
            outs[forward] = (out, took, wins)
        base = outs["eager"][1]
        for forward, (out, took, wins) in outs.items():
            print(f"| {name} | {out.meta['forward']} | {took:.1f} | {out.meta['compile_s']:.1f} | {wins} | "
                  f"{base / took:.2f}x |")
        eager, compiled = outs["eager"][0], outs["compiled"][0]
        differ = [idx[i] for i, (a, b) in enumerate(zip(eager.details["pixels"], compiled.details["pixels"])) if a != b]
        print(f"\n{name}: {len(differ)} of {args.images} images differ between eager and compiled"
              + (f" (test indices {differ})" if differ else "") + "\n")


if __name__ == "__main__":
    main()
