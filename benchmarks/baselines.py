"""Stateless per-query baseline detectors to compare SAME against. Every score is "higher = more suspicious".

* Maximum softmax probability (MSP): Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
  Out-of-Distribution Examples in Neural Networks", ICLR 2017. Score = 1 - max_k softmax(logits)_k.
  | Paper link: https://arxiv.org/abs/1610.02136
* Energy: Liu, Wang, Owens & Li, "Energy-based Out-of-distribution Detection", NeurIPS 2020.
  Score = E(x) = -T * logsumexp(logits / T): in-distribution inputs get low energy, so the energy itself
  is already "higher = more suspicious".
  | Paper link: https://arxiv.org/abs/2010.03759
* Plain autoencoder: the classic reconstruction-error anomaly score of an unmasked convolutional
  autoencoder trained on the owner's in-distribution images (the ablation "SAME without masking and
  without a shadow classifier"; SAME itself: Xie et al., AAAI 2024, arXiv:2312.10578).

Images at the public boundary are numpy float32 (N, C, H, W) in [0, 1]; the autoencoder works in model
space x * 2 - 1, like the rest of the project. Logits may be numpy arrays or torch tensors of shape (N, K).
"""
from typing import Optional, Union

import numpy as np
import torch
from scipy.special import logsumexp
from torch import nn

Logits = Union[np.ndarray, torch.Tensor]

__all__ = ["msp_score", "energy_score", "PlainAutoencoder", "train_plain_autoencoder", "reconstruction_score"]


def _as_logits(logits: Logits) -> np.ndarray:
    """Return ``logits`` as a float64 (N, K) numpy array."""
    if isinstance(logits, torch.Tensor):
        logits = logits.detach().cpu().numpy()
    arr = np.asarray(logits, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[1] < 1:
        raise ValueError(f"logits must have shape (N, K) with K >= 1, got {arr.shape}.")
    return arr


def msp_score(logits: Logits) -> np.ndarray:
    """Maximum-softmax-probability score: 1 - max softmax. Higher = less confident = more suspicious.

    :param logits: victim logits, (N, K), numpy or torch.
    :return: float64 array (N,) with values in [0, 1 - 1/K].
    """
    arr = _as_logits(logits)
    log_max_p = arr.max(axis=1) - logsumexp(arr, axis=1)  # log of the largest softmax probability
    return 1.0 - np.exp(log_max_p)


def energy_score(logits: Logits, T: float = 1.0) -> np.ndarray:
    """Free energy E(x) = -T * logsumexp(logits / T). Higher = more suspicious (out-of-distribution).

    :param logits: victim logits, (N, K), numpy or torch.
    :param T: temperature, > 0. Default: 1.0 (the paper's setting for inference-time scoring).
    :return: float64 array (N,).
    """
    if not T > 0:
        raise ValueError(f"The temperature T must be positive, got {T}.")
    arr = _as_logits(logits)
    return -T * logsumexp(arr / T, axis=1)


# --------------------------------------------------------------------------------------------------------
# Plain (unmasked) convolutional autoencoder
# --------------------------------------------------------------------------------------------------------
class PlainAutoencoder(nn.Module):
    """A small unmasked convolutional autoencoder for 1x28x28 or 3x32x32 images (any side divisible by 4).

    Encoder: two stride-2 convolutions (side/4) and a 1x1 bottleneck of ``latent_chans`` channels, so
    the code is smaller than the image (for 1x28x28 with the defaults: 4*7*7 = 196 numbers for 784 pixels)
    and the network cannot learn the identity. Decoder: two transposed convolutions back to full size and a
    tanh, so reconstructions live in model space [-1, 1].

    Input and output: (N, C, H, W) in model space.
    """

    def __init__(self, in_chans: int = 1, img_size: int = 28, width: int = 32, latent_chans: int = 4) -> None:
        """
        :param in_chans: image channels (1 or 3). Default: 1.
        :param img_size: image side in pixels, divisible by 4 (28 or 32). Default: 28.
        :param width: channels of the first convolution (the second has twice as many). Default: 32.
        :param latent_chans: channels of the bottleneck at side/4. Default: 4.
        """
        super().__init__()
        if in_chans < 1 or width < 1 or latent_chans < 1:
            raise ValueError("in_chans, width and latent_chans must be positive integers.")
        if img_size % 4 != 0:
            raise ValueError(f"img_size must be divisible by 4 (e.g. 28 or 32), got {img_size}.")
        self.in_chans, self.img_size = in_chans, img_size
        self.encoder = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, stride=2, padding=1), nn.ReLU(inplace=True),       # side/2
            nn.Conv2d(width, 2 * width, 3, stride=2, padding=1), nn.ReLU(inplace=True),      # side/4
            nn.Conv2d(2 * width, latent_chans, 1),                                            # bottleneck
        )
        self.decoder = nn.Sequential(
            nn.Conv2d(latent_chans, 2 * width, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, stride=2, padding=1), nn.ReLU(inplace=True),  # side/2
            nn.ConvTranspose2d(width, in_chans, 4, stride=2, padding=1), nn.Tanh(),              # side
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """:param x: (N, C, H, W) in model space. :return: reconstruction, same shape, in [-1, 1]."""
        return self.decoder(self.encoder(x))


def _check_images(x: np.ndarray, name: str = "x") -> np.ndarray:
    arr = np.asarray(x, dtype=np.float32)
    if arr.ndim != 4:
        raise ValueError(f"{name} must be a (N, C, H, W) array of images in [0, 1], got shape {arr.shape}.")
    if arr.shape[0] == 0:
        raise ValueError(f"{name} is empty.")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite pixels.")
    return arr


def train_plain_autoencoder(
    x_train: np.ndarray,
    epochs: int = 10,
    batch_size: int = 64,
    seed: int = 0,
    lr: float = 1e-3,
    progress: bool = False,
    width: int = 32,
    latent_chans: int = 4,
    device: Optional[Union[str, torch.device]] = None,
) -> PlainAutoencoder:
    """Train a :class:`PlainAutoencoder` with Adam on full-image MSE in model space.

    :param x_train: in-distribution images, float (N, C, H, W) in [0, 1]; C and H=W set the architecture.
    :param epochs: passes over ``x_train``. Default: 10.
    :param batch_size: minibatch size. Default: 64.
    :param seed: seeds the weight init and the shuffling. Default: 0.
    :param lr: Adam learning rate. Default: 1e-3.
    :param progress: show a tqdm bar over epochs with the running loss. Default: False.
    :param width: see :class:`PlainAutoencoder`. Default: 32.
    :param latent_chans: see :class:`PlainAutoencoder`. Default: 4.
    :param device: torch device to train on. Default: CPU.
    :return: the trained model, in eval mode, on ``device``.
    """
    arr = _check_images(x_train, "x_train")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be positive integers.")
    if arr.shape[2] != arr.shape[3]:
        raise ValueError(f"images must be square, got {arr.shape[2]}x{arr.shape[3]}.")
    from tqdm.auto import tqdm  # imported lazily: only training needs it

    dev = torch.device(device) if device is not None else torch.device("cpu")
    gen = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # seeded init without touching the caller's global RNG
        torch.manual_seed(seed)
        model = PlainAutoencoder(arr.shape[1], arr.shape[2], width=width, latent_chans=latent_chans)
    model = model.to(dev)
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    data = torch.from_numpy(arr) * 2 - 1  # model space
    n = data.shape[0]

    model.train()
    bar = tqdm(range(epochs), desc="plain AE", disable=not progress)
    for _ in bar:
        perm = torch.randperm(n, generator=gen)
        total = 0.0
        for start in range(0, n, batch_size):
            xb = data[perm[start:start + batch_size]].to(dev)
            loss = torch.mean((model(xb) - xb) ** 2)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            total += float(loss.detach()) * xb.shape[0]
        bar.set_postfix(mse=f"{total / n:.4f}")
    model.eval()
    return model


@torch.no_grad()
def reconstruction_score(model: nn.Module, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """Per-query reconstruction error: mean over C, H, W of (model(x') - x')**2 with x' = x * 2 - 1.

    :param model: an autoencoder mapping model-space images to model-space reconstructions.
    :param x: images, float (N, C, H, W) in [0, 1].
    :param batch_size: images per forward pass. Default: 256.
    :return: float64 array (N,), higher = more suspicious.
    """
    arr = _check_images(x)
    was_training = model.training
    model.eval()
    dev = next(model.parameters()).device
    out = []
    for start in range(0, arr.shape[0], batch_size):
        xb = torch.from_numpy(arr[start:start + batch_size]).to(dev) * 2 - 1
        err = (model(xb).float() - xb) ** 2
        out.append(err.flatten(1).mean(dim=1).double().cpu().numpy())
    model.train(was_training)
    return np.concatenate(out)
