"""Offline proxy data sets for extraction attacks.

Two attacker data sources that ship inside installed packages, so benchmarks run with no network:

- :func:`natural_crops`: random square crops of the scikit-image sample photos, a far-from-distribution
  "natural images" proxy (the role ImageNet plays for KnockoffNets, Orekondy et al., CVPR 2019). Each crop
  remembers which photo it came from, so the photos can serve as the arms of the adaptive KnockoffNets bandit.
- :func:`upsampled_digits`: scikit-learn's 8x8 digits upsampled to an MNIST-like layout, a near-distribution
  proxy (the role EMNIST-digits plays in the SAME paper's MNIST setting).

Every image is float32 (N, C, H, W) in [0, 1]. Outputs are deterministic for a given seed.
"""
import functools
import logging
from typing import Tuple, Union

import numpy as np
from PIL import Image

logger = logging.getLogger(__name__)

#: scikit-image sample photos that load offline (the ones that need the ``pooch`` downloader are left out,
#: as are synthetic drawings such as checkerboard, colorwheel, logo and shepp_logan_phantom).
PHOTO_NAMES: Tuple[str, ...] = (
    "astronaut", "brick", "camera", "cell", "chelsea", "clock", "coffee", "coins", "grass", "gravel", "horse",
    "hubble_deep_field", "immunohistochemistry", "microaneurysms", "moon", "page", "retina", "rocket",
    "stereo_motorcycle", "text",
)

_MIN_CROP = 16  # smallest crop side in pixels of the source photo


@functools.lru_cache(maxsize=None)
def _photo(name: str, channels: int) -> np.ndarray:
    """One sample photo as float32 (H, W, channels) in [0, 1]; grey is the luminance of RGB photos."""
    import skimage.data  # lazy: importing this module stays cheap

    img = getattr(skimage.data, name)()
    if isinstance(img, tuple):  # stereo_motorcycle returns (left, right, disparity)
        img = img[0]
    img = np.asarray(img, dtype=np.float32)
    if img.max() > 1.0:
        img = img / 255.0
    if img.ndim == 2:
        img = img[:, :, None]
    img = img[:, :, :3]
    if channels == 1 and img.shape[2] == 3:
        img = img @ np.array([0.2125, 0.7154, 0.0721], dtype=np.float32)[:, None]
    elif channels == 3 and img.shape[2] == 1:
        img = np.repeat(img, 3, axis=2)
    return np.ascontiguousarray(img)


def _resize(img: np.ndarray, size: int) -> np.ndarray:
    """Resize a float (H, W, C) array to (C, size, size) with PIL's antialiased bilinear filter."""
    chans = [np.asarray(Image.fromarray(img[:, :, c], mode="F").resize((size, size), Image.BILINEAR))
             for c in range(img.shape[2])]
    return np.stack(chans, axis=0)


def natural_crops(n: int, size: int = 28, channels: int = 1, seed: int = 0,
                  return_groups: bool = False) -> Union[np.ndarray, Tuple[np.ndarray, np.ndarray]]:
    """Random square crops of the offline scikit-image photos, min-max scaled and resized.

    Each crop picks a photo uniformly from :data:`PHOTO_NAMES`, a side length uniformly between 16 pixels
    and the photo's shorter side, and a uniform position; it is then resized to ``size`` x ``size`` and
    min-max scaled to [0, 1] (a constant crop becomes all zeros).

    :param n: number of crops (>= 0).
    :param size: output side in pixels. Default: 28.
    :param channels: 1 (grey luminance) or 3 (RGB; grey photos are repeated). Default: 1.
    :param seed: seed of the sampling. Default: 0.
    :param return_groups: also return the index into :data:`PHOTO_NAMES` of each crop's source photo.
    :return: x float32 (n, channels, size, size) in [0, 1], and with ``return_groups`` also groups int64 (n,).

    Example::

        x, groups = natural_crops(1000, seed=1, return_groups=True)
    """
    if n < 0 or size < 1:
        raise ValueError(f"n must be non-negative and size positive; got n={n}, size={size}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}.")
    rng = np.random.default_rng(seed)  # drawn item by item, so a smaller n gives a prefix of a larger one
    groups = np.empty(n, dtype=np.int64)
    x = np.empty((n, channels, size, size), dtype=np.float32)
    for i in range(n):
        groups[i] = rng.integers(0, len(PHOTO_NAMES))
        img = _photo(PHOTO_NAMES[groups[i]], channels)
        h, w = img.shape[:2]
        side = int(rng.integers(min(_MIN_CROP, min(h, w)), min(h, w) + 1))
        top, left = int(rng.integers(0, h - side + 1)), int(rng.integers(0, w - side + 1))
        crop = _resize(img[top:top + side, left:left + side], size)
        lo, hi = crop.min(), crop.max()
        x[i] = (crop - lo) / (hi - lo) if hi > lo else 0.0
    np.clip(x, 0.0, 1.0, out=x)
    return (x, groups) if return_groups else x


@functools.lru_cache(maxsize=None)
def _digits_canvas(size: int) -> Tuple[np.ndarray, np.ndarray]:
    """All 1,797 sklearn digits, upsampled and centred on a size x size canvas: (x (N, size, size), y)."""
    from sklearn.datasets import load_digits

    digits = load_digits()
    side = max(1, round(size * 20 / 28))  # MNIST: a 20x20 digit box centred on a 28x28 canvas
    off = (size - side) // 2
    x = np.zeros((len(digits.images), size, size), dtype=np.float32)
    for i, img in enumerate(digits.images.astype(np.float32) / 16.0):
        up = np.asarray(Image.fromarray(img, mode="F").resize((side, side), Image.BILINEAR))
        x[i, off:off + side, off:off + side] = np.clip(up, 0.0, 1.0)
    return x, digits.target.astype(np.int64)


def upsampled_digits(n: int, size: int = 28, seed: int = 0, channels: int = 1,
                     max_shift: int = 2) -> Tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits, upsampled to an MNIST-like layout (a near-distribution proxy for MNIST).

    The 8x8 images (0..16) are scaled to [0, 1], upsampled to 20x20 (for size 28; proportionally otherwise)
    and centred on a ``size`` x ``size`` canvas. Up to 1,797 images are drawn without replacement; beyond that,
    the extra images are drawn with replacement and shifted by up to ``max_shift`` pixels in each direction.

    :param n: number of images (>= 0).
    :param size: canvas side in pixels (>= 8). Default: 28.
    :param seed: seed of the sampling and shifts. Default: 0.
    :param channels: 1, or 3 to repeat the grey image. Default: 1.
    :param max_shift: largest shift in pixels of the images drawn with replacement. Default: 2.
    :return: x float32 (n, channels, size, size) in [0, 1], y int64 (n,) digit labels.
    """
    if n < 0 or size < 8:
        raise ValueError(f"n must be non-negative and size at least 8; got n={n}, size={size}.")
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3; got {channels}.")
    base_x, base_y = _digits_canvas(size)
    rng = np.random.default_rng(seed)
    idx = rng.permutation(len(base_x))[:n]
    x, y = base_x[idx], base_y[idx]
    if n > len(base_x):
        extra = rng.integers(0, len(base_x), size=n - len(base_x))
        shifts = rng.integers(-max_shift, max_shift + 1, size=(len(extra), 2))
        rolled = [np.roll(base_x[j], (int(dy), int(dx)), axis=(0, 1)) for j, (dy, dx) in zip(extra, shifts)]
        x, y = np.concatenate([x, np.stack(rolled)]), np.concatenate([y, base_y[extra]])
    x = np.repeat(x[:, None], channels, axis=1)
    return np.ascontiguousarray(x, dtype=np.float32), y
