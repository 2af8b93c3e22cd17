"""Re-run the original AutoAttack on the very images of a stored robench ``autoattack`` result.

    ROBENCH_DATA=/tmp/data python bench/autoattack_recheck.py RESULT.json [RESULT.json ...] [--threads 1] [--seeds 20]
        [--only eps=12/255] [--rates]

For each budget of each result: the images the result attacked (their test-set indices are stored
per image), the checkpoint it names (its sha256 checked against the one the result recorded), and
PyPI ``pyautoattack``'s ``AutoAttack(version='standard')`` (APGD-CE, APGD-T, FAB-T, Square; seed 0)
at the same norm and epsilon. Prints robust counts for both and the images each one fools that the
other leaves: a stored study cell re-checked against the reference, where bench/autoattack_parity.py
checks robench's code on the first N images. Each image only the original fools is named with the
original member that fooled it, and, where that member has a robench twin (APGD-CE, APGD-T), the
share of ``--seeds`` random starts in which each implementation's member fools that image alone: a
disagreement where both fool it about equally often is one random start's luck at a hairline margin,
one where robench's rate is clearly lower is a weaker member. Exit 1 when the original leaves fewer
images robust than the stored result says (robench weaker on that run). ``--rates`` skips the original's
full run and measures the fool rates of both APGD-Ts, over ``--seeds``, on every image that reached
APGD-T in the stored run (those left robust and those APGD-T broke): the same question asked of all
of them at once. ``--only`` keeps the budgets of that label. Tests never import this file (nor
pyautoattack).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.attacks.candidates import LOSSES  # noqa: E402
from robench.checkpoints import load_checkpoint  # noqa: E402
from robench.data import load_split, to_float  # noqa: E402

from _original_aa import MEMBERS, fool_rates, machine, original_autoattack, robust_of  # noqa: E402

MARGIN = LOSSES["margin"]  # robench's own margin: true logit minus the best other one


def recheck(path: Path, seeds: int, only: str | None = None, rates: bool = False) -> bool:
    """One result: True when the original never fools an image the stored result counts robust."""
    res = json.loads(path.read_text())
    if res.get("attack") != "autoattack":
        sys.exit(f"{path}: not an autoattack result (attack {res.get('attack')!r})")
    options = res["run"]["options"]
    ck = load_checkpoint(res["checkpoint"]["path"])
    if ck.sha256 != res["checkpoint"]["sha256"]:
        sys.exit(f"{path}: checkpoint {res['checkpoint']['path']} is not the one the result was made on")
    test, _ = load_split(res["dataset"], train=False)
    model = ck.model.eval()
    ok = True
    for eps, setting in zip(options["epsilons"], res["settings"], strict=True):
        if only is not None and setting["label"] != only:
            continue
        images = setting["repeats"][0]["images"]
        idx = torch.tensor([im["index"] for im in images])
        x, y = to_float(test.images[idx]), test.labels[idx]
        if rates:
            rates_line(path.name, setting["label"], model, x, y, idx, images, options["norm"], eps, seeds)
            continue
        stored_robust = torch.tensor([not im["success"] for im in images])
        start = time.perf_counter()
        adv, broken_by = original_autoattack(model, x, y, options["norm"], eps)
        original_robust = robust_of(model, y, adv)
        missed = (stored_robust & ~original_robust).nonzero().flatten().tolist()  # the original fools, robench did not
        only_robench = idx[~stored_robust & original_robust].tolist()
        print(f"{path.name} {setting['label']}: robust of {len(images)}: robench (stored) {int(stored_robust.sum())}, "
              f"original {int(original_robust.sum())}; fooled only by the original {idx[missed].tolist() or '-'}, "
              f"only by robench {only_robench or '-'} ({time.perf_counter() - start:.0f} s)", flush=True)
        for pos in missed:
            member = broken_by[pos] or "?"
            with torch.no_grad():
                margin = float(MARGIN(model(adv[pos : pos + 1]), y[pos : pos + 1])[0])
            line = f"  test image {int(idx[pos])}: fooled by the original's {member}, margin z_true - max z_other {margin:.5f}"
            if seeds and MEMBERS.get(member, (None, None))[1] in ("apgd", "apgd_t"):
                ours, theirs = fool_rates(model, x[pos : pos + 1], y[pos : pos + 1], options["norm"], eps, member, seeds)
                line += (f"; alone over {seeds} seeds it fools the image in {100 * float(ours[0]):.0f} % of robench's "
                         f"{MEMBERS[member][1]} runs and {100 * float(theirs[0]):.0f} % of the original's")
            print(line, flush=True)
        ok &= not missed
    return ok


def rates_line(name: str, label: str, model: torch.nn.Module, x: torch.Tensor, y: torch.Tensor, idx: torch.Tensor,
               images: list[dict], norm: str, eps: float, seeds: int) -> None:
    """Both APGD-Ts' fool rates over ``seeds`` on the images that reached APGD-T in the stored run."""
    start = time.perf_counter()
    reached = torch.tensor([not im["success"] or im.get("broken_by") == "apgd_t" for im in images])
    ours, theirs = fool_rates(model, x[reached], y[reached], norm, eps, "apgd-t", seeds)
    apart = [(int(i), round(float(a), 2), round(float(b), 2))
             for i, a, b in zip(idx[reached], ours, theirs, strict=True) if abs(float(a) - float(b)) > 0.3]
    print(f"{name} {label}: APGD-T alone over {seeds} seeds on the {int(reached.sum())} images that reached it: "
          f"mean fool rate robench {float(ours.mean()):.3f}, original {float(theirs.mean()):.3f}; expected robust "
          f"after one run {float((1 - ours).sum()):.1f} and {float((1 - theirs).sum()):.1f}; images whose rates differ "
          f"by more than 0.3 (index, robench, original): {apart or '-'} ({time.perf_counter() - start:.0f} s)", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--seeds", type=int, default=20, help="random starts per disagreement for the fool rates (0: none)")
    p.add_argument("--only", help="only the budget of this label, e.g. eps=12/255")
    p.add_argument("--rates", action="store_true", help="APGD-T fool rates of both implementations instead of the run")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    print("command: " + " ".join(["python", *sys.argv]))
    print("machine: " + machine(), flush=True)
    results = [recheck(path, args.seeds, args.only, args.rates) for path in args.results]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
