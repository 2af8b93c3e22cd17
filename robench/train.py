"""Training: one seeded run from a TrainConfig to a checkpoint with its full history.

Data sits in memory as uint8 tensors on the training device; each batch is gathered, augmented
in one batched op and scaled to [0, 1] there, so there are no data-loader workers and the same
code runs on a CPU or a GPU. After every epoch a resume file holds the model, optimiser and RNG
states, so an interrupted run continues from its last finished epoch and ends bit-identical to
an uninterrupted one on the same machine.

Adversarial training (``TrainConfig.adv``; robench/adversarial.py) also measures, after every epoch,
clean and PGD-10 accuracy on a fixed 500-image test subset, flags catastrophic overfitting, and
keeps the epoch with the best robust accuracy as the checkpoint and the last epoch beside it as
``<name>-last.pt`` (Rice et al. 2020's early stopping).
"""

from __future__ import annotations

import math
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn
from torch.nn import functional as F

from .activations import Activation, activation_factory, activation_state
from .adversarial import EVAL_IMAGES, Threat, collapsed, eval_threat, robust_accuracy, training_loss
from .checkpoints import DEFAULT_DIR, history_path, read_history, read_meta, save_checkpoint, sidecar_path
from .config import TrainConfig, config_difference, config_to_dict
from .data import Split, augment, dataset_info, load_split, to_float
from .errors import CheckpointError, ConfigError
from .locks import cell_lock
from .models import ModelArgs, build_model_from_args
from .progress import progress_bar
from .storage import atomic_torch_save, check_writable, library_versions, resolve_device


@dataclass(frozen=True)
class TrainResult:
    path: Path
    test_accuracy: float
    history: list[dict[str, Any]]
    wall_time_s: float
    resumed_from_epoch: int
    stored: bool = False  # the checkpoint was already there, trained with this config: nothing ran
    robust_accuracy: float | None = None  # adversarial runs: held-out PGD-10 accuracy of the kept epoch


EVAL_SEED = 0  # the held-out subset and its attack's starts: the same for every run, seed and epoch


@dataclass
class _Best:
    """The epoch with the best held-out robust accuracy so far, and its weights (adversarial runs)."""

    epoch: int = 0
    robust: float = -1.0
    state: dict[str, Tensor] | None = None


def model_args_for(config: TrainConfig) -> ModelArgs:
    info = dataset_info(config.dataset)
    return ModelArgs(
        name=config.model, act=config.act, num_classes=info.num_classes, in_channels=info.channels,
        image_size=info.image_size, mean=info.mean, std=info.std, act_options=dict(config.act_options),
    )


@torch.no_grad()
def predict(model: nn.Module, images: Tensor, batch_size: int = 1000) -> Tensor:
    """Predicted labels. images: (N, C, H, W) uint8 or float in [0, 1] on the model's device."""
    was_training = model.training
    model.eval()
    preds = []
    for start in range(0, images.shape[0], batch_size):
        chunk = images[start : start + batch_size]
        chunk = to_float(chunk) if chunk.dtype == torch.uint8 else chunk
        preds.append(model(chunk).argmax(1))
    model.train(was_training)
    return torch.cat(preds) if preds else torch.empty(0, dtype=torch.long, device=images.device)


def accuracy(model: nn.Module, split: Split, device: torch.device) -> float:
    preds = predict(model, split.images.to(device))
    return float((preds.cpu() == split.labels).float().mean())


def _optimizer(model: nn.Module, config: TrainConfig) -> torch.optim.Optimizer:
    decay, no_decay = [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            is_weight = name == "weight" and isinstance(module, nn.Conv2d | nn.Linear)
            is_act = config.decay_activations and isinstance(module, Activation)
            (decay if is_weight or is_act else no_decay).append(p)
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
    return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.momentum > 0)


def _lr_at(config: TrainConfig, step: int, total: int) -> float:
    return config.lr * 0.5 * (1 + math.cos(math.pi * step / total))


def resume_path(out: Path) -> Path:
    return out.with_name(out.stem + ".resume.pt")


def last_path(out: Path) -> Path:
    """Where an adversarial run keeps its last epoch (``out`` holds the best-robust one)."""
    return out.with_name(out.stem + "-last.pt")


def _threat(config: TrainConfig) -> Threat:
    return Threat(eps=config.adv_eps, step_size=config.adv_step_size, steps=config.adv_steps, norm=config.adv_norm)


def held_out(split: Split, dev: torch.device) -> tuple[Tensor, Tensor]:
    """The fixed, seeded test subset robust accuracy is tracked on: (EVAL_IMAGES, C, H, W) in [0, 1]."""
    idx = torch.randperm(len(split.labels), generator=torch.Generator().manual_seed(EVAL_SEED))[:EVAL_IMAGES]
    return to_float(split.images[idx].to(dev)), split.labels[idx].to(dev)


def train(
    config: TrainConfig,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    show_progress: bool = False,
    download: bool = True,
    force: bool = False,
    wait: bool = True,
    on_epoch: Callable[[int, int], None] | None = None,
) -> TrainResult:
    """Train ``config`` and write its checkpoint (``checkpoints/<run_name>.pt`` by default).

    A finished checkpoint at ``out`` is not overwritten unless ``force``; an unfinished run there
    (its ``.resume.pt``) is continued. The checkpoint's lock is held throughout: a second process
    training the same file waits, then finds it stored (with ``wait`` False: CellBusy at once).
    ``on_epoch(done, epochs)`` follows each finished epoch."""
    with torch.random.fork_rng():  # the model builds (a factory's errors show) before data loads
        probe = build_model_from_args(model_args_for(config))
    if not any(p.requires_grad for p in probe.parameters()):
        raise ConfigError(f"model {config.model} with act={config.act} has no trainable parameters: nothing to train")
    activation_factory(config.act, **config.act_options)  # bad names/options fail before data loads
    dataset_info(config.dataset)
    dev = resolve_device(device)
    out = Path(out) if out else DEFAULT_DIR / f"{config.run_name}.pt"
    if out.exists() and not resume_path(out).exists() and not force:
        return _stored(out, config)  # before the lock: a stored checkpoint in a read-only folder still answers
    writes = [(out, "checkpoint"), (sidecar_path(out), "checkpoint sidecar"), (history_path(out), "training history"),
              (resume_path(out), "resume file")]
    if config.adv != "none":
        writes += [(last_path(out), "last-epoch checkpoint"), (sidecar_path(last_path(out)), "checkpoint sidecar"),
                   (history_path(last_path(out)), "training history")]
    for path, what in writes:
        check_writable(path, what)  # before an epoch is spent, not after
    with cell_lock(out, blocking=wait):
        if out.exists() and not resume_path(out).exists() and not force:
            return _stored(out, config)  # finished by the process we waited for
        return _train(config, out, data_dir, dev, show_progress, download, on_epoch)


def _train(config: TrainConfig, out: Path, data_dir: str | Path | None, dev: torch.device, show_progress: bool,
           download: bool, on_epoch: Callable[[int, int], None] | None) -> TrainResult:
    """The training run itself, under the checkpoint's lock."""
    train_split, prov = load_split(config.dataset, True, data_dir, download)
    test_split, _ = load_split(config.dataset, False, data_dir, download)
    args = model_args_for(config)

    # Model init and dropout draw from torch's global RNG: seed it inside fork_rng so a run is
    # reproducible without changing the caller's RNG state.
    with torch.random.fork_rng(devices=[dev] if dev.type == "cuda" else []):
        torch.manual_seed(config.seed)
        model = build_model_from_args(args).to(dev)
        opt = _optimizer(model, config)
        gen = torch.Generator(device="cpu").manual_seed(config.seed)
        aug_gen = torch.Generator(device=dev).manual_seed(config.seed + 1)
        adv_gen = torch.Generator(device=dev).manual_seed(config.seed + 2)  # the inner attack's random starts
        gens = {"gen": gen, "aug_gen": aug_gen, "adv_gen": adv_gen}
        history: list[dict[str, Any]] = []
        first_epoch = 0
        best = _Best()
        init_state = activation_state(model)
        resume = resume_path(out)
        if resume.is_file():
            first_epoch, history, init_state, best = _load_resume(resume, config, model, opt, gens, dev)
        adversarial = config.adv != "none"
        threat = _threat(config) if adversarial else None
        check_images, check_labels = held_out(test_split, dev) if adversarial else (None, None)

        keep = config.train_images or len(train_split.labels)
        images = train_split.images[:keep].to(dev)
        labels = train_split.labels[:keep].to(dev)
        n = images.shape[0]
        if n < config.batch_size:  # a known bound: no full batch, no step
            raise ConfigError(f"batch_size {config.batch_size} is larger than the {n} training images of {config.dataset}")
        steps_per_epoch = n // config.batch_size  # drop the ragged last batch: BatchNorm needs >1
        total = steps_per_epoch * config.epochs
        with progress_bar(show_progress) as bar:
            task = bar.add_task(f"train {config.run_name}", total=config.epochs, completed=first_epoch)
            for epoch in range(first_epoch, config.epochs):
                epoch_start = time.perf_counter()
                model.train()
                order = torch.randperm(n, generator=gen).to(dev)
                loss_sum = torch.zeros((), device=dev)
                for i in range(steps_per_epoch):
                    for group in opt.param_groups:
                        group["lr"] = _lr_at(config, epoch * steps_per_epoch + i, total)
                    idx = order[i * config.batch_size : (i + 1) * config.batch_size]
                    x = images[idx]
                    if config.augment:
                        x = augment(x, aug_gen)
                    if threat is None:
                        loss = F.cross_entropy(model(to_float(x)), labels[idx])
                    else:
                        loss = training_loss(model, to_float(x), labels[idx], config.adv, threat,
                                             config.trades_beta, adv_gen)
                    opt.zero_grad(set_to_none=True)
                    loss.backward()
                    opt.step()
                    loss_sum += loss.detach()
                train_loss = float(loss_sum) / steps_per_epoch
                if not math.isfinite(train_loss):
                    raise FloatingPointError(f"training diverged at epoch {epoch + 1} (loss {train_loss}); lower --lr")
                test_acc = accuracy(model, test_split, dev)
                entry = {"epoch": epoch + 1, "train_loss": round(train_loss, 6), "test_accuracy": round(test_acc, 6)}
                if adversarial:
                    entry |= _check_robustness(model, check_images, check_labels, config, dev, history, best, epoch + 1)
                entry |= {"epoch_s": round(time.perf_counter() - epoch_start, 3),
                          "activations": _rounded(activation_state(model))}
                history.append(entry)
                _save_resume(resume, config, model, opt, gens, history, init_state, best)
                robust = f" robust {entry['robust_accuracy']:.3f}" if adversarial else ""
                bar.update(task, advance=1,
                           description=f"train {config.run_name} loss {train_loss:.3f} acc {test_acc:.3f}{robust}")
                if on_epoch is not None:
                    on_epoch(epoch + 1, config.epochs)

    wall = sum(h["epoch_s"] for h in history)
    meta = {
        "train_config": config_to_dict(config),
        "provenance": prov.to_dict(),
        **_accuracies(history[-1]),
        "activations_init": _rounded(init_state),
        "history": history,
        "device": str(dev),
        "wall_time_s": round(wall, 2),
        "resumed_from_epoch": first_epoch,
        "versions": library_versions(),
    }
    kept = history[-1]
    if adversarial:
        summary = _adversarial_summary(config, history, best)
        save_checkpoint(last_path(out), model, args, config.dataset,
                        meta | {"adversarial": summary | {"kept_epoch": kept["epoch"]}})
        kept = history[best.epoch - 1]
        model.load_state_dict(best.state)  # type: ignore[arg-type]
        meta |= _accuracies(kept) | {"adversarial": summary | {"kept_epoch": best.epoch}}
    save_checkpoint(out, model, args, config.dataset, meta)
    resume.unlink(missing_ok=True)
    return TrainResult(out, kept["test_accuracy"], history, wall, first_epoch, robust_accuracy=kept.get("robust_accuracy"))


def _accuracies(entry: dict[str, Any]) -> dict[str, Any]:
    """The sidecar's headline numbers, from the history entry of the epoch the checkpoint holds."""
    head = {"clean_test_accuracy": entry["test_accuracy"],
            "clean_test_error_pct": round(100 * (1 - entry["test_accuracy"]), 3)}
    if "robust_accuracy" in entry:
        head["robust_accuracy"] = entry["robust_accuracy"]
    return head


def _check_robustness(model: nn.Module, images: Tensor, labels: Tensor, config: TrainConfig, dev: torch.device,
                      history: list[dict[str, Any]], best: _Best, epoch: int) -> dict[str, Any]:
    """Held-out clean and PGD-10 accuracy after ``epoch``; updates ``best`` and warns on a collapse."""
    gen = torch.Generator(device=dev).manual_seed(EVAL_SEED)  # the same starts every epoch: epochs compare
    clean, robust = robust_accuracy(model, images, labels, eval_threat(config.adv_eps, config.adv_norm), gen)
    robust_history = [h["robust_accuracy"] for h in history] + [robust]
    if collapsed(robust_history) and _collapse_epoch(robust_history[:-1]) is None:
        warnings.warn(f"catastrophic overfitting at epoch {epoch}: held-out PGD-10 accuracy fell from "
                      f"{robust_history[-2]:.3f} to {robust:.3f}; the checkpoint keeps epoch {best.epoch} "
                      f"({best.robust:.3f}), the last epoch goes to -last.pt", stacklevel=2)
    if robust > best.robust:
        best.epoch, best.robust = epoch, robust
        best.state = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return {"subset_clean_accuracy": round(clean, 6), "robust_accuracy": round(robust, 6)}


def _collapse_epoch(robust_history: list[float]) -> int | None:
    """The first epoch (1-based) at which the held-out robust accuracy collapsed, if any."""
    return next((e for e in range(2, len(robust_history) + 1) if collapsed(robust_history[:e])), None)


def _adversarial_summary(config: TrainConfig, history: list[dict[str, Any]], best: _Best) -> dict[str, Any]:
    """How the run was trained and checked, for the sidecar (the config holds the same values too)."""
    check = eval_threat(config.adv_eps, config.adv_norm)
    return {
        "method": config.adv, "norm": config.adv_norm, "eps": config.adv_eps, "steps": config.adv_steps,
        "step_size": config.adv_step_size, **({"beta": config.trades_beta} if config.adv == "trades" else {}),
        "inner_attack_mode": "eval", "update_mode": "train",
        "check": {"attack": "pgd", "steps": check.steps, "step_size": check.step_size, "images": EVAL_IMAGES,
                  "seed": EVAL_SEED},
        "best_epoch": best.epoch,
        "catastrophic_overfitting_epoch": _collapse_epoch([h["robust_accuracy"] for h in history]),
    }


def _stored(out: Path, config: TrainConfig) -> TrainResult:
    """The finished checkpoint at ``out``, when it was trained with ``config`` (like make: asking
    again for what is there is not an error); another config there is one."""
    meta = read_meta(out)  # checks the sidecar belongs to the .pt
    differ = config_difference(meta.get("train_config"), config)
    if differ:
        raise CheckpointError(f"{out} exists, trained with another {', '.join(differ)}; pass --force to "
                              "train it again, or --out another path")
    history = read_history(out, meta).get("history") or [{}]
    return TrainResult(out, float(meta["clean_test_accuracy"]), history, float(meta.get("wall_time_s", 0.0)),
                       int(meta.get("resumed_from_epoch", 0)), stored=True, robust_accuracy=meta.get("robust_accuracy"))


def _rounded(state: dict[str, dict[str, list]]) -> dict[str, dict[str, list]]:
    def r(v: Any) -> Any:
        return [r(x) for x in v] if isinstance(v, list) else round(float(v), 6)

    return {k: {p: r(v) for p, v in params.items()} for k, params in state.items()}


def _save_resume(path: Path, config: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer,
                 gens: dict[str, torch.Generator], history: list, init_state: dict, best: _Best) -> None:
    atomic_torch_save(path, {
        "config": config_to_dict(config),
        "model": {k: v.detach().cpu() for k, v in model.state_dict().items()},
        "optimizer": opt.state_dict(),
        **{name: g.get_state() for name, g in gens.items()},
        "torch_rng": torch.get_rng_state(),
        "cuda_rng": torch.cuda.get_rng_state() if torch.cuda.is_available() else torch.empty(0, dtype=torch.uint8),
        "history": history,
        "init_state": init_state,
        "best": {"epoch": best.epoch, "robust": best.robust,
                 "state": {k: v.cpu() for k, v in (best.state or {}).items()}},
    })


def _load_resume(path: Path, config: TrainConfig, model: nn.Module, opt: torch.optim.Optimizer,
                 gens: dict[str, torch.Generator], dev: torch.device) -> tuple[int, list, dict, _Best]:
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
        if config_difference(state["config"], config):
            raise CheckpointError(
                f"{path} is an unfinished run with a different config; delete it to start over"
            )
        model.load_state_dict(state["model"], strict=True)
        opt.load_state_dict(state["optimizer"])
        for name, g in gens.items():
            g.set_state(state[name])
        torch.set_rng_state(state["torch_rng"])
        if dev.type == "cuda" and state["cuda_rng"].numel():
            torch.cuda.set_rng_state(state["cuda_rng"])
        kept = state["best"]
        best = _Best(kept["epoch"], kept["robust"], {k: v.to(dev) for k, v in kept["state"].items()} or None)
        return len(state["history"]), list(state["history"]), dict(state["init_state"]), best
    except CheckpointError:
        raise
    except Exception as err:  # noqa: BLE001 - any unreadable resume file is reported, not trusted
        raise CheckpointError(f"resume file {path} is unreadable ({type(err).__name__}); delete it to start over") from None
