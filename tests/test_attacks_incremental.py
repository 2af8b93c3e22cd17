import logging

import pytest
import torch
from torch import nn

from robench.attacks.candidates import SearchForward, evaluate, paint, pixel_upper, search_forward
from robench.attacks.incremental import Stem, TileMax, split_stem
from robench.models import Classifier, Normalize, build_model


def _randomised(model: nn.Module, seed: int = 0) -> nn.Module:
    """``model`` in eval mode with BatchNorm statistics and affine parameters drawn at random, so
    folding them is tested with values that are not the identity a fresh model starts with."""
    g = torch.Generator().manual_seed(seed)
    for m in model.modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            n = m.num_features
            m.running_mean.copy_(torch.randn(n, generator=g) * 0.3)
            m.running_var.copy_(torch.rand(n, generator=g) + 0.5)
            m.weight.data.copy_(torch.randn(n, generator=g) * 0.5 + 1)
            m.bias.data.copy_(torch.randn(n, generator=g) * 0.2)
    return model.eval()


def _candidates(n: int, k: int, shape: tuple[int, ...], seed: int) -> torch.Tensor:
    """(n, k, 2 + C) random candidates, with every spot of the border among them and, in the first
    rows, two pixels of one candidate on the same spot (the later one must win)."""
    g = torch.Generator().manual_seed(seed)
    cands = torch.rand(n, k, 2 + shape[1], generator=g) * pixel_upper(shape, torch.device("cpu"))
    h, w = shape[2] - 1, shape[3] - 1
    corners = torch.tensor([[0, 0], [0, w], [h, 0], [h, w], [0, w / 2], [h / 2, 0], [h, w / 2], [h / 2, w]])
    cands[: len(corners), 0, :2] = corners
    if k > 1:
        cands[-3:, 1, :2] = cands[-3:, 0, :2]
    return cands


def _agree(model: nn.Module, shape: tuple[int, ...], k: int, seed: int = 0) -> Stem:
    """The incremental forward's logits on random candidates against the model's own on the painted
    images: equal to float32 rounding, and the same argmax."""
    images = torch.rand(shape, generator=torch.Generator().manual_seed(seed + 1))
    stem = split_stem(model, shape)
    assert isinstance(stem, Stem), stem
    with torch.no_grad():
        bound = stem.bind(images)
        who = torch.arange(len(images)).repeat(6)
        cands = _candidates(len(who), k, shape, seed)
        want = model(paint(images[who], cands))
        got = bound.logits(who, cands)
    assert torch.allclose(got, want, rtol=1e-4, atol=1e-4 * want.abs().max().item())
    assert torch.equal(got.argmax(1), want.argmax(1))
    return stem


@pytest.mark.parametrize("act", ["relu", "sapl", "swish", "prelu", "maxout"])
@pytest.mark.parametrize("k", [1, 3])
def test_lenet5_incremental_logits_equal_the_model(act, k):
    model = _randomised(build_model("lenet5", act=act, mean=(0.5, 0.4, 0.3), std=(0.25, 0.2, 0.3)))
    stem = _agree(model, (4, 3, 32, 32), k)
    assert stem.conv is not None
    # maxout's activation mixes channels, so its pooling stays in the rest
    assert (stem.pool is not None) == (act != "maxout")


def test_lenet5_on_28x28_pads_in_its_first_conv():
    model = _randomised(build_model("lenet5", act="apl", in_channels=1, image_size=28, mean=(0.13,), std=(0.31,)))
    _agree(model, (3, 1, 28, 28), 2)


@pytest.mark.parametrize("act", ["relu", "sapl"])
def test_mlp_incremental_logits_equal_the_model(act):
    model = _randomised(build_model("mlp", act=act, in_channels=1, image_size=28, mean=(0.13,), std=(0.31,)))
    stem = _agree(model, (3, 1, 28, 28), 3)
    assert stem.conv is None


@pytest.mark.slow
@pytest.mark.parametrize("name", ["allcnn", "nin"])
def test_larger_models_split_without_a_local_stage(name):
    """All-CNN-C starts with Dropout (an identity in eval mode); both follow the first activation
    with another conv, so only the affine block is incremental."""
    model = _randomised(build_model(name, act="relu"))
    stem = _agree(model, (2, 3, 32, 32), 2)
    assert stem.pool is None


def _classifier(first: nn.Conv2d, after: list[nn.Module]) -> Classifier:
    body = nn.Sequential(first, nn.BatchNorm2d(first.out_channels), *after, nn.Flatten(), nn.LazyLinear(10))
    model = Classifier(Normalize((0.5,), (0.2,), first.in_channels), body)
    with torch.no_grad():
        model(torch.zeros(1, first.in_channels, 17, 17))  # materialise the lazy layer
    return _randomised(model)


@pytest.mark.parametrize("conv, after, local", [
    (nn.Conv2d(3, 4, 3, padding=1), [nn.ReLU(), nn.AvgPool2d(2)], True),  # average pool, odd size: floor mode
    (nn.Conv2d(3, 4, 4, padding=0), [nn.Tanh(), nn.MaxPool2d(3)], True),  # window 3 tiles 14 in floor mode
    (nn.Conv2d(3, 4, 5, padding=2), [nn.SiLU(), nn.MaxPool2d(3)], True),  # a pixel reaches 3 pooled rows
    (nn.Conv2d(3, 4, 3, stride=2, padding=1), [nn.ReLU(), nn.MaxPool2d(2)], False),  # strided conv
    (nn.Conv2d(3, 4, 3, dilation=2), [nn.ReLU(), nn.MaxPool2d(2)], False),  # dilated conv
    (nn.Conv2d(3, 4, 3, padding=1), [nn.ReLU(), nn.MaxPool2d(3, stride=2, padding=1)], False),  # overlapping pool
    (nn.Conv2d(3, 4, 5, padding=2), [nn.ReLU()], False),  # no pool
], ids=["avgpool", "maxpool3", "conv5-pool3", "stride2", "dilated", "overlap", "nopool"])
def test_incremental_logits_on_other_first_blocks(conv, after, local):
    model = _classifier(conv, after)
    stem = _agree(model, (3, 3, 17, 17), 3, seed=2)
    assert (stem.pool is not None) == local


def test_tilemax_equals_maxpool_in_floor_mode():
    x = torch.randn(2, 3, 11, 10)
    for t in (2, 3):
        assert torch.equal(TileMax(t)(x), nn.functional.max_pool2d(x, t))


def test_models_that_do_not_split_say_why():
    plain = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.LazyLinear(2))
    assert "not a robench Classifier" in split_stem(plain, (1, 3, 8, 8))
    first_act = Classifier(Normalize((0.0,), (1.0,), 3), nn.Sequential(nn.ReLU(), nn.Conv2d(3, 4, 3)))
    assert "ReLU, not a Conv2d" in split_stem(first_act, (1, 3, 8, 8))
    grouped = Classifier(Normalize((0.0,), (1.0,), 4), nn.Sequential(nn.Conv2d(4, 4, 3, groups=2)))
    assert isinstance(split_stem(grouped, (1, 4, 8, 8)), str)


def test_search_forward_falls_back_to_eager_where_the_split_cannot_see_the_model(caplog):
    """A forward hook on the first conv changes what the model computes without changing its
    modules: the check on random candidates catches it and the search runs eager (said at info
    level when the incremental forward was asked for by name)."""
    model = _randomised(build_model("lenet5", act="relu"))
    images = torch.rand(3, 3, 32, 32)
    assert search_forward(model, "auto", 10, images, 8, fixed_batch=True).kind == "incremental"
    model.body[0][0].register_forward_hook(lambda mod, inp, out: out * 1.5)
    assert search_forward(model, "auto", 10, images, 8, fixed_batch=True).kind == "eager"
    with caplog.at_level(logging.INFO, logger="robench.attacks"):
        assert search_forward(model, "incremental", 10, images, 8, fixed_batch=True).kind == "eager"
    assert "disagrees with the model" in caplog.text
    assert search_forward(nn.Sequential(model), "incremental", 10, images, 8, fixed_batch=True).kind == "eager"


def test_evaluate_scores_the_same_through_either_forward():
    """evaluate() over a subset of rows, in several chunks: the incremental forward's losses and
    verdicts against the eager forward's."""
    model = _randomised(build_model("lenet5", act="sapl"))
    images = torch.rand(5, 3, 32, 32)
    with torch.no_grad():
        labels = model(images).argmax(1)
        rows = torch.tensor([4, 1, 3])
        cands = _candidates(3 * 7, 2, images.shape, 5).view(3, 7, 2, 5)
        inc = search_forward(model, "incremental", 10, images, 4, fixed_batch=True)
        assert inc.kind == "incremental"
        for loss in ("prob", "margin"):
            want = evaluate(model, images, labels, cands, loss, 4, SearchForward(model, "eager"), rows=rows)
            got = evaluate(model, images, labels, cands, loss, 4, inc, rows=rows)
            assert torch.allclose(got[0], want[0], atol=1e-5)
            assert torch.equal(got[1], want[1])
