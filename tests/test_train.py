import hashlib
import json

import pytest
import torch

from robench.checkpoints import list_checkpoints, load_checkpoint, read_history
from robench.config import TrainConfig, config_from_dict, config_to_dict
from robench.errors import CheckpointError
from robench.train import resume_path, train


def _cfg(**kw):
    base = dict(model="lenet5", act="sapl", dataset="cifar10", epochs=4, batch_size=32, lr=0.05,
                act_options={"compiled": False})
    return TrainConfig(**(base | kw))


def test_short_training_lowers_the_loss_and_writes_checkpoint(fake_data, tmp_path):
    out = tmp_path / "ck" / "m.pt"
    result = train(_cfg(), out=out, data_dir=fake_data, device="cpu")
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0] * 0.8
    meta = json.loads(out.with_suffix(".json").read_text())
    assert meta["clean_test_accuracy"] == result.test_accuracy
    assert meta["provenance"]["data_official"] is False and len(meta["provenance"]["data_sha256"]) == 64
    assert "root" not in meta["provenance"] and str(fake_data) not in out.with_suffix(".json").read_text()
    assert meta["pt_sha256"] == hashlib.sha256(out.read_bytes()).hexdigest()
    assert "history" not in meta  # beside the sidecar, in the compact file it names
    meta |= read_history(out, meta)
    assert len(meta["history"]) == 4
    # the S-APL state is recorded per epoch and starts at ReLU
    first_layer = next(iter(meta["activations_init"]))
    assert meta["activations_init"][first_layer]["a_pos"][0] == [1.0]
    assert meta["history"][-1]["activations"][first_layer]["a_pos"] != meta["activations_init"][first_layer]["a_pos"]
    assert meta["versions"]["torch"] == torch.__version__.split("+")[0] or meta["versions"]["torch"].startswith(torch.__version__.split("+")[0])
    assert not resume_path(out).exists()
    ck = load_checkpoint(out, model="lenet5", act="sapl", dataset="cifar10")
    assert not ck.model.training


def test_finished_checkpoint_is_not_overwritten_without_force(fake_data, tmp_path):
    out = tmp_path / "m.pt"
    train(_cfg(epochs=1), out=out, data_dir=fake_data, device="cpu")
    before = out.read_bytes()
    again = train(_cfg(epochs=1), out=out, data_dir=fake_data, device="cpu")  # the same config: shown, not rerun
    assert again.stored and again.test_accuracy == json.loads(out.with_suffix(".json").read_text())["clean_test_accuracy"]
    with pytest.raises(CheckpointError, match="another seed; pass --force"):
        train(_cfg(epochs=1, seed=5), out=out, data_dir=fake_data, device="cpu")
    assert out.read_bytes() == before
    train(_cfg(epochs=1, seed=5), out=out, data_dir=fake_data, device="cpu", force=True)
    assert out.read_bytes() != before


def test_crash_between_sidecar_and_weights_leaves_a_pair_that_is_refused(fake_data, tmp_path, monkeypatch):
    """A retrain over a finished checkpoint dies after the new sidecar is written but before the
    new .pt: the old weights must not load under the new run's metadata."""
    import robench.checkpoints as ck

    out = tmp_path / "m.pt"
    train(_cfg(epochs=1), out=out, data_dir=fake_data, device="cpu")
    old_pt, old_side = out.read_bytes(), out.with_suffix(".json").read_text()
    real_write = ck.atomic_write_bytes

    def die_on_weights(path, data):
        if str(path).endswith(".pt"):
            raise KeyboardInterrupt  # the process is killed between the two writes
        real_write(path, data)

    monkeypatch.setattr(ck, "atomic_write_bytes", die_on_weights)
    with pytest.raises(KeyboardInterrupt):
        train(_cfg(epochs=1, seed=5), out=out, data_dir=fake_data, device="cpu", force=True)
    assert out.read_bytes() == old_pt and out.with_suffix(".json").read_text() != old_side
    with pytest.raises(CheckpointError, match="does not match its checkpoint m.pt .sha256."):
        load_checkpoint(out)
    assert "does not match" in list_checkpoints(tmp_path)[0]["error"]
    monkeypatch.setattr(ck, "atomic_write_bytes", real_write)
    # the run's resume file survived the crash: the same command finishes the pair without retraining
    again = train(_cfg(epochs=1, seed=5), out=out, data_dir=fake_data, device="cpu")
    assert again.resumed_from_epoch == 1
    assert load_checkpoint(out).meta["train_config"]["seed"] == 5


def test_same_seed_same_weights(fake_data, tmp_path):
    a = train(_cfg(epochs=1, augment=True), out=tmp_path / "a.pt", data_dir=fake_data, device="cpu")
    b = train(_cfg(epochs=1, augment=True), out=tmp_path / "b.pt", data_dir=fake_data, device="cpu")
    sa = load_checkpoint(a.path).model.state_dict()
    sb = load_checkpoint(b.path).model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def _interrupt_then_resume(monkeypatch, cfg, out, data_dir, step, call):
    """Train ``cfg`` to ``out``, killed at the ``call``-th call of ``robench.train.<step>``, then run
    the same command again; returns the second run's result."""
    import robench.train as tr

    calls = {"n": 0}
    real = getattr(tr, step)

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == call:
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tr, step, flaky)
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, data_dir=data_dir, device="cpu")
    assert resume_path(out).exists() and not out.exists()
    monkeypatch.setattr(tr, step, real)
    return train(cfg, out=out, data_dir=data_dir, device="cpu")


def test_interrupted_training_resumes_to_the_same_result(fake_data, tmp_path, monkeypatch):
    cfg = _cfg(model="mlp", act="relu", dataset="mnist", epochs=3, act_options={})
    full = train(cfg, out=tmp_path / "full.pt", data_dir=fake_data, device="cpu")

    out = tmp_path / "part.pt"
    resumed = _interrupt_then_resume(monkeypatch, cfg, out, fake_data, "accuracy", 2)  # dies in epoch 2's evaluation
    assert resumed.resumed_from_epoch == 1
    assert [h["train_loss"] for h in resumed.history] == [h["train_loss"] for h in full.history]
    sa, sb = load_checkpoint(full.path).model.state_dict(), load_checkpoint(out).model.state_dict()
    assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_config_validation():
    with pytest.raises(ValueError, match="epochs"):
        TrainConfig(epochs=0)
    with pytest.raises(ValueError, match="batch_size"):
        TrainConfig(batch_size=1)
    assert TrainConfig(model="mlp", act="sapl", dataset="mnist", augment=True, seed=3).run_name == "mlp-sapl-mnist-aug-s3"


def test_train_images_uses_only_the_first_n_and_says_so_in_the_name(fake_data, tmp_path, monkeypatch):
    """A toy run on a subset (bench/gpu_paper.sh --toy): images past the first N never reach the model."""
    import robench.train as train_module

    cfg = _cfg(epochs=1, train_images=64)
    assert cfg.run_name == "lenet5-sapl-cifar10-s0-n64"
    first = train(cfg, out=tmp_path / "a.pt", data_dir=fake_data, device="cpu")
    real = train_module.load_split

    def scrambled(name, is_train, *args):
        split, prov = real(name, is_train, *args)
        if is_train:
            split.images[64:] = 255 - split.images[64:]
        return split, prov

    monkeypatch.setattr(train_module, "load_split", scrambled)
    second = train(cfg, out=tmp_path / "b.pt", data_dir=fake_data, device="cpu")
    assert first.history[0]["train_loss"] == second.history[0]["train_loss"]
    assert json.loads((tmp_path / "a.json").read_text())["train_config"]["train_images"] == 64
    full = train(_cfg(epochs=1), out=tmp_path / "c.pt", data_dir=fake_data, device="cpu")
    assert full.history[0]["train_loss"] != first.history[0]["train_loss"]
    with pytest.raises(ValueError, match="train_images"):
        TrainConfig(train_images=16, batch_size=32)
    # a full run's sidecar config is what it was before the field existed: shipped checkpoints still match
    assert "train_images" not in config_to_dict(_cfg())


# --- adversarial training ---------------------------------------------------------------------


def _adv(**kw):
    base = dict(model="mlp", act="relu", dataset="mnist", epochs=2, batch_size=32, adv="pgd", adv_eps=0.1,
                adv_steps=3, act_options={})
    return _cfg(**(base | kw))


def test_adversarial_defaults_follow_the_spec_and_name_the_run():
    mnist = TrainConfig(model="mlp", act="sapl", dataset="mnist", adv="pgd")
    assert (mnist.adv_eps, mnist.adv_steps, mnist.adv_step_size) == (0.3, 40, 0.01)
    cifar = TrainConfig(adv="pgd")
    assert (cifar.adv_eps, cifar.adv_steps) == (8 / 255, 10) and cifar.adv_step_size == pytest.approx(2 / 255)
    study = TrainConfig(model="mlp", act="sapl", dataset="mnist", adv="pgd", adv_eps=0.1, adv_steps=10)
    assert study.adv_step_size == pytest.approx(0.025) and study.run_name == "mlp-sapl-mnist-pgd0.1k10-s0"
    fast = TrainConfig(adv="fgsm-rs", adv_eps=8 / 255)
    assert (fast.adv_steps, fast.adv_step_size) == (1, 1.25 * 8 / 255) and fast.run_name == "lenet5-relu-cifar10-fgsmrs8of255-s0"
    trades = TrainConfig(adv="trades", adv_norm="l2", adv_eps=0.5, trades_beta=3)
    assert trades.run_name == "lenet5-relu-cifar10-trades0.5l2k10b3-s0"
    # a stored config (defaults filled) rebuilds to itself, and standard training stores no adversarial field
    assert config_from_dict(TrainConfig, config_to_dict(study)) == study
    assert not {"adv", "adv_eps", "adv_steps", "adv_step_size", "adv_norm", "trades_beta"} & set(config_to_dict(TrainConfig()))
    # a sidecar stored before these fields existed reads as standard training and compares equal to itself
    from pathlib import Path

    stored = json.loads(Path("checkpoints/mlp-relu-mnist-s0.json").read_text())["train_config"]
    assert "adv" not in stored
    old = config_from_dict(TrainConfig, stored)
    assert old.adv == "none" and old.run_name == "mlp-relu-mnist-s0"
    assert {k: v for k, v in config_to_dict(old).items() if k in stored} == stored
    assert not set(config_to_dict(old)) & {"adv", "adv_eps", "adv_steps", "adv_step_size", "adv_norm", "trades_beta"}


@pytest.mark.parametrize(("kw", "message"), [
    ({"adv": "free"}, "adv must be one of none, pgd, trades, fgsm-rs"),
    ({"adv": "pgd", "adv_norm": "l1"}, "adv_norm must be one of linf, l2"),
    ({"adv_eps": 0.1}, "need adv"),
    ({"adv": "pgd", "trades_beta": 3.0}, "trades_beta applies to adv=trades"),
    ({"adv": "fgsm-rs", "adv_steps": 5}, "fgsm-rs takes one step"),
    ({"adv": "pgd", "adv_eps": -0.1}, "must be >= 0"),
])
def test_adversarial_config_validation(kw, message):
    with pytest.raises(ValueError, match=message):
        TrainConfig(**kw)


def test_adversarial_training_keeps_the_best_robust_epoch_and_the_last(fake_data, tmp_path):
    out = tmp_path / "m.pt"
    result = train(_adv(epochs=3), out=out, data_dir=fake_data, device="cpu")
    meta = json.loads(out.with_suffix(".json").read_text())
    last = json.loads((tmp_path / "m-last.json").read_text())
    assert "history" not in meta and "history" not in last  # beside each sidecar, in the file it names
    meta |= read_history(out, meta)
    last |= read_history(tmp_path / "m-last.pt", last)
    assert len(last["history"]) == 3
    robust = [h["robust_accuracy"] for h in meta["history"]]
    assert len(robust) == 3 and all(0 <= r <= h["subset_clean_accuracy"] for r, h in zip(robust, meta["history"]))
    adv = meta["adversarial"]
    assert adv["method"] == "pgd" and adv["eps"] == 0.1 and adv["steps"] == 3 and adv["step_size"] == pytest.approx(0.25 / 3)
    assert adv["inner_attack_mode"] == "eval" and adv["check"]["steps"] == 10
    assert adv["best_epoch"] == 1 + robust.index(max(robust)) == adv["kept_epoch"] and last["adversarial"]["kept_epoch"] == 3
    assert meta["robust_accuracy"] == max(robust) == result.robust_accuracy
    assert meta["clean_test_accuracy"] == meta["history"][adv["best_epoch"] - 1]["test_accuracy"]
    assert last["clean_test_accuracy"] == meta["history"][-1]["test_accuracy"]
    assert meta["train_config"]["adv"] == "pgd" and not resume_path(out).exists()
    weights = load_checkpoint(out).model.state_dict()
    last_weights = load_checkpoint(tmp_path / "m-last.pt").model.state_dict()
    assert all(torch.equal(weights[k], last_weights[k]) for k in weights) == (adv["best_epoch"] == 3)
    # the robust accuracy stored for the kept epoch is the one its weights give on the held-out subset
    from robench.adversarial import eval_threat, robust_accuracy
    from robench.data import load_split
    from robench.train import EVAL_SEED, held_out

    images, labels = held_out(load_split("mnist", False, fake_data)[0], torch.device("cpu"))
    again = robust_accuracy(load_checkpoint(out).model, images, labels, eval_threat(0.1, "linf"),
                            torch.Generator().manual_seed(EVAL_SEED))
    assert again == (meta["history"][adv["best_epoch"] - 1]["subset_clean_accuracy"], meta["robust_accuracy"])


def test_adversarial_training_changes_the_weights_standard_training_would_give(fake_data, tmp_path):
    plain = train(_adv(epochs=1, adv="none", adv_eps=0.0, adv_steps=0), out=tmp_path / "a.pt", data_dir=fake_data,
                  device="cpu")
    robust = train(_adv(epochs=1), out=tmp_path / "b.pt", data_dir=fake_data, device="cpu")
    assert plain.robust_accuracy is None and "adversarial" not in json.loads((tmp_path / "a.json").read_text())
    assert plain.history[0]["train_loss"] < robust.history[0]["train_loss"]  # the adversarial batch is harder


def test_catastrophic_overfitting_warns_flags_and_keeps_the_best_epoch(fake_data, tmp_path, monkeypatch):
    import robench.train as tr

    script = iter([(0.9, 0.6), (0.9, 0.62), (0.95, 0.05)])  # held-out (clean, robust) per epoch: a collapse at 3
    monkeypatch.setattr(tr, "robust_accuracy", lambda *a, **k: next(script))
    out = tmp_path / "m.pt"
    with pytest.warns(UserWarning, match="catastrophic overfitting at epoch 3: .* fell from 0.620 to 0.050; "
                                         "the checkpoint keeps epoch 2"):
        train(_adv(adv="fgsm-rs", adv_steps=0, epochs=3), out=out, data_dir=fake_data, device="cpu")
    meta = load_checkpoint(out).meta
    assert meta["adversarial"]["catastrophic_overfitting_epoch"] == 3
    assert meta["adversarial"]["kept_epoch"] == 2 and meta["robust_accuracy"] == 0.62
    rows = {r["file"]: r for r in list_checkpoints(tmp_path)}
    assert rows["m.pt"]["training"] == "fgsm-rs linf 0.1 k1 @2 !CO@3"
    assert rows["m-last.pt"]["training"] == "fgsm-rs linf 0.1 k1 @3 !CO@3"


def test_interrupted_adversarial_training_resumes_bit_identical(fake_data, tmp_path, monkeypatch):
    cfg = _adv(adv="trades", epochs=3)
    full = train(cfg, out=tmp_path / "full.pt", data_dir=fake_data, device="cpu")
    # killed in epoch 3's held-out check: epochs 1-2 (and the best so far) are in the resume file
    resumed = _interrupt_then_resume(monkeypatch, cfg, tmp_path / "part.pt", fake_data, "robust_accuracy", 3)
    assert resumed.resumed_from_epoch == 2
    strip = ("epoch_s",)
    assert ([{k: v for k, v in h.items() if k not in strip} for h in resumed.history]
            == [{k: v for k, v in h.items() if k not in strip} for h in full.history])
    for name in ("full", "part"):
        assert (tmp_path / f"{name}-last.pt").exists()
    for a, b in (("full.pt", "part.pt"), ("full-last.pt", "part-last.pt")):
        sa, sb = load_checkpoint(tmp_path / a).model.state_dict(), load_checkpoint(tmp_path / b).model.state_dict()
        assert all(torch.equal(sa[k], sb[k]) for k in sa)


def test_train_cli_adversarial_flags_and_models_listing(fake_data, tmp_path, monkeypatch):
    from typer.testing import CliRunner

    from robench.cli import app

    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    args = ["train", "--model", "mlp", "--dataset", "mnist", "--epochs", "1", "--batch-size", "32", "--data-dir",
            str(fake_data), "--device", "cpu", "--quiet", "--adv", "pgd", "--adv-eps", "26/255", "--adv-steps", "2"]
    done = runner.invoke(app, args)
    assert done.exit_code == 0, done.output
    assert "held-out PGD-10 accuracy" in done.output
    meta = json.loads((tmp_path / "checkpoints" / "mlp-relu-mnist-pgd26of255k2-s0.json").read_text())
    assert meta["train_config"]["adv_eps"] == pytest.approx(26 / 255) and meta["adversarial"]["steps"] == 2
    again = runner.invoke(app, args)  # the defaults filled in compare equal to the stored config: nothing reruns
    assert again.exit_code == 0 and "stored:" in again.output, again.output
    listing = runner.invoke(app, ["models"])
    assert listing.exit_code == 0 and "pgd linf 26/255 k2 @1" in listing.output
    for bad, message in ((["--adv-eps", "x/2"], "--adv-eps takes one"), (["--adv-step-size", "0.1,0.2"], "--adv-step-size takes one"),
                         (["--adv", "free"], "adv must be one of")):
        failed = runner.invoke(app, args[:-6] + ["--adv", "pgd", "--adv-eps", "0.1"] + bad)
        assert failed.exit_code == 1 and failed.output.count("\n") == 1 and message in failed.output, failed.output
