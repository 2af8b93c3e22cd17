"""robench's standard evaluation against the original AutoAttack on the same images and budget.

    ROBENCH_DATA=/tmp/data python bench/autoattack_parity.py [--checkpoint checkpoints/mlp-relu-mnist-s0.pt] \\
        [--norm linf|l2] [--eps 0.05] [--images 100] [--threads 1] [--peers pyautoattack,torchattacks] \\
        [--parts aa,apgd,fmn] [--rounds 1]

The images are the first N test images (in test-set order) the model classifies correctly. Every
method's output is judged the same way: the returned images re-run through the model, robust when
still classified right (the budget is checked by ``judge`` for robench and measured for the peers).

- ``robench autoattack``: ``autoattack_attack`` (APGD-CE, APGD-T 9 targets, Square 5,000 queries
  for Linf), timed without its failure checks, then the checks alone;
- ``pyautoattack standard``: ``AutoAttack(version='standard')`` of PyPI ``pyautoattack`` (the
  original code: APGD-CE, APGD-T, FAB-T, Square), seed 0;
- ``torchattacks``: ``torchattacks.AutoAttack(version='standard')`` when installed (3.5.1 builds
  its APGD with 10 steps: not a reference, listed for what a user of it would get);
- part ``apgd``: robench's ``apgd`` (CE) and ``apgd_t`` alone against the original's ``APGDAttack``
  and ``APGDAttack_targeted`` (100 steps, one restart, 9 targets);
- part ``fmn``: robench's FMN at the budget on the images robench's autoattack left standing
  (whether a minimal-norm member, AutoAttack's FAB-T slot, would add anything).

Robust counts are out of N (lower = stronger attack); per-image disagreements list test-set indices.
Tests never import this file (nor pyautoattack).
"""

from __future__ import annotations

import argparse
import sys
import time
from fractions import Fraction
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.attacks.apgd import APGDConfig, APGDTConfig, apgd_attack  # noqa: E402
from robench.attacks.autoattack import AutoAttackConfig, autoattack_attack  # noqa: E402
from robench.attacks.base import judge, perturbation_norms  # noqa: E402
from robench.attacks.gradient import FMNConfig, fmn_attack  # noqa: E402
from robench.checkpoints import load_checkpoint  # noqa: E402
from robench.data import load_split, to_float  # noqa: E402

from _original_aa import machine, original_autoattack, robust_of  # noqa: E402


def first_correct(model: torch.nn.Module, dataset: str, n: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    test, _ = load_split(dataset, train=False)
    with torch.no_grad():
        preds = torch.cat([model(to_float(test.images[i : i + 1000])).argmax(1) for i in range(0, len(test.labels), 1000)])
    idx = (preds == test.labels).nonzero().flatten()[:n]
    return to_float(test.images[idx]), test.labels[idx], idx


def timed(fn):  # type: ignore[no-untyped-def]
    start = time.perf_counter()
    out = fn()
    return out, time.perf_counter() - start


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", default="checkpoints/mlp-relu-mnist-s0.pt")
    p.add_argument("--norm", default="linf", choices=("linf", "l2"))
    p.add_argument("--eps", default="0.05")
    p.add_argument("--images", type=int, default=100)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--peers", default="pyautoattack,torchattacks")
    p.add_argument("--parts", default="aa,apgd,fmn")
    p.add_argument("--rounds", type=int, default=1, help="timed runs of robench's and the original's autoattack, "
                                                         "interleaved; the table gives the fastest")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    eps = float(Fraction(args.eps))
    peers, parts = set(args.peers.split(",")), set(args.parts.split(","))
    print("command: " + " ".join(["python", *sys.argv]))
    print("machine: " + machine())
    ck = load_checkpoint(args.checkpoint)
    model = ck.model.eval()
    for p_ in model.parameters():
        p_.requires_grad_(False)
    x, y, idx = first_correct(model, ck.dataset, args.images)
    print(f"checkpoint: {args.checkpoint} ({ck.args}, {ck.dataset}), "
          f"{len(y)} images (the first the model gets right), {args.norm} eps {eps:g}")
    budget = {f"{args.norm}_budget": eps}
    rows: list[tuple[str, torch.Tensor, float]] = []
    aa_norm = "Linf" if args.norm == "linf" else "L2"

    if "aa" in parts:
        def ours() -> object:
            config = AutoAttackConfig(norm=args.norm, epsilons=(eps,), checks=False)
            return autoattack_attack(model, x, y, config, torch.Generator().manual_seed(0))

        def original() -> torch.Tensor:
            return original_autoattack(model, x, y, args.norm, eps)[0]

        times: dict[str, list[float]] = {"robench": [], "pyautoattack": []}
        for _ in range(args.rounds):  # interleaved: a load swing on a shared machine hits both
            out, t = timed(ours)
            times["robench"].append(t)
            if "pyautoattack" in peers:
                adv, t = timed(original)
                times["pyautoattack"].append(t)
        print("wall times per round: " + "; ".join(f"{k} {', '.join(f'{t:.1f}' for t in v)}" for k, v in times.items() if v))
        rows.append(("robench autoattack", ~judge(model, x, y, out, **budget).success, min(times["robench"])))
        broken = {m: out.details["broken_by"].count(m) for m in out.meta["members"]}
        checked, t_checked = timed(lambda: autoattack_attack(model, x, y, AutoAttackConfig(norm=args.norm, epsilons=(eps,)),
                                                             torch.Generator().manual_seed(0)))
        flagged = [c["name"] for c in checked.meta["checks"] if c["flagged"]]
        print(f"robench autoattack: broken by {broken}; with its failure checks {t_checked:.1f} s "
              f"(flagged: {', '.join(flagged) or 'none'})")
        if "fmn" in parts:
            left = rows[-1][1].nonzero().flatten()
            fmn = fmn_attack(model, x[left], y[left], FMNConfig(norm=args.norm, epsilon=eps), torch.Generator().manual_seed(0))
            print(f"fmn on the {len(left)} images robench autoattack left: fools "
                  f"{int(judge(model, x[left], y[left], fmn, **budget).success.sum())}")
        if times["pyautoattack"]:
            rows.append(("pyautoattack standard", robust_of(model, y, adv), min(times["pyautoattack"])))
            print(f"pyautoattack: largest {args.norm} {float(perturbation_norms(x, adv)[args.norm].max()):.6f}")
        if "torchattacks" in peers:
            try:
                import torchattacks
            except ImportError:
                print("torchattacks: not installed")
            else:
                ta = torchattacks.AutoAttack(model, norm=aa_norm, eps=eps, version="standard",
                                             n_classes=int(model(x[:1]).shape[1]), seed=0)
                adv, t = timed(lambda: ta(x, y))
                rows.append((f"torchattacks {torchattacks.__version__} standard", robust_of(model, y, adv), t))
    if "apgd" in parts:
        from pyautoattack.autopgd_base import APGDAttack, APGDAttack_targeted

        for name, config, ref in (
            ("apgd-ce", APGDConfig(norm=args.norm, epsilons=(eps,)),
             APGDAttack(model, norm=aa_norm, eps=eps, n_iter=100, n_restarts=1, seed=0, device="cpu")),
            ("apgd-t", APGDTConfig(norm=args.norm, epsilons=(eps,)),
             APGDAttack_targeted(model, norm=aa_norm, eps=eps, n_iter=100, n_restarts=1, n_target_classes=9, seed=0,
                                 device="cpu")),
        ):
            out, t = timed(lambda: apgd_attack(model, x, y, config, torch.Generator().manual_seed(0)))
            rows.append((f"robench {name}", ~judge(model, x, y, out, **budget).success, t))
            adv, t = timed(lambda: ref.perturb(x, y))
            rows.append((f"pyautoattack {name}", robust_of(model, y, adv), t))

    print(f"\n| method | robust of {len(y)} | wall time (s) |\n|---|---|---|")
    for name, robust, t in rows:
        print(f"| {name} | {int(robust.sum())} | {t:.1f} |")
    torchattacks_row = next((r[0] for r in rows if r[0].startswith("torchattacks")), "")
    pairs = [("robench autoattack", "pyautoattack standard"), ("robench autoattack", torchattacks_row),
             ("robench apgd-ce", "pyautoattack apgd-ce"), ("robench apgd-t", "pyautoattack apgd-t")]
    found = {name: (robust, t) for name, robust, t in rows}
    for a, b in pairs:
        if a in found and b in found:
            ra, rb = found[a][0], found[b][0]
            only_a, only_b = idx[ra & ~rb].tolist(), idx[rb & ~ra].tolist()
            print(f"{a} vs {b}: time ratio {found[a][1] / found[b][1]:.2f}; robust only under {a}: {only_a}; "
                  f"only under {b}: {only_b}")


if __name__ == "__main__":
    main()
