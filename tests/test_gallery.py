import json

import numpy as np
import pytest
import torch
from PIL import Image
from typer.testing import CliRunner

from robench.attacks.runner import AttackRun, run_attack
from robench.cli import app
from robench.errors import ResultError, WriteError
from robench.gallery import _figure, gallery, gallery_png, load_gallery
from robench.plot import _pyplot
from tests.conftest import adversarials_file, copy_result, edit_json, strip_adversarials, train_tiny_lenet

pytest.importorskip("matplotlib")


FOOLED = (1, 3, 4)  # records of the DE result marked as successes, see ``made``


@pytest.fixture(scope="module")
def made(tmp_path_factory):
    """A tiny trained model on fake CIFAR-10 and two results: DE (pixels in the JSON, two repeats)
    and FGSM (int8 signs in the .npz). The model memorises its fake data (noisy copies of 20
    images), so no cheap pixel attack fools it; the DE result's images FOOLED are marked as
    successes, which leaves what the gallery draws (the stored pixels) as the attack found it."""
    root, ck = train_tiny_lenet(tmp_path_factory)
    out = tmp_path_factory.mktemp("attacks")
    base = dict(model="lenet5", act="relu", images=6, seed=0, checkpoint=str(ck))
    runs = {
        "pixel": AttackRun(attack="pixel", options={"population": 12, "generations": 2, "pixels": 2}, repeats=2,
                           **base),
        "fgsm": AttackRun(attack="fgsm", options={"epsilons": [0.02, 0.1]}, repeats=1, **base),
    }
    for name, run in runs.items():
        run_attack(run, out=out / f"{name}.json", data_dir=root, device="cpu")

    def fool(d):
        for rep in d["settings"][0]["repeats"]:
            for i in FOOLED:
                rec = rep["images"][i]
                rec.update(success=True, adv_label=(rec["label"] + 1) % 10)
            rep["successes"] = sum(r["success"] for r in rep["images"])

    _edit(out / "pixel.json", fool)
    return root, out


def _copy(made, tmp_path, name):
    _, out = made
    return copy_result(out, tmp_path, name)


_edit = edit_json


def _records(made, name, setting=0, repeat=0):
    _, out = made
    return json.loads((out / f"{name}.json").read_text())["settings"][setting]["repeats"][repeat]["images"]


def test_pixel_gallery_shows_the_first_successes_with_their_painted_pixels_circled(made):
    root, out = made
    records = _records(made, "pixel", repeat=1)
    wins = [r for r in records if r["success"]]
    assert len(wins) >= len(FOOLED)
    with pytest.warns(UserWarning, match=f"has {len(wins)} successes; showing {len(wins)} of the 7 asked"):
        g = load_gallery(out / "pixel.json", images=7, repeat=1, data_dir=root)
    assert [r["index"] for r in g.records] == [r["index"] for r in wins]
    assert not g.dense and g.classes[0] == "class0"
    for clean, adv, rec in zip(g.clean, g.adversarial, g.records):
        changed = {tuple(x) for x in (adv != clean).any(0).nonzero().tolist()}
        painted = {(round(p[0]), round(p[1])) for p in rec["pixels"]}
        assert changed <= painted and len(painted) <= 2
        for row, col in painted:  # each painted pixel carries its recorded colour
            colour = next(p[2:] for p in reversed(rec["pixels"]) if (round(p[0]), round(p[1])) == (row, col))
            assert torch.allclose(adv[:, row, col], torch.tensor(colour))

    plt = _pyplot()
    fig = _figure(g, plt)
    try:
        scale = 128 // 32
        for i, rec in enumerate(g.records):
            ax = fig.axes[len(g.records) + i]  # the second row holds the adversarials
            centres = {tuple(round(c) for c in patch.center) for patch in ax.patches}
            assert centres == {(round((round(p[1]) + 0.5) * scale - 0.5), round((round(p[0]) + 0.5) * scale - 0.5))
                               for p in rec["pixels"]}
    finally:
        plt.close(fig)


def test_dense_gallery_png_is_an_image_of_the_expected_size(made, tmp_path):
    root, out = made
    wins = [r for r in _records(made, "fgsm", setting=1) if r["success"]]
    assert len(wins) >= 2
    g = load_gallery(out / "fgsm.json", images=2, setting="eps=0.1", data_dir=root)
    assert g.dense and len(g.records) == 2
    assert (g.adversarial - g.clean).abs().max() <= 0.1 + 1e-6

    dense = tmp_path / "fgsm.png"
    assert gallery(out / "fgsm.json", dense, images=2, setting="eps=0.1", data_dir=root) == dense
    pixel = tmp_path / "pixel.png"
    assert sum(r["success"] for r in _records(made, "pixel")) >= 2
    gallery(out / "pixel.json", pixel, images=2, data_dir=root)
    shapes = {}
    for path in (dense, pixel):
        with Image.open(path) as im:
            assert im.format == "PNG"
            x = np.asarray(im.convert("RGB"), dtype=np.float32) / 255
        shapes[path.name] = x.shape
        assert x.std() > 0.1  # images, not a blank canvas
        assert x.shape[1] >= 2 * 128  # two columns of upscaled 32-pixel images
    # three rows (clean, adversarial, difference) against two
    assert shapes["fgsm.png"][0] > shapes["pixel.png"][0] * 1.3
    assert gallery_png(out / "fgsm.json", images=2, setting="eps=0.1", data_dir=root) == dense.read_bytes()


def test_show_writes_a_png(made, tmp_path):
    root, out = made
    png = tmp_path / "sub" / "g.png"
    res = CliRunner().invoke(app, ["show", str(out / "fgsm.json"), "--out", str(png), "--setting", "eps=0.1",
                                   "--images", "3", "--data-dir", str(root)])
    assert res.exit_code == 0, res.output
    assert f"wrote {png}" in res.output.replace("\n", "")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def _one_error_line(res):
    lines = [line for line in res.output.splitlines() if line.strip()]
    assert res.exit_code == 1 and len(lines) == 1 and lines[0].startswith("robench: error:"), res.output
    return lines[0]


def test_a_result_without_stored_adversarials_is_one_line(made, tmp_path):
    root, _ = made
    path = _copy(made, tmp_path, "pixel")
    _edit(path, strip_adversarials)
    res = CliRunner().invoke(app, ["show", str(path), "--out", str(tmp_path / "g.png"), "--data-dir", str(root)])
    line = _one_error_line(res)
    assert "stores no adversarials" in line and "robench.migrate --replay" in line and "--force" in line
    assert not (tmp_path / "g.png").exists()


def test_unknown_setting_or_repeat_lists_the_known_ones(made, tmp_path):
    root, out = made
    runner = CliRunner()
    base = ["show", str(out / "fgsm.json"), "--out", str(tmp_path / "g.png"), "--data-dir", str(root)]
    line = _one_error_line(runner.invoke(app, [*base, "--setting", "eps=9"]))
    assert "no setting 'eps=9'; known: eps=0.02, eps=0.1" in line
    line = _one_error_line(runner.invoke(app, [*base, "--repeat", "3"]))
    assert "no repeat 3; known: 0" in line


def test_other_data_a_tampered_pixel_or_an_unwritable_out_are_refused(made, tmp_path):
    root, _ = made
    path = _copy(made, tmp_path, "pixel")
    _edit(path, lambda d: d["provenance"].update(data_sha256="0" * 64))
    with pytest.raises(ResultError, match="fingerprint 000000000000, not the data found here"):
        load_gallery(path, images=2, data_dir=root)

    path = _copy(made, tmp_path, "fgsm")
    adversarials_file(path).unlink()
    with pytest.raises(ResultError, match=r"fgsm\.[0-9a-f]{12}\.adv\.npz, which is missing"):
        load_gallery(path, images=2, setting="eps=0.1", data_dir=root)

    path = _copy(made, tmp_path, "pixel")
    wins = [i for i, r in enumerate(_records(made, "pixel")) if r["success"]]

    def recolour(d):
        d["settings"][0]["repeats"][0]["images"][wins[0]]["pixels"][0][2] = 0.123

    _edit(path, recolour)
    with pytest.raises(ResultError, match="do not match its adversarial_sha256"):
        load_gallery(path, images=2, data_dir=root)

    (tmp_path / "folder.png").mkdir()
    with pytest.raises(WriteError, match="it is a folder"):
        gallery(tmp_path / "missing.json", tmp_path / "folder.png")
