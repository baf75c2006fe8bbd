"""Bring-your-own victim (model file + class + state_dict) on colour 32x32 data, through train and archive."""
import zipfile

import numpy as np
import torch

from archiver.packaging import ArchiveConfig, build_archive
from archiver.pipeline import TrainConfig, run_training
from handler.bundle import load_scorer
from handler.config import HandlerConfig

MODEL_FILE = '''
import torch
from torch import nn

class TinyColourNet(nn.Module):
    def __init__(self, num_classes=3):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 8, 3, 2, 1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                                  nn.Linear(8, num_classes))

    def forward(self, x):
        return self.body(x)
'''


def test_custom_colour_victim(tmp_path):
    rng = np.random.default_rng(0)
    y = rng.integers(0, 3, 300)
    x = np.clip(rng.normal(0.3 + 0.2 * y[:, None, None, None], 0.1, (300, 32, 32, 3)), 0, 1).astype(np.float32)
    np.savez(tmp_path / "colour.npz", x=x, y=y)
    (tmp_path / "my_model.py").write_text(MODEL_FILE)
    import importlib.util
    spec = importlib.util.spec_from_file_location("my_model", tmp_path / "my_model.py")
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    torch.manual_seed(0)
    torch.save(mod.TinyColourNet().state_dict(), tmp_path / "victim_state.pt")

    out = tmp_path / "artifacts"
    report = run_training(TrainConfig(
        data=str(tmp_path / "colour.npz"), out_dir=str(out), preset="tiny", victim_weights=str(tmp_path / "victim_state.pt"),
        victim_model_file=str(tmp_path / "my_model.py"), victim_class="TinyColourNet",
        input_mean=[0.5, 0.5, 0.5], input_std=[0.25, 0.25, 0.25], progress=False,
        overrides={"mae_epochs": 1, "shadow_epochs": 1, "target_fpr": 0.05}))
    assert report["victim"]["arch"] == "custom" and report["victim"]["in_chans"] == 3
    assert (out / "my_model.py").exists()
    scorer, meta = load_scorer(str(out), "victim.pt", HandlerConfig(input_mean=[0.5] * 3, input_std=[0.25] * 3))
    result = scorer(torch.from_numpy(x[:4].transpose(0, 3, 1, 2).copy()))
    assert result.logits.shape == (4, 3) and torch.isfinite(result.score).all()

    mar = build_archive(ArchiveConfig(artifacts_dir=str(out), export_path=str(tmp_path / "store")))
    names = zipfile.ZipFile(mar).namelist()
    assert "my_model.py" in names and "shadow.pt" in names
    with zipfile.ZipFile(mar) as zf:
        assert b"0.25" in zf.read("model-config.yaml")  # the victim's normalisation travels with the archive
