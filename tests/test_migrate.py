"""One run of ``python -m robench.migrate`` brings results and checkpoint sidecars written by an
older robench (indented JSON, dense adversarials of every image, training history inline) to
today's forms, and a second run changes nothing; everything verifies as before."""

from __future__ import annotations

import gzip
import json
import shutil

import numpy as np
import pytest

import robench.attacks.runner as runner_module
from robench.adversarials import SUCCESSES, Store, keep, named_npz, npz_path, read_npz
from robench.attacks.runner import AttackRun, run_attack
from robench.checkpoints import history_path, read_history, read_meta, sidecar_path
from robench.migrate import main, migrate_all
from robench.verification import verify_results
from tests.conftest import train_tiny_lenet


@pytest.fixture(scope="module")
def old_tree(tmp_path_factory):
    """Results as robench wrote them before the size budget: every image's adversarial in the
    .npz, indented JSON; and a checkpoint whose sidecar holds its history inline, indented."""
    root, ck = train_tiny_lenet(tmp_path_factory)
    out = tmp_path_factory.mktemp("attacks")
    base = dict(model="lenet5", act="relu", images=6, repeats=2, seed=0, checkpoint=str(ck))
    runs = {"fgsm": AttackRun(attack="fgsm", options={"epsilons": [0.02, 0.1]}, **base),
            "pgd": AttackRun(attack="pgd", options={"epsilons": [0.01, 0.05], "steps": 5}, **base),
            "pixel": AttackRun(attack="pixel", options={"population": 12, "generations": 2, "pixels": 2}, **base)}
    with pytest.MonkeyPatch.context() as mp:  # the old keep: no verdict, so every image stored
        mp.setattr(runner_module, "keep", lambda store, key, images, outcome, threat, success: keep(
            store, key, images, outcome, threat))
        for name, run in runs.items():
            run_attack(run, out=out / f"{name}.json", data_dir=root, device="cpu")
    for path in out.glob("*.json"):  # committed results predate content-named .npz files
        res = json.loads(path.read_text())
        if res.get("adversarials"):
            named_npz(path, res["adversarials"]).rename(npz_path(path))
            res["adversarials"]["file"] = npz_path(path).name
        path.write_text(json.dumps(res, indent=1) + "\n")
    meta = read_meta(ck)
    inline = {k: v for k, v in meta.items() if k != "history_file"} | read_history(ck, meta)
    sidecar_path(ck).write_text(json.dumps(inline, indent=1) + "\n")
    history_path(ck).unlink()
    return root, ck, out


def _copy(old_tree, tmp_path):
    """A copy of the old results and checkpoint folder (the results still cite the original .pt,
    which the sidecar migration leaves as it is)."""
    root, ck, out = old_tree
    shutil.copytree(out, tmp_path / "attacks")
    shutil.copytree(ck.parent, tmp_path / "ck")
    return root, tmp_path / "ck" / ck.name, tmp_path / "attacks"


def _snapshot(*folders):
    return {p.name: p.read_bytes() for f in folders for p in sorted(f.iterdir()) if p.is_file()}


def _fully_verified(out, root):
    done = verify_results([out], data_dir=root, device="cpu")
    assert all(v.ok for v in done), [str(m) for v in done for m in v.mismatches]
    return sorted((v.path.name, v.repeats, v.legacy) for v in done)


def test_one_run_migrates_everything_and_a_second_changes_nothing(old_tree, tmp_path, capsys):
    root, ck, out = _copy(old_tree, tmp_path)
    before_verified = _fully_verified(out, root)
    assert all(legacy == 0 for _, _, legacy in before_verified)
    old_npz = {p.name: npz_path(p).stat().st_size for p in out.glob("*.json") if npz_path(p).exists()}
    old_json = {p.name: json.loads(p.read_text()) for p in out.glob("*.json")}
    old_side = sidecar_path(ck).stat().st_size

    done = dict(migrate_all([out, ck.parent], data_dir=root, device="cpu", max_ratio=1.0))
    assert "bytes before" in capsys.readouterr().err
    assert all(what != "up to date" for what in done.values()), done
    assert _fully_verified(out, root) == before_verified  # the same results, the same repeats, fully
    for name, size in old_npz.items():
        assert named_npz(out / name, json.loads((out / name).read_text())["adversarials"]).stat().st_size < size
    for path in out.glob("*.json"):
        res = json.loads(path.read_text())
        assert "\n " not in path.read_text()
        for entry, old_entry in zip(res["settings"], old_json[path.name]["settings"]):
            for rep, old_rep in zip(entry["repeats"], old_entry["repeats"]):
                assert rep["images"] == old_rep["images"] and rep["successes"] == old_rep["successes"]
                if rep["stored"] == "npz":
                    assert rep["stored_images"] == SUCCESSES
    res = json.loads((out / "pgd.json").read_text())
    pgd = Store.load(named_npz(out / "pgd.json", res["adversarials"]))
    for s_idx, entry in enumerate(res["settings"]):
        for rep in entry["repeats"]:
            rows = pgd.get(f"s{s_idx}r{rep['repeat']}")["rows"]
            assert rows.tolist() == [i for i, r in enumerate(rep["images"]) if r["success"]]
    side = read_meta(ck)
    assert "history" not in side and sidecar_path(ck).stat().st_size < old_side
    assert json.loads(gzip.decompress(history_path(ck).read_bytes()))["history"] == read_history(ck, side)["history"]

    snapshot = _snapshot(out, ck.parent)
    again = dict(migrate_all([out, ck.parent], data_dir=root, device="cpu", max_ratio=1.0))
    assert set(again.values()) == {"up to date"}
    assert _snapshot(out, ck.parent) == snapshot


def test_a_repeat_that_does_not_rebuild_to_its_hash_is_left_and_reported(old_tree, tmp_path):
    root, _, out = old_tree
    for name in ("pgd.json", "pgd.adv.npz"):
        shutil.copy(out / name, tmp_path / name)
    res = json.loads((tmp_path / "pgd.json").read_text())
    res["settings"][0]["repeats"][0]["adversarial_sha256"] = "0" * 64
    (tmp_path / "pgd.json").write_text(json.dumps(res))
    npz = (tmp_path / "pgd.adv.npz").read_bytes()
    assert main([str(tmp_path), "--data-dir", str(root), "--device", "cpu", "--npz-max-ratio", "1"]) == 1
    assert json.loads((tmp_path / "pgd.json").read_text()) == res  # the same content (written compactly)
    assert (tmp_path / "pgd.adv.npz").read_bytes() == npz
    assert np.array_equal(read_npz(tmp_path / "pgd.adv.npz")["s0r0/delta"].shape[:1], [6])


def test_an_npz_not_worth_rewriting_is_kept_in_its_old_form(old_tree, tmp_path):
    root, ck, out = _copy(old_tree, tmp_path)
    npz = {p.name: p.read_bytes() for p in out.glob("*.adv.npz")}
    before_verified = _fully_verified(out, root)
    done = dict(migrate_all([out], data_dir=root, device="cpu", max_ratio=0.0))  # no .npz shrinks to nothing
    assert set(done.values()) == {f"{p.name}: written compactly" for p in done}
    assert {p.name: p.read_bytes() for p in out.glob("*.adv.npz")} == npz
    assert _fully_verified(out, root) == before_verified
    assert set(dict(migrate_all([out], data_dir=root, device="cpu", max_ratio=0.0)).values()) == {"up to date"}


def test_the_npz_bytes_are_a_function_of_the_arrays(tmp_path):
    arrays = {"s0r0/delta": np.linspace(0, 1, 24, dtype=np.float32).reshape(1, 2, 3, 4), "s0r0/rows": np.arange(1)}
    first, second = Store(tmp_path / "a.adv.npz", arrays), Store(tmp_path / "b.adv.npz", dict(reversed(arrays.items())))
    a, b = first.write(tmp_path / "a.json"), second.write(tmp_path / "b.json")
    assert a["sha256"] == b["sha256"] and first.pack() == second.pack()
    back = read_npz(named_npz(tmp_path / "a.json", a))
    assert back.keys() == arrays.keys() and all(np.array_equal(back[k], v) for k, v in arrays.items())
