import json

import pytest
import torch

from robench.attacks.runner import AttackRun, ResultExistsError, run_attack, select_images
from robench.errors import ResultError
from robench.results import read_result
from tests.conftest import interrupt_run, train_tiny_lenet


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_lenet(tmp_path_factory)


def _run(ck, **kw):
    base = dict(model="lenet5", act="relu", attack="pixel", options={"population": 12, "generations": 2},
                images=6, repeats=2, seed=0, checkpoint=str(ck))
    return AttackRun(**(base | kw))


def test_result_file_has_everything(trained, tmp_path):
    root, ck = trained
    path, result = run_attack(_run(ck), out=tmp_path / "r.json", data_dir=root, device="cpu")
    stored = read_result(path)
    assert stored == json.loads(json.dumps(result))  # round trip
    assert stored["status"] == "complete" and stored["provenance"]["data_official"] is False
    assert len(stored["image_set"]["indices"]) == 6 and stored["image_set"]["drawn"] >= 6
    assert stored["checkpoint"]["sha256"] and stored["attack_config"]["population"] == 12
    (setting,) = stored["settings"]
    assert setting["label"] == "1px" and len(setting["repeats"]) == 2
    rep = setting["repeats"][0]
    assert len(rep["images"]) == 6 and rep["successes"] == sum(i["success"] for i in rep["images"])
    assert all(i["l0_pixels"] <= 1 for i in rep["images"])
    assert setting["aggregate"]["successes_mean"] == sum(r["successes"] for r in setting["repeats"]) / 2


def test_image_set_is_correctly_classified_and_seeded(trained):
    root, ck = trained
    from robench.checkpoints import load_checkpoint
    from robench.data import load_split
    from robench.train import predict

    model = load_checkpoint(ck).model
    test, _ = load_split("cifar10", False, root)
    idx, drawn = select_images(model, test.images, test.labels, 5, seed=3, device=torch.device("cpu"))
    assert (predict(model, test.images[idx]) == test.labels[idx]).all()
    assert select_images(model, test.images, test.labels, 5, seed=3, device=torch.device("cpu")) == (idx, drawn)
    with pytest.raises(ValueError, match="fewer than"):
        select_images(model, test.images, test.labels, 10_000, seed=3, device=torch.device("cpu"))


def test_interrupted_then_resumed_equals_uninterrupted(trained, tmp_path):
    root, ck = trained
    _, full = run_attack(_run(ck), out=tmp_path / "full.json", data_dir=root, device="cpu")
    out = tmp_path / "part.json"
    interrupt_run(_run(ck), out, root, stop_at=lambda label, r: r == 0)
    partial = read_result(out)
    assert partial["status"] == "partial" and len(partial["settings"][0]["repeats"]) == 1
    _, resumed = run_attack(_run(ck), out=out, data_dir=root, device="cpu")

    def strip(res):
        return [[{k: v for k, v in r.items() if k != "wall_time_s"} for r in s["repeats"]] for s in res["settings"]]

    assert strip(resumed) == strip(full)


def test_finished_result_is_not_overwritten_without_force(trained, tmp_path):
    root, ck = trained
    out = tmp_path / "r.json"
    run_attack(_run(ck, repeats=1), out=out, data_dir=root, device="cpu")
    with pytest.raises(ResultExistsError, match="--force"):
        run_attack(_run(ck, repeats=1), out=out, data_dir=root, device="cpu")
    run_attack(_run(ck, repeats=1), out=out, data_dir=root, device="cpu", force=True)


def test_partial_result_with_other_config_is_refused(trained, tmp_path):
    root, ck = trained
    out = tmp_path / "r.json"
    interrupt_run(_run(ck), out, root)
    with pytest.raises(ResultError, match="different"):
        run_attack(_run(ck, options={"population": 16, "generations": 2}), out=out, data_dir=root, device="cpu")


def test_fgsm_one_setting_per_epsilon(trained, tmp_path):
    root, ck = trained
    run = _run(ck, attack="fgsm", options={"epsilons": [0.02, 0.08]}, repeats=3)
    _, result = run_attack(run, out=tmp_path / "f.json", data_dir=root, device="cpu")
    labels = [s["label"] for s in result["settings"]]
    assert labels == ["eps=0.02", "eps=0.08"]
    succ = [s["aggregate"]["successes_mean"] for s in result["settings"]]
    assert succ[0] <= succ[1]  # FGSM success only grows with the budget on these images
    assert all(i["linf"] <= 0.08 + 1e-6 for s in result["settings"] for r in s["repeats"] for i in r["images"])


def test_corrupt_result_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "x.json"
    bad.write_text("{not json")
    with pytest.raises(ResultError, match="not valid JSON"):
        read_result(bad)
    bad.write_text(json.dumps({"schema": "something-else"}))
    with pytest.raises(ResultError, match="not a robench attack result"):
        read_result(bad)


class _Broken(torch.nn.Module):
    def __init__(self, kind):
        super().__init__()
        self.kind = kind

    def forward(self, x):
        n = x.shape[0]
        if self.kind == "nan":
            return torch.full((n, 10), float("nan"))
        if self.kind == "constant":
            return torch.arange(10.0).expand(n, 10)
        return x.flatten(1)[:, :10] * 0 + torch.eye(10)[torch.arange(n) % 10]  # predicts i mod 10: healthy spread


@pytest.mark.parametrize("kind,msg", [("nan", "NaN or infinite"), ("constant", "predicts class 9 for 60 of 60")])
def test_a_broken_model_is_refused_not_found_robust(kind, msg):
    from robench.attacks.runner import DegenerateModelError

    images = torch.randint(0, 256, (60, 3, 8, 8), dtype=torch.uint8)
    labels = torch.arange(60) % 10
    with pytest.raises(DegenerateModelError, match=msg):
        select_images(_Broken(kind), images, labels, 5, seed=0, device=torch.device("cpu"))
    idx, _ = select_images(_Broken("spread"), images, labels, 5, seed=0, device=torch.device("cpu"))
    assert len(idx) == 5


def test_judge_refuses_non_finite_outputs():
    from robench.attacks.base import AttackOutcome, judge

    x = torch.rand(3, 3, 8, 8)
    with pytest.raises(FloatingPointError, match="NaN or infinite"):
        judge(_Broken("nan"), x, torch.zeros(3, dtype=torch.long), AttackOutcome(x, torch.zeros(3, dtype=torch.long)))


def test_nan_checkpoint_is_refused_by_the_attack_command(trained, tmp_path):
    from robench.checkpoints import load_checkpoint, save_checkpoint
    from robench.errors import CheckpointError

    root, ck = trained
    loaded = load_checkpoint(ck)
    for p in loaded.model.parameters():
        p.data.fill_(float("nan"))
    bad = tmp_path / "lenet5-relu-cifar10-s0.pt"
    save_checkpoint(bad, loaded.model, loaded.args, "cifar10", {})
    with pytest.raises(CheckpointError, match="non-finite"):
        run_attack(_run(bad), out=tmp_path / "r.json", data_dir=root, device="cpu")
    assert not (tmp_path / "r.json").exists()


def test_results_never_hold_bare_nan(tmp_path):
    from robench.results import write_result

    with pytest.raises(ValueError):
        write_result(tmp_path / "r.json", {"x": float("nan")})
    assert not (tmp_path / "r.json").exists()


def test_a_run_resumes_with_the_same_data_in_another_folder(trained, tmp_path):
    import shutil

    root, ck = trained
    out = tmp_path / "r.json"
    interrupt_run(_run(ck), out, root)
    moved = shutil.copytree(root, tmp_path / "elsewhere")
    _, result = run_attack(_run(ck), out=out, data_dir=moved, device="cpu")
    assert result["status"] == "complete" and str(root) not in out.read_text()
