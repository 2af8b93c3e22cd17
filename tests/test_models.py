import pytest
import torch

from robench.activations import activation_names
from robench.models import ModelArgs, build_model, build_model_from_args, model_names

# The convolutional models end in global pooling, so 16x16 inputs exercise every layer at a quarter
# of the cost; lenet5 and mlp have fixed input sizes.
SHAPES = {"mlp": (1, 28), "lenet5": (3, 32)}


@pytest.mark.parametrize("model", model_names())
@pytest.mark.parametrize("act", activation_names())
def test_every_model_with_every_activation(model, act):
    channels, size = SHAPES.get(model, (3, 16))
    options = {"compiled": False} if act in ("apl",) or act.startswith("sapl") else {}
    if model == "efficientnet_b0" and act == "maxout":
        with pytest.raises(ValueError, match="maxout"):
            build_model(model, act=act)
        return
    net = build_model(model, act=act, num_classes=7, in_channels=channels, image_size=size, act_options=options)
    x = torch.rand(2, channels, size, size)
    y = net(x)
    assert y.shape == (2, 7)
    y.sum().backward()
    grads = [p.grad for p in net.parameters() if p.requires_grad]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)


def test_batchnorm_before_every_activation():
    from robench.activations import Activation

    net = build_model("lenet5", act="sapl")
    modules = list(net.modules())
    for i, m in enumerate(modules):
        if isinstance(m, Activation):
            assert isinstance(modules[i - 1], torch.nn.BatchNorm1d | torch.nn.BatchNorm2d)


def test_each_layer_gets_its_own_activation_parameters():
    net = build_model("lenet5", act="sapl")
    slopes = [m.a_pos for m in net.modules() if hasattr(m, "a_pos")]
    assert len(slopes) == 4 and len({id(s) for s in slopes}) == 4


def test_normalisation_is_inside_the_model():
    net = build_model("lenet5", act="relu", mean=(0.5, 0.5, 0.5), std=(0.25, 0.25, 0.25)).eval()
    x = torch.rand(3, 3, 32, 32)
    torch.testing.assert_close(net(x), net.body((x - 0.5) / 0.25))


def test_lenet5_on_mnist_pads_to_32():
    net = build_model("lenet5", act="relu", in_channels=1, image_size=28)
    assert net(torch.rand(2, 1, 28, 28)).shape == (2, 10)


def test_model_args_round_trip():
    args = ModelArgs("mlp", "sapl", 10, 1, 28, (0.1,), (0.3,), {"per_channel": True})
    assert ModelArgs.from_dict(args.to_dict()) == args
    net = build_model_from_args(args)
    assert sum(p.numel() for m in net.modules() if hasattr(m, "a_pos") for p in m.parameters()) == 8 * (256 + 128)


def test_unknown_model():
    with pytest.raises(ValueError, match="unknown model 'vgg'.*lenet5"):
        build_model("vgg")
