import json

import pytest
from typer.testing import CliRunner

from robench.cli import app

runner = CliRunner()


def _invoke(*args):
    return runner.invoke(app, list(args))


def test_train_then_list(fake_data, tmp_path):
    out = tmp_path / "ck" / "mlp-relu-mnist-s0.pt"
    r = _invoke("train", "--model", "mlp", "--act", "relu", "--dataset", "mnist", "--epochs", "1",
                "--batch-size", "32", "--data-dir", str(fake_data), "--out", str(out), "--quiet", "--device", "cpu")
    assert r.exit_code == 0, r.output
    assert "clean test accuracy" in r.output and out.exists()
    assert json.loads(out.with_suffix(".json").read_text())["train_config"]["epochs"] == 1
    r = _invoke("models", "--dir", str(out.parent))
    assert r.exit_code == 0 and "mlp-relu-mnist-s0.pt" in r.output


@pytest.mark.parametrize("args,msg", [
    (["train", "--model", "vgg"], "unknown model 'vgg'"),
    (["train", "--act", "mish"], "unknown activation 'mish'"),
    (["train", "--dataset", "svhn"], "unknown dataset 'svhn'"),
    (["train", "--epochs", "0"], "epochs must be >= 1"),
    (["train", "--act-opt", "nonsense"], "KEY=VALUE"),
    (["train", "--act", "sapl", "--act-opt", "flavour=1"], "bad option"),
])
def test_bad_input_is_one_line(args, msg, fake_data):
    r = _invoke(*args, "--data-dir", str(fake_data), "--quiet")
    assert r.exit_code == 1
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in r.output


def test_missing_dataset_is_one_line(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path))
    r = _invoke("train", "--dataset", "cifar100", "--data-dir", str(tmp_path / "none"), "--quiet")
    assert r.exit_code == 1 and "cifar100 not found" in r.output and "Traceback" not in r.output


def test_train_from_yaml_config(fake_data, tmp_path):
    cfg = tmp_path / "t.yaml"
    cfg.write_text("model: lenet5\nact: sapl\ndataset: cifar10\nepochs: 1\nbatch_size: 32\nact_options: {compiled: false}\n")
    out = tmp_path / "x.pt"
    r = _invoke("train", "--config", str(cfg), "--data-dir", str(fake_data), "--out", str(out), "--quiet")
    assert r.exit_code == 0, r.output
    bad = tmp_path / "bad.yaml"
    bad.write_text("model: lenet5\nepoch: 3\n")
    r = _invoke("train", "--config", str(bad), "--data-dir", str(fake_data), "--quiet")
    assert r.exit_code == 1 and "unknown key(s) epoch" in r.output


def test_known_names():
    r = _invoke("models", "--known")
    assert r.exit_code == 0 and "sapl_tied" in r.output and "efficientnet_b0" in r.output


@pytest.fixture(scope="module")
def relu_ckpt(tmp_path_factory):
    from robench.config import TrainConfig
    from robench.train import train
    from tests.conftest import write_fake_cifar

    root = write_fake_cifar(tmp_path_factory.mktemp("data"), "cifar10")
    ck = tmp_path_factory.mktemp("ck") / "lenet5-relu-cifar10-s0.pt"
    train(TrainConfig(model="lenet5", act="relu", epochs=2, batch_size=32), out=ck, data_dir=root, device="cpu")
    return root, ck


def test_attack_command_writes_result_and_refuses_rerun(relu_ckpt, tmp_path):
    root, ck = relu_ckpt
    out = tmp_path / "res.json"
    args = ["attack", "--attack", "pixel", "--pixels", "2", "--population", "8", "--generations", "1", "--images", "4",
            "--repeats", "2", "--checkpoint", str(ck), "--data-dir", str(root), "--out", str(out), "--quiet"]
    r = _invoke(*args)
    assert r.exit_code == 0, r.output
    assert "2px" in r.output and json.loads(out.read_text())["status"] == "complete"
    first = r.output
    r = _invoke(*args)  # like make: a finished cell is shown, not recomputed
    assert r.exit_code == 0 and "stored" in r.output and "--force" in r.output
    assert first.split("wrote")[0] == r.output.split("stored:")[0]  # the same table
    assert _invoke(*args, "--force").exit_code == 0


def test_runs_that_differ_in_any_setting_get_their_own_file(relu_ckpt, tmp_path, monkeypatch):
    root, ck = relu_ckpt
    monkeypatch.chdir(tmp_path)
    base = ["attack", "--attack", "pixel", "--population", "8", "--generations", "1", "--repeats", "1",
            "--checkpoint", str(ck), "--data-dir", str(root), "--quiet"]
    for extra in (["--images", "4"], ["--images", "3"], ["--images", "3", "--population", "9"]):
        r = _invoke(*base, *extra)
        assert r.exit_code == 0 and "wrote" in r.output, r.output
    names = sorted(p.name for p in (tmp_path / "attacks").glob("*.json"))
    assert len(names) == 3 and all(n.startswith("lenet5-relu-cifar10-s0--pixel1px-seed0-") for n in names)


@pytest.mark.parametrize("args,msg", [
    (["--attack", "laser"], "unknown attack 'laser'"),
    (["--attack", "fgsm", "--eps", "0.02,1.5"], "(0, 1]"),
    (["--attack", "fgsm", "--eps", "abc"], "comma-separated"),
    (["--attack", "pixel", "--pixels", "0"], "pixels must be >= 1"),
    (["--attack", "fgsm", "--pixels", "3"], "--pixels applies to --attack ensemble or pixel or sparse_rs, not fgsm"),
    (["--act", "sapl"], "act=relu, not sapl"),
    (["--checkpoint", "/nonexistent/x.pt"], "not found"),
    (["--attack", "pgd", "--norm", "l3"], "pgd norm must be linf or l2"),
    (["--attack", "pgd", "--eps", "8/0"], "fractions"),
    (["--attack", "sparse_rs", "--population", "5"], "--population applies to --attack pixel, not sparse_rs"),
    (["--attack", "sparse_rs", "--queries", "0"], "queries must be >= 1"),
    (["--attack", "square", "--eps", "0"], "every epsilon must be in (0, 1]"),
    (["--attack", "square", "--steps", "5"], "--steps applies to --attack apgd or apgd_t or autoattack or cw or fmn or pgd, not square"),
    (["--attack", "fmn", "--eps", "0.1,0.2"], "one budget for fmn"),
    (["--attack", "ensemble", "--members", "fgsm", "--pixels", "3"], "cannot serve the l0 threat"),
    (["--attack", "ensemble", "--members", "de,laser"], "unknown attack 'laser'"),
    (["--attack", "pixel", "--strategy", "best2"], "unknown strategy"),
])
def test_attack_bad_input_is_one_line(relu_ckpt, args, msg, tmp_path):
    root, ck = relu_ckpt
    base = ["attack", "--images", "2", "--repeats", "1", "--data-dir", str(root), "--out", str(tmp_path / "o.json"), "--quiet"]
    if "--checkpoint" not in args:
        base += ["--checkpoint", str(ck)]
    r = _invoke(*base, *args)
    assert r.exit_code == 1, r.output
    lines = [line for line in r.output.splitlines() if line.strip() and "warning" not in line]
    assert len(lines) == 1 and msg in lines[0] and "Traceback" not in r.output


def test_missing_default_checkpoint(fake_data, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    r = _invoke("attack", "--model", "nin", "--act", "sapl", "--data-dir", str(fake_data), "--quiet")
    assert r.exit_code == 1 and "checkpoints/nin-sapl-cifar10-s0.pt not found" in r.output


@pytest.mark.parametrize("args,label", [
    (["--attack", "sparse_rs", "--pixels", "2", "--queries", "60"], "2px"),
    (["--attack", "pgd", "--eps", "1/255,8/255", "--steps", "5"], "eps=8/255"),
    (["--attack", "square", "--eps", "2/255,8/255", "--queries", "40"], "eps=2/255"),
    (["--attack", "fmn", "--norm", "l0", "--steps", "10"], "min-l0"),
    (["--attack", "ensemble", "--eps", "2/255", "--members", "fgsm,pgd"], "eps=2/255"),
    (["--attack", "pixel", "--pixels", "3", "--strategy", "best1", "--crossover", "pixel", "--population", "8",
      "--generations", "2"], "3px"),
])
def test_strong_attacks_write_results_and_refuse_reruns(relu_ckpt, tmp_path, monkeypatch, args, label):
    from robench.results import read_result

    root, ck = relu_ckpt
    monkeypatch.chdir(tmp_path)
    base = ["attack", "--images", "3", "--repeats", "2", "--checkpoint", str(ck), "--data-dir", str(root), "--quiet"]
    r = _invoke(*base, *args)
    assert r.exit_code == 0, r.output
    (path,) = (tmp_path / "attacks").glob("*.json")
    res = read_result(path)
    assert res["status"] == "complete" and label in [s["label"] for s in res["settings"]]
    records = [rec for s in res["settings"] for rep in s["repeats"] for rec in rep["images"]]
    if "sparse_rs" in args or "pixel" in args:
        assert all(len(rec["pixels"]) <= 3 for rec in records if "pixels" in rec)
    if "ensemble" in args:
        assert all("broken_by" in rec and rec["success"] == (rec["broken_by"] is not None) for rec in records)
    # names never collide across attacks and variants; a rerun shows the stored result
    again = _invoke(*base, *args)
    assert again.exit_code == 0 and "stored" in again.output


def _one_error_line(r, msg):
    lines = [line for line in r.output.splitlines() if line.strip() and "warning" not in line]
    return len(lines) == 1 and msg in lines[0] and "Traceback" not in r.output


def test_unwritable_outputs_fail_in_one_line_before_any_compute(relu_ckpt, fake_data, tmp_path, monkeypatch):
    import robench.attacks.runner as runner_mod
    import robench.train as train_mod

    root, ck = relu_ckpt
    monkeypatch.setattr(runner_mod, "load_split", lambda *a, **k: pytest.fail("data loaded before the output was checked"))
    monkeypatch.setattr(train_mod, "load_split", lambda *a, **k: pytest.fail("data loaded before the output was checked"))
    folder = tmp_path / "in-the-way.json"
    folder.mkdir()
    r = _invoke("attack", "--images", "2", "--checkpoint", str(ck), "--data-dir", str(root), "--out", str(folder), "--quiet")
    assert r.exit_code == 1 and _one_error_line(r, "it is a folder"), r.output
    afile = tmp_path / "afile"
    afile.write_text("x")
    r = _invoke("attack", "--images", "2", "--checkpoint", str(ck), "--data-dir", str(root), "--out",
                str(afile / "r.json"), "--quiet")
    assert r.exit_code == 1 and _one_error_line(r, f"cannot write result {afile / 'r.json'}"), r.output
    r = _invoke("train", "--model", "mlp", "--dataset", "mnist", "--data-dir", str(fake_data), "--out",
                str(afile / "x.pt"), "--quiet")
    assert r.exit_code == 1 and _one_error_line(r, "cannot write checkpoint"), r.output


def test_a_full_disk_is_one_line_and_keeps_the_old_file(relu_ckpt, tmp_path, monkeypatch):
    import errno
    import os

    import robench.storage as storage

    root, ck = relu_ckpt
    out = tmp_path / "r.json"
    out.write_text("old")

    def full(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(storage.os, "fsync", full)
    r = _invoke("attack", "--attack", "fgsm", "--images", "2", "--checkpoint", str(ck), "--data-dir", str(root),
                "--out", str(out), "--quiet", "--force")
    assert r.exit_code == 1 and _one_error_line(r, "No space left on device"), r.output
    left = [p.name for p in tmp_path.iterdir() if p.name != ".robench.lock"]  # the folder's lock guard stays (locks.py)
    assert out.read_text() == "old" and left == ["r.json"]  # no temp files left


@pytest.mark.parametrize("command", [["report"], ["stats", "--results", "attacks/seeds"]])
def test_report_and_stats_out_in_the_way_is_one_line(tmp_path, command):
    from pathlib import Path

    results = Path(__file__).parent.parent / "attacks"
    args = [a.replace("attacks", str(results)) if a.startswith("attacks") else a for a in command]
    if command == ["report"]:
        args += ["--results", str(results)]
    r = _invoke(*args, "--format", "markdown", "--out", str(tmp_path))
    assert r.exit_code == 1 and _one_error_line(r, f"cannot write {tmp_path}"), r.output


def _finished(fn, seconds=120):
    """fn() run in a thread; the test fails (instead of hanging) when it blocks."""
    import threading

    found = []
    t = threading.Thread(target=lambda: found.append(fn()), daemon=True)
    t.start()
    t.join(seconds)
    assert found, "blocked"
    return found[0]


def test_crafted_files_in_a_results_folder_are_one_line_and_never_hang(relu_ckpt, tmp_path):
    import os

    import shutil

    root, ck = relu_ckpt
    made = tmp_path / "res"
    r = _invoke("attack", "--attack", "pixel", "--pixels", "1", "--population", "8", "--generations", "1", "--images", "3",
                "--repeats", "1", "--checkpoint", str(ck), "--data-dir", str(root), "--out", str(made / "a.json"), "--quiet")
    assert r.exit_code == 0, r.output
    baseline = tmp_path / "baseline.yaml"
    assert _invoke("check", "--baseline", str(baseline), "--results", str(made), "--update").exit_code == 0
    for name, args in (("report", ["report", "--results"]), ("check", ["check", "--baseline", str(baseline), "--results"]),
                       ("verify", ["verify", "--data-dir", str(root), "--device", "cpu"])):
        folder = shutil.copytree(made, tmp_path / name)  # a folder each: a warning's text is shown once per process
        os.mkfifo(folder / "zz.json")
        r = _finished(lambda: _invoke(*args, str(folder)))
        assert r.exit_code == 0 and "zz.json" in r.output and "not regular files" in r.output, r.output
    r = _finished(lambda: _invoke("verify", str(folder / "zz.json"), "--data-dir", str(root), "--device", "cpu"))
    assert r.exit_code == 2 and _one_error_line(r, "is a FIFO, not a regular file"), r.output  # named, not found in a folder
    (made / "deep.json").write_text("[" * 200_000 + "]" * 200_000)
    for args in (["check", "--baseline", str(baseline), "--results", str(made)],
                 ["verify", str(made / "deep.json"), "--data-dir", str(root), "--device", "cpu"]):
        r = _invoke(*args)
        assert r.exit_code == 2 and _one_error_line(r, "nested too deeply"), r.output


def test_a_factory_without_trainable_parameters_or_a_batch_beyond_the_data_is_one_line_in_train(fake_data, tmp_path):
    r = _invoke("train", "--model", "tests.factories:noparams", "--dataset", "mnist", "--epochs", "1",
                "--data-dir", str(fake_data), "--out", str(tmp_path / "x.pt"), "--quiet", "--device", "cpu")
    assert r.exit_code == 1 and _one_error_line(r, "has no trainable parameters"), r.output
    assert not (tmp_path / "x.pt").exists()
    r = _invoke("train", "--model", "mlp", "--dataset", "mnist", "--epochs", "1", "--batch-size", "100000000",
                "--data-dir", str(fake_data), "--out", str(tmp_path / "x.pt"), "--quiet", "--device", "cpu")
    assert r.exit_code == 1 and _one_error_line(r, "batch_size 100000000 is larger than the"), r.output


def test_a_population_beyond_the_machine_is_one_line_before_allocating(relu_ckpt, tmp_path):
    root, ck = relu_ckpt
    r = _invoke("attack", "--attack", "pixel", "--population", "100000000000", "--images", "2", "--repeats", "1",
                "--checkpoint", str(ck), "--data-dir", str(root), "--out", str(tmp_path / "o.json"), "--quiet")
    assert r.exit_code == 1 and _one_error_line(r, "lower --population"), r.output


def test_out_of_memory_in_attack_and_train_is_one_line(relu_ckpt, fake_data, tmp_path, monkeypatch):
    import torch

    import robench.attacks.runner
    import robench.train

    def cpu_oom(*args, **kwargs):
        raise RuntimeError("[enforce fail at alloc_cpu.cpp:127] err == 0. DefaultCPUAllocator: can't allocate memory: "
                           "you tried to allocate 107374182400 bytes. Error code 12 (Cannot allocate memory)")

    def gpu_oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 100.00 GiB")

    root, ck = relu_ckpt
    monkeypatch.setattr(robench.attacks.runner, "judge", gpu_oom)
    r = _invoke("attack", "--attack", "fgsm", "--images", "2", "--repeats", "1", "--checkpoint", str(ck),
                "--data-dir", str(root), "--out", str(tmp_path / "o.json"), "--quiet")
    assert r.exit_code == 1 and _one_error_line(r, "out of memory (CUDA out of memory. Tried to allocate 100.00 GiB)")
    monkeypatch.setattr(robench.train.F, "cross_entropy", cpu_oom)
    r = _invoke("train", "--model", "mlp", "--dataset", "mnist", "--epochs", "1", "--batch-size", "32",
                "--data-dir", str(fake_data), "--out", str(tmp_path / "x.pt"), "--quiet", "--device", "cpu")
    assert r.exit_code == 1 and _one_error_line(r, "out of memory (can't allocate memory: you tried to allocate"), r.output
