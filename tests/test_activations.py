import pytest
import torch
from torch.autograd import gradcheck

from robench import activations as act_mod
from robench.activations import (
    APL, SAPL, activation_names, activation_state, build_activation, learnable_activations,
)

ALL = activation_names()


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("compiled", [False, True])
def test_fresh_sapl_is_exactly_relu(per_channel, compiled):
    act = build_activation("sapl", 5, per_channel=per_channel, compiled=compiled)
    x = torch.randn(4, 5, 6, 6) * 3
    x[0, 0, 0, :3] = torch.tensor([0.0, 1.0, -2.5])  # the hinges themselves
    assert torch.equal(act(x), torch.relu(x))


def test_fresh_apl_is_relu():
    x = torch.randn(3, 7) * 3
    assert torch.equal(build_activation("apl", 7, compiled=False)(x), torch.relu(x))


def _randomise(module: torch.nn.Module, seed: int = 0) -> None:
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.copy_(torch.randn(p.shape, generator=g))


def test_sapl_matches_equation_2():
    act = SAPL(3, hinges=(0.0, 1.0, 2.0, 2.5), compiled=False)
    _randomise(act)
    x = torch.linspace(-4, 4, 101).reshape(-1, 1).expand(-1, 3)
    a_pos, a_neg, b = act.a_pos[:, 0], act.a_neg[:, 0], torch.tensor([0.0, 1.0, 2.0, 2.5])
    expected = sum(a_pos[s] * torch.relu(x - b[s]) + a_neg[s] * torch.relu(-x - b[s]) for s in range(4))
    torch.testing.assert_close(act(x), expected)


def test_apl_matches_equation_1_per_channel():
    act = APL(2, compiled=False)
    _randomise(act)
    x = torch.randn(50, 2) * 2
    b = torch.tensor([0.0, 1.0, -1.0, 2.0, -2.0])
    expected = torch.relu(x) + sum(act.a[s] * torch.relu(-x + b[s]) for s in range(5))
    torch.testing.assert_close(act(x), expected)


def test_tied_sapl_is_even():
    act = build_activation("sapl_tied", 4, compiled=False)
    _randomise(act)
    x = torch.randn(10, 4) * 3
    torch.testing.assert_close(act(x), act(-x))


def test_positive_and_negative_variants_sign_of_negative_side():
    x = -torch.linspace(0.1, 4, 40).reshape(-1, 1)
    for name, sign in (("sapl_positive", 1), ("sapl_negative", -1)):
        act = build_activation(name, 1, compiled=False)
        _randomise(act, seed=3)
        y = act(x)
        assert (sign * y >= 0).all(), name


def test_sign_constrained_variants_leave_relu_start():
    """At init (a- = 0) the negative-side slopes must get a gradient and follow a loss that pulls
    them in the allowed direction; with torch.abs they got none and both variants stayed ReLU."""
    x = -torch.linspace(0.1, 4, 40).reshape(-1, 1)
    for name, sign in (("sapl_positive", 1.0), ("sapl_negative", -1.0)):
        act = build_activation(name, 1, compiled=False)
        opt = torch.optim.SGD(act.parameters(), lr=0.01)
        for _ in range(5):  # pull the x < 0 output toward this variant's sign
            opt.zero_grad()
            (-sign * act(x).mean()).backward()
            assert act.a_neg.grad.abs().sum() > 0, name
            opt.step()
        assert (sign * act(x) > 0).all(), name


def test_hinge_count_and_places_are_parameters():
    act = SAPL(1, hinges=(0.0, 0.5, 3.0), compiled=False)
    assert act.a_pos.shape == (3, 1) and act.a_neg.shape == (3, 1)
    assert act.places.flatten().tolist() == [0.0, 0.5, 3.0, -0.0, -0.5, -3.0]
    with pytest.raises(ValueError, match="distinct"):
        SAPL(1, hinges=(0.0, 1.0, 1.0))
    with pytest.raises(ValueError, match=">= 0"):
        SAPL(1, hinges=(0.0, -1.0))


def test_sapl_shared_vs_per_channel_parameter_count():
    assert sum(p.numel() for p in SAPL(16).parameters()) == 8
    assert sum(p.numel() for p in SAPL(16, per_channel=True).parameters()) == 8 * 16


@pytest.mark.parametrize("name,options", [
    ("sapl", {}), ("sapl", {"per_channel": True}), ("apl", {}), ("apl", {"learnable_hinges": True}),
    ("sapl_negative", {}), ("sapl_tied", {}),
])
def test_gradcheck_float64_reference(name, options):
    act = build_activation(name, 3, compiled=False, **options).double()
    _randomise(act, seed=1)
    g = torch.Generator().manual_seed(2)  # fixed inputs: a draw within eps of a hinge would fail gradcheck
    x = (torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g) * 2).requires_grad_()
    assert gradcheck(lambda x: act(x), (x,), eps=1e-6, atol=1e-5)
    for p in list(act.parameters()):
        assert gradcheck(lambda v, p=p: _with_param(act, p, v, x.detach()), (p.detach().clone().requires_grad_(),), eps=1e-6, atol=1e-5)


def _with_param(act, p, v, x):
    # functional call so gradcheck can perturb the parameter
    name = next(n for n, q in act.named_parameters() if q is p)
    return torch.func.functional_call(act, {name: v}, (x,))


@pytest.mark.parametrize("name,options", [("apl", {})])  # S-APL: the bit-for-bit test above
def test_compiled_form_agrees_with_reference(name, options):
    torch.manual_seed(0)
    ref = build_activation(name, 6, compiled=False, **options)
    _randomise(ref, seed=2)
    fused = build_activation(name, 6, compiled=True, **options)
    fused.load_state_dict(ref.state_dict())
    for shape in ((8, 6, 5, 5), (8, 6)):
        x = torch.randn(shape) * 2
        xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
        g = torch.randn(shape)
        ref(xr).backward(g)
        fused(xf).backward(g)
        torch.testing.assert_close(fused(x), ref(x), rtol=1e-5, atol=1e-5)
        torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-5, atol=1e-5)
        for (n, pr), (_, pf) in zip(ref.named_parameters(), fused.named_parameters()):
            torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-4, atol=1e-4, msg=n)
            pr.grad = pf.grad = None


@pytest.mark.parametrize("name,options", [  # each compiles its kernels: the variants share them
    ("sapl", {}), ("sapl_positive", {"per_channel": True}), ("sapl_tied", {"hinges": (0.5, 1.5, 3.0)}),
])
def test_one_side_at_a_time_form_is_the_reference_bit_for_bit(name, options):
    """The compiled S-APL evaluates |x| against S hinges instead of x against 2S; its forward must be
    the reference sum exactly (same floats, same order), on hinges, at zero and between."""
    ref = build_activation(name, 6, compiled=False, **options)
    _randomise(ref, seed=3)
    fused = build_activation(name, 6, **options)
    fused.load_state_dict(ref.state_dict())
    g = torch.Generator().manual_seed(4)
    for shape in ((16, 6, 5, 5), (16, 6)):
        x = torch.randn(shape, generator=g) * 2
        x.view(-1)[:8] = torch.tensor([0.0, -0.0, 1.0, -1.0, 2.5, -2.5, 1.5, -3.0])
        with torch.no_grad():
            assert torch.equal(fused(x), ref(x))
        xr, xf = x.clone().requires_grad_(), x.clone().requires_grad_()
        grad = torch.randn(shape, generator=g)
        ref(xr).backward(grad)
        fused(xf).backward(grad)
        torch.testing.assert_close(xf.grad, xr.grad, rtol=1e-6, atol=1e-6)
        for (n, pr), (_, pf) in zip(ref.named_parameters(), fused.named_parameters()):
            torch.testing.assert_close(pf.grad, pr.grad, rtol=1e-5, atol=1e-5, msg=n)
            pr.grad = pf.grad = None


@pytest.mark.parametrize("per_channel", [False, True])
@pytest.mark.parametrize("shape", [(3, 2, 4, 4), (5, 2)])
def test_hand_written_backward_gradcheck(per_channel, shape):
    """``_symmetric_hinge_grads`` is written out by hand (two-stage sums); check it against finite
    differences in float64, through the eager autograd.Function."""
    g = torch.Generator().manual_seed(5)
    width = 2 if per_channel else 1
    x = (torch.randn(shape, dtype=torch.float64, generator=g) * 2).requires_grad_()
    a_pos = torch.randn(4, width, dtype=torch.float64, generator=g).requires_grad_()
    a_neg = torch.randn(4, width, dtype=torch.float64, generator=g).requires_grad_()
    distances = torch.tensor([[0.0], [1.0], [2.0], [2.5]], dtype=torch.float64)
    assert gradcheck(lambda *t: act_mod._SymmetricHinge.apply(*t, distances), (x, a_pos, a_neg), eps=1e-6, atol=1e-5)


def test_learnable_hinges_take_the_general_sum():
    act = build_activation("sapl", 3, learnable_hinges=True)
    ref = build_activation("sapl", 3, learnable_hinges=True, compiled=False)
    _randomise(ref, seed=6)
    act.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 2, 2)
    torch.testing.assert_close(act(x), ref(x), rtol=1e-6, atol=1e-6)


def test_compiler_failure_falls_back_to_the_same_math_eager(monkeypatch):
    monkeypatch.setattr(act_mod, "_compiled_kernels", {})
    monkeypatch.setattr(act_mod, "_compile_failed", False)

    def broken(fn):
        def run(*args):
            raise RuntimeError("no C++ compiler")
        return run

    monkeypatch.setattr(act_mod.torch, "compile", broken)
    ref = build_activation("sapl", 3, compiled=False)
    _randomise(ref, seed=7)
    act = build_activation("sapl", 3)
    act.load_state_dict(ref.state_dict())
    x = torch.randn(4, 3, 2, 2)
    with pytest.warns(UserWarning, match="torch.compile unavailable .RuntimeError: no C\\+\\+ compiler"):
        y = act(x)
    assert act_mod._compile_failed
    torch.testing.assert_close(y, ref(x), rtol=0, atol=0)


@pytest.mark.parametrize("name", ALL)
def test_every_activation_builds_and_runs(name):
    act = build_activation(name, 9)
    x = torch.randn(2, 9, 3, 3, requires_grad=True)
    y = act(x)
    expected_channels = 1 if name == "maxout" else 9
    assert y.shape == (2, expected_channels, 3, 3)
    y.sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()


def test_swish_default_beta_and_learnable():
    x = torch.randn(10, 2)
    torch.testing.assert_close(build_activation("swish", 2)(x), x * torch.sigmoid(0.2 * x))
    assert sum(p.numel() for p in build_activation("swish", 2).parameters()) == 0
    assert sum(p.numel() for p in build_activation("swish", 2, learnable_beta=True).parameters()) == 1


def test_unknown_name_and_option():
    with pytest.raises(ValueError, match="unknown activation 'nope'.*sapl"):
        build_activation("nope", 3)
    with pytest.raises(ValueError, match="bad option"):
        build_activation("relu", 3, per_channel=True)


def test_curve_and_state():
    model = torch.nn.Sequential(SAPL(4, compiled=False), torch.nn.ReLU(), APL(2, compiled=False))
    acts = learnable_activations(model)
    assert list(acts) == ["0", "2"]
    grid = torch.linspace(-3, 3, 7)
    curve = acts["0"].curve(grid)
    assert curve.shape == (4, 7)
    torch.testing.assert_close(curve[0], torch.relu(grid))
    state = activation_state(model)
    assert state["0"]["a_pos"][0] == [1.0] and set(state["2"]) == {"a"}


# --- smooth and learnable smooth units (Xie et al. 2020; Dai et al. 2022) ---------------------


def test_smooth_fixed_units_are_torchs():
    x = torch.linspace(-6, 6, 49).reshape(-1, 1)
    torch.testing.assert_close(build_activation("silu", 1)(x), x * torch.sigmoid(x))
    torch.testing.assert_close(build_activation("gelu", 1)(x), x * 0.5 * (1 + torch.erf(x / 2 ** 0.5)))
    torch.testing.assert_close(build_activation("softplus", 1)(x), torch.log1p(torch.exp(x)))
    for name in ("silu", "gelu", "softplus"):
        assert not list(build_activation(name, 3).parameters()), name


def test_psoftplus_is_softplus_at_init_and_tends_to_relu():
    x = torch.linspace(-5, 5, 101).reshape(-1, 1)
    act = build_activation("psoftplus", 1)
    torch.testing.assert_close(act(x), torch.nn.functional.softplus(x))
    assert [n for n, _ in act.named_parameters()] == ["log_a"]
    for a in (10.0, 100.0, 1000.0):
        gap = (build_activation("psoftplus", 1, a=a)(x) - torch.relu(x)).abs().max()
        assert 0 < gap <= torch.log(torch.tensor(2.0)) / a + 1e-6
    with pytest.raises(ValueError, match="psoftplus a must be > 0"):
        build_activation("psoftplus", 1, a=0.0)


def test_pssilu_matches_its_definition_and_limits():
    x = torch.linspace(-5, 5, 101).reshape(-1, 1)
    act = build_activation("pssilu", 1, a=2.0, b=0.3)
    torch.testing.assert_close(act(x), x * (torch.sigmoid(2 * x) - 0.3) / 0.7)
    near_zero = build_activation("pssilu", 1, a=1.5, b=1e-6)  # b -> 0: silu(a x) / a
    torch.testing.assert_close(near_zero(x), torch.nn.functional.silu(1.5 * x) / 1.5, atol=1e-5, rtol=0)
    half = build_activation("pssilu", 1, b=0.5)  # even: positive output for negative inputs
    torch.testing.assert_close(half(x), half(-x))
    assert (half(x[x.abs() > 0.05].reshape(-1, 1)) > 0).all()
    for bad in ({"b": 0.0}, {"b": 0.95}, {"a": -1.0}):
        with pytest.raises(ValueError, match="pssilu"):
            build_activation("pssilu", 1, **bad)


def test_learnable_smooth_units_keep_their_constraints_whatever_the_parameters():
    for raw in (-60.0, 60.0):
        act = build_activation("pssilu", 1)
        with torch.no_grad():
            act.log_a.fill_(raw / 10)
            act.b_logit.fill_(raw)
        assert act.a > 0 and 0 <= float(act.b) < 1
        y = act(torch.linspace(-3, 3, 13).reshape(-1, 1))
        assert torch.isfinite(y).all()


def test_learnable_smooth_units_train():
    """A few steps toward a target move every parameter (each gets a gradient)."""
    x = torch.linspace(-3, 3, 61).reshape(-1, 1)
    for name in ("psoftplus", "pssilu"):
        act = build_activation(name, 1)
        before = {n: p.detach().clone() for n, p in act.named_parameters()}
        opt = torch.optim.SGD(act.parameters(), lr=0.1)
        for _ in range(5):
            opt.zero_grad()
            ((act(x) - x.abs()) ** 2).mean().backward()
            opt.step()
        assert all(not torch.equal(before[n], p) for n, p in act.named_parameters()), name


@pytest.mark.parametrize("name,options", [("psoftplus", {"a": 1.7}), ("pssilu", {"a": 1.3, "b": 0.4}),
                                          ("silu", {}), ("gelu", {}), ("softplus", {})])
def test_smooth_units_gradcheck_float64(name, options):
    act = build_activation(name, 3, **options).double()
    g = torch.Generator().manual_seed(2)
    x = (torch.randn(2, 3, 4, 4, dtype=torch.float64, generator=g) * 2).requires_grad_()
    assert gradcheck(lambda x: act(x), (x,), eps=1e-6, atol=1e-5)
    for p in list(act.parameters()):
        assert gradcheck(lambda v, p=p: _with_param(act, p, v, x.detach()), (p.detach().clone().requires_grad_(),),
                         eps=1e-6, atol=1e-5)
