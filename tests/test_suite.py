"""The suite's cell graph: failures skip only their dependants, concurrent suites split the work,
stale locks are taken over, and Ctrl-C keeps what finished."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import signal
import threading
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from robench.cli import app
from robench.errors import RobenchError
from robench.locks import describe_lock, lock_path
from robench.results import read_result
from robench.suite import load_suite, run_suite
from tests.conftest import train_tiny_lenet, write_fake_cifar

runner = CliRunner()


@pytest.fixture(scope="module")
def ckdir(tmp_path_factory):
    """Fake CIFAR-10 and a folder of three 'training seeds' of one tiny LeNet (the same weights)."""
    root, ck = train_tiny_lenet(tmp_path_factory)
    for seed in (1, 2):
        for suffix in (".pt", ".json"):
            shutil.copy(ck.with_suffix(suffix), ck.with_name(f"lenet5-relu-cifar10-s{seed}{suffix}"))
    return root, ck.parent


def write_suite(path: Path, ckpts: Path, seeds: list[int], attacks: list[dict[str, Any]], **more: Any) -> Path:
    path.write_text(yaml.safe_dump({
        "name": "t", "models": ["lenet5"], "acts": ["relu"], "train_seeds": seeds, "images": 4, "seed": 0,
        "results": str(path.parent / "results"), "checkpoints": str(ckpts), "attacks": attacks, **more}))
    return path


FGSM = {"attack": "fgsm", "options": {"epsilons": [0.02]}, "repeats": 1}


def test_failed_training_skips_only_its_attacks(tmp_path):
    root = write_fake_cifar(tmp_path / "data", "cifar10")
    ck = tmp_path / "ck"
    ck.mkdir()
    (ck / "lenet5-relu-cifar10-s1.resume.pt").write_bytes(b"not a resume file")  # seed 1 cannot train
    suite = write_suite(tmp_path / "s.yaml", ck, [0, 1], [FGSM], train={"epochs": 1, "batch_size": 32})
    r = runner.invoke(app, ["suite", str(suite), "--data-dir", str(root), "--device", "cpu", "--quiet"])
    assert r.exit_code == 1 and "Traceback" not in r.output
    assert "1 ran, 0 resumed, 0 already done, 2 failed or not run" in r.output
    assert "robench: failed: lenet5-relu-cifar10-s1.pt: resume file" in r.output
    assert "robench: failed: lenet5-relu-cifar10-s1--fgsm" in r.output
    assert "needs lenet5-relu-cifar10-s1.pt, which failed" in r.output
    (good,) = (tmp_path / "results").glob("*.json")
    assert good.name.startswith("lenet5-relu-cifar10-s0--fgsm") and read_result(good)["status"] == "complete"


def test_a_stale_lock_is_taken_over(ckdir, tmp_path):
    root, ckpts = ckdir
    suite = load_suite(write_suite(tmp_path / "s.yaml", ckpts, [0], [FGSM]))
    (cell,) = suite.cells()
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    cell.out.parent.mkdir(parents=True)
    lock_path(cell.out).write_text(json.dumps({"pid": dead.pid, "host": os.uname().nodename, "boot": None,
                                               "start": None, "since": 0.0, "token": "killed"}) + "\n")
    with pytest.warns(UserWarning, match=f"took over the stale lock .* of pid {dead.pid}"):
        assert run_suite(suite, data_dir=root, device="cpu") == [(cell.out, "ran")]
    assert describe_lock(cell.out) is None and read_result(cell.out)["status"] == "complete"


def test_two_suites_on_one_folder_run_each_cell_once(ckdir, tmp_path):
    """A suite on two worker processes (in a thread) and a serial one here, started together."""
    root, ckpts = ckdir
    attacks = [{"attack": "pixel", "options": {"pixels": 1, "population": 100, "generations": 10}, "repeats": 3},
               {"attack": "fgsm", "options": {"epsilons": [0.02, 0.05]}, "repeats": 1}]
    suite = load_suite(write_suite(tmp_path / "s.yaml", ckpts, [0, 1, 2], attacks))
    ran: dict[str, list[str]] = {"pool": [], "here": []}

    def pool() -> None:
        run_suite(suite, data_dir=root, device="cpu", workers=2,
                  on_cell=lambda run, what: ran["pool"].append(f"{what} {run.result_name()}"))

    other = threading.Thread(target=pool)
    other.start()
    while other.is_alive() and not list((tmp_path / "results").glob("*.json.lock")):
        time.sleep(0.05)  # the pool is at work on its first cells
    run_suite(suite, data_dir=root, device="cpu",
              on_cell=lambda run, what: ran["here"].append(f"{what} {run.result_name()}"))
    other.join()
    names = sorted(c.id for c in suite.cells())
    computed = {who: [line.split()[1] for line in lines if line.split()[0] != "skipped"] for who, lines in ran.items()}
    assert sorted(computed["pool"] + computed["here"]) == names  # every cell computed exactly once
    assert computed["pool"] and computed["here"]  # by both suites, at the same time
    assert all(read_result(c.out)["status"] == "complete" for c in suite.cells())
    assert not list((tmp_path / "results").glob("*.json.lock"))


def test_ctrl_c_on_workers_keeps_finished_repeats(ckdir, tmp_path):
    """Ctrl-C reaching only the parent (as kill -INT does): it is passed on to the busy workers, the
    running cells keep their finished repeats, and no lock is left behind."""
    root, ckpts = ckdir
    slow = {"attack": "pixel", "options": {"pixels": 1, "population": 100, "generations": 20}, "repeats": 50}
    suite = load_suite(write_suite(tmp_path / "s.yaml", ckpts, [0, 1], [slow]))
    results = tmp_path / "results"

    def started(path: Path) -> bool:
        """A repeat is stored; False for a file it cannot read."""
        try:
            return any(setting["repeats"] for setting in read_result(path)["settings"])
        except (OSError, ValueError, KeyError, RobenchError):
            return False

    def press_ctrl_c() -> None:  # an exception here would end the thread silently, and the suite would run on
        while not any(started(p) for p in results.glob("*.json")):
            time.sleep(0.1)
        os.kill(os.getpid(), signal.SIGINT)

    # A shell starts a background job (`.ci/run &`) with SIGINT ignored, and robench then keeps its
    # workers deaf to it too, as it should; this test is about Ctrl-C, so it restores Python's handler.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=press_ctrl_c, daemon=True).start()
        with pytest.raises(KeyboardInterrupt):
            run_suite(suite, data_dir=root, device="cpu", workers=2)
    finally:
        signal.signal(signal.SIGINT, previous)
    kept = [read_result(p) for p in results.glob("*.json")]
    assert kept and all(r["status"] == "partial" and 1 <= len(r["settings"][0]["repeats"]) < 50 for r in kept)
    assert not list(results.glob("*.json.lock"))


def test_an_adversarially_trained_grid_names_its_checkpoints_by_how_they_were_trained(tmp_path):
    suite = load_suite(write_suite(tmp_path / "s.yaml", tmp_path / "ck", [0, 1], [FGSM],
                                   train={"epochs": 1, "adv": "pgd", "adv_eps": 0.1, "adv_steps": 10}))
    names = [path.name for _, path in suite.trainings()]
    assert names == ["lenet5-relu-cifar10-pgd0.1k10-s0.pt", "lenet5-relu-cifar10-pgd0.1k10-s1.pt"]
    assert {run.checkpoint for run in suite.runs()} == {str(tmp_path / "ck" / n) for n in names}
    plain = load_suite(write_suite(tmp_path / "p.yaml", tmp_path / "ck", [0], [FGSM], train={"augment": True}))
    assert plain.trainings()[0][1].name == "lenet5-relu-cifar10-aug-s0.pt"


def test_a_suite_writing_outside_the_working_folder_says_so(ckdir, tmp_path, monkeypatch):
    root, ckpts = ckdir
    work = tmp_path / "project" / "sub"
    work.mkdir(parents=True)
    monkeypatch.chdir(work)
    suite = write_suite(work / "s.yaml", ckpts, [0], [FGSM])
    data = yaml.safe_load(suite.read_text())
    for results, outside in (("../../elsewhere", True), ("inside/results", False)):
        suite.write_text(yaml.safe_dump(data | {"results": results}))
        r = runner.invoke(app, ["suite", str(suite), "--data-dir", str(root), "--device", "cpu", "--quiet"])
        assert r.exit_code == 0, r.output
        said = [line for line in r.output.splitlines() if "outside the working folder" in line]
        expected = [f"robench: warning: suite t writes its results to {tmp_path / 'elsewhere'}, outside the working "
                    f"folder {work}"] if outside else []
        assert said == expected, r.output
        assert (work / results).resolve().is_dir()
