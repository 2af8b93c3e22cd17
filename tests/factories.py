"""Model factories outside robench, named on the command line as ``tests.factories:<name>`` by
the tests of ``--model package.module:factory``."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn


def tiny_cnn(act: Any, num_classes: int, in_channels: int) -> nn.Module:
    """A small conv net as a user would write one: it takes no ``image_size`` (robench must not
    pass it) and asks ``act`` for each activation."""
    return nn.Sequential(
        nn.Conv2d(in_channels, 8, 3, padding=1), nn.BatchNorm2d(8), act(8), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.BatchNorm2d(16), act(16), nn.AdaptiveAvgPool2d(2),
        nn.Flatten(), nn.Linear(64, num_classes),
    )


def not_a_module(act: Any, num_classes: int, in_channels: int) -> int:
    return 3


def wrong_head(act: Any, num_classes: int, in_channels: int) -> nn.Module:
    return nn.Sequential(nn.Flatten(), nn.LazyLinear(num_classes + 1))


def crashes(act: Any, num_classes: int, in_channels: int) -> nn.Module:
    raise RuntimeError("out of coffee")


NOT_CALLABLE = 7


def noparams(act: Any, num_classes: int, in_channels: int) -> nn.Module:
    """Logits from a fixed pooling: a model with nothing to train."""
    return nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Flatten(), _Fixed(in_channels, num_classes))


class _Fixed(nn.Module):
    def __init__(self, in_channels: int, num_classes: int) -> None:
        super().__init__()
        self.register_buffer("w", torch.ones(num_classes, in_channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x @ self.w.T
