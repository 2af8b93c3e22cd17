import hashlib
import json

import pytest
import torch

from robench.checkpoints import list_checkpoints, load_checkpoint
from robench.config import TrainConfig, config_to_dict
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


def test_interrupted_training_resumes_to_the_same_result(fake_data, tmp_path, monkeypatch):
    cfg = _cfg(model="mlp", act="relu", dataset="mnist", epochs=3, act_options={})
    full = train(cfg, out=tmp_path / "full.pt", data_dir=fake_data, device="cpu")

    import robench.train as tr

    calls = {"n": 0}
    real = tr.accuracy

    def flaky(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 2:  # die during epoch 2's evaluation
            raise KeyboardInterrupt
        return real(*args, **kwargs)

    monkeypatch.setattr(tr, "accuracy", flaky)
    out = tmp_path / "part.pt"
    with pytest.raises(KeyboardInterrupt):
        train(cfg, out=out, data_dir=fake_data, device="cpu")
    assert resume_path(out).exists() and not out.exists()
    monkeypatch.setattr(tr, "accuracy", real)
    resumed = train(cfg, out=out, data_dir=fake_data, device="cpu")
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
