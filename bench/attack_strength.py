"""Attack strength: successes of robench's attacks against peers at an equal budget on the same images.

    ROBENCH_DATA=/tmp/data python bench/attack_strength.py [--models relu,sapl] [--images 100] \\
        [--pixels 1,3,5] [--eps 1/255,2/255,4/255,8/255] [--peers torchattacks,art|none] \\
        [--peer-images N | N1,N2,N3] [--peer-models relu] [--parts pixel,linf,square] [--threads T] \\
        [--forward auto|incremental|eager|compiled]

Every method attacks the same N correctly classified CIFAR-10 test images (``select_images``,
seed 0) of the shipped LeNet-5 checkpoints ``checkpoints/lenet5-<act>-cifar10-s0.pt``. Success is
robench's own criterion (``judge``: the returned images re-run through the model, argmax != label,
with the threat's budget enforced). robench's attacks go through the registry exactly as
``robench attack`` runs them (``spec.settings`` / ``spec.fn`` with a seed-0 generator /
``judge(**spec.budget)``); peers are seeded through NumPy's and torch's global RNGs (seed 0).

Part A, k pixels (L0, k = ``--pixels``), budget 16,400 model queries per image, the paper DE's
population 400 x (1 + 40 generations):

- ``robench de``       ``pixel`` with ``PixelAttackConfig(pixels=k)``, the paper's DE (rand1, no crossover);
- ``robench de-best1`` ``pixel`` with ``strategy="best1", crossover="pixel"`` (the strong variant);
- ``robench sparse_rs`` ``SparseRSConfig(pixels=k, queries=16400)``;
- ``robench ensemble`` the strong DE, then Sparse-RS on the images it left (up to 2 x 16,400 queries);
- ``torchattacks``     ``OnePixel(pixels=k, popsize=400, steps=S, inf_batch=members)``. Its DE is a
  copy of scipy's (best1bin, recombination 1, F dithered in [0.5, 1), random init, no polish):
  ``popmul = max(1, int(popsize / dim))`` with ``dim = k * (2 + C) = 5k``, and the population is
  ``max(5, popmul * dim)`` members: 400 at k = 1 (80 x 5) and k = 5 (16 x 25), 390 at k = 3
  (26 x 15). It evaluates the initial population and then ``steps`` generations of that many
  trials, so its budget is ``members * (1 + steps)`` plus one forward of the best member per
  generation (its early-stop callback). ``steps = round(16400 / members) - 1``: 40 at k = 1 and
  5 (16,400 + 40), 41 at k = 3 (390 x 42 = 16,380 + 41).
- ``art``              ``PixelAttack(th=k, es=1, max_iter=S)`` on a ``PyTorchClassifier`` with
  clip_values (0, 1). Its DE is the same scipy copy with the population hard-coded,
  ``popsize = max(1, 400 // dim)`` (not configurable): the same 400 / 390 / 400 members. Only
  ``max_iter`` (generations after the initial population) is free, set as for torchattacks (40,
  41, 40), plus one forward of the best member per generation (callback) and a final check. ART
  searches integer colours 0-255 (truncated) and minimises the true-class *logit* (its predict
  returns logits), not the softmax probability robench and torchattacks minimise. Its 0-255 round
  trip moves untouched pixels by float rounding (< 1e-6); those values are snapped back to the
  clean image (``|adv - x| <= 0.5/255``) before judging, so they do not count against the L0 budget.

Peers are slow (seconds per image), so ``--peer-images`` runs them on the first N images only (one
N, or one per k) and ``--peer-models`` on some checkpoints only; the ``first N`` column gives
robench's successes on those same N images (read off its run on all images) for a like-for-like
comparison. A peer that returns an image beyond the budget would make ``judge`` raise; then only
the images within budget are judged and counted, and the row says how many were dropped.

Part B, Linf at eps = ``--eps``:

- ``robench fgsm``  ``FGSMConfig(epsilons=(e,))`` (one gradient; a reference row);
- ``robench pgd``   ``PGDConfig(norm="linf", epsilons=(e,), steps=100)`` (Foolbox PGD, random
  start, step 2.5 e / 100);
- ``robench pgd-margin-r3``  the same with ``loss="margin", restarts=3`` (the options that close
  most of the gap to APGD);
- ``robench ensemble``  ``EnsembleConfig(threat="linf", epsilons=(e,), members=("fgsm", "pgd", "fmn"))``:
  the worst case over the gradient attacks, each on the images still standing (the default Linf
  ensemble adds Square last; Part C measures it on its own);
- ``robench fmn``   ``FMNConfig(norm="linf")``, run once per model (no budget); an image counts at
  eps e when it is fooled and its judged Linf distance is <= e + 1e-6. Its wall time is the one run's;
- ``torchattacks pgd``  ``PGD(eps=e, alpha=2.5 e / 100, steps=100, random_start=True)``, torch seed 0;
- ``torchattacks apgd-ce`` / ``apgd-dlr``  ``APGD(norm="Linf", eps=e, steps=100, n_restarts=1,
  loss=..., seed=0)``.

Part C, Linf black-box at eps = ``--eps``, budget 5,000 queries per image (AutoAttack's Square):

- ``robench square``  ``SquareConfig(epsilons=(e,))`` (5,000 queries, p_init 0.8, margin loss; a
  square per image);
- ``torchattacks square``  ``Square(norm="Linf", eps=e, n_queries=5000, n_restarts=1, p_init=0.8,
  loss="margin", resc_schedule=True, seed=0)``, AutoAttack's code (one square for the whole batch);
- ``art square``  ``SquareAttack(norm=inf, eps=e, max_iter=5000, p_init=0.8, nb_restarts=1)`` on the
  ``PyTorchClassifier`` of Part A (its loss: the margin of the classifier's outputs, logits here).

The Linf peers are cheap and run on every model and image (``--peer-images``/``--peer-models``
limit only Part A's peers). ``queries/img`` is robench's ``outcome.queries`` mean for robench and the
model's forward images per image (``Counting``) for peers; for gradient attacks a query is one
forward (+ backward) pass of the image. ``load`` is the 1-minute load average after the row: above
the thread count, a neighbour shared the cores. Tables are markdown; the command line and the
machine follow them. Success counts do not depend on ``--threads``; times do: on a shared machine
(load above the core count) 2 torch threads on 2 cores stalled in OpenMP waits, up to 50x slower
for sparse_rs's small batches than 1 thread, so pass ``--threads 1`` there.
"""

from __future__ import annotations

import argparse
import os
import platform
import random
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor, nn

sys.path.insert(0, str(Path(__file__).resolve().parent))
from pixel_attack import GENERATIONS, POPULATION, Counting, l0_changed, load, sync  # noqa: E402

from robench.attacks import get_attack  # noqa: E402
from robench.attacks.base import AttackBudgetError, AttackOutcome, Judgement, judge, perturbation_norms  # noqa: E402
from robench.attacks.ensemble import EnsembleConfig  # noqa: E402
from robench.attacks.gradient import FGSMConfig, FMNConfig, PGDConfig  # noqa: E402
from robench.attacks.pixel import PixelAttackConfig  # noqa: E402
from robench.attacks.runner import select_images  # noqa: E402
from robench.attacks.sparse_rs import SparseRSConfig  # noqa: E402
from robench.attacks.square import SquareConfig  # noqa: E402
from robench.checkpoints import load_checkpoint  # noqa: E402
from robench.data import load_split, to_float  # noqa: E402
from robench.storage import resolve_device  # noqa: E402

QUERIES = POPULATION * (1 + GENERATIONS)  # 16,400: the paper DE's full budget per image
PEERS = ("torchattacks", "art")
STEPS = 100  # PGD / APGD steps
SQUARE_QUERIES = SquareConfig().queries  # 5,000, AutoAttack's


@dataclass
class Row:
    model: str
    setting: str  # "3px", "eps=8/255"
    method: str
    success: int
    images: int
    queries: float | None  # mean per image
    wall: float
    load: str
    first: tuple[int, int] | None = None  # robench's successes on the peers' first N images: (successes, N)
    note: str = ""


def parse_eps(text: str) -> list[float]:
    out = []
    for part in text.split(","):
        num, _, den = part.strip().partition("/")
        out.append(float(num) / float(den) if den else float(num))
    return out


def de_members(k: int, channels: int) -> int:
    """Population of torchattacks' and ART's scipy-copy DE at popsize 400: max(5, popmul * dim)."""
    dim = k * (2 + channels)
    return max(5, max(1, POPULATION // dim) * dim)


def de_steps(k: int, channels: int) -> int:
    """Generations after the initial population that bring members * (1 + steps) closest to 16,400."""
    return max(0, round(QUERIES / de_members(k, channels)) - 1)


def run_torchattacks_pixel(model: Counting, x: Tensor, y: Tensor, k: int) -> Tensor:
    import torchattacks

    members = de_members(k, x.shape[1])
    np.random.seed(0)  # its DE draws from NumPy's global RNG (seed=None)
    attack = torchattacks.OnePixel(model, pixels=k, steps=de_steps(k, x.shape[1]), popsize=POPULATION, inf_batch=members)
    return attack(x, y)


def run_art_pixel(model: Counting, x: Tensor, y: Tensor, k: int, device: torch.device) -> Tensor:
    from art.attacks.evasion import PixelAttack
    from art.estimators.classification import PyTorchClassifier

    members = de_members(k, x.shape[1])

    class Classifier(PyTorchClassifier):
        # PixelAttack calls predict() without a batch size (ART's default 128): one generation per pass.
        def predict(self, inputs: np.ndarray, batch_size: int = members, **kwargs) -> np.ndarray:
            return super().predict(inputs, batch_size=batch_size, **kwargs)

    classifier = art_classifier(Classifier, model, x, device)
    attack = PixelAttack(classifier, th=k, es=1, max_iter=de_steps(k, x.shape[1]), targeted=False, verbose=False)
    np.random.seed(0)  # its DE draws from NumPy's global RNG (seed=None)
    adv = torch.from_numpy(attack.generate(x.cpu().numpy(), y.cpu().numpy())).to(x.device)
    # Undo the float noise of its 0-255 round trip on pixels it did not paint (see the docstring).
    return torch.where((adv - x).abs() <= 0.5 / 255, x, adv).clamp(0, 1)


def art_classifier(cls: type, model: nn.Module, x: Tensor, device: torch.device):
    return cls(model, loss=nn.CrossEntropyLoss(), input_shape=tuple(x.shape[1:]), nb_classes=10, clip_values=(0.0, 1.0),
               channels_first=True, device_type="gpu" if device.type == "cuda" else "cpu")


def run_art_square(model: Counting, x: Tensor, y: Tensor, eps: float, device: torch.device) -> Tensor:
    from art.attacks.evasion import SquareAttack
    from art.estimators.classification import PyTorchClassifier

    attack = SquareAttack(art_classifier(PyTorchClassifier, model, x, device), norm=np.inf, eps=eps,
                          max_iter=SQUARE_QUERIES, p_init=0.8, nb_restarts=1, batch_size=len(x), verbose=False)
    np.random.seed(0)  # it draws from NumPy's global RNG
    return torch.from_numpy(attack.generate(x.cpu().numpy(), y.cpu().numpy())).to(x.device).clamp(0, 1)


def judge_within(model: nn.Module, x: Tensor, y: Tensor, adv: Tensor, **budget) -> tuple[int, int, str]:
    """robench's judge on a peer's images: (successes, images judged, note). When the peer broke the
    budget on some images, judge raises; then only the images within budget are judged."""
    outcome = AttackOutcome(adversarial=adv, queries=torch.zeros(len(x), dtype=torch.int64))
    try:
        return int(judge(model, x, y, outcome, **budget).success.sum()), len(x), ""
    except AttackBudgetError as err:
        norms = perturbation_norms(x, adv)
        ok = torch.ones(len(x), dtype=torch.bool, device=x.device)
        if "l0_budget" in budget:
            ok &= norms["l0"] <= budget["l0_budget"]
        if "linf_budget" in budget:
            ok &= norms["linf"] <= budget["linf_budget"] + 1e-5
        ok &= (adv >= 0).flatten(1).all(1) & (adv <= 1).flatten(1).all(1) & ~adv.isnan().flatten(1).any(1)
        dropped = int((~ok).sum())
        note = f"{dropped} img over budget ({err}), not counted"
        if not ok.any():
            return 0, 0, note
        sub = AttackOutcome(adversarial=adv[ok], queries=torch.zeros(int(ok.sum()), dtype=torch.int64))
        return int(judge(model, x[ok], y[ok], sub, **budget).success.sum()), int(ok.sum()), note


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", default="relu,sapl", help="activations of checkpoints/lenet5-<act>-cifar10-s0.pt")
    p.add_argument("--images", type=int, default=100, help="correctly classified test images per model")
    p.add_argument("--pixels", default="1,3,5", help="Part A: k values")
    p.add_argument("--eps", default="1/255,2/255,4/255,8/255", help="Part B: Linf budgets (fractions allowed)")
    p.add_argument("--parts", default="pixel,linf", help="pixel (Part A), linf (Part B) or both")
    p.add_argument("--peers", default="torchattacks,art", help="torchattacks, art, both (comma) or none")
    p.add_argument("--peer-images", default=None,
                   help="Part A peers attack only the first N images: one N, or one per --pixels value (default: all)")
    p.add_argument("--peer-models", default=None, help="Part A peers only on these activations (default: all --models)")
    p.add_argument("--apgd-losses", default="ce,dlr", help="torchattacks APGD losses in Part B")
    p.add_argument("--data-dir", default=None, help="CIFAR-10 root (default: $ROBENCH_DATA, then the cache)")
    p.add_argument("--device", default="cpu", help="cpu, cuda, auto")
    p.add_argument("--threads", type=int, default=os.cpu_count(), help="torch threads (default: all cores)")
    p.add_argument("--forward", default="auto", help="Part A: robench's search forward (auto, incremental, eager, "
                                                     "compiled); successes do not depend on it, times do")
    a = p.parse_args()

    models = [m for m in a.models.split(",") if m]
    pixels = [int(k) for k in a.pixels.split(",") if k]
    epsilons = parse_eps(a.eps)
    parts = set(a.parts.split(","))
    peers = [] if a.peers == "none" else [q for q in a.peers.split(",") if q]
    if unknown := set(peers) - set(PEERS):
        p.error(f"unknown peers {sorted(unknown)}; known: {', '.join(PEERS)}")
    if unknown := parts - {"pixel", "linf", "square"}:
        p.error(f"unknown parts {sorted(unknown)}")
    peer_models = set(a.peer_models.split(",")) if a.peer_models else set(models)
    if a.peer_images is None:
        peer_n = [a.images] * len(pixels)
    else:
        peer_n = [int(v) for v in a.peer_images.split(",")]
        if len(peer_n) == 1:
            peer_n *= len(pixels)
        if len(peer_n) != len(pixels):
            p.error("--peer-images takes one N or one per --pixels value")
    peer_n = [min(n, a.images) for n in peer_n]

    torch.set_num_threads(a.threads)
    torch.manual_seed(0)
    np.random.seed(0)
    random.seed(0)
    device = resolve_device(a.device)
    test, prov = load_split("cifar10", train=False, data_dir=a.data_dir)
    versions = []
    for name in dict.fromkeys(peers + (["torchattacks"] if parts & {"linf", "square"} and peers else [])):
        mod = __import__(name)
        versions.append(f"{name} {mod.__version__}")

    rows_a: list[Row] = []
    rows_b: list[Row] = []
    rows_c: list[Row] = []
    notes: list[str] = []
    drawn_text = []

    def timed(fn, *args):
        sync(device)
        start = time.perf_counter()
        out = fn(*args)
        sync(device)
        return out, time.perf_counter() - start

    def run_spec(model: nn.Module, x: Tensor, y: Tensor, name: str, config) -> list[tuple[str, Judgement, AttackOutcome, float]]:
        spec = get_attack(name)
        out = []
        for label, setting in spec.settings(config):
            outcome, wall = timed(spec.fn, model, x, y, setting, torch.Generator().manual_seed(0))
            verdict = judge(model, x, y, outcome, **spec.budget(setting))
            out.append((label, verdict, outcome, wall))
        return out

    for act in models:
        path = f"checkpoints/lenet5-{act}-cifar10-s0.pt"
        model = load_checkpoint(path, model="lenet5", act=act, dataset="cifar10", device=device).model.eval()
        counted = Counting(model).eval()
        idx, drawn = select_images(model, test.images, test.labels, a.images, seed=0, device=device)
        x = to_float(test.images[idx]).to(device)
        y = test.labels[idx].to(device)
        drawn_text.append(f"{act}: {a.images} images (first of {drawn} drawn)")
        with torch.no_grad():  # warm-up, not timed
            model(x[:1].expand(512, -1, -1, -1).contiguous())

        if "pixel" in parts:
            for k, n_peer in zip(pixels, peer_n):
                setting = f"{k}px"
                ours = {}
                for method, name, config in (
                    ("robench de", "pixel", PixelAttackConfig(pixels=k, forward=a.forward)),
                    ("robench de-best1", "pixel", PixelAttackConfig(pixels=k, strategy="best1", crossover="pixel",
                                                                    forward=a.forward)),
                    ("robench sparse_rs", "sparse_rs", SparseRSConfig(pixels=k, queries=QUERIES, forward=a.forward)),
                    # the worst case the report quotes: the strong DE, then Sparse-RS on what stands
                    # (up to twice the budget of one attack)
                    ("robench ensemble", "ensemble", EnsembleConfig(
                        threat="l0", pixels=k, members=("pixel", "sparse_rs"),
                        member_options={"pixel": {"strategy": "best1", "crossover": "pixel", "forward": a.forward},
                                        "sparse_rs": {"forward": a.forward}})),
                ):
                    ((_, verdict, outcome, wall),) = run_spec(model, x, y, name, config)
                    succ = verdict.success
                    row = Row(act, setting, method, int(succ.sum()), a.images, float(outcome.queries.float().mean()),
                              wall, load().split()[0])
                    if act in peer_models and peers and n_peer < a.images:
                        row.first = (int(succ[:n_peer].sum()), n_peer)
                    rows_a.append(row)
                    ours[method] = int(succ[:n_peer].sum())
                    print(f"# {act} {setting} {method}: {row.success}/{row.images} in {wall:.1f} s "
                          f"(forward {outcome.meta.get('forward', '-')})", flush=True)
                if act not in peer_models:
                    continue
                for peer in peers:
                    counted.images = 0
                    xs, ys = x[:n_peer], y[:n_peer]
                    if peer == "torchattacks":
                        adv, wall = timed(run_torchattacks_pixel, counted, xs, ys, k)
                    else:
                        adv, wall = timed(run_art_pixel, counted, xs, ys, k, device)
                    succ, judged, note = judge_within(model, xs, ys, adv, l0_budget=k)
                    max_l0 = int(l0_changed(adv, xs).max())
                    note = "; ".join(filter(None, [f"max L0 {max_l0}", note]))
                    rows_a.append(Row(act, setting, peer, succ, judged, counted.images / n_peer, wall,
                                      load().split()[0], note=note))
                    print(f"# {act} {setting} {peer}: {succ}/{judged} in {wall:.1f} s", flush=True)
                    if succ > ours["robench sparse_rs"]:
                        notes.append(f"{act} {setting}: {peer} {succ}/{judged} beats robench sparse_rs "
                                     f"{ours['robench sparse_rs']}/{n_peer} on the same images")
                    for method in ("robench de", "robench de-best1"):
                        if succ > ours[method]:
                            notes.append(f"{act} {setting}: {peer} {succ}/{judged} beats {method} {ours[method]}/{n_peer}")

        if "linf" in parts:
            fmn_runs = run_spec(model, x, y, "fmn", FMNConfig(norm="linf"))
            ((_, fmn_verdict, fmn_outcome, fmn_wall),) = fmn_runs
            fmn_load = load().split()[0]
            fgsm = {label: r for label, *r in run_spec(model, x, y, "fgsm", FGSMConfig(epsilons=tuple(epsilons)))}
            fgsm_load = load().split()[0]
            by_eps: dict[float, dict[str, int]] = {}
            pgd_config = PGDConfig(norm="linf", epsilons=tuple(epsilons), steps=STEPS)
            spec = get_attack("pgd")
            for (label, setting), e, (fgsm_label, fgsm_run) in zip(spec.settings(pgd_config), epsilons, fgsm.items()):
                res = by_eps.setdefault(e, {})
                verdict, outcome, wall = fgsm_run
                rows_b.append(Row(act, label, "robench fgsm", int(verdict.success.sum()), a.images,
                                  float(outcome.queries.float().mean()), wall, fgsm_load))
                outcome, wall = timed(spec.fn, model, x, y, setting, torch.Generator().manual_seed(0))
                verdict = judge(model, x, y, outcome, **spec.budget(setting))
                res["robench pgd"] = int(verdict.success.sum())
                rows_b.append(Row(act, label, "robench pgd", res["robench pgd"], a.images,
                                  float(outcome.queries.float().mean()), wall, load().split()[0]))
                # PGD's options that close the gap to APGD, and the worst case that the report quotes
                extra = [("robench pgd-margin-r3", "pgd", PGDConfig(norm="linf", epsilons=(e,), steps=STEPS,
                                                                   loss="margin", restarts=3)),
                         ("robench ensemble", "ensemble", EnsembleConfig(threat="linf", epsilons=(e,),
                                                                         members=("fgsm", "pgd", "fmn")))]
                for method, name, config in extra:
                    ((_, verdict, outcome, wall),) = run_spec(model, x, y, name, config)
                    res[method] = int(verdict.success.sum())
                    rows_b.append(Row(act, label, method, res[method], a.images,
                                      float(outcome.queries.float().mean()), wall, load().split()[0],
                                      note="fgsm, pgd, fmn" if name == "ensemble" else ""))
                within = fmn_verdict.success & (fmn_verdict.linf <= e + 1e-6)
                rows_b.append(Row(act, label, "robench fmn", int(within.sum()), a.images,
                                  float(fmn_outcome.queries.float().mean()), fmn_wall, fmn_load,
                                  note="one run for all eps"))
                if "torchattacks" in peers:
                    import torchattacks

                    peer_attacks = [("torchattacks pgd", lambda e=e: torchattacks.PGD(
                        counted, eps=e, alpha=2.5 * e / STEPS, steps=STEPS, random_start=True))]
                    for loss in [s for s in a.apgd_losses.split(",") if s]:
                        peer_attacks.append((f"torchattacks apgd-{loss}", lambda e=e, loss=loss: torchattacks.APGD(
                            counted, norm="Linf", eps=e, steps=STEPS, n_restarts=1, loss=loss, seed=0)))
                    for method, build in peer_attacks:
                        torch.manual_seed(0)
                        np.random.seed(0)
                        counted.images = 0
                        attack = build()
                        adv, wall = timed(attack, x, y)
                        succ, judged, note = judge_within(model, x, y, adv.detach(), linf_budget=e)
                        res[method] = succ
                        rows_b.append(Row(act, label, method, succ, judged, counted.images / a.images, wall,
                                          load().split()[0], note=note))
                print(f"# {act} {label}: " + ", ".join(f"{m} {s}" for m, s in res.items()), flush=True)
                for method in ("torchattacks apgd-ce", "torchattacks apgd-dlr", "torchattacks pgd"):
                    for ours in ("robench pgd", "robench pgd-margin-r3", "robench ensemble"):
                        if method in res and res[ours] < res[method] - 2:
                            notes.append(f"{act} {label}: {ours} {res[ours]} is more than 2 below {method} {res[method]}")
            fmn_best = fmn_verdict.linf[fmn_verdict.success]
            if len(fmn_best):
                print(f"# {act} fmn linf: {int(fmn_verdict.success.sum())}/{a.images} fooled, median minimal "
                      f"Linf {float(fmn_best.median()) * 255:.2f}/255")

        if "square" in parts:
            spec = get_attack("square")
            for (label, setting), e in zip(spec.settings(SquareConfig(epsilons=tuple(epsilons))), epsilons):
                outcome, wall = timed(spec.fn, model, x, y, setting, torch.Generator().manual_seed(0))
                ours = int(judge(model, x, y, outcome, **spec.budget(setting)).success.sum())
                rows_c.append(Row(act, label, "robench square", ours, a.images, float(outcome.queries.float().mean()),
                                  wall, load().split()[0]))
                res = {"robench square": ours}
                for peer in peers:
                    torch.manual_seed(0)
                    np.random.seed(0)
                    counted.images = 0
                    if peer == "torchattacks":
                        import torchattacks

                        attack = torchattacks.Square(counted, norm="Linf", eps=e, n_queries=SQUARE_QUERIES, n_restarts=1,
                                                     p_init=0.8, loss="margin", resc_schedule=True, seed=0)
                        adv, wall = timed(attack, x, y)
                    else:
                        adv, wall = timed(run_art_square, counted, x, y, e, device)
                    succ, judged, note = judge_within(model, x, y, adv.detach(), linf_budget=e)
                    res[f"{peer} square"] = succ
                    rows_c.append(Row(act, label, f"{peer} square", succ, judged, counted.images / a.images, wall,
                                      load().split()[0], note=note))
                    if succ > ours + 2:
                        notes.append(f"{act} {label}: {peer} square {succ} is more than 2 above robench square {ours}")
                print(f"# {act} square {label}: " + ", ".join(f"{m} {s}" for m, s in res.items()), flush=True)

    def table(title: str, rows: list[Row], setting_name: str) -> None:
        if not rows:
            return
        print(f"\n### {title}\n")
        first = any(r.first for r in rows)
        head = f"| model | {setting_name} | method | success | " + ("first N (peer images) | " if first else "")
        head += "queries/img | wall s | img/s | load 1m | note |"
        print(head)
        print("|" + "---|" * (head.count("|") - 1))
        for r in rows:
            cells = [r.model, r.setting, r.method, f"{r.success}/{r.images}"]
            if first:
                cells.append(f"{r.first[0]}/{r.first[1]}" if r.first else "")
            q = "-" if r.queries is None else f"{r.queries:,.0f}" if r.queries >= 100 else f"{r.queries:.1f}"
            ips = f"{r.images / r.wall:.2f}" if r.wall > 0 and r.images else "-"
            cells += [q, f"{r.wall:.1f}", ips, r.load, r.note]
            print("| " + " | ".join(cells) + " |")

    table(f"Part A: k pixels (L0), {QUERIES:,} queries per image", rows_a, "k")
    table(f"Part B: Linf, {STEPS} steps", rows_b, "eps")
    table(f"Part C: Linf black-box (Square), {SQUARE_QUERIES:,} queries per image", rows_c, "eps")
    if notes:
        print("\nNotes:")
        for note in notes:
            print(f"- {note}")
    if "pixel" in parts and peers:
        chans = int(test.images.shape[1])
        print("\nPart A peer budgets: " + "; ".join(
            f"k={k}: {de_members(k, chans)} members x (1 + {de_steps(k, chans)}) = "
            f"{de_members(k, chans) * (1 + de_steps(k, chans)):,} + 1 per generation" for k in pixels))
    print(f"\n# command: ROBENCH_DATA={os.environ.get('ROBENCH_DATA', '')} python {' '.join(sys.argv)}")
    print(f"# images: {'; '.join(drawn_text)}; data_official={prov.official}"
          + (f"; Part A search forward: {a.forward}" if "pixel" in parts else ""))
    cpu = platform.processor() or platform.machine()
    print(f"# machine: {platform.platform()}, python {platform.python_version()}, cpu {cpu} x {os.cpu_count()}, "
          f"device {device}, torch {torch.__version__}, threads {torch.get_num_threads()}, numpy {np.__version__}"
          + (f", {', '.join(versions)}" if versions else ""))
    print(f"# load average at the end {load()}")


if __name__ == "__main__":
    main()
