"""A picture of what an attack did: clean and adversarial images side by side, from a stored result.

The adversarials are rebuilt from what the result stores (painted pixels in its records, or its
``.npz``), never recomputed, and checked against the repeat's ``adversarial_sha256``; the clean
images come from the test set the result names, refused when its fingerprint differs. Pixel
attacks get their changed pixels circled; dense ones an amplified difference panel with its norms.
Nothing reruns the model: captions carry the labels and probabilities the records hold. Needs the
``plot`` extra.
"""

from __future__ import annotations

import io
import math
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from torch import Tensor

from .adversarials import Store, images_sha256, named_npz, npz_path, rebuild_repeat, repeat_key, stored_kind
from .data import class_names, load_split, to_float
from .errors import ResultError
from .plot import _pyplot
from .tables import checkpoint_tag
from .results import read_result
from .storage import atomic_write_bytes, check_writable

PANEL_PX = 128  # images are upscaled (nearest neighbour, by a whole factor) to at least this side
COLUMNS = 8  # images per band of rows; more wrap into further bands
DPI = 120


@dataclass(frozen=True)
class Gallery:
    """What one gallery shows: the first successes of one repeat of one setting.

    clean, adversarial: (K, C, H, W) float in [0, 1]; records: the K per-image records, in order;
    classes: class names by label; dense: the repeat stored dense adversarials (difference panels)."""

    title: str
    clean: Tensor
    adversarial: Tensor
    records: list[dict[str, Any]]
    classes: list[str]
    dense: bool


def load_gallery(result_path: str | Path, images: int = 8, setting: str | None = None, repeat: int = 0,
                 data_dir: str | Path | None = None) -> Gallery:
    """The first ``images`` successful images of ``setting`` (default the first) and ``repeat``,
    rebuilt from the result; warns when the repeat has fewer successes than asked."""
    if images < 1:
        raise ValueError(f"images must be at least 1, not {images}")
    path = Path(result_path)
    res = read_result(path)
    s_idx, entry = _setting(path, res, setting)
    rep = _repeat(path, entry, repeat)
    where = f"{entry['label']} repeat {repeat}"
    records = rep["images"]
    stored = stored_kind(rep)
    if stored is None:
        raise ResultError(f"{path}: {where} stores no adversarials (made before robench stored them); re-run the "
                          f"attack with --force, or try `python -m robench.migrate --replay {path}` (it stores them "
                          "only where the replay reproduces every number)")
    shown = [i for i, r in enumerate(records) if r["success"]][:images]
    if not shown:
        raise ResultError(f"{path}: {where} has no successful adversarials to show (of {len(records)} attacked)")
    if len(shown) < images:
        warnings.warn(f"{path}: {where} has {len(shown)} successes; showing {len(shown)} of the {images} asked",
                      stacklevel=2)

    split, prov = load_split(res["dataset"], train=False, data_dir=data_dir)
    if prov.fingerprint != res["provenance"].get("data_sha256"):
        raise ResultError(f"{path} was made on {res['dataset']} data with fingerprint "
                          f"{str(res['provenance'].get('data_sha256'))[:12]}, not the data found here "
                          f"({prov.fingerprint[:12]}); pass --data-dir with the data it was made on")
    indices = [r["index"] for r in records]
    clean = to_float(split.images[indices])
    store = Store.load(named_npz(path, res.get("adversarials") or {})) if stored == "npz" else Store(npz_path(path))
    adv = rebuild_repeat(clean, rep, repeat_key(s_idx, rep["repeat"]), store, f"{path}: {where}")
    if "adversarial_sha256" in rep and images_sha256(adv) != rep["adversarial_sha256"]:
        raise ResultError(f"{path}: {where}: the rebuilt adversarials do not match its adversarial_sha256; "
                          f"run robench verify {path}")

    title = (f"{res['model']} / {res['act']} / {res['dataset']}, checkpoint {checkpoint_tag(res)}\n"
             f"{res['attack']} {entry['label']}, repeat {repeat}: {rep['successes']} successes of {rep['attacked']} "
             "attacked" + (f", the first {len(shown)} shown" if len(shown) < rep["successes"] else ""))
    return Gallery(title, clean[shown], adv[shown], [records[i] for i in shown],
                   class_names(res["dataset"], data_dir), dense=stored == "npz")


def _setting(path: Path, res: dict[str, Any], label: str | None) -> tuple[int, dict[str, Any]]:
    labels = [s["label"] for s in res["settings"]]
    if not labels:
        raise ResultError(f"{path} has no settings yet")
    if label is None:
        return 0, res["settings"][0]
    if label not in labels:
        raise ResultError(f"{path} has no setting {label!r}; known: {', '.join(labels)}")
    return labels.index(label), res["settings"][labels.index(label)]


def _repeat(path: Path, entry: dict[str, Any], repeat: int) -> dict[str, Any]:
    found = {r["repeat"]: r for r in entry["repeats"]}
    if repeat not in found:
        known = ", ".join(map(str, sorted(found))) or "none finished"
        raise ResultError(f"{path}: setting {entry['label']} has no repeat {repeat}; known: {known}")
    return found[repeat]


def gallery_png(result_path: str | Path, images: int = 8, setting: str | None = None, repeat: int = 0,
                data_dir: str | Path | None = None) -> bytes:
    """The gallery as PNG bytes (for a report that embeds it); see ``load_gallery``."""
    plt = _pyplot()
    fig = _figure(load_gallery(result_path, images, setting, repeat, data_dir), plt)
    buf = io.BytesIO()
    try:
        fig.savefig(buf, format="png", dpi=DPI)
    finally:
        plt.close(fig)
    return buf.getvalue()


def gallery(result_path: str | Path, out: str | Path, images: int = 8, setting: str | None = None, repeat: int = 0,
            data_dir: str | Path | None = None) -> Path:
    """Write the gallery PNG to ``out`` atomically; ``out`` is checked writable before anything loads."""
    _pyplot()
    out = check_writable(out, "gallery")
    atomic_write_bytes(out, gallery_png(result_path, images, setting, repeat, data_dir))
    return out


def _figure(g: Gallery, plt: Any) -> Any:
    """Bands of up to COLUMNS images: a row of clean images with their true label and p(true), a row
    of adversarials with the new label and p(true) after (changed pixels circled), and for dense
    attacks a row of differences scaled so the largest change spans the range, with its norms."""
    from matplotlib.patches import Circle

    n = len(g.records)
    cols = min(n, COLUMNS)
    kinds = ["clean", "adversarial"] + (["difference"] if g.dense else [])
    bands = math.ceil(n / cols)
    rows = bands * len(kinds)
    side = g.clean.shape[-1]
    scale = math.ceil(PANEL_PX / side)
    panel = scale * side / DPI  # inches: the upscaled image at one figure pixel per image pixel
    width = max(cols * (panel + 0.25) + 0.4, 5.0)  # room for the title beside few images
    fig, axes = plt.subplots(rows, cols, figsize=(width, rows * (panel + 0.45) + 0.7),
                             squeeze=False, dpi=DPI)
    for ax in axes.flat:
        ax.axis("off")
    clean = g.clean.permute(0, 2, 3, 1).numpy()  # (K, H, W, C)
    adv = g.adversarial.permute(0, 2, 3, 1).numpy()
    for i, rec in enumerate(g.records):
        band, col = divmod(i, cols)
        top = band * len(kinds)
        name, adv_name = _name(g.classes, rec["label"]), _name(g.classes, rec["adv_label"])
        _show(axes[top][col], clean[i], scale, f"{name}\np(true) {rec['p_true_clean']:.2f}", "black")
        ax = axes[top + 1][col]
        _show(ax, adv[i], scale, f"{adv_name}\np(true) {rec['p_true_adv']:.2f}", "firebrick")
        for pixel in rec.get("pixels") or []:
            centre = ((round(pixel[1]) + 0.5) * scale - 0.5, (round(pixel[0]) + 0.5) * scale - 0.5)
            for colour, width in (("black", 2.6), ("yellow", 1.2)):  # a dark rim keeps the ring visible on light pixels
                ax.add_patch(Circle(centre, 1.8 * scale, fill=False, edgecolor=colour, linewidth=width))
        if g.dense:
            delta = adv[i] - clean[i]
            top_delta = float(np.abs(delta).max())
            shown = 0.5 + delta / (2 * top_delta) if top_delta > 0 else np.full_like(delta, 0.5)
            _show(axes[top + 2][col], shown, scale, f"Linf {rec['linf']:.4f}\nL2 {rec['l2']:.3f}", "black")
    for band in range(bands):
        for k, kind in enumerate(kinds):
            ax = axes[band * len(kinds) + k][0]
            label = "adv - clean\n(amplified)" if kind == "difference" else kind
            ax.text(-0.08, 0.5, label, transform=ax.transAxes, rotation=90, ha="right", va="center", fontsize=8)
    fig.suptitle(g.title, fontsize=9)
    fig.tight_layout(rect=(0.02, 0, 1, 1))
    return fig


def _show(ax: Any, image: np.ndarray, scale: int, caption: str, colour: str) -> None:
    """image (H, W, C) in [0, 1], upscaled by repeating each pixel ``scale`` times each way."""
    big = image.repeat(scale, 0).repeat(scale, 1)
    if big.shape[-1] == 1:
        ax.imshow(big[..., 0], cmap="gray", vmin=0, vmax=1, interpolation="nearest")
    else:
        ax.imshow(big.clip(0, 1), interpolation="nearest")
    ax.set_title(caption, fontsize=8, color=colour, pad=3)


def _name(classes: list[str], label: int) -> str:
    return classes[label] if 0 <= label < len(classes) else str(label)


__all__ = ["Gallery", "gallery", "gallery_png", "load_gallery"]
