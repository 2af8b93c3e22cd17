import pickle

import pytest
import torch

from robench.checkpoints import list_checkpoints, load_checkpoint, save_checkpoint
from robench.errors import CheckpointError
from robench.models import ModelArgs, build_model_from_args

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
    torch.save({"weights": torch.zeros(3)}, other)
    with pytest.raises(CheckpointError, match="not a robench checkpoint"):
        load_checkpoint(other)
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

    shipped = checkpoint_files(Path("checkpoints"))  # finished runs only, not a training's .resume.pt
    if not shipped:
        pytest.skip("no shipped checkpoints in this checkout")
    for path in shipped:
        ck = load_checkpoint(path)
        assert ck.meta["clean_test_accuracy"] > 0.6, path
        assert path.stat().st_size < 2 * 1024 * 1024
