"""Datasets by name, loaded whole as uint8 tensors, with batched augmentation.

Where the data comes from: ``--data-dir``, then ``$ROBENCH_DATA``, then a per-user cache dir;
torchvision downloads into the cache dir only where the network answers. Every load reports
whether the files are the official release (torchvision's / the publishers' md5s) and a sha256
fingerprint of the files, so a result made on the JPEG re-encoded CIFAR-10 of an offline machine
can always be told apart from one made on the original.
"""

from __future__ import annotations

import hashlib
import os
import pickle
import socket
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import Tensor
from torch.nn import functional as F
from torchvision import datasets
from torchvision.datasets.utils import check_integrity

from .errors import DataNotFoundError
from .registry import Registry
from .storage import file_sha256, open_regular


@dataclass(frozen=True)
class DatasetInfo:
    """What a model needs to know of a dataset, and where torchvision keeps its files."""

    name: str
    channels: int
    image_size: int
    num_classes: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    folder: str  # below the root
    official_md5: dict[str, str]  # file (relative to folder) -> md5 of the official release
    download_host: str
    loader: Callable[[Path, bool, bool], tuple[Tensor, Tensor]]  # (root, train, download)
    classes: Callable[[Path], list[str]]  # root -> class names, in label order


@dataclass(frozen=True)
class Split:
    """One split held in memory. images: (N, C, H, W) uint8; labels: (N,) int64."""

    images: Tensor
    labels: Tensor


@dataclass(frozen=True)
class Provenance:
    """Where the data came from; stored in every checkpoint and result."""

    dataset: str
    official: bool
    fingerprint: str  # sha256 over the dataset's files, in name order

    def to_dict(self) -> dict:
        # No root: a stored file must not carry the path of the machine that made it.
        return {"dataset": self.dataset, "data_official": self.official, "data_sha256": self.fingerprint}


try:  # numpy >= 2
    from numpy._core import multiarray as _np_multiarray, numeric as _np_numeric
except ImportError:  # numpy 1.x
    from numpy.core import multiarray as _np_multiarray, numeric as _np_numeric  # type: ignore[no-redef]


def _latin1_bytes(text: Any, encoding: Any = "utf-8", errors: Any = "strict") -> bytes:
    """What a protocol-2 pickle calls ``_codecs.encode`` for: bytes rebuilt from a latin-1 string
    (protocol 2 has no bytes opcode). Any other use of the codec machinery is refused."""
    if not isinstance(text, str) or str(encoding).lower().replace("_", "-") not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("it calls _codecs.encode other than to rebuild latin-1 bytes")
    return text.encode("latin-1")


# The only globals a CIFAR pickle may name: what numpy needs to rebuild an array. The official
# files (Python 2, protocol 2) name _reconstruct, ndarray and dtype under numpy.core; a copy
# re-pickled by numpy 2 names numpy._core, and one re-pickled with protocol 5 names _frombuffer;
# one re-pickled with protocol 2 by Python 3 names _codecs.encode for its bytes (as _latin1_bytes).
_CIFAR_GLOBALS: dict[tuple[str, str], Any] = {
    (module, "_reconstruct"): _np_multiarray._reconstruct for module in ("numpy.core.multiarray", "numpy._core.multiarray")
} | {
    (module, "_frombuffer"): _np_numeric._frombuffer for module in ("numpy.core.numeric", "numpy._core.numeric")
} | {("numpy", "ndarray"): np.ndarray, ("numpy", "dtype"): np.dtype, ("_codecs", "encode"): _latin1_bytes}


class _CifarUnpickler(pickle.Unpickler):
    """Plain pickle calls any function a file names, so a crafted batch file would run code;
    this one resolves only the numpy constructors in ``_CIFAR_GLOBALS`` and refuses the rest."""

    def find_class(self, module: str, name: str) -> Any:
        try:
            return _CIFAR_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"it names {module}.{name}, which a CIFAR file never needs") from None


def _unpickle_cifar(path: Path) -> Any:
    """The object in a CIFAR pickle, read safely; latin1 decodes the Python 2 strings as torchvision does."""
    try:
        with open_regular(path) as f:  # a FIFO in a batch's place fails here instead of blocking
            return _CifarUnpickler(f, encoding="latin1").load()
    except Exception as err:  # noqa: BLE001 - unpickling arbitrary bytes raises anything
        why = str(err).strip().splitlines()[0][:160] if str(err).strip() else type(err).__name__
        raise DataNotFoundError(f"CIFAR file {path} is corrupt or unsafe, refused to load it: {why}") from None


def _cifar_field(entry: Any, key: str, path: Path) -> Any:
    """``entry[key]``, whether the file's keys decoded to str or stayed bytes."""
    if isinstance(entry, dict):
        for k in (key, key.encode("latin1")):
            if k in entry:
                return entry[k]
    raise DataNotFoundError(f"CIFAR file {path} has no '{key}' entry; it is not a CIFAR batch")


def _read_cifar_batch(path: Path, label_key: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """One batch file: images (N, 3, 32, 32) uint8 and labels (N,) int64, checked for shape and range."""
    entry = _unpickle_cifar(path)
    data, labels = _cifar_field(entry, "data", path), _cifar_field(entry, label_key, path)
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3 * 32 * 32):
        what = f"{data.dtype} {data.shape}" if isinstance(data, np.ndarray) else type(data).__name__
        raise DataNotFoundError(f"CIFAR file {path}: data is {what}, not uint8 (N, 3072)")
    labels = np.asarray(labels) if isinstance(labels, list | np.ndarray) else np.empty(0, dtype=object)
    if labels.ndim != 1 or labels.dtype.kind not in "iu" or len(labels) != len(data):
        raise DataNotFoundError(f"CIFAR file {path}: {label_key} is not {len(data)} integer labels, one per image")
    if len(labels) and (labels.min() < 0 or labels.max() >= num_classes):
        raise DataNotFoundError(f"CIFAR file {path}: labels outside 0..{num_classes - 1}")
    return data.reshape(-1, 3, 32, 32), labels.astype(np.int64)


def _cifar_loader(cls: type, label_key: str, num_classes: int) -> Callable[[Path, bool, bool], tuple[Tensor, Tensor]]:
    """Reads torchvision's layout with robench's own safe reader, official md5s or not."""

    def load(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
        if download:  # torchvision md5-checks every file against the release before it unpickles one
            cls(str(root), train=train, download=True)
        files = [root / cls.base_folder / fname for fname, _ in (cls.train_list if train else cls.test_list)]
        parts = [_read_cifar_batch(path, label_key, num_classes) for path in files]
        images = np.concatenate([x for x, _ in parts])
        labels = np.concatenate([y for _, y in parts])
        return torch.from_numpy(images), torch.from_numpy(labels)

    return load


def _cifar_classes(cls: type, num_classes: int) -> Callable[[Path], list[str]]:
    def classes(root: Path) -> list[str]:
        path = root / cls.base_folder / cls.meta["filename"]
        names = _cifar_field(_unpickle_cifar(path), cls.meta["key"], path)
        if not (isinstance(names, list) and len(names) == num_classes and all(isinstance(n, str) for n in names)):
            raise DataNotFoundError(f"CIFAR file {path}: {cls.meta['key']} is not {num_classes} class names")
        return names

    return classes


def _mnist_load(root: Path, train: bool, download: bool) -> tuple[Tensor, Tensor]:
    ds = datasets.MNIST(str(root), train=train, download=download)
    return ds.data.unsqueeze(1).contiguous(), ds.targets.to(torch.int64)


_CIFAR10 = datasets.CIFAR10
_CIFAR100 = datasets.CIFAR100

DATASETS: Registry[DatasetInfo] = Registry("dataset")
for _info in (
    DatasetInfo(
        "cifar10", 3, 32, 10, (0.4914, 0.4822, 0.4465), (0.2470, 0.2435, 0.2616), _CIFAR10.base_folder,
        {name: md5 for name, md5 in _CIFAR10.train_list + _CIFAR10.test_list} | {"batches.meta": _CIFAR10.meta["md5"]},
        "www.cs.toronto.edu", _cifar_loader(_CIFAR10, "labels", 10), _cifar_classes(_CIFAR10, 10),
    ),
    DatasetInfo(
        "cifar100", 3, 32, 100, (0.5071, 0.4865, 0.4409), (0.2673, 0.2564, 0.2762), _CIFAR100.base_folder,
        {name: md5 for name, md5 in _CIFAR100.train_list + _CIFAR100.test_list} | {"meta": _CIFAR100.meta["md5"]},
        "www.cs.toronto.edu", _cifar_loader(_CIFAR100, "fine_labels", 100), _cifar_classes(_CIFAR100, 100),
    ),
    DatasetInfo(
        # md5s of the uncompressed idx files of the official release (torchvision lists the .gz ones)
        "mnist", 1, 28, 10, (0.1307,), (0.3081,), "MNIST/raw",
        {
            "train-images-idx3-ubyte": "6bbc9ace898e44ae57da46a324031adb",
            "train-labels-idx1-ubyte": "a25bea736e30d166cdddb491f175f624",
            "t10k-images-idx3-ubyte": "2646ac647ad5339dbf082846283269ea",
            "t10k-labels-idx1-ubyte": "27ae3e4e09519cfbb04c329615203637",
        },
        "ossci-datasets.s3.amazonaws.com", _mnist_load, lambda root: [str(d) for d in range(10)],
    ),
):
    DATASETS.add(_info.name, _info)


def dataset_names() -> list[str]:
    return DATASETS.names()


def dataset_info(name: str) -> DatasetInfo:
    return DATASETS.get(name)


def cache_dir() -> Path:
    """Per-user cache for downloads: $XDG_CACHE_HOME/robench/data or ~/.cache/robench/data."""
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base) / "robench" / "data"


def candidate_roots(data_dir: str | os.PathLike | None) -> list[Path]:
    """Where to look, in order: the explicit dir, $ROBENCH_DATA, the user cache."""
    roots = [Path(data_dir)] if data_dir else []
    if os.environ.get("ROBENCH_DATA"):
        roots.append(Path(os.environ["ROBENCH_DATA"]))
    roots.append(cache_dir())
    return roots


def _present(info: DatasetInfo, root: Path) -> bool:
    return all((root / info.folder / name).is_file() for name in info.official_md5)


def _network_reaches(host: str, timeout: float = 3.0) -> bool:
    try:
        with socket.create_connection((host, 443), timeout=timeout):
            return True
    except OSError:
        return False


def resolve_root(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> Path:
    """The first root that holds ``name``; downloads into the cache dir when none does and the
    network answers; otherwise a DataNotFoundError that says where it looked and what to do."""
    info = dataset_info(name)
    roots = candidate_roots(data_dir)
    for root in roots:
        if _present(info, root):
            return root
    target = cache_dir()
    if download and _network_reaches(info.download_host):
        try:
            info.loader(target, True, True)
            info.loader(target, False, True)
        except (OSError, RuntimeError) as err:
            raise DataNotFoundError(f"downloading {name} into {target} failed: {err}") from None
        if _present(info, target):
            return target
    looked = ", ".join(str(r / info.folder) for r in roots)
    raise DataNotFoundError(
        f"dataset {name} not found (looked in {looked}) and it cannot be downloaded here; "
        f"put torchvision's {info.folder}/ under a folder and pass --data-dir or set ROBENCH_DATA"
    )


_provenance_cache: dict[tuple[str, str, float], Provenance] = {}
_warned: set[str] = set()


def provenance(name: str, root: Path) -> Provenance:
    """Official or not, and the fingerprint; warns once per dataset when it is not official."""
    info = dataset_info(name)
    folder = root / info.folder
    key = (name, str(folder.resolve()), max((folder / n).stat().st_mtime for n in info.official_md5))
    if key not in _provenance_cache:
        digest = hashlib.sha256()
        for fname in sorted(info.official_md5):
            digest.update(f"{fname}:{file_sha256(folder / fname)}\n".encode())
        official = all(check_integrity(str(folder / f), md5) for f, md5 in info.official_md5.items())
        _provenance_cache[key] = Provenance(name, official, digest.hexdigest())
    prov = _provenance_cache[key]
    if not prov.official and name not in _warned:
        _warned.add(name)
        warnings.warn(
            f"{name} files in {folder} do not match the official release (md5); loading them anyway "
            "and recording data_official=false in every checkpoint and result",
            stacklevel=2,
        )
    return prov


def load_split(name: str, train: bool, data_dir: str | os.PathLike | None = None, download: bool = True) -> tuple[Split, Provenance]:
    """The whole split as uint8 tensors, with its provenance."""
    info = dataset_info(name)
    root = resolve_root(name, data_dir, download)
    prov = provenance(name, root)
    try:
        images, labels = info.loader(root, train, False)
    except (OSError, RuntimeError, ValueError, KeyError, EOFError) as err:
        raise DataNotFoundError(f"dataset {name} under {root} is unreadable: {err}") from None
    return Split(images, labels), prov


def class_names(name: str, data_dir: str | os.PathLike | None = None, download: bool = True) -> list[str]:
    """The class names in label order, from the dataset's own meta file (read as safely as its
    batches); MNIST's are its digits."""
    return dataset_info(name).classes(resolve_root(name, data_dir, download))


def augment(images: Tensor, generator: torch.Generator, pad: int = 4) -> Tensor:
    """Random crop with ``pad``-pixel zero padding and random horizontal flip, for a whole batch.

    images: (N, C, H, W) any dtype; the random offsets and flips come from ``generator`` (on the
    images' device), so a seed reproduces the augmentation.
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dev = images.device
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator, device=dev)
    flip = torch.rand(n, generator=generator, device=dev) < 0.5
    rows = dy[:, None] + torch.arange(h, device=dev)  # (N, H)
    cols = dx[:, None] + torch.arange(w, device=dev)  # (N, W)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=dev)[:, None, None]
    out = padded.permute(0, 2, 3, 1)[batch, rows[:, :, None], cols[:, None, :]]  # (N, H, W, C)
    return out.permute(0, 3, 1, 2).contiguous()


def to_float(images: Tensor) -> Tensor:
    """uint8 (N, C, H, W) -> float32 in [0, 1]."""
    return images.float().div_(255)
