import json
import shutil

import pytest
from typer.testing import CliRunner

from robench.adversarials import Store, named_npz, npz_files, repeat_key
from robench.attacks.runner import AttackRun, run_attack
from robench.cli import app
from tests.conftest import adversarials_file, copy_result, edit_json, interrupt_run, strip_adversarials, train_tiny_lenet
from robench.verification import verify_results


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny trained model on fake CIFAR-10 and three results: DE (pixels in the JSON), FGSM
    (int8 signs in the .npz) and PGD (float32 deltas in the .npz)."""
    root, ck = train_tiny_lenet(tmp_path_factory)
    out = tmp_path_factory.mktemp("attacks")
    base = dict(model="lenet5", act="relu", images=6, repeats=2, seed=0, checkpoint=str(ck))
    runs = {
        "pixel": AttackRun(attack="pixel", options={"population": 12, "generations": 2, "pixels": 2}, **base),
        "fgsm": AttackRun(attack="fgsm", options={"epsilons": [0.02, 0.1]}, **base),
        "pgd": AttackRun(attack="pgd", options={"epsilons": [0.05], "steps": 5}, **base),
    }
    for name, run in runs.items():
        run_attack(run, out=out / f"{name}.json", data_dir=root, device="cpu")
    return root, ck, out


def _copy(made, tmp_path, name):
    _, _, out = made
    return copy_result(out, tmp_path, name)


_edit = edit_json


def test_fresh_results_verify_and_store_what_they_should(made):
    root, _, out = made
    done = verify_results([out], data_dir=root, device="cpu")
    assert [v.path.name for v in done] == ["fgsm.json", "pgd.json", "pixel.json"]
    assert all(v.ok and v.legacy == 0 and v.repeats > 0 for v in done), [str(m) for v in done for m in v.mismatches]
    assert not npz_files(out / "pixel.json")  # pixels live in the JSON
    fgsm = json.loads((out / "fgsm.json").read_text())
    assert fgsm["adversarials"]["file"] == f"fgsm.{fgsm['adversarials']['sha256'][:12]}.adv.npz"
    assert {r["stored"] for s in fgsm["settings"] for r in s["repeats"]} == {"npz"}
    # the .npz holds the counted successes only, and says which
    assert {r["stored_images"] for s in fgsm["settings"] for r in s["repeats"]} == {"successes"}
    store = Store.load(named_npz(out / "fgsm.json", fgsm["adversarials"]))
    for s_idx, entry in enumerate(fgsm["settings"]):
        for rep in entry["repeats"]:
            arrays = store.get(repeat_key(s_idx, rep["repeat"]))
            assert arrays["rows"].tolist() == [i for i, r in enumerate(rep["images"]) if r["success"]]
            assert len(arrays["sign"]) == rep["successes"]


def test_one_changed_pixel_fails_verification(made, tmp_path):
    root, _, _ = made
    path = _copy(made, tmp_path, "pixel")

    def recolour(d):
        d["settings"][0]["repeats"][1]["images"][0]["pixels"][0][2] = 0.123

    _edit(path, recolour)
    (v,) = verify_results([path], data_dir=root, device="cpu")
    assert not v.ok
    assert any(m.field == "adversarial_sha256" and "repeat 1" in m.where for m in v.mismatches)


def test_one_flipped_success_fails_verification(made, tmp_path):
    root, _, _ = made
    path = _copy(made, tmp_path, "fgsm")

    def flip(d):
        rec = d["settings"][1]["repeats"][0]["images"][2]
        rec["success"] = not rec["success"]

    _edit(path, flip)
    (v,) = verify_results([path], data_dir=root, device="cpu")
    index = json.loads(path.read_text())["settings"][1]["repeats"][0]["images"][2]["index"]
    assert [(m.where, m.field) for m in v.mismatches] == [(f"eps=0.1 repeat 0, image {index}", "success")]


def test_a_swapped_npz_or_checkpoint_fails(made, tmp_path):
    root, _, out = made
    path = _copy(made, tmp_path, "pgd")
    shutil.copy(adversarials_file(out / "fgsm.json"), adversarials_file(path))  # a valid file, but not this result's
    (v,) = verify_results([path], data_dir=root, device="cpu")
    assert any(m.field == "sha256" and m.where == "adversarials file" for m in v.mismatches)

    path = _copy(made, tmp_path, "pixel")
    _edit(path, lambda d: d["checkpoint"].update(sha256="0" * 64))
    (v,) = verify_results([path], data_dir=root, device="cpu")
    assert [m.where for m in v.mismatches] == ["checkpoint"]


def test_results_without_stored_adversarials_are_checked_clean_side_or_replayed(made, tmp_path):
    root, _, _ = made
    path = _copy(made, tmp_path, "pixel")
    _edit(path, strip_adversarials)
    (v,) = verify_results([path], data_dir=root, device="cpu")
    assert v.ok and v.legacy == 2
    (v,) = verify_results([path], data_dir=root, device="cpu", replay=True)
    assert v.ok and v.replayed == 2 and v.legacy == 0


def test_cli_exit_codes(made, tmp_path):
    root, _, out = made
    runner = CliRunner()
    ok = runner.invoke(app, ["verify", str(out / "pixel.json"), "--data-dir", str(root), "--device", "cpu"])
    assert ok.exit_code == 0, ok.output
    path = _copy(made, tmp_path, "pixel")
    _edit(path, lambda d: d["settings"][0]["repeats"][0].update(successes=99))
    bad = runner.invoke(app, ["verify", str(path), "--data-dir", str(root), "--device", "cpu"])
    assert bad.exit_code == 1 and "summary successes stored 99" in bad.output
    foreign = tmp_path / "foreign.json"
    foreign.write_text('{"hello": 1}')
    for args in ([str(foreign)], [str(tmp_path / "missing.json")], []):
        res = runner.invoke(app, ["verify", *args, "--data-dir", str(root), "--device", "cpu"])
        assert res.exit_code == 2 and "Traceback" not in res.output, res.output


def test_an_interrupted_dense_run_resumes_its_adversarials(made, tmp_path):
    root, ck, _ = made
    run = AttackRun(model="lenet5", act="relu", attack="pgd", options={"epsilons": [0.05, 0.1], "steps": 3}, images=6,
                    repeats=1, seed=0, checkpoint=str(ck))
    out = tmp_path / "pgd.json"
    interrupt_run(run, out, root)
    run_attack(run, out=out, data_dir=root, device="cpu")
    (v,) = verify_results([out], data_dir=root, device="cpu")
    assert v.ok and v.repeats == 2


def test_force_over_a_dense_result_with_a_pixel_attack_leaves_no_stale_npz(made, tmp_path):
    root, ck, _ = made
    path = _copy(made, tmp_path, "pgd")
    run = AttackRun(model="lenet5", act="relu", attack="pixel", options={"population": 8, "generations": 1}, images=6,
                    repeats=1, seed=0, checkpoint=str(ck))
    run_attack(run, out=path, data_dir=root, device="cpu", force=True)
    assert not npz_files(path)
    (v,) = verify_results([path], data_dir=root, device="cpu")
    assert v.ok


def test_a_run_stopped_after_its_last_repeat_keeps_its_adversarials(made, tmp_path):
    root, ck, _ = made
    run = AttackRun(model="lenet5", act="relu", attack="fgsm", options={"epsilons": [0.05, 0.1]}, images=6,
                    repeats=1, seed=0, checkpoint=str(ck))
    out = tmp_path / "fgsm.json"
    interrupt_run(run, out, root, stop_at=lambda label, r: label == "eps=0.1")  # after its last repeat
    _, result = run_attack(run, out=out, data_dir=root, device="cpu")  # nothing left to run
    assert result["status"] == "complete" and adversarials_file(out).is_file() and len(npz_files(out)) == 1
    (v,) = verify_results([out], data_dir=root, device="cpu")
    assert v.ok and v.repeats == 2


def test_migrate_drops_root_renames_and_stores_replayed_adversarials(made, tmp_path):
    from robench.attacks.runner import AttackRun as Run
    from robench.migrate import migrate_all

    root, _, _ = made
    path = _copy(made, tmp_path, "pixel")

    def make_old(d):
        strip_adversarials(d)
        d["provenance"]["root"] = "/somewhere/else"

    _edit(path, make_old)
    old = path.with_name(Run(**json.loads(path.read_text())["run"]).result_name().rsplit("-", 1)[0] + ".json")
    path.rename(old)
    ((new, what),) = migrate_all([tmp_path], replay=True, data_dir=root, device="cpu")
    assert "root dropped" in what and "renamed" in what and "replaying" in what, what
    (moved,) = tmp_path.glob("*.json")
    res = json.loads(moved.read_text())
    assert "root" not in res["provenance"] and len(res["migrations"]) == 3 and not old.exists()
    (v,) = verify_results([moved], data_dir=root, device="cpu")
    assert v.ok and v.legacy == 0 and v.repeats == 2


def test_a_replayed_search_runs_with_the_forward_it_recorded():
    """The incremental and eager forwards round differently, so a replay uses the one the repeat
    ran (eager for repeats older than the record); settings without a forward are unchanged."""
    from robench.attacks.gradient import FGSMConfig
    from robench.attacks.pixel import PixelAttackConfig
    from robench.verification import as_ran

    assert as_ran(PixelAttackConfig(), {"forward": "incremental"}).forward == "incremental"
    assert as_ran(PixelAttackConfig(forward="incremental"), {}).forward == "eager"
    fgsm = FGSMConfig()
    assert as_ran(fgsm, {"forward": "eager"}) is fgsm


SIDEFX = '''
from pathlib import Path
Path({marker!r}).write_text("imported")
from tests.factories import tiny_cnn as factory
'''


def test_verify_never_imports_a_module_a_result_names(made, tmp_path, monkeypatch):
    import sys

    from robench.config import TrainConfig
    from robench.models import MODELS
    from robench.train import train

    root, _, _ = made
    work, lib, marker = tmp_path / "shared", tmp_path / "lib", tmp_path / "marker"
    work.mkdir()
    lib.mkdir()
    (work / "sidefx.py").write_text(SIDEFX.format(marker=str(marker)))
    monkeypatch.chdir(work)  # the user runs robench inside a folder holding sidefx.py
    ck = work / "ck.pt"
    train(TrainConfig(model="sidefx:factory", act="relu", epochs=1, batch_size=32), out=ck, data_dir=root, device="cpu")
    out = work / "r.json"
    run_attack(AttackRun(model="sidefx:factory", act="relu", attack="fgsm", options={"epsilons": [0.05]}, images=4, repeats=1,
                         seed=0, checkpoint=str(ck)), out=out, data_dir=root, device="cpu")

    def forget():  # as in a fresh process: sidefx not imported yet
        sys.modules.pop("sidefx", None)
        MODELS._imported.pop("sidefx:factory", None)
        marker.unlink(missing_ok=True)

    forget()
    runner = CliRunner()
    base = ["verify", str(out), "--data-dir", str(root), "--device", "cpu"]
    r = runner.invoke(app, base)
    assert r.exit_code == 2 and "pass --model sidefx:factory" in r.output, r.output
    assert not marker.exists()
    r = runner.invoke(app, [*base, "--model", "sidefx:factory"])  # named, but the working folder is not searched
    assert r.exit_code == 2 and "PYTHONPATH" in r.output and not marker.exists(), r.output
    (work / "sidefx.py").rename(lib / "sidefx.py")
    monkeypatch.syspath_prepend(str(lib))
    r = runner.invoke(app, [*base, "--model", "sidefx:factory"])
    assert r.exit_code == 0 and marker.exists(), r.output
    forget()
