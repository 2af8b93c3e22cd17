"""Bring result files made by an older robench up to what this one stores, without rerunning them.

Three steps, each recorded in the result's ``migrations`` list:

- ``provenance.root`` (an absolute folder of the machine that ran it) is dropped: data are
  compared by fingerprint only.
- A result under its pre-hash default name moves to today's name, which adds the settings hash.
- With ``replay``, repeats that stored no adversarials are re-run from their recorded seeds on the
  recorded checkpoint and images, and their adversarials are stored only when ``verify`` finds every
  stored label, verdict, probability and norm reproduced; a result that does not reproduce is left
  as it is and reported.

Run it as ``python -m robench.migrate [--replay] attacks/ attacks/seeds/``.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import torch

from .adversarials import Store, drop_unnamed, keep, named_npz, npz_for, npz_path, repeat_key
from .attacks import get_attack
from .attacks.base import AttackOutcome
from .attacks.runner import AttackRun
from .config import config_from_dict
from .errors import ResultError, RobenchError
from .results import read_result, write_result
from .storage import resolve_device
from .verification import _Data, result_files, verify_result

DROPPED_ROOT = "provenance.root dropped (data are compared by fingerprint)"
REPLAYED = "adversarials stored by replaying the recorded seeds; verify reproduced every stored number"


def drop_root(result: dict[str, Any]) -> bool:
    """Remove ``provenance.root``; True when there was one."""
    prov = result.get("provenance")
    if isinstance(prov, dict) and "root" in prov:
        del prov["root"]
        return True
    return False


def migrate(path: Path, data: _Data, device: torch.device, replay: bool) -> str:
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
    if done:
        _record(res, done)
        write_result(path, res)
        drop_unnamed(path, res.get("adversarials"))
    return failed or (f"{path.name}: " + "; ".join(done) if done else "up to date")


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


def migrate_all(paths: Iterable[str | Path], replay: bool = False, data_dir: str | Path | None = None,
                device: str = "auto") -> list[tuple[Path, str]]:
    data = _Data(data_dir)
    dev = resolve_device(device)
    out = []
    for path in result_files(paths):
        out.append((path, migrate(path, data, dev, replay)))
        print(f"{path}: {out[-1][1]}", file=sys.stderr, flush=True)
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m robench.migrate", description=__doc__.splitlines()[0])
    parser.add_argument("paths", nargs="+", help="result files or folders")
    parser.add_argument("--replay", action="store_true", help="store adversarials by replaying recorded seeds")
    parser.add_argument("--data-dir")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args(argv)
    try:
        done = migrate_all(args.paths, args.replay, args.data_dir, args.device)
    except RobenchError as err:
        print(f"robench: error: {err}", file=sys.stderr)
        return 2
    return 1 if any("does not reproduce" in what for _, what in done) else 0


if __name__ == "__main__":
    sys.exit(main())
