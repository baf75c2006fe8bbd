"""Shared fixtures: a tiny trained defense (seconds, not minutes), its .mar, and an in-process TorchServe context."""
import os
import sys

import numpy as np
import pytest
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

torch.set_num_threads(1)


@pytest.fixture(scope="session")
def tiny_artifacts(tmp_path_factory):
    """A tiny preset trained on 1,200 MNIST images: weak, but trained, deterministic and about 30 s."""
    from archiver.pipeline import TrainConfig, run_training

    out = str(tmp_path_factory.mktemp("artifacts"))
    report = run_training(TrainConfig(out_dir=out, preset="tiny", limit=1200, seed=0, progress=False,
                                      overrides={"mae_epochs": 6, "shadow_epochs": 3, "victim_epochs": 4}))
    return out, report


@pytest.fixture(scope="session")
def mnist_small():
    from archiver.data import load_dataset

    return load_dataset("mnist5k", seed=0, limit=1200)


def make_context(model_dir: str, handler_section: dict, batch_size: int = 8, headers=None):
    """A real ts.context.Context, as the worker builds it, without Java."""
    import ts
    from ts.context import Context, RequestProcessor
    from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl

    metrics = MetricsCacheYamlImpl(os.path.join(os.path.dirname(ts.__file__), "configs", "metrics.yaml"))
    metrics.initialize_cache()
    manifest = {"model": {"modelName": "same", "serializedFile": "victim.pt", "handler": "same_handler.py"}}
    ctx = Context("same", model_dir, manifest, batch_size, None, "0.12.0", metrics=metrics,
                  model_yaml_config={"handler": handler_section})
    ctx.request_processor = [RequestProcessor(dict(h)) for h in (headers or [{}] * batch_size)]
    return ctx


def png_bytes(img: np.ndarray) -> bytes:
    from benchmarks.client import encode_png

    return encode_png(img)
