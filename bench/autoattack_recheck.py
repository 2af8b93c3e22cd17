"""Re-run the original AutoAttack on the very images of a stored robench ``autoattack`` result.

    ROBENCH_DATA=/tmp/data python bench/autoattack_recheck.py RESULT.json [RESULT.json ...] [--threads 1]

For each budget of each result: the images the result attacked (their test-set indices are stored
per image), the checkpoint it names (its sha256 checked against the one the result recorded), and
PyPI ``pyautoattack``'s ``AutoAttack(version='standard')`` (APGD-CE, APGD-T, FAB-T, Square; seed 0)
at the same norm and epsilon. Prints robust counts for both and the images each one fools that the
other leaves: a stored study cell re-checked against the reference, where bench/autoattack_parity.py
checks robench's code on the first N images. Exit 1 when the original leaves fewer images robust
than the stored result says (robench weaker there). Tests never import this file (nor pyautoattack).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from robench.checkpoints import load_checkpoint  # noqa: E402
from robench.data import load_split, to_float  # noqa: E402


def recheck(path: Path) -> bool:
    """One result: True when the original never fools an image the stored result counts robust."""
    from pyautoattack import AutoAttack

    res = json.loads(path.read_text())
    if res.get("attack") != "autoattack":
        sys.exit(f"{path}: not an autoattack result (attack {res.get('attack')!r})")
    options = res["run"]["options"]
    ck = load_checkpoint(res["checkpoint"]["path"])
    if ck.sha256 != res["checkpoint"]["sha256"]:
        sys.exit(f"{path}: checkpoint {res['checkpoint']['path']} is not the one the result was made on")
    test, _ = load_split(res["dataset"], train=False)
    ok = True
    for eps, setting in zip(options["epsilons"], res["settings"], strict=True):
        images = setting["repeats"][0]["images"]
        idx = torch.tensor([im["index"] for im in images])
        x, y = to_float(test.images[idx]), test.labels[idx]
        stored_robust = torch.tensor([not im["success"] for im in images])
        start = time.perf_counter()
        aa = AutoAttack(ck.model, norm={"linf": "Linf", "l2": "L2"}[options["norm"]], eps=eps, version="standard",
                        seed=0, device="cpu")
        aa.verbose = False
        adv = aa.run_standard_evaluation(x, y, batch_size=len(y))[0]
        with torch.no_grad():
            original_robust = ck.model(adv).argmax(1) == y
        only_ours = idx[stored_robust & ~original_robust].tolist()  # the original fools, robench did not
        only_theirs = idx[~stored_robust & original_robust].tolist()
        print(f"{path.name} {setting['label']}: robust of {len(images)}: robench (stored) {int(stored_robust.sum())}, "
              f"original {int(original_robust.sum())}; fooled only by the original {only_ours or '-'}, "
              f"only by robench {only_theirs or '-'} ({time.perf_counter() - start:.0f} s)")
        ok &= not only_ours
    return ok


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--threads", type=int, default=1)
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    results = [recheck(path) for path in args.results]
    sys.exit(0 if all(results) else 1)


if __name__ == "__main__":
    main()
