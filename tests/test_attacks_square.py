"""Square attack: finds what a hand-built model hides from gradients, budgets, queries, seeding."""

import pytest
import torch
from torch import nn

from robench.attacks.base import judge
from robench.attacks.gradient import PGDConfig, pgd_attack
from robench.attacks.square import SquareConfig, square_attack, square_side
from tests.test_attacks_pixel import Constant, gen


class BrightChannel(nn.Module):
    """Class 1 iff channel 0's mean exceeds ``0.5 + margin``; with ``masked`` its logits go through
    a staircase (torch.round), whose gradient is zero everywhere: PGD walks nowhere, a score-based
    search is not affected."""

    def __init__(self, margin: float, masked: bool = False) -> None:
        super().__init__()
        self.margin = margin
        self.masked = masked
        self.scale = nn.Parameter(torch.tensor(50.0))  # a parameter, so the model has a device

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0].flatten(1).mean(1) - 0.5 - self.margin
        if self.masked:
            v = torch.round(v * 1000) / 1000
        z = v * self.scale
        return torch.stack([-z, z], 1)


def grey(n: int, channels: int = 3, side: int = 16) -> torch.Tensor:
    return torch.full((n, channels, side, side), 0.5)


@pytest.mark.parametrize("channels", [1, 3])
def test_fools_a_model_whose_gradient_is_masked_where_pgd_cannot(channels):
    # Fooling takes +eps on over 3/4 of channel 0: the stripes start near half, squares add the rest.
    eps = 8 / 255
    model = BrightChannel(margin=eps / 2, masked=True)
    images, labels = grey(4, channels), torch.zeros(4, dtype=torch.long)
    out = square_attack(model, images, labels, SquareConfig(epsilons=(eps,), queries=1000), gen(0))
    verdict = judge(model, images, labels, out, linf_budget=eps)
    assert verdict.success.all()
    assert (out.queries < 1000).all()  # each image stopped at its first success
    pgd = pgd_attack(model, images, labels, PGDConfig(epsilons=(eps,), steps=50), gen(0))
    assert not judge(model, images, labels, pgd, linf_budget=eps).success.any()


def test_stays_in_the_box_spends_exactly_its_budget_and_only_moves_by_eps():
    images = torch.rand(5, 3, 8, 8, generator=gen(2))
    images[:, :, :2] = 0.0  # clipped at 0 and 1: the box is [0, 1] ∩ [x - eps, x + eps]
    images[:, :, -2:] = 1.0
    labels = torch.zeros(5, dtype=torch.long)
    eps = 0.05
    out = square_attack(Constant(), images, labels, SquareConfig(epsilons=(eps,), queries=60), gen(0))
    assert out.queries.tolist() == [60] * 5  # never fooled: the whole budget, not one query more
    assert out.adversarial.min() >= 0 and out.adversarial.max() <= 1
    delta = out.adversarial - images
    assert delta.abs().max() <= eps + 1e-6
    inside = (images > eps) & (images < 1 - eps)
    assert torch.allclose(delta[inside].abs(), torch.full_like(delta[inside], eps))  # corners of the eps-box
    judge(Constant(), images, labels, out, linf_budget=eps)  # within budget, or judge raises


def test_every_proposal_changes_the_image():
    # On one channel a redrawn square repeats its sign with probability 1/2, so without the redraw
    # many queries would re-score the same image. A model that counts distinct inputs sees each
    # proposal differ from the image it would replace.
    seen: list[torch.Tensor] = []

    class Recorder(Constant):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            seen.append(x.clone())
            return super().forward(x)

    images = torch.rand(3, 1, 8, 8, generator=gen(4))
    out = square_attack(Recorder(), images, torch.zeros(3, dtype=torch.long),
                        SquareConfig(epsilons=(0.1,), queries=200), gen(1))
    assert len(seen) == 200
    # Constant never improves, so every proposal is compared with the first image: none equals it.
    first = seen[0]
    assert all(((x != first).flatten(1).any(1)).all() for x in seen[1:])
    assert torch.equal(out.adversarial, first)


def test_seeded_runs_repeat_exactly_and_seeds_differ():
    images = torch.rand(4, 3, 8, 8, generator=gen(3))
    labels = torch.zeros(4, dtype=torch.long)
    cfg = SquareConfig(epsilons=(0.03,), queries=30)
    a, b = (square_attack(Constant(), images, labels, cfg, gen(7)) for _ in range(2))
    assert torch.equal(a.adversarial, b.adversarial)
    c = square_attack(Constant(), images, labels, cfg, gen(8))
    assert not torch.equal(a.adversarial, c.adversarial)


def test_square_shrinks_on_the_paper_schedule_rescaled_to_the_budget():
    cfg = SquareConfig(queries=10_000)
    sides = [square_side(it, cfg, 32, 32) for it in range(1, 10_000)]
    assert sides[0] == 29  # round(sqrt(0.8 * 1024)) = 29, below the image's side
    assert sides[-1] == 1  # 0.8 / 512 of 1024 pixels
    assert all(a >= b for a, b in zip(sides, sides[1:]))
    short = SquareConfig(queries=1000)
    assert [square_side(it, short, 32, 32) for it in (1, 100, 999)] == [sides[0], sides[999], sides[9989]]
    assert square_side(1, cfg, 2, 2) == 1  # never the whole image


def test_bad_settings_are_value_errors():
    with pytest.raises(ValueError, match="epsilon"):
        SquareConfig(epsilons=(0.0,))
    with pytest.raises(ValueError, match="distinct"):
        SquareConfig(epsilons=(0.1, 0.1))
    with pytest.raises(ValueError, match="queries"):
        SquareConfig(queries=0)
    with pytest.raises(ValueError, match="p_init"):
        SquareConfig(p_init=0.0)


def test_a_square_result_verifies_and_reports_as_black_box(tmp_path_factory):
    """Through the runner: the adversarials go to the .npz as int8 signs (every changed value is
    clip(x +- eps)), ``verify`` rebuilds and re-judges them, and the report gives Square a table of
    its own and counts it as black-box beside PGD."""
    import json

    import numpy as np

    from robench.adversarials import read_npz
    from robench.attacks.runner import AttackRun, run_attack
    from robench.tables import build_report
    from robench.robustness import gather
    from robench.verification import verify_results
    from tests.conftest import adversarials_file, train_tiny_lenet

    root, ck = train_tiny_lenet(tmp_path_factory)
    out = tmp_path_factory.mktemp("attacks")
    base = dict(model="lenet5", act="relu", images=5, repeats=2, seed=0, checkpoint=str(ck))
    run_attack(AttackRun(attack="square", options={"epsilons": [2 / 255, 8 / 255], "queries": 30}, **base),
               out=out / "square.json", data_dir=root, device="cpu")
    run_attack(AttackRun(attack="pgd", options={"epsilons": [8 / 255], "steps": 5}, **base),
               out=out / "pgd.json", data_dir=root, device="cpu")
    arrays = read_npz(adversarials_file(out / "square.json"))
    assert arrays and all(v.dtype == np.int8 for k, v in arrays.items() if k.endswith("sign"))
    assert any(k.endswith("sign") for k in arrays)
    (done,) = [v for v in verify_results([out], data_dir=root, device="cpu") if v.path.name == "square.json"]
    assert done.ok and done.repeats == 4, [str(m) for m in done.mismatches]
    report = build_report(out)
    titles = [t.title for t in report.tables]
    assert "Square attack (Linf, black-box, queries30), successes" in titles  # the budget is not the default
    evs = gather([(p.name, json.loads(p.read_text())) for p in sorted(out.glob("*.json"))], lambda res: "s0")
    kinds = {e.attack: e.white_box for points in evs.by_row.values() for items in points.values() for e in items}
    assert kinds == {"square": False, "pgd": True}
