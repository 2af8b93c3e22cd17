import pytest
import torch
from torch import nn

from robench.attacks.base import judge
from robench.attacks.pixel import BOUNDS, PixelAttackConfig, draw_parents, mutate, paint, pixel_attack
from robench.models import build_model


class OnePixel(nn.Module):
    """Class 1 iff channel 0 of pixel (5, 7) is above 0.5: only that pixel can fool it."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 5, 7]
        return torch.stack([0.5 - v, v - 0.5], 1) * 20


class Constant(nn.Module):
    """Ignores its input: always class 0, with a dummy parameter so it has a device."""

    def __init__(self) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.tensor([3.0, 0.0, 0.0]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logits.expand(len(x), -1)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def changed_pixels(adv: torch.Tensor, images: torch.Tensor) -> torch.Tensor:
    """(M, 3) rows of (image, row, col) where any channel changed."""
    return (adv != images).any(1).nonzero()


def test_finds_the_one_pixel_the_model_keys_on():
    # 16x16 rather than 32x32: the search is blind until it lands on the pixel (fitness is flat
    # elsewhere), and on 16x16 it does for every image on each of 30 seeds tried, not on 9 of 10.
    images = torch.rand(4, 3, 16, 16, generator=gen(1))
    images[:, 0, 5, 7] = 0.0
    labels = torch.zeros(4, dtype=torch.long)
    cfg = PixelAttackConfig(pixels=1, population=100, generations=40)
    out = pixel_attack(OnePixel(), images, labels, cfg, gen(0))
    assert (OnePixel()(out.adversarial).argmax(1) == 1).all()
    where = changed_pixels(out.adversarial, images)
    assert where[:, 0].tolist() == [0, 1, 2, 3]
    assert (where[:, 1:] == torch.tensor([5, 7])).all()
    assert (out.queries < 100 * 41).all() and (out.queries % 100 == 0).all()


def test_constant_model_is_never_fooled_and_spends_the_full_budget():
    images = torch.rand(3, 3, 8, 8, generator=gen(1))
    labels = torch.zeros(3, dtype=torch.long)
    cfg = PixelAttackConfig(population=6, generations=4)
    out = pixel_attack(Constant(), images, labels, cfg, gen(0))
    assert out.queries.dtype == torch.int64
    assert out.queries.tolist() == [6 * 5] * 3
    assert out.adversarial.shape == images.shape
    assert (changed_pixels(out.adversarial, images)[:, 0].bincount(minlength=3) <= 1).all()


def test_mutation_rules_match_their_formulas():
    pop = torch.tensor([[[[1.0]], [[2.0]], [[4.0]], [[8.0]]]])  # (A=1, P=4, k=1, D=1)
    r1, r2, r3 = torch.tensor([[1, 2, 3, 0]]), torch.tensor([[2, 3, 0, 1]]), torch.tensor([[3, 0, 1, 2]])
    de = mutate(pop, r1, r2, r3, 0.5, "de").flatten().tolist()
    literal = mutate(pop, r1, r2, r3, 0.5, "literal").flatten().tolist()
    assert de == [2 + 0.5 * (4 - 8), 4 + 0.5 * (8 - 1), 8 + 0.5 * (1 - 2), 1 + 0.5 * (2 - 4)]
    assert literal == [2 + 0.5 * (4 + 8), 4 + 0.5 * (8 + 1), 8 + 0.5 * (1 + 2), 1 + 0.5 * (2 + 4)]


@pytest.mark.parametrize("population", [4, 5, 400])
def test_parents_are_distinct_from_each_other_and_the_member(population):
    r1, r2, r3 = draw_parents(500, population, gen(3))
    own = torch.arange(population).expand_as(r1)
    for r in (r1, r2, r3):
        assert r.shape == (500, population) and r.dtype == torch.int64
        assert r.min() >= 0 and r.max() < population
    assert ((r1 != r2) & (r1 != r3) & (r2 != r3)).all()
    assert ((r1 != own) & (r2 != own) & (r3 != own)).all()
    if population == 5:  # every ordered triple avoiding the member turns up, about equally often
        code = (r1 * 25 + r2 * 5 + r3)[:, 0]  # member 0: 4 * 3 * 2 = 24 triples
        counts = code.bincount(minlength=125)
        assert (counts > 0).sum() == 24 and counts.max() < 3 * 500 / 24


def test_same_seed_same_outcome_different_seed_differs():
    torch.manual_seed(0)
    model = build_model("lenet5", act="relu")
    images = torch.rand(4, 3, 32, 32, generator=gen(1))
    with torch.no_grad():
        labels = model.eval()(images).argmax(1)
    model.train()
    cfg = PixelAttackConfig(population=8, generations=3, max_batch=10)  # chunks split images
    a, b = (pixel_attack(model, images, labels, cfg, gen(7)) for _ in range(2))
    c = pixel_attack(model, images, labels, cfg, gen(8))
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.queries, b.queries)
    assert not torch.equal(a.adversarial, c.adversarial)
    assert model.training and all(m.training for m in model.modules())  # caller's mode restored


def test_image_fooled_by_its_initial_population_stops_at_once():
    images = torch.rand(2, 3, 8, 8, generator=gen(1))
    labels = torch.tensor([1, 0])  # Constant always says 0: image 0 is fooled by anything
    cfg = PixelAttackConfig(population=5, generations=3)
    out = pixel_attack(Constant(), images, labels, cfg, gen(0))
    assert out.queries.tolist() == [5, 5 * 4]


def test_three_pixels_on_mnist_shaped_images():
    torch.manual_seed(0)
    model = build_model("lenet5", act="relu", in_channels=1, image_size=28).eval()
    images = torch.rand(3, 1, 28, 28, generator=gen(1))
    labels = model(images).argmax(1)
    cfg = PixelAttackConfig(pixels=3, population=10, generations=2)
    out = pixel_attack(model, images, labels, cfg, gen(0))
    verdict = judge(model, images, labels, out, l0_budget=3)  # raises if > 3 pixels or outside [0, 1]
    assert ((verdict.l0_pixels >= 1) & (verdict.l0_pixels <= 3)).all() and out.adversarial.shape == images.shape


def test_paint_writes_exactly_the_rounded_pixels_and_later_duplicates_win():
    images = torch.zeros(1, 2, 4, 4)
    cand = torch.tensor([[[1.4, 2.6, 0.1, 0.2], [0.0, 0.0, 0.3, 0.4], [0.6, 3.4, 0.7, 0.8]]])
    out = paint(images, cand)
    assert out[0, :, 1, 3].tolist() == pytest.approx([0.7, 0.8])  # (1.4, 2.6) and (0.6, 3.4) both round to (1, 3)
    assert out[0, :, 0, 0].tolist() == pytest.approx([0.3, 0.4])
    assert (out != 0).any(1).sum() == 2 and images.abs().sum() == 0


@pytest.mark.parametrize("rule", ["clip", "wrap"])
def test_bounds_keep_coordinates_in_range(rule):
    upper = torch.tensor([31.0, 31.0, 1.0, 1.0, 1.0])
    x = torch.randn(1000, 5, generator=gen(2)) * 100
    y = BOUNDS[rule](x, upper)
    assert (y >= 0).all() and (y <= upper).all()
    inside = torch.tensor([[3.0, 30.5, 0.25, 0.0, 0.99]])
    assert torch.equal(BOUNDS[rule](inside, upper), inside)  # in-range points are left alone
    assert torch.equal(BOUNDS[rule](torch.full((1, 1), 5.0), torch.tensor([0.0])), torch.zeros(1, 1))  # H == 1


@pytest.mark.parametrize("rule", ["clip", "wrap"])
@pytest.mark.parametrize("mutation", ["de", "literal"])
def test_attack_runs_with_every_rule(rule, mutation):
    images = torch.rand(2, 3, 8, 8, generator=gen(1))
    cfg = PixelAttackConfig(pixels=2, population=6, generations=3, bounds=rule, mutation=mutation)
    out = pixel_attack(Constant(), images, torch.zeros(2, dtype=torch.long), cfg, gen(0))
    assert out.adversarial.min() >= 0 and out.adversarial.max() <= 1


@pytest.mark.parametrize(
    "kwargs, match",
    [
        ({"pixels": 0}, "pixels"),
        ({"population": 3}, "population must be >= 4"),
        ({"generations": -1}, "generations"),
        ({"f": 0.0}, "f must be > 0"),
        ({"mutation": "best1"}, "known: de, literal"),
        ({"bounds": "reflect"}, "known: clip, wrap"),
        ({"max_batch": 0}, "max_batch"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        PixelAttackConfig(**kwargs)


def test_pixel_crossover_keeps_all_but_the_forced_pixel_at_a_tiny_rate():
    from robench.attacks.pixel import crossover

    parent = torch.zeros(2, 50, 5, 4)
    mutant = torch.ones(2, 50, 5, 4)
    trial = crossover(parent, mutant, 1e-9, gen(0))
    taken = trial[..., 0]  # 1 where a pixel came from the mutant
    assert (taken.sum(-1) == 1).all()  # exactly the forced one (DE's j_rand)
    assert torch.equal(trial[..., 0:1].expand_as(trial), trial)  # pixels move whole, never split
    assert torch.equal(crossover(parent, mutant, 1.0, gen(0)), mutant)


class NearPixel(nn.Module):
    """Flips only when channel 0 of pixel (5, 7) turns bright, like OnePixel, but bright pixels in
    its 7x7 neighbourhood raise the class-1 logit a little: the graded landscape of a real model,
    on which a greedy DE (best/1) homes in, where OnePixel's flat one is a blind needle search."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        v = x[:, 0, 5, 7]
        near = x[:, 0, 2:9, 4:11].flatten(1).sum(1) * 0.2
        return torch.stack([torch.zeros_like(v), 20 * (v - 0.5) + near - 5.0], 1)


@pytest.mark.parametrize("options", [{"strategy": "best1"}, {"strategy": "best1", "crossover": "pixel"},
                                     {"crossover": "pixel", "crossover_rate": 0.5}])
def test_de_variants_find_the_planted_pixel_within_budget(options):
    images = torch.rand(4, 3, 16, 16, generator=gen(1))
    images[:, 0, 5, 7] = 0.0
    labels = torch.zeros(4, dtype=torch.long)
    assert (NearPixel()(images).argmax(1) == 0).all()
    cfg = PixelAttackConfig(pixels=2, population=100, generations=40, **options)
    out = pixel_attack(NearPixel(), images, labels, cfg, gen(0))
    verdict = judge(NearPixel(), images, labels, out, l0_budget=2)
    assert verdict.success.all()
    assert torch.equal(paint(images, torch.tensor(out.details["pixels"])), out.adversarial)


def test_default_de_is_unchanged_by_the_new_options():
    # The paper's scheme draws the same numbers as before the options existed: explicit defaults
    # give bit-identical results to the implicit ones.
    images = torch.rand(3, 3, 8, 8, generator=gen(4))
    labels = torch.zeros(3, dtype=torch.long)
    a = pixel_attack(Constant(), images, labels, PixelAttackConfig(pixels=3, population=8, generations=3), gen(5))
    b = pixel_attack(Constant(), images, labels, PixelAttackConfig(pixels=3, population=8, generations=3,
                                                                  strategy="rand1", crossover="none"), gen(5))
    assert torch.equal(a.adversarial, b.adversarial)


def test_de_option_errors():
    with pytest.raises(ValueError, match="unknown strategy"):
        PixelAttackConfig(strategy="best2")
    with pytest.raises(ValueError, match="crossover_rate needs crossover"):
        PixelAttackConfig(crossover_rate=0.3)


def test_no_early_stop_keeps_the_lowest_true_class_probability_among_misclassified():
    images = torch.rand(6, 3, 8, 8, generator=gen(1))
    images[:, 0, 5, 7] = 0.0
    labels = torch.zeros(6, dtype=torch.long)
    model = OnePixel()
    # Generation 0 only: both read the same initial population (the same draws), so early stop takes
    # its first misclassified member and no early stop the one of lowest true-class probability.
    first = pixel_attack(model, images, labels, PixelAttackConfig(population=400, generations=0), gen(0))
    lowest = pixel_attack(model, images, labels, PixelAttackConfig(population=400, generations=0, early_stop=False),
                          gen(0))
    a, b = (judge(model, images, labels, o, l0_budget=1) for o in (first, lowest))
    assert a.success.tolist() == b.success.tolist() and a.success.any()
    assert (b.p_true_adv[a.success] <= a.p_true_adv[a.success]).all()
    assert (b.p_true_adv[a.success] < a.p_true_adv[a.success]).any()  # it can fail: the choice matters

    full = pixel_attack(model, images, labels, PixelAttackConfig(population=100, generations=10, early_stop=False),
                        gen(0))
    assert full.queries.tolist() == [100 * 11] * 6  # every image searches every generation
    assert (model(full.adversarial).argmax(1) == 1).all()


def test_no_early_stop_is_a_de_variant_of_its_own():
    from robench.attacks import get_attack

    spec = get_attack("pixel")
    assert spec.tag(PixelAttackConfig(pixels=1, early_stop=False)) == "1px-noearlystop"
    assert spec.variant(PixelAttackConfig()) == ""
