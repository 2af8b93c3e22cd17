"""A result's JSON and its ``.adv.npz`` are one unit: a failure at any write leaves a valid pair,
and a reader opens only the file its JSON names."""

from __future__ import annotations

import json
import shutil

import pytest

import robench.adversarials
import robench.attacks.runner
import robench.results
from robench.adversarials import named_npz, npz_files, npz_path
from robench.attacks.runner import AttackRun, run_attack
from robench.errors import ResultError
from robench.verification import verify_results
from tests.conftest import adversarials_file, interrupt_run, train_tiny_lenet


@pytest.fixture(scope="module")
def partial(tmp_path_factory):
    """An FGSM run (three budgets, each stored densely) stopped after its first repeat."""
    root, ck = train_tiny_lenet(tmp_path_factory)
    run = AttackRun(model="lenet5", act="relu", attack="fgsm", options={"epsilons": [0.02, 0.05, 0.1]}, images=6,
                    repeats=1, seed=0, checkpoint=str(ck))
    folder = tmp_path_factory.mktemp("partial")
    interrupt_run(run, folder / "r.json", root)
    return root, run, folder


class _Killed(Exception):
    """A kill or a full disk at one write."""


def _fail_on(monkeypatch, point):
    def fail(*args, **kwargs):
        raise _Killed(point)

    if point == "npz":
        real = robench.adversarials.atomic_write_bytes
        monkeypatch.setattr(robench.adversarials, "atomic_write_bytes",
                            lambda path, data: fail() if str(path).endswith(".adv.npz") else real(path, data))
    elif point == "json":
        monkeypatch.setattr(robench.results, "atomic_write_json", fail)
    else:
        monkeypatch.setattr(robench.attacks.runner, "drop_unnamed", fail)


@pytest.mark.parametrize("point", ["npz", "json", "remove"])
def test_a_failure_at_any_write_leaves_a_valid_pair(partial, tmp_path, monkeypatch, point):
    root, run, src = partial
    out = tmp_path / "r.json"
    for path in [src / "r.json", *npz_files(src / "r.json")]:
        shutil.copy(path, tmp_path / path.name)
    before = json.loads(out.read_text())
    with monkeypatch.context() as m:
        _fail_on(m, point)
        with pytest.raises(_Killed):
            run_attack(run, out=out, data_dir=root, device="cpu")
    after = json.loads(out.read_text())
    done = sum(len(s["repeats"]) for s in after["settings"])
    assert done == (2 if point == "remove" else 1)  # the new pair is complete only once its JSON is written
    assert (after == before) == (point != "remove")
    (v,) = verify_results([out], data_dir=root, device="cpu")
    assert v.ok and v.repeats == done, [str(m) for m in v.mismatches]
    run_attack(run, out=out, data_dir=root, device="cpu")  # resumes from the pair left
    (v,) = verify_results([out], data_dir=root, device="cpu")
    assert v.ok and v.repeats == 3 and npz_files(out) == [adversarials_file(out)]  # leftovers went


def test_a_reader_opens_only_the_npz_its_json_names(partial, tmp_path):
    root, run, src = partial
    out = tmp_path / "r.json"
    for path in [src / "r.json", *npz_files(src / "r.json")]:
        shutil.copy(path, tmp_path / path.name)
    npz_path(out).write_bytes(b"garbage under the old fixed name")  # beside it, but not named by it
    (v,) = verify_results([out], data_dir=root, device="cpu")
    assert v.ok
    block = json.loads(out.read_text())["adversarials"]
    for name in ("../r.adv.npz", "other.0123456789ab.adv.npz", "r.json", None):
        with pytest.raises(ResultError, match="not one of r.<sha>.adv.npz"):
            named_npz(out, block | {"file": name})
    run_attack(run, out=out, data_dir=root, device="cpu")
    assert npz_files(out) == [adversarials_file(out)]  # a finished write removes what its JSON does not name
