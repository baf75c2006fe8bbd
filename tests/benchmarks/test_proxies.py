"""Tests of the offline proxy data sets (benchmarks/proxies.py)."""
import numpy as np
import pytest
from sklearn.datasets import load_digits

from benchmarks.proxies import PHOTO_NAMES, _photo, natural_crops, upsampled_digits


@pytest.mark.parametrize("name", PHOTO_NAMES)
def test_every_photo_loads_offline(name):
    grey, rgb = _photo(name, 1), _photo(name, 3)
    assert grey.ndim == 3 and grey.shape[2] == 1 and rgb.shape[2] == 3
    assert grey.shape[:2] == rgb.shape[:2] and min(grey.shape[:2]) >= 16
    assert 0.0 <= grey.min() < grey.max() <= 1.0


def test_natural_crops_shape_range_and_scaling():
    x, groups = natural_crops(300, seed=3, return_groups=True)
    assert x.shape == (300, 1, 28, 28) and x.dtype == np.float32
    assert groups.shape == (300,) and groups.dtype == np.int64
    assert groups.min() >= 0 and groups.max() < len(PHOTO_NAMES)
    assert len(np.unique(groups)) == len(PHOTO_NAMES)  # 300 draws over 20 photos reach them all
    lo, hi = x.reshape(300, -1).min(axis=1), x.reshape(300, -1).max(axis=1)
    constant = hi == 0.0
    assert np.all(lo == 0.0)
    np.testing.assert_allclose(hi[~constant], 1.0, atol=1e-6)  # every non-constant crop is min-max scaled
    assert constant.sum() < 30  # only crops of flat areas (e.g. the binary horse's background)


def test_natural_crops_are_deterministic_per_seed():
    a, ga = natural_crops(40, seed=5, return_groups=True)
    b, gb = natural_crops(40, seed=5, return_groups=True)
    c = natural_crops(40, seed=6)
    np.testing.assert_array_equal(a, b)
    np.testing.assert_array_equal(ga, gb)
    assert not np.allclose(a, c)
    np.testing.assert_array_equal(natural_crops(10, seed=5), a[:10])  # a smaller n is a prefix


def test_natural_crops_rgb_and_size():
    x = natural_crops(20, size=32, channels=3, seed=1)
    assert x.shape == (20, 3, 32, 32) and x.dtype == np.float32
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert np.abs(x[:, 0] - x[:, 1]).max() > 0.05  # real colour, not repeated grey


def test_natural_crop_groups_name_the_source_photo():
    x, groups = natural_crops(400, seed=2, return_groups=True)
    stds = {PHOTO_NAMES[g]: [] for g in np.unique(groups)}
    for img, g in zip(x, groups):
        stds[PHOTO_NAMES[g]].append(float(img.std()))
    # The binary horse silhouette gives crops that are mostly pure 0 / 1: larger pixel spread than textures.
    assert np.mean(stds["horse"]) > np.mean(stds["grass"]) + 0.05


def test_upsampled_digits_layout_and_labels():
    x, y = upsampled_digits(500, seed=0)
    assert x.shape == (500, 1, 28, 28) and x.dtype == np.float32 and y.dtype == np.int64
    assert 0.0 <= x.min() and x.max() <= 1.0
    assert x[:, :, :4].max() == 0 and x[:, :, -4:].max() == 0  # a 20x20 box centred on 28x28
    assert x[:, :, :, :4].max() == 0 and x[:, :, :, -4:].max() == 0
    assert x.max() > 0.9
    digits = load_digits()
    order = np.random.default_rng(0).permutation(len(digits.target))[:500]
    np.testing.assert_array_equal(y, digits.target[order])
    # Downsampled back to 8x8 (mean over 20/8 boxes is inexact), each image is closest to its source digit.
    small = x[:, 0, 4:24, 4:24].reshape(500, 4, 5, 4, 5).mean(axis=(2, 4))
    src = digits.images[order] / 16.0
    src4 = src.reshape(500, 4, 2, 4, 2).mean(axis=(2, 4))
    dists = ((small[:, None] - src4[None]) ** 2).sum(axis=(2, 3))
    assert np.mean(dists.argmin(axis=1) == np.arange(500)) > 0.95


def test_upsampled_digits_beyond_the_set_are_shifted_copies_and_deterministic():
    x, y = upsampled_digits(2200, seed=1, channels=3)
    assert x.shape == (2200, 3, 28, 28) and y.shape == (2200,)
    np.testing.assert_array_equal(x[:, 0], x[:, 2])
    assert len(np.unique(x[:1797].reshape(1797, -1), axis=0)) > 1700  # first pass: no repeats (a few dupes)
    x2, y2 = upsampled_digits(2200, seed=1, channels=3)
    np.testing.assert_array_equal(x, x2)
    np.testing.assert_array_equal(y, y2)
    assert not np.array_equal(upsampled_digits(50, seed=2)[0], x[:50, :1])


@pytest.mark.parametrize("call", [
    lambda: natural_crops(-1), lambda: natural_crops(5, channels=2), lambda: upsampled_digits(5, size=6),
    lambda: upsampled_digits(5, channels=4),
])
def test_bad_arguments_raise(call):
    with pytest.raises(ValueError):
        call()
