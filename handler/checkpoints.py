"""Self-describing checkpoints: each .pt file holds the architecture next to the weights.

A classifier checkpoint is {"arch", "in_chans", "num_classes", "img_size", "state_dict"} for a built-in
architecture, or {"arch": "custom", "model_file", "class_name", "init_kwargs", ...} for a model the
owner brings (torch-model-archiver's --model-file convention: a .py file that defines the class).
An MAE checkpoint is {"mae_config", "state_dict"}. Everything loads with weights_only=True.
"""
import importlib.util
import os
from typing import Any, Dict, Optional

import torch
from torch import nn

from handler.classifiers import CLASSIFIERS, build_classifier
from handler.mae import MAEConfig, MaskedAutoencoder


def _load(path: str) -> Dict[str, Any]:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"checkpoint not found: {path}")
    return torch.load(path, map_location="cpu", weights_only=True)


def _import_class(model_file: str, class_name: str) -> type:
    spec = importlib.util.spec_from_file_location(f"same_custom_{class_name}", model_file)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot import model file {model_file}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    if not hasattr(module, class_name):
        raise ImportError(f"{model_file} defines no class named {class_name!r}")
    return getattr(module, class_name)


def classifier_meta(arch: str, in_chans: int, num_classes: int, img_size: int, model_file: Optional[str] = None,
                    class_name: Optional[str] = None, init_kwargs: Optional[dict] = None) -> Dict[str, Any]:
    """The architecture part of a classifier checkpoint (model_file is stored as a base name)."""
    meta = {"arch": arch, "in_chans": in_chans, "num_classes": num_classes, "img_size": img_size}
    if arch == "custom":
        if not model_file or not class_name:
            raise ValueError("a custom classifier needs model_file and class_name")
        meta.update(model_file=os.path.basename(model_file), class_name=class_name, init_kwargs=dict(init_kwargs or {}))
    elif arch not in CLASSIFIERS:
        raise ValueError(f"unknown classifier architecture {arch!r}; choose one of {sorted(CLASSIFIERS)} or 'custom'")
    return meta


def instantiate_classifier(meta: Dict[str, Any], search_dir: str = ".") -> nn.Module:
    """Build an untrained classifier from checkpoint metadata; custom model files are looked up in search_dir."""
    if meta["arch"] == "custom":
        cls = _import_class(os.path.join(search_dir, meta["model_file"]), meta["class_name"])
        return cls(**meta.get("init_kwargs", {}))
    return build_classifier(meta["arch"], meta["in_chans"], meta["num_classes"], meta["img_size"])


def save_classifier(model: nn.Module, meta: Dict[str, Any], path: str) -> None:
    torch.save({**meta, "state_dict": model.state_dict()}, path)


def load_classifier(path: str, search_dir: Optional[str] = None) -> nn.Module:
    ckpt = _load(path)
    model = instantiate_classifier(ckpt, search_dir or os.path.dirname(os.path.abspath(path)))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()


def read_classifier_meta(path: str) -> Dict[str, Any]:
    return {k: v for k, v in _load(path).items() if k != "state_dict"}


def save_mae(model: MaskedAutoencoder, path: str) -> None:
    torch.save({"mae_config": model.config.to_dict(), "state_dict": model.state_dict()}, path)


def load_mae(path: str) -> MaskedAutoencoder:
    ckpt = _load(path)
    model = MaskedAutoencoder(MAEConfig(**ckpt["mae_config"]))
    model.load_state_dict(ckpt["state_dict"])
    return model.eval()
