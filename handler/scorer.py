"""The SAME anomaly score (Xie et al., AAAI 2024), for a batch of queries.

rec = per-pixel MSE(G(x; mask 0), x)                               (G: the masked autoencoder)
dev = KL(softmax f_v(x) || softmax f_s(G(x))) / K                  (f_v: victim, f_s: shadow)
score = a * rec' + (1 - a) * dev'

rec' and dev' are z-scores of log(rec) and log(dev) with the mean and standard deviation measured
on held-out benign data at calibration: both terms are heavy-tailed and on different scales, so the
log-z puts them on one scale and makes `a` meaningful (a=1: reconstruction only).
dev' is one-sided, max(0, z): a shadow that agrees with the victim *more* than usual is no evidence of
benign intent (Jacobian-augmented queries make both models confident and agree), so only deviations
above the benign mean add suspicion. Without the hinge, such queries pull the combined score below the
reconstruction term alone. Higher means more suspicious.
"""
from dataclasses import asdict, dataclass
from typing import Optional, Sequence

import torch
from torch import nn

_EPS = 1e-12


@dataclass
class Calibration:
    """Benign statistics and the decision threshold, written by the archiver as calibration.json."""

    alpha: float
    rec_mu: float = 0.0
    rec_sigma: float = 1.0
    dev_mu: float = 0.0
    dev_sigma: float = 1.0
    threshold: float = float("inf")
    target_fpr: Optional[float] = None
    measured_fpr: Optional[float] = None
    n_benign: int = 0

    def __post_init__(self):
        if not 0.0 <= self.alpha <= 1.0:
            raise ValueError(f"calibration alpha must be in [0, 1], got {self.alpha}")
        if self.rec_sigma <= 0 or self.dev_sigma <= 0:
            raise ValueError("calibration sigmas must be positive")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class ScoreBatch:
    """Per-query outputs of one scored batch; every tensor has the batch as its first dimension."""

    logits: torch.Tensor
    rec: torch.Tensor
    dev: torch.Tensor
    score: torch.Tensor


def reconstruction_error(x: torch.Tensor, recon: torch.Tensor) -> torch.Tensor:
    """Per-pixel mean squared error per sample: (N, C, H, W) x 2 -> (N,)."""
    return (recon.float() - x.float()).pow(2).flatten(1).mean(1)


def normalised_terms(rec: torch.Tensor, dev: torch.Tensor, calibration: "Calibration"):
    """Two-sided log z-scores (rec_z, dev_z) of the raw terms against the benign calibration statistics."""
    c = calibration
    rec_z = (torch.log(rec.clamp_min(0) + _EPS) - c.rec_mu) / c.rec_sigma
    dev_z = (torch.log(dev.clamp_min(0) + _EPS) - c.dev_mu) / c.dev_sigma
    return rec_z, dev_z


def combine_terms(rec: torch.Tensor, dev: torch.Tensor, calibration: "Calibration",
                  alpha: Optional[float] = None) -> torch.Tensor:
    """The SAME score a * rec' + (1 - a) * max(0, dev') of raw terms; `alpha` overrides the calibrated a."""
    a = calibration.alpha if alpha is None else alpha
    rec_z, dev_z = normalised_terms(rec, dev, calibration)
    return a * rec_z + (1 - a) * dev_z.clamp_min(0)


def class_mean_kl(victim_logits: torch.Tensor, shadow_logits: torch.Tensor) -> torch.Tensor:
    """KL(softmax victim || softmax shadow) / K per sample: (N, K) x 2 -> (N,)."""
    log_pv = torch.log_softmax(victim_logits.float(), dim=1)
    log_ps = torch.log_softmax(shadow_logits.float(), dim=1)
    return (log_pv.exp() * (log_pv - log_ps)).sum(1) / victim_logits.shape[1]


class SameScorer(nn.Module):
    """Victim + MAE + shadow: one forward gives the victim's logits and the SAME score of each query.

    Inputs are images in [0, 1], (N, C, H, W). The MAE and the shadow work in model space ([-1, 1]);
    the victim gets (x - input_mean) / input_std, the normalisation it was trained with.
    """

    def __init__(self, victim: nn.Module, mae: nn.Module, shadow: nn.Module, calibration: Calibration,
                 input_mean: Sequence[float] = (0.5,), input_std: Sequence[float] = (0.5,)):
        super().__init__()
        self.victim, self.mae, self.shadow = victim.eval(), mae.eval(), shadow.eval()
        self.calibration = calibration
        self.register_buffer("input_mean", torch.tensor(list(input_mean), dtype=torch.float32).view(1, -1, 1, 1))
        self.register_buffer("input_std", torch.tensor(list(input_std), dtype=torch.float32).view(1, -1, 1, 1))

    def victim_logits(self, x01: torch.Tensor) -> torch.Tensor:
        return self.victim((x01 - self.input_mean) / self.input_std)

    def raw_terms(self, x01: torch.Tensor):
        """(victim logits, rec, dev) for images in [0, 1]."""
        logits = self.victim_logits(x01)
        x = x01 * 2 - 1
        recon, _ = self.mae(x, mask_ratio=0.0)
        recon = recon.clamp(-1, 1)
        return logits, reconstruction_error(x, recon), class_mean_kl(logits, self.shadow(recon))

    def combine(self, rec: torch.Tensor, dev: torch.Tensor, alpha: Optional[float] = None) -> torch.Tensor:
        """The normalised score from raw terms; `alpha` overrides the calibrated one (for sweeps)."""
        return combine_terms(rec, dev, self.calibration, alpha)

    @torch.no_grad()
    def forward(self, x01: torch.Tensor) -> ScoreBatch:
        logits, rec, dev = self.raw_terms(x01)
        return ScoreBatch(logits=logits.float(), rec=rec, dev=dev, score=self.combine(rec, dev))
