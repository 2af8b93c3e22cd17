"""One place per fact: the attack specs hold what the report, the worst case, the ensemble and the
option parser know of each attack, and a new attack is one module, run through attack, report,
verify and the default ensemble with no robench edit."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

import robench
from robench.attacks import attack_names, get_attack
from robench.attacks.ensemble import THREATS, EnsembleConfig
from robench.attacks.options import attack_options, check_option_keys, parse_attack
from robench.attacks.spec import default_members, strongest_for
from robench.cli import app
from robench.errors import ConfigError
from tests.conftest import train_tiny_lenet
from tests.toy_attack import load_toy

PACKAGE = Path(robench.__file__).parent
# Modules that read the specs and must name no attack; the ensemble may name itself (it registers).
READERS = {"tables.py": set(), "robustness.py": set(), "leaderboard.py": set(), "plot.py": set(), "html_report.py": set(),
           "attacks/ensemble.py": {"ensemble"}, "attacks/options.py": set()}
runner = CliRunner()


def string_literals(path: Path) -> set[str]:
    """Every string constant of a module outside its docstrings (f-strings' constant parts too)."""
    tree = ast.parse(path.read_text())
    docstrings = {id(node.body[0].value) for node in ast.walk(tree)
                  if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef) and node.body
                  and isinstance(node.body[0], ast.Expr) and isinstance(node.body[0].value, ast.Constant)}
    return {node.value for node in ast.walk(tree)
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and id(node) not in docstrings}


@pytest.mark.parametrize("module", sorted(READERS))
def test_the_modules_that_read_the_specs_name_no_attack(module):
    names = set(attack_names())
    assert {"pixel", "pgd", "fmn", "ensemble"} <= names  # the check below has names to look for
    assert not (string_literals(PACKAGE / module) & names) - READERS[module]


def test_the_literal_scan_sees_a_name_in_code_and_not_in_a_docstring(tmp_path):
    source = tmp_path / "m.py"
    source.write_text('"""pgd in a docstring."""\nX = {"fmn": 1}\ndef f():\n    """cw too."""\n    return f"{X} pixel"\n')
    assert string_literals(source) == {"fmn", " pixel"}


def test_the_specs_give_the_default_ensembles_cheap_first_and_a_strongest_attack_per_threat():
    for threat in THREATS:
        members = default_members(threat)
        assert members and EnsembleConfig(threat=threat).members == members
        assert [get_attack(m).cost for m in members] == sorted(get_attack(m).cost for m in members)
        assert all(threat in get_attack(m).threats for m in members)
        # a strongest attack can serve in the threat's ensemble, or is the standard evaluation (run on its own)
        assert strongest_for(threat) and all(threat in get_attack(s).threats or get_attack(s).headline
                                             for s in strongest_for(threat))
        assert any(threat in get_attack(s).threats for s in strongest_for(threat))
    assert EnsembleConfig(members=("de",)).members == (get_attack("pixel").name,)  # an alias from the spec


def test_flags_set_the_config_field_of_their_name_and_attack_opt_keys_are_checked():
    assert attack_options("pixel", {"crossover-rate": 0.5, "pixels": 3}) == {"crossover_rate": 0.5, "pixels": 3}
    assert attack_options("fmn", {"eps": "8/255"}) == {"epsilon": 8 / 255}  # the spec's flag_fields
    assert attack_options("ensemble", {"eps": "0.1", "norm": "l2"}) == {"epsilons": (0.1,), "threat": "l2"}
    assert attack_options("ensemble", {"eps": "0.1"})["threat"] == "linf"  # the spec fills the threat
    assert parse_attack("cw:0.5") == ("cw", {"l2_budget": 0.5})
    assert check_option_keys("pgd", {"rel_stepsize": 0.1}) == {"rel_stepsize": 0.1}
    with pytest.raises(ConfigError, match=r"--attack-opt stepsize: pgd has no such option; known: norm, epsilons"):
        check_option_keys("pgd", {"stepsize": 0.1})
    r = runner.invoke(app, ["models", "--known"])
    assert r.exit_code == 0 and f"attacks: {', '.join(attack_names())}" in r.output


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    return train_tiny_lenet(tmp_path_factory)


def test_a_toy_attack_is_one_module_through_attack_report_verify_and_the_default_ensemble(
        trained, tmp_path, clean_registries, monkeypatch):
    root, ck = trained
    before = set(attack_names())
    load_toy(tmp_path, "randsign")  # the whole of the new attack: one module, one register call
    assert set(attack_names()) == before | {"randsign"}
    results = tmp_path / "attacks"
    base = ["--model", "lenet5", "--act", "relu", "--checkpoint", str(ck), "--data-dir", str(root), "--images", "3",
            "--repeats", "2", "--quiet"]

    r = runner.invoke(app, ["attack", "--attack", "randsign", "--eps", "8/255,16/255", "--attack-opt", "tries=2",
                            "--out", str(results / "sign.json"), *base])
    assert r.exit_code == 0, r.output
    stored = json.loads((results / "sign.json").read_text())
    assert stored["attack_config"] == {"epsilons": [8 / 255, 16 / 255], "tries": 2}
    assert [s["label"] for s in stored["settings"]] == ["eps=8/255", "eps=16/255"]

    r = runner.invoke(app, ["attack", "--attack", "randsign", "--attack-opt", "trys=2", "--out", str(tmp_path / "x.json"), *base])
    assert r.exit_code == 1 and "--attack-opt trys: randsign has no such option; known: epsilons, tries" in r.output

    # The default Linf ensemble now starts with the toy (cost 1); the other members run on tiny budgets.
    assert EnsembleConfig(threat="linf").members[0] == "randsign"
    tiny = "member_options={pgd: {steps: 3}, fmn: {steps: 5}, square: {queries: 20}}"
    r = runner.invoke(app, ["attack", "--attack", "ensemble", "--eps", "8/255", "--attack-opt", tiny,
                            "--out", str(results / "worst.json"), *base])
    assert r.exit_code == 0, r.output
    worst = json.loads((results / "worst.json").read_text())
    assert worst["attack_config"]["members"][0] == "randsign"

    r = runner.invoke(app, ["report", "--results", str(results), "--format", "json"])
    assert r.exit_code == 0, r.output
    titles = [t["title"] for t in json.loads(r.output)["tables"]]
    assert "Random signs, successes" in titles  # the spec's title
    assert any(t.startswith("Worst case over linf-randsign+fgsm+pgd") for t in titles)

    r = runner.invoke(app, ["verify", str(results), "--data-dir", str(root), "--strict"])
    assert r.exit_code == 0 and "all 2 results verify" in r.output, r.output
