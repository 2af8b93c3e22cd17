"""The file work of bench/gpu_paper.sh, in Python so that it reads a suite as robench does.

    python bench/gpu_paper_files.py toy CONFIG WORKDIR   # write WORKDIR/toy.yaml
    python bench/gpu_paper_files.py outputs CONFIG       # the files to bring back, one per line
    python bench/gpu_paper_files.py results CONFIG       # the suite's results folder

The toy config keeps CONFIG's attack list, schedule and first two activations, and shrinks sizes:
LeNet-5 trained on 2048 images for one epoch, every attack at a tiny budget on 4 images. The large
models stay out of it: on these CPUs each spends minutes per cell on the whole test set (its clean
accuracy after training, the image selection before attacking); tests/test_models.py builds and runs them.
"""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import yaml

from robench.checkpoints import history_path, sidecar_path
from robench.suite import load_suite

MAX_COMMITTED_BYTES = 5 * 1024 * 1024  # checkpoints larger than this are not committed (issue 15)

# Per attack: the options that make it take seconds on a CPU.
TINY: dict[str, dict[str, Any]] = {
    "pixel": {"population": 20, "generations": 3},
    "sparse_rs": {"queries": 100},
    "pgd": {"steps": 5},
    "cw": {"steps": 20},
    "fmn": {"steps": 10},
}


def toy(config: Path, work: Path) -> None:
    full = yaml.safe_load(config.read_text())
    base = {"dataset": full["dataset"], "seed": full.get("seed", 0), "train_seeds": [0], "checkpoints": "checkpoints",
            "results": "attacks/gpu-paper-toy"}
    schedule = full.get("train", {}) | {"epochs": 1, "batch_size": 64, "train_images": 2048}
    attacks = [a | {"options": a.get("options", {}) | TINY.get(a["attack"], {}), "repeats": 1} for a in full["attacks"]]
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
