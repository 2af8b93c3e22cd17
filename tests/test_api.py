"""robench.evaluate / report / verify on a module robench did not build, against the CLI on the
same weights (as a robench checkpoint and as a plain state_dict)."""

import json

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import robench
from robench.checkpoints import load_checkpoint
from robench.cli import app
from robench.config import TrainConfig
from robench.data import dataset_info
from robench.errors import ConfigError, ResultError
from robench.train import train
from tests.conftest import write_fake_cifar
from tests.factories import tiny_cnn

FACTORY = "tests.factories:tiny_cnn"
ATTACKS = ["fgsm:0.03", ("pixel", {"pixels": 1, "population": 20, "generations": 3})]
CLI_ATTACKS = [["--attack", "fgsm", "--eps", "0.03"],
               ["--attack", "pixel", "--pixels", "1", "--population", "20", "--generations", "3"]]


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A fake CIFAR-10 root and a checkpoint of an outside factory trained by robench."""
    root = write_fake_cifar(tmp_path_factory.mktemp("data"), "cifar10")
    ck = tmp_path_factory.mktemp("ck") / "tiny.pt"
    train(TrainConfig(model=FACTORY, act="relu", epochs=6, batch_size=32), out=ck, data_dir=root, device="cpu")
    return root, ck


def user_module(ck):
    """The same weights in a module the user built: robench's body weights in tiny_cnn with nn.ReLU."""
    body = tiny_cnn(act=lambda channels: nn.ReLU(), num_classes=10, in_channels=3)
    body.load_state_dict(load_checkpoint(ck, model=FACTORY).model.body.state_dict())
    return body


def outcomes(result):
    return [[(r["index"], r["success"], r["adv_label"], round(r["abs_z"], 5)) for r in rep["images"]]
            for s in result["settings"] for rep in s["repeats"]]


def test_evaluate_equals_cli_on_the_same_weights(trained, tmp_path):
    root, ck = trained
    info = dataset_info("cifar10")
    ev = robench.evaluate(user_module(ck), dataset="cifar10", attacks=ATTACKS, images=8, seed=0, repeats=1,
                          out=tmp_path / "api" / "mine.json", mean=info.mean, std=info.std, data_dir=root, device="cpu")
    assert [p.name.split("--")[0] for p in ev.paths] == ["mine", "mine"]
    plain = tmp_path / "plain.pt"
    torch.save(user_module(ck).state_dict(), plain)
    runner = CliRunner()
    for i, args in enumerate(CLI_ATTACKS):
        api = ev.results[i]
        assert api["checkpoint"]["external"] == "module" and len(api["checkpoint"]["sha256"]) == 64
        for source, where in ((ck, "robench"), (plain, "plain")):
            out = tmp_path / f"{where}-{i}.json"
            r = runner.invoke(app, ["attack", "--model", FACTORY, "--act", "relu", "--checkpoint", str(source), *args,
                                    "--images", "8", "--repeats", "1", "--data-dir", str(root), "--out", str(out),
                                    "--quiet", "--device", "cpu"])
            assert r.exit_code == 0, r.output
            cli = json.loads(out.read_text())
            assert cli["image_set"]["indices"] == api["image_set"]["indices"]
            assert outcomes(cli) == outcomes(api), where
            assert cli["checkpoint"].get("external") == ("state_dict" if where == "plain" else None)
    assert sum(r["successes"] for s in ev.results[0]["settings"] for r in s["repeats"]) > 0  # the check can fail


def test_evaluate_is_stored_resumable_and_verifiable(trained, tmp_path):
    root, ck = trained
    info = dataset_info("cifar10")
    kwargs = dict(dataset="cifar10", attacks="fgsm:0.02,0.04", images=6, repeats=1, out=tmp_path / "r",
                  mean=info.mean, std=info.std, data_dir=root, device="cpu")
    module = user_module(ck).train()
    first = robench.evaluate(module, **kwargs)
    assert module.training  # its mode is given back
    stamp = first.paths[0].stat().st_mtime_ns
    again = robench.evaluate(module, **kwargs)
    assert again.paths == first.paths and first.paths[0].stat().st_mtime_ns == stamp  # shown, not recomputed
    assert [row["setting"] for row in again.rows()] == ["eps=0.02", "eps=0.04"] and "eps=0.04" in str(again)

    assert all(v.ok for v in robench.verify(first.paths, model=module, mean=info.mean, std=info.std, data_dir=root,
                                            device="cpu"))
    changed = user_module(ck)
    with torch.no_grad():
        changed[-1].bias += 1.0
    (v,) = robench.verify(first.paths, model=changed, mean=info.mean, std=info.std, data_dir=root, device="cpu")
    assert not v.ok and "fingerprint" in str(v.mismatches[0])
    r = CliRunner().invoke(app, ["verify", str(first.paths[0]), "--data-dir", str(root), "--device", "cpu"])
    assert r.exit_code == 2 and "robench.verify" in r.output

    rep = robench.report(tmp_path / "r", format="json")
    assert "TinyNet" not in rep and '"Sequential"' in rep  # the row is labelled by the module's class
    with pytest.raises(ResultError, match="different"):  # another run's file is not clobbered
        robench.evaluate(module, **kwargs | {"seed": 1, "out": first.paths[0]})


@pytest.mark.parametrize("model,kwargs,msg", [
    (3, {}, "takes a torch.nn.Module"),
    (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 7)), {}, "not (2, 10) logits"),
    (nn.Sequential(nn.Flatten(), nn.Linear(5, 10)), {}, "fails on a batch of shape (2, 3, 32, 32)"),
    (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), {"mean": (0.5,)}, "both mean and std"),
    (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), {"attacks": ["pixel:x"]}, "whole number"),
    (nn.Sequential(nn.Flatten(), nn.Linear(3 * 32 * 32, 10)), {"attacks": ["nope:3"]}, "unknown attack 'nope'"),
])
def test_evaluate_bad_input(model, kwargs, msg, tmp_path):
    with pytest.raises((ConfigError, ValueError), match=msg.replace("(", r"\(").replace(")", r"\)")):
        robench.evaluate(model, **{"out": tmp_path, "images": 2} | kwargs)


def test_public_surface_is_small_and_lazy():
    import subprocess
    import sys

    code = "import robench, sys; print('torch' in sys.modules); print(sorted(robench.__all__))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.splitlines()
    assert out[0] == "False"  # importing robench costs nothing until a name is used
    for name in robench.__all__:
        assert getattr(robench, name).__doc__, name
