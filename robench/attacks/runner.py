"""One attack run: load a checkpoint, pick the seeded image set, attack, judge, store.

The image set (SPEC §4): walk a seeded random permutation of the test set and keep the first N
images the model classifies correctly; the result records their indices and how many were drawn.
Repeat r of setting s uses its own generator seeded ``seed * 1_000_003 + s * 1_009 + r``, so any
repeat can be rerun alone and a resumed run equals an uninterrupted one.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..adversarials import Store, drop_unnamed, keep, named_npz, npz_path, repeat_key
from ..checkpoints import default_checkpoint, load_checkpoint
from ..config import config_difference, config_from_dict, config_to_dict, field_default
from ..data import load_split, to_float
from ..errors import ResultError, RobenchError
from ..locks import cell_lock
from ..progress import progress_bar
from ..results import DEFAULT_DIR, read_result, write_result
from ..storage import check_writable, library_versions, resolve_device
from . import get_attack
from .base import EvalMode, judge
from .metrics import aggregate, image_records, repeat_summary


@dataclass(frozen=True)
class AttackRun:
    """What ``robench attack`` was asked to do."""

    model: str = "lenet5"
    act: str = "relu"
    dataset: str = "cifar10"
    attack: str = "pixel"
    options: dict[str, Any] = field(default_factory=dict)  # fields of the attack's config
    images: int = 100
    repeats: int = 5
    seed: int = 0
    checkpoint: str | None = None  # default: the shipped checkpoints/<model>-<act>-<dataset>-s0.pt

    def __post_init__(self) -> None:
        if self.images < 1:
            raise ValueError(f"images must be >= 1, got {self.images}")
        if self.repeats < 1:
            raise ValueError(f"repeats must be >= 1, got {self.repeats}")

    def attack_config(self) -> Any:
        spec = get_attack(self.attack)
        return config_from_dict(spec.config_cls, dict(self.options), f"{self.attack} options")

    def checkpoint_path(self) -> Path:
        return Path(self.checkpoint) if self.checkpoint else default_checkpoint(self.model, self.act, self.dataset)

    def result_name(self, stem: str | None = None) -> str:
        """``<checkpoint stem>--<attack><tag>-seed<seed>-<hash>.json``: the tag (``3px``, ``-linf``) says
        what splits one attack into several files (AttackSpec.tag), the hash covers everything else
        that changes the numbers, so a 20-image run never meets the 100-image one. ``stem`` replaces
        the checkpoint's (a module handed to ``robench.evaluate`` has none)."""
        tag = get_attack(self.attack).tag(self.attack_config())
        stem = stem if stem is not None else self.checkpoint_path().stem
        return f"{stem}--{self.attack}{tag}-seed{self.seed}-{self.settings_hash()}.json"

    def settings_hash(self) -> str:
        """Six hex digits of the sha256 of the image count, the repeats that run and every attack
        config field that differs from its default (the checkpoint and seed are in the name already).
        Defaults stay out so that an option added later does not rename every stored result."""
        config = self.attack_config()
        changed = {f.name: getattr(config, f.name) for f in dataclasses.fields(config)
                   if getattr(config, f.name) != field_default(f)}
        repeats = 1 if get_attack(self.attack).deterministic else self.repeats
        key = {"images": self.images, "repeats": repeats, "attack_config": changed}
        return hashlib.sha256(json.dumps(key, sort_keys=True).encode()).hexdigest()[:6]


class ResultExistsError(ResultError):
    """A finished result of this very run is already there (``result``); like make, asking for it
    again shows it. Pass force to run it again."""

    def __init__(self, message: str, path: Path, result: dict[str, Any]) -> None:
        super().__init__(message)
        self.path = path
        self.result = result


class DegenerateModelError(RobenchError):
    """The model's outputs are non-finite or ignore the input: attacking it would count nothing."""


# A model that gives one class to this share of the test set is degenerate, not robust: its
# "correct" images are those of one class, and no attack can move an output that ignores its input.
DEGENERATE_SHARE = 0.9


def select_images(model: torch.nn.Module, images: torch.Tensor, labels: torch.Tensor, n: int, seed: int,
                  device: torch.device) -> tuple[list[int], int]:
    """Indices of the first ``n`` correctly classified images in a seeded permutation, and how
    many of the permutation were drawn to find them; a degenerate model is refused first."""
    order = torch.randperm(len(labels), generator=torch.Generator().manual_seed(seed))
    preds = checked_predictions(model, images[order], device).cpu()
    correct = (preds == labels[order]).nonzero().flatten()
    if len(correct) < n:
        raise ValueError(f"the model classifies only {len(correct)} test images right, fewer than --images {n}")
    chosen = correct[:n]
    return order[chosen].tolist(), int(chosen[-1]) + 1


@torch.no_grad()
def checked_predictions(model: torch.nn.Module, images: torch.Tensor, device: torch.device,
                        batch_size: int = 1000) -> torch.Tensor:
    """Predicted labels of ``images`` (N, C, H, W) uint8; a DegenerateModelError when any output is
    NaN or infinite, or one class takes DEGENERATE_SHARE of the images (constant outputs do)."""
    with EvalMode(model):
        logits = [model(to_float(images[i : i + batch_size].to(device))) for i in range(0, len(images), batch_size)]
    out = torch.cat(logits)
    bad = (~torch.isfinite(out)).any(1)
    if bad.any():
        raise DegenerateModelError(f"the model's outputs are NaN or infinite on {int(bad.sum())} of {len(out)} test "
                                   "images: a broken model, not a robust one")
    preds = out.argmax(1)
    top = torch.bincount(preds, minlength=out.shape[1])
    if len(out) >= 20 and int(top.max()) >= DEGENERATE_SHARE * len(out):
        raise DegenerateModelError(f"the model predicts class {int(top.argmax())} for {int(top.max())} of {len(out)} "
                                   "test images: a degenerate model, not a robust one")
    return preds


def run_attack(
    run: AttackRun,
    out: str | Path | None = None,
    data_dir: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = False,
    on_repeat: Callable[[str, int], None] | None = None,
    wait: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """Run (or resume) ``run`` and write its result file; returns its path and content. With ``wait``
    False, a result another process is computing raises CellBusy at once instead of waiting."""
    # The default checkpoint written out, so `robench attack` and a suite naming the same file
    # describe the same run (and can resume each other's partial results).
    run = dataclasses.replace(run, checkpoint=str(run.checkpoint_path()))
    ckpt_path = run.checkpoint_path()

    def load(dev: torch.device) -> tuple[torch.nn.Module, dict[str, Any]]:
        ckpt = load_checkpoint(ckpt_path, model=run.model, act=run.act, dataset=run.dataset, device=dev)
        block = {"path": str(ckpt_path), "sha256": ckpt.sha256,  # of the very bytes loaded
                 "clean_test_accuracy": ckpt.meta.get("clean_test_accuracy")}
        if "external" in ckpt.meta:
            block["external"] = ckpt.meta["external"]
        return ckpt.model, block

    out = Path(out) if out else DEFAULT_DIR / run.result_name()
    return attack_model(run, load, out, data_dir, device, force, show_progress, on_repeat, wait)


ModelLoader = Callable[[torch.device], tuple[torch.nn.Module, dict[str, Any]]]


def attack_model(
    run: AttackRun,
    load: ModelLoader,
    out: Path,
    data_dir: str | Path | None = None,
    device: str = "auto",
    force: bool = False,
    show_progress: bool = False,
    on_repeat: Callable[[str, int], None] | None = None,
    wait: bool = True,
) -> tuple[Path, dict[str, Any]]:
    """The attack run itself, for any model: ``load(device)`` gives the model (eval mode, on that
    device) and the result's ``checkpoint`` block, which says where it came from and fingerprints
    its weights. ``run_attack`` loads a checkpoint; ``robench.evaluate`` hands in a module."""
    spec = get_attack(run.attack)
    config = run.attack_config()
    check_writable(out, "result")
    check_writable(npz_path(out), "adversarials file")
    with cell_lock(out, blocking=wait):  # a second process on the same result waits, then finds it stored
        dev = resolve_device(device)
        model, checkpoint = load(dev)
        test, prov = load_split(run.dataset, train=False, data_dir=data_dir)

        header = {
            "model": run.model, "act": run.act, "dataset": run.dataset, "attack": run.attack,
            "attack_config": config_to_dict(config), "run": config_to_dict(run), "checkpoint": checkpoint,
            "provenance": prov.to_dict(), "seed": run.seed,
        }
        previous = _resumable(out, header, run, force)
        if previous is not None:
            indices, drawn = previous["image_set"]["indices"], previous["image_set"]["drawn"]
        else:
            indices, drawn = select_images(model, test.images, test.labels, run.images, run.seed, dev)
        images = to_float(test.images[indices]).to(dev)
        labels = test.labels[indices].to(dev)
        store = _adversarial_store(out, previous)

        settings = spec.settings(config)
        repeats = 1 if spec.deterministic else run.repeats
        done = {s["label"]: s["repeats"] for s in (previous or {}).get("settings", [])}
        result: dict[str, Any] = header | {
            "status": "partial",
            "image_set": {"requested": run.images, "indices": indices, "drawn": drawn, "selection_seed": run.seed},
            "repeats_per_setting": repeats,
            "settings": [],
            "wall_time_s": (previous or {}).get("wall_time_s", 0.0),
            "device": str(dev),
            "versions": library_versions(),
        }
        result["settings"] = [{"label": label, "config": config_to_dict(c), "repeats": list(done.get(label, []))}
                              for label, c in settings]
        if previous is not None and "adversarials" in previous:
            result["adversarials"] = previous["adversarials"]  # the .npz holding the repeats carried over
        total = len(settings) * repeats
        finished = sum(len(s["repeats"]) for s in result["settings"])
        with progress_bar(show_progress) as bar:
            task = bar.add_task(f"{run.attack} {Path(checkpoint['path']).stem or run.model}", total=total, completed=finished)
            for s_idx, (label, setting) in enumerate(settings):
                entry = result["settings"][s_idx]
                for r in range(len(entry["repeats"]), repeats):
                    seed = run.seed * 1_000_003 + s_idx * 1_009 + r
                    start = time.perf_counter()
                    outcome = spec.fn(model, images, labels, setting, torch.Generator().manual_seed(seed))
                    verdict = judge(model, images, labels, outcome, **spec.budget(setting))
                    elapsed = time.perf_counter() - start - outcome.meta.get("compile_s", 0.0)  # compiling is not attacking
                    kept = keep(store, repeat_key(s_idx, r), images, outcome, spec.threat(setting), verdict.success)
                    entry["repeats"].append(repeat_summary(verdict) | {
                        "repeat": r, "seed": seed, "wall_time_s": round(elapsed, 3),
                        "queries_total": int(outcome.queries.sum()), **kept, **outcome.meta,
                        "images": image_records(indices, labels.cpu(), verdict, outcome.queries.cpu(), outcome.details),
                    })
                    result["wall_time_s"] = round(result["wall_time_s"] + elapsed, 3)
                    block = store.write(out)  # before the JSON that names it, the old file after: see adversarials
                    if block is not None:
                        result["adversarials"] = block
                    write_result(out, result)
                    drop_unnamed(out, result.get("adversarials"))
                    bar.update(task, advance=1)
                    if on_repeat is not None:
                        on_repeat(label, r)
                entry["aggregate"] = aggregate(entry["repeats"])
        result["status"] = "complete"
        written = write_result(out, result)
        drop_unnamed(out, result.get("adversarials"))  # a stale .npz of an earlier run under this name
        return out, written


def _adversarial_store(out: Path, previous: dict[str, Any] | None) -> Store:
    """The result's ``.npz`` store: the stored one when resuming (every repeat it names must be in
    it), else a fresh one, so a stale file from an earlier run is never carried over (it stays
    until this run writes its own, or ends storing none: an interrupted --force keeps the old pair).
    Only the file the previous JSON names is read, never one merely found beside it."""
    block = (previous or {}).get("adversarials")
    if not block:
        return Store(npz_path(out))
    path = named_npz(out, block)
    store = Store.load(path)
    for s_idx, entry in enumerate(previous["settings"]):
        for rep in entry["repeats"]:
            if rep.get("stored") == "npz" and store.get(repeat_key(s_idx, rep["repeat"])) is None:
                raise ResultError(f"{out} is an unfinished run whose adversarials file {path.name} lacks "
                                  f"repeat {rep['repeat']} of {entry['label']}; pass --force to start over")
    return store


def request_difference(stored: dict[str, Any], run: AttackRun) -> list[str]:
    """What a stored result was asked for differently from ``run`` (its checkpoint written out),
    after filling in what an older robench did not record (config.config_difference): names such as
    ``attack_config.strategy`` or ``run.images``; [] when it answers the same request."""
    if stored.get("attack") != run.attack:
        return ["attack"]
    differ = [key for key in ("model", "act", "dataset", "seed") if stored.get(key) != getattr(run, key)]
    differ += [f"attack_config.{name}" for name in config_difference(stored.get("attack_config"), run.attack_config())]
    # the options are the attack_config as asked for: compared above, filled in
    stored_run = stored.get("run") if isinstance(stored.get("run"), dict) else {}
    differ += [f"run.{name}" for name in config_difference(stored_run | {"options": {}}, dataclasses.replace(run, options={}))]
    return differ


def _resumable(out: Path, header: dict[str, Any], run: AttackRun, force: bool) -> dict[str, Any] | None:
    """The partial result to continue from, None to start afresh; refuses to clobber."""
    if not out.exists() or force:
        return None
    old = read_result(out)
    finished = old["status"] == "complete"
    provenance = {k: v for k, v in old["provenance"].items() if k != "root"}  # an older robench stored root
    differ = request_difference(old, run)
    differ += [key for key in ("checkpoint", "provenance")
               if (provenance if key == "provenance" else old.get(key)) != header[key]]
    if differ:
        what = "a finished result" if finished else "an unfinished run"
        raise ResultError(f"{out} is {what} with a different {', '.join(differ)}; pass --force to "
                          f"{'replace it' if finished else 'start over'}")
    if finished:
        raise ResultExistsError(f"{out} is stored; pass --force to run it again", out, old)
    return old


def summary_rows(result: dict[str, Any]) -> list[dict[str, Any]]:
    """One row per setting for printing: label, successes mean ± std, rate, avg|Z|."""
    rows = []
    for s in result["settings"]:
        agg = s.get("aggregate") or aggregate(s["repeats"])
        rows.append({"setting": s["label"]} | agg)
    return rows


__all__ = ["AttackRun", "ResultExistsError", "request_difference", "run_attack", "select_images", "summary_rows"]
