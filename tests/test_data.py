import os

import pytest
import torch

from robench.data import augment, candidate_roots, load_split, resolve_root
from robench.errors import DataNotFoundError


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
