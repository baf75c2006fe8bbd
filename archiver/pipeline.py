"""`same-serve train`: from the owner's data (and victim, if any) to the files the .mar packs.

out_dir receives victim.pt, mae.pt, shadow.pt, calibration.json, index_to_name.json, settings.json
(handler settings that depend on the victim, e.g. its input normalisation) and train-report.json.
"""
import json
import logging
import os
import shutil
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Dict, List, Optional, Tuple

import torch

from archiver.calibration import calibrate_scorer
from archiver.data import DatasetSplits, load_dataset
from archiver.errors import ArchiverError
from archiver.presets import Preset, get_preset
from archiver.training import accuracy, masked_reconstruction, train_classifier, train_defense
from handler.bundle import load_scorer
from handler.checkpoints import classifier_meta, instantiate_classifier, save_classifier, save_mae
from handler.config import HandlerConfig
from handler.scorer import SameScorer

logger = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    data: str = "mnist5k"                 # "mnist5k", a folder of class sub-folders, or an .npz with x and y
    out_dir: str = "artifacts"
    preset: str = "compact"
    overrides: Dict[str, Any] = field(default_factory=dict)  # preset fields to change, e.g. {"mae_epochs": 5}
    victim_arch: Optional[str] = None     # conv3 | resnet18 | custom; default: conv3 for 1 channel, resnet18 for 3
    victim_weights: Optional[str] = None  # the owner's trained victim (state_dict); trained here when absent
    victim_model_file: Optional[str] = None  # .py defining the custom victim class
    victim_class: Optional[str] = None
    input_mean: List[float] = field(default_factory=lambda: [0.5])  # the victim's input normalisation
    input_std: List[float] = field(default_factory=lambda: [0.5])
    img_size: Optional[int] = None        # resize folder images to this size
    limit: Optional[int] = None           # use a random subset of the data (quick runs)
    seed: int = 0
    progress: bool = True


def _victim_meta(cfg: TrainConfig, data: DatasetSplits) -> Dict[str, Any]:
    arch = cfg.victim_arch or ("custom" if cfg.victim_model_file else ("conv3" if data.in_chans == 1 else "resnet18"))
    return classifier_meta(arch, data.in_chans, data.num_classes, data.img_size, cfg.victim_model_file,
                           cfg.victim_class)


def _load_owner_victim(cfg: TrainConfig, meta: Dict[str, Any]) -> torch.nn.Module:
    search_dir = os.path.dirname(os.path.abspath(cfg.victim_model_file)) if cfg.victim_model_file else "."
    model = instantiate_classifier(meta, search_dir)
    state = torch.load(cfg.victim_weights, map_location="cpu", weights_only=True)
    if isinstance(state, dict) and "state_dict" in state:
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except RuntimeError as err:
        raise ArchiverError(f"{cfg.victim_weights} does not fit the {meta['arch']} architecture: {err}") from err
    return model.eval()


def _victim_transform(cfg: TrainConfig):
    """Model space ([-1, 1]) -> the victim's own normalisation."""
    mean = torch.tensor(cfg.input_mean).view(1, -1, 1, 1)
    std = torch.tensor(cfg.input_std).view(1, -1, 1, 1)
    return lambda xb: ((xb + 1) / 2 - mean) / std


def run_training(cfg: TrainConfig) -> Dict[str, Any]:
    """Train (victim), MAE and shadow, calibrate, and write the artifacts; returns the report dict."""
    preset: Preset = get_preset(cfg.preset).with_overrides(**cfg.overrides)
    os.makedirs(cfg.out_dir, exist_ok=True)
    torch.manual_seed(cfg.seed)
    timings: Dict[str, float] = {}
    t0 = time.time()
    data = load_dataset(cfg.data, seed=cfg.seed, img_size=cfg.img_size, limit=cfg.limit)
    timings["data"] = time.time() - t0
    (x_train, y_train), (x_calib, _), (x_test, y_test) = data.train, data.calib, data.test
    logger.info("data %s: %d train / %d calib / %d test, %d classes, %dx%dx%d", cfg.data, len(x_train),
                len(x_calib), len(x_test), data.num_classes, data.in_chans, data.img_size, data.img_size)
    meta = _victim_meta(cfg, data)
    vt = _victim_transform(cfg)

    t0 = time.time()
    if cfg.victim_weights:
        victim = _load_owner_victim(cfg, meta)
    else:
        if meta["arch"] == "custom":
            raise ArchiverError("a custom victim architecture needs its trained weights (--victim-weights)")
        victim = instantiate_classifier(meta)
        train_classifier(victim, x_train, y_train, preset.victim_epochs, preset.victim_lr, preset.batch_size,
                         cfg.seed, input_transform=vt, progress=cfg.progress, desc="victim")
    timings["victim"] = time.time() - t0
    victim_acc = accuracy(victim, x_test, y_test, transform=vt)

    search_dir = os.path.dirname(os.path.abspath(cfg.victim_model_file or "."))
    mae, shadow, defense_stats = train_defense(preset, data, lambda: instantiate_classifier(meta, search_dir),
                                               cfg.seed, cfg.progress)
    timings.update(defense_stats["seconds"])
    shadow_acc = accuracy(shadow, x_test, y_test, transform=masked_reconstruction(mae, 0.0))

    t0 = time.time()
    scorer = SameScorer(victim, mae, shadow, calibration=None, input_mean=cfg.input_mean, input_std=cfg.input_std)
    calibration, test_fpr, test_mse = calibrate_scorer(scorer, x_calib, x_test, preset.alpha, preset.target_fpr)
    timings["calibration"] = time.time() - t0

    save_classifier(victim, meta, os.path.join(cfg.out_dir, "victim.pt"))
    save_classifier(shadow, meta, os.path.join(cfg.out_dir, "shadow.pt"))
    save_mae(mae, os.path.join(cfg.out_dir, "mae.pt"))
    if meta["arch"] == "custom":
        shutil.copy(cfg.victim_model_file, os.path.join(cfg.out_dir, meta["model_file"]))
    _write_json(os.path.join(cfg.out_dir, "calibration.json"), calibration.to_dict())
    _write_json(os.path.join(cfg.out_dir, "index_to_name.json"), {str(i): n for i, n in enumerate(data.class_names)})
    _write_json(os.path.join(cfg.out_dir, "settings.json"),
                {"handler": {"input_mean": list(cfg.input_mean), "input_std": list(cfg.input_std)}})
    report = {
        "config": asdict(cfg), "preset": preset.to_dict(), "victim": meta,
        "accuracy": {"victim_test": victim_acc, "shadow_test_on_reconstructions": shadow_acc},
        "mae": {"final_train_loss": defense_stats["mae_loss"][-1] if defense_stats["mae_loss"] else None,
                "test_mse_unmasked": test_mse,
                "parameters": sum(p.numel() for p in mae.parameters())},
        "calibration": calibration.to_dict(),
        "test_benign_fpr": test_fpr,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    _write_json(os.path.join(cfg.out_dir, "train-report.json"), report)
    return report


def recalibrate(artifacts_dir: str, alpha: Optional[float] = None, target_fpr: Optional[float] = None) -> Dict[str, Any]:
    """Refit calibration.json (normalisation and threshold) for a new alpha or target FPR, without retraining."""
    scorer, report = load_trained(artifacts_dir)
    cfg = report["config"]
    data = load_dataset(cfg["data"], seed=cfg["seed"], img_size=cfg.get("img_size"), limit=cfg.get("limit"))
    old = scorer.calibration
    calibration, report["test_benign_fpr"], _ = calibrate_scorer(
        scorer, data.calib[0], data.test[0], old.alpha if alpha is None else alpha,
        old.target_fpr if target_fpr is None else target_fpr)
    report["calibration"] = calibration.to_dict()
    _write_json(os.path.join(artifacts_dir, "calibration.json"), calibration.to_dict())
    _write_json(os.path.join(artifacts_dir, "train-report.json"), report)
    return report


def load_trained(artifacts_dir: str) -> Tuple[SameScorer, Dict[str, Any]]:
    """The trained scorer (with the victim's normalisation) and train-report.json of an artifacts folder."""
    with open(os.path.join(artifacts_dir, "settings.json"), encoding="utf-8") as fh:
        settings = HandlerConfig.from_dict(json.load(fh)["handler"])
    with open(os.path.join(artifacts_dir, "train-report.json"), encoding="utf-8") as fh:
        report = json.load(fh)
    scorer, _ = load_scorer(artifacts_dir, "victim.pt", settings)
    return scorer, report


def _write_json(path: str, obj: Any) -> None:
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(obj, fh, indent=2, sort_keys=True, allow_nan=False)
