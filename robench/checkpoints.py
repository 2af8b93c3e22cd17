"""Checkpoints: tensors and plain values in a ``.pt`` file, metadata in a JSON sidecar.

A checkpoint stores its format version, the model's build arguments and the state dict. Loading
rebuilds the model from those arguments and loads the weights strictly, with
``torch.load(weights_only=True)`` so that a file can never run code; a file that is corrupt,
foreign, or not the model that was asked for raises a CheckpointError that says which.
"""

from __future__ import annotations

import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .errors import CheckpointError
from .models import ModelArgs, build_model_from_args
from .storage import atomic_torch_save, atomic_write_json

FORMAT = "robench-checkpoint"
VERSION = 1
DEFAULT_DIR = Path("checkpoints")


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode), its build args and its metadata."""

    model: nn.Module
    args: ModelArgs
    dataset: str
    path: Path
    meta: dict[str, Any]  # the sidecar, or {} when there is none


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # a torch.compile'd module keeps the original here


def save_checkpoint(path: str | Path, model: nn.Module, args: ModelArgs, dataset: str, meta: dict[str, Any]) -> None:
    """Write ``path`` (.pt) and its JSON sidecar, each atomically; weights go to the CPU first."""
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "model_args": args.to_dict(), "dataset": dataset, "state_dict": state}
    atomic_torch_save(path, payload)
    sidecar = {"format": FORMAT + "-meta", "version": VERSION, "model_args": args.to_dict(), "dataset": dataset} | meta
    atomic_write_json(sidecar_path(path), sidecar)


def read_payload(path: str | Path) -> dict[str, Any]:
    """The raw payload, checked for format; never runs code from the file."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"checkpoint {path} not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling refused"
        raise CheckpointError(f"{path} is not a robench checkpoint (refused to load it: {first[:160]})") from None
    except Exception as err:  # noqa: BLE001 - torch.load on arbitrary bytes raises anything
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({type(err).__name__})") from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robench checkpoint (no '{FORMAT}' header)")
    if payload.get("version") != VERSION:
        raise CheckpointError(f"{path} has checkpoint format version {payload.get('version')}, this robench reads {VERSION}")
    return payload


def load_checkpoint(
    path: str | Path,
    model: str | None = None,
    act: str | None = None,
    dataset: str | None = None,
    device: torch.device | str = "cpu",
) -> Checkpoint:
    """Rebuild and load the model in ``path``; ``model``/``act``/``dataset`` given are checked."""
    path = Path(path)
    payload = read_payload(path)
    try:
        args = ModelArgs.from_dict(payload["model_args"])
        stored_dataset = str(payload["dataset"])
        state = payload["state_dict"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is missing checkpoint field {err}") from None
    for what, wanted, stored in (("model", model, args.name), ("act", act, args.act), ("dataset", dataset, stored_dataset)):
        if wanted is not None and wanted != stored:
            raise CheckpointError(f"checkpoint {path.name} was trained with {what}={stored}, not {wanted}")
    try:
        net = build_model_from_args(args)
    except ValueError as err:
        raise CheckpointError(f"{path.name}: cannot rebuild its model: {err}") from None
    try:
        net.load_state_dict(state, strict=True)
    except RuntimeError as err:
        detail = str(err).splitlines()[0]
        raise CheckpointError(f"{path.name}: weights do not fit {args.name}/{args.act}: {detail}") from None
    net.eval().to(device)
    meta: dict[str, Any] = {}
    side = sidecar_path(path)
    if side.is_file():
        try:
            meta = json.loads(side.read_text())
        except json.JSONDecodeError:
            raise CheckpointError(f"sidecar {side} is corrupt JSON") from None
    return Checkpoint(net, args, stored_dataset, path, meta)


def default_checkpoint(model: str, act: str, dataset: str, augment: bool = False, seed: int = 0, directory: Path = DEFAULT_DIR) -> Path:
    aug = "-aug" if augment else ""
    return Path(directory) / f"{model}-{act}-{dataset}{aug}-s{seed}.pt"


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata: its JSON sidecar, else the payload (the sidecar is cheaper to read)."""
    side = sidecar_path(path)
    return json.loads(side.read_text()) if side.is_file() else read_payload(path)


def checkpoint_files(directory: str | Path = DEFAULT_DIR) -> list[Path]:
    """The finished checkpoints in ``directory``, sorted; a run's ``.resume.pt`` is not one."""
    return [pt for pt in sorted(Path(directory).glob("*.pt")) if not pt.name.endswith(".resume.pt")]


def list_checkpoints(directory: str | Path = DEFAULT_DIR) -> list[dict[str, Any]]:
    """One row per ``.pt`` in ``directory`` from its sidecar (or the payload when it has none)."""
    rows = []
    for pt in checkpoint_files(directory):
        row: dict[str, Any] = {"file": pt.name, "size_kib": round(pt.stat().st_size / 1024, 1)}
        try:
            meta = read_meta(pt)
            args = meta["model_args"]
            cfg = meta.get("train_config", {})
            row |= {
                "model": args["name"], "act": args["act"], "dataset": meta["dataset"],
                "epochs": cfg.get("epochs"), "seed": cfg.get("seed"), "augment": cfg.get("augment"),
                "test_accuracy": meta.get("clean_test_accuracy"), "data_official": meta.get("provenance", {}).get("data_official"),
            }
        except (CheckpointError, KeyError, TypeError, json.JSONDecodeError) as err:
            row["error"] = str(err)
        rows.append(row)
    return rows
