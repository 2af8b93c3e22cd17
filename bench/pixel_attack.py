"""Speed of robench's one-pixel DE attack against torchattacks, ART and its own bare forward cost.

Issue targets: robench (its default, incremental forward) >= 5x the fastest peer's images/s at a
success count no lower than the peer's minus noise, and >= 1.6x its eager forward; with the eager
forward, robench's time <= 1.15x the bare forward cost of the candidates it evaluated.

    ROBENCH_DATA=/tmp/rbdata python bench/pixel_attack.py [--images 100] [--peers all] [--device auto]
                                                        [--forwards eager,incremental]

All methods attack the same N correctly classified CIFAR-10 test images (``select_images``, seed 0)
of the shipped lenet5-relu checkpoint with 1 pixel, a population of 400 and 40 generations:

- robench   ``pixel_attack`` with a seed-0 CPU generator, as ``robench attack`` runs it, once per
            forward (``eager``: the model on painted candidates, every call counted; ``incremental``:
            the first block computed once per image, queries as robench reports them);
- bare      the forward passes robench's eager DE made, with no attack logic: for every generation, as
            many candidate images as were still being attacked (read off ``outcome.queries``),
            split into batches exactly as robench splits them (``forward_batch``: max_batch, or
            512 on a CPU and 8192 on a GPU);
- torchattacks ``OnePixel`` and ART ``PixelAttack`` (DE), both seeded through NumPy's global RNG.

``load`` is the 1-minute load average after each method: above the thread count, a neighbour
shared the cores during it. Success is robench's own criterion (``judge``): re-run the model on
the returned images and count argmax != label. A warm-up forward pass precedes the timings. Wall time is reported with the
process's CPU time beside it (on a shared machine the wall time alone swings with the neighbours);
``--repeats R`` runs robench and bare alternately R times and keeps the fastest of each, since
their ratio is the figure that neighbours disturb most. Peers run once.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import platform
import sys
import time

import numpy as np
import torch
from torch import Tensor, nn

from robench.attacks.base import AttackOutcome, judge
from robench.attacks.pixel import PixelAttackConfig, forward_batch, pixel_attack
from robench.attacks.runner import select_images
from robench.checkpoints import load_checkpoint
from robench.data import load_split, to_float
from robench.storage import resolve_device

CHECKPOINT = "checkpoints/lenet5-relu-cifar10-s0.pt"
PIXELS, POPULATION, GENERATIONS = 1, 400, 40
PEERS = ("torchattacks", "art")


class Counting(nn.Module):
    """The model, counting the images pushed through it (every method's query count, measured the same way)."""

    def __init__(self, model: nn.Module) -> None:
        super().__init__()
        self.model = model
        self.images = 0

    def forward(self, x: Tensor) -> Tensor:
        self.images += x.shape[0]
        return self.model(x)


def load() -> str:
    """The 1/5/15-minute load averages: anything above 0 before a run means a neighbour shares the cores."""
    return " ".join(f"{x:.2f}" for x in os.getloadavg()) if hasattr(os, "getloadavg") else "n/a"


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def run_robench(model: nn.Module, images: Tensor, labels: Tensor, config: PixelAttackConfig) -> AttackOutcome:
    return pixel_attack(model, images, labels, config, torch.Generator().manual_seed(0))


def run_torchattacks(model: Counting, images: Tensor, labels: Tensor) -> Tensor:
    import torchattacks

    # OnePixel turns popsize into scipy's multiplier itself: popmul = max(1, int(popsize / dim)) with
    # dim = pixels * (2 + C) = 5, and its DE (a scipy copy) keeps popmul * dim = 80 * 5 = 400 members.
    # So popsize=400 is 400 candidates per generation. steps=40 is 40 generations after the initial
    # population, as in robench. inf_batch=400 puts one generation of its one image in one forward pass.
    np.random.seed(0)  # its DE draws from NumPy's global RNG (seed=None)
    attack = torchattacks.OnePixel(model, pixels=PIXELS, steps=GENERATIONS, popsize=POPULATION, inf_batch=POPULATION)
    return attack(images, labels)


def run_art(model: Counting, images: Tensor, labels: Tensor, device: torch.device) -> Tensor:
    from art.attacks.evasion import PixelAttack
    from art.estimators.classification import PyTorchClassifier

    class Classifier(PyTorchClassifier):
        # PixelAttack calls predict() without a batch size (ART's default: 128); 400 puts one whole
        # generation of its one image in one forward pass, as inf_batch does for torchattacks.
        def predict(self, x: np.ndarray, batch_size: int = POPULATION, **kwargs) -> np.ndarray:
            return super().predict(x, batch_size=batch_size, **kwargs)

    # The model takes (N, C, H, W) in [0, 1] and normalises inside; clip_values (0, 1) makes
    # PixelAttack rescale to 0-255 for its search (colours are integers there, truncated) and back to
    # [0, 1] before every predict and on return. Its predict returns logits, so its DE minimises the
    # true-class logit, not the softmax probability robench and torchattacks minimise.
    classifier = Classifier(
        model, loss=nn.CrossEntropyLoss(), input_shape=tuple(images.shape[1:]), nb_classes=10,
        clip_values=(0.0, 1.0), channels_first=True, device_type="gpu" if device.type == "cuda" else "cpu",
    )
    # ART hard-codes its DE population: popsize = max(1, 400 // len(bounds)) = 400 // 5 = 80, a scipy
    # multiplier, so 80 * 5 = 400 members; not configurable, and already 400. max_iter=40 generations
    # after the initial population; es=1 is DE (0 would be CMA-ES).
    attack = PixelAttack(classifier, th=PIXELS, es=1, max_iter=GENERATIONS, targeted=False, verbose=False)
    np.random.seed(0)  # its DE draws from NumPy's global RNG (seed=None)
    adv = attack.generate(images.cpu().numpy(), labels.cpu().numpy())
    return torch.from_numpy(adv).to(images.device)


@torch.no_grad()
def bare_forward(model: nn.Module, images: Tensor, queries: Tensor, population: int, max_batch: int) -> int:
    """Push robench's candidate count through ``model`` as robench batched it; returns images pushed.

    Image i was active in generations 0 .. queries[i] / population - 1, and each generation's
    active_images * population candidates went through in chunks of at most max_batch (robench's chunk). The inputs
    are one pre-built batch sliced per chunk, so no painting, copying or indexing is timed.
    """
    per_image = (queries // population).tolist()
    block = images.repeat_interleave(math.ceil(max_batch / len(images)), 0)[:max_batch].contiguous()
    block = torch.cat([block] * math.ceil(max_batch / len(block)))[:max_batch]
    pushed = 0
    for g in range(max(per_image)):
        total = sum(1 for q in per_image if q > g) * population
        for start in range(0, total, max_batch):
            size = min(max_batch, total - start)
            model(block[:size])
            pushed += size
    return pushed


def l0_changed(adv: Tensor, images: Tensor) -> Tensor:
    """Pixels per image that changed by more than half a grey level (ART's 0-255 round trip moves
    untouched pixels by float rounding, which an exact comparison would count)."""
    return ((adv - images).abs() > 0.5 / 255).any(1).flatten(1).sum(1)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--images", type=int, default=100, help="correctly classified test images to attack")
    p.add_argument("--peer-images", type=int, default=None,
                   help="attack only the first K of them with the peers (default: all); robench and bare "
                        "are then also reported on those K")
    p.add_argument("--peers", choices=("all", "none", *PEERS), default="all")
    p.add_argument("--device", default="auto", help="auto (cuda if available), cpu, cuda, cuda:N")
    p.add_argument("--max-batch", type=int, default=PixelAttackConfig.max_batch,
                   help="robench's max_batch (candidate images per forward pass; default 512 on a CPU, "
                        "8192 on a GPU); bare uses the same")
    p.add_argument("--repeats", type=int, default=1, help="robench/bare runs, alternated; the fastest of each is kept")
    p.add_argument("--forwards", default="eager,incremental", help="robench's search forwards to time (eager first)")
    p.add_argument("--profile", action="store_true", help="also print torch.profiler's op table for robench")
    a = p.parse_args()
    if a.images < 1 or a.repeats < 1 or (a.peer_images is not None and a.peer_images < 1):
        p.error("--images, --peer-images and --repeats must be >= 1")

    device = resolve_device(a.device)
    print(f"# {' '.join(sys.argv)}")
    cpu = platform.processor() or platform.machine()
    gpu = torch.cuda.get_device_name(device) if device.type == "cuda" else "-"
    print(f"# torch {torch.__version__}, cpu {cpu} x {os.cpu_count()}, gpu {gpu}, device {device}, "
          f"threads {torch.get_num_threads()}, load average {load()}")
    versions = []
    for name in PEERS if a.peers == "all" else (() if a.peers == "none" else (a.peers,)):
        mod = __import__("art" if name == "art" else name)
        versions.append(f"{name} {mod.__version__}")
    print(f"# {', '.join(versions) or 'no peers'}; numpy {np.__version__}")

    ckpt = load_checkpoint(CHECKPOINT, device=device)
    model = Counting(ckpt.model).eval()
    test, prov = load_split("cifar10", train=False)
    indices, drawn = select_images(ckpt.model, test.images, test.labels, a.images, seed=0, device=device)
    images = to_float(test.images[indices]).to(device)
    labels = test.labels[indices].to(device)
    config = PixelAttackConfig(pixels=PIXELS, population=POPULATION, generations=GENERATIONS, max_batch=a.max_batch)
    chunk = forward_batch(config, device)  # what robench uses per forward pass; bare copies it
    print(f"# {CHECKPOINT}: {a.images} images (first of {drawn} drawn), data_official={prov.official}; "
          f"pixels={PIXELS} population={POPULATION} generations={GENERATIONS} max_batch={chunk}")

    with torch.no_grad():  # warm-up: allocator and kernels, not timed
        model.model(images[:1].expand(chunk, -1, -1, -1).contiguous())
        pixel_attack(model.model, images[:2], labels[:2], PixelAttackConfig(generations=1), torch.Generator().manual_seed(1))

    # name, images, (wall s, cpu s), successes (-1: not an attack), model images, max L0, 1-min load after
    rows: list[tuple[str, int, tuple[float, float], int, int, int, str]] = []

    def record(name: str, n: int, seconds: tuple[float, float], adv: Tensor, queries: int, budget: int | None) -> None:
        outcome = AttackOutcome(adversarial=adv, queries=torch.zeros(n, dtype=torch.int64))
        success = int(judge(model.model, images[:n], labels[:n], outcome, l0_budget=budget).success.sum())
        rows.append((name, n, seconds, success, queries, int(l0_changed(adv, images[:n]).max()), load().split()[0]))

    def timed(fn, *args):
        model.images = 0
        sync(device)
        start, cpu_start = time.perf_counter(), time.process_time()
        out = fn(*args)
        sync(device)
        return out, (time.perf_counter() - start, time.process_time() - cpu_start)

    k = min(a.peer_images or a.images, a.images)
    sizes = [a.images] if k == a.images else [a.images, k]
    forwards = a.forwards.split(",")
    bare_rate: dict[str, tuple[float, float]] = {}
    peer_row: dict[int, str] = {}  # images -> the robench row the peers are compared with (the last forward listed)
    for n in sizes:
        ours: dict[str, list[tuple[float, float]]] = {f: [] for f in forwards}
        outcomes: dict[str, AttackOutcome] = {}
        bare = []
        for _ in range(a.repeats):
            for forward in forwards:
                # the eager forward goes through the counting wrapper; the incremental one needs the
                # model itself (a wrapper does not split) and never calls it on candidate images
                run_config = dataclasses.replace(config, forward=forward)
                outcome, seconds = timed(run_robench, model if forward == "eager" else model.model, images[:n],
                                         labels[:n], run_config)
                if forward == "eager" and model.images != int(outcome.queries.sum()):
                    raise RuntimeError(f"robench reported {int(outcome.queries.sum())} queries, the model saw {model.images}")
                if outcome.meta["forward"] != forward:
                    raise RuntimeError(f"asked for the {forward} forward, robench ran {outcome.meta['forward']}")
                ours[forward].append(seconds)
                outcomes[forward] = outcome
            pushed, bare_s = timed(bare_forward, model.model, images[:n], outcomes[forwards[0]].queries.cpu(), POPULATION,
                                   chunk)
            bare.append(bare_s)
        if a.repeats > 1:
            print(f"# {'; '.join(f'robench-{f}[{n}] wall s: ' + ' '.join(f'{s[0]:.2f}' for s in ours[f]) for f in forwards)}"
                  f"; bare[{n}] wall s: {' '.join(f'{s[0]:.2f}' for s in bare)}")
        bare_s = min(bare)
        for forward in forwards:
            seconds = min(ours[forward])
            name = f"robench-{forward}[{n}]"
            record(name, n, seconds, outcomes[forward].adversarial, int(outcomes[forward].queries.sum()), PIXELS)
            bare_rate[name] = (seconds[0] / bare_s[0], seconds[1] / bare_s[1])
        peer_row[n] = f"robench-{forwards[-1]}[{n}]"
        rows.append((f"bare[{n}]", n, bare_s, -1, pushed, 0, load().split()[0]))

    if a.peers in ("all", "torchattacks"):
        adv, seconds = timed(run_torchattacks, model, images[:k], labels[:k])
        record("torchattacks", k, seconds, adv, model.images, None)
    if a.peers in ("all", "art"):
        adv, seconds = timed(run_art, model, images[:k], labels[:k], device)
        record("art", k, seconds, adv, model.images, None)

    print(f"{'method':24s} {'images':>6s} {'wall s':>8s} {'cpu s':>8s} {'images/s':>9s} {'s/image':>8s} "
          f"{'success':>8s} {'model imgs':>11s} {'max L0':>6s} {'load':>5s} {'x bare':>7s} {'cpu x bare':>10s}")
    for name, n, (wall, cpu_s), success, queries, l0, after in rows:
        ratio = f"{bare_rate[name][0]:7.3f} {bare_rate[name][1]:10.3f}" if name in bare_rate else ""
        succ = f"{success:8d}" if success >= 0 else f"{'-':>8s}"
        print(f"{name:24s} {n:6d} {wall:8.2f} {cpu_s:8.2f} {n / wall:9.3f} {wall / n:8.3f} {succ} {queries:11d} {l0:6d} {after:>5s} {ratio}")

    peers = [r for r in rows if not r[0].startswith(("robench", "bare"))]
    for name, (ratio, cpu_ratio) in bare_rate.items():
        if name.startswith("robench-eager"):
            print(f"target {name} time <= 1.15x bare: {ratio:.3f}x wall ({cpu_ratio:.3f}x cpu) -> "
                  f"{'met' if ratio <= 1.15 else 'MISSED'}")
    by_name = {r[0]: r for r in rows}
    for n in sizes:
        if "eager" in forwards and "incremental" in forwards:
            eager, inc = by_name[f"robench-eager[{n}]"], by_name[f"robench-incremental[{n}]"]
            gain = eager[2][0] / inc[2][0]
            print(f"target robench-incremental[{n}] >= 1.6x robench-eager: {gain:.2f}x, success {inc[3]} vs {eager[3]} "
                  f"-> {'met' if gain >= 1.6 else 'MISSED'}")
    if peers:
        ours = by_name[peer_row[k]]
        best = max(peers, key=lambda r: r[1] / r[2][0])
        speedup = (ours[1] / ours[2][0]) / (best[1] / best[2][0])
        # noise: two binomial standard errors of the peer's success count
        noise = 2 * math.sqrt(best[1] * (best[3] / best[1]) * (1 - best[3] / best[1]))
        ok = speedup >= 5 and ours[3] >= best[3] - noise
        print(f"target {ours[0]} >= 5x fastest peer ({best[0]}) on {k} images: {speedup:.2f}x, success {ours[3]} vs "
              f"{best[3]} (noise 2 s.e. = {noise:.1f}) -> {'met' if ok else 'MISSED'}")

    print(f"# load average at the end {load()}")
    if a.profile:
        from torch.profiler import ProfilerActivity, profile

        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
        with profile(activities=acts) as prof:
            run_robench(model.model, images, labels, config)
        print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=25))


if __name__ == "__main__":
    main()
