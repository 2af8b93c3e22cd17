"""The few-pixel encoding: a candidate for an image (C, H, W) is ``k`` rows of ``(row, col, c_1..c_C)``,
row/col rounded when painted, colours in [0, 1].

The pixel attacks paint their candidates with it and the result store rebuilds stored pixels with
it, so it sits below both (``attacks/candidates.py`` and ``adversarials.py``) and imports neither.
"""

from __future__ import annotations

import torch
from torch import Tensor


def paint(images: Tensor, candidates: Tensor) -> Tensor:
    """Copies of ``images`` (B, C, H, W) with the pixels of ``candidates`` (B, k, 2 + C) written in.

    When two of a candidate's pixels round to the same spot the later one wins; both writes carry
    its colour, so index_put_'s unspecified order among duplicate indices cannot change the result.
    """
    return paint_into(images.clone(), candidates)


def paint_into(out: Tensor, candidates: Tensor) -> Tensor:
    """``paint`` in place on ``out``, for batches that are already fresh copies."""
    b, k, _ = candidates.shape
    rows = candidates[..., 0].round().long()
    cols = candidates[..., 1].round().long()
    spot = rows * out.shape[-1] + cols  # (B, k)
    order = torch.arange(k, device=out.device)
    last = torch.where(spot[:, :, None] == spot[:, None, :], order, -1).amax(2)  # (B, k) index of the winner
    colours = candidates[..., 2:].gather(1, last[..., None].expand(-1, -1, out.shape[1])).to(out.dtype)
    who = torch.arange(b, device=out.device)[:, None].expand(b, k)
    out.permute(0, 2, 3, 1).index_put_((who, rows, cols), colours)  # permuted view: writes (B, k, C) into out
    return out


def pixel_records(candidates: Tensor) -> list[list[list[float]]]:
    """Each image's final candidate (N, k, D) as it is painted, for the result file: per pixel
    ``[row, col, c_1..c_C]`` with row/col rounded to integers and colours exact (a float32 survives
    the trip through a JSON double), so ``paint`` rebuilds the adversarial image bit for bit."""
    rounded = candidates.detach().float().cpu().clone()
    rounded[..., :2] = rounded[..., :2].round()
    return [[[int(px[0]), int(px[1]), *px[2:]] for px in cand] for cand in rounded.tolist()]
