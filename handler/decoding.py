"""Turn one request item into an image tensor, or a clear per-item error.

Accepted payloads: PNG/JPEG bytes, .npy bytes, and JSON (a nested list, or {"data": nested list}).
Arrays may be (H, W), (C, H, W), (1, C, H, W) or (H, W, C); uint8 values are scaled by 1/255, float values
must already be in [0, 1]. Sizes are checked before pixel data is decoded (no decompression bombs).
numpy is imported only for .npy payloads, so the handler loads with TorchServe's own dependencies.
"""
import io
import json
from dataclasses import dataclass
from typing import Any, Dict, Optional

import torch

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
JPEG_MAGIC = b"\xff\xd8\xff"
NPY_MAGIC = b"\x93NUMPY"


class InputError(Exception):
    """A request item that cannot be scored; answered with `status` for that item only."""

    def __init__(self, message: str, status: int = 400):
        super().__init__(message)
        self.status = status


@dataclass(frozen=True)
class InputSpec:
    in_chans: int
    img_size: int
    max_bytes: int

    @property
    def shape(self):
        return (self.in_chans, self.img_size, self.img_size)


def payload_of(row: Any) -> Any:
    """The item's payload: TorchServe puts raw bodies under "body", form fields / gRPC inputs under their key."""
    if isinstance(row, dict):
        for key in ("data", "body", "instances", "image"):
            if row.get(key) is not None:
                return row[key]
        raise InputError("empty request: send the image as the request body or in a 'data' field")
    return row


def _decode_image(blob: bytes, spec: InputSpec) -> torch.Tensor:
    from PIL import Image, UnidentifiedImageError

    try:
        img = Image.open(io.BytesIO(blob))
    except Image.DecompressionBombError as err:
        raise InputError(f"image is far too large for this model: {err}", 413) from err
    except (UnidentifiedImageError, OSError) as err:
        raise InputError(f"not a readable image: {err}", 415) from err
    width, height = img.size  # known from the header, before any pixel is decoded
    if (height, width) != (spec.img_size, spec.img_size):
        raise InputError(f"image is {width}x{height}; this model takes {spec.img_size}x{spec.img_size}")
    modes = {1: ("L",), 3: ("RGB",)}.get(spec.in_chans, ())
    if img.mode not in modes:
        raise InputError(f"image mode {img.mode!r} does not fit a {spec.in_chans}-channel model; send {modes[0] if modes else 'a supported mode'}")
    try:
        img.load()
    except (OSError, ValueError) as err:
        raise InputError(f"corrupt image: {err}", 400) from err
    pixels = torch.frombuffer(bytearray(img.tobytes()), dtype=torch.uint8)
    return pixels.view(spec.img_size, spec.img_size, spec.in_chans).permute(2, 0, 1).float() / 255.0


def _decode_npy(blob: bytes) -> torch.Tensor:
    try:
        import numpy as np
    except ImportError as err:  # pragma: no cover - numpy ships with every torch install we support
        raise InputError(".npy payloads need numpy on the server; send PNG or JSON", 415) from err
    try:
        arr = np.load(io.BytesIO(blob), allow_pickle=False)
    except (ValueError, OSError, EOFError) as err:
        raise InputError(f"not a readable .npy array: {err}", 415) from err
    if arr.dtype == np.uint8:
        return torch.from_numpy(arr.astype(np.float32) / 255.0)
    if not np.issubdtype(arr.dtype, np.floating) and not np.issubdtype(arr.dtype, np.integer):
        raise InputError(f".npy dtype {arr.dtype} is not numeric")
    return torch.from_numpy(np.ascontiguousarray(arr, dtype=np.float32))


def _decode_json(obj: Any) -> torch.Tensor:
    if isinstance(obj, dict):
        if "data" not in obj:
            raise InputError("JSON body must be a nested list of pixels or {\"data\": nested list}")
        obj = obj["data"]
    try:
        return torch.tensor(obj, dtype=torch.float32)
    except (TypeError, ValueError, RuntimeError) as err:
        raise InputError(f"JSON pixels are not a rectangular array of numbers: {err}") from err


def _to_chw(t: torch.Tensor, spec: InputSpec) -> torch.Tensor:
    c, s = spec.in_chans, spec.img_size
    if t.dim() == 4 and t.shape[0] == 1:
        t = t[0]
    if t.dim() == 2 and c == 1:
        t = t.unsqueeze(0)
    elif t.dim() == 3 and tuple(t.shape) == (s, s, c) and tuple(t.shape) != spec.shape:
        t = t.permute(2, 0, 1)
    if tuple(t.shape) != spec.shape:
        raise InputError(f"array shape {tuple(t.shape)} does not fit this model's input {spec.shape}")
    if not torch.isfinite(t).all():
        raise InputError("array contains NaN or infinite values")
    if t.min() < 0 or t.max() > 1:
        raise InputError("float pixel values must lie in [0, 1] (send uint8 for 0..255)")
    return t.contiguous()


def decode_item(row: Any, spec: InputSpec) -> torch.Tensor:
    """One request item -> (C, H, W) float tensor in [0, 1], or InputError."""
    payload = payload_of(row)
    if isinstance(payload, (bytes, bytearray)):
        blob = bytes(payload)
        if not blob:
            raise InputError("empty request body")
        if len(blob) > spec.max_bytes:
            raise InputError(f"payload of {len(blob)} bytes exceeds the limit of {spec.max_bytes}", 413)
        if blob.startswith(PNG_MAGIC) or blob.startswith(JPEG_MAGIC):
            return _to_chw(_decode_image(blob, spec), spec)
        if blob.startswith(NPY_MAGIC):
            return _to_chw(_decode_npy(blob), spec)
        try:
            payload = json.loads(blob.decode("utf-8"))
        except (UnicodeDecodeError, json.JSONDecodeError) as err:
            raise InputError("unsupported payload: send PNG, JPEG, .npy or JSON pixels", 415) from err
    elif isinstance(payload, str):
        if len(payload) > spec.max_bytes:
            raise InputError(f"payload of {len(payload)} bytes exceeds the limit of {spec.max_bytes}", 413)
        try:
            payload = json.loads(payload)
        except json.JSONDecodeError as err:
            raise InputError("text payload is not JSON", 415) from err
    return _to_chw(_decode_json(payload), spec)


def client_id_of(row: Any, headers: Dict[str, str], header_name: str, input_key: str) -> Optional[str]:
    """Client id from the REST header (case-insensitive) or, for gRPC, from an input key."""
    value = {k.lower(): v for k, v in (headers or {}).items()}.get(header_name.lower())
    if value is None and isinstance(row, dict):
        value = row.get(input_key)
    if isinstance(value, (bytes, bytearray)):
        value = bytes(value).decode("utf-8", "replace")
    return str(value)[:128] if value else None
