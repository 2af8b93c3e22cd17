"""Report, suite, check and plot, driven from real (tiny) attack results."""

import json
import shutil
from pathlib import Path

import pytest
import yaml
from typer.testing import CliRunner

from robench.baseline import check_baseline, update_baseline
from robench.cli import app
from robench.config import TrainConfig
from robench.tables import build_report, render_csv, render_json, render_markdown
from tests.conftest import committed_result as _committed
from robench.results import read_result
from robench.errors import ConfigError
from robench.suite import load_suite, run_suite
from robench.train import train

runner = CliRunner()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    """Fake data, relu + sapl LeNet checkpoints trained on it, and a tiny suite file."""
    from tests.conftest import write_fake_cifar

    root = tmp_path_factory.mktemp("data")
    write_fake_cifar(root, "cifar10")
    ckdir = tmp_path_factory.mktemp("ck")
    for act in ("relu", "sapl"):
        cfg = TrainConfig(model="lenet5", act=act, dataset="cifar10", epochs=3, batch_size=32,
                          act_options={"compiled": False} if act == "sapl" else {})
        train(cfg, out=ckdir / f"lenet5-{act}-cifar10-s0.pt", data_dir=root, device="cpu")
    work = tmp_path_factory.mktemp("work")
    suite = {
        "name": "tiny", "models": ["lenet5"], "acts": ["relu", "sapl"], "images": 5, "seed": 1,
        "results": str(work / "results"), "checkpoints": str(ckdir),
        "attacks": [{"attack": "pixel", "options": {"pixels": 1, "population": 8, "generations": 1}, "repeats": 2},
                    {"attack": "fgsm", "options": {"epsilons": [0.01, 0.03]}, "repeats": 1}],
    }
    (work / "suite.yaml").write_text(yaml.safe_dump(suite))
    run_suite(load_suite(work / "suite.yaml"), data_dir=root, device="cpu")
    return root, work


def test_report_reproduces_stored_numbers(setup):
    _, work = setup
    rep = build_report(work / "results")
    assert [t.key for t in rep.tables] == ["table2_pixel", "table3_fgsm"]
    for t in rep.tables:
        for row in t.rows:
            stored = read_result(next(work.joinpath("results").glob(f"lenet5-{row.act}-cifar10-s0--{t.key.split('_')[1]}*.json")))
            for s in stored["settings"]:
                reps = [r["successes"] for r in s["repeats"]]
                assert row.cells[s["label"]].mean == pytest.approx(sum(reps) / len(reps))
    # every export carries the same numbers
    csv_rows = render_csv(rep).strip().splitlines()[1:]
    assert len(csv_rows) == sum(len(r.cells) for t in rep.tables for r in t.rows)
    js = json.loads(render_json(rep))
    assert js["tables"][0]["rows"][0]["cells"]["1px"]["mean"] == rep.tables[0].rows[0].cells["1px"].mean
    md = render_markdown(rep)
    assert "cifar10 †" in md and "[paper 61]" in md  # non-official data marked; paper beside ours


def test_gain_vs_relu_is_one_minus_ratio(setup):
    _, work = setup
    (table,) = [t for t in build_report(work / "results").tables if t.key == "table3_fgsm"]
    relu, sapl = (next(r for r in table.rows if r.act == a) for a in ("relu", "sapl"))
    for label, cell in sapl.cells.items():
        if relu.cells[label].mean:
            assert cell.gain_vs_relu == pytest.approx(1 - cell.mean / relu.cells[label].mean)
    assert all(c.gain_vs_relu in (None, 0.0) for c in relu.cells.values())


def test_suite_rerun_does_only_missing_work(setup, tmp_path):
    root, work = setup
    suite = load_suite(work / "suite.yaml")
    done = run_suite(suite, data_dir=root, device="cpu")
    assert {what for _, what in done} == {"skipped"}
    # interrupt a fresh copy midway: one cell deleted, one left partial
    results = work / "results"
    victim = sorted(results.glob("*pixel*.json"))[0]
    partial = json.loads(victim.read_text())
    partial["status"] = "partial"
    partial["settings"][0]["repeats"] = partial["settings"][0]["repeats"][:1]
    partial["settings"][0].pop("aggregate")
    victim.write_text(json.dumps(partial))
    gone = sorted(results.glob("*fgsm*.json"))[0]
    gone.unlink()
    done = dict((p.name, w) for p, w in run_suite(suite, data_dir=root, device="cpu"))
    assert done[victim.name] == "resumed" and done[gone.name] == "ran"
    assert sum(w == "skipped" for w in done.values()) == len(done) - 2
    assert len(read_result(victim)["settings"][0]["repeats"]) == 2


def test_check_passes_fails_and_reports_missing(setup, tmp_path):
    _, work = setup
    results = tmp_path / "results"
    shutil.copytree(work / "results", results)
    base = tmp_path / "baseline.yaml"
    n = update_baseline(base, results, absolute=0.5, std_factor=0.0)
    assert n > 0 and all(v.passed for v in check_baseline(base, results))
    # plant a regression: more successes than the baseline allows
    doc = yaml.safe_load(base.read_text())
    key = next(k for k in doc["cells"] if "fgsm" in k and "sapl" in k)
    doc["cells"][key]["successes"] -= 2
    doc["cells"]["lenet5/swish/cifar10/s0/fgsm/eps=0.01"] = {"successes": 1}
    base.write_text(yaml.safe_dump(doc))
    verdicts = {v.cell: v for v in check_baseline(base, results)}
    assert not verdicts[key].passed and "less robust" in verdicts[key].reason
    assert not verdicts["lenet5/swish/cifar10/s0/fgsm/eps=0.01"].passed
    assert "missing" in verdicts["lenet5/swish/cifar10/s0/fgsm/eps=0.01"].reason
    # two-sided: fewer successes than the baseline means the attack got weaker
    doc["cells"][key]["successes"] += 4
    del doc["cells"]["lenet5/swish/cifar10/s0/fgsm/eps=0.01"]
    base.write_text(yaml.safe_dump(doc))
    assert all(v.passed for v in check_baseline(base, results))
    doc["tolerance"]["two_sided"] = True
    base.write_text(yaml.safe_dump(doc))
    assert "weaker" in {v.cell: v for v in check_baseline(base, results)}[key].reason


def test_check_cli_exit_codes(setup, tmp_path):
    _, work = setup
    base = tmp_path / "b.yaml"
    r = runner.invoke(app, ["check", "--baseline", str(base), "--results", str(work / "results"), "--update"])
    assert r.exit_code == 0, r.output
    r = runner.invoke(app, ["check", "--baseline", str(base), "--results", str(work / "results")])
    assert r.exit_code == 0 and "pass" in r.output
    doc = yaml.safe_load(base.read_text())
    doc["cells"]["lenet5/relu/cifar10/s0/cw/l2=0.5"] = {"successes": 3}
    base.write_text(yaml.safe_dump(doc))
    r = runner.invoke(app, ["check", "--baseline", str(base), "--results", str(work / "results")])
    assert r.exit_code == 1 and "FAIL" in r.output
    base.write_text("just: text\n")
    r = runner.invoke(app, ["check", "--baseline", str(base), "--results", str(work / "results")])
    assert r.exit_code == 2 and "not a robench baseline" in r.output


def test_report_cli_formats(setup, tmp_path):
    _, work = setup
    r = runner.invoke(app, ["report", "--results", str(work / "results")])
    assert r.exit_code == 0 and "Table 2" in r.output and "paper 61" in r.output
    out = tmp_path / "r.csv"
    r = runner.invoke(app, ["report", "--results", str(work / "results"), "--format", "csv", "--out", str(out)])
    assert r.exit_code == 0 and out.read_text().startswith("table,model")
    r = runner.invoke(app, ["report", "--results", str(tmp_path / "nope")])
    assert r.exit_code == 1 and "not found" in r.output


def test_suite_config_errors(tmp_path):
    bad = tmp_path / "s.yaml"
    bad.write_text("name: x\nmodels: [lenet5]\nacts: [relu]\nattacks: [{attack: laser}]\n")
    with pytest.raises(ValueError, match="unknown attack 'laser'"):
        load_suite(bad)
    bad.write_text("name: x\nmodels: [lenet5]\nacts: [relu]\nattacks: [{attack: pixel, options: {pixels: 0}}]\n")
    with pytest.raises(Exception, match="pixels must be >= 1"):
        load_suite(bad)


def test_plots_are_png(setup, tmp_path):
    root, work = setup
    ck = next(p for p in (work.parent).glob("ck*/lenet5-sapl-cifar10-s0.pt"))
    for args in (["curves", str(ck)], ["loss", str(ck), str(ck.with_name("lenet5-relu-cifar10-s0.pt"))],
                 ["eps", "--results", str(work / "results")]):
        out = tmp_path / f"{args[0]}.png"
        r = runner.invoke(app, ["plot", *args, "--out", str(out)])
        assert r.exit_code == 0, r.output
        assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    r = runner.invoke(app, ["plot", "curves", str(ck.with_name("lenet5-relu-cifar10-s0.pt")), "--out", str(tmp_path / "x.png")])
    assert r.exit_code == 1 and "no learnable activations" in r.output


def test_suite_trains_missing_checkpoints_per_seed(tmp_path):
    from tests.conftest import write_fake_cifar

    root = write_fake_cifar(tmp_path / "data", "cifar10")
    suite_file = tmp_path / "seeds.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "seeds", "models": ["lenet5"], "acts": ["relu"], "train_seeds": [3, 4], "images": 3,
        "results": str(tmp_path / "res"), "checkpoints": str(tmp_path / "ck"),
        "train": {"epochs": 1, "batch_size": 32},
        "attacks": [{"attack": "fgsm", "options": {"epsilons": [0.01]}, "repeats": 1}],
    }))
    suite = load_suite(suite_file)
    trained = []
    done = run_suite(suite, data_dir=root, device="cpu", on_train=lambda p, w: trained.append(p.name))
    assert trained == ["lenet5-relu-cifar10-s3.pt", "lenet5-relu-cifar10-s4.pt"]
    names = sorted(p.name for p, _ in done)
    assert [n.rsplit("-", 1)[0] for n in names] == ["lenet5-relu-cifar10-s3--fgsm-seed0", "lenet5-relu-cifar10-s4--fgsm-seed0"]
    assert names[0].rsplit("-", 1)[1] == names[1].rsplit("-", 1)[1]  # the same settings: the same hash
    meta = json.loads((tmp_path / "ck" / "lenet5-relu-cifar10-s4.json").read_text())
    assert meta["train_config"]["seed"] == 4 and meta["train_config"]["epochs"] == 1
    trained.clear()
    run_suite(suite, data_dir=root, device="cpu", on_train=lambda p, w: trained.append(p.name))
    assert trained == []  # finished checkpoints are never retrained


def test_suite_train_section_errors(tmp_path):
    bad = tmp_path / "s.yaml"
    base = "name: x\nmodels: [lenet5]\nacts: [relu]\nattacks: [{attack: fgsm}]\n"
    bad.write_text(base + "train: {seed: 3}\n")
    with pytest.raises(ConfigError, match="seed: set by the grid"):
        load_suite(bad)
    bad.write_text(base + "train: {epochs: 0}\n")
    with pytest.raises(ConfigError, match="epochs must be >= 1"):
        load_suite(bad)
    bad.write_text(base + "train: {epoch: 3}\n")
    with pytest.raises(ConfigError, match="unknown key"):
        load_suite(bad)
    bad.write_text(base + "train_seeds: []\n")
    with pytest.raises(ConfigError, match="train_seeds must not be empty"):
        load_suite(bad)


def test_training_only_suite_cli(tmp_path):
    from tests.conftest import write_fake_mnist

    root = write_fake_mnist(tmp_path / "data")
    suite_file = tmp_path / "train.yaml"
    suite_file.write_text(yaml.safe_dump({
        "name": "t", "dataset": "mnist", "models": ["mlp"], "acts": ["relu"], "train_seeds": [0, 1],
        "checkpoints": str(tmp_path / "ck"), "results": str(tmp_path / "none"),
        "train": {"epochs": 1, "batch_size": 32}, "attacks": [],
    }))
    r = runner.invoke(app, ["suite", str(suite_file), "--data-dir", str(root), "--device", "cpu", "--quiet"])
    assert r.exit_code == 0, r.output
    assert "2 checkpoints in place" in r.output
    assert sorted(p.name for p in (tmp_path / "ck").glob("*.pt")) == ["mlp-relu-mnist-s0.pt", "mlp-relu-mnist-s1.pt"]
    r = runner.invoke(app, ["stats", "--checkpoints", str(tmp_path / "ck"), "--format", "json"])
    assert r.exit_code == 0 and json.loads(r.output)["tables"][0]["rows"][0]["group"]["values"].keys() == {"0", "1"}
    suite_file.write_text(suite_file.read_text().replace("train:", "trainx:"))
    r = runner.invoke(app, ["suite", str(suite_file)])
    assert r.exit_code == 1 and "may be empty in a suite with 'train:'" in r.output


ATTACKS = Path(__file__).resolve().parents[1] / "attacks"
BROKEN = {  # file name -> (what breaks it, the reason read_result gives)
    "oops.json": (lambda r: r.update(settings="oops"), "settings must be a list, got str"),
    "nockpt.json": (lambda r: r.pop("checkpoint"), "checkpoint is missing"),
    "nan.json": (lambda r: r["settings"][0]["repeats"][0]["images"][5].update(abs_z=float("nan")),
                 "settings[0].repeats[0].images[5].abs_z must be a number, got NaN"),
    "str.json": (lambda r: r["settings"][1]["repeats"][0].update(successes="64"),
                 "settings[1].repeats[0].successes must be an integer, got str"),
    "config.json": (lambda r: r["attack_config"].update(flavour=1), "fgsm config: unknown key(s) flavour; known: "),
}  # reasons are the start of the line: a config error goes on to list the known keys


def _lines_start(text: str, starts: list[str]) -> bool:
    lines = sorted(text.splitlines())
    return len(lines) == len(starts) and all(line.startswith(s) for line, s in zip(lines, sorted(starts)))


def _mixed_folder(folder: Path, broken: dict = BROKEN) -> Path:
    """Two good committed FGSM results (relu, sapl) and one malformed copy of relu's per entry of ``broken``."""
    folder.mkdir()
    for act in ("relu", "sapl"):
        shutil.copy(_committed(f"lenet5-{act}-cifar10-s0--fgsm-seed0"), folder)
    for name, (edit, _) in broken.items():
        res = json.loads(_committed("lenet5-relu-cifar10-s0--fgsm-seed0").read_text())
        edit(res)
        (folder / name).write_text(json.dumps(res))
    return folder


def _skipped(folder: Path) -> list[str]:
    return [f"robench: warning: skipped {folder / name}: {why}" for name, (_, why) in BROKEN.items()]


def test_report_and_plot_skip_malformed_results_with_one_warning_each(tmp_path):
    folder = _mixed_folder(tmp_path / "results")
    r = runner.invoke(app, ["report", "--results", str(folder), "--format", "markdown"])
    assert r.exit_code == 0 and r.exception is None, r.output
    assert _lines_start(r.stderr, _skipped(folder))
    assert "### Table 3: FGSM" in r.stdout and "| lenet5 | relu |" in r.stdout and "| lenet5 | sapl |" in r.stdout
    assert r.stdout == render_markdown(build_report(_mixed_folder(tmp_path / "good", {}), on_error=None))
    # a fresh folder: Python shows a warning once per process, and here the commands share one
    folder = _mixed_folder(tmp_path / "plot")
    out = tmp_path / "eps.png"
    r = runner.invoke(app, ["plot", "eps", "--results", str(folder), "--out", str(out)])
    assert r.exit_code == 0 and r.exception is None, r.output
    assert _lines_start(r.stderr, _skipped(folder)) and out.read_bytes()[:4] == b"\x89PNG"


@pytest.mark.parametrize("name", sorted(BROKEN))
def test_check_refuses_a_malformed_result_with_exit_2(tmp_path, name):
    good = _mixed_folder(tmp_path / "good", {})
    base = tmp_path / "b.yaml"
    update_baseline(base, good)
    folder = _mixed_folder(tmp_path / "results", {name: BROKEN[name]})
    for extra in ([], ["--update"]):
        r = runner.invoke(app, ["check", "--baseline", str(base), "--results", str(folder), *extra])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert _lines_start(r.stderr, [f"robench: error: {folder / name}: {BROKEN[name][1]}"])
    assert yaml.safe_load(base.read_text())["results"] == str(good)  # --update refused: the baseline stays


def test_check_update_that_cannot_write_is_one_line_and_exit_2(tmp_path):
    good = _mixed_folder(tmp_path / "good", {})
    (tmp_path / "folder.yaml").mkdir()
    (tmp_path / "file").write_text("")
    for base in (tmp_path / "folder.yaml", tmp_path / "file" / "b.yaml"):  # a folder in the way; a file in the way
        r = runner.invoke(app, ["check", "--baseline", str(base), "--results", str(good), "--update"])
        assert r.exit_code == 2 and isinstance(r.exception, SystemExit), r.output
        assert _lines_start(r.stderr, [f"robench: error: cannot write {base}: "])
    r = runner.invoke(app, ["check", "--baseline", str(tmp_path / "folder.yaml"), "--results", str(good)])
    assert r.exit_code == 2 and r.stderr.splitlines() == [f"robench: error: cannot read {tmp_path / 'folder.yaml'}: Is a directory"]


def test_an_unfinished_result_is_a_note_not_a_warning(tmp_path):
    def unfinished(r):
        r["status"] = "partial"
        for s in r["settings"][2:]:
            s["repeats"] = []
            del s["aggregate"]

    folder = _mixed_folder(tmp_path / "results", {"partial.json": (unfinished, None)})
    r = runner.invoke(app, ["report", "--results", str(folder), "--format", "markdown"])
    assert r.exit_code == 0 and r.stderr == "", r.output
    assert "- partial.json: unfinished run, left out" in r.stdout
