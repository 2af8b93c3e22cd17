import pytest
import torch
from torch import nn

from robench.attacks.base import judge
from robench.attacks.candidates import paint
from robench.attacks.sparse_rs import SparseRSConfig, pixels_to_move, sparse_rs_attack
from tests.test_attacks_pixel import Constant, OnePixel, changed_pixels, gen


class TwoWhitePixels(nn.Module):
    """Class 1 iff pixels (1, 2) and (6, 5) are both bright in channel 0 (their mean above 0.85): a
    1-pixel attack cannot fool it, a 2-pixel one must find both spots."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = (x[:, 0, 1, 2] + x[:, 0, 6, 5]) / 2
        return torch.stack([0.85 - v, v - 0.85], 1) * 20


def test_finds_the_one_pixel_the_model_keys_on():
    images = torch.rand(4, 3, 16, 16, generator=gen(1))
    images[:, 0, 5, 7] = 0.0
    labels = torch.zeros(4, dtype=torch.long)
    out = sparse_rs_attack(OnePixel(), images, labels, SparseRSConfig(pixels=1, queries=3000), gen(0))
    assert (OnePixel()(out.adversarial).argmax(1) == 1).all()
    where = changed_pixels(out.adversarial, images)
    assert where[:, 0].tolist() == [0, 1, 2, 3] and (where[:, 1:] == torch.tensor([5, 7])).all()
    assert (out.queries < 3000).all()


def test_keeps_a_good_pixel_while_it_searches_for_the_second():
    # One bright spot lowers the margin but does not fool: found because the accepted move keeps
    # the first spot while the other pixel moves on.
    images = torch.full((3, 3, 8, 8), 0.2)
    labels = torch.zeros(3, dtype=torch.long)
    out = sparse_rs_attack(TwoWhitePixels(), images, labels, SparseRSConfig(pixels=2, queries=4000), gen(0))
    assert (TwoWhitePixels()(out.adversarial).argmax(1) == 1).all()
    verdict = judge(TwoWhitePixels(), images, labels, out, l0_budget=2)
    assert verdict.success.all() and (verdict.l0_pixels <= 2).all()


def test_stays_within_budget_and_stored_pixels_rebuild_the_images():
    images = torch.rand(5, 3, 8, 8, generator=gen(2))
    labels = torch.zeros(5, dtype=torch.long)
    cfg = SparseRSConfig(pixels=3, queries=40)
    out = sparse_rs_attack(Constant(), images, labels, cfg, gen(0))
    assert out.queries.tolist() == [40] * 5  # never fooled: the whole budget, not one query more
    assert ((out.adversarial != images).any(1).flatten(1).sum(1) <= 3).all()
    rebuilt = paint(images, torch.tensor(out.details["pixels"], dtype=torch.float32))
    assert torch.equal(rebuilt, out.adversarial)
    colours = torch.tensor(out.details["pixels"])[..., 2:]
    assert set(colours.unique().tolist()) <= {0.0, 1.0}  # corners of the colour cube


def test_seeded_runs_repeat_exactly_and_seeds_differ():
    images = torch.rand(4, 3, 8, 8, generator=gen(3))
    labels = torch.zeros(4, dtype=torch.long)
    cfg = SparseRSConfig(pixels=2, queries=30)
    a, b = (sparse_rs_attack(Constant(), images, labels, cfg, gen(7)) for _ in range(2))
    assert torch.equal(a.adversarial, b.adversarial) and a.details == b.details
    c = sparse_rs_attack(Constant(), images, labels, cfg, gen(8))
    assert not torch.equal(a.adversarial, c.adversarial)


def test_schedule_moves_fewer_pixels_as_queries_run_out():
    cfg = SparseRSConfig(pixels=10, queries=10_000)
    moves = [pixels_to_move(it, cfg) for it in range(1, 10_000)]
    assert moves[0] == 4 and moves[-1] == 1  # p_init / 2 at first (0.8 * 10 / 2), then down to one pixel
    assert all(a >= b for a, b in zip(moves, moves[1:]))
    # rescaled to the budget: the same fractions of a 1,000-query budget move the same counts
    short = SparseRSConfig(pixels=10, queries=1000)
    assert [pixels_to_move(it, short) for it in (1, 100, 999)] == [moves[0], moves[999], moves[9989]]


def test_bad_settings_are_value_errors():
    with pytest.raises(ValueError, match="pixels must be >= 1"):
        SparseRSConfig(pixels=0)
    with pytest.raises(ValueError, match="p_init"):
        SparseRSConfig(p_init=1.5)
    with pytest.raises(ValueError, match="exceeds the 4 pixels"):
        sparse_rs_attack(Constant(), torch.rand(1, 3, 2, 2), torch.zeros(1, dtype=torch.long),
                         SparseRSConfig(pixels=5), gen(0))


@pytest.mark.slow
def test_compiled_and_incremental_search_forwards_agree_with_eager_image_by_image():
    """The same seed through the eager, the torch.compile'd and the incremental forward: the same
    pixels found and the same verdicts, for the DE and Sparse-RS (compiled kernels and the
    incremental sums may round differently; on LeNet-5 the rounding is ~1e-6, far below what flips a
    greedy selection here). The compile time is reported apart."""
    import robench.attacks.candidates as candidates
    from robench.attacks.pixel import PixelAttackConfig, pixel_attack
    from robench.attacks.sparse_rs import SparseRSConfig, sparse_rs_attack
    from robench.models import build_model

    torch.manual_seed(0)
    model = build_model("lenet5", act="relu", num_classes=10).eval()
    images = torch.rand(12, 3, 32, 32)
    with torch.no_grad():
        labels = model(images).argmax(1)
    runs = {}
    for forward in ("eager", "compiled", "incremental"):
        de = pixel_attack(model, images, labels, PixelAttackConfig(pixels=2, population=16, generations=3, forward=forward),
                          torch.Generator().manual_seed(1))
        rs = sparse_rs_attack(model, images, labels, SparseRSConfig(pixels=2, queries=40, forward=forward),
                              torch.Generator().manual_seed(2))
        runs[forward] = (de, rs)
    for other in ("compiled", "incremental"):
        for eager, out in zip(runs["eager"], runs[other]):
            assert out.meta["forward"] == other
            assert eager.meta == {"forward": "eager", "compile_s": 0.0, "search_dtype": "float32"}
            assert out.details["pixels"] == eager.details["pixels"]
            assert torch.equal(out.queries, eager.queries)
    assert runs["compiled"][0].meta["compile_s"] > 0
    again = pixel_attack(model, images, labels, PixelAttackConfig(pixels=2, population=16, generations=1,
                                                                  forward="compiled"), torch.Generator().manual_seed(1))
    assert again.meta["compile_s"] == 0.0  # once per model, shape and process
    worth = candidates.COMPILE_WORTH
    chain = nn.Sequential(model.normalize, model.body)  # the same model, not split by the incremental forward
    assert candidates.search_forward(chain, "auto", worth - 1, images[:2], 512, fixed_batch=True).kind == "eager"
    assert candidates.search_forward(chain, "auto", worth, images[:2], 512, fixed_batch=True).kind == "eager"  # a CPU
    assert candidates.search_forward(chain, "auto", worth, images[:2], 12, fixed_batch=False).kind == "eager"
    assert candidates.search_forward(model, "auto", worth, images[:2], 12, fixed_batch=False).kind == "incremental"


class _NearTie(nn.Module):
    """Class 1 beats class 0 by 1e-3 in float32; bfloat16 (8 bits of mantissa) rounds both logits
    alike, and argmax then picks class 0: a "success" that exists only in the low precision."""

    def forward(self, x):
        s = x.mean((1, 2, 3)) * 0.01 + 1.0
        return torch.stack([s, s + 1e-3], 1)


@pytest.mark.parametrize("attack", ["pixel", "sparse_rs"])
def test_a_low_precision_success_is_not_counted(attack):
    from robench.attacks.pixel import PixelAttackConfig, pixel_attack

    model = _NearTie()
    images = torch.rand(4, 3, 8, 8)
    labels = torch.ones(4, dtype=torch.long)
    fn, config = ((pixel_attack, PixelAttackConfig(population=8, generations=2, search_dtype="bf16")) if attack == "pixel"
                  else (sparse_rs_attack, SparseRSConfig(queries=10, search_dtype="bf16")))
    outcome = fn(model, images, labels, config, gen(0))
    assert outcome.meta["search_dtype"] == "bf16"
    assert (outcome.queries == outcome.queries.min()).all()  # the search stopped at once: "fooled" in bf16
    assert not judge(model, images, labels, outcome, l0_budget=1).success.any()  # float32 says no
