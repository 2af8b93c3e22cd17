"""Re-check a stored result from what it stores: the checkpoint, the image set, every adversarial.

For each result: the checkpoint must hash to the recorded sha256 and the test data to the recorded
fingerprint; the seeded image selection must give the same indices; every repeat's adversarials
are rebuilt (painted pixels, or the ``.npz``), hashed, checked against their budget by ``judge``
and run through the model again, and every recorded label, verdict, probability and norm must
agree (to ``TOLERANCE``), as must the repeat and setting summaries. A result made before robench
stored adversarials is checked on its clean side, and with ``replay`` its repeats are re-run from
their recorded seeds.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from .adversarials import SUCCESSES, Store, images_sha256, named_npz, npz_path, rebuild_repeat, repeat_key
from .attacks import get_attack
from .attacks.base import AttackBudgetError, AttackOutcome, Judgement, judge
from .attacks.metrics import aggregate, repeat_summary
from .attacks.runner import select_images
from .checkpoints import load_checkpoint, weights_fingerprint
from .config import config_from_dict, config_to_dict
from .data import Split, load_split, to_float
from .errors import ResultError
from .registry import imports_outside_cwd, is_factory_spec
from .results import read_result, result_paths
from .storage import file_sha256, resolve_device

TOLERANCE = 1e-4  # probabilities and norms are stored rounded to 1e-6; kernels may differ below this
FLOAT_FIELDS = ("p_true_clean", "p_true_adv", "abs_z", "linf", "l2", "l1")
SHOWN = 5  # mismatches listed per field and repeat; the count covers them all


@dataclass
class Mismatch:
    where: str  # "1px repeat 2, image 1234" or "checkpoint"
    field: str
    stored: Any
    found: Any

    def __str__(self) -> str:
        return f"{self.where}: {self.field} stored {self.stored!r}, found {self.found!r}"


@dataclass
class Verification:
    """What verifying one result found. ``legacy``: repeats whose adversarials were not stored and
    not replayed, so only their clean side was checked."""

    path: Path
    images: int = 0
    repeats: int = 0
    legacy: int = 0
    replayed: int = 0
    mismatches: list[Mismatch] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.mismatches


class _Data:
    """Test splits by dataset, loaded once for a whole verify run."""

    def __init__(self, data_dir: str | Path | None) -> None:
        self.data_dir = data_dir
        self.splits: dict[str, tuple[Split, str]] = {}

    def get(self, dataset: str) -> tuple[Split, str]:
        if dataset not in self.splits:
            split, prov = load_split(dataset, train=False, data_dir=self.data_dir)
            self.splits[dataset] = (split, prov.fingerprint)
        return self.splits[dataset]


def result_files(paths: Iterable[str | Path]) -> list[Path]:
    """The result files named, with every ``*.json`` directly inside a named folder."""
    files: list[Path] = []
    for p in map(Path, paths):
        if p.is_dir():
            files += result_paths(p)
        elif p.exists():  # a FIFO named here is refused by read_result in one line, without blocking
            files.append(p)
        else:
            raise ResultError(f"{p} not found")
    return files


def verify_results(paths: Iterable[str | Path], data_dir: str | Path | None = None, device: str = "auto",
                   replay: bool = False, on_result: Callable[[Verification], None] | None = None,
                   module: torch.nn.Module | None = None, factories: Iterable[str] = ()) -> list[Verification]:
    """Verify every result in ``paths`` (files or folders); bad input raises, mismatches are returned.
    ``module``: the model behind results of ``robench.evaluate`` (they store no checkpoint).
    ``factories``: the ``package.module:factory`` models the user allows to be imported; a result
    made by any other is refused, since a file never chooses what robench imports."""
    files = result_files(paths)
    if not files:
        raise ResultError("no result files to verify")
    data = _Data(data_dir)
    dev = resolve_device(device)
    out = []
    for path in files:
        v = verify_result(path, data, dev, replay, module=module, factories=frozenset(factories))
        out.append(v)
        if on_result is not None:
            on_result(v)
    return out


Replayed = Callable[[int, int, AttackOutcome, torch.Tensor], None]  # (setting, repeat index, outcome, images)


def verify_result(path: Path, data: _Data, device: torch.device, replay: bool = False,
                  on_replay: Replayed | None = None, module: torch.nn.Module | None = None,
                  factories: frozenset[str] = frozenset()) -> Verification:
    """Verify one result file against its checkpoint and data; see the module docstring.
    ``on_replay`` sees every replayed repeat's outcome (the migration stores them); ``module`` is
    the model of a result ``robench.evaluate`` made (as evaluate attacked it, normalisation included)."""
    res = read_result(path)
    v = Verification(path)
    spec = get_attack(res["attack"])
    config = config_from_dict(spec.config_cls, res["attack_config"], f"{path}: attack_config")
    model = _model(path, res, v, device, module, factories)
    if model is None:
        return v
    test, fingerprint = data.get(res["dataset"])
    if fingerprint != res["provenance"].get("data_sha256"):
        v.mismatches.append(Mismatch("data", "data_sha256", res["provenance"].get("data_sha256"), fingerprint))
        return v

    image_set = res["image_set"]
    indices, drawn = select_images(model, test.images, test.labels, image_set["requested"],
                                   image_set["selection_seed"], device)
    _compare(v, "image set", "indices", image_set["indices"], indices)
    _compare(v, "image set", "drawn", image_set["drawn"], drawn)
    indices = image_set["indices"]  # check the repeats against the images they were run on
    images = to_float(test.images[indices]).to(device)
    labels = test.labels[indices].to(device)
    v.images = len(indices)

    store = _store(path, res, v)
    settings = spec.settings(config)
    _compare(v, "settings", "labels", [s["label"] for s in res["settings"]], [label for label, _ in settings][:len(res["settings"])])
    for s_idx, (entry, (label, setting)) in enumerate(zip(res["settings"], settings)):
        found = config_to_dict(setting)  # options added since the result was made hold their defaults
        _compare(v, label, "config", entry["config"], {k: found.get(k) for k in entry["config"]})
        for r_idx, rep in enumerate(entry["repeats"]):
            where = f"{label} repeat {rep['repeat']}"
            adv = _adversarials(v, store, repeat_key(s_idx, rep["repeat"]), rep, images, labels, model, spec, setting,
                                replay, where)
            if isinstance(adv, AttackOutcome):
                if on_replay is not None:
                    on_replay(s_idx, r_idx, adv, images)
                adv = adv.adversarial
            _check_repeat(v, where, rep, indices, images, labels, model, adv, spec.budget(setting),
                          rep.get("stored_images") == SUCCESSES)
            v.repeats += 1
        if "aggregate" in entry:
            _compare_numbers(v, label, "aggregate", entry["aggregate"], aggregate(entry["repeats"]), 1e-9)
    return v


def _model(path: Path, res: dict[str, Any], v: Verification, device: torch.device,
           module: torch.nn.Module | None, factories: frozenset[str]) -> torch.nn.Module | None:
    """The model the result was made with, from its checkpoint file (sha256 checked) or, for a
    result of ``robench.evaluate``, the module handed in (weights fingerprint checked); None after
    recording a mismatch."""
    block = res["checkpoint"]
    if block.get("external") == "module":
        if module is None:
            raise ResultError(f"{path}: made by robench.evaluate on a module in memory; verify it from Python: "
                              f"robench.verify('{path}', model=...)")

        found = weights_fingerprint(module)
        if found != block["sha256"]:
            v.mismatches.append(Mismatch("checkpoint", "weights fingerprint of the module", block["sha256"], found))
            return None
        return module.to(device).eval()
    ckpt_path = Path(block["path"])
    if not ckpt_path.is_file():
        raise ResultError(f"{path}: its checkpoint {ckpt_path} is not here; run verify where it was made")
    sha = file_sha256(ckpt_path)
    if sha != block["sha256"]:
        v.mismatches.append(Mismatch("checkpoint", f"sha256 of {ckpt_path}", block["sha256"], sha))
        return None
    if is_factory_spec(res["model"]) and res["model"] not in factories:
        raise ResultError(f"{path}: made by the model factory {res['model']}; verify imports it only when "
                          f"told: pass --model {res['model']}")
    with imports_outside_cwd():
        return load_checkpoint(ckpt_path, model=res["model"], act=res["act"], dataset=res["dataset"], device=device).model


def _store(path: Path, res: dict[str, Any], v: Verification) -> Store:
    block = res.get("adversarials")
    if not block:
        return Store(npz_path(path))  # nothing stored densely: an empty store
    npz = named_npz(path, block)
    if not npz.is_file():
        raise ResultError(f"{path}: its adversarials file {npz} is missing")
    _compare(v, "adversarials file", "sha256", block.get("sha256"), file_sha256(npz))
    return Store.load(npz)


def _adversarials(v: Verification, store: Store, key: str, rep: dict[str, Any], images: torch.Tensor,
                  labels: torch.Tensor, model: torch.nn.Module, spec: Any, setting: Any, replay: bool,
                  where: str) -> torch.Tensor | AttackOutcome | None:
    """The repeat's adversarials rebuilt from what it stores, or the attack replayed from its seed,
    or None (nothing stored, no replay)."""
    adv = rebuild_repeat(images, rep, key, store, f"{v.path}: {where}")
    if adv is not None:
        if "adversarial_sha256" in rep:
            _compare(v, where, "adversarial_sha256", rep["adversarial_sha256"], images_sha256(adv))
        return adv
    if not replay:
        v.legacy += 1
        return None
    v.replayed += 1
    return spec.fn(model, images, labels, as_ran(setting, rep), torch.Generator().manual_seed(rep["seed"]))


def as_ran(setting: Any, rep: dict[str, Any]) -> Any:
    """``setting`` as repeat ``rep`` ran it: a search replays with the forward it recorded (eager,
    where it predates the record), since another forward rounds differently and can tip a near-tie
    in a greedy selection the other way."""
    if dataclasses.is_dataclass(setting) and any(f.name == "forward" for f in dataclasses.fields(setting)):
        return dataclasses.replace(setting, forward=rep.get("forward", "eager"))
    return setting


def _check_repeat(v: Verification, where: str, rep: dict[str, Any], indices: list[int], images: torch.Tensor,
                  labels: torch.Tensor, model: torch.nn.Module, adv: torch.Tensor | None, budget: dict[str, Any],
                  successes_only: bool = False) -> None:
    records = rep["images"]
    _compare(v, where, "image indices", [r["index"] for r in records], indices)
    if len(records) != len(indices):
        return
    outcome = AttackOutcome(images if adv is None else adv, torch.zeros(len(images), dtype=torch.int64))
    try:
        j = judge(model, images, labels, outcome, **budget)
    except AttackBudgetError as err:
        v.mismatches.append(Mismatch(where, "budget", "within", str(err)))
        return
    except ValueError as err:  # a clean image the model now gets wrong
        v.mismatches.append(Mismatch(where, "clean labels", "all correct", str(err)))
        return
    _compare_images(v, where, records, labels, j, clean_only=adv is None, successes_only=successes_only)
    if adv is not None:
        summary = repeat_summary(j)
        _compare_numbers(v, where, "summary", {k: rep[k] for k in summary}, summary, TOLERANCE)
    else:  # the stored records must at least agree with the stored summary
        ok = [r["success"] for r in records]
        _compare(v, where, "successes (from its records)", rep["successes"], sum(ok))


CLEAN_FIELDS = ("label", "p_true_clean")


def _compare_images(v: Verification, where: str, records: list[dict[str, Any]], labels: torch.Tensor, j: Judgement,
                    clean_only: bool, successes_only: bool = False) -> None:
    """Each image's stored record against the verdict on the rebuilt adversarial. With
    ``successes_only`` (the repeat stored its counted successes alone) a failed image is rebuilt
    clean: its clean fields and its verdict (no success) are checked, its perturbation was not kept."""
    found: dict[str, list[Any]] = {"label": labels.cpu().tolist(), "p_true_clean": j.p_true_clean.tolist()}
    if not clean_only:
        found |= {"adv_label": j.adv_label.tolist(), "success": j.success.tolist(), "p_true_adv": j.p_true_adv.tolist(),
                  "abs_z": j.abs_z.tolist(), "linf": j.linf.tolist(), "l2": j.l2.tolist(), "l1": j.l1.tolist(),
                  "l0_pixels": j.l0_pixels.tolist()}
    # the images whose perturbation is there to check: all, or (successes only) those both the record
    # and the verdict count; a success flipped either way is one mismatch, of "success"
    perturbed = [not successes_only or (r.get("success") is True and s) for r, s in zip(records, j.success.tolist())]
    for name, values in found.items():
        tol = TOLERANCE if name in FLOAT_FIELDS else None
        # a field an older robench did not record (l1 before the strong attacks) has nothing to check
        checked = [(r, x) for r, x, kept in zip(records, values, perturbed) if name in r
                   and (kept or name in (*CLEAN_FIELDS, "success"))]
        bad = [(r, x) for r, x in checked if not _agree(r[name], x, tol)]
        for r, x in bad[:SHOWN]:
            v.mismatches.append(Mismatch(f"{where}, image {r['index']}", name, r.get(name), x))
        if len(bad) > SHOWN:
            v.mismatches.append(Mismatch(where, name, "...", f"{len(bad) - SHOWN} more images differ"))


def _agree(stored: Any, found: Any, tol: float | None) -> bool:
    if tol is None or stored is None or isinstance(stored, bool):
        return stored == found and type(stored) is type(found)
    return isinstance(stored, (int, float)) and math.isfinite(stored) and abs(stored - found) <= tol


def _compare(v: Verification, where: str, name: str, stored: Any, found: Any) -> None:
    if stored != found:
        v.mismatches.append(Mismatch(where, name, _short(stored), _short(found)))


def _compare_numbers(v: Verification, where: str, name: str, stored: dict[str, Any], found: dict[str, Any],
                     tol: float) -> None:
    for key, x in found.items():
        s = stored.get(key)
        if s is None or x is None or isinstance(x, int):
            same = s == x and type(s) is type(x)
        else:
            same = isinstance(s, (int, float)) and not isinstance(s, bool) and abs(s - x) <= tol * max(1.0, abs(x))
        if not same:
            v.mismatches.append(Mismatch(where, f"{name} {key}", s, x))


def _short(value: Any) -> Any:
    if isinstance(value, list) and len(value) > 6:
        return f"[{', '.join(map(str, value[:6]))}, ... ({len(value)} items)]"
    return value


__all__ = ["Mismatch", "Verification", "as_ran", "result_files", "verify_result", "verify_results"]
