"""Writers for benchmark results: a Markdown table, ROC curves, score histograms and strict JSON.

A detection result has the form ``{"detection": {attack: {detector: metrics}}, ...}`` where ``metrics`` is
the dict of :func:`benchmarks.metrics.detection_metrics` (auroc, aupr, fpr95, fpr90, n_attack, n_benign),
following the evaluation protocol of SAME (Xie et al., AAAI 2024, arXiv:2312.10578, section 3.2 of
docs/same-method.md). Plots take raw scores: ``{attack: {detector: (benign_scores, attack_scores)}}``.

Plots draw on a ``matplotlib.figure.Figure`` with an explicit Agg canvas, so no GUI backend is needed and
the global pyplot state is never touched; matplotlib is imported inside the plotting functions, which
keeps ``import benchmarks.report`` cheap.
"""
import json
import math
import os
from pathlib import Path
from typing import TYPE_CHECKING, Any, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

if TYPE_CHECKING:  # pragma: no cover
    from matplotlib.figure import Figure

PathLike = Union[str, "os.PathLike[str]"]
ScorePair = Tuple[Sequence[float], Sequence[float]]  # (benign_scores, attack_scores)
ScoresByAttack = Mapping[str, Mapping[str, ScorePair]]

__all__ = ["markdown_table", "plot_roc_curves", "plot_score_histograms", "write_json"]

_COLUMNS = ("auroc", "aupr", "fpr95", "fpr90")


def markdown_table(detection: Mapping[str, Mapping[str, Mapping[str, Any]]]) -> str:
    """A Markdown table with one row per (attack, detector), metrics to 3 decimals.

    The best AUROC of each attack is in bold (every detector that ties for it). Rows keep the dicts'
    order. FPR95/FPR90 are fractions of benign queries flagged when 95%/90% of attack queries are caught.

    :param detection: ``{attack: {detector: {"auroc", "aupr", "fpr95", "fpr90", "n_attack", "n_benign"}}}``.
    :return: the table, ending with a newline.
    """
    lines = [
        "| attack | detector | AUROC | AUPR | FPR95 | FPR90 | n_attack | n_benign |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for attack, by_detector in detection.items():
        aurocs = [float(m["auroc"]) for m in by_detector.values()]
        best = round(max(aurocs), 3) if aurocs else None
        for detector, m in by_detector.items():
            cells = [f"{float(m[key]):.3f}" for key in _COLUMNS]
            if best is not None and round(float(m["auroc"]), 3) == best:
                cells[0] = f"**{cells[0]}**"
            counts = f"{m.get('n_attack', '')} | {m.get('n_benign', '')}"
            lines.append(f"| {attack} | {detector} | " + " | ".join(cells) + f" | {counts} |")
    return "\n".join(lines) + "\n"


def _new_figure(n_panels: int, panel_size: Tuple[float, float] = (4.5, 4.0)) -> Tuple["Figure", List[Any]]:
    """A figure with ``n_panels`` axes on a grid of at most 3 columns, drawn by an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    ncols = min(3, max(1, n_panels))
    nrows = math.ceil(n_panels / ncols)
    fig = Figure(figsize=(panel_size[0] * ncols, panel_size[1] * nrows))
    FigureCanvasAgg(fig)
    axes = [fig.add_subplot(nrows, ncols, i + 1) for i in range(n_panels)]
    return fig, axes


def _save(fig: "Figure", path: PathLike) -> Path:
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(out, dpi=120)
    return out


def plot_roc_curves(scores_by_attack: ScoresByAttack, path: PathLike) -> Path:
    """One ROC panel per attack, with every detector's curve and its AUROC in the legend.

    :param scores_by_attack: ``{attack: {detector: (benign_scores, attack_scores)}}``, higher = more suspicious.
    :param path: output image file (the format follows the extension, e.g. ``.png``); parents are created.
    :return: ``path`` as a :class:`pathlib.Path`.
    """
    from sklearn.metrics import auc, roc_curve

    if not scores_by_attack:
        raise ValueError("scores_by_attack is empty: nothing to plot.")
    fig, axes = _new_figure(len(scores_by_attack))
    for ax, (attack, by_detector) in zip(axes, scores_by_attack.items()):
        for detector, (benign, attacked) in by_detector.items():
            b = np.asarray(benign, dtype=np.float64).reshape(-1)
            a = np.asarray(attacked, dtype=np.float64).reshape(-1)
            labels = np.concatenate([np.zeros(b.size), np.ones(a.size)])
            fpr, tpr, _ = roc_curve(labels, np.concatenate([b, a]))
            ax.plot(fpr, tpr, label=f"{detector} (AUROC {auc(fpr, tpr):.3f})")
        ax.plot([0, 1], [0, 1], color="grey", linestyle=":", linewidth=1)
        ax.set(title=str(attack), xlabel="false-positive rate (benign flagged)",
               ylabel="true-positive rate (attack caught)", xlim=(0, 1), ylim=(0, 1.01))
        ax.legend(loc="lower right", fontsize="small")
    return _save(fig, path)


def plot_score_histograms(
    scores_by_attack: ScoresByAttack,
    detector: str,
    path: PathLike,
    threshold: Optional[float] = None,
    bins: int = 50,
    log: bool = True,
) -> Path:
    """Histograms of one detector's scores: benign against each attack, one panel per attack.

    :param scores_by_attack: ``{attack: {detector: (benign_scores, attack_scores)}}``; attacks without
        ``detector`` are skipped.
    :param detector: the detector to plot.
    :param path: output image file; parents are created.
    :param threshold: a decision threshold to draw as a vertical line. Default: None (no line).
    :param bins: bins per panel, shared by the two histograms. Default: 50.
    :param log: log-scaled counts, so a few far-out scores stay visible. Default: True.
    :return: ``path`` as a :class:`pathlib.Path`.
    """
    panels = [(attack, d[detector]) for attack, d in scores_by_attack.items() if detector in d]
    if not panels:
        raise ValueError(f"No attack in scores_by_attack has scores for detector {detector!r}.")
    fig, axes = _new_figure(len(panels))
    for ax, (attack, (benign, attacked)) in zip(axes, panels):
        b = np.asarray(benign, dtype=np.float64).reshape(-1)
        a = np.asarray(attacked, dtype=np.float64).reshape(-1)
        both = np.concatenate([b, a])
        lo, hi = float(both.min()), float(both.max())
        edges = np.linspace(lo, hi if hi > lo else lo + 1.0, bins + 1)
        ax.hist(b, bins=edges, alpha=0.6, label=f"benign (n={b.size})", log=log)
        ax.hist(a, bins=edges, alpha=0.6, label=f"{attack} (n={a.size})", log=log)
        if threshold is not None:
            ax.axvline(threshold, color="black", linestyle="--", linewidth=1, label=f"threshold {threshold:.4g}")
        ax.set(title=f"{detector}: benign vs {attack}", xlabel="score (higher = more suspicious)", ylabel="count")
        ax.legend(fontsize="small")
    return _save(fig, path)


def _to_builtin(obj: Any) -> Any:
    """``json.dump`` fallback for numpy scalars and arrays and for paths."""
    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"Object of type {type(obj).__name__} is not JSON serialisable.")


def _first_nonfinite(obj: Any, where: str = "result") -> Optional[str]:
    """Location (e.g. ``result['detection']['jbda']['prada']['auroc']``) of the first NaN/inf, or None."""
    if isinstance(obj, Mapping):
        for key, value in obj.items():
            found = _first_nonfinite(value, f"{where}[{key!r}]")
            if found:
                return found
    elif isinstance(obj, (list, tuple)):
        for i, value in enumerate(obj):
            found = _first_nonfinite(value, f"{where}[{i}]")
            if found:
                return found
    elif isinstance(obj, np.ndarray) and obj.dtype.kind in "fc":
        if not np.isfinite(obj).all():
            return where
    elif isinstance(obj, (float, np.floating)) and not math.isfinite(float(obj)):
        return where
    return None


def write_json(result: Mapping[str, Any], path: PathLike) -> Path:
    """Write ``result`` as sorted, 2-space-indented JSON, refusing NaN and infinity.

    Numpy scalars and arrays are converted to Python numbers and lists.

    :param result: the benchmark result.
    :param path: output file; parents are created.
    :return: ``path`` as a :class:`pathlib.Path`.
    :raises ValueError: if ``result`` holds a NaN or infinite number (the message says where); nothing is
        written in that case.
    """
    try:
        text = json.dumps(result, sort_keys=True, indent=2, allow_nan=False, default=_to_builtin)
    except ValueError as err:
        where = _first_nonfinite(result) or "result"
        raise ValueError(
            f"Cannot write {path}: {where} is NaN or infinite, which strict JSON does not allow. "
            "Fix or drop that value (e.g. store None) before writing."
        ) from err
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text + "\n", encoding="utf-8")
    return out
