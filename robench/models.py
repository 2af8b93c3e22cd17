"""The paper's models by name, each buildable with any registered activation.

Every conv or linear layer that feeds an activation is followed by BatchNorm and then the
activation (paper §8.1: S-APL's fixed hinges assume unit-Gaussian inputs). Input normalisation is
the model's first layer, so attacks and data loaders only ever see images in [0, 1].
"""

from __future__ import annotations

import inspect
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import torch
import torchvision
from torch import Tensor, nn

from .activations import ActivationFactory, activation_factory
from .errors import ConfigError
from .registry import Registry


def _builder(name: str, obj: Any) -> Callable[..., nn.Module]:
    if not callable(obj):
        raise ConfigError(f"model {name!r} is a {type(obj).__name__}, not a factory")
    return obj


# builder(act=factory, num_classes, in_channels[, image_size]) -> body that takes normalised images
MODELS: Registry[Callable[..., nn.Module]] = Registry("model", group="robench.models", check=_builder, specs=True)
register_model = MODELS.register


@dataclass(frozen=True)
class ModelArgs:
    """Everything needed to rebuild a model; stored beside the weights in every checkpoint."""

    name: str
    act: str = "relu"
    num_classes: int = 10
    in_channels: int = 3
    image_size: int = 32
    mean: tuple[float, ...] = (0.0,)
    std: tuple[float, ...] = (1.0,)
    act_options: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        d = asdict(self)
        d["mean"], d["std"] = list(self.mean), list(self.std)
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> ModelArgs:
        d = dict(d)
        d["mean"], d["std"] = tuple(d["mean"]), tuple(d["std"])
        return cls(**d)


def model_names() -> list[str]:
    return MODELS.names()


def build_model(
    name: str,
    act: str = "relu",
    num_classes: int = 10,
    in_channels: int = 3,
    image_size: int = 32,
    mean: Sequence[float] = (0.0,),
    std: Sequence[float] = (1.0,),
    act_options: dict[str, Any] | None = None,
) -> nn.Module:
    """Build ``name`` with activation ``act``; the result maps [0, 1] images to logits."""
    return build_model_from_args(
        ModelArgs(name, act, num_classes, in_channels, image_size, tuple(mean), tuple(std), dict(act_options or {}))
    )


def build_model_from_args(args: ModelArgs) -> nn.Module:
    """The model ``args`` describe: its body (from the registered or imported factory) after a
    Normalize layer; a factory that fails, returns no module or gives logits of the wrong shape is
    a ConfigError that says which."""
    builder = MODELS.get(args.name)
    factory = activation_factory(args.act, **args.act_options)
    kwargs: dict[str, Any] = {"act": factory, "num_classes": args.num_classes, "in_channels": args.in_channels,
                              "image_size": args.image_size}
    if args.name in MODELS.external:  # robench's own take all four; a plugin may not take image_size
        try:
            params = inspect.signature(builder).parameters
        except (TypeError, ValueError):
            params = {}
        if "image_size" not in params and not any(p.kind is p.VAR_KEYWORD for p in params.values()):
            kwargs.pop("image_size")
        try:
            body = builder(**kwargs)
        except Exception as err:  # noqa: BLE001 - user code can raise anything
            raise ConfigError(f"model factory {args.name} failed: {type(err).__name__}: {err}") from None
    else:
        body = builder(**kwargs)
    if not isinstance(body, nn.Module):
        raise ConfigError(f"model factory {args.name} returned a {type(body).__name__}, not a torch.nn.Module")
    model = Classifier(Normalize(args.mean, args.std, args.in_channels), body)
    check_logits(model, args.in_channels, args.image_size, args.num_classes, f"model {args.name}")
    return model


@torch.no_grad()
def check_logits(model: nn.Module, channels: int, size: int, num_classes: int, what: str) -> None:
    """Run two blank images through ``model`` (in eval mode, so nothing it holds changes) and
    require (2, num_classes) logits: a model with the wrong head would otherwise be attacked,
    and its argmax over the wrong classes counted."""
    param = next(model.parameters(), None)
    x = torch.zeros(2, channels, size, size, device=param.device if param is not None else "cpu")
    was_training = model.training
    model.eval()
    try:
        out = model(x)
    except Exception as err:  # noqa: BLE001 - user code can raise anything
        raise ConfigError(f"{what} fails on a batch of shape {tuple(x.shape)}: {type(err).__name__}: "
                          f"{str(err).splitlines()[0] if str(err) else ''}") from None
    finally:
        model.train(was_training)
    shape = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if shape != (2, num_classes):
        raise ConfigError(f"{what} maps a batch of shape {tuple(x.shape)} to {shape}, not (2, {num_classes}) logits")


class Normalize(nn.Module):
    """(x - mean) / std per channel, as the model's first layer."""

    def __init__(self, mean: Sequence[float], std: Sequence[float], channels: int) -> None:
        super().__init__()
        mean_t = torch.tensor(list(mean), dtype=torch.float32)
        std_t = torch.tensor(list(std), dtype=torch.float32)
        if mean_t.numel() not in (1, channels) or std_t.numel() not in (1, channels):
            raise ValueError(f"mean/std need 1 or {channels} values")
        if (std_t <= 0).any():
            raise ValueError("std must be positive")
        self.register_buffer("mean", mean_t.expand(channels).clone().view(1, channels, 1, 1))
        self.register_buffer("std", std_t.expand(channels).clone().view(1, channels, 1, 1))

    def forward(self, x: Tensor) -> Tensor:
        return (x - self.mean) / self.std


class Classifier(nn.Module):
    """Normalisation followed by the network body; input (N, C, H, W) in [0, 1], output logits."""

    def __init__(self, normalize: Normalize, body: nn.Module) -> None:
        super().__init__()
        self.normalize = normalize
        self.body = body

    def forward(self, x: Tensor) -> Tensor:
        return self.body(self.normalize(x))


def _expansion(act: ActivationFactory) -> int:
    return getattr(act, "expansion", 1)


def conv_bn_act(cin: int, cout: int, kernel: int, act: ActivationFactory, stride: int = 1, padding: int = 0) -> nn.Sequential:
    """Conv -> BatchNorm -> activation; the conv is widened when the activation (maxout) needs it."""
    wide = cout * _expansion(act)
    return nn.Sequential(
        nn.Conv2d(cin, wide, kernel, stride=stride, padding=padding, bias=False), nn.BatchNorm2d(wide), act(cout)
    )


def linear_bn_act(fin: int, fout: int, act: ActivationFactory) -> nn.Sequential:
    wide = fout * _expansion(act)
    return nn.Sequential(nn.Linear(fin, wide, bias=False), nn.BatchNorm1d(wide), act(fout))


def pooled_head(cin: int, num_classes: int) -> list[nn.Module]:
    """1x1 conv to the classes, then global average pooling (All-CNN-C and NIN end this way)."""
    return [nn.Conv2d(cin, num_classes, 1), nn.AdaptiveAvgPool2d(1), nn.Flatten()]


@register_model("lenet5")
def lenet5(act: ActivationFactory, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """LeNet-5 (LeCun et al. 1998): conv 6@5x5, pool, conv 16@5x5, pool, fc 120, fc 84, fc classes.
    Inputs smaller than 32x32 (MNIST's 28) are zero-padded to 32 by the first conv, as in LeCun's
    original."""
    pad = max(0, (32 - image_size) // 2)
    side = ((image_size + 2 * pad - 4) // 2 - 4) // 2
    return nn.Sequential(
        conv_bn_act(in_channels, 6, 5, act, padding=pad),
        nn.MaxPool2d(2),
        conv_bn_act(6, 16, 5, act),
        nn.MaxPool2d(2),
        nn.Flatten(),
        linear_bn_act(16 * side * side, 120, act),
        linear_bn_act(120, 84, act),
        nn.Linear(84, num_classes),
    )


@register_model("mlp")
def mlp(act: ActivationFactory, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """MLP of paper §8.2: fc 256 -> 128 -> classes with dropout 0.3 (the paper prints 258)."""
    return nn.Sequential(
        nn.Flatten(),
        linear_bn_act(in_channels * image_size * image_size, 256, act),
        nn.Dropout(0.3),
        linear_bn_act(256, 128, act),
        nn.Dropout(0.3),
        nn.Linear(128, num_classes),
    )


@register_model("allcnn")
def allcnn(act: ActivationFactory, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """All-CNN-C (Springenberg et al. 2014): 3x3 convs, stride-2 convs instead of pooling,
    dropout 0.2 on the input and 0.5 after each stride-2 conv, 1x1 conv to classes, global mean."""
    return nn.Sequential(
        nn.Dropout(0.2),
        conv_bn_act(in_channels, 96, 3, act, padding=1),
        conv_bn_act(96, 96, 3, act, padding=1),
        conv_bn_act(96, 96, 3, act, stride=2, padding=1),
        nn.Dropout(0.5),
        conv_bn_act(96, 192, 3, act, padding=1),
        conv_bn_act(192, 192, 3, act, padding=1),
        conv_bn_act(192, 192, 3, act, stride=2, padding=1),
        nn.Dropout(0.5),
        conv_bn_act(192, 192, 3, act, padding=1),
        conv_bn_act(192, 192, 1, act),
        *pooled_head(192, num_classes),
    )


@register_model("nin")
def nin(act: ActivationFactory, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """Network in Network (Lin et al. 2013), CIFAR version: three mlpconv blocks, the last ending
    in a 1x1 conv to classes and global average pooling."""
    return nn.Sequential(
        conv_bn_act(in_channels, 192, 5, act, padding=2),
        conv_bn_act(192, 160, 1, act),
        conv_bn_act(160, 96, 1, act),
        nn.MaxPool2d(3, stride=2, padding=1),
        nn.Dropout(0.5),
        conv_bn_act(96, 192, 5, act, padding=2),
        conv_bn_act(192, 192, 1, act),
        conv_bn_act(192, 192, 1, act),
        nn.AvgPool2d(3, stride=2, padding=1),
        nn.Dropout(0.5),
        conv_bn_act(192, 192, 3, act, padding=1),
        conv_bn_act(192, 192, 1, act),
        *pooled_head(192, num_classes),
    )


class BasicBlock(nn.Module):
    """ResNet basic block; the activation after the sum gets its own (widened) branch for maxout."""

    def __init__(self, cin: int, cout: int, stride: int, act: ActivationFactory) -> None:
        super().__init__()
        wide = cout * _expansion(act)
        self.branch = nn.Sequential(
            conv_bn_act(cin, cout, 3, act, stride=stride, padding=1),
            nn.Conv2d(cout, wide, 3, padding=1, bias=False),
            nn.BatchNorm2d(wide),
        )
        self.shortcut: nn.Module = nn.Identity()
        if stride != 1 or cin != wide:
            self.shortcut = nn.Sequential(nn.Conv2d(cin, wide, 1, stride=stride, bias=False), nn.BatchNorm2d(wide))
        self.act = act(cout)

    def forward(self, x: Tensor) -> Tensor:
        return self.act(self.branch(x) + self.shortcut(x))


@register_model("resnet18")
def resnet18(act: ActivationFactory, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """CIFAR ResNet-18: 3x3 stem, no max-pool, four stages of two basic blocks (64..512)."""
    layers: list[nn.Module] = [conv_bn_act(in_channels, 64, 3, act, padding=1)]
    cin = 64
    for cout, stride in ((64, 1), (128, 2), (256, 2), (512, 2)):
        layers += [BasicBlock(cin, cout, stride, act), BasicBlock(cout, cout, 1, act)]
        cin = cout
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(512, num_classes)]
    return nn.Sequential(*layers)


@register_model("efficientnet_b0")
def efficientnet_b0(act: ActivationFactory, num_classes: int, in_channels: int, image_size: int) -> nn.Module:
    """torchvision's EfficientNet-B0 (untrained) with every SiLU replaced by the chosen activation.

    Each SiLU follows a BatchNorm except the one inside squeeze-and-excitation, which follows a
    1x1 conv as in torchvision. Maxout cannot be swapped in: torchvision's layer widths are fixed.
    """
    if _expansion(act) != 1:
        raise ValueError("efficientnet_b0 cannot use maxout: torchvision's blocks have fixed widths")
    net = torchvision.models.efficientnet_b0(weights=None, num_classes=num_classes)
    if in_channels != 3:
        stem = net.features[0][0]
        net.features[0][0] = nn.Conv2d(in_channels, stem.out_channels, 3, stride=2, padding=1, bias=False)
    _swap_silu(net, act)
    return net


def _swap_silu(module: nn.Module, act: ActivationFactory) -> None:
    """Replace each SiLU by ``act(channels)``, reading the width from the layer before it."""
    width: int | None = None
    for name, child in module.named_children():
        if isinstance(child, nn.SiLU):
            if width is None:
                raise ValueError(f"cannot tell the width of activation {name}")
            setattr(module, name, act(width))
        elif isinstance(child, torchvision.ops.SqueezeExcitation):
            child.activation = act(child.fc1.out_channels)
        else:
            _swap_silu(child, act)
        if isinstance(child, nn.BatchNorm2d):
            width = child.num_features
