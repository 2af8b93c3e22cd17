"""The black-box searches' forward, eager against incremental and torch.compile'd: time and
image-by-image agreement.

    ROBENCH_DATA=DIR python bench/search_forward.py [--act relu] [--images 100] [--queries 4000] [--threads 2]
                                                   [--forwards eager,incremental,compiled] [--device auto]
                                                   [--max-batch N] [--search-dtype float32|bf16|fp16]
                                                   [--model lenet5] [--dataset cifar10]

On the shipped ``<model>-<act>-<dataset>-s0`` checkpoint and the first N correctly classified test
images of the seed-0 set, the paper's 1-pixel DE (population 400, 40 generations) and a 3-pixel
Sparse-RS run once per forward with the same seeds. It prints each run's attack time (without
compiling), the one-off compile time, the speed-up over the first forward listed, and every image
whose painted pixels differ from that first forward's (an incremental sum or a compiled kernel may
round differently, which can flip a greedy selection). Verdicts come from ``judge`` (eager float32)
in every case.
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
    p.add_argument("--forwards", default="eager,incremental,compiled", help="the forwards to run; the first is the reference")
    p.add_argument("--model", default="lenet5")
    p.add_argument("--dataset", default="cifar10")
    p.add_argument("--searches", default="de,sparse_rs")
    p.add_argument("--repeats", type=int, default=1, help="runs per forward, interleaved; the fastest is reported")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    dev = resolve_device(args.device)
    name = f"{args.model}-{args.act}-{args.dataset}-s0"
    model = load_checkpoint(f"checkpoints/{name}.pt", device=dev).model
    test, _ = load_split(args.dataset, train=False)
    idx, _ = select_images(model, test.images, test.labels, args.images, 0, dev)
    images, labels = to_float(test.images[idx]).to(dev), test.labels[idx].to(dev)
    common = {"max_batch": args.max_batch, "search_dtype": args.search_dtype}
    searches = {
        "de": ("de-1px", pixel_attack, lambda f: PixelAttackConfig(pixels=1, forward=f, **common)),
        "sparse_rs": (f"sparse_rs-3px-{args.queries}q", sparse_rs_attack,
                      lambda f: SparseRSConfig(pixels=3, queries=args.queries, forward=f, **common)),
    }
    forwards = args.forwards.split(",")
    gpu = torch.cuda.get_device_name(dev) if dev.type == "cuda" else ""
    print(f"# {name}, {args.images} images, {args.threads} threads, {dev} {gpu}, search {args.search_dtype}, "
          f"torch {torch.__version__}, {platform.processor() or platform.machine()}, {os.cpu_count()} cores")
    print("| search | forward | attack s | compile s | successes | speed-up |")
    print("|---|---|---|---|---|---|")
    for key in args.searches.split(","):
        label, fn, config = searches[key]
        outs = {}
        for _ in range(args.repeats):  # interleaved, so a slow spell of the machine hits every forward
            for forward in forwards:
                start = time.perf_counter()
                out = fn(model, images, labels, config(forward), torch.Generator().manual_seed(0))
                if dev.type == "cuda":
                    torch.cuda.synchronize(dev)
                took = time.perf_counter() - start - out.meta["compile_s"]
                verdict = judge(model, images, labels, out, l0_budget=3)
                if forward not in outs or took < outs[forward][1]:
                    outs[forward] = (out, took, int(verdict.success.sum()), verdict)
        ref = outs[forwards[0]]
        for forward, (out, took, wins, _) in outs.items():
            print(f"| {label} | {out.meta['forward']} | {took:.1f} | {out.meta['compile_s']:.1f} | {wins} | "
                  f"{ref[1] / took:.2f}x |")
        for forward in forwards[1:]:
            other = outs[forward][0]
            differ = [idx[i] for i, (a, b) in enumerate(zip(ref[0].details["pixels"], other.details["pixels"])) if a != b]
            print(f"\n{label}: {len(differ)} of {args.images} images differ between {forwards[0]} and {forward}"
                  + (f" (test indices {differ})" if differ else ""))
            for i in (i for i, t in enumerate(idx) if t in differ):  # what the difference changed
                a, b = ref[3], outs[forward][3]
                print(f"  image {idx[i]}: {forwards[0]} success {bool(a.success[i])} p_true {a.p_true_adv[i]:.4f} "
                      f"queries {int(ref[0].queries[i])}; {forward} success {bool(b.success[i])} "
                      f"p_true {b.p_true_adv[i]:.4f} queries {int(outs[forward][0].queries[i])}")
        print()


if __name__ == "__main__":
    main()
