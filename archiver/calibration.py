"""Calibration on held-out benign data: the normalisation of the two SAME terms and the threshold."""
import math
from typing import Tuple

import numpy as np
import torch

from handler.scorer import Calibration, SameScorer, combine_terms


@torch.no_grad()
def raw_terms(scorer: SameScorer, x: np.ndarray, batch_size: int = 256) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(victim logits, rec, dev) for images in [0, 1], batched."""
    logits, rec, dev = [], [], []
    for start in range(0, len(x), batch_size):
        lg, r, d = scorer.raw_terms(torch.from_numpy(x[start:start + batch_size]))
        logits.append(lg.numpy())
        rec.append(r.numpy())
        dev.append(d.numpy())
    return np.concatenate(logits), np.concatenate(rec), np.concatenate(dev)


@torch.no_grad()
def victim_logits(scorer: SameScorer, x: np.ndarray, batch_size: int = 256) -> np.ndarray:
    """The victim's logits alone for images in [0, 1], batched (no MAE or shadow pass)."""
    return np.concatenate([scorer.victim_logits(torch.from_numpy(x[start:start + batch_size])).numpy()
                           for start in range(0, len(x), batch_size)])


def calibrate_scorer(scorer: SameScorer, x_calib: np.ndarray, x_test: np.ndarray, alpha: float,
                     target_fpr: float) -> Tuple[Calibration, float, float]:
    """Fit the scorer's calibration on x_calib and set it; returns (calibration, benign FPR on x_test,
    mean unmasked reconstruction error on x_test)."""
    _, rec, dev = raw_terms(scorer, x_calib)
    scorer.calibration = fit_calibration(rec, dev, alpha, target_fpr)
    _, rec_t, dev_t = raw_terms(scorer, x_test)
    test_scores = scorer.combine(torch.from_numpy(rec_t), torch.from_numpy(dev_t)).numpy()
    return scorer.calibration, float((test_scores > scorer.calibration.threshold).mean()), float(np.mean(rec_t))


def conformal_threshold(scores: np.ndarray, target_fpr: float) -> float:
    """The ceil((n + 1)(1 - fpr))-th smallest benign score: a fresh benign query exceeds it with
    probability at most target_fpr (split-conformal guarantee for exchangeable data)."""
    if not 0 < target_fpr < 1:
        raise ValueError(f"target_fpr must be in (0, 1), got {target_fpr}")
    s = np.sort(np.asarray(scores, dtype=np.float64))
    k = math.ceil((len(s) + 1) * (1 - target_fpr))
    if k > len(s):
        raise ValueError(f"{len(s)} benign samples are too few for a target FPR of {target_fpr}; "
                         f"need at least {math.ceil(1 / target_fpr)}")
    return float(s[k - 1])


def fit_calibration(rec: np.ndarray, dev: np.ndarray, alpha: float, target_fpr: float) -> Calibration:
    """Log-z statistics of both terms, then the threshold of the combined score at target_fpr."""
    log_rec, log_dev = np.log(np.clip(rec, 0, None) + 1e-12), np.log(np.clip(dev, 0, None) + 1e-12)
    calib = Calibration(alpha=alpha, rec_mu=float(log_rec.mean()), rec_sigma=float(log_rec.std() + 1e-6),
                        dev_mu=float(log_dev.mean()), dev_sigma=float(log_dev.std() + 1e-6),
                        target_fpr=target_fpr, n_benign=int(len(rec)))
    scores = combine_terms(torch.from_numpy(np.asarray(rec, np.float64)), torch.from_numpy(np.asarray(dev, np.float64)),
                           calib).numpy()
    calib.threshold = conformal_threshold(scores, target_fpr)
    calib.measured_fpr = float((scores > calib.threshold).mean())
    return calib
