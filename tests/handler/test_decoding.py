import io
import json

import numpy as np
import pytest
import torch
from PIL import Image

from handler.decoding import InputError, InputSpec, client_id_of, decode_item

SPEC = InputSpec(in_chans=1, img_size=28, max_bytes=100_000)
SPEC_RGB = InputSpec(in_chans=3, img_size=32, max_bytes=100_000)


def _png(arr: np.ndarray, mode: str, fmt: str = "PNG") -> bytes:
    buf = io.BytesIO()
    Image.fromarray(arr, mode).save(buf, format=fmt)
    return buf.getvalue()


def _npy(arr: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, arr)
    return buf.getvalue()


def test_png_grey_roundtrip():
    arr = (np.arange(28 * 28) % 256).astype(np.uint8).reshape(28, 28)
    t = decode_item({"body": _png(arr, "L")}, SPEC)
    assert t.shape == (1, 28, 28) and t.dtype == torch.float32
    assert torch.allclose(t[0], torch.from_numpy(arr).float() / 255)


def test_rgb_png_jpeg_and_channel_last_npy():
    arr = np.random.default_rng(0).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    t = decode_item({"data": _png(arr, "RGB")}, SPEC_RGB)
    assert torch.allclose(t.permute(1, 2, 0), torch.from_numpy(arr).float() / 255)
    assert decode_item({"body": _png(arr, "RGB", "JPEG")}, SPEC_RGB).shape == (3, 32, 32)
    assert torch.allclose(decode_item({"body": _npy(arr)}, SPEC_RGB), t)


def test_npy_and_json_payloads():
    arr = np.random.default_rng(1).random((28, 28), dtype=np.float32)
    assert torch.allclose(decode_item({"body": _npy(arr)}, SPEC)[0], torch.from_numpy(arr))
    assert torch.allclose(decode_item({"body": {"data": arr.tolist()}}, SPEC)[0], torch.from_numpy(arr))
    assert torch.allclose(decode_item({"body": json.dumps(arr[None].tolist()).encode()}, SPEC)[0], torch.from_numpy(arr))
    assert decode_item({"body": _npy(arr[None, None])}, SPEC).shape == (1, 28, 28)


@pytest.mark.parametrize("row,status,match", [
    ({"body": b""}, 400, "empty"),
    ({}, 400, "empty request"),
    ({"body": b"hello, not an image"}, 415, "unsupported payload"),
    ({"body": b"\x89PNG\r\n\x1a\nbroken"}, 415, "not a readable image"),
    ({"body": b"x" * 200_000}, 413, "exceeds"),
    ({"body": {"data": [[0.5] * 27] * 28}}, 400, "shape"),
    ({"body": {"data": [[1, 2], [3]]}}, 400, "rectangular"),
    ({"body": {"pixels": []}}, 400, "nested list"),
    ({"body": {"data": [[2.0] * 28] * 28}}, 400, r"\[0, 1\]"),
    ({"body": {"data": [[float("nan")] * 28] * 28}}, 400, "NaN"),
])
def test_bad_items_get_clear_errors(row, status, match):
    with pytest.raises(InputError, match=match) as info:
        decode_item(row, SPEC)
    assert info.value.status == status


def test_wrong_size_and_mode_are_refused_before_decoding():
    with pytest.raises(InputError, match="32x32"):
        decode_item({"body": _png(np.zeros((32, 32), np.uint8), "L")}, SPEC)
    with pytest.raises(InputError, match="mode 'RGB'"):
        decode_item({"body": _png(np.zeros((28, 28, 3), np.uint8), "RGB")}, SPEC)
    # a decompression bomb: a 20000x20000 PNG of a few KB is refused from its header alone
    # (400 MB of pixels in a 0.4 MB file)
    bomb = _png(np.zeros((20000, 20000), np.uint8), "L")
    assert len(bomb) < 1_000_000
    with pytest.raises(InputError, match="too large") as info:
        decode_item({"body": bomb}, InputSpec(1, 28, max_bytes=1_000_000))
    assert info.value.status == 413
    # below PIL's own bomb limit, the size check still refuses it from the header alone
    big = _png(np.zeros((4000, 4000), np.uint8), "L")
    with pytest.raises(InputError, match="4000x4000"):
        decode_item({"body": big}, InputSpec(1, 28, max_bytes=1_000_000))


def test_npy_with_pickled_objects_is_refused():
    buf = io.BytesIO()
    np.save(buf, np.array([{"a": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(InputError):
        decode_item({"body": buf.getvalue()}, SPEC)


def test_client_id_from_header_or_grpc_key():
    assert client_id_of({}, {"x-client-id": "alice"}, "X-Client-Id", "client_id") == "alice"
    assert client_id_of({"client_id": b"bob"}, {}, "X-Client-Id", "client_id") == "bob"
    assert client_id_of({}, {}, "X-Client-Id", "client_id") is None
