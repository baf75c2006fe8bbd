"""A REST client of the defended endpoint, as an attacker or a benign user would use it.

Images (N, C, H, W) in [0, 1] are sent one per request (PNG by default, or .npy), concurrently, with
the inference token and a client id header. `as_blackbox()` gives the attacks a callable that returns
probability rows, all-NaN where the server refused the query.
"""
import io
import json
import urllib.error
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np


def encode_png(img: np.ndarray) -> bytes:
    """(C, H, W) in [0, 1] -> PNG bytes (grey for 1 channel, RGB for 3)."""
    from PIL import Image

    arr = np.clip(np.rint(img * 255), 0, 255).astype(np.uint8)
    pil = Image.fromarray(arr[0], "L") if arr.shape[0] == 1 else Image.fromarray(arr.transpose(1, 2, 0), "RGB")
    buf = io.BytesIO()
    pil.save(buf, format="PNG")
    return buf.getvalue()


def encode_npy(img: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.save(buf, img.astype(np.float32), allow_pickle=False)
    return buf.getvalue()


@dataclass
class Response:
    status: int
    body: object


class RestClient:
    def __init__(self, base_url: str, model: str, token: Optional[str] = None, client_id: Optional[str] = None,
                 client_id_header: str = "X-Client-Id", fmt: str = "png", concurrency: int = 4,
                 timeout_s: float = 60.0):
        if fmt not in ("png", "npy"):
            raise ValueError(f"fmt must be 'png' or 'npy', got {fmt!r}")
        self.url = f"{base_url.rstrip('/')}/predictions/{model}"
        self.token, self.client_id, self.client_id_header = token, client_id, client_id_header
        self.fmt, self.concurrency, self.timeout_s = fmt, concurrency, timeout_s

    def post(self, payload: bytes, content_type: str, headers: Optional[dict] = None) -> Response:
        req = urllib.request.Request(self.url, data=payload, method="POST")
        req.add_header("Content-Type", content_type)
        if self.token:
            req.add_header("Authorization", f"Bearer {self.token}")
        if self.client_id:
            req.add_header(self.client_id_header, self.client_id)
        for key, value in (headers or {}).items():
            req.add_header(key, value)
        try:
            with urllib.request.urlopen(req, timeout=self.timeout_s) as resp:
                return Response(resp.status, _json_or_text(resp.read()))
        except urllib.error.HTTPError as err:
            return Response(err.code, _json_or_text(err.read()))

    def predict_one(self, img: np.ndarray) -> Response:
        if self.fmt == "png":
            return self.post(encode_png(img), "image/png")
        return self.post(encode_npy(img), "application/octet-stream")

    def predict(self, images: np.ndarray) -> List[Response]:
        with ThreadPoolExecutor(self.concurrency) as pool:
            return list(pool.map(self.predict_one, images))

    def as_blackbox(self, class_names: Sequence[str]) -> Callable[[np.ndarray], np.ndarray]:
        """images -> (N, K) probabilities; rows of refused or failed queries are NaN."""
        index = {name: i for i, name in enumerate(class_names)}

        def blackbox(images: np.ndarray) -> np.ndarray:
            return responses_to_probs(self.predict(images), index)
        return blackbox


def responses_to_probs(responses: Sequence[Response], index: dict) -> np.ndarray:
    out = np.full((len(responses), len(index)), np.nan, dtype=np.float64)
    for row, resp in enumerate(responses):
        if resp.status == 200 and isinstance(resp.body, dict):
            for name, p in resp.body.items():
                if name in index:
                    out[row, index[name]] = p
            known = ~np.isnan(out[row])
            out[row, ~known] = max(0.0, 1.0 - out[row, known].sum()) / max(int((~known).sum()), 1)
    return out


def _json_or_text(raw: bytes):
    try:
        return json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return raw.decode("utf-8", "replace")


def top1(responses: Sequence[Response], class_names: Sequence[str]) -> Tuple[np.ndarray, np.ndarray]:
    """(predicted index or -1, status) per response."""
    index = {name: i for i, name in enumerate(class_names)}
    preds = np.full(len(responses), -1)
    for row, resp in enumerate(responses):
        if resp.status == 200 and isinstance(resp.body, dict):
            probs = {k: v for k, v in resp.body.items() if k in index}
            if probs:
                preds[row] = index[max(probs, key=probs.get)]
    return preds, np.array([r.status for r in responses])
