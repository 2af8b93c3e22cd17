"""Bring result files and checkpoint sidecars made by an older robench up to what this one stores,
without rerunning them. One run is idempotent: a second finds everything up to date.

For results, these steps, each recorded in the result's ``migrations`` list:

- ``provenance.root`` (an absolute folder of the machine that ran it) is dropped: data are
  compared by fingerprint only.
- A result under its pre-hash default name moves to today's name, which adds the settings hash.
- With ``replay``, repeats that stored no adversarials are re-run from their recorded seeds on the
  recorded checkpoint and images, and their adversarials are stored only when ``verify`` finds every
  stored label, verdict, probability and norm reproduced; a result that does not reproduce is left
  as it is and reported.
- Dense adversarials (``.npz``) stored for every image keep only the counted successes: each repeat
  is rebuilt whole, checked against its recorded ``adversarial_sha256``, and stored again for the
  images its records count (``stored_images: successes``; its hash is of the new rebuild), packed
  with LZMA. A repeat whose rebuild does not match is left as it is and reported. With
  ``--npz-max-ratio R`` an ``.npz`` is rewritten only when the new file is at most R of the old
  one's bytes (always when the old one is over 1.5 MiB): a rewritten binary counts twice in the
  commit that records the migration, so a small saving may not be worth it.
- The JSON is written compactly.

A checkpoint sidecar (a ``.json`` beside a ``.pt``) has its training history moved to the compact
``<stem>.history.json.gz`` it then names (checkpoints.split_history), and is written compactly.

Run it as ``python -m robench.migrate [--replay] attacks/ attacks/*/ checkpoints/``; it prints the
bytes of the files it touched before and after.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .adversarials import SUCCESSES, Store, drop_unnamed, images_sha256, keep, named_npz, npz_for, npz_path, rebuild_repeat, repeat_key
from .attacks import get_attack
from .attacks.base import AttackOutcome
from .attacks.runner import AttackRun
from .checkpoints import read_meta, split_history
from .config import config_from_dict
from .data import to_float
from .errors import ResultError, RobenchError
from .results import read_result, write_result
from .storage import atomic_write_bytes, resolve_device
from .verification import _Data, result_files, verify_result

DROPPED_ROOT = "provenance.root dropped (data are compared by fingerprint)"
NOT_MIGRATED = ("does not reproduce", "left as")  # what a result that could not be migrated says
MAX_FILE_BYTES = 1_572_864  # the size budget's largest tracked file (.ci/size_check.py)
# Rewrite a dense .npz only when it shrinks to this share or less. Measured on the committed tree
# (docs/stored-results.md): rewriting all 205 takes it to 113.0 MiB but the commit's diff to 193 MB;
# at 0.75, 117.7 MiB for a 122 MB diff (the PGD files, mostly successes, shrink least).
NPZ_MAX_RATIO = 0.75
SUCCESSES_ONLY = "dense adversarials kept for the counted successes only (rebuilt whole and hash-checked first)"
REPLAYED = "adversarials stored by replaying the recorded seeds; verify reproduced every stored number"


def drop_root(result: dict[str, Any]) -> bool:
    """Remove ``provenance.root``; True when there was one."""
    prov = result.get("provenance")
    if isinstance(prov, dict) and "root" in prov:
        del prov["root"]
        return True
    return False


def migrate(path: Path, data: _Data, device: torch.device, replay: bool, max_ratio: float = NPZ_MAX_RATIO) -> str:
    """Migrate one result file in place; returns what was done, in a few words."""
    res = read_result(path)
    done: list[str] = []
    if drop_root(res):
        done.append(DROPPED_ROOT)
    renamed = rename(path, res)
    if renamed != path:
        done.append(f"renamed from {path.name} (the settings hash joined the name)")
        path = renamed
    failed = None
    if replay:
        replayed: list[tuple[int, int, AttackOutcome, torch.Tensor]] = []
        v = verify_result(path, data, device, replay=True, on_replay=lambda *a: replayed.append(a))
        if v.mismatches:
            failed = f"replay does not reproduce it ({v.mismatches[0]}); adversarials not stored"
        elif replayed:
            _store(path, res, replayed)
            done.append(REPLAYED)
    if failed is None and _dense_everywhere(res):
        before = named_npz(path, res["adversarials"]).stat().st_size
        rewritten = successes_only(path, res, data, max_ratio)
        if rewritten is True:
            after = named_npz(path, res["adversarials"]).stat().st_size
            done.append(f"{SUCCESSES_ONLY}: .npz {before:,} -> {after:,} bytes")
        elif rewritten is not False:
            failed = rewritten
    if done:
        _record(res, done)
    if done or not _compact(path, res):
        write_result(path, res)
        drop_unnamed(path, res.get("adversarials"))
        done = done or ["written compactly"]
    return failed or (f"{path.name}: " + "; ".join(done) if done else "up to date")


def _compact(path: Path, res: dict[str, Any]) -> bool:
    """Whether ``path`` holds ``res`` as write_result writes it today (compact JSON)."""
    return path.read_bytes() == (json.dumps(res, separators=(",", ":"), allow_nan=False) + "\n").encode()


def _dense_everywhere(res: dict[str, Any]) -> bool:
    """Whether a repeat of ``res`` stores dense adversarials for every image (an older robench)."""
    return any(rep.get("stored") == "npz" and rep.get("stored_images") != SUCCESSES
               for entry in res["settings"] for rep in entry["repeats"])


def successes_only(path: Path, res: dict[str, Any], data: _Data, max_ratio: float = NPZ_MAX_RATIO) -> bool | str:
    """Store ``res``'s dense adversarials for its counted successes only, updating ``res`` (the
    caller writes it, after this writes the ``.npz`` it names). The ``.npz`` is rewritten only when
    the new one is at most ``max_ratio`` of the old one's bytes, or the old one is over the size
    budget's 1.5 MiB: every byte rewritten counts twice in the commit that records it. Returns True
    when rewritten, False when not worth it, else why not (the files are left as they are)."""
    test, fingerprint = data.get(res["dataset"])
    if fingerprint != res["provenance"].get("data_sha256"):
        return f"{path.name}: made on other {res['dataset']} data; adversarials left as they are"
    images = to_float(test.images[res["image_set"]["indices"]])
    spec = get_attack(res["attack"])
    settings = spec.settings(config_from_dict(spec.config_cls, res["attack_config"], f"{path}: attack_config"))
    old_npz = named_npz(path, res["adversarials"])
    old, new = Store.load(old_npz), Store(npz_path(path))
    kept: list[tuple[dict[str, Any], dict[str, Any]]] = []
    for s_idx, (entry, (_, setting)) in enumerate(zip(res["settings"], settings)):
        for rep in entry["repeats"]:
            if rep.get("stored") != "npz":
                continue
            key = repeat_key(s_idx, rep["repeat"])
            adv = rebuild_repeat(images, rep, key, old, f"{path}: {entry['label']} repeat {rep['repeat']}")
            assert adv is not None  # stored: npz
            if rep.get("adversarial_sha256") not in (None, images_sha256(adv)):
                return f"{path.name}: {entry['label']} repeat {rep['repeat']} does not rebuild to its hash; left as it is"
            success = torch.tensor([r.get("success") is True for r in rep["images"]])
            kept.append((rep, keep(new, key, images, AttackOutcome(adv, torch.zeros(len(adv), dtype=torch.int64)),
                                   spec.threat(setting), success)))
    before = old_npz.stat().st_size
    if len(new.pack()) > max_ratio * before and before <= MAX_FILE_BYTES:
        return False
    block = new.write(path)  # the caller writes the JSON naming it, then drops the old file
    if block is not None:
        res["adversarials"] = block
    for rep, fields in kept:
        rep |= fields
    return True


def rename(path: Path, res: dict[str, Any]) -> Path:
    """Move a result from an older default name (``...-seed0.json``, or another settings hash) to
    today's (``...-seed0-<hash>.json``), with its ``.npz``; a name chosen with ``--out`` stays. The
    JSON is written under the new name before the old one goes, so a crash leaves a copy, never
    nothing."""
    new = path.with_name(AttackRun(**res["run"]).result_name())
    base = new.stem.rsplit("-", 1)[0]
    if new == path or base not in (path.stem, path.stem.rsplit("-", 1)[0]):
        return path
    if new.exists():
        raise ResultError(f"cannot rename {path} to {new.name}: that file exists")
    if res.get("adversarials"):  # its file moves to the new name (legacy names stay legacy)
        old_npz = named_npz(path, res["adversarials"])
        new_npz = npz_path(new) if old_npz == npz_path(path) else npz_for(new, res["adversarials"]["sha256"])
        os.replace(old_npz, new_npz)
        res["adversarials"]["file"] = new_npz.name
    write_result(new, res)
    path.unlink()
    return new


def _store(path: Path, res: dict[str, Any], replayed: list[tuple[int, int, AttackOutcome, torch.Tensor]]) -> None:
    spec = get_attack(res["attack"])
    settings = spec.settings(config_from_dict(spec.config_cls, res["attack_config"], str(path)))
    store = Store.load(named_npz(path, res["adversarials"])) if res.get("adversarials") else Store(npz_path(path))
    for s_idx, r_idx, outcome, images in replayed:
        rep = res["settings"][s_idx]["repeats"][r_idx]
        rep |= keep(store, repeat_key(s_idx, rep["repeat"]), images, outcome, spec.threat(settings[s_idx][1]))
        for key, values in outcome.details.items():
            for record, value in zip(rep["images"], values):
                record[key] = value
    block = store.write(path)  # the caller writes the JSON naming it, then drops the old file
    if block is not None:
        res["adversarials"] = block


def _record(res: dict[str, Any], done: list[str]) -> None:
    res["migrations"] = list(res.get("migrations", [])) + done


def migrate_sidecar(side: Path) -> str:
    """Move a checkpoint sidecar's training history to the file beside it and write the sidecar
    compactly (its .pt, and so its pt_sha256, stay as they are)."""
    pt = side.with_suffix(".pt")
    meta = split_history(pt, read_meta(pt))  # read_meta checks the sidecar belongs to the .pt
    data = (json.dumps(meta, separators=(",", ":"), allow_nan=False) + "\n").encode()
    if side.read_bytes() == data:
        return "up to date"
    atomic_write_bytes(side, data)
    return f"{side.name}: " + ("training history moved to " + meta["history_file"]["file"] + ", "
                               if "history_file" in meta else "") + "written compactly"


def folder_bytes(paths: Iterable[str | Path]) -> int:
    """Bytes of the files named and of every file directly inside the folders named."""
    files = {f for p in map(Path, paths) for f in (p.iterdir() if p.is_dir() else [p]) if f.is_file()}
    return sum(f.stat().st_size for f in files)


def migrate_all(paths: Iterable[str | Path], replay: bool = False, data_dir: str | Path | None = None,
                device: str = "auto", max_ratio: float = NPZ_MAX_RATIO) -> list[tuple[Path, str]]:
    """Migrate every result and checkpoint sidecar (a .json beside a .pt) in ``paths``."""
    paths = list(paths)
    data = _Data(data_dir)
    dev = resolve_device(device)
    before = folder_bytes(paths)
    out = []
    for path in result_files(paths):
        is_sidecar = path.with_suffix(".pt").is_file()
        out.append((path, migrate_sidecar(path) if is_sidecar else migrate(path, data, dev, replay, max_ratio)))
        print(f"{path}: {out[-1][1]}", file=sys.stderr, flush=True)
    after = folder_bytes(paths)
    print(f"bytes before {before:,}, after {after:,} ({after - before:+,})", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robench.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="result files or folders")
    parser.add_argument("--replay", action="store_true", help="store adversarials by replaying recorded seeds")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="auto")
    parser.add_argument("--npz-max-ratio", type=float, default=NPZ_MAX_RATIO,
                        help="rewrite a dense .npz only when the new one is at most this share of the old one's "
                             "bytes (always when the old one is over 1.5 MiB); lower keeps the migration's diff small")
    args = parser.parse_args(argv)
    try:
        done = migrate_all(args.paths, args.replay, args.data_dir, args.device, args.npz_max_ratio)
    except RobenchError as err:
        print(f"robench: error: {err}", file=sys.stderr)
        return 2
    return 1 if any(mark in what for _, what in done for mark in NOT_MIGRATED) else 0


if __name__ == "__main__":
    sys.exit(main())
