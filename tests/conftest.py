"""Shared fixtures: the real foolbox samples and tiny fake dataset folders in torchvision layout."""

from __future__ import annotations

import json
import pickle
import shutil
import struct
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image


def foolbox_samples(dataset: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The 20 real test images foolbox ships for ``dataset`` (cifar10, cifar100, mnist) as uint8
    (20, C, H, W) and their labels, in test-set order."""
    import foolbox

    folder = Path(foolbox.__file__).parent / "data"
    files = sorted(folder.glob(f"{dataset}_*_*.png"), key=lambda p: int(p.stem.split("_")[1]))
    arrays = [np.asarray(Image.open(f)) for f in files]
    labels = [int(f.stem.split("_")[2]) for f in files]
    x = torch.from_numpy(np.stack(arrays))
    x = x.unsqueeze(1) if x.dim() == 3 else x.permute(0, 3, 1, 2)
    return x.contiguous(), torch.tensor(labels)


def _tile(images: torch.Tensor, labels: torch.Tensor, n: int, seed: int) -> tuple[np.ndarray, list[int]]:
    """``n`` images drawn (with small pixel noise) from the samples, so fakes are learnable."""
    g = torch.Generator().manual_seed(seed)
    idx = torch.randint(0, len(images), (n,), generator=g)
    noise = torch.randint(-8, 9, (n, *images.shape[1:]), generator=g)
    x = (images[idx].int() + noise).clamp(0, 255).to(torch.uint8)
    return x.numpy(), labels[idx].tolist()


def write_fake_cifar(root: Path, name: str = "cifar10", n_train: int = 200, n_test: int = 60) -> Path:
    """A torchvision-layout CIFAR folder built from foolbox's samples; md5s cannot match."""
    from torchvision import datasets

    cls = datasets.CIFAR10 if name == "cifar10" else datasets.CIFAR100
    images, labels = foolbox_samples(name)
    folder = root / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    key = "labels" if name == "cifar10" else "fine_labels"
    splits = [(f, n_train // len(cls.train_list)) for f, _ in cls.train_list] + [(f, n_test) for f, _ in cls.test_list]
    for i, (fname, n) in enumerate(splits):
        x, y = _tile(images, labels, n, seed=i)
        with open(folder / fname, "wb") as f:
            pickle.dump({"data": x.reshape(n, -1), key: y}, f)
    classes = 10 if name == "cifar10" else 100
    meta_key = cls.meta["key"]
    with open(folder / cls.meta["filename"], "wb") as f:
        pickle.dump({meta_key: [f"class{i}" for i in range(classes)]}, f)
    return root


def write_fake_mnist(root: Path, n_train: int = 200, n_test: int = 60) -> Path:
    images, labels = foolbox_samples("mnist")
    raw = root / "MNIST" / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n, seed in (("train", n_train, 0), ("t10k", n_test, 1)):
        x, y = _tile(images, labels, n, seed)
        (raw / f"{prefix}-images-idx3-ubyte").write_bytes(struct.pack(">IIII", 2051, n, 28, 28) + x.reshape(n, -1).tobytes())
        (raw / f"{prefix}-labels-idx1-ubyte").write_bytes(struct.pack(">II", 2049, n) + bytes(y))
    return root


@pytest.fixture
def fake_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A data root with fake cifar10, cifar100 and mnist; $ROBENCH_DATA and the cache are cleared."""
    root = tmp_path / "data"
    write_fake_cifar(root, "cifar10")
    write_fake_cifar(root, "cifar100")
    write_fake_mnist(root)
    monkeypatch.delenv("ROBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    return root


@pytest.fixture(autouse=True)
def _no_download(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests never reach the network, whatever machine they run on."""
    monkeypatch.setattr("robench.data._network_reaches", lambda host, timeout=3.0: False)


COMMITTED = Path(__file__).resolve().parents[1] / "attacks"


def committed_result(stem: str, folder: str = "") -> Path:
    """The committed result ``attacks/[folder/]<stem>-<hash>.json`` (names end in a settings hash)."""
    (path,) = [p for p in (COMMITTED / folder).glob(f"{stem}*.json") if stem in (p.stem, p.stem.rsplit("-", 1)[0])]
    return path


def copy_result(src: Path, dst: Path, name: str) -> Path:
    """Copy result ``src/<name>.json`` and its ``.adv.npz`` (when there is one) into ``dst``."""
    from robench.adversarials import npz_files

    shutil.copy(src / f"{name}.json", dst / f"{name}.json")
    for npz in npz_files(src / f"{name}.json"):
        shutil.copy(npz, dst / npz.name)
    return dst / f"{name}.json"


def adversarials_file(result: Path) -> Path:
    """The ``.adv.npz`` a result's JSON names."""
    from robench.adversarials import named_npz

    return named_npz(result, json.loads(result.read_text())["adversarials"])


def edit_json(path: Path, fn: Any) -> None:
    """Rewrite the JSON file ``path`` after ``fn`` changed its parsed content in place."""
    data = json.loads(path.read_text())
    fn(data)
    path.write_text(json.dumps(data))


def strip_adversarials(result: dict) -> None:
    """Make a parsed result look like one from before robench stored adversarials."""
    for setting in result["settings"]:
        for rep in setting["repeats"]:
            rep.pop("stored", None), rep.pop("adversarial_sha256", None)
            for rec in rep["images"]:
                rec.pop("pixels", None)
    result.pop("adversarials", None)


def train_tiny_lenet(tmp_path_factory: Any) -> tuple[Path, Path]:
    """A fake CIFAR-10 root and a LeNet-5 (ReLU) trained on it for 4 epochs: (data root, checkpoint)."""
    from robench.config import TrainConfig
    from robench.train import train

    root = write_fake_cifar(tmp_path_factory.mktemp("data"), "cifar10")
    ck = tmp_path_factory.mktemp("ck") / "lenet5-relu-cifar10-s0.pt"
    train(TrainConfig(model="lenet5", act="relu", dataset="cifar10", epochs=4, batch_size=32), out=ck, data_dir=root,
          device="cpu")
    return root, ck


def interrupt_run(run: Any, out: Path, data_dir: Path, stop_at: Any = lambda label, r: True) -> None:
    """Run ``run`` into ``out`` and press Ctrl-C after the first finished repeat ``stop_at(label, r)``
    accepts, as a user stopping it would."""
    from robench.attacks.runner import run_attack

    def stop(label: str, r: int) -> None:
        if stop_at(label, r):
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        run_attack(run, out=out, data_dir=data_dir, device="cpu", on_repeat=stop)


@pytest.fixture
def clean_registries(monkeypatch: pytest.MonkeyPatch) -> None:
    """Registries as they were: what a test registers, or which plugins it finds, does not leak."""
    from robench.activations import ACTIVATIONS
    from robench.attacks import ATTACKS
    from robench.models import MODELS

    for reg in (ACTIVATIONS, MODELS, ATTACKS):
        monkeypatch.setattr(reg, "_items", dict(reg._items))
        monkeypatch.setattr(reg, "_imported", dict(reg._imported))
        monkeypatch.setattr(reg, "external", set(reg.external))
        monkeypatch.setattr(reg, "_pending", None)


PGD = "strong-seeds-mlp"  # committed PGD Linf results of the MLP, five seeds per activation, four budgets


def pgd_results(folder: Path, acts: tuple[str, ...] = ("relu", "sapl"), seeds: tuple[int, ...] = (0, 1, 2)) -> Path:
    """Copies of the committed PGD Linf results of ``acts`` x ``seeds`` (no other attack, so the
    worst case is PGD's own)."""
    folder.mkdir(parents=True, exist_ok=True)
    for act in acts:
        for seed in seeds:
            (src,) = (COMMITTED / PGD).glob(f"mlp-{act}-mnist-s{seed}--pgd-linf-seed0-*.json")
            copy_result(src.parent, folder, src.stem)
    return folder


def robust_by_hand(path: Path) -> dict[float, float]:
    """Budget -> clean accuracy x images no repeat fooled / images attacked, read from the JSON."""
    res = json.loads(path.read_text())
    out = {}
    for setting in res["settings"]:
        attacked = {r["index"] for r in setting["repeats"][0]["images"]}
        fooled = {r["index"] for rep in setting["repeats"] for r in rep["images"] if r["success"]}
        out[round(setting["config"]["epsilons"][0], 9)] = \
            res["checkpoint"]["clean_test_accuracy"] * (len(attacked) - len(fooled & attacked)) / len(attacked)
    return out
