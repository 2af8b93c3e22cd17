"""Serial, process-pool and Ray executors give the same per-image outcomes on the same suite."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

from robench.suite import load_suite, run_suite
from tests.conftest import train_tiny_lenet


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A suite of four cells (two checkpoints × a DE and an FGSM attack) with relative paths, as suites
    are written (so a Ray task finds its checkpoint in its scratch folder), and its serial results."""
    root, ck = train_tiny_lenet(tmp_path_factory)
    work = tmp_path_factory.mktemp("suite")
    (work / "ck").mkdir()
    for seed in (0, 1):  # two "training seeds": the same weights under two names
        for suffix in (".pt", ".json"):
            shutil.copy(ck.with_suffix(suffix), work / "ck" / f"lenet5-relu-cifar10-s{seed}{suffix}")

    def suite(results: str) -> Any:
        path = work / f"{results}.yaml"
        path.write_text(yaml.safe_dump({
            "name": "tiny", "models": ["lenet5"], "acts": ["relu"], "train_seeds": [0, 1], "images": 4, "seed": 3,
            "results": results, "checkpoints": "ck",
            "attacks": [{"attack": "pixel", "options": {"pixels": 1, "population": 8, "generations": 2}, "repeats": 2},
                        {"attack": "fgsm", "options": {"epsilons": [0.02, 0.05]}, "repeats": 1}],
        }))
        return load_suite(path)

    with pytest.MonkeyPatch.context() as mp:
        mp.chdir(work)
        done = run_suite(suite("serial"), data_dir=root, device="cpu")
        assert [w for _, w in done] == ["ran"] * 4
        reference = outcomes(work / "serial")
    return root, work, suite, reference


def outcomes(folder: Path) -> dict[str, Any]:
    """Every result file whole (every image's record, the adversarials' hash, the checkpoint it cites),
    but for the timings, and the bytes of every stored .npz."""
    def untimed(value: Any) -> Any:
        if isinstance(value, dict):
            return {k: untimed(v) for k, v in value.items() if k not in ("wall_time_s", "compile_s")}
        return [untimed(v) for v in value] if isinstance(value, list) else value

    found = {p.name: untimed(json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))}
    found |= {p.name: p.read_bytes() for p in sorted(folder.glob("*.npz"))}
    assert sum(p.endswith(".json") and r["status"] == "complete" for p, r in found.items()) == 4
    assert not list(folder.glob("*.json.lock"))  # lock records go; the hidden per-folder guard stays
    return found


def test_workers_match_serial(tiny, monkeypatch):
    root, work, suite, serial = tiny
    monkeypatch.chdir(work)
    s = suite("workers")
    done = run_suite(s, data_dir=root, device="cpu", workers=2)
    assert sorted(w for _, w in done) == ["ran"] * 4
    assert outcomes(work / "workers") == serial  # every byte, but for the timings
    assert {w for _, w in run_suite(s, data_dir=root, device="cpu", workers=2)} == {"skipped"}  # nothing left to do


def test_ray_matches_serial(tiny, monkeypatch):
    pytest.importorskip("ray", reason="Ray is not installed (pip install 'robench[ray]'); .ci/run installs it")
    root, work, suite, serial = tiny
    monkeypatch.chdir(work)
    done = run_suite(suite("ray"), data_dir=root, device="cpu", ray="local", workers=2)
    assert sorted(w for _, w in done) == ["ran"] * 4
    assert outcomes(work / "ray") == serial


def test_workers_count_per_gpu():
    from robench.executors import worker_devices

    assert worker_devices("auto", 2, gpus=0) == ["auto", "auto"]
    assert worker_devices("cuda", 2, gpus=1) == ["cuda", "cuda"]  # one GPU: the workers share it
    assert worker_devices("auto", 2, gpus=3) == ["cuda:0", "cuda:0", "cuda:1", "cuda:1", "cuda:2", "cuda:2"]
    assert worker_devices("cuda:1", 2, gpus=None) == ["cuda:1", "cuda:1"]  # a device named: all on it


class _ThreadSensitive(torch.nn.Module):
    """Logits that move in their last bits with torch's thread count, as a real sum split over
    threads does (the audit saw p_true_adv 0.578126 vs 0.578127 between executors)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        score = x.flatten(1).mean(1) * 4 + 1e-4 * torch.get_num_threads()
        return torch.stack([score, torch.zeros(len(x))], 1)


def test_stored_verdicts_do_not_depend_on_the_thread_count():
    from robench.attacks.base import AttackOutcome, judge

    g = torch.Generator().manual_seed(0)
    images = torch.rand(6, 1, 4, 4, generator=g) * 0.5 + 0.5  # class 0 everywhere
    adv = (images - 0.3).clamp(0, 1)
    outcome = AttackOutcome(adversarial=adv, queries=torch.ones(6, dtype=torch.int64))
    labels = torch.zeros(6, dtype=torch.int64)
    before = torch.get_num_threads()
    found = []
    try:
        for threads in (1, 3):
            torch.set_num_threads(threads)
            v = judge(_ThreadSensitive(), images, labels, outcome)
            found.append((v.p_true_adv.tolist(), v.abs_z.tolist(), v.p_true_clean.tolist()))
            assert torch.get_num_threads() == threads  # judge gives the caller's setting back
    finally:
        torch.set_num_threads(before)
    assert found[0] == found[1]


def _running(pid: int) -> bool:
    """Alive and not a zombie (a killed process's orphans are reaped by whoever adopts them)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat[stat.rindex(")") + 2] != "Z"


@pytest.mark.parametrize("executor", ["workers", pytest.param("ray", marks=pytest.mark.slow)])
def test_workers_die_when_the_suite_is_killed(tiny, executor):
    import os
    import signal
    import subprocess
    import sys
    import time

    from robench.reaper import descendants

    if executor == "ray":
        pytest.importorskip("ray", reason="Ray is not installed")
    root, work, _, _ = tiny
    path = work / f"killed-{executor}.yaml"
    path.write_text(yaml.safe_dump({
        "name": "killed", "models": ["lenet5"], "acts": ["relu"], "train_seeds": [0, 1], "images": 4, "seed": 3,
        "results": f"killed-{executor}", "checkpoints": "ck",  # DE cells that run for minutes
        "attacks": [{"attack": "pixel", "options": {"population": 64, "generations": 100000, "early_stop": False}, "repeats": 1}],
    }))
    args = ["--ray"] if executor == "ray" else []
    env = os.environ | {"PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    suite = subprocess.Popen([sys.executable, "-m", "robench.cli", "suite", str(path), "--workers", "2", *args,
                              "--data-dir", str(root), "--device", "cpu", "--quiet"], cwd=work, env=env,
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 240
    while len(list((work / f"killed-{executor}").glob("*.json.lock"))) < 2:  # both cells computing
        assert suite.poll() is None and time.monotonic() < deadline, "the suite ended or never started its cells"
        time.sleep(0.5)
    below = descendants(suite.pid)
    assert len(below) >= 2
    suite.send_signal(signal.SIGKILL)
    suite.wait()
    deadline = time.monotonic() + 30
    while any(map(_running, below)) and time.monotonic() < deadline:
        time.sleep(0.5)
    left = [p for p in below if _running(p)]
    for p in left:  # leave no orphan behind, even when the test fails
        os.kill(p, signal.SIGKILL)
    assert not left, f"{len(left)} of {len(below)} processes outlived the killed suite"
