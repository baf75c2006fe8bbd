"""Adaptive attackers that know SAME (reconstruction-based detection) is deployed.

SAME flags queries its masked autoencoder reconstructs badly.

| Paper link: https://arxiv.org/abs/2312.10578
| Xie, Zhang, Zhao, Zhang, Chen. "SAME: Sample Reconstruction against Model Extraction Attacks". AAAI 2024.

Two evasions from the limitations of that method (the paper's own adaptive-attack results are unknown):

- :class:`ReconstructionFilterKnockoff`: the attacker trains its own small autoencoder on public
  near-distribution data (e.g. upsampled sklearn digits for an MNIST victim), scores a large candidate pool
  by its own reconstruction error, and spends the budget on the best-reconstructed candidates only
  (KnockoffNets, Orekondy et al., CVPR 2019, with a filtered transfer set).
- :class:`MixedQueryAttack`: wraps any attack and interleaves genuine in-distribution queries among its
  queries, so per-client averages of the score look benign; those queries also train the substitute.
"""
import logging
from typing import Any, Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from benchmarks.attacks.base import AttackResult, BudgetedBlackBox, ExtractionAttack

logger = logging.getLogger(__name__)


def _check_images(x: Any, what: str) -> None:
    if not isinstance(x, np.ndarray) or x.ndim != 4 or len(x) == 0:
        raise ValueError(f"{what} must be a non-empty numpy array of shape (N, C, H, W).")
    if x.min() < 0.0 or x.max() > 1.0:
        raise ValueError(f"{what} must hold images with values in [0, 1].")


class ConvAutoencoder(nn.Module):
    """The attacker's small conv autoencoder on [0, 1] images: (N, C, H, W) -> (N, C, H, W) in [0, 1].

    Two stride-2 convs down to a ``latent`` channel bottleneck at H/4, two transposed convs back up.
    """

    def __init__(self, in_chans: int = 1, latent: int = 4, width: int = 32):
        super().__init__()
        self.encoder = nn.Sequential(
            nn.Conv2d(in_chans, width, 3, 2, 1), nn.ReLU(inplace=True),
            nn.Conv2d(width, 2 * width, 3, 2, 1), nn.ReLU(inplace=True), nn.Conv2d(2 * width, latent, 1))
        self.decoder = nn.Sequential(
            nn.Conv2d(latent, 2 * width, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1), nn.ReLU(inplace=True),
            nn.ConvTranspose2d(width, in_chans, 4, 2, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.decoder(self.encoder(x))
        if out.shape[-2:] != x.shape[-2:]:
            out = F.interpolate(out, size=x.shape[-2:], mode="bilinear", align_corners=False)
        return torch.sigmoid(out)


class ReconstructionFilterKnockoff(ExtractionAttack):
    """KnockoffNets that only queries candidates its own autoencoder reconstructs well.

    The autoencoder trains for ``ae_epochs`` on ``public_x`` with ``mask_ratio`` of its ``patch`` x ``patch``
    patches zeroed (MAE-like, so it learns the data rather than the identity) and a full-image MSE loss; the
    ``budget`` candidates of ``pool_x`` with the lowest unmasked reconstruction MSE are queried, in random order.

    :param pool_x: candidate pool, float32 (N, C, H, W) in [0, 1], at least as large as the budget.
    :param public_x: the attacker's public near-distribution images for the autoencoder.
    :param ae_epochs: autoencoder epochs. Default: 10.
    :param ae_lr: autoencoder Adam learning rate (its minibatch is ``batch_size``). Default: 3e-3.
    :param mask_ratio: fraction of patches zeroed during autoencoder training. Default: 0.5.
    :param patch: masking patch side. Default: 4.
    :param latent: bottleneck channels. Default: 4.
    :param kwargs: substitute and query settings of :class:`ExtractionAttack`.
    """

    name = "recon_filter_knockoff"
    attack_params = ExtractionAttack.attack_params + (
        "pool_x", "public_x", "ae_epochs", "ae_lr", "mask_ratio", "patch", "latent")

    def __init__(self, pool_x: np.ndarray, public_x: np.ndarray, ae_epochs: int = 10, ae_lr: float = 3e-3,
                 mask_ratio: float = 0.5, patch: int = 4, latent: int = 4, **kwargs: Any):
        super().__init__(**kwargs)
        self.pool_x, self.public_x, self.ae_epochs, self.ae_lr = pool_x, public_x, ae_epochs, ae_lr
        self.mask_ratio = mask_ratio
        self.patch, self.latent = patch, latent
        self._check_params()

    def _check_params(self) -> None:
        super()._check_params()
        _check_images(self.pool_x, "pool_x")
        _check_images(self.public_x, "public_x")
        if self.pool_x.shape[1:] != self.public_x.shape[1:]:
            raise ValueError(f"pool_x and public_x must hold images of the same shape; got "
                             f"{self.pool_x.shape[1:]} and {self.public_x.shape[1:]}.")
        for key in ("ae_epochs", "patch", "latent"):
            if not isinstance(getattr(self, key), (int, np.integer)) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer; got {getattr(self, key)!r}.")
        if not self.ae_lr > 0:
            raise ValueError(f"ae_lr must be positive; got {self.ae_lr!r}.")
        if not 0 <= self.mask_ratio < 1:
            raise ValueError(f"mask_ratio must lie in [0, 1); got {self.mask_ratio!r}.")

    def _run(self, box: BudgetedBlackBox, rng: np.random.Generator, seed: int) -> Tuple[nn.Module, Dict[str, Any]]:
        if box.budget > len(self.pool_x):
            raise ValueError(f"The budget ({box.budget}) exceeds the candidate pool ({len(self.pool_x)} images); "
                             "give a larger pool_x.")
        ae = self.fit_autoencoder(self.public_x, seed)
        scores = self.reconstruction_error(ae, self.pool_x)
        chosen = np.argsort(scores, kind="stable")[:box.budget]
        box(self.pool_x[rng.permutation(chosen)])
        extra = {"selected": np.sort(chosen), "score_cutoff": float(scores[chosen].max()),
                 "pool_score_median": float(np.median(scores))}
        return self._train(box.queries, box.outputs, seed), extra

    def fit_autoencoder(self, x: np.ndarray, seed: int) -> ConvAutoencoder:
        """Train the attacker's autoencoder on ``x`` (float32 in [0, 1]) with patch masking; eval mode."""
        ae = ConvAutoencoder(x.shape[1], self.latent).to(self.device)
        opt = torch.optim.Adam(ae.parameters(), lr=self.ae_lr)
        xt, gen = torch.as_tensor(x, device=self.device), torch.Generator().manual_seed(seed)
        h, w = -(-x.shape[2] // self.patch), -(-x.shape[3] // self.patch)
        for _ in range(self.ae_epochs):
            for idx in torch.randperm(len(xt), generator=gen).split(self.batch_size):
                batch = xt[idx.to(self.device)]
                keep = (torch.rand(len(batch), 1, h, w, generator=gen) >= self.mask_ratio).float().to(self.device)
                keep = F.interpolate(keep, scale_factor=self.patch)[..., :x.shape[2], :x.shape[3]]
                loss = F.mse_loss(ae(batch * keep), batch)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
        return ae.eval()

    @torch.no_grad()
    def reconstruction_error(self, ae: ConvAutoencoder, x: np.ndarray, batch: int = 512) -> np.ndarray:
        """Per-image unmasked reconstruction MSE, (N,)."""
        out = []
        for i in range(0, len(x), batch):
            xt = torch.as_tensor(x[i:i + batch], device=self.device)
            out.append(((ae(xt) - xt) ** 2).flatten(1).mean(dim=1).cpu().numpy())
        return np.concatenate(out)


class MixedQueryAttack(ExtractionAttack):
    """Runs ``attack`` with part of the budget and interleaves in-distribution queries into its calls.

    ``round(budget * mix)`` queries are benign images from ``benign_x`` (drawn without replacement, reshuffled
    and reused only if the pool runs out); the wrapped attack gets the rest. Every call the attack makes is
    topped up with benign images so the running mix stays at ``mix``, and each call's rows are shuffled
    together. The substitute is then trained from scratch, with the wrapped attack's settings, on every answer
    (attack and benign). ``extra["is_benign"]`` marks the benign queries.

    :param attack: any :class:`ExtractionAttack`.
    :param benign_x: in-distribution images, float32 (N, C, H, W) in [0, 1].
    :param mix: fraction of the budget spent on benign images, in [0, 1). Default: 0.5.
    """

    attack_params = ("attack", "benign_x", "mix")

    def __init__(self, attack: ExtractionAttack, benign_x: np.ndarray, mix: float = 0.5):
        super().__init__()
        self.attack, self.benign_x, self.mix = attack, benign_x, mix
        self._check_params()

    @property
    def name(self) -> str:  # type: ignore[override]
        return f"mixed_{self.attack.name}"

    def _check_params(self) -> None:
        if not isinstance(self.attack, ExtractionAttack):
            raise ValueError("attack must be an ExtractionAttack instance.")
        _check_images(self.benign_x, "benign_x")
        if not 0 <= self.mix < 1:
            raise ValueError(f"mix must lie in [0, 1); got {self.mix!r}.")

    def _run(self, box: BudgetedBlackBox, rng: np.random.Generator, seed: int) -> Tuple[nn.Module, Dict[str, Any]]:
        n_benign = int(round(box.budget * self.mix))
        if box.budget - n_benign < 1:
            raise ValueError(f"A budget of {box.budget} with mix={self.mix} leaves no query for the attack.")
        reps = -(-n_benign // len(self.benign_x))
        order = np.concatenate([rng.permutation(len(self.benign_x)) for _ in range(max(reps, 1))])[:n_benign]
        mixer = _Mixer(box, self.benign_x[order], box.budget - n_benign, rng)
        inner: AttackResult = self.attack.extract(mixer, box.budget - n_benign, seed)
        mixer.flush()
        extra = {"inner_name": inner.name, "inner": inner.extra, "inner_substitute": inner.substitute,
                 "n_benign": n_benign, "is_benign": mixer.is_benign()}
        return self.attack._train(box.queries, box.outputs, seed), extra


class _Mixer:
    """A black box for the wrapped attack: tops up each of its calls with benign images, shuffled in."""

    def __init__(self, box: BudgetedBlackBox, benign: np.ndarray, attack_budget: int, rng: np.random.Generator):
        self.box, self.benign, self.rng = box, benign, rng
        self.ratio = len(benign) / attack_budget
        self.n_attack = self.n_benign = 0
        self._flags = []

    def __call__(self, x: np.ndarray) -> np.ndarray:
        self.n_attack += len(x)
        target = min(len(self.benign), int(np.floor(self.n_attack * self.ratio + 0.5)))
        extra = self.benign[self.n_benign:target]
        self.n_benign = target
        both = np.concatenate([np.asarray(x, dtype=np.float32), extra])
        is_benign = np.arange(len(both)) >= len(x)
        perm = self.rng.permutation(len(both))
        out = self.box(both[perm])
        self._flags.append(is_benign[perm])
        answers = np.empty_like(out)
        answers[perm] = out
        return answers[:len(x)]

    def flush(self) -> None:
        """Send the benign images not yet sent (when the attack spent less than its budget)."""
        if self.n_benign < len(self.benign):
            self.box(self.benign[self.n_benign:])
            self._flags.append(np.ones(len(self.benign) - self.n_benign, dtype=bool))
            self.n_benign = len(self.benign)

    def is_benign(self) -> np.ndarray:
        """(n_queries,) bool: which queries sent so far were benign."""
        return np.concatenate(self._flags) if self._flags else np.zeros(0, dtype=bool)
