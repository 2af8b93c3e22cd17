"""Mish (Misra 2019), x * tanh(softplus(x)), and a learnable variant, as a robench plugin.

An activation factory takes the layer's channel count (dim 1 of its input) and the options given
with ``--act-opt KEY=VALUE``, and returns a fresh module. Nothing here imports robench: a plugin
only has to follow that contract.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn
from torch.nn import functional as F


class Mish(nn.Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.mish(x)


class MishBeta(nn.Module):
    """x * tanh(softplus(beta * x) / beta) with one learnable beta per channel (beta = 1 is Mish)."""

    def __init__(self, channels: int, beta: float = 1.0) -> None:
        super().__init__()
        if beta <= 0:
            raise ValueError(f"beta must be > 0, got {beta}")
        self.beta = nn.Parameter(torch.full((channels,), float(beta)))

    def forward(self, x: Tensor) -> Tensor:
        beta = self.beta.view(1, -1, *([1] * (x.dim() - 2))).clamp_min(1e-3)
        return x * torch.tanh(F.softplus(beta * x) / beta)


def mish(channels: int) -> nn.Module:
    return Mish()


def mish_beta(channels: int, beta: float = 1.0) -> nn.Module:
    return MishBeta(channels, beta)
