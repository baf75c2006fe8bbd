"""Detection metrics for extraction-query detectors, computed as in the SAME release.

The attacker's queries are the positive class (label 1) and benign queries the negative class (label 0);
every detector score is "higher = more suspicious". The computation follows `evaluate_main.get_roc` of the
SAME release (Xie et al., "SAME: Sample Reconstruction against Model Extraction Attacks", AAAI 2024,
arXiv:2312.10578; see docs/same-method.md section 3.2):

* AUROC = ``auc(fpr, tpr)`` of ``sklearn.metrics.roc_curve``;
* AUPR = ``auc(recall, precision)`` of ``sklearn.metrics.precision_recall_curve``, attacker positive;
* FPR95 / FPR90 = the ROC's false-positive rate at 95% / 90% true-positive rate, read by linear
  interpolation between ROC points, like the release's ``scipy.interpolate.interp1d(tpr, fpr)``
  (which SciPy evaluates with ``np.interp``).

Unlike the release, values are fractions in [0, 1] (not percentages) and plain Python numbers, so a
result dict can go straight into JSON.

| Paper link: https://arxiv.org/abs/2312.10578
"""
from typing import Dict, Optional, Sequence, Union

import numpy as np
from sklearn.metrics import auc, precision_recall_curve, roc_curve

ArrayLike = Union[Sequence[float], np.ndarray]

__all__ = ["detection_metrics", "fpr_at_tpr", "queries_until_flagged"]


def _as_scores(scores: ArrayLike, name: str) -> np.ndarray:
    """Flatten ``scores`` to a float64 vector, refusing empty, NaN or infinite input."""
    if hasattr(scores, "detach"):  # a torch tensor
        scores = scores.detach().cpu().numpy()
    arr = np.asarray(scores, dtype=np.float64).reshape(-1)
    if arr.size == 0:
        raise ValueError(f"{name} is empty: at least one score is needed to compute detection metrics.")
    n_nan = int(np.isnan(arr).sum())
    if n_nan:
        raise ValueError(f"{name} contains {n_nan} NaN score(s); fix the detector or drop those queries first.")
    n_inf = int(np.isinf(arr).sum())
    if n_inf:
        raise ValueError(f"{name} contains {n_inf} infinite score(s); clip them to a finite value first.")
    return arr


def fpr_at_tpr(fpr: np.ndarray, tpr: np.ndarray, target_tpr: float) -> float:
    """False-positive rate of a ROC curve at ``target_tpr``, by linear interpolation between ROC points.

    Same as the SAME release's ``scipy.interpolate.interp1d(tpr, fpr)(target_tpr)``, which SciPy
    evaluates with ``np.interp``. Between two ROC points the reading is the straight segment joining
    them. When ``target_tpr`` equals a TPR shared by several ROC points (a horizontal stretch of the
    curve, e.g. exactly 3,800 of 4,000 attack queries caught), ``np.interp`` returns the LAST of them,
    i.e. the largest FPR at that TPR; we keep that convention so numbers match the release.

    :param fpr: false-positive rates of ``roc_curve``, non-decreasing.
    :param tpr: true-positive rates of ``roc_curve``, non-decreasing, from 0 to 1.
    :param target_tpr: the TPR to read the curve at, in [0, 1].
    :return: the interpolated FPR, in [0, 1].
    """
    if not 0.0 <= target_tpr <= 1.0:
        raise ValueError(f"target_tpr must lie in [0, 1], got {target_tpr}.")
    return float(np.interp(target_tpr, tpr, fpr))


def detection_metrics(benign_scores: ArrayLike, attack_scores: ArrayLike) -> Dict[str, Union[float, int]]:
    """AUROC, AUPR, FPR95 and FPR90 of a detector, with the attacker as the positive class.

    Ties between scores are handled as ``roc_curve`` does (tied queries move together, giving a diagonal
    ROC segment). The two populations need not be the same size, but note that AUPR depends on the
    ratio of attack to benign queries (the SAME protocol uses balanced sets).

    :param benign_scores: detector scores of benign queries (any shape; flattened), higher = more suspicious.
    :param attack_scores: detector scores of attacker queries (any shape; flattened).
    :return: ``{"auroc", "aupr", "fpr95", "fpr90"}`` as floats in [0, 1] and ``{"n_attack", "n_benign"}``
        as ints.
    :raises ValueError: if either input is empty or contains NaN or infinite values.

    Example::

        >>> detection_metrics([0.1, 0.2, 0.3], [0.7, 0.8, 0.9])["auroc"]
        1.0
    """
    benign = _as_scores(benign_scores, "benign_scores")
    attack = _as_scores(attack_scores, "attack_scores")
    labels = np.concatenate([np.zeros(benign.size, dtype=np.int64), np.ones(attack.size, dtype=np.int64)])
    scores = np.concatenate([benign, attack])

    fpr, tpr, _ = roc_curve(labels, scores, pos_label=1)
    precision, recall, _ = precision_recall_curve(labels, scores, pos_label=1)
    return {
        "auroc": float(auc(fpr, tpr)),
        "aupr": float(auc(recall, precision)),
        "fpr95": fpr_at_tpr(fpr, tpr, 0.95),
        "fpr90": fpr_at_tpr(fpr, tpr, 0.90),
        "n_attack": int(attack.size),
        "n_benign": int(benign.size),
    }


def queries_until_flagged(flags: Sequence[bool]) -> Optional[int]:
    """1-based index of the first flagged query of a stream, or None if no query was flagged.

    :param flags: per-query decisions of a (stateful) detector, in query order.
    :return: e.g. 1 if the very first query was flagged; None if none was.
    """
    hits = np.flatnonzero(np.asarray(flags, dtype=bool).reshape(-1))
    return int(hits[0]) + 1 if hits.size else None
