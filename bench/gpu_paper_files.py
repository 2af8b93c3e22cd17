"""The file work of bench/gpu_paper.sh, in Python so that it reads a suite as robench does.

    python bench/gpu_paper_files.py toy CONFIG WORKDIR   # write WORKDIR/toy.yaml
    python bench/gpu_paper_files.py outputs CONFIG       # the files to bring back, one per line
    python bench/gpu_paper_files.py results CONFIG       # the suite's results folder

The toy config keeps CONFIG's attack list, schedule (adversarial training included) and first two
activations, and shrinks sizes: LeNet-5 trained on 2048 images for one epoch, every attack at the
budget its registration calls quick (``AttackSpec.quick``, what the contract test runs) on 4 images;
an attack's own epsilons stay. The large
models stay out of it: on these CPUs each spends minutes per cell on the whole test set (its clean
accuracy after training, the image selection before attacking); tests/test_models.py builds and runs them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from robench.attacks.spec import get_attack
from robench.checkpoints import history_path, sidecar_path
from robench.suite import load_suite

MAX_COMMITTED_BYTES = 5 * 1024 * 1024  # checkpoints larger than this are not committed (issue 15)


def quick(attack: dict[str, Any]) -> dict[str, Any]:
    """One attack entry of a suite at the budget that takes seconds on a CPU, its epsilons kept."""
    options = attack.get("options", {})
    fast = {k: list(v) if isinstance(v, tuple) else v  # YAML has lists, not tuples
            for k, v in get_attack(attack["attack"]).quick.items() if not (k == "epsilons" and k in options)}
    return attack | {"options": options | fast, "repeats": 1}


def toy(config: Path, work: Path) -> None:
    full = yaml.safe_load(config.read_text())
    base = {"dataset": full["dataset"], "seed": full.get("seed", 0), "train_seeds": [0], "checkpoints": "checkpoints",
            "results": "attacks/gpu-paper-toy"}
    schedule = full.get("train", {}) | {"epochs": 1, "batch_size": 64, "train_images": 2048}
    attacks = [quick(a) for a in full["attacks"]]
    body = base | {"name": "gpu-paper-toy", "models": ["lenet5"], "acts": full["acts"][:2], "images": 4,
                   "train": schedule, "attacks": attacks}
    (work / "toy.yaml").write_text(yaml.safe_dump(body, sort_keys=False))


def outputs(config: Path) -> list[Path]:
    """Every result file of the suite's folder, and per checkpoint its sidecar, its training history
    and, when small, itself."""
    suite = load_suite(config)
    results = Path(suite.results)
    found = sorted(p for pattern in ("*.json", "*.adv.npz") for p in results.glob(pattern))
    for model in suite.models:
        for act in suite.acts:
            for seed in suite.train_seeds:
                pt = suite.checkpoint(model, act, seed)
                found += [p for p in (sidecar_path(pt), history_path(pt)) if p.is_file()]
                if pt.is_file() and pt.stat().st_size <= MAX_COMMITTED_BYTES:
                    found.append(pt)
    return found


def main() -> None:
    what, config = sys.argv[1], Path(sys.argv[2])
    if what == "toy":
        toy(config, Path(sys.argv[3]))
    elif what == "outputs":
        print("\n".join(str(p) for p in outputs(config)))
    elif what == "results":
        print(load_suite(config).results)
    else:
        sys.exit(f"unknown command {what!r}: toy, outputs or results")


if __name__ == "__main__":
    main()
