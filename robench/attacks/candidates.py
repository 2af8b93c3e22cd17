"""What every black-box few-pixel attack shares: the candidate encoding and the one evaluator.

A candidate for an image of shape (C, H, W) is ``k`` rows of ``(row, col, c_1..c_C)``: row/col
continuous in [0, H-1] / [0, W-1] and rounded when painted, colours in [0, 1]. The DE
(``pixel.py``) and Sparse-RS (``sparse_rs.py``) both search this space, paint with ``paint``
(``robench/pixels.py``, shared with the store that rebuilds stored pixels) and
score with ``evaluate``; neither calls the model itself, so chunking, the loss and (later) a
compiled forward live in one place.
"""

from __future__ import annotations

import copy
import dataclasses
import logging
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import Tensor, nn

from robench.attacks.base import EvalMode
from robench.attacks.incremental import BoundStem, split_stem
from robench.attacks.spec import AttackSpec, member_options
from robench.pixels import paint, paint_into, pixel_records

__all__ = ["BOUNDS", "COMPILE_WORTH", "FORWARDS", "INCREMENTAL_TOLERANCE", "LOSSES", "SEARCH_DTYPES", "EvalMode", "SearchForward", "check_search_budget",
           "evaluate", "few_pixel_spec", "forward_batch", "paint", "pixel_records", "pixel_upper", "scheduled_share",
           "search_forward"]

# Both map any real coordinate into [0, upper]; "wrap" is periodic (upper itself maps to 0, which
# rounding makes harmless for rows/cols), and a zero-width range (H == 1) maps to 0.
BOUNDS: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "clip": lambda x, upper: torch.minimum(x.clamp_min(0), upper),
    "wrap": lambda x, upper: torch.where(upper > 0, torch.remainder(x, upper.clamp_min(1e-12)), 0.0),
}


def _true_prob(logits: Tensor, labels: Tensor) -> Tensor:
    return logits.softmax(1).gather(1, labels[:, None]).squeeze(1)


def _margin(logits: Tensor, labels: Tensor) -> Tensor:
    true = logits.gather(1, labels[:, None]).squeeze(1)
    others = logits.scatter(1, labels[:, None], float("-inf")).amax(1)
    return true - others


# Losses an attack minimises; both are below their threshold exactly when the image is fooled
# (margin < 0; a true-class probability can stay the largest below 0.5, so "prob" has no threshold).
LOSSES: dict[str, Callable[[Tensor, Tensor], Tensor]] = {
    "prob": _true_prob,  # softmax probability of the true class (Su et al., the paper's DE)
    "margin": _margin,  # true logit minus the best other logit (Sparse-RS, CW)
}


def pixel_upper(shape: torch.Size | tuple[int, ...], device: torch.device) -> Tensor:
    """Upper bounds (D,) of one candidate row for images (N, C, H, W); every lower bound is 0."""
    _, c, h, w = shape
    return torch.tensor([h - 1, w - 1] + [1.0] * c, device=device)


def few_pixel_spec(name: str, config_cls: type, fn: Any, **facts: Any) -> AttackSpec:
    """The spec of a black-box search over ``config.pixels`` pixels (the L0 threat), one setting
    per run: what the DE and Sparse-RS share; ``facts`` adds the rest (title, tag, cost, ...)."""
    return AttackSpec(
        name, config_cls, fn,
        settings=lambda c: [(f"{c.pixels}px", c)],
        budget=lambda c: {"l0_budget": c.pixels},
        deterministic=False,
        threat=lambda c: ("l0", float(c.pixels)),
        white_box=False,
        threats=("l0",),
        at_budget=lambda norm, b, o: config_cls(pixels=int(b), **member_options(o, {"pixels"}, name)),
        default_in=("l0",),
        shorthand="pixels",
        **facts,
    )


def check_search_budget(queries: int, p_init: float, max_batch: int | None) -> None:
    """The settings every score-based random search (Sparse-RS, Square) shares: a query budget, the
    initial share of the image it moves, and the forward's batch bound."""
    if queries < 1:
        raise ValueError(f"queries must be >= 1, got {queries}")
    if not 0 < p_init <= 1:
        raise ValueError(f"p_init must be in (0, 1], got {p_init}")
    if max_batch is not None and max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")


def scheduled_share(iteration: int, queries: int, p_init: float, schedule: tuple[tuple[int, int], ...]) -> float:
    """The share p(it) a random search moves at ``iteration`` of a ``queries`` budget: ``p_init``
    divided by the factor of the first ``(threshold, factor)`` of ``schedule`` whose threshold the
    iteration passes, thresholds on a 10,000-query scale (the Sparse-RS and Square papers' schedules,
    rescaled to the budget)."""
    scaled = int(iteration / queries * 10_000)
    for threshold, factor in schedule:
        if scaled > threshold:
            return p_init / factor
    return p_init


def forward_batch(max_batch: int | None, device: torch.device) -> int:
    """Candidate images per forward pass: ``max_batch``, or 512 on a CPU / 8192 on a GPU.

    The painted batch alone is max_batch*C*H*W floats (8192 CIFAR images = 100 MB) plus the
    model's activations. On 2 CPU cores LeNet-5 runs 33k images/s at batches of 512 but 14k at
    8192 (activations no longer fit in cache), so big chunks only pay on a GPU.
    """
    return max_batch or (8192 if device.type == "cuda" else 512)


# The forward pass of a search: "incremental" computes the model's first affine block once per
# clean image and adds each candidate's k pixels through it (incremental.py), "eager" calls the model
# on painted images, "compiled" a torch.compile'd copy for one static batch shape, smaller batches
# zero-padded up to it, so it compiles once per model, shape and process. On the 2 CPU cores here
# compiling does not pay: a dynamic-shape compile ran the DE at 0.89x eager, the static one at
# 0.99-1.16x (bench/search_forward.py; the forward alone is 1.6x, but the convolutions, most of the
# time, are the same oneDNN calls either way), Sparse-RS padded at 0.62-0.76x. The incremental
# forward skips the first convolution, the painting and the normalisation instead. So "auto" is
# incremental wherever the model splits (robench's own models), else compiled on a GPU for the DE's
# fixed chunks of a search of COMPILE_WORTH candidate images or more (not yet measured on a GPU),
# else eager. judge() always runs the whole model eager in float32, so a kernel or a sum that rounds
# differently can steer a search but never count a success.
FORWARDS = ("auto", "eager", "compiled", "incremental")
# The search may run in a lower precision (a GPU's bf16/fp16 units); on the CPU here both ran LeNet-5
# 4-5x slower than float32, so float32 is the default. Every verdict is judge()'s, in float32.
SEARCH_DTYPES = {"float32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
COMPILE_WORTH = 1_000_000
# The incremental forward must give the model's own logits on a few random candidates to within
# this share of their largest magnitude (float32 rounding is ~1e-7), else the search runs eager.
INCREMENTAL_TOLERANCE = 1e-4
_compiled: weakref.WeakKeyDictionary[nn.Module, dict[tuple[int, str], Callable[[Tensor], Tensor] | None]] = weakref.WeakKeyDictionary()
_log = logging.getLogger("robench.attacks")


@dataclass(frozen=True)
class SearchForward:
    """The forward a search calls, what it is (``eager``/``compiled``/``incremental``) and the
    seconds this call spent compiling (0 when that shape was compiled before in this process), kept
    apart from the attack's own time. ``fn`` maps painted images to logits; ``stem``, for the
    incremental forward, scores candidates of the images it was bound to without painting them."""

    fn: Callable[[Tensor], Tensor]
    kind: str
    compile_s: float = 0.0
    dtype: str = "float32"
    stem: BoundStem | None = None

    def logits(self, images: Tensor, who: Tensor, candidates: Tensor) -> Tensor:
        """Float32 logits of ``images[who]`` painted with ``candidates`` (B, k, 2 + C)."""
        if self.stem is not None:
            return self.stem.logits(who, candidates).float()
        return self.fn(paint_into(images[who], candidates)).float()  # images[who] copies

    def meta(self) -> dict[str, Any]:
        return {"forward": self.kind, "compile_s": round(self.compile_s, 3), "search_dtype": self.dtype}


def search_forward(model: nn.Module, choice: str, budget: int, images: Tensor, rows: int,
                   fixed_batch: bool, dtype: str = "float32") -> SearchForward:
    """The forward for a search of at most ``budget`` candidate images of ``images`` (N, C, H, W),
    fed batches of at most ``rows`` candidates; ``fixed_batch``: nearly every batch has ``rows``;
    ``dtype`` a key of SEARCH_DTYPES (logits come back float32). Falls back to eager, logged at debug
    level (info when the incremental forward was asked for by name), where the model does not split
    or its incremental logits disagree with the model's, or where torch.compile fails."""
    if choice not in FORWARDS:
        raise ValueError(f"unknown forward {choice!r}; known: {', '.join(FORWARDS)}")
    if choice in ("auto", "incremental"):
        stem = _incremental(model, images, dtype, quiet=choice == "auto")
        if stem is not None:
            return SearchForward(_in_dtype(model, dtype), "incremental", dtype=dtype, stem=stem)
    worth = images.device.type == "cuda" and fixed_batch and budget >= COMPILE_WORTH
    if choice in ("eager", "incremental") or (choice == "auto" and not worth):
        return SearchForward(_in_dtype(model, dtype), "eager", dtype=dtype)
    shapes = _compiled.setdefault(model, {})
    key = (rows, dtype)
    compile_s = 0.0
    if key not in shapes:
        start = time.perf_counter()
        shapes[key] = _compile(_in_dtype(model, dtype), rows, images[:2], model)
        compile_s = time.perf_counter() - start
    fn = shapes[key]
    if fn is None:  # torch.compile failed for this model: search eager
        return SearchForward(_in_dtype(model, dtype), "eager", dtype=dtype)
    return SearchForward(fn, "compiled", compile_s, dtype)


@torch.no_grad()
def _incremental(model: nn.Module, images: Tensor, dtype: str, quiet: bool) -> BoundStem | None:
    """The model's stem bound to ``images`` and checked against the model on a few random
    candidates, or None (logged at debug level, or at info when asked for by name) where it does
    not split or disagrees."""
    log = _log.debug if quiet else _log.info
    with EvalMode(model):
        stem = split_stem(model, tuple(images.shape))
        if isinstance(stem, str):
            log("incremental forward unavailable (%s); searching eager", stem)
            return None
        bound = stem.bind(images)
        who = torch.arange(min(len(images), 4), device=images.device).repeat_interleave(2)
        probe = torch.rand(len(who), 3, 2 + images.shape[1], generator=torch.Generator().manual_seed(0))
        probe = (probe * pixel_upper(images.shape, torch.device("cpu"))).to(images.device)
        want, got = model(paint(images[who], probe)).float(), bound.logits(who, probe).float()
    scale = want.abs().max().clamp_min(1.0)
    if not (got - want).abs().max() <= INCREMENTAL_TOLERANCE * scale:
        log("incremental forward disagrees with the model (max |diff| %.3g); searching eager", (got - want).abs().max())
        return None
    if dtype != "float32":
        bound = dataclasses.replace(bound, stem=dataclasses.replace(stem, rest=_in_dtype(stem.rest, dtype)))
    return bound


def _compile(base: nn.Module, rows: int, sample: Tensor, model: nn.Module) -> Callable[[Tensor], Tensor] | None:
    """``base`` compiled for batches of ``rows`` and run once on ``sample`` (so the compile happens
    now, timed apart from the search); None, logged at debug level, where torch.compile fails."""
    try:
        fn = _padded(torch.compile(base, dynamic=False), rows)
        with torch.no_grad(), EvalMode(model):
            fn(sample)
    except Exception as err:  # noqa: BLE001 - any compiler failure means: search eager
        _log.debug("torch.compile unavailable for the search forward (%s: %s); running eager", type(err).__name__, err)
        return None
    return fn


class _Cast(nn.Module):
    """A copy of a model in a lower precision: images go in cast, logits come out float32."""

    def __init__(self, model: nn.Module, dtype: torch.dtype) -> None:
        super().__init__()
        self.model = copy.deepcopy(model).to(dtype)
        self.dtype = dtype

    def forward(self, x: Tensor) -> Tensor:
        return self.model(x.to(self.dtype)).float()


def _in_dtype(model: nn.Module, dtype: str) -> nn.Module:
    if dtype not in SEARCH_DTYPES:
        raise ValueError(f"unknown search dtype {dtype!r}; known: {', '.join(SEARCH_DTYPES)}")
    if dtype == "float32":
        return model
    return _Cast(model, SEARCH_DTYPES[dtype]).eval()


def _padded(fn: Callable[[Tensor], Tensor], rows: int) -> Callable[[Tensor], Tensor]:
    """``fn`` for one batch shape: a batch (B, ...) with B < rows is zero-padded to ``rows`` and the
    padding's outputs dropped; a bigger one goes through in slices of ``rows``."""

    def call(x: Tensor) -> Tensor:
        if x.shape[0] == rows:
            return fn(x)
        if x.shape[0] > rows:
            return torch.cat([call(x[i : i + rows]) for i in range(0, x.shape[0], rows)])
        pad = x.new_zeros((rows - x.shape[0], *x.shape[1:]))
        return fn(torch.cat([x, pad]))[: x.shape[0]]

    return call


def evaluate(
    model: nn.Module, images: Tensor, labels: Tensor, cands: Tensor, loss: str, max_batch: int,
    forward: SearchForward | None = None, rows: Tensor | None = None,
) -> tuple[Tensor, Tensor]:
    """Loss and misclassification of every candidate of every image, in chunks of ``max_batch``.

    images (N, C, H, W), labels (N,), cands (A, P, k, D) for the images ``rows`` (A,) (default: all
    N) -> two (A, P) tensors, float32 and bool. ``forward`` (default: the model, eager) computes the
    logits; an incremental one must be bound to these ``images``. The model must be in eval mode and
    called under no_grad (the attacks see to both).
    """
    a, p = cands.shape[:2]
    flat = cands.reshape(a * p, *cands.shape[2:])
    rows = torch.arange(a, device=images.device) if rows is None else rows
    owner = rows.repeat_interleave(p)
    fn = LOSSES[loss]
    call = SearchForward(model, "eager") if forward is None else forward
    values, fooled = [], []
    for start in range(0, a * p, max_batch):  # chunks only bound memory
        who = owner[start : start + max_batch]
        logits = call.logits(images, who, flat[start : start + max_batch])
        y = labels[who]
        values.append(fn(logits, y))
        fooled.append(logits.argmax(1) != y)
    if len(values) == 1:  # most calls: one chunk (Sparse-RS: every call)
        return values[0].view(a, p), fooled[0].view(a, p)
    return torch.cat(values).view(a, p), torch.cat(fooled).view(a, p)
