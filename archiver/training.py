"""Training loops for the victim (when the owner brings none), the MAE and the shadow classifier.

Inputs are float32 (N, C, H, W) in [0, 1]; every model trains in model space (x * 2 - 1).
Each function returns a stats dict (one value per epoch) and shows a tqdm bar when `progress` is set.
"""
import math
import time
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from archiver.data import DatasetSplits
from archiver.presets import Preset
from handler.mae import MAEConfig, MaskedAutoencoder


def _batches(n: int, batch_size: int, gen: torch.Generator):
    order = torch.randperm(n, generator=gen)
    for start in range(0, n, batch_size):
        yield order[start:start + batch_size]


def _augment(x: torch.Tensor, gen: torch.Generator, max_shift: int = 2) -> torch.Tensor:
    """Random translations by up to max_shift pixels (the only augmentation safe for digits and crops)."""
    dx, dy = (int(v) for v in torch.randint(-max_shift, max_shift + 1, (2,), generator=gen))
    return torch.roll(x, shifts=(dy, dx), dims=(2, 3))


@torch.no_grad()
def accuracy(model: nn.Module, x: np.ndarray, y: np.ndarray, transform: Optional[Callable] = None,
             batch_size: int = 256) -> float:
    model.eval()
    correct = 0
    for start in range(0, len(x), batch_size):
        xb = torch.from_numpy(x[start:start + batch_size]) * 2 - 1
        if transform is not None:
            xb = transform(xb)
        correct += int((model(xb).argmax(1).numpy() == y[start:start + batch_size]).sum())
    return correct / max(len(x), 1)


def train_classifier(model: nn.Module, x: np.ndarray, y: np.ndarray, epochs: int, lr: float, batch_size: int = 64,
                     seed: int = 0, augment: bool = True, input_transform: Optional[Callable] = None,
                     progress: bool = True, desc: str = "classifier") -> Dict[str, List[float]]:
    """SGD (momentum 0.9, wd 5e-4, cosine) with cross-entropy on the true labels.

    `input_transform` maps a model-space batch to the classifier's input (the shadow sees MAE reconstructions).
    """
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.SGD(model.parameters(), lr=lr, momentum=0.9, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=max(epochs, 1))
    xt, yt = torch.from_numpy(x) * 2 - 1, torch.from_numpy(y)
    stats: Dict[str, List[float]] = {"loss": [], "train_acc": []}
    bar = tqdm(range(epochs), desc=desc, disable=not progress, leave=False)
    for _ in bar:
        model.train()
        total, correct, loss_sum = 0, 0, 0.0
        for idx in _batches(len(xt), batch_size, gen):
            xb, yb = xt[idx], yt[idx]
            if augment:
                xb = _augment(xb, gen)
            if input_transform is not None:
                with torch.no_grad():
                    xb = input_transform(xb)
            logits = model(xb)
            loss = nn.functional.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += len(idx)
            loss_sum += loss.item() * len(idx)
            correct += int((logits.argmax(1) == yb).sum())
        sched.step()
        stats["loss"].append(loss_sum / total)
        stats["train_acc"].append(correct / total)
        bar.set_postfix(loss=f"{stats['loss'][-1]:.3f}", acc=f"{stats['train_acc'][-1]:.3f}")
    model.eval()
    return stats


def mae_schedule(epoch: int, warmup: int, epochs: int) -> float:
    """The released recipe's LR factor: linear warm-up, then half-cosine to 0 over all epochs."""
    return min((epoch + 1) / max(warmup, 1), 0.5 * (math.cos(math.pi * epoch / max(epochs, 1)) + 1))


def train_mae(mae: MaskedAutoencoder, x: np.ndarray, epochs: int, lr: float, mask_ratio: float = 0.75,
              batch_size: int = 64, warmup_epochs: int = 2, seed: int = 0, progress: bool = True) -> Dict[str, List[float]]:
    """AdamW (betas 0.9/0.95, wd 0.05) on the full-image MSE of masked inputs, as in the SAME release."""
    gen = torch.Generator().manual_seed(seed)
    torch.manual_seed(seed)
    opt = torch.optim.AdamW(mae.parameters(), lr=lr, betas=(0.9, 0.95), weight_decay=0.05)
    sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda e: mae_schedule(e, warmup_epochs, epochs))
    xt = torch.from_numpy(x) * 2 - 1
    stats: Dict[str, List[float]] = {"loss": []}
    bar = tqdm(range(epochs), desc="MAE", disable=not progress, leave=False)
    for _ in bar:
        mae.train()
        loss_sum, total = 0.0, 0
        for idx in _batches(len(xt), batch_size, gen):
            xb = xt[idx]
            recon, _ = mae(xb, mask_ratio=mask_ratio)
            loss = (recon - xb).pow(2).mean()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            loss_sum += loss.item() * len(idx)
            total += len(idx)
        sched.step()
        stats["loss"].append(loss_sum / total)
        bar.set_postfix(mse=f"{stats['loss'][-1]:.4f}")
    mae.eval()
    return stats


def masked_reconstruction(mae: MaskedAutoencoder, mask_ratio: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """x -> clamp(G(x; mask_ratio)): the shadow classifier's training input."""
    def transform(xb: torch.Tensor) -> torch.Tensor:
        return mae(xb, mask_ratio=mask_ratio)[0].clamp(-1, 1)
    return transform


def mae_config_for(preset: Preset, data: DatasetSplits) -> MAEConfig:
    """The MAE shape a preset asks for, for the data's image size and channels."""
    return MAEConfig(img_size=data.img_size, in_chans=data.in_chans, patch_size=preset.patch_size, dim=preset.dim,
                     enc_depth=preset.enc_depth, enc_heads=preset.enc_heads, dec_depth=preset.dec_depth,
                     dec_heads=preset.dec_heads)


def train_defense(preset: Preset, data: DatasetSplits, make_classifier: Callable[[], nn.Module], seed: int = 0,
                  progress: bool = False) -> Tuple[MaskedAutoencoder, nn.Module, Dict[str, Any]]:
    """Train a fresh MAE on ``data.train`` and a fresh shadow on its masked reconstructions (SAME §2.4-2.5).

    The shadow sees G(x; preset.mask_ratio) in model space with the true labels.

    :param preset: sizes, epochs and learning rates.
    :param data: the owner's data; only ``data.train`` is used.
    :param make_classifier: returns an untrained classifier of the victim's architecture.
    :param seed: seeds model initialisation, batching and masking.
    :param progress: show tqdm bars.
    :return: (mae, shadow, stats) with stats ``{"mae_loss": [...], "shadow_loss": [...], "seconds": {...}}``.
    """
    x_train, y_train = data.train
    t0 = time.time()
    torch.manual_seed(seed)
    mae = MaskedAutoencoder(mae_config_for(preset, data))
    mae_stats = train_mae(mae, x_train, preset.mae_epochs, preset.mae_lr, preset.mask_ratio, preset.mae_batch_size,
                          preset.mae_warmup_epochs, seed, progress)
    t1 = time.time()
    torch.manual_seed(seed)
    shadow = make_classifier()
    shadow_stats = train_classifier(shadow, x_train, y_train, preset.shadow_epochs, preset.shadow_lr,
                                    preset.batch_size, seed,
                                    input_transform=masked_reconstruction(mae, preset.mask_ratio),
                                    progress=progress, desc="shadow")
    t2 = time.time()
    stats = {"mae_loss": mae_stats["loss"], "shadow_loss": shadow_stats["loss"],
             "seconds": {"mae": t1 - t0, "shadow": t2 - t1}}
    return mae, shadow, stats
