"""Activation functions by name: the fixed ones from torch and the learnable hinge units.

Every model takes an activation *factory* (``channels -> nn.Module``) and calls it once per layer,
so each layer owns its own parameters: whether S-APL slopes are shared across a layer or per
channel is an option of the unit, never an accident of reusing one instance.

The hinge units (APL, S-APL and its ablation variants) are all ``sum_j w_j relu(s_j (x - c_j))``
with fixed signs ``s_j``. Their forward goes through one ``torch.compile``d kernel by default: the
naive sum costs 2-3 full passes over the tensor per hinge, the compiled kernel one pass forward
and one backward, which is what keeps S-APL close to ReLU's throughput (see bench/activations.py).
S-APL's kernel evaluates one side at a time (S hinges of |x|, not 2S of x; bit-identical) and has
a hand-written backward. ``compiled=False`` gives the plain eager sum, the reference the compiled
forms are tested against.
"""

from __future__ import annotations

import types
import warnings
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .errors import ConfigError
from .registry import Registry

ActivationFactory = Callable[[int], nn.Module]


def _builder(name: str, obj: Any) -> Callable[..., nn.Module]:
    if not callable(obj):
        raise ConfigError(f"activation {name!r} is a {type(obj).__name__}, not a factory")
    return obj


# builder(channels, **options) -> nn.Module (channels: dim 1 of its input)
ACTIVATIONS: Registry[Callable[..., nn.Module]] = Registry("activation", group="robench.activations", check=_builder,
                                                          specs=True)
builtin_activation = ACTIVATIONS.register


def activation_names() -> list[str]:
    return ACTIVATIONS.names()


def build_activation(name: str, channels: int, **options: Any) -> nn.Module:
    """A fresh activation module for a layer with ``channels`` channels (dim 1 of its input)."""
    builder = ACTIVATIONS.get(name)
    try:
        module = builder(channels, **options)
    except TypeError as err:  # an option this activation does not take
        raise ValueError(f"bad option for activation {name!r}: {err}") from None
    except Exception as err:  # noqa: BLE001 - a plugin's code can raise anything
        if name not in ACTIVATIONS.external:
            raise
        raise ConfigError(f"activation {name} failed: {type(err).__name__}: {err}") from None
    if not isinstance(module, nn.Module):
        raise ConfigError(f"activation {name} returned a {type(module).__name__}, not a torch.nn.Module")
    return module


def activation_factory(name: str, **options: Any) -> ActivationFactory:
    """A per-layer factory; validates the name and options once, up front."""
    probe = build_activation(name, 1, **options)

    def factory(channels: int) -> nn.Module:
        return build_activation(name, channels, **options)

    factory.expansion = getattr(probe, "expansion", 1)  # type: ignore[attr-defined]
    return factory


class Activation(nn.Module):
    """Base of robench's own activation modules: knows its channel count and can draw itself."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.channels = channels

    @torch.no_grad()
    def curve(self, x: Tensor) -> Tensor:
        """The unit's output on a grid, per channel. x: (G,) -> (channels, G).

        Shared units return the same row for every channel; plots take row 0 of those.
        """
        grid = x.to(self._param_like()).reshape(-1, 1).expand(-1, self.channels)
        return self(grid).T.contiguous()

    def _param_like(self) -> Tensor:
        first = next(iter(self.parameters()), None)
        return first if first is not None else torch.empty(0)


def learnable_activations(model: nn.Module) -> dict[str, Activation]:
    """The activation modules of ``model`` that have parameters, by module path."""
    return {
        name: module
        for name, module in model.named_modules()
        if isinstance(module, Activation) and any(True for _ in module.parameters())
    }


def activation_state(model: nn.Module) -> dict[str, dict[str, list]]:
    """JSON-ready parameters of every learnable activation (for the shape-evolution plots)."""
    return {
        name: {pname: p.detach().cpu().tolist() for pname, p in module.named_parameters()}
        for name, module in learnable_activations(model).items()
    }


# --- fixed activations ------------------------------------------------------------------------


class _Fixed(Activation):
    def __init__(self, channels: int, fn: Callable[[Tensor], Tensor]) -> None:
        super().__init__(channels)
        self.fn = fn

    def forward(self, x: Tensor) -> Tensor:
        return self.fn(x)

    def extra_repr(self) -> str:
        return getattr(self.fn, "__name__", "")


def _fixed(name: str, fn: Callable[[Tensor], Tensor]) -> None:
    builtin_activation(name)(lambda channels: _Fixed(channels, fn))


_fixed("relu", F.relu)
_fixed("leaky_relu", F.leaky_relu)
_fixed("elu", F.elu)
_fixed("tanh", torch.tanh)
_fixed("sigmoid", torch.sigmoid)
# The smooth activations of Smooth Adversarial Training (Xie et al. 2020)
_fixed("silu", F.silu)  # x * sigmoid(x): swish at beta = 1
_fixed("gelu", F.gelu)  # x * Phi(x), the exact (erf) form
_fixed("softplus", F.softplus)  # log(1 + e^x)


# --- learnable smooth units (Dai, Mahloujifar & Mittal 2022) ------------------------------------
# One scalar of each parameter per layer (robench's factory builds one module per layer); Dai et al.
# share one scalar per network. Constraints hold by construction: a = exp(log_a) > 0, and
# b = B_MAX * sigmoid(b_logit) in (0, B_MAX), so no optimiser step can leave the allowed range.

PSSILU_B_MAX = 0.9  # b -> 1 divides by 1 - b -> 0; Dai et al. keep b in [0, 1)


def _positive(name: str, value: float) -> Tensor:
    if not value > 0:
        raise ValueError(f"{name} must be > 0, got {value}")
    return torch.tensor(float(value)).log()


class PSoftplus(Activation):
    """Parametric softplus: softplus(a x) / a with a learnable a > 0 (init 1: softplus). As a grows
    it tends to ReLU (within log(2) / a), as a shrinks to x / 2 + log(2) / a."""

    def __init__(self, channels: int, a: float = 1.0) -> None:
        super().__init__(channels)
        self.log_a = nn.Parameter(_positive("psoftplus a", a))

    @property
    def a(self) -> Tensor:
        return self.log_a.exp()

    def forward(self, x: Tensor) -> Tensor:
        a = self.a
        return F.softplus(a * x) / a


class PSSiLU(Activation):
    """Parametric shifted SiLU (Dai et al. 2022): x (sigmoid(a x) - b) / (1 - b), a > 0 and b in
    [0, 1) learnable. As b -> 0 it is x sigmoid(a x) = silu(a x) / a; b = 0.5 makes it even, x tanh(a x / 2),
    with positive outputs for negative inputs. Init a = 1, b = 0.25; b stays in (0, PSSILU_B_MAX)."""

    def __init__(self, channels: int, a: float = 1.0, b: float = 0.25) -> None:
        super().__init__(channels)
        if not 0 < b < PSSILU_B_MAX:
            raise ValueError(f"pssilu b must be in (0, {PSSILU_B_MAX}), got {b}")
        self.log_a = nn.Parameter(_positive("pssilu a", a))
        self.b_logit = nn.Parameter(torch.logit(torch.tensor(b / PSSILU_B_MAX, dtype=torch.float64)).float())

    @property
    def a(self) -> Tensor:
        return self.log_a.exp()

    @property
    def b(self) -> Tensor:
        return PSSILU_B_MAX * torch.sigmoid(self.b_logit)

    def forward(self, x: Tensor) -> Tensor:
        b = self.b
        return x * (torch.sigmoid(self.a * x) - b) / (1 - b)


builtin_activation("psoftplus")(PSoftplus)
builtin_activation("pssilu")(PSSiLU)


class PReLU(Activation):
    """torch's PReLU with one slope per channel (He et al. 2015), init 0.25."""

    def __init__(self, channels: int, init: float = 0.25) -> None:
        super().__init__(channels)
        self.weight = nn.Parameter(torch.full((channels,), float(init)))

    def forward(self, x: Tensor) -> Tensor:
        return F.prelu(x, self.weight)


builtin_activation("prelu")(PReLU)


class Swish(Activation):
    """x * sigmoid(beta * x); beta is fixed at 0.2 (paper §8.2) unless ``learnable_beta``."""

    def __init__(self, channels: int, beta: float = 0.2, learnable_beta: bool = False) -> None:
        super().__init__(channels)
        beta_t = torch.tensor(float(beta))
        if learnable_beta:
            self.beta = nn.Parameter(beta_t)
        else:
            self.register_buffer("beta", beta_t)

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.sigmoid(self.beta * x)


builtin_activation("swish")(Swish)


class Maxout(Activation):
    """Max over ``k`` groups of channels (Goodfellow et al. 2013).

    ``expansion = k`` tells the model to make the layer before it k times wider; the output has
    ``channels`` channels again. Piece j of channel c is input channel ``c * k + j``.
    """

    def __init__(self, channels: int, k: int = 9) -> None:
        super().__init__(channels)
        if k < 1:
            raise ValueError(f"maxout needs k >= 1 pieces, got {k}")
        self.k = k
        self.expansion = k

    def forward(self, x: Tensor) -> Tensor:
        n, c = x.shape[:2]
        return x.reshape(n, c // self.k, self.k, *x.shape[2:]).amax(dim=2)

    @torch.no_grad()
    def curve(self, x: Tensor) -> Tensor:
        raise ValueError("maxout has no curve of its own: it is a max over the layer's pieces")


builtin_activation("maxout")(Maxout)


# --- hinge units: APL, S-APL and variants ------------------------------------------------------


def _hinge_sum(x: Tensor, weights: Tensor, signs: Tensor, places: Tensor) -> Tensor:
    """sum_j weights[j] * relu(signs[j] * (x - places[j])).

    weights, places: (J, *broadcast) ready to broadcast against x; signs: (J,) of +-1.
    """
    y = weights[0] * torch.relu(signs[0] * (x - places[0]))
    for j in range(1, weights.shape[0]):
        y = y + weights[j] * torch.relu(signs[j] * (x - places[j]))
    return y


def _symmetric_shapes(x: Tensor, a_pos: Tensor, a_neg: Tensor, distances: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(S, width) slopes and (S, 1) distances laid out to broadcast against x with a hinge axis in
    front: (S, 1, width, 1, ...). Done inside the kernels, so it is traced, not run per call."""
    rows, trail = distances.shape[0], (1,) * (x.dim() - 2)
    return (a_pos.reshape((rows, 1, a_pos.shape[1]) + trail), a_neg.reshape((rows, 1, a_neg.shape[1]) + trail),
            distances.reshape((rows, 1, 1) + trail))


def _symmetric_hinge_sum(x: Tensor, a_pos: Tensor, a_neg: Tensor, distances: Tensor) -> Tensor:
    """S-APL's hinge sum evaluated one side at a time: sum_s a_s relu(|x| - b_s), a = a+ where x > 0
    and a- elsewhere.

    With every b_s >= 0, relu(x - b_s) is zero wherever x <= 0 and relu(-x - b_s) wherever x >= 0, and
    on its own side each equals relu(|x| - b_s) exactly (-(x + b) and -x - b round alike). So this is
    the 2S-term ``_hinge_sum`` with its zero terms left out: S hinge evaluations per element instead
    of 2S, and the same floats added in the same order (tested bitwise).
    a_pos, a_neg: (S, width), width 1 or x's channel count; distances: (S, 1).
    """
    a_pos, a_neg, distances = _symmetric_shapes(x, a_pos, a_neg, distances)
    size, positive = torch.abs(x), x > 0
    y = torch.where(positive, a_pos[0], a_neg[0]) * torch.relu(size - distances[0])
    for s in range(1, distances.shape[0]):
        y = y + torch.where(positive, a_pos[s], a_neg[s]) * torch.relu(size - distances[s])
    return y


def _symmetric_hinge_grads(
    grad: Tensor, x: Tensor, a_pos: Tensor, a_neg: Tensor, distances: Tensor
) -> tuple[Tensor, Tensor, Tensor]:
    """Gradients of ``_symmetric_hinge_sum`` for x, a_pos and a_neg, written out by hand.

    Written out rather than derived by autograd so that the slope sums reduce in two stages: first
    over each sample's spatial positions (or, for 2-D input, its features), then over the few
    partial sums. The derived backward reduces the whole batch at once, which inductor's CPU code
    does through a cascade-sum helper per slope (for accuracy past 4096 terms) that made the
    backward some 3x slower than its forward. Two short stages stay accurate without it.
    """
    rows, per_channel = distances.shape[0], a_pos.shape[1] > 1
    a_pos, a_neg, distances = _symmetric_shapes(x, a_pos, a_neg, distances)
    size, positive = torch.abs(x), x > 0
    # stage one: per (sample, channel) over positions; shared 2-D slopes: per sample over features
    inner = tuple(range(2, x.dim())) if x.dim() > 2 or per_channel else (1,)
    slope = torch.zeros_like(x)
    grads_pos, grads_neg = [], []
    for s in range(rows):
        ramp = torch.relu(size - distances[s])
        slope = slope + torch.where(ramp > 0, torch.where(positive, a_pos[s], a_neg[s]), 0.0)
        weighted = grad * ramp
        on_pos, on_neg = torch.where(positive, weighted, 0.0), torch.where(positive, 0.0, weighted)
        grads_pos.append(on_pos.sum(inner) if inner else on_pos)
        grads_neg.append(on_neg.sum(inner) if inner else on_neg)
    partial_pos, partial_neg = torch.stack(grads_pos), torch.stack(grads_neg)  # (S, N, C) or (S, N)
    if per_channel:  # stage two: over the batch
        return grad * slope * torch.sign(x), partial_pos.sum(1), partial_neg.sum(1)
    return (grad * slope * torch.sign(x), partial_pos.reshape(rows, -1).sum(1, keepdim=True),
            partial_neg.reshape(rows, -1).sum(1, keepdim=True))


_compiled_kernels: dict[tuple, Callable[..., Any]] = {}
_compile_failed = False


def _kernel(fn: Callable[..., Any], key: tuple) -> Callable[..., Any]:
    """The compiled ``fn`` for one (rank, hinges, per-channel) combination.

    torch.compile keeps its guards per code object and stops compiling after 8 variants of one;
    a model mixes 4-D and 2-D layers, APL and S-APL differ in hinge count, and train/eval differ in
    grad mode, so one shared code object would run past that limit and silently fall back to
    eager. Each combination therefore gets its own copy of the code object (and its own cache).
    """
    key = (fn.__name__, *key)
    if key not in _compiled_kernels:
        code = fn.__code__.replace(co_name=f"{fn.__name__}_r{key[1]}_j{key[2]}_{'pc' if key[3] else 'sh'}")
        copy = types.FunctionType(code, fn.__globals__, code.co_name)
        _compiled_kernels[key] = torch.compile(copy)  # static first; a shape change recompiles it dynamic
    return _compiled_kernels[key]


def _run(fn: Callable[..., Any], key: tuple, *args: Tensor) -> Any:
    """``fn(*args)`` through its compiled kernel, built on first use; ``fn`` itself, eager, where
    torch.compile cannot run (no C++ compiler, unsupported platform), with one warning."""
    global _compile_failed
    if _compile_failed:
        return fn(*args)
    try:
        return _kernel(fn, key)(*args)
    except Exception as err:  # noqa: BLE001 - any compiler failure means: use the eager form
        _compile_failed = True
        warnings.warn(f"torch.compile unavailable ({type(err).__name__}: {err}); hinge units run eager", stacklevel=3)
        return fn(*args)


class _SymmetricHinge(torch.autograd.Function):
    """``_symmetric_hinge_sum`` with ``_symmetric_hinge_grads`` as its backward.

    torch.compile traces through it (``_symmetric_hinge``), so forward and backward are each one
    compiled graph behind one AOTAutograd wrapper, like any compiled function, but the backward
    graph is the hand-written one. Eager (no compiler), it is the same math, still differentiable
    twice: the backward is made of differentiable tensor ops.
    """

    @staticmethod
    def forward(ctx: Any, x: Tensor, a_pos: Tensor, a_neg: Tensor, distances: Tensor) -> Tensor:
        ctx.save_for_backward(x, a_pos, a_neg, distances)
        return _symmetric_hinge_sum(x, a_pos, a_neg, distances)

    @staticmethod
    def backward(ctx: Any, grad: Tensor) -> tuple[Tensor | None, ...]:
        x, a_pos, a_neg, distances = ctx.saved_tensors
        return (*_symmetric_hinge_grads(grad, x, a_pos, a_neg, distances), None)


def _symmetric_hinge(x: Tensor, a_pos: Tensor, a_neg: Tensor, distances: Tensor) -> Tensor:
    return _SymmetricHinge.apply(x, a_pos, a_neg, distances)


class HingeUnit(Activation):
    """A learnable sum of hinges: ``sum_j w_j relu(s_j (x - c_j))``.

    Subclasses say which hinges exist (signs, places), which weights are learnable and how the
    learnable parameters map to the weights ``w``. Parameters are per channel or shared per layer.
    """

    def __init__(
        self,
        channels: int,
        signs: Sequence[float],
        places: Sequence[float],
        per_channel: bool,
        learnable_hinges: bool = False,
        compiled: bool = True,
    ) -> None:
        super().__init__(channels)
        self.per_channel = per_channel
        self.compiled = compiled
        self.register_buffer("signs", torch.tensor(signs, dtype=torch.float32))
        width = channels if per_channel else 1
        places_t = torch.tensor(places, dtype=torch.float32)[:, None].repeat(1, width)
        if learnable_hinges:
            self.places = nn.Parameter(places_t)
        else:
            self.register_buffer("places", places_t)

    def hinge_weights(self) -> Tensor:
        """(J, width) weights w_j, width = channels or 1."""
        raise NotImplementedError

    def _check_channels(self, x: Tensor) -> None:
        if self.per_channel and x.shape[1] != self.channels:
            raise ValueError(f"{type(self).__name__} built for {self.channels} channels got {x.shape[1]}")

    def forward(self, x: Tensor) -> Tensor:
        weights = self.hinge_weights()
        self._check_channels(x)
        if self.per_channel:
            shape = (weights.shape[0], self.channels) + (1,) * (x.dim() - 2)
        else:
            shape = (weights.shape[0],) + (1,) * x.dim()
        weights, places = weights.reshape(shape).to(x.dtype), self.places.reshape(shape).to(x.dtype)
        signs = self.signs.to(x.dtype)
        if self.compiled:
            return _run(_hinge_sum, (x.dim(), weights.shape[0], self.per_channel), x, weights, signs, places)
        return _hinge_sum(x, weights, signs, places)


class APL(HingeUnit):
    """Adaptive piecewise linear unit (Agostinelli et al. 2014), paper eq. 1:
    ``relu(x) + sum_s a_s relu(-x + b_s)``, ``a`` per channel.

    Hinges fixed at 0, +-1, +-2 by default (paper §8.2); ``learnable_hinges`` learns the b_s as
    Agostinelli et al. did. a_s start at 0, so a fresh APL equals ReLU, like a fresh S-APL.
    """

    def __init__(
        self,
        channels: int,
        hinges: Sequence[float] = (0.0, 1.0, -1.0, 2.0, -2.0),
        learnable_hinges: bool = False,
        compiled: bool = True,
    ) -> None:
        hinges = _check_hinges(hinges, "apl", allow_negative=True)
        # term 0 is the fixed relu(x); terms 1.. are a_s relu(-(x - b_s))
        super().__init__(
            channels,
            signs=[1.0] + [-1.0] * len(hinges),
            places=[0.0] + list(hinges),
            per_channel=True,
            learnable_hinges=learnable_hinges,
            compiled=compiled,
        )
        self.a = nn.Parameter(torch.zeros(len(hinges), channels))
        if learnable_hinges:  # the relu(x) hinge stays at 0: it is not one of the b_s
            self.places.register_hook(_zero_row0)

    def hinge_weights(self) -> Tensor:
        return torch.cat([torch.ones_like(self.a[:1]), self.a])


def _zero_row0(grad: Tensor) -> Tensor:
    grad = grad.clone()
    grad[0] = 0
    return grad


class SAPL(HingeUnit):
    """Symmetric APL (paper eq. 2): ``sum_s a+_s relu(x - b_s) + sum_s a-_s relu(-x - b_s)``.

    Hinges at b = 0, 1, 2, 2.5 on both sides by default (S = 4, paper §4); slopes shared by the
    whole layer unless ``per_channel``. a+ at the hinge 0 starts at 1, every other slope at 0, so
    a fresh S-APL is exactly ReLU. ``variant`` gives the paper's ablations (§5): ``positive`` and
    ``negative`` use ``+|a-|`` / ``-|a-|``; ``tied`` uses one slope set for both sides (even h).
    """

    variants = ("free", "positive", "negative", "tied")

    def __init__(
        self,
        channels: int,
        hinges: Sequence[float] = (0.0, 1.0, 2.0, 2.5),
        per_channel: bool = False,
        variant: str = "free",
        learnable_hinges: bool = False,
        compiled: bool = True,
    ) -> None:
        if variant not in self.variants:
            raise ValueError(f"unknown S-APL variant {variant!r}; known: {', '.join(self.variants)}")
        hinges = _check_hinges(hinges, "sapl", allow_negative=False)
        s = len(hinges)
        super().__init__(
            channels,
            signs=[1.0] * s + [-1.0] * s,
            places=list(hinges) + [-b for b in hinges],
            per_channel=per_channel,
            learnable_hinges=learnable_hinges,
            compiled=compiled,
        )
        self.variant = variant
        width = channels if per_channel else 1
        a_pos = torch.zeros(s, width)
        a_pos[list(hinges).index(min(hinges))] = 1.0  # ReLU at init: slope 1 at the first hinge
        self.a_pos = nn.Parameter(a_pos)
        if variant != "tied":
            self.a_neg = nn.Parameter(torch.zeros(s, width))

    def a_neg_weights(self) -> Tensor:
        """(S, width) slopes of the negative side, after the variant's constraint."""
        if self.variant == "tied":
            return self.a_pos
        if self.variant == "positive":
            return _abs_moving_at_zero(self.a_neg)
        if self.variant == "negative":
            return -_abs_moving_at_zero(self.a_neg)
        return self.a_neg

    def hinge_weights(self) -> Tensor:
        return torch.cat([self.a_pos, self.a_neg_weights()])

    def forward(self, x: Tensor) -> Tensor:
        """The compiled form runs the one-side-at-a-time sum (half the hinge evaluations, same floats);
        learnable hinges can cross zero, so they take the general sum, as does a 1-D input (the
        kernels lay parameters out for a batch axis)."""
        if not self.compiled or isinstance(self.places, nn.Parameter) or x.dim() < 2:
            return super().forward(x)
        self._check_channels(x)
        a_pos, a_neg = self.a_pos, self.a_neg_weights()
        distances = self.places[: a_pos.shape[0], :1]
        if a_pos.dtype != x.dtype:
            a_pos, a_neg, distances = a_pos.to(x.dtype), a_neg.to(x.dtype), distances.to(x.dtype)
        return _run(_symmetric_hinge, (x.dim(), a_pos.shape[0], self.per_channel), x, a_pos, a_neg, distances)

    def extra_repr(self) -> str:
        return f"channels={self.channels}, per_channel={self.per_channel}, variant={self.variant}"


def _abs_moving_at_zero(a: Tensor) -> Tensor:
    """|a| whose gradient at a = 0 is +1, not torch.abs's 0.

    The ablation variants start at a- = 0 (ReLU). With ``torch.abs`` the gradient there is exactly
    zero, so a- never moved and sapl_positive and sapl_negative trained bit-identically as ReLU
    with a learnable positive side (found while reproducing figure 3). With this form the optimiser
    can leave zero in the allowed direction; a step the other way flips a's sign and comes back.
    """
    return torch.where(a >= 0, a, -a)


def _check_hinges(hinges: Sequence[float], name: str, allow_negative: bool) -> list[float]:
    hinges = [float(h) for h in hinges]
    if not hinges:
        raise ValueError(f"{name} needs at least one hinge")
    if len(set(hinges)) != len(hinges):
        raise ValueError(f"{name} hinges must be distinct, got {hinges}")
    if not allow_negative and min(hinges) < 0:
        raise ValueError(f"{name} hinge places are distances b >= 0, got {hinges}")
    return hinges


builtin_activation("apl")(APL)
builtin_activation("sapl")(SAPL)
for _variant in ("positive", "negative", "tied"):
    builtin_activation(f"sapl_{_variant}")(
        lambda channels, _v=_variant, **options: SAPL(channels, variant=_v, **options)
    )
