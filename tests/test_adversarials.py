import io

import numpy as np
import pytest
import torch

from robench.adversarials import Store, decode_dense, encode, encode_dense, from_pixels, images_sha256, read_npz, rebuild
from robench.attacks.candidates import paint, pixel_records
from robench.errors import ResultError


def _images(n=4, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randint(0, 256, (n, 3, 8, 8), generator=g).float() / 255


def test_dense_rebuild_is_exact_even_where_clean_plus_delta_rounds_away():
    x = _images()
    g = torch.Generator().manual_seed(1)
    adv = (x + 0.03 * torch.randn(x.shape, generator=g)).clamp(0, 1)
    # bright pixels pushed to tiny values: clean + (adv - clean) cannot land on them in float32
    adv.view(-1)[:50] = 1e-9
    x.view(-1)[:50] = 0.9
    arrays = encode_dense(x, adv)
    assert len(arrays["fix_index"]) > 0  # the case the fix-up exists for occurred
    assert torch.equal(decode_dense(x, arrays), adv)


def test_fgsm_signs_rebuild_exactly_and_are_int8():
    x = _images()
    eps = 8 / 255
    sign = torch.sign(torch.randn(x.shape, generator=torch.Generator().manual_seed(2)))
    adv = (x + eps * sign).clamp(0, 1)
    arrays = encode_dense(x, adv, eps)
    assert arrays["sign"].dtype == np.int8
    assert torch.equal(decode_dense(x, arrays), adv)
    # a dense perturbation that is not ±eps falls back to deltas with the same eps given
    other = (x + 0.5 * eps * sign).clamp(0, 1)
    assert "delta" in encode_dense(x, other, eps)
    assert torch.equal(decode_dense(x, encode_dense(x, other, eps)), other)


def test_pixel_records_rebuild_and_need_no_arrays():
    x = _images()
    cands = torch.tensor([[[1.2, 3.7, 0.1, 0.2, 0.3]], [[0, 0, 1, 1, 1]], [[7, 7, 0, 0, 0]], [[2, 5, 0.5, 0.25, 1]]])
    adv = paint(x, cands)
    pixels = pixel_records(cands)
    assert encode(x, adv, pixels) == {}
    assert torch.equal(rebuild(x, [{"pixels": p} for p in pixels], None), adv)
    # an ensemble image no pixel member broke keeps its clean image
    assert torch.equal(from_pixels(x, [pixels[0], None, None, None])[1:], x[1:])


def test_rebuild_refuses_a_repeat_with_nothing_stored():
    with pytest.raises(ResultError, match="neither"):
        rebuild(_images(), [{"index": 0}], None)


def test_store_keeps_identical_repeats_once_and_round_trips(tmp_path):
    x = _images()
    adv = (x + 0.01).clamp(0, 1)
    store = Store(tmp_path / "r.adv.npz")
    store.put("s0r0", encode_dense(x, adv))
    store.put("s0r1", encode_dense(x, adv))
    store.put("s1r0", encode_dense(x, (x - 0.01).clamp(0, 1)))
    block = store.write(tmp_path / "r.json")
    assert block and "s0r1/delta" not in store.arrays and "s0r1/same_as" in store.arrays
    assert block["file"] == f"r.{block['sha256'][:12]}.adv.npz" and store.path == tmp_path / block["file"]
    loaded = Store.load(tmp_path / block["file"])
    assert torch.equal(decode_dense(x, loaded.get("s0r1")), adv)
    assert loaded.get("s9r9") is None
    assert images_sha256(decode_dense(x, loaded.get("s0r0"))) == images_sha256(adv)


def test_npz_with_pickled_objects_or_garbage_is_refused(tmp_path):
    path = tmp_path / "evil.adv.npz"
    buf = io.BytesIO()
    np.savez(buf, payload=np.array([{"a": 1}], dtype=object))
    path.write_bytes(buf.getvalue())
    with pytest.raises(ResultError, match="corrupt"):
        read_npz(path)
    path.write_bytes(b"not a zip")
    with pytest.raises(ResultError, match="corrupt"):
        read_npz(path)
