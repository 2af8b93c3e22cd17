import gzip
import hashlib
import json
import pickle
import shutil
from pathlib import Path

import pytest
import torch

from robench.checkpoints import (history_path, list_checkpoints, load_checkpoint, read_history, read_meta, save_checkpoint,
                                sidecar_path)
from robench.errors import CheckpointError
from robench.models import ModelArgs, build_model_from_args

REPO = Path(__file__).resolve().parents[1]
ARGS = ModelArgs("lenet5", "sapl", 10, 3, 32, (0.5,), (0.25,), {"compiled": False})


@pytest.fixture
def ckpt(tmp_path):
    torch.manual_seed(0)
    model = build_model_from_args(ARGS)
    path = tmp_path / "lenet5-sapl-cifar10-s0.pt"
    save_checkpoint(path, model, ARGS, "cifar10", {"clean_test_accuracy": 0.5})
    return path, model


def test_round_trip(ckpt):
    path, model = ckpt
    loaded = load_checkpoint(path, model="lenet5", act="sapl", dataset="cifar10")
    assert loaded.args == ARGS and loaded.meta["clean_test_accuracy"] == 0.5
    assert loaded.meta["pt_sha256"] == loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    x = torch.rand(4, 3, 32, 32)
    torch.testing.assert_close(loaded.model(x), model.eval()(x))


@pytest.mark.parametrize("kw,msg", [({"act": "relu"}, "act=sapl, not relu"), ({"model": "mlp"}, "model=lenet5, not mlp"),
                                    ({"dataset": "mnist"}, "dataset=cifar10, not mnist")])
def test_mismatch_is_a_clear_error(ckpt, kw, msg):
    with pytest.raises(CheckpointError, match=msg):
        load_checkpoint(ckpt[0], **kw)


def test_wrong_shapes_are_a_clear_error(ckpt, tmp_path):
    payload = torch.load(ckpt[0], weights_only=True)
    payload["model_args"]["num_classes"] = 100
    bad = tmp_path / "bad.pt"
    torch.save(payload, bad)
    with pytest.raises(CheckpointError, match="weights do not fit"):
        load_checkpoint(bad)


def test_corrupt_and_foreign_files(tmp_path, ckpt):
    truncated = tmp_path / "trunc.pt"
    truncated.write_bytes(ckpt[0].read_bytes()[:1000])
    with pytest.raises(CheckpointError, match="corrupt"):
        load_checkpoint(truncated)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"hello world")
    with pytest.raises(CheckpointError):
        load_checkpoint(garbage)
    other = tmp_path / "other.pt"
    torch.save({"weights": [1, 2, 3], "epoch": 4}, other)
    with pytest.raises(CheckpointError, match="not a robench checkpoint"):
        load_checkpoint(other)
    foreign = tmp_path / "foreign.pt"  # a plain state_dict of some other network
    torch.save({"weights": torch.zeros(3)}, foreign)
    with pytest.raises(CheckpointError, match="plain state_dict: name the model"):
        load_checkpoint(foreign)
    with pytest.raises(CheckpointError, match="weights do not fit lenet5/relu .its body.: missing key '0.0.weight'"):
        load_checkpoint(foreign, model="lenet5", act="relu", dataset="cifar10")
    with pytest.raises(CheckpointError, match="not found"):
        load_checkpoint(tmp_path / "missing.pt")


class _Evil:
    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def test_malicious_pickle_runs_no_code(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"format": "robench-checkpoint", "x": _Evil(str(marker))}, evil, pickle_module=pickle)
    with pytest.raises(CheckpointError, match="not a robench checkpoint"):
        load_checkpoint(evil)
    assert not marker.exists()
    raw = tmp_path / "raw.pt"
    raw.write_bytes(pickle.dumps(_Evil(str(marker))))
    with pytest.raises(CheckpointError):
        load_checkpoint(raw)
    assert not marker.exists()


def test_list_checkpoints(ckpt, tmp_path):
    (tmp_path / "junk.pt").write_bytes(b"junk")
    rows = {r["file"]: r for r in list_checkpoints(tmp_path)}
    assert rows["lenet5-sapl-cifar10-s0.pt"]["act"] == "sapl"
    assert "error" in rows["junk.pt"]


def test_shipped_checkpoints_load():
    from pathlib import Path

    from robench.checkpoints import checkpoint_files

    # finished runs only, not a training's .resume.pt, nor the -last twin a local adversarial run keeps (git-ignored)
    shipped = [p for p in checkpoint_files(Path("checkpoints")) if not p.stem.endswith("-last")]
    if not shipped:
        pytest.skip("no shipped checkpoints in this checkout")
    for path in shipped:
        ck = load_checkpoint(path)
        if "adversarial" in ck.meta:  # robust training costs clean accuracy (LeNet-5/CIFAR-10 FGSM-RS: about 51 %)
            assert ck.meta["clean_test_accuracy"] > 0.45 and ck.meta["robust_accuracy"] > 0.2, path
            assert ck.meta["adversarial"]["kept_epoch"] == ck.meta["adversarial"]["best_epoch"], path  # not a -last twin
        else:
            assert ck.meta["clean_test_accuracy"] > 0.6, path
        assert path.stat().st_size < 2 * 1024 * 1024


def _relu_beside_sapl(ckpt, tmp_path):
    """The sapl checkpoint's .pt replaced by a relu model's: its sidecar now describes other weights."""
    path, _ = ckpt
    relu_args = ModelArgs(**{**ARGS.__dict__, "act": "relu", "act_options": {}})
    other = tmp_path / "relu" / "lenet5-relu-cifar10-s0.pt"
    save_checkpoint(other, build_model_from_args(relu_args), relu_args, "cifar10", {"clean_test_accuracy": 0.9})
    shutil.copyfile(other, path)
    return path


def test_relu_weights_beside_a_sapl_sidecar_are_refused(ckpt, tmp_path):
    path = _relu_beside_sapl(ckpt, tmp_path)
    with pytest.raises(CheckpointError, match=r"sidecar lenet5-sapl-cifar10-s0.json does not match its checkpoint .*sha256.*--force"):
        load_checkpoint(path)
    with pytest.raises(CheckpointError, match="does not match"):
        read_meta(path)
    row = {r["file"]: r for r in list_checkpoints(path.parent)}[path.name]
    assert "does not match" in row["error"] and "act" not in row


def test_sidecar_without_pt_sha256_is_still_checked_against_the_payload(ckpt, tmp_path):
    """A sidecar from before pt_sha256 is read, but its model must still be the payload's."""
    path, _ = ckpt
    side = sidecar_path(path)
    legacy = json.loads(side.read_text())
    del legacy["pt_sha256"]
    side.write_text(json.dumps(legacy))
    assert load_checkpoint(path).meta["clean_test_accuracy"] == 0.5
    _relu_beside_sapl(ckpt, tmp_path)
    side.write_text(json.dumps(legacy))
    with pytest.raises(CheckpointError, match=r"does not match .*\(model_args\)"):
        load_checkpoint(path)


def test_meta_cannot_override_the_binding(tmp_path):
    path = tmp_path / "m.pt"
    save_checkpoint(path, build_model_from_args(ARGS), ARGS, "cifar10", {"pt_sha256": "0" * 64, "dataset": "mnist"})
    meta = load_checkpoint(path).meta
    assert meta["dataset"] == "cifar10" and meta["pt_sha256"] == hashlib.sha256(path.read_bytes()).hexdigest()


def test_mismatched_pair_is_an_error_row_in_models_and_left_out_of_stats(ckpt, tmp_path):
    from typer.testing import CliRunner

    from robench.cli import app
    from robench.stats import checkpoint_groups

    path = _relu_beside_sapl(ckpt, tmp_path)
    r = CliRunner().invoke(app, ["models", "--dir", str(path.parent)])
    assert r.exit_code == 0 and "does not match" in " ".join(r.output.split()), r.output
    groups, notes = checkpoint_groups(path.parent)
    assert groups == [] and any(path.name in n and "does not match" in n for n in notes)


@pytest.mark.parametrize("key,value", [("body.0.0.weight", float("nan")), ("body.0.1.running_var", float("inf"))])
def test_non_finite_weights_are_refused(tmp_path, key, value):
    """A conv weight (a parameter) or a BatchNorm running stat (a buffer), one value each."""
    model = build_model_from_args(ARGS)
    with torch.no_grad():
        model.state_dict()[key].view(-1)[0] = value  # state_dict tensors share the model's storage
    path = tmp_path / "nan.pt"
    save_checkpoint(path, model, ARGS, "cifar10", {})
    with pytest.raises(CheckpointError, match=rf"nan.pt has non-finite weights \(first: {key}\)"):
        load_checkpoint(path)


def _history_meta() -> dict:
    epochs = [{"epoch": e, "train_loss": 1.0 / e, "activations": {"act1": {"a": [0.1 * e] * 6}}} for e in (1, 2)]
    return {"clean_test_accuracy": 0.5, "history": epochs, "activations_init": {"act1": {"a": [0.0] * 6}}}


def test_training_history_goes_beside_the_sidecar_compactly_and_deterministically(tmp_path):
    model = build_model_from_args(ARGS)
    meta = _history_meta()
    paths = [tmp_path / "a" / "m.pt", tmp_path / "b" / "m.pt"]
    for path in paths:
        path.parent.mkdir()
        save_checkpoint(path, model, ARGS, "cifar10", meta)
    side = read_meta(paths[0])
    assert "history" not in side and "activations_init" not in side
    assert side["history_file"]["file"] == history_path(paths[0]).name == "m.history.json.gz"
    assert history_path(paths[0]).read_bytes() == history_path(paths[1]).read_bytes()  # gzip mtime 0
    assert read_history(paths[0], side) == {k: meta[k] for k in ("history", "activations_init")}
    assert "\n " not in sidecar_path(paths[0]).read_text()  # compact


def test_read_history_accepts_the_inline_form_and_refuses_a_swapped_file(tmp_path):
    meta = _history_meta()
    assert read_history(tmp_path / "old.pt", meta)["history"] == meta["history"]  # an older sidecar
    assert read_history(tmp_path / "none.pt", {"clean_test_accuracy": 0.5}) == {}
    model = build_model_from_args(ARGS)
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, ARGS, "cifar10", meta)
    history_path(path).write_bytes(gzip.compress(b'{"history": []}', mtime=0))
    with pytest.raises(CheckpointError, match="does not match its sidecar"):
        read_history(path, read_meta(path))
    history_path(path).unlink()
    with pytest.raises(CheckpointError, match="is missing"):
        read_history(path, read_meta(path))


def test_every_shipped_sidecar_history_reads():
    for pt in sorted((REPO / "checkpoints").glob("*.pt")):
        meta = read_meta(pt)
        history = read_history(pt, meta)["history"]
        assert history[-1]["epoch"] == meta["train_config"]["epochs"], pt.name
