"""`same-serve archive`: pack victim + MAE + shadow + calibration + config into ONE .mar.

The .mar carries the `handler` package itself, so a TorchServe without this project installed can load
it; the entry file is handler/same_handler.py (one class, as TorchServe requires).
"""
import json
import os
import shutil
import tempfile
from dataclasses import dataclass, field
from typing import Any, Dict

import yaml

from archiver.errors import ArchiverError
from handler.config import HandlerConfig

HANDLER_PACKAGE = os.path.dirname(os.path.abspath(__import__("handler").__file__))
ENTRY_FILE = os.path.join(HANDLER_PACKAGE, "same_handler.py")
REQUIRED_ARTIFACTS = ("victim.pt", "mae.pt", "shadow.pt", "calibration.json", "index_to_name.json")


@dataclass
class ArchiveConfig:
    artifacts_dir: str = "artifacts"
    model_name: str = "same"
    version: str = "1.0"
    export_path: str = "model_store"
    handler: Dict[str, Any] = field(default_factory=dict)  # overrides for the `handler:` section
    min_workers: int = 1
    max_workers: int = 1
    batch_size: int = 8
    max_batch_delay_ms: int = 5
    response_timeout_s: int = 60
    force: bool = True


def model_config_yaml(cfg: ArchiveConfig, settings: Dict[str, Any]) -> Dict[str, Any]:
    """The archive's model-config.yaml: worker/batch settings for the frontend plus the validated handler section."""
    # validated here, not in the worker, and written out in full so the shipped file documents itself
    section = HandlerConfig.from_dict({**settings.get("handler", {}), **cfg.handler}).to_dict()
    return {"minWorkers": cfg.min_workers, "maxWorkers": cfg.max_workers, "batchSize": cfg.batch_size,
            "maxBatchDelay": cfg.max_batch_delay_ms, "responseTimeout": cfg.response_timeout_s, "handler": section}


def _stage(cfg: ArchiveConfig, stage: str) -> Dict[str, Any]:
    artifacts = os.path.abspath(cfg.artifacts_dir)
    missing = [f for f in REQUIRED_ARTIFACTS if not os.path.isfile(os.path.join(artifacts, f))]
    if missing:
        raise ArchiverError(f"{artifacts} lacks {missing}; run `same-serve train --out {cfg.artifacts_dir}` first")
    settings_path = os.path.join(artifacts, "settings.json")
    settings = {}
    if os.path.isfile(settings_path):
        with open(settings_path, encoding="utf-8") as fh:
            settings = json.load(fh)
    extras = os.path.join(stage, "extra")
    shutil.copytree(HANDLER_PACKAGE, os.path.join(extras, "handler"),
                    ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "same_handler.py"))
    for name in os.listdir(artifacts):
        if name.endswith((".pt", ".json", ".py")) and name not in ("victim.pt", "settings.json", "train-report.json"):
            shutil.copy(os.path.join(artifacts, name), extras)
    config_path = os.path.join(stage, "model-config.yaml")
    with open(config_path, "w", encoding="utf-8") as fh:
        yaml.safe_dump(model_config_yaml(cfg, settings), fh, sort_keys=False)
    return {"extra_files": extras, "config_file": config_path,
            "serialized_file": os.path.join(artifacts, "victim.pt")}


def build_archive(cfg: ArchiveConfig) -> str:
    """Write <export_path>/<model_name>.mar and return its path."""
    from model_archiver.model_archiver_config import ModelArchiverConfig
    from model_archiver.model_packaging import generate_model_archive

    os.makedirs(cfg.export_path, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="same-mar-") as stage:
        files = _stage(cfg, stage)
        generate_model_archive(ModelArchiverConfig(
            model_name=cfg.model_name, handler=ENTRY_FILE, version=cfg.version,
            serialized_file=files["serialized_file"], extra_files=files["extra_files"],
            export_path=os.path.abspath(cfg.export_path), force=cfg.force, config_file=files["config_file"]))
    path = os.path.join(cfg.export_path, f"{cfg.model_name}.mar")
    if not os.path.isfile(path):
        raise ArchiverError(f"torch-model-archiver did not write {path}")
    return path
