"""The black-box searches' incremental forward: the model's first affine block computed once per image.

A few-pixel candidate differs from its clean image in k pixels. In robench's models the first
layers up to the first activation (Normalize, an optional eval-mode Dropout, a Conv2d or Flatten +
Linear, eval-mode BatchNorm) make one affine map A x + b, so the candidate's output there is the
clean image's plus A applied to the k changed pixels: for a 5x5 conv, 25 output positions per pixel
and channel instead of a whole convolution, and no painted image at all. On LeNet-5 that block
(normalise, conv 6@5x5, BatchNorm) is over half of a CPU forward; the rest of the model runs as
before on the sum.

Where a pointwise activation and a pooling layer with stride equal to its window follow a stride-1
conv (LeNet-5), those two are computed only on the pooled cells a changed pixel reaches (3x3 of
14x14 for one pixel); every other cell is the clean image's.

The sum rounds differently from a full forward (about 1e-7 relative), which can flip a near-tie in
a greedy selection; ``judge`` reruns the whole model eager in float32 on the painted images, so the
incremental forward can steer a search but never count a success.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor, nn
from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

__all__ = ["BoundStem", "Stem", "split_stem"]

_TRANSPARENT = (nn.Dropout, nn.Dropout1d, nn.Dropout2d, nn.Identity)  # identities in eval mode
_POOLS = (nn.MaxPool2d, nn.AvgPool2d)


def _pointwise(module: nn.Module) -> bool:
    """An activation that maps each value on its own (per-channel parameters allowed): robench's
    own but maxout, and torch's usual ones. Anything else ends the local stage."""
    from robench.activations import PReLU, Swish, HingeUnit, _Fixed  # activations imports nothing from attacks

    plain = (nn.ReLU, nn.LeakyReLU, nn.ELU, nn.GELU, nn.SiLU, nn.Tanh, nn.Sigmoid, nn.PReLU, nn.Hardtanh, nn.Softplus)
    return type(module) in (_Fixed, PReLU, Swish) or isinstance(module, HingeUnit) or type(module) in plain


def _tiling(pool: nn.Module) -> int | None:
    """The window of a pooling layer whose windows tile its input (stride = window, no padding, no
    dilation, floor mode), or None."""
    def one(v: object) -> int | None:
        if isinstance(v, int):
            return v
        return v[0] if isinstance(v, tuple) and len(set(v)) == 1 else None

    k, s = one(pool.kernel_size), one(pool.stride)
    plain = one(pool.padding) == 0 and not pool.ceil_mode and one(getattr(pool, "dilation", 1)) == 1
    if isinstance(pool, nn.AvgPool2d):
        plain = plain and pool.divisor_override is None
    return k if plain and k is not None and k == s else None


def _leaves(module: nn.Module) -> list[nn.Module]:
    """The chain of modules a plain nn.Sequential (nested ones expanded) runs in order."""
    if type(module) is nn.Sequential:
        return [leaf for child in module for leaf in _leaves(child)]
    return [module]


def _chain(model: nn.Module) -> list[nn.Module] | None:
    """The model as one chain of modules, or None where its forward is not a plain chain."""
    from robench.models import Classifier, Normalize  # models imports nothing from attacks

    if type(model) is not Classifier or type(model.normalize) is not Normalize:
        return None
    return [model.normalize, *_leaves(model.body)]


class TileMax(nn.Module):
    """Max pooling whose windows tile the input (window = stride, floor mode), as the maximum of the
    t*t strided slices: the same values as nn.MaxPool2d (a maximum is exact in any order), and on
    the CPU here 4-7x faster than its NCHW kernel (bench: 1.5 ms against 9.6 ms for LeNet-5's first
    pool over 512 images)."""

    def __init__(self, tile: int) -> None:
        super().__init__()
        self.tile = tile

    def forward(self, x: Tensor) -> Tensor:
        t = self.tile
        h, w = x.shape[-2] // t * t, x.shape[-1] // t * t
        out = x[..., 0:h:t, 0:w:t]
        for i in range(t):
            for j in range(t):
                if i or j:
                    out = torch.maximum(out, x[..., i:h:t, j:w:t])
        return out


def _folded(chain: list[nn.Module]) -> nn.Sequential:
    """``chain`` for the search: each eval-mode BatchNorm folded into the conv or linear layer
    before it (as inference engines do; copies, so the model is untouched), a tiling max pool as
    TileMax, eval-mode identities dropped. Fewer and cheaper passes over small batches, and a
    rounding that differs from the model's at ~1e-7, which judge() never sees."""
    out: list[nn.Module] = []
    for module in chain:
        last = out[-1] if out else None
        if type(last) is nn.Conv2d and _running_bn(module, 4):
            out[-1] = fuse_conv_bn_eval(last, module)
        elif type(last) is nn.Linear and _running_bn(module, 2):
            out[-1] = fuse_linear_bn_eval(last, module)
        elif type(module) is nn.MaxPool2d and _tiling(module):
            out.append(TileMax(_tiling(module)))
        elif not isinstance(module, _TRANSPARENT):
            out.append(module)
    return nn.Sequential(*out)


def _running_bn(module: nn.Module, dims: int) -> bool:
    kinds = {4: nn.BatchNorm2d, 2: nn.BatchNorm1d}
    return type(module) is kinds[dims] and module.running_mean is not None and module.running_var is not None


def _bn_scale(bn: nn.Module) -> Tensor:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    return scale * bn.weight if bn.weight is not None else scale


@dataclass(frozen=True)
class Stem:
    """A model split at its first activation: ``prefix`` (the affine block, run on clean images),
    ``rest`` (everything after), and the block's linear part as ``weight``: (O, C, Kh, Kw) for a
    conv, (C*H*W, O) for a linear layer, normalisation and BatchNorm scales folded in."""

    prefix: nn.Module
    rest: nn.Module
    weight: Tensor
    conv: nn.Conv2d | None
    # the local stage (after a stride-1 conv): a pointwise activation and a pool whose windows tile
    # its input (t x t), recomputed only on the cells a changed pixel reaches
    act: nn.Module | None = None
    pool: nn.Module | None = None
    tile: int = 1

    @torch.no_grad()
    def bind(self, images: Tensor) -> BoundStem:
        """The stem ready for candidates of ``images`` (N, C, H, W): their clean outputs computed
        now, once, and per pixel spot the outputs it reaches (the model must be in eval mode)."""
        n, c, h, w = images.shape
        base = self.prefix(images)
        pixels = images.permute(0, 2, 3, 1).reshape(n * h * w, c)  # a spot's colours in one row
        if self.conv is None:  # weight rows by spot: (H*W, C, O)
            per_spot = self.weight.view(c, h * w, -1).transpose(0, 1).contiguous()
            return BoundStem(self, (h, w), pixels, base, per_spot)
        o, _, kh, kw = self.weight.shape
        oh, ow = base.shape[2:]
        rows, cols = _output_map(h, self.conv, 0, oh), _output_map(w, self.conv, 1, ow)  # (H, Kh), (W, Kw)
        valid = (rows[:, None, :, None] >= 0) & (cols[None, :, None, :] >= 0)  # (H, W, Kh, Kw)
        place = torch.where(valid, rows[:, None, :, None] * ow + cols[None, :, None, :], 0)
        local = None
        if self.pool is not None:
            pooled = self.pool(self.act(base))  # the model's own modules on the clean images
            local = _LocalTables(pooled.flatten(1), *_blocks(h, w, self.conv, self.tile, pooled.shape[2:], ow),
                                 tuple(pooled.shape[2:]))
        return BoundStem(self, (h, w), pixels, base.flatten(1), self.weight.transpose(0, 1).reshape(c, o, kh * kw),
                         place.view(h * w, 1, kh * kw), valid.view(h * w, 1, kh * kw).to(base.dtype),
                         torch.arange(o, device=base.device).view(1, o, 1) * (oh * ow), (o, oh, ow), local)


def _output_map(size: int, conv: nn.Conv2d, axis: int, out: int) -> Tensor:
    """(size, K): the output index along ``axis`` that input index r reaches through kernel tap u,
    or -1 where it reaches none (out of range, or between two strides)."""
    k, s, p, d = conv.kernel_size[axis], conv.stride[axis], conv.padding[axis], conv.dilation[axis]
    reach = torch.arange(size)[:, None] + p - torch.arange(k)[None, :] * d  # i * s for tap u
    index = torch.div(reach, s, rounding_mode="floor")
    ok = (reach % s == 0) & (index >= 0) & (index < out)
    return torch.where(ok, index, -1).to(conv.weight.device)


def _blocks(h: int, w: int, conv: nn.Conv2d, tile: int, pooled: tuple[int, int], ow: int) -> tuple[Tensor, Tensor]:
    """Per pixel spot, the block of pooled cells its change reaches and the stem outputs under it:
    (H*W, span_h*span_w) pooled indices and (H*W, span_h*span_w*t*t) stem indices, cell by cell.

    A pixel at row r changes stem rows r + pad - K + 1 .. r + pad of a stride-1 conv, so pooled rows
    from (r + pad - K + 1) // t on, at most span = ceil((K - 1) / t) + 1 of them. The block is shifted
    inside the map at the edges; cells recomputed without a change come out as they were."""
    firsts = []
    for axis, (size, n) in enumerate(((h, pooled[0]), (w, pooled[1]))):
        kernel, pad = conv.kernel_size[axis], conv.padding[axis]
        span = min((kernel + tile - 2) // tile + 1, n)  # ceil((K - 1) / t) + 1 cells at most
        first = torch.div(torch.arange(size) + pad - kernel + 1, tile, rounding_mode="floor").clamp(0, n - span)
        firsts.append(first[:, None] + torch.arange(span))  # (size, span) pooled indices
    prow, pcol = firsts
    cells = prow[:, None, :, None] * pooled[1] + pcol[None, :, None, :]  # (H, W, span_h, span_w)
    srow = prow[..., None] * tile + torch.arange(tile)  # (H, span_h, t) stem rows under each cell
    scol = pcol[..., None] * tile + torch.arange(tile)
    under = srow[:, None, :, None, :, None] * ow + scol[None, :, None, :, None, :]  # (H, W, span_h, span_w, t, t)
    dev = conv.weight.device
    return cells.reshape(h * w, -1).to(dev), under.reshape(h * w, -1).to(dev)


@dataclass(frozen=True)
class _LocalTables:
    pooled: Tensor  # (N, O * H'' * W'') the local stage's clean output
    cells: Tensor  # (H*W, span_h * span_w) pooled cells a spot reaches
    under: Tensor  # (H*W, span_h * span_w * t * t) the stem outputs under each of those cells
    size: tuple[int, int]  # H'', W''


@dataclass(frozen=True)
class BoundStem:
    """A stem bound to a set of images: their clean outputs and per-spot tables, so scoring a
    candidate costs a few gathers and a scatter of the k pixels' taps (no Python loop over
    candidates; where the sums' order would otherwise not be fixed, one over the k pixel slots)."""

    stem: Stem
    size: tuple[int, int]  # H, W
    pixels: Tensor  # (N*H*W, C) the clean images, one spot per row
    base: Tensor  # (N, O*H'*W') or (N, O): the stem's clean output
    weight: Tensor  # conv (C, O, Kh*Kw); linear (H*W, C, O)
    place: Tensor | None = None  # conv: (H*W, 1, Kh*Kw) flat output position of each tap (0 where none)
    valid: Tensor | None = None  # conv: (H*W, 1, Kh*Kw) 1 where the tap lands in the output
    offset: Tensor | None = None  # conv: (1, O, 1) each channel's offset in the flat output
    shape: tuple[int, int, int] | None = None  # conv: (O, H', W')
    local: _LocalTables | None = None

    def spots(self, candidates: Tensor) -> Tensor:
        """(B, k) flat spot row * W + col of each candidate pixel, rounded as ``paint`` rounds."""
        return (candidates[..., 0].round() * self.size[1] + candidates[..., 1].round()).long()

    def features(self, who: Tensor, candidates: Tensor, spot: Tensor) -> Tensor:
        """The stem's output on images ``who`` (B,) painted with ``candidates`` (B, k, 2 + C) at
        ``spot`` (B, k), as ``paint`` paints them (a later pixel on the same spot wins)."""
        b, k, _ = candidates.shape
        h, w = self.size
        c = self.pixels.shape[1]
        flat = spot.flatten()
        was = self.pixels.index_select(0, (who[:, None] * (h * w) + spot).flatten())  # (B*k, C)
        delta = candidates[..., 2:].reshape(b * k, c).to(was.dtype) - was
        if k > 1:  # a pixel a later one paints over adds nothing
            over = (spot[:, :, None] == spot[:, None, :]).triu_(1).any(2)
            delta = delta.masked_fill(over.view(b * k, 1), 0.0)
        out = self.base.index_select(0, who)  # a fresh copy per candidate
        if self.shape is None:  # linear: the weight rows of the changed inputs
            change = torch.bmm(delta[:, None], self.weight.index_select(0, flat)).view(b, k, -1)
            for j in range(k):  # slots in order: a fixed summation order
                out += change[:, j]
            return out
        o, oh, ow = self.shape
        taps = (delta @ self.weight.flatten(1)).view(b * k, o, -1) * self.valid.index_select(0, flat)  # (B*k, O, KK)
        index = self.place.index_select(0, flat) + self.offset  # taps outside the output add 0 at 0
        if out.device.type == "cpu":  # the CPU kernel adds a row's entries in index order: slot by slot
            out.scatter_add_(1, index.view(b, -1), taps.view(b, -1))
        else:  # a GPU adds with atomics, in no fixed order: one slot at a time, where no index repeats
            taps, index = taps.view(b, k, -1), index.view(b, k, -1)  # (but the zeros)
            for j in range(k):
                out.scatter_add_(1, index[:, j], taps[:, j])
        return out.view(b, o, oh, ow)

    def pooled_features(self, who: Tensor, spot: Tensor, stem_out: Tensor) -> Tensor:
        """The local stage's output for candidates at ``spot`` (B, k): the clean one, with the block
        of cells each pixel reaches recomputed from their stem output ``stem_out`` (B, O, H', W'):
        the t*t values under each cell gathered side by side, activated, then reduced."""
        t, stem = self.local, self.stem
        b, o = stem_out.shape[:2]
        flat = spot.flatten()
        under = t.under.index_select(0, flat).view(b, 1, -1).expand(b, o, -1)  # (B, O, k*cells*t*t)
        values = stem.act(stem_out.flatten(2).gather(2, under).view(b, o, -1, stem.tile ** 2))
        cells = values.amax(3) if isinstance(stem.pool, nn.MaxPool2d) else values.mean(3)  # (B, O, k*cells)
        out = t.pooled.index_select(0, who).view(b, o, -1)
        # blocks of two pixels may share cells; both computed them from the same stem_out
        out.scatter_(2, t.cells.index_select(0, flat).view(b, 1, -1).expand(b, o, -1), cells)
        return out.view(b, o, *t.size)

    def logits(self, who: Tensor, candidates: Tensor) -> Tensor:
        """The model's logits on images ``who`` (B,) painted with ``candidates`` (B, k, 2 + C)."""
        spot = self.spots(candidates)
        feats = self.features(who, candidates, spot)
        if self.local is not None:
            feats = self.pooled_features(who, spot, feats)
        return self.stem.rest(feats)


def split_stem(model: nn.Module, image_shape: tuple[int, ...]) -> Stem | str:
    """``model`` split after its first affine block, or the reason it cannot be (a string).

    Splits robench's own models (a Classifier whose body is a chain of nn.Sequential) whose first
    layers are Normalize, then eval-mode identities (Dropout), then a Conv2d (zero padding, one
    group) or Flatten + Linear, then any eval-mode BatchNorm with running statistics.
    """
    chain = _chain(model)
    if chain is None:
        return f"{type(model).__name__} is not a robench Classifier with a sequential body"
    norm, c = chain[0], image_shape[1]
    i = 1
    while i < len(chain) and isinstance(chain[i], _TRANSPARENT):
        i += 1
    flat = i < len(chain) and type(chain[i]) is nn.Flatten and chain[i].start_dim == 1 and chain[i].end_dim == -1
    if flat:
        i += 1
        while i < len(chain) and isinstance(chain[i], _TRANSPARENT):
            i += 1
    layer = chain[i] if i < len(chain) else None
    if flat and type(layer) is nn.Linear:
        per_input = norm.std.flatten().repeat_interleave(image_shape[2] * image_shape[3])  # NCHW flatten order
        weight = layer.weight / per_input  # (O, C*H*W)
        dims = 2
    elif not flat and type(layer) is nn.Conv2d and layer.groups == 1 and layer.padding_mode == "zeros" \
            and not isinstance(layer.padding, str) and layer.in_channels == c:
        weight = layer.weight / norm.std.view(1, c, 1, 1)
        dims = 4
    else:
        return f"its first layer after Normalize is {type(layer).__name__}, not a Conv2d or Flatten + Linear"
    i += 1
    while i < len(chain) and (isinstance(chain[i], _TRANSPARENT) or _running_bn(chain[i], dims)):
        if not isinstance(chain[i], _TRANSPARENT):
            weight = weight * _bn_scale(chain[i]).view(-1, *[1] * (weight.dim() - 1))
        i += 1
    weight = (weight.t() if dims == 2 else weight).contiguous().detach()
    prefix, conv = nn.Sequential(*chain[:i]), layer if dims == 4 else None
    # the local stage: a pointwise activation, then a tiling pool, after a stride-1, undilated conv
    if dims == 4 and layer.stride == (1, 1) and layer.dilation == (1, 1) and i + 1 < len(chain) \
            and _pointwise(chain[i]) and isinstance(chain[i + 1], _POOLS) and _tiling(chain[i + 1]):
        return Stem(prefix, _folded(chain[i + 2 :]), weight, conv, chain[i], chain[i + 1], _tiling(chain[i + 1]))
    return Stem(prefix, _folded(chain[i:]), weight, conv)
