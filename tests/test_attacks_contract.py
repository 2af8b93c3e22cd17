"""Every registered attack, and a plugin registered here, through the same checks (as Foolbox's
tests/test_attacks.py runs every attack): ``judge`` accepts its proposals within its budget, a
seeded rerun proposes the same images, and the real runner stores adversarials that ``verify``
rebuilds and re-judges. Each attack runs on its spec's ``quick`` options: seconds, not minutes."""

from __future__ import annotations

from typing import Any

import pytest
import torch

from robench.attacks import attack_names, get_attack
from robench.attacks.base import judge
from robench.attacks.runner import AttackRun, run_attack, select_images
from robench.checkpoints import load_checkpoint
from robench.config import config_from_dict
from robench.data import load_split, to_float
from robench.verification import verify_results
from tests.conftest import train_tiny_lenet
from tests.toy_attack import load_toy

PLUGIN = "randsign"
RECORD_KEY = {"linf_budget": "linf", "l2_budget": "l2", "l1_budget": "l1", "l0_budget": "l0_pixels"}


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_lenet(tmp_path_factory)


@pytest.fixture
def attack(request, clean_registries, tmp_path):
    """The attack's name, the plugin registered for this test only."""
    if request.param == PLUGIN:
        load_toy(tmp_path, PLUGIN)
    return request.param


def quick_options(name: str) -> dict[str, Any]:
    """The spec's quick options; a composite runs each member on that member's quick options."""
    spec = get_attack(name)
    options = dict(spec.quick)
    if spec.behind is not None:
        members = spec.behind(config_from_dict(spec.config_cls, dict(options), name))
        options["member_options"] = {m: dict(get_attack(m).quick) for m in members}
    return options


def _images(trained, n: int = 3):
    root, ck = trained
    model = load_checkpoint(ck).model.eval()
    test, _ = load_split("cifar10", False, root)
    idx, _ = select_images(model, test.images, test.labels, n, seed=0, device=torch.device("cpu"))
    return model, to_float(test.images[idx]), test.labels[idx]


@pytest.mark.parametrize("attack", [*attack_names(), PLUGIN], indirect=True)
def test_judge_accepts_every_setting_within_budget_and_a_seeded_rerun_is_identical(attack, trained):
    spec = get_attack(attack)
    model, images, labels = _images(trained)
    config = config_from_dict(spec.config_cls, quick_options(attack), attack)
    for label, setting in spec.settings(config):
        runs = [spec.fn(model, images, labels, setting, torch.Generator().manual_seed(7)) for _ in range(2)]
        first, second = runs
        assert first.adversarial.shape == images.shape and first.queries.shape == (len(images),), label
        assert torch.equal(first.adversarial, second.adversarial), f"{attack} {label}: seeded rerun differs"
        assert torch.equal(first.queries, second.queries)
        verdict = judge(model, images, labels, first, **spec.budget(setting))  # raises on a proposal out of budget
        assert verdict.success.shape == (len(images),)
        assert ((first.adversarial >= 0) & (first.adversarial <= 1)).all()


@pytest.mark.parametrize("attack", [*attack_names(), PLUGIN], indirect=True)
def test_the_runner_stores_adversarials_that_verify_rebuilds(attack, trained, tmp_path):
    root, ck = trained
    spec = get_attack(attack)
    run = AttackRun(model="lenet5", act="relu", attack=attack, options=quick_options(attack), images=3, repeats=2,
                    seed=0, checkpoint=str(ck))
    path, result = run_attack(run, out=tmp_path / "r.json", data_dir=root, device="cpu")
    settings = result["settings"]
    assert len(settings) == len(spec.settings(config_from_dict(spec.config_cls, result["attack_config"], attack)))
    for setting in settings:
        budgets = spec.budget(config_from_dict(spec.config_cls, dict(setting["config"]), attack))
        for repeat in setting["repeats"]:
            assert len(repeat["images"]) == 3
            for record in (r for r in repeat["images"] if r["success"]):
                for kwarg, budget in budgets.items():  # every counted success within the budget
                    assert record[RECORD_KEY[kwarg]] <= budget + 1e-6  # records keep 6 decimals
    (v,) = verify_results([path], data_dir=root, device="cpu")
    assert v.mismatches == [] and v.legacy == 0, (v.mismatches, v.legacy)  # every repeat stored and rebuilt
    assert v.images == 3 and v.repeats == sum(len(s["repeats"]) for s in settings)


def test_every_registered_attack_and_the_plugin_are_covered(clean_registries, tmp_path):
    """The parametrisation above is read from the registry: a new attack is in it with no edit."""
    before = set(attack_names())
    load_toy(tmp_path, PLUGIN)
    assert set(attack_names()) == before | {PLUGIN}
    assert get_attack(PLUGIN).name == PLUGIN and PLUGIN not in before
