"""Registering from outside: register_* calls, entry-point plugins (lazy; a broken one costs a
warning), ``--model package.module:factory`` and plain state_dict checkpoints, and the example
plugin package in examples/plugin installed as a user would."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from torch import nn
from typer.testing import CliRunner

import robench
from robench.activations import ACTIVATIONS
from robench.attacks import get_attack
from robench.checkpoints import load_checkpoint
from robench.cli import app
from robench.errors import CheckpointError, ConfigError
from robench.models import build_model

REPO = Path(__file__).resolve().parents[1]
runner = CliRunner()


def one_line(result, code=1):
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert result.exit_code == code, result.output
    assert "Traceback" not in result.output
    return lines


def test_register_activation_model_and_attack(clean_registries):
    robench.register_activation("halfrelu", lambda channels: nn.LeakyReLU(0.5))

    @robench.register_model("wide_mlp")
    def wide_mlp(act, num_classes, in_channels):  # no image_size: robench does not pass it
        return nn.Sequential(nn.Flatten(), nn.Linear(in_channels * 32 * 32, 16), act(16), nn.Linear(16, num_classes))

    net = build_model("wide_mlp", "halfrelu", mean=(0.5,), std=(0.25,))
    assert isinstance(net.body[2], nn.LeakyReLU) and net(torch.rand(3, 3, 32, 32)).shape == (3, 10)
    with pytest.raises(ValueError, match="registered twice"):
        robench.register_activation("halfrelu", lambda channels: nn.ReLU())
    with pytest.raises(ValueError, match="registered twice"):
        robench.register_activation("relu", lambda channels: nn.ReLU())  # a built-in cannot be replaced

    spec = dataclasses.replace(get_attack("fgsm"), name="my_fgsm")
    assert robench.register_attack(spec) is spec and get_attack("my_fgsm") is spec
    with pytest.raises(ConfigError, match="not a robench.AttackSpec"):
        robench.register_attack(object())


def _dist(root: Path, name: str, group: str, entries: dict[str, str]) -> None:
    """An installed distribution as importlib.metadata sees one: METADATA and entry_points.txt."""
    info = root / f"{name}-0.1.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 0.1\n")
    lines = [f"[{group}]"] + [f"{k} = {v}" for k, v in entries.items()]
    (info / "entry_points.txt").write_text("\n".join(lines) + "\n")


def test_entry_points_are_lazy_and_a_broken_one_costs_a_warning(clean_registries, tmp_path, monkeypatch, fake_data):
    (tmp_path / "good_plugin.py").write_text("from torch import nn\nLOADED = True\n"
                                             "def softish(channels):\n    return nn.Softplus()\n")
    _dist(tmp_path, "good_plugin", "robench.activations",
          {"softish": "good_plugin:softish", "broken": "no_such_module_xyz:fn", "relu": "good_plugin:softish"})
    monkeypatch.syspath_prepend(str(tmp_path))
    with pytest.warns(UserWarning, match="already taken"):  # a plugin cannot replace a built-in
        names = ACTIVATIONS.names()
    assert {"softish", "broken"} <= set(names)
    assert "good_plugin" not in sys.modules  # listed from metadata, not imported
    assert isinstance(build_model("lenet5", "softish").body[0][2], nn.Softplus)
    assert "good_plugin" in sys.modules and "softish" in ACTIVATIONS.external

    r = runner.invoke(app, ["train", "--act", "broken", "--data-dir", str(fake_data), "--quiet"])
    lines = one_line(r)
    assert len(lines) == 2, r.output
    assert "warning: plugin no_such_module_xyz:fn (activation 'broken') failed to load: ModuleNotFoundError" in lines[0]
    assert "unknown activation 'broken'" in lines[1]


@pytest.mark.parametrize("spec,msg", [
    ("no_such_pkg_xyz.nets:f", "cannot import model factory no_such_pkg_xyz.nets:f: ModuleNotFoundError"),
    ("tests.factories:missing", "tests.factories has no attribute 'missing'"),
    ("tests.factories:NOT_CALLABLE", "is a int, not something to call"),
    ("tests.factories:not_a_module", "returned a int, not a torch.nn.Module"),
    ("tests.factories:wrong_head", "to (2, 11), not (2, 10) logits"),
    ("tests.factories:crashes", "failed: RuntimeError: out of coffee"),
    ("nocolon:", "write package.module:factory"),
])
def test_bad_factory_is_one_line(spec, msg, fake_data, tmp_path):
    r = runner.invoke(app, ["train", "--model", spec, "--data-dir", str(fake_data), "--quiet", "--out",
                            str(tmp_path / "x.pt")])
    lines = one_line(r)
    assert len(lines) == 1 and msg in lines[0], r.output


def test_plain_state_dict_that_does_not_fit_names_the_first_key(tiny_lenet, tmp_path):
    root, ck = tiny_lenet
    state = load_checkpoint(ck).model.state_dict()
    cases = {"missing": {k: v for k, v in state.items() if k != "body.0.0.weight"},
             "unexpected": state | {"body.99.weight": torch.zeros(1)},
             "shape": state | {"body.7.weight": torch.zeros(3, 3)}}
    expect = {"missing": "missing key 'body.0.0.weight' (1 missing, 0 unexpected)",
              "unexpected": "unexpected key 'body.99.weight'", "shape": "'body.7.weight' has shape (3, 3)"}
    for case, sd in cases.items():
        path = tmp_path / f"{case}.pt"
        torch.save(sd, path)
        r = runner.invoke(app, ["attack", "--checkpoint", str(path), "--attack", "fgsm", "--images", "2",
                                "--data-dir", str(root), "--quiet", "--out", str(tmp_path / f"{case}.json")])
        lines = one_line(r)
        assert len(lines) == 1 and expect[case] in lines[0], r.output
    with pytest.raises(CheckpointError, match="plain state_dict: name the model"):
        load_checkpoint(tmp_path / "missing.pt")


def test_a_checkpoint_never_chooses_what_is_imported(tmp_path, fake_data):
    from robench.config import TrainConfig
    from robench.train import train

    ck = tmp_path / "f.pt"
    train(TrainConfig(model="tests.factories:tiny_cnn", act="relu", epochs=1, batch_size=32), out=ck,
          data_dir=fake_data, device="cpu")
    with pytest.raises(CheckpointError, match="pass --model tests.factories:tiny_cnn"):
        load_checkpoint(ck)
    assert load_checkpoint(ck, model="tests.factories:tiny_cnn").args.name == "tests.factories:tiny_cnn"
    payload = torch.load(ck, weights_only=True)  # a file naming an activation to import is refused the same way
    payload["model_args"] = payload["model_args"] | {"name": "lenet5", "act": "os:getcwd"}
    torch.save(payload, tmp_path / "act.pt")
    with pytest.raises(CheckpointError, match="pass --act os:getcwd"):
        load_checkpoint(tmp_path / "act.pt")
    from robench.checkpoints import default_checkpoint
    assert default_checkpoint("tests.factories:tiny_cnn", "relu", "cifar10").name == \
        "tests.factories.tiny_cnn-relu-cifar10-s0.pt"


@pytest.fixture(scope="module")
def tiny_lenet(tmp_path_factory):
    from tests.conftest import train_tiny_lenet

    return train_tiny_lenet(tmp_path_factory)


@pytest.mark.slow
def test_example_plugin_installed_trained_and_attacked(tmp_path, tmp_path_factory):
    """pip installs examples/plugin (into a folder on PYTHONPATH, so the test environment is left
    as it was); `--act mish` then trains and is attacked by the CLI and by robench.evaluate,
    with the same per-image outcomes."""
    from tests.conftest import write_fake_cifar

    root = write_fake_cifar(tmp_path_factory.mktemp("data"), "cifar10")
    site = tmp_path / "site"
    pip = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site),
                          str(REPO / "examples" / "plugin")], capture_output=True, text=True)
    assert pip.returncode == 0, pip.stderr[-2000:]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(site), str(REPO)])}
    cli = [sys.executable, "-m", "robench.cli"]

    def run(*args):
        done = subprocess.run([*cli, *args], capture_output=True, text=True, env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stderr[-2000:]
        return done.stdout

    assert "mish, mish_beta" in run("models", "--known").replace("\n", " ")
    ck = tmp_path / "lenet5-mish-cifar10-s0.pt"
    run("train", "--act", "mish", "--epochs", "4", "--batch-size", "32", "--data-dir", str(root), "--out", str(ck),
        "--quiet", "--device", "cpu")
    out = tmp_path / "cli.json"
    run("attack", "--act", "mish", "--checkpoint", str(ck), "--attack", "fgsm", "--eps", "0.03", "--images", "6",
        "--repeats", "1", "--data-dir", str(root), "--out", str(out), "--quiet", "--device", "cpu")
    code = (f"import robench, json; from robench.checkpoints import load_checkpoint\n"
            f"m = load_checkpoint({str(ck)!r}).model\n"
            f"ev = robench.evaluate(m, attacks=['fgsm:0.03'], images=6, repeats=1, out={str(tmp_path / 'api.json')!r}, "
            f"data_dir={str(root)!r}, device='cpu')\n"
            f"print(type(m.body[0][2]).__module__)")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip() == "robench_mish"
    a, b = (json.loads((tmp_path / f).read_text()) for f in ("cli.json", "api.json"))
    assert [r["success"] for r in a["settings"][0]["repeats"][0]["images"]] == \
        [r["success"] for r in b["settings"][0]["repeats"][0]["images"]]
    assert a["act"] == "mish" and a["image_set"] == b["image_set"]
