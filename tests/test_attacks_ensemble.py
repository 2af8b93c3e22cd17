"""The worst case over members: robust exactly when every member fails, members see only what stands."""

import dataclasses

import pytest
import torch
from torch import nn

from robench.attacks import ATTACKS, AttackSpec, get_attack
from robench.attacks.base import AttackOutcome, judge
from robench.attacks.ensemble import EnsembleConfig, ensemble_attack


class Threshold(nn.Module):
    """Class 1 iff pixel (0, 0) of channel 0 is above 0.5; pixel (1, 1) carries each image's id."""

    def __init__(self) -> None:
        super().__init__()
        self.dummy = nn.Parameter(torch.zeros(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 0, 0]
        return torch.stack([0.5 - v, v - 0.5], 1) * 10


@dataclasses.dataclass(frozen=True)
class FakeConfig:
    pixels: int = 1


def _fake(breaks: set[int], seen: list[list[int]]):
    """An attack that fools exactly the images whose id (pixel (1, 1) * 100) is in ``breaks``."""

    def run(model, images, labels, config, generator):  # type: ignore[no-untyped-def]
        ids = (images[:, 0, 1, 1] * 100).round().long().tolist()
        seen.append(ids)
        adv = images.clone()
        hit = torch.tensor([i in breaks for i in ids])
        adv[hit, 0, 0, 0] = 1.0
        return AttackOutcome(adv, torch.full((len(images),), 7, dtype=torch.int64), {"mark": [f"id{i}" for i in ids]})

    return run


@pytest.fixture
def fakes(monkeypatch):
    seen: dict[str, list[list[int]]] = {"a": [], "b": []}
    for name, breaks in (("fake_a", {1, 2}), ("fake_b", {2, 3, 5})):
        spec = AttackSpec(name, FakeConfig, _fake(breaks, seen[name[-1]]), settings=lambda c: [("1px", c)],
                          budget=lambda c: {"l0_budget": c.pixels}, deterministic=True,
                          threat=lambda c: ("l0", float(c.pixels)), white_box=False, threats=("l0",),
                          at_budget=lambda norm, b, o: FakeConfig(pixels=int(b), **o))
        monkeypatch.setitem(ATTACKS._items, name, spec)
    return seen


def _images(n: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    x = torch.full((n, 3, 4, 4), 0.2)
    x[:, 0, 1, 1] = torch.arange(n) / 100
    return x, torch.zeros(n, dtype=torch.long)


def test_robust_exactly_when_every_member_fails(fakes):
    x, y = _images()
    cfg = EnsembleConfig(threat="l0", members=("fake_a", "fake_b"), pixels=1)
    out = ensemble_attack(Threshold(), x, y, cfg, torch.Generator().manual_seed(0))
    verdict = judge(Threshold(), x, y, out, l0_budget=1)
    assert verdict.success.nonzero().flatten().tolist() == [1, 2, 3, 5]  # the union of {1, 2} and {2, 3, 5}
    assert out.details["broken_by"] == [None, "fake_a", "fake_a", "fake_b", None, "fake_b", None, None]
    assert fakes["a"] == [list(range(8))]
    assert fakes["b"] == [[0, 3, 4, 5, 6, 7]]  # only the images still standing after fake_a
    assert out.queries.tolist() == [14, 7, 7, 14, 14, 14, 14, 14]
    # a member's own details are kept for the images it broke, and only those
    assert out.details["mark"] == [None, "id1", "id2", "id3", None, "id5", None, None]
    assert torch.equal(out.adversarial[~verdict.success], x[~verdict.success])


def test_order_decides_who_gets_the_credit_not_the_count(fakes):
    x, y = _images()
    g = torch.Generator().manual_seed(0)
    out = ensemble_attack(Threshold(), x, y, EnsembleConfig(members=("fake_b", "fake_a")), g)
    assert out.details["broken_by"] == [None, "fake_a", "fake_b", "fake_b", None, "fake_b", None, None]


def test_members_are_checked_at_load():
    with pytest.raises(ValueError, match="cannot serve the l0 threat"):
        EnsembleConfig(threat="l0", members=("fgsm",))
    with pytest.raises(ValueError, match="unknown attack"):
        EnsembleConfig(members=("laser",))
    with pytest.raises(ValueError, match="set by the ensemble's budget"):
        EnsembleConfig(threat="l0", members=("de",), member_options={"de": {"pixels": 4}})
    cfg = EnsembleConfig(threat="linf", epsilons=(8 / 255,))
    assert cfg.members == ("fgsm", "pgd", "apgd", "fmn", "square")  # the defaults, cheap first, the black-box check last
    assert EnsembleConfig(members=("de", "sparse_rs")).members == ("pixel", "sparse_rs")


def test_real_members_on_a_planted_pixel():
    from tests.test_attacks_pixel import OnePixel

    images = torch.rand(3, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    images[:, 0, 5, 7] = 0.0
    labels = torch.zeros(3, dtype=torch.long)
    cfg = EnsembleConfig(threat="l0", pixels=1, member_options={"pixel": {"population": 20, "generations": 2},
                                                                "sparse_rs": {"queries": 3000}})
    spec = get_attack("ensemble")
    (label, setting), = spec.settings(cfg)
    out = spec.fn(OnePixel(), images, labels, setting, torch.Generator().manual_seed(0))
    verdict = judge(OnePixel(), images, labels, out, **spec.budget(setting))
    assert label == "1px" and verdict.success.all()
    assert set(out.details["broken_by"]) <= {"pixel", "sparse_rs"}


def test_the_default_linf_worst_case_survives_masked_gradients():
    """A model that hides its gradient (a staircase) fools neither FGSM, PGD nor FMN; the default Linf
    ensemble still breaks every image, through its gradient-free member."""
    from tests.test_attacks_square import BrightChannel, grey

    eps = 8 / 255
    model = BrightChannel(margin=eps / 2, masked=True)
    images, labels = grey(3), torch.zeros(3, dtype=torch.long)
    cfg = EnsembleConfig(threat="linf", epsilons=(eps,), member_options={"pgd": {"steps": 10}, "fmn": {"steps": 10},
                                                                         "square": {"queries": 1000}})
    out = ensemble_attack(model, images, labels, cfg, torch.Generator().manual_seed(0))
    assert judge(model, images, labels, out, linf_budget=eps).success.all()
    assert out.details["broken_by"] == ["square"] * 3
