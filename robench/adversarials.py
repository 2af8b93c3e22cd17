"""Every adversarial image a result judged, kept so that anyone can rebuild it bit for bit.

A pixel attack's proposal is its clean image with the painted pixels the result file already
holds per image (``pixels``: ``[row, col, c_1..c_C]`` each), so it needs nothing more. Any other
proposal (FGSM, PGD, CW, FMN, an ensemble with dense members) goes to a compressed ``.npz`` beside
the result, one entry per repeat: the float32 ``delta = adv - clean``, plus the rare values for
which ``clean + delta`` rounds away from ``adv`` (``fix_index``/``fix_value``), so that the
rebuild is exact, not within an ulp. FGSM's deltas are ±eps up to clipping, which float32 noise
hides from zlib; they are stored as int8 signs when ``clip(clean + eps * sign)`` rebuilds them.

Only the counted successes are stored densely (the repeat says ``"stored_images": "successes"``):
an image the attack did not fool has nothing to re-check, and is rebuilt as its clean image. An
older result stored every image; both forms are read.

Each repeat in the result records ``adversarial_sha256``, the hash of the rebuilt float32
images, so a changed pixel in the JSON or a swapped ``.npz`` is caught before the model runs.

The ``.npz`` and its JSON are one unit: the ``.npz`` is written under a name bound to its content
(``<result>.<sha256[:12]>.adv.npz``), then the JSON that names it, then the file the old JSON named
is removed. A kill or a full disk at any of the three leaves the old pair (or the new one) whole,
and a reader opens only the file its JSON names (``named_npz``), never one it finds beside it.
"""

from __future__ import annotations

import hashlib
import io
import re
import zipfile
from pathlib import Path
from glob import escape as glob_escape
from typing import Any

import numpy as np
import torch
from torch import Tensor

from .attacks.base import AttackOutcome
from .pixels import paint
from .errors import ResultError
from .storage import atomic_write_bytes, open_regular

FORMAT = "robench-adversarials"
VERSION = 1


def npz_path(result: str | Path) -> Path:
    """``attacks/x.json`` -> ``attacks/x.adv.npz``: the name robench gave the file before names were
    bound to content (committed results keep it)."""
    result = Path(result)
    return result.with_name(result.stem + ".adv.npz")


def npz_for(result: str | Path, sha256: str) -> Path:
    """``attacks/x.json`` and the file's sha256 -> ``attacks/x.<sha256[:12]>.adv.npz``."""
    result = Path(result)
    return result.with_name(f"{result.stem}.{sha256[:12]}.adv.npz")


def _is_npz_of(result: Path, name: str) -> bool:
    return name == npz_path(result).name or re.fullmatch(re.escape(result.stem) + r"\.[0-9a-f]{12}\.adv\.npz", name) is not None


def npz_files(result: str | Path) -> list[Path]:
    """Every adversarials file of ``result`` beside it, named or not (sorted)."""
    result = Path(result)
    return sorted(p for p in result.parent.glob(f"{glob_escape(result.stem)}.*adv.npz") if _is_npz_of(result, p.name))


def named_npz(result: str | Path, block: dict[str, Any]) -> Path:
    """The adversarials file a result's ``adversarials`` block names, beside the result; a name that
    is not one of this result's (another folder, another result's file) is a ResultError."""
    result = Path(result)
    name = block.get("file")
    if not isinstance(name, str) or not _is_npz_of(result, name):
        raise ResultError(f"{result}: its adversarials file is named {name!r}, not one of {result.stem}.<sha>.adv.npz")
    return result.with_name(name)


def drop_unnamed(result: str | Path, block: dict[str, Any] | None) -> None:
    """Remove ``result``'s adversarials files other than the one ``block`` names: the last step of a
    write, after the JSON naming the new file is in place (and leftovers of runs killed before it)."""
    keep = None if not block else block.get("file")
    for path in npz_files(result):
        if path.name != keep:
            path.unlink(missing_ok=True)


def repeat_key(setting: int, repeat: int) -> str:
    return f"s{setting}r{repeat}"


def images_sha256(adv: Tensor) -> str:
    """sha256 of ``adv`` (N, C, H, W) as contiguous float32 bytes: what a rebuild must reproduce."""
    return hashlib.sha256(adv.detach().float().cpu().contiguous().numpy().tobytes()).hexdigest()


def from_pixels(images: Tensor, pixels: list[Any]) -> Tensor:
    """The clean ``images`` (N, C, H, W) with each image's recorded pixels painted in; an image
    whose record is None (an ensemble image no pixel member broke) stays clean."""
    adv = images.clone()
    hit = [i for i, p in enumerate(pixels) if p is not None]
    if not hit:
        return adv
    sizes = {len(pixels[i]) for i in hit}
    if len(sizes) != 1:  # one attack paints the same k on every image; mixed k only in hand-made files
        for i in hit:
            adv[i : i + 1] = paint(images[i : i + 1], torch.tensor([pixels[i]], dtype=torch.float32, device=images.device))
        return adv
    cands = torch.tensor([pixels[i] for i in hit], dtype=torch.float32, device=images.device)
    idx = torch.tensor(hit, device=images.device)
    adv[idx] = paint(images[idx], cands)
    return adv


def encode_dense(images: Tensor, adv: Tensor, eps: float | None = None) -> dict[str, np.ndarray]:
    """Arrays that rebuild ``adv`` exactly from ``images`` (both (N, C, H, W) float32).

    With ``eps`` (FGSM), int8 signs when ``clip(images + eps * sign, 0, 1)`` gives ``adv`` back bit
    for bit; otherwise float32 deltas with the values they miss."""
    images, adv = images.detach().float().cpu(), adv.detach().float().cpu()
    if eps is not None:
        sign = torch.sign(adv - images).to(torch.int8)
        if torch.equal(_from_sign(images, sign, eps), adv):
            return {"sign": sign.numpy(), "eps": np.float32(eps)}
    delta = adv - images
    wrong = (images + delta != adv).flatten().nonzero().flatten()
    return {"delta": delta.numpy(), "fix_index": wrong.numpy().astype(np.int64), "fix_value": adv.flatten()[wrong].numpy()}


def _from_sign(images: Tensor, sign: Tensor, eps: float) -> Tensor:
    return (images + torch.tensor(eps, dtype=torch.float32) * sign.float()).clamp(0, 1)


def decode_dense(images: Tensor, arrays: dict[str, np.ndarray]) -> Tensor:
    """The adversarial images (N, C, H, W) float32 on ``images``' device from encode_dense's arrays."""
    clean = images.detach().float().cpu()
    if "sign" in arrays:
        sign = torch.from_numpy(np.asarray(arrays["sign"]))
        _check_shape(sign, clean)
        return _from_sign(clean, sign, float(arrays["eps"])).to(images.device)
    delta = torch.from_numpy(np.asarray(arrays["delta"], dtype=np.float32))
    _check_shape(delta, clean)
    adv = (clean + delta).flatten()
    adv[torch.from_numpy(np.asarray(arrays["fix_index"], dtype=np.int64))] = torch.from_numpy(
        np.asarray(arrays["fix_value"], dtype=np.float32))
    return adv.view_as(clean).to(images.device)


def _check_shape(stored: Tensor, clean: Tensor) -> None:
    if stored.shape != clean.shape:
        raise ResultError(f"stored adversarials have shape {tuple(stored.shape)}, the image set {tuple(clean.shape)}")


SUCCESSES = "successes"  # a repeat's ``stored_images`` when its .npz holds its counted successes only


def encode(images: Tensor, adv: Tensor, pixels: list[Any] | None, eps: float | None = None,
           rows: list[int] | None = None) -> dict[str, np.ndarray]:
    """What the ``.npz`` needs for one repeat: nothing when the recorded ``pixels`` rebuild ``adv``;
    else the dense encoding of the images at ``rows`` (None: all of them), with those rows."""
    if pixels is not None and torch.equal(from_pixels(images, pixels), adv):
        return {}
    if rows is None:
        return encode_dense(images, adv, eps)
    return encode_dense(images[rows], adv[rows], eps) | {"rows": np.asarray(rows, dtype=np.int64)}


def rebuild(images: Tensor, records: list[dict[str, Any]], arrays: dict[str, np.ndarray] | None) -> Tensor:
    """One repeat's adversarials from its per-image ``records`` and its ``.npz`` arrays (None: the
    repeat stored none, so its records must hold ``pixels``). Arrays with ``rows`` hold those images
    only (the counted successes), and every other image is rebuilt clean."""
    if arrays and "rows" in arrays:
        rows = torch.from_numpy(np.asarray(arrays["rows"], dtype=np.int64)).to(images.device)
        if rows.numel() and not (0 <= int(rows.min()) and int(rows.max()) < len(images)):
            raise ResultError(f"stored adversarials name rows outside the {len(images)} images of the set")
        adv = images.clone()
        adv[rows] = decode_dense(images[rows], {k: v for k, v in arrays.items() if k != "rows"})
        return adv
    if arrays:
        return decode_dense(images, arrays)
    if records and all("pixels" in r for r in records):
        return from_pixels(images, [r["pixels"] for r in records])
    raise ResultError("the result stores neither painted pixels nor dense adversarials for this repeat")


def stored_kind(rep: dict[str, Any]) -> str | None:
    """How a repeat keeps its adversarials: "npz", "pixels" (in its records), or None (a result made
    before robench stored them; records with pixels but no "stored" field came from the first DE)."""
    records = rep["images"]
    return rep.get("stored") or ("pixels" if records and all("pixels" in r for r in records) else None)


def rebuild_repeat(images: Tensor, rep: dict[str, Any], key: str, store: Store, where: str) -> Tensor | None:
    """A repeat's adversarials (N, C, H, W) from what it stores under ``key`` of ``store``; None when
    it stores none. ``where`` names the repeat in the error when the ``.npz`` lacks it."""
    kind = stored_kind(rep)
    if kind is None:
        return None
    arrays = store.get(key) if kind == "npz" else None
    if kind == "npz" and arrays is None:
        raise ResultError(f"{where} is stored in {store.path.name}, which is missing or lacks it")
    return rebuild(images, rep["images"], arrays)


def keep(store: Store, key: str, images: Tensor, outcome: AttackOutcome, threat: tuple[str, float | None],
         success: Tensor | None = None) -> dict[str, Any]:
    """Put what rebuilds ``outcome``'s adversarials exactly into ``store`` under ``key`` (nothing when
    its ``pixels`` detail does); returns the fields the repeat records. ``threat`` is the setting's
    (norm, budget): an Linf budget lets FGSM's proposals go in as signs. With ``success`` (N,) bool,
    judge's verdict, only the counted successes are stored densely; the others rebuild clean, and
    ``adversarial_sha256`` hashes what is rebuilt."""
    norm, budget = threat
    pixels = outcome.details.get("pixels")
    rows = None if success is None else torch.nonzero(success.cpu()).flatten().tolist()
    arrays = encode(images, outcome.adversarial, pixels, budget if norm == "linf" else None, rows)
    dense_successes = bool(arrays) and rows is not None
    rebuilt = rebuild(images, [{"pixels": p} for p in pixels or []], arrays)
    expected = outcome.adversarial
    if dense_successes:
        expected = images.clone()
        expected[rows] = outcome.adversarial[rows]
    if not torch.equal(rebuilt, expected):
        raise RuntimeError("stored adversarials do not rebuild the attack's images exactly (a robench bug)")
    if arrays:
        store.put(key, arrays)
    kept = {"stored": "npz" if arrays else "pixels", "adversarial_sha256": images_sha256(rebuilt)}
    return kept | ({"stored_images": SUCCESSES} if dense_successes else {})


class Store:
    """The ``.npz`` of one result: arrays per repeat, written whole after each one under a new
    name (see the module docstring); ``path`` is the file it was last loaded from or written to."""

    def __init__(self, path: Path, arrays: dict[str, np.ndarray] | None = None) -> None:
        self.path = path
        self.arrays = dict(arrays or {})

    @classmethod
    def load(cls, path: Path) -> Store:
        return cls(path, read_npz(path) if path.is_file() else {})

    def put(self, key: str, arrays: dict[str, np.ndarray]) -> None:
        """Keep ``arrays`` under ``key``; a repeat identical to a stored one (FGSM without a random
        start repeats itself) is kept as a reference to it."""
        for name in [k for k in self.arrays if k.startswith(key + "/")]:
            del self.arrays[name]
        for other in self.keys():
            if other != key and _same(self._own(other), arrays):
                self.arrays[f"{key}/same_as"] = np.array(other)
                return
        self.arrays |= {f"{key}/{name}": value for name, value in arrays.items()}

    def get(self, key: str) -> dict[str, np.ndarray] | None:
        found = self._own(key)
        if "same_as" in found:
            found = self._own(str(found["same_as"]))
            if not found or "same_as" in found:
                raise ResultError(f"adversarials file {self.path}: {key} refers to a missing entry")
        return found or None

    def keys(self) -> list[str]:
        return sorted({k.split("/", 1)[0] for k in self.arrays})

    def _own(self, key: str) -> dict[str, np.ndarray]:
        return {k.split("/", 1)[1]: v for k, v in self.arrays.items() if k.startswith(key + "/")}

    def pack(self) -> bytes:
        """The ``.npz`` bytes: one ``.npy`` member per array, LZMA-compressed (about a fifth smaller
        than ``np.savez_compressed``'s deflate on these deltas, and np.load reads it), in name order
        with a fixed timestamp, so the bytes are a function of the arrays."""
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as npz:
            for name in sorted(self.arrays):
                member = io.BytesIO()
                np.lib.format.write_array(member, np.asanyarray(self.arrays[name]), allow_pickle=False)
                info = zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
                info.compress_type = zipfile.ZIP_LZMA
                npz.writestr(info, member.getvalue())
        return buf.getvalue()

    def write(self, result: Path) -> dict[str, Any] | None:
        """Write the file of ``result`` when it holds anything, under its content's name; returns
        the block the result records about it (None: nothing to store). The JSON comes next, then
        drop_unnamed."""
        if not self.arrays:
            return None
        data = self.pack()
        sha = hashlib.sha256(data).hexdigest()
        self.path = npz_for(result, sha)
        atomic_write_bytes(self.path, data)
        return {"format": FORMAT, "version": VERSION, "file": self.path.name, "sha256": sha}


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return "same_as" not in a and a.keys() == b.keys() and all(
        a[k].dtype == b[k].dtype and np.array_equal(a[k], b[k]) for k in a)


def read_npz(path: Path) -> dict[str, np.ndarray]:
    """All arrays of a stored ``.npz``; object arrays are refused, so loading never unpickles."""
    try:
        with open_regular(path) as f, np.load(f, allow_pickle=False) as npz:
            return {name: npz[name] for name in npz.files}
    except FileNotFoundError:
        raise ResultError(f"adversarials file {path} not found") from None
    except (ValueError, OSError, zipfile.BadZipFile, EOFError) as err:
        raise ResultError(f"adversarials file {path} is corrupt or not an .npz ({err})") from None


__all__ = ["FORMAT", "SUCCESSES", "VERSION", "Store", "decode_dense", "drop_unnamed", "encode", "encode_dense", "from_pixels",
           "images_sha256", "keep", "named_npz", "npz_files", "npz_for", "npz_path", "read_npz", "rebuild", "rebuild_repeat", "repeat_key",
           "stored_kind"]
