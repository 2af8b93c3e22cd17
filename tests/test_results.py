"""Result files: every field a reader uses is checked on read, and a bad one is named by its path."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from robench.errors import ResultError
from robench.results import list_results, read_result, warn_skipped
from tests.conftest import committed_result

ATTACKS = Path(__file__).resolve().parents[1] / "attacks"
GOOD = committed_result("lenet5-relu-cifar10-s0--fgsm-seed0")  # 4 settings of 1 repeat, 100 images each


def good() -> dict[str, Any]:
    return json.loads(GOOD.read_text())


def write(path: Path, result: dict[str, Any]) -> Path:
    path.write_text(json.dumps(result))  # NaN and inf become the literals NaN and Infinity
    return path


def edited(edit: Callable[[dict[str, Any]], Any]) -> dict[str, Any]:
    result = good()
    edit(result)
    return result


def _image(r: dict[str, Any], i: int = 7) -> dict[str, Any]:
    return r["settings"][1]["repeats"][0]["images"][i]


BAD = [  # (what to break, the one line read_result must give after the path)
    (lambda r: r.update(settings="oops"), "settings must be a list, got str"),
    (lambda r: r.pop("checkpoint"), "checkpoint is missing"),
    (lambda r: r["checkpoint"].pop("sha256"), "checkpoint.sha256 is missing"),
    (lambda r: r["settings"][2]["repeats"][0].update(successes="3"), "settings[2].repeats[0].successes must be an integer, got str"),
    (lambda r: r["settings"][2]["repeats"][0].update(successes=True), "settings[2].repeats[0].successes must be an integer, got bool"),
    (lambda r: _image(r).update(abs_z=float("nan")), "settings[1].repeats[0].images[7].abs_z must be a number, got NaN"),
    (lambda r: _image(r).update(linf=float("inf")), "settings[1].repeats[0].images[7].linf must be a number, got Infinity"),
    (lambda r: _image(r).pop("label"), "settings[1].repeats[0].images[7].label is missing"),
    (lambda r: _image(r).update(success=1), "settings[1].repeats[0].images[7].success must be true or false, got int"),
    (lambda r: _image(r).update(l1=None), "settings[1].repeats[0].images[7].l1 must be a number, got null"),
    (lambda r: r["settings"][1]["repeats"][0]["images"].__setitem__(3, [1]), "settings[1].repeats[0].images[3] must be an object, got list"),
    (lambda r: r["settings"][0]["repeats"][0].pop("seed"), "settings[0].repeats[0].seed is missing"),
    (lambda r: r["settings"][0]["repeats"][0].update(avg_abs_z="0.5"), "settings[0].repeats[0].avg_abs_z must be a number or null, got str"),
    (lambda r: r["settings"][3].update(aggregate={"repeats": 1}), "settings[3].aggregate.successes_mean is missing"),
    (lambda r: r["settings"][0].update(config=[]), "settings[0].config must be an object, got list"),
    (lambda r: r["image_set"]["indices"].__setitem__(4, 2.0), "image_set.indices[4] must be an integer, got float"),
    (lambda r: r.update(status="done"), "status must be partial or complete, got 'done'"),
    (lambda r: r.update(seed=None), "seed must be an integer, got null"),
    (lambda r: r["provenance"].update(data_official="yes"), "provenance.data_official must be true or false, got str"),
    # outside the checked fields a NaN still makes the file invalid JSON
    (lambda r: r["versions"].update(torch=float("nan")), "versions.torch must be a finite number, got NaN"),
    (lambda r: r["attack_config"]["epsilons"].__setitem__(1, float("-inf")),
     "attack_config.epsilons[1] must be a finite number, got -Infinity"),
]


@pytest.mark.parametrize("edit,message", BAD)
def test_a_bad_field_is_named_by_its_path(tmp_path, edit, message):
    path = write(tmp_path / "x.json", edited(edit))
    with pytest.raises(ResultError) as err:
        read_result(path)
    assert str(err.value) == f"{path}: {message}"


def test_every_committed_result_reads():
    paths = sorted(ATTACKS.rglob("*.json"))
    assert len(paths) > 50
    for path in paths:
        read_result(path)


def test_fields_beyond_the_schema_are_allowed(tmp_path):
    def more(r: dict[str, Any]) -> None:
        r["adversarials"] = {"format": "robench-adversarials", "version": 1, "file": "x.adv.npz", "sha256": "0" * 64}
        r["settings"][0]["repeats"][0]["stored"] = "npz"
        _image(r).update(pixels=[[3, 4, 0.5, 0.5, 0.5]], broken_by="sparse_rs", min_distance=0.25, l1=1.5)

    result = edited(more)
    assert read_result(write(tmp_path / "x.json", result)) == result


def test_an_unfinished_run_reads(tmp_path):
    def partial(r: dict[str, Any]) -> None:
        r["status"] = "partial"
        for s in r["settings"][1:]:
            s["repeats"] = []
            del s["aggregate"]

    assert read_result(write(tmp_path / "x.json", edited(partial)))["status"] == "partial"


def test_unreadable_files_are_one_line(tmp_path):
    (tmp_path / "a.json").write_text("{not json")
    (tmp_path / "b.json").mkdir()
    write(tmp_path / "c.json", {"schema": "something-else"})
    write(tmp_path / "d.json", good() | {"version": 2})
    expected = {"a.json": "not valid JSON", "b.json": "cannot read it", "c.json": "not a robench attack result",
                "d.json": "result schema version 2, this robench reads 1"}
    for name, message in expected.items():
        with pytest.raises(ResultError, match=message):
            read_result(tmp_path / name)
    with pytest.raises(ResultError, match="not found"):
        read_result(tmp_path / "e.json")


def test_list_results_is_strict_unless_told_what_to_do(tmp_path):
    write(tmp_path / "a-good.json", good())
    write(tmp_path / "b-bad.json", edited(lambda r: r.update(settings="oops")))
    write(tmp_path / "c-good.json", good())
    with pytest.raises(ResultError, match="b-bad.json: settings must be a list"):
        list_results(tmp_path)
    skipped = []
    kept = list_results(tmp_path, on_error=lambda path, err: skipped.append((path.name, str(err))))
    assert [p.name for p, _ in kept] == ["a-good.json", "c-good.json"]
    assert skipped == [("b-bad.json", f"{tmp_path / 'b-bad.json'}: settings must be a list, got str")]
    with pytest.warns(UserWarning, match=r"^skipped .*b-bad.json: settings must be a list, got str$"):
        assert len(list_results(tmp_path, on_error=warn_skipped)) == 2


def test_results_are_written_compactly_and_read_back(tmp_path):
    from robench.results import write_result

    result = good()
    written = write_result(tmp_path / "r.json", result)
    text = (tmp_path / "r.json").read_text()
    assert text == json.dumps(json.loads(text), separators=(",", ":"), allow_nan=False) + "\n"  # no indent, no spaces
    assert "\n" not in text.rstrip("\n")
    assert read_result(tmp_path / "r.json") == written
