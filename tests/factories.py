"""Model factories outside robench, named on the command line as ``tests.factories:<name>`` by
the tests of ``--model package.module:factory``."""

from __future__ import annotations

from typing import Any

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
