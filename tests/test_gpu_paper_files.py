"""bench/gpu_paper_files.py: the toy suite that checks bench/gpu_paper.sh on a CPU keeps what the GPU
suite would run (its attack list, epsilons and training method) at each attack's quick budget."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest
import yaml

from robench.attacks.spec import get_attack
from robench.suite import load_suite

REPO = Path(__file__).resolve().parents[1]
GPU_CONFIGS = ["gpu-paper.yaml", "gpu-paper-at.yaml"]


def _files_module():
    spec = importlib.util.spec_from_file_location("gpu_paper_files", REPO / "bench" / "gpu_paper_files.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules.setdefault("gpu_paper_files", module)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("config", GPU_CONFIGS)
def test_the_toy_suite_keeps_the_attacks_epsilons_and_training_method(config, tmp_path):
    files = _files_module()
    full = yaml.safe_load((REPO / "configs" / config).read_text())
    files.toy(REPO / "configs" / config, tmp_path)
    toy = load_suite(tmp_path / "toy.yaml")  # a suite robench accepts
    body = yaml.safe_load((tmp_path / "toy.yaml").read_text())
    assert toy.models == ("lenet5",) and toy.acts == tuple(full["acts"][:2]) and toy.images == 4
    assert [a["attack"] for a in body["attacks"]] == [a["attack"] for a in full["attacks"]]
    for mine, theirs in zip(body["attacks"], full["attacks"], strict=True):
        if "epsilons" in theirs.get("options", {}):
            assert mine["options"]["epsilons"] == theirs["options"]["epsilons"]
        quick = get_attack(theirs["attack"]).quick
        assert {k: v for k, v in mine["options"].items() if k in quick and k != "epsilons"} == \
            {k: v for k, v in quick.items() if k != "epsilons"}
    assert {k: body["train"][k] for k in full["train"] if k not in ("epochs", "batch_size")} == \
        {k: v for k, v in full["train"].items() if k not in ("epochs", "batch_size")}
    assert body["train"]["epochs"] == 1 and body["train"]["train_images"] == 2048


def test_the_adversarial_gpu_suite_covers_the_study_activations_and_models():
    """Issue 26, item 5: the larger models with every activation of the CPU suites."""
    at = load_suite(REPO / "configs" / "gpu-paper-at.yaml")
    cpu = load_suite(REPO / "configs" / "at-seeds-lenet5.yaml")
    assert set(at.models) == {"resnet18", "allcnn", "nin"} and set(at.acts) == set(cpu.acts)
    assert at.train["adv"] == cpu.train["adv"] and at.train["adv_eps"] == cpu.train["adv_eps"]
    assert [a.attack for a in at.attacks] == [a.attack for a in cpu.attacks]
