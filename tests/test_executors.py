"""Serial, process-pool and Ray executors give the same per-image outcomes on the same suite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml

from robench.suite import load_suite, run_suite
from tests.conftest import train_tiny_lenet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A suite of four cells (two checkpoints × a DE and an FGSM attack) and its serial results."""
    root, ck = train_tiny_lenet(tmp_path_factory)
    for suffix in (".pt", ".json"):  # a second "training seed": the same weights under the s1 name
        shutil.copy(ck.with_suffix(suffix), ck.with_name(f"lenet5-relu-cifar10-s1{suffix}"))
    work = tmp_path_factory.mktemp("suite")

    def suite(results: str) -> Any:
        path = work / f"{results}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "tiny", "models": ["lenet5"], "acts": ["relu"], "train_seeds": [0, 1], "images": 4, "seed": 3,
            "results": str(work / results), "checkpoints": str(ck.parent),
            "attacks": [{"attack": "pixel", "options": {"pixels": 1, "population": 8, "generations": 2}, "repeats": 2},
                        {"attack": "fgsm", "options": {"epsilons": [0.02, 0.05]}, "repeats": 1}],
        }))
        return load_suite(path)

    serial = suite("serial")
    done = run_suite(serial, data_dir=root, device="cpu")
    assert [w for _, w in done] == ["ran"] * 4
    return root, suite, outcomes(work / "serial")


def outcomes(folder: Path) -> dict[str, Any]:
    """Per result file, per setting and repeat: every image's record and the adversarials' hash."""
    found = {}
    for path in sorted(folder.glob("*.json")):
        res = json.loads(path.read_text())
        assert res["status"] == "complete"
        found[path.name] = [[(rep["seed"], rep.get("adversarial_sha256"), rep["images"]) for rep in s["repeats"]]
                            for s in res["settings"]]
    assert len(found) == 4 and not list(folder.glob("*.json.lock"))  # records go; the hidden guard stays
    return found


def test_workers_match_serial(tiny):
    root, suite, serial = tiny
    s = suite("workers")
    done = run_suite(s, data_dir=root, device="cpu", workers=2)
    assert sorted(w for _, w in done) == ["ran"] * 4
    assert outcomes(Path(s.results)) == serial
    assert {w for _, w in run_suite(s, data_dir=root, device="cpu", workers=2)} == {"skipped"}  # nothing left to do


def test_ray_matches_serial(tiny):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'robench[ray]'); .ci/run installs it")
    root, suite, serial = tiny
    s = suite("ray")
    done = run_suite(s, data_dir=root, device="cpu", ray="local", workers=2)
    assert sorted(w for _, w in done) == ["ran"] * 4
    assert outcomes(Path(s.results)) == serial


def test_workers_count_per_gpu():
    from robench.executors import worker_devices

    assert worker_devices("auto", 2, gpus=0) == ["auto", "auto"]
    assert worker_devices("cuda", 2, gpus=1) == ["cuda", "cuda"]  # one GPU: the workers share it
    assert worker_devices("auto", 2, gpus=3) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:2", "cuda:2"]
    assert worker_devices("cuda:1", 2, gpus=None) == ["cuda:1", "cuda:1"]  # a device named: all on it
