"""Checkpoints: tensors and plain values in a ``.pt`` file, metadata in a JSON sidecar.

A checkpoint stores its format version, the model's build arguments and the state dict. Loading
rebuilds the model from those arguments and loads the weights strictly, with
``torch.load(weights_only=True)`` so that a file can never run code; a file that is corrupt,
foreign, not the model that was asked for, or holding NaN/inf weights raises a CheckpointError
that says which. The sidecar records the .pt's sha256 (``pt_sha256``), so metadata that belongs
to other weights (a crash between the two writes, a file copied over) is refused, never reported.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import pickle
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from .config import budget_text, checkpoint_stem
from .errors import CheckpointError, ReadError
from .models import ModelArgs, build_model_from_args
from .registry import is_factory_spec
from .storage import atomic_write_bytes, atomic_write_json, read_bytes, read_json

FORMAT = "robench-checkpoint"
VERSION = 1
DEFAULT_DIR = Path("checkpoints")
HISTORY_KEYS = ("history", "activations_init")  # the training record kept beside the sidecar, not in it


@dataclass(frozen=True)
class Checkpoint:
    """A loaded checkpoint: the rebuilt model (eval mode), its build args and its metadata."""

    model: nn.Module
    args: ModelArgs
    dataset: str
    path: Path
    meta: dict[str, Any]  # the sidecar, or {} when there is none
    sha256: str = ""  # of the very bytes loaded: a result can cite it without reading the file again


def sidecar_path(path: str | Path) -> Path:
    return Path(path).with_suffix(".json")


def _unwrap(model: nn.Module) -> nn.Module:
    return getattr(model, "_orig_mod", model)  # a torch.compile'd module keeps the original here


def history_path(path: str | Path) -> Path:
    """``checkpoints/x.pt`` -> ``checkpoints/x.history.json.gz``: the training history beside it."""
    path = Path(path)
    return path.with_name(path.with_suffix("").name + ".history.json.gz")


def split_history(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """Write ``meta``'s training history (``HISTORY_KEYS``: per-epoch losses and activation states)
    to the compact file beside checkpoint ``path`` and return ``meta`` naming it instead, so the
    sidecar stays a few KiB. The file is gzip'd JSON with mtime 0: its bytes are a function of the
    history. ``meta`` without history comes back as it is."""
    moved = {k: meta[k] for k in HISTORY_KEYS if k in meta}
    if not moved:
        return meta
    data = gzip.compress(json.dumps(moved, separators=(",", ":"), allow_nan=False).encode(), mtime=0)
    atomic_write_bytes(history_path(path), data)
    kept = {k: v for k, v in meta.items() if k not in HISTORY_KEYS}
    return kept | {"history_file": {"file": history_path(path).name, "sha256": hashlib.sha256(data).hexdigest()}}


def read_history(path: str | Path, meta: dict[str, Any]) -> dict[str, Any]:
    """The training history of checkpoint ``path`` whose sidecar is ``meta``: ``{"history": [one
    record per epoch], "activations_init": {...}}``, inline in a sidecar an older robench wrote, or
    from the file ``meta["history_file"]`` names (checked against its sha256); {} when it has none.
    Every reader of the history goes through here."""
    if "history_file" not in meta:
        return {k: meta[k] for k in HISTORY_KEYS if k in meta}
    block = meta["history_file"]
    file = history_path(path)
    if not isinstance(block, dict) or block.get("file") != file.name:
        raise CheckpointError(f"sidecar of {Path(path).name} names history file {block!r}, expected {file.name}")
    try:
        data = file.read_bytes()
    except OSError:
        raise CheckpointError(f"training history {file} is missing; restore it beside its checkpoint") from None
    if hashlib.sha256(data).hexdigest() != block.get("sha256"):
        raise CheckpointError(f"training history {file} does not match its sidecar (sha256)")
    try:
        history = json.loads(gzip.decompress(data))
    except (OSError, EOFError, ValueError):
        raise CheckpointError(f"training history {file} is corrupt") from None
    if not isinstance(history, dict):
        raise CheckpointError(f"training history {file} is not a JSON object")
    return {k: history[k] for k in HISTORY_KEYS if k in history}


def save_checkpoint(path: str | Path, model: nn.Module, args: ModelArgs, dataset: str, meta: dict[str, Any]) -> None:
    """Write ``path`` (.pt), its JSON sidecar bound to it by sha256, and the training history the
    sidecar names (split_history); weights go to the CPU first.

    History and sidecar first, .pt last, each atomically: a crash between them leaves the new
    sidecar beside the old .pt, a pair that loading refuses by hash rather than one that loads with
    metadata describing other weights."""
    state = {k: v.detach().cpu() for k, v in _unwrap(model).state_dict().items()}
    payload = {"format": FORMAT, "version": VERSION, "model_args": args.to_dict(), "dataset": dataset, "state_dict": state}
    buf = io.BytesIO()
    torch.save(payload, buf)
    data = buf.getvalue()
    head = {"format": FORMAT + "-meta", "version": VERSION, "model_args": args.to_dict(), "dataset": dataset,
            "pt_sha256": hashlib.sha256(data).hexdigest()}
    meta = split_history(path, meta)
    atomic_write_json(sidecar_path(path), head | meta | head)  # head's keys first, and ``meta`` cannot override them
    atomic_write_bytes(path, data)


def _read_bytes(path: Path) -> bytes:
    try:
        return read_bytes(path, limit=1 << 40)  # weights may be large; only a FIFO or a folder is refused
    except FileNotFoundError:
        raise CheckpointError(f"checkpoint {path} not found") from None
    except ReadError as err:  # a folder, a FIFO (never waited on), a file too large to be a checkpoint
        raise CheckpointError(f"checkpoint {err}") from None


def read_payload(path: str | Path) -> dict[str, Any]:
    """The raw payload, checked for format; never runs code from the file."""
    path = Path(path)
    data = _read_bytes(path)
    return _check_payload(path, _torch_load(path, data))


def _torch_load(path: Path, data: bytes) -> Any:
    try:
        return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        first = str(err).strip().splitlines()[0] if str(err).strip() else "unpickling refused"
        raise CheckpointError(f"{path} is not a robench checkpoint (refused to load it: {first[:160]})") from None
    except Exception as err:  # noqa: BLE001 - torch.load on arbitrary bytes raises anything
        raise CheckpointError(f"{path} is corrupt or not a checkpoint ({type(err).__name__})") from None


def _check_payload(path: Path, payload: Any) -> dict[str, Any]:
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        raise CheckpointError(f"{path} is not a robench checkpoint (no '{FORMAT}' header) nor a plain state_dict")
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
    """Rebuild and load the model in ``path``; ``model``/``act``/``dataset`` given are checked.

    A plain ``state_dict`` (a file robench did not write) loads too, into the model that
    ``model``/``act``/``dataset`` name: its keys are either a whole robench model's (``normalize.*``
    and ``body.*``) or the body's alone, which then gets the dataset's normalisation, as robench's
    own training gives it. Its metadata says ``external: state_dict``."""
    path = Path(path)
    data = _read_bytes(path)  # hashed and parsed from the same bytes: no swap in between
    sha256 = hashlib.sha256(data).hexdigest()
    loaded = _torch_load(path, data)
    if _is_state_dict(loaded):
        return _load_state_dict(path, loaded, sha256, model, act, dataset, device)
    payload = _check_payload(path, loaded)
    try:
        args = ModelArgs.from_dict(payload["model_args"])
        stored_dataset = str(payload["dataset"])
        state = payload["state_dict"]
    except (KeyError, TypeError) as err:
        raise CheckpointError(f"{path} is missing checkpoint field {err}") from None
    if not isinstance(state, dict):
        raise CheckpointError(f"{path} is corrupt or not a checkpoint (its state_dict is not a dict)")
    meta: dict[str, Any] = {}  # no sidecar: a bare .pt still loads, with no metadata
    if sidecar_path(path).is_file():
        meta = _read_sidecar(sidecar_path(path))
        _check_binding(meta, path, sha256)
        _check_identity(meta, path, payload)
    for what, wanted, stored in (("model", model, args.name), ("act", act, args.act), ("dataset", dataset, stored_dataset)):
        if wanted is not None and wanted != stored:
            raise CheckpointError(f"checkpoint {path.name} was trained with {what}={stored}, not {wanted}")
    for what, wanted, stored in (("model", model, args.name), ("act", act, args.act)):
        if is_factory_spec(stored) and wanted != stored:  # a file never chooses what robench imports
            raise CheckpointError(f"checkpoint {path.name} was built by the factory {stored}; "
                                  f"pass --{what} {stored} to import it")
    net = _rebuild(path, args)
    _fill(net, state, path, f"{args.name}/{args.act}")
    net.eval().to(device)
    return Checkpoint(net, args, stored_dataset, path, meta, sha256)


def _rebuild(path: Path, args: ModelArgs) -> nn.Module:
    try:
        return build_model_from_args(args)
    except ValueError as err:
        raise CheckpointError(f"{path.name}: cannot rebuild its model: {err}") from None


def _fill(net: nn.Module, state: dict[str, Any], path: Path, what: str) -> None:
    """Load ``state`` into ``net`` strictly; a mismatch names the first missing or unexpected key
    (or the first wrong shape), and NaN/inf weights are refused."""
    own = net.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if missing or unexpected:
        first = f"missing key {missing[0]!r}" if missing else f"unexpected key {unexpected[0]!r}"
        counts = f" ({len(missing)} missing, {len(unexpected)} unexpected)"
        raise CheckpointError(f"{path.name}: weights do not fit {what}: {first}{counts}")
    for key, value in own.items():
        got = state[key]
        if not isinstance(got, torch.Tensor) or got.shape != value.shape:
            shape = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got).__name__
            raise CheckpointError(f"{path.name}: weights do not fit {what}: {key!r} has shape {shape}, "
                                  f"the model's is {tuple(value.shape)}")
    bad = _first_non_finite(state)
    if bad is not None:
        raise CheckpointError(f"checkpoint {path} has non-finite weights (first: {bad})")
    net.load_state_dict(state, strict=True)


def _is_state_dict(obj: Any) -> bool:
    """A plain ``model.state_dict()``: names to tensors, no robench header."""
    return (isinstance(obj, dict) and bool(obj) and "format" not in obj
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in obj.items()))


def _load_state_dict(path: Path, state: dict[str, Any], sha256: str, model: str | None, act: str | None,
                     dataset: str | None, device: torch.device | str) -> Checkpoint:
    from .data import dataset_info  # data imports nothing of this module; kept local to keep it so

    if model is None or act is None or dataset is None:
        raise CheckpointError(f"{path} is a plain state_dict: name the model it fits with --model, --act and --dataset")
    info = dataset_info(dataset)
    args = ModelArgs(name=model, act=act, num_classes=info.num_classes, in_channels=info.channels,
                     image_size=info.image_size, mean=info.mean, std=info.std)
    net = _rebuild(path, args)
    whole = any(k.startswith("normalize.") for k in state)
    _fill(net if whole else net.body, state, path, f"{model}/{act}" + ("" if whole else " (its body)"))  # type: ignore[arg-type]
    net.eval().to(device)
    meta = {"external": "state_dict", "keys": "model" if whole else "body"}
    return Checkpoint(net, args, dataset, path, meta, sha256)


def _first_non_finite(state: dict[str, Any]) -> str | None:
    """The first parameter or buffer holding a NaN or inf: such a model predicts garbage (or one
    class) and would be reported as robust, so it is refused rather than attacked."""
    for key, value in state.items():
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all()):
            return key
    return None


def _read_sidecar(side: Path) -> dict[str, Any]:
    try:
        meta = read_json(side)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise CheckpointError(f"sidecar {side} is corrupt JSON") from None
    except ReadError as err:
        raise CheckpointError(f"sidecar {err}") from None
    if not isinstance(meta, dict):
        raise CheckpointError(f"sidecar {side} is not a checkpoint sidecar (not a JSON object)")
    return meta


def _mismatch(path: Path, why: str) -> CheckpointError:
    return CheckpointError(
        f"sidecar {sidecar_path(path).name} does not match its checkpoint {path.name} ({why}); "
        "retrain with --force or restore the pair"
    )


def _check_binding(meta: dict[str, Any], path: Path, pt_sha256: str) -> None:
    """The sidecar must name the .pt's sha256. A sidecar written before pt_sha256 existed has
    none and is not checked here (``_check_identity`` still compares the model it names)."""
    if "pt_sha256" in meta and meta["pt_sha256"] != pt_sha256:
        raise _mismatch(path, "sha256")


def _check_identity(meta: dict[str, Any], path: Path, payload: dict[str, Any]) -> None:
    """The sidecar's model and dataset must be the payload's (a relu .pt beside a sapl sidecar)."""
    as_json = json.loads(json.dumps(payload["model_args"], default=repr))  # tuples become lists, as in the sidecar
    if meta.get("model_args") != as_json:
        raise _mismatch(path, "model_args")
    if meta.get("dataset") != payload["dataset"]:
        raise _mismatch(path, "dataset")


def default_checkpoint(model: str, act: str, dataset: str, augment: bool = False, seed: int = 0,
                       directory: Path = DEFAULT_DIR, train_images: int = 0, adv: str = "") -> Path:
    """``<model>-<act>-<dataset>[-aug][-<adv>]-s<seed>[-n<train_images>].pt``: the one place the name is
    made (``TrainConfig.run_name`` is its stem; ``adv`` is ``TrainConfig.adv_tag``, e.g. ``pgd0.1k10``)."""
    return Path(directory) / f"{checkpoint_stem(model, act, dataset, augment, seed, train_images, adv)}.pt"


def read_meta(path: str | Path) -> dict[str, Any]:
    """A checkpoint's metadata: its JSON sidecar, checked against the .pt's sha256 so that stats
    and listings never count metadata of other weights; else the payload."""
    path = Path(path)
    side = sidecar_path(path)
    if not side.is_file():
        return read_payload(path)
    meta = _read_sidecar(side)
    if "pt_sha256" in meta:  # hashing a checkpoint of a few hundred KiB is cheap
        _check_binding(meta, path, hashlib.sha256(_read_bytes(path)).hexdigest())
    return meta


def training_label(adversarial: dict[str, Any] | None) -> str:
    """How a checkpoint was trained, for listings: ``standard``, ``pgd linf 0.1 k10 @3``,
    ``fgsm-rs linf 8/255 k1 @5 !CO@6`` (@: the epoch it holds; !CO@: catastrophic overfitting there)."""
    if not adversarial:
        return "standard"
    beta = f" b{adversarial['beta']:g}" if "beta" in adversarial else ""
    co = adversarial.get("catastrophic_overfitting_epoch")
    return (f"{adversarial['method']} {adversarial['norm']} {budget_text(adversarial['eps'])} k{adversarial['steps']}"
            f"{beta} @{adversarial.get('kept_epoch')}" + (f" !CO@{co}" if co is not None else ""))


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
                "training": training_label(meta.get("adversarial")), "robust_accuracy": meta.get("robust_accuracy"),
            }
        except (CheckpointError, KeyError, TypeError, json.JSONDecodeError) as err:
            row["error"] = str(err)
        rows.append(row)
    return rows


def weights_fingerprint(model: nn.Module) -> str:
    """sha256 over every parameter and buffer (name, dtype, shape, bytes), in name order: equal
    for equal weights on any device, different when any value changes."""
    digest = hashlib.sha256()
    for name, value in sorted(model.state_dict().items()):
        digest.update(name.encode() + b"\0")
        if isinstance(value, torch.Tensor):
            data = value.detach().to("cpu").contiguous()
            digest.update(f"{data.dtype}{tuple(data.shape)}".encode())
            digest.update(data.reshape(-1).view(torch.uint8).numpy().tobytes() if data.numel() else b"")
        else:
            digest.update(repr(value).encode())
    return digest.hexdigest()
