import pytest
import torch
import torch.nn.functional as F
from torch import nn

from robench.attacks.base import judge
from robench.attacks.gradient import CWConfig, FGSMConfig, cw_attack, fgsm_attack
from robench.models import build_model
from tests.conftest import foolbox_samples

# Few steps: the tests check the adapter (budgets, selection, seeding), not CW's search quality.
FAST_CW = dict(binary_search_steps=4, steps=40)


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


@pytest.fixture(scope="module")
def fitted() -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    """A LeNet5 fitted to foolbox's 20 real CIFAR-10 samples, and the samples it classifies right."""
    x, y = foolbox_samples("cifar10")
    x = x.float() / 255
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = build_model("lenet5", act="relu")
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    for _ in range(60):
        loss = F.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    # BatchNorm's running stats lag far behind after 60 steps: set them to the 20 images' own
    # statistics (momentum None = plain average, one batch), so eval mode sees what training saw.
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            m.reset_running_stats()
            m.momentum = None
    with torch.no_grad():
        model(x)
    model.eval()
    with torch.no_grad():
        ok = model(x).argmax(1) == y
    assert ok.sum() >= 15, "the tiny model should fit its 20 samples"
    return model, x[ok], y[ok]


def plain_fgsm(model: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float) -> torch.Tensor:
    x = x.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(F.cross_entropy(model(x), y, reduction="sum"), x)
    return (x + eps * grad.sign()).clamp(0, 1).detach()


def test_fgsm_matches_a_three_line_fgsm_in_plain_torch(fitted):
    model, x, y = fitted
    cfg = FGSMConfig()
    outcomes = fgsm_attack(model, x, y, cfg, gen())
    assert list(outcomes) == list(cfg.epsilons)
    fooled_any = False
    for eps, out in outcomes.items():
        ref = plain_fgsm(model, x, y, eps)
        assert torch.allclose(out.adversarial, ref, atol=1e-6)
        mine = judge(model, x, y, out, linf_budget=eps).success
        with torch.no_grad():
            theirs = model(ref).argmax(1) != y
        assert torch.equal(mine, theirs)
        fooled_any |= bool(mine.any())
    assert fooled_any, "eps up to 0.08 should fool a model fitted to 20 images"


def test_fgsm_stays_in_its_linf_ball_and_the_pixel_range(fitted):
    model, x, y = fitted
    cfg = FGSMConfig(epsilons=(0.01, 0.05, 1.0), random_start=True)
    for eps, out in fgsm_attack(model, x, y, cfg, gen()).items():
        assert out.adversarial.min() >= 0 and out.adversarial.max() <= 1
        assert (out.adversarial - x).abs().max() <= eps + 1e-6
        assert out.queries.dtype == torch.int64 and out.queries.tolist() == [1] * len(x)
        j = judge(model, x, y, out, linf_budget=eps)  # raises if the budget is broken
        assert j.linf.max() <= eps + 1e-6


def test_fgsm_batches_in_chunks_like_one_call(fitted):
    model, x, y = fitted
    whole = fgsm_attack(model, x, y, FGSMConfig(), gen())
    chunked = fgsm_attack(model, x, y, FGSMConfig(max_batch=4), gen())
    for eps in whole:
        assert torch.allclose(whole[eps].adversarial, chunked[eps].adversarial, atol=1e-6)


def test_same_seed_same_random_start_and_the_global_rng_is_left_alone(fitted):
    model, x, y = fitted
    cfg = FGSMConfig(epsilons=(0.03,), random_start=True)
    torch.manual_seed(123)
    expected_next = torch.rand(3)
    torch.manual_seed(123)
    a = fgsm_attack(model, x, y, cfg, gen(7))[0.03].adversarial
    assert torch.equal(torch.rand(3), expected_next), "the caller's global RNG must be untouched"
    b = fgsm_attack(model, x, y, cfg, gen(7))[0.03].adversarial
    c = fgsm_attack(model, x, y, cfg, gen(8))[0.03].adversarial
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_cw_is_deterministic(fitted):
    model, x, y = fitted
    cfg = CWConfig(l2_budget=2.0, **FAST_CW)
    a, b = cw_attack(model, x, y, cfg, gen(0)), cw_attack(model, x, y, cfg, gen(1))
    assert torch.equal(a.adversarial, b.adversarial) and torch.equal(a.queries, b.queries)


def test_cw_respects_its_l2_budget_and_fools_with_a_generous_one(fitted):
    model, x, y = fitted
    cfg = CWConfig(l2_budget=3.0, **FAST_CW)
    out = cw_attack(model, x, y, cfg, gen())
    j = judge(model, x, y, out, l2_budget=cfg.l2_budget)  # raises if the budget is broken
    assert j.success.sum() >= len(x) // 2
    unchanged = (out.adversarial == x).flatten(1).all(1)
    assert torch.equal(~unchanged, j.success), "a proposal is either a CW adversarial or the clean image"
    assert out.queries.dtype == torch.int64
    assert ((out.queries >= 1) & (out.queries <= cfg.binary_search_steps * cfg.steps)).all()


def test_cw_with_a_tiny_budget_fools_nothing_and_returns_clean_images(fitted):
    model, x, y = fitted
    out = cw_attack(model, x, y, CWConfig(l2_budget=1e-4, **FAST_CW), gen())
    assert torch.equal(out.adversarial, x)
    assert not judge(model, x, y, out, l2_budget=1e-4).success.any()


def test_attacks_restore_modes_and_leave_no_parameter_gradients(fitted):
    model, x, y = fitted
    model.train()
    model.zero_grad(set_to_none=True)  # the fixture's training left its last gradients
    frozen = next(model.parameters())
    frozen.requires_grad_(False)
    try:
        fgsm_attack(model, x[:3], y[:3], FGSMConfig(epsilons=(0.05,)), gen())
        cw_attack(model, x[:3], y[:3], CWConfig(binary_search_steps=1, steps=5), gen())
        assert all(m.training for m in model.modules())
        params = list(model.parameters())
        assert [p.requires_grad for p in params] == [False] + [True] * (len(params) - 1)
        assert all(p.grad is None for p in params)
    finally:
        frozen.requires_grad_(True)
        model.eval()


def test_empty_batch_gives_empty_outcomes(fitted):
    model, x, y = fitted
    out = fgsm_attack(model, x[:0], y[:0], FGSMConfig(epsilons=(0.1,)), gen())[0.1]
    assert out.adversarial.shape == (0, *x.shape[1:]) and out.queries.shape == (0,)
    out = cw_attack(model, x[:0], y[:0], CWConfig(), gen())
    assert out.adversarial.shape == (0, *x.shape[1:]) and out.queries.shape == (0,)


def test_model_and_images_on_different_devices_is_refused(fitted):
    model, x, y = fitted
    with pytest.raises(ValueError, match="images are on meta"):
        fgsm_attack(model, x.to("meta"), y, FGSMConfig(), gen())


def test_fgsm_config_takes_a_list_and_stores_a_tuple():
    cfg = FGSMConfig(epsilons=[0.1, 0.2])  # type: ignore[arg-type]  # as YAML would give it
    assert cfg.epsilons == (0.1, 0.2)
    hash(cfg)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(epsilons=(0.0,)),
        dict(epsilons=(-0.1, 0.02)),
        dict(epsilons=(1.5,)),
        dict(epsilons=(float("nan"),)),
        dict(epsilons=()),
        dict(epsilons=(0.02, 0.02)),
        dict(max_batch=0),
    ],
)
def test_fgsm_config_rejects(kwargs):
    with pytest.raises(ValueError):
        FGSMConfig(**kwargs)


@pytest.mark.parametrize(
    "kwargs",
    [
        dict(l2_budget=0.0),
        dict(l2_budget=-1.0),
        dict(l2_budget=float("nan")),
        dict(binary_search_steps=0),
        dict(steps=0),
        dict(stepsize=0.0),
        dict(confidence=-1.0),
        dict(initial_const=0.0),
        dict(max_batch=0),
    ],
)
def test_cw_config_rejects(kwargs):
    with pytest.raises(ValueError):
        CWConfig(**kwargs)
