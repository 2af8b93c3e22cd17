import json
import os
import pickle

import numpy as np
import pytest
import torch
from torchvision import datasets

from robench.data import augment, candidate_roots, class_names, dataset_info, load_split, resolve_root
from robench.errors import DataNotFoundError

_TV = {"cifar10": datasets.CIFAR10, "cifar100": datasets.CIFAR100}


def write_tiny_cifar(root, name, keys=str, n_train=2, n_test=3):
    """Every file of the release (so the folder is found), each a tiny batch made with numpy; the
    keys as str (what latin1 decoding of the official files gives) or bytes. Returns the folder."""
    cls, info = _TV[name], dataset_info(name)
    label_key = "labels" if name == "cifar10" else "fine_labels"
    folder = root / info.folder
    folder.mkdir(parents=True, exist_ok=True)
    test_names = {f for f, _ in cls.test_list}
    for i, fname in enumerate(sorted(info.official_md5)):
        if fname == cls.meta["filename"]:
            entry = {cls.meta["key"]: [f"class{c}" for c in range(info.num_classes)]}
        else:
            n = n_test if fname in test_names else n_train
            data = np.random.default_rng(i).integers(0, 256, (n, 3072), dtype=np.uint8)
            entry = {"data": data, label_key: [(7 * i + k) % info.num_classes for k in range(n)], "batch_label": fname}
        (folder / fname).write_bytes(pickle.dumps({k if keys is str else k.encode(): v for k, v in entry.items()}))
    return folder


def _get(entry, key):
    return entry[key] if key in entry else entry[key.encode()]


def _expected(folder, name, train):
    """Images (N, 3, 32, 32) and labels of a split, read back with plain pickle from files the test wrote."""
    cls = _TV[name]
    entries = [pickle.loads((folder / f).read_bytes()) for f, _ in (cls.train_list if train else cls.test_list)]
    label_key = "labels" if name == "cifar10" else "fine_labels"
    images = np.concatenate([_get(e, "data") for e in entries]).reshape(-1, 3, 32, 32)
    return torch.from_numpy(images), sum((_get(e, label_key) for e in entries), [])


def test_load_fake_cifar10_is_not_official(fake_data, monkeypatch):
    monkeypatch.setattr("robench.data._warned", set())  # the warning comes once per process
    with pytest.warns(UserWarning, match="official"):
        split, prov = load_split("cifar10", train=True, data_dir=fake_data)
    assert split.images.shape == (200, 3, 32, 32) and split.images.dtype == torch.uint8
    assert split.labels.dtype == torch.int64 and split.labels.max() < 10
    assert prov.official is False and len(prov.fingerprint) == 64
    test, _ = load_split("cifar10", train=False, data_dir=fake_data)
    assert test.images.shape[0] == 60


def test_cifar100_and_mnist(fake_data):
    split, prov = load_split("cifar100", train=False, data_dir=fake_data)
    assert split.images.shape == (60, 3, 32, 32) and split.labels.max() < 100
    split, prov = load_split("mnist", train=True, data_dir=fake_data)
    assert split.images.shape == (200, 1, 28, 28)
    assert prov.official is False  # fake files cannot match the official md5s


def test_fingerprint_changes_with_content(fake_data, tmp_path):
    from tests.conftest import write_fake_cifar

    _, a = load_split("cifar10", train=False, data_dir=fake_data)
    other = write_fake_cifar(tmp_path / "other", "cifar10", n_train=100)
    _, b = load_split("cifar10", train=False, data_dir=other)
    assert a.fingerprint != b.fingerprint


def test_resolution_order(fake_data, tmp_path, monkeypatch):
    monkeypatch.setenv("ROBENCH_DATA", str(fake_data))
    assert resolve_root("cifar10", None) == fake_data
    empty = tmp_path / "empty"
    empty.mkdir()
    assert resolve_root("cifar10", empty) == fake_data  # explicit dir first, then the env var
    assert candidate_roots(empty)[:2] == [empty, fake_data]


def test_missing_dataset_says_where_it_looked(tmp_path, monkeypatch):
    monkeypatch.delenv("ROBENCH_DATA", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    with pytest.raises(DataNotFoundError, match=r"cifar10 not found \(looked in .*nowhere.*--data-dir"):
        load_split("cifar10", train=False, data_dir=tmp_path / "nowhere")


def test_unknown_dataset():
    with pytest.raises(ValueError, match="unknown dataset 'svhn'"):
        load_split("svhn", train=False)


def test_augment_crops_and_flips_in_batch():
    x = torch.arange(2 * 1 * 8 * 8, dtype=torch.float32).reshape(2, 1, 8, 8)
    g = torch.Generator().manual_seed(0)
    out = augment(x, g, pad=2)
    assert out.shape == x.shape
    # every output is a shifted (and maybe flipped) window of the zero-padded input
    padded = torch.nn.functional.pad(x, (2, 2, 2, 2))
    for i in range(2):
        windows = [padded[i, :, dy:dy + 8, dx:dx + 8] for dy in range(5) for dx in range(5)]
        windows += [w.flip(-1) for w in windows]
        assert any(torch.equal(out[i], w) for w in windows)
    again = augment(x, torch.Generator().manual_seed(0), pad=2)
    assert torch.equal(out, again)


def test_real_data_when_available():
    root = os.environ.get("ROBENCH_DATA")
    if not root or not os.path.isdir(os.path.join(root, "cifar-10-batches-py")):
        pytest.skip("offline CIFAR-10 not unpacked here")
    split, prov = load_split("cifar10", train=False, data_dir=root)
    assert split.images.shape == (10000, 3, 32, 32)
    assert split.labels[:10].tolist() == [3, 8, 8, 0, 6, 6, 1, 6, 3, 1]


@pytest.mark.parametrize("name", ["cifar10", "cifar100"])
@pytest.mark.parametrize("keys", [str, bytes])
def test_tiny_cifar_loads_exactly(name, keys, tmp_path):
    folder = write_tiny_cifar(tmp_path, name, keys=keys)
    for train, n in ((True, 2 * len(_TV[name].train_list)), (False, 3)):
        split, _ = load_split(name, train=train, data_dir=tmp_path)
        images, labels = _expected(folder, name, train)
        assert split.images.shape == (n, 3, 32, 32) and split.images.dtype == torch.uint8
        assert torch.equal(split.images, images) and split.labels.dtype == torch.int64
        assert split.labels.tolist() == labels
    assert class_names(name, tmp_path) == [f"class{c}" for c in range(dataset_info(name).num_classes)]


def test_class_names_of_mnist(fake_data):
    assert class_names("mnist", fake_data) == [str(d) for d in range(10)]


class _Evil:
    """Unpickled by plain pickle, this opens (creates) ``marker``: code a data file must never run."""

    def __init__(self, marker):
        self.marker = marker

    def __reduce__(self):
        return (open, (self.marker, "w"))


def _evil_batch(marker):
    data = np.zeros((3, 3072), dtype=np.uint8)
    return pickle.dumps({"data": data, "labels": [0, 1, 2], "batch_label": _Evil(str(marker))})


def test_evil_pickle_is_live_under_plain_pickle(tmp_path):
    """The attack below is real: plain pickle (what torchvision uses) runs it."""
    marker = tmp_path / "ran"
    pickle.loads(_evil_batch(marker))
    assert marker.exists()


def test_malicious_test_batch_runs_no_code(tmp_path):
    folder = write_tiny_cifar(tmp_path / "data", "cifar10")
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(_evil_batch(marker))
    load_split("cifar10", train=True, data_dir=tmp_path / "data")  # the clean files still load
    with pytest.raises(DataNotFoundError) as err:
        load_split("cifar10", train=False, data_dir=tmp_path / "data")
    message = str(err.value)
    assert "test_batch" in message and "open" in message and "\n" not in message
    assert not marker.exists()
    (folder / "batches.meta").write_bytes(_evil_batch(marker))
    with pytest.raises(DataNotFoundError, match="batches.meta"):
        class_names("cifar10", tmp_path / "data")
    assert not marker.exists()


def test_malicious_batch_is_one_line_from_the_cli(tmp_path):
    from typer.testing import CliRunner

    from robench.cli import app

    folder = write_tiny_cifar(tmp_path / "data", "cifar10", n_train=40)
    marker = tmp_path / "pwned"
    (folder / "test_batch").write_bytes(_evil_batch(marker))
    out = tmp_path / "ck" / "m.pt"
    r = CliRunner().invoke(app, ["train", "--dataset", "cifar10", "--epochs", "1", "--batch-size", "32", "--device", "cpu",
                                 "--data-dir", str(tmp_path / "data"), "--out", str(out), "--quiet"])
    lines = [line for line in r.output.splitlines() if line.strip()]
    assert r.exit_code == 1 and len(lines) == 1 and "test_batch" in lines[0], r.output
    assert not marker.exists() and not out.exists()


def _entry(**fields):
    base = {"data": np.zeros((3, 3072), dtype=np.uint8), "labels": [0, 1, 2]}
    return pickle.dumps({k: v for k, v in (base | fields).items() if v is not None})


@pytest.mark.parametrize("content,msg", [
    (_entry()[:-40], "corrupt"),  # truncated
    (b"not a pickle at all", "corrupt"),
    (pickle.dumps([1, 2, 3]), "no 'data' entry"),
    (_entry(labels=None), "no 'labels' entry"),
    (_entry(data=np.zeros((3, 3, 32, 32), dtype=np.uint8)), "not uint8 \\(N, 3072\\)"),
    (_entry(data=np.zeros((3, 3072), dtype=np.float32)), "not uint8"),
    (_entry(data=[0] * 3072), "data is list"),
    (_entry(labels=[0, 1]), "not 3 integer labels"),
    (_entry(labels=["a", "b", "c"]), "not 3 integer labels"),
    (_entry(labels=[0, 1, 10]), "labels outside 0..9"),
    (_entry(labels=[0, -1, 2]), "labels outside 0..9"),
])
def test_broken_batch_is_a_clear_error(tmp_path, content, msg):
    folder = write_tiny_cifar(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(content)
    with pytest.raises(DataNotFoundError, match=msg) as err:
        load_split("cifar10", train=False, data_dir=tmp_path)
    assert "test_batch" in str(err.value) and "\n" not in str(err.value)


def test_provenance_stores_no_path(fake_data):
    _, prov = load_split("cifar10", train=False, data_dir=fake_data)
    stored = prov.to_dict()
    assert set(stored) == {"dataset", "data_official", "data_sha256"}
    assert str(fake_data) not in json.dumps(stored)


def test_real_cifar10_matches_torchvision():
    root = os.environ.get("ROBENCH_DATA")
    if not root or not os.path.isdir(os.path.join(root, "cifar-10-batches-py")):
        pytest.skip("offline CIFAR-10 not unpacked here")

    class Trusting(datasets.CIFAR10):  # these files are trusted: torchvision's plain pickle is the reference
        def _check_integrity(self) -> bool:
            return True

    reference = Trusting(root, train=False)
    split, _ = load_split("cifar10", train=False, data_dir=root)
    assert torch.equal(split.images, torch.from_numpy(reference.data).permute(0, 3, 1, 2))
    assert split.labels.tolist() == reference.targets
    assert class_names("cifar10", root) == reference.classes


def test_a_batch_repickled_with_protocol_2_loads(tmp_path):
    folder = write_tiny_cifar(tmp_path, "cifar10")
    before, _ = load_split("cifar10", train=False, data_dir=tmp_path)
    with open(folder / "test_batch", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    (folder / "test_batch").write_bytes(pickle.dumps(entry, protocol=2))
    assert b"_codecs" in (folder / "test_batch").read_bytes()  # what the restricted unpickler must allow
    after, _ = load_split("cifar10", train=False, data_dir=tmp_path)
    assert torch.equal(after.images, before.images) and torch.equal(after.labels, before.labels)


def test_codecs_encode_is_allowed_only_to_rebuild_latin1_bytes(tmp_path):
    import codecs

    class _Rot13:
        def __reduce__(self):
            return (codecs.encode, ("payload", "rot13"))

    folder = write_tiny_cifar(tmp_path, "cifar10")
    (folder / "test_batch").write_bytes(pickle.dumps({"data": _Rot13(), "labels": []}, protocol=2))
    with pytest.raises(DataNotFoundError, match="_codecs.encode other than to rebuild latin-1 bytes"):
        load_split("cifar10", train=False, data_dir=tmp_path)
