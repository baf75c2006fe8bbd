import numpy as np
import pytest
from PIL import Image

from archiver.data import load_dataset
from archiver.errors import ArchiverError
from archiver.presets import PRESETS, get_preset


def test_mnist5k_is_shuffled_split_and_scaled():
    d = load_dataset("mnist5k", seed=0)
    assert [len(s[0]) for s in (d.train, d.calib, d.test)] == [3500, 500, 1000]
    assert d.train[0].dtype == np.float32 and d.train[0].min() >= 0 and d.train[0].max() <= 1
    assert (d.in_chans, d.img_size, d.num_classes) == (1, 28, 10)
    assert len(set(d.test[1][:50].tolist())) > 5  # rows are sorted by label upstream: a split must mix them
    again = load_dataset("mnist5k", seed=0)
    assert np.array_equal(d.test[1], again.test[1])


def test_npz_channel_last_uint8(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "data.npz"
    np.savez(path, x=rng.integers(0, 256, (200, 32, 32, 3), dtype=np.uint8), y=rng.integers(0, 4, 200))
    d = load_dataset(str(path))
    assert d.train[0].shape[1:] == (3, 32, 32) and d.num_classes == 4
    assert d.train[0].max() <= 1.0


def test_npz_errors_are_clear(tmp_path):
    np.savez(tmp_path / "a.npz", images=np.zeros((10, 28, 28)))
    with pytest.raises(ArchiverError, match="'x' and 'y'"):
        load_dataset(str(tmp_path / "a.npz"))
    np.savez(tmp_path / "b.npz", x=np.full((100, 28, 28), 3.0), y=np.zeros(100))
    with pytest.raises(ArchiverError, match=r"\[0, 1\]"):
        load_dataset(str(tmp_path / "b.npz"))


def test_folder_of_class_subfolders(tmp_path):
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (tmp_path / name).mkdir()
        for i in range(60):
            Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tmp_path / name / f"{i}.png")
    d = load_dataset(str(tmp_path))
    assert d.class_names == ["cat", "dog"] and d.in_chans == 3 and d.img_size == 32
    assert len(d.train[0]) + len(d.calib[0]) + len(d.test[0]) == 120


def test_presets():
    paper = get_preset("paper")
    assert (paper.patch_size, paper.dim, paper.enc_depth, paper.dec_depth, paper.enc_heads) == (2, 192, 12, 4, 3)
    assert paper.mask_ratio == 0.75 and paper.mae_epochs == 500 and paper.shadow_epochs == 80
    assert "compact" in PRESETS
    with pytest.raises(ArchiverError, match="unknown preset setting"):
        get_preset("compact").with_overrides(mae_epoch=3)
    with pytest.raises(ArchiverError, match="unknown preset"):
        get_preset("huge")
