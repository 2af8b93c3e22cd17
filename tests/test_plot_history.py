"""Training plots read the history through checkpoints.read_history: the compact file beside a
sidecar and the inline form older sidecars hold draw the same figures."""

import json

import pytest
import torch

from robench.activations import activation_state
from robench.checkpoints import history_path, read_history, read_meta, save_checkpoint, sidecar_path
from robench.models import ModelArgs, build_model_from_args

pytest.importorskip("matplotlib")
ARGS = ModelArgs("lenet5", "sapl", 10, 3, 32, (0.5,), (0.25,), {"compiled": False})


@pytest.mark.parametrize("form", ["file", "inline"])
def test_curves_and_losses_draw_from_either_history_form(tmp_path, form):
    from robench.plot import activation_curves, plot_curves, plot_losses

    torch.manual_seed(0)
    model = build_model_from_args(ARGS)
    state = activation_state(model)
    history = [{"epoch": e, "train_loss": 2.0 / e, "activations": state} for e in (1, 2)]
    path = tmp_path / "m.pt"
    save_checkpoint(path, model, ARGS, "cifar10", {"history": history, "activations_init": state})
    if form == "inline":  # as an older robench wrote it
        meta = read_meta(path)
        inline = {k: v for k, v in meta.items() if k != "history_file"} | read_history(path, meta)
        sidecar_path(path).write_text(json.dumps(inline))
        history_path(path).unlink()
    assert plot_losses([path], tmp_path / "loss.png").stat().st_size > 0
    assert plot_curves(path, tmp_path / "curves.png").stat().st_size > 0
    from robench.plot import _sidecar

    curves = activation_curves(_sidecar(path), torch.linspace(-1, 1, 5), [0, 2])
    assert curves and all(set(by_epoch) == {0, 2} for by_epoch in curves.values())
