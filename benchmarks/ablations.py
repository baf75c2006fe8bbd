"""Ablations of SAME: MAE mask ratio, MAE training epochs, MAE size, and the score weight alpha.

SAME (Xie et al., "SAME: Sample Reconstruction against Model Extraction Attacks", AAAI 2024) scores a query
x by a * rec' + (1 - a) * dev', where rec = per-pixel MSE(G(x; mask 0), x) for a masked autoencoder G and
dev = KL(softmax f_v(x) || softmax f_s(G(x))) / K for the victim f_v and a shadow f_s trained on masked
reconstructions; rec' and dev' are log-z-scores with benign calibration statistics (handler/scorer.py).
same-method.md section 8.8 lists the ablations a faithful implementation must support:
alpha in {1 (reconstruction only), 0 (deviation only), mixed}, the MAE mask ratio, the MAE training
epochs and the embedding size. The paper's ablation numbers are unknown.

* :func:`run_ablations` retrains the MAE and the shadow for each :class:`AblationVariant` (preset overrides)
  and reports detection metrics of the full score and of each term alone on fixed benign / attack queries.
* :func:`alpha_sweep` re-weights already computed terms (e.g. read from the server's audit log) with the
  served score's own arithmetic (``SameScorer.combine``): no retraining.

Images are float32 (N, C, H, W) in [0, 1], like everywhere in the project.

| Paper link: https://arxiv.org/abs/2312.10578

Example::

    >>> from archiver.presets import get_preset
    >>> [v.name for v in default_variants(get_preset("compact"), quick=False)]
    ['base', 'mask=0.5', 'mask=0.9', 'mae_epochs=5', 'paper-arch@3ep']
"""
import logging
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from archiver.calibration import fit_calibration, raw_terms
from archiver.data import DatasetSplits
from archiver.presets import Preset
from archiver.training import accuracy, mae_config_for, masked_reconstruction, train_defense
from benchmarks.metrics import detection_metrics
from handler.checkpoints import classifier_meta, instantiate_classifier
from handler.classifiers import CLASSIFIERS
from handler.scorer import Calibration, SameScorer, combine_terms, normalised_terms

logger = logging.getLogger(__name__)

__all__ = ["AblationVariant", "default_variants", "run_ablations", "alpha_sweep", "mae_config_for",
           "train_defense", "QUICK_OVERRIDES", "PAPER_ARCH", "MASK_RATIOS", "DEFAULT_ALPHAS"]

#: The paper's MAE architecture (same-method.md section 2.3): patch 2, dim 192, 12 + 4 blocks of 3 heads.
PAPER_ARCH: Dict[str, Any] = {"patch_size": 2, "dim": 192, "enc_depth": 12, "enc_heads": 3, "dec_depth": 4,
                              "dec_heads": 3}
#: MAE epochs of the paper-architecture variant outside quick mode: about 5 min an epoch on 3,500 MNIST
#: images on one loaded CPU core, so the paper's 500 epochs are out of reach.
PAPER_ARCH_EPOCHS = 3
#: Mask ratios used while training the MAE (and while making the shadow's training inputs).
MASK_RATIOS: Tuple[float, ...] = (0.5, 0.75, 0.9)
#: Quick mode: a tiny MAE and one shadow epoch, so five variants take seconds each on full mnist5k. The
#: shadow gets the paper's lr 0.1: at the compact preset's 0.05 one epoch leaves it at ~20% accuracy and the
#: deviation term then ranks attacks BELOW benign queries (0.1: ~50% accuracy, dev AUROC ~0.9 on noise).
QUICK_OVERRIDES: Dict[str, Any] = {"dim": 32, "enc_depth": 1, "enc_heads": 2, "dec_depth": 1, "dec_heads": 2,
                                   "mae_epochs": 2, "mae_warmup_epochs": 1, "shadow_epochs": 1,
                                   "shadow_lr": 0.1}
DEFAULT_ALPHAS: Tuple[float, ...] = (0.0, 0.1, 0.25, 0.5, 0.75, 0.9, 0.99, 1.0)

Array = Union[np.ndarray, torch.Tensor, Sequence[float]]


@dataclass
class AblationVariant:
    """One ablation setting: a name for reports and the Preset fields it changes.

    :param name: unique label, e.g. ``"mask=0.9"`` or ``"paper-arch@3ep"`` (state reduced budgets in it).
    :param overrides: Preset field -> value, applied with ``Preset.with_overrides`` on top of the base preset.
    """

    name: str
    overrides: Dict[str, Any] = field(default_factory=dict)

    def preset(self, base: Preset) -> Preset:
        """The base preset with this variant's overrides (unknown fields raise ``ArchiverError``)."""
        return base.with_overrides(**self.overrides)


# ------------------------------------------------------------------------------------------------------
# Variants
# ------------------------------------------------------------------------------------------------------
def default_variants(base: Preset, quick: bool = False) -> List[AblationVariant]:
    """The standard ablation grid around ``base``; values equal to the base's are covered by ``"base"``.

    * ``base``: the base preset (in quick mode: the base shrunk by :data:`QUICK_OVERRIDES`);
    * ``mask=r`` for r in :data:`MASK_RATIOS` other than the base's training mask ratio;
    * ``mae_epochs=n``: a short MAE schedule (base epochs // 6, at least 1; quick: 1);
    * ``paper-arch@3ep``: the paper's MAE architecture (:data:`PAPER_ARCH`) at a CPU-affordable epoch budget.
      In quick mode only the paper's patch size 2 is kept, at the tiny width and depth: ``patch2-tiny@1ep``.

    All other settings (learning rates, shadow epochs, alpha, target FPR) are the base's, or in quick mode
    the base's with :data:`QUICK_OVERRIDES`, the same for every variant.

    :param base: the preset the defense under test was trained with.
    :param quick: tiny sizes and epochs (seconds per variant instead of minutes).
    :return: variants with unique names, ``"base"`` first.
    """
    common = dict(QUICK_OVERRIDES) if quick else {}
    trained = base.with_overrides(**common)
    variants = [AblationVariant("base", dict(common))]
    for ratio in MASK_RATIOS:
        if not np.isclose(ratio, trained.mask_ratio):
            variants.append(AblationVariant(f"mask={ratio:g}", {**common, "mask_ratio": ratio}))
    short = 1 if quick else max(1, trained.mae_epochs // 6)
    if short != trained.mae_epochs:
        variants.append(AblationVariant(f"mae_epochs={short}", {**common, "mae_epochs": short}))
    variants.append(_arch_variant(common, quick))
    return variants


def _arch_variant(common: Dict[str, Any], quick: bool) -> AblationVariant:
    """The MAE-size variant: the paper's architecture, or its patch size alone in quick mode."""
    if quick:
        return AblationVariant("patch2-tiny@1ep", {**common, "patch_size": 2, "mae_epochs": 1})
    return AblationVariant(f"paper-arch@{PAPER_ARCH_EPOCHS}ep", {**PAPER_ARCH, "mae_epochs": PAPER_ARCH_EPOCHS})


def _classifier_factory(victim: nn.Module, data: DatasetSplits) -> Callable[[], nn.Module]:
    """A factory of untrained copies of a built-in victim architecture (conv3, resnet18)."""
    arch = next((name for name, cls in CLASSIFIERS.items() if type(victim) is cls), None)
    if arch is None:
        raise ValueError(f"the victim is a {type(victim).__name__}, not a built-in architecture "
                         f"({sorted(CLASSIFIERS)}); pass make_classifier, e.g. "
                         f"lambda: instantiate_classifier(read_classifier_meta('victim.pt')).")
    meta = classifier_meta(arch, data.in_chans, data.num_classes, data.img_size)
    return lambda: instantiate_classifier(meta)


# ------------------------------------------------------------------------------------------------------
# Scoring
# ------------------------------------------------------------------------------------------------------
def _as_calibration(calibration: Union[Calibration, Mapping[str, Any]]) -> Calibration:
    return calibration if isinstance(calibration, Calibration) else Calibration(**dict(calibration))


def _combine(calibration: Calibration, rec: Array, dev: Array, alpha: Optional[float] = None) -> np.ndarray:
    """The served SAME score of raw terms (``handler.scorer.combine_terms``), as float64 numpy."""
    return combine_terms(torch.as_tensor(np.asarray(rec, dtype=np.float64)),
                         torch.as_tensor(np.asarray(dev, dtype=np.float64)), calibration, alpha).numpy()


def score_views(rec: Array, dev: Array, calibration: Union[Calibration, Mapping[str, Any]]) -> Dict[str, np.ndarray]:
    """The calibrated SAME score and each term alone (two-sided log z-scores, which rank like the raw terms)."""
    calibration = _as_calibration(calibration)
    rec_z, dev_z = normalised_terms(torch.as_tensor(np.asarray(rec, dtype=np.float64)),
                                    torch.as_tensor(np.asarray(dev, dtype=np.float64)), calibration)
    return {"same": _combine(calibration, rec, dev), "rec_only": rec_z.numpy(), "dev_only": dev_z.numpy()}


def _terms(scorer: SameScorer, x: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """(rec, dev) of images in [0, 1]."""
    _, rec, dev = raw_terms(scorer, x)
    return rec, dev


def _detection(scorer: SameScorer, benign: Tuple[np.ndarray, np.ndarray],
               attack: Tuple[np.ndarray, np.ndarray]) -> Dict[str, Dict[str, float]]:
    """Metrics of the calibrated score and of each term alone, benign vs one attack set."""
    views_b, views_a = score_views(*benign, scorer.calibration), score_views(*attack, scorer.calibration)
    return {key: detection_metrics(views_b[key], views_a[key]) for key in views_b}


def alpha_sweep(rec_benign: Array, dev_benign: Array, rec_attack_by_set: Mapping[str, Array],
                dev_attack_by_set: Mapping[str, Array], calibration: Union[Calibration, Mapping[str, Any]],
                alphas: Sequence[float] = DEFAULT_ALPHAS, metric: str = "auroc") -> Dict[float, Dict[str, float]]:
    """Detection quality of a * rec' + (1 - a) * dev' for several a, from raw terms, without retraining.

    The score is computed exactly as the server does (``SameScorer.combine`` with the calibration's log-z
    statistics); only alpha changes. a = 1 ranks queries like rec alone; a = 0 is the one-sided dev'.

    :param rec_benign: raw reconstruction errors of benign queries, (N,).
    :param dev_benign: raw deviations (KL / K) of the same benign queries, (N,).
    :param rec_attack_by_set: attack name -> raw reconstruction errors of its queries.
    :param dev_attack_by_set: attack name -> raw deviations; same names and lengths as ``rec_attack_by_set``.
    :param calibration: a :class:`Calibration` or its dict (calibration.json); its alpha is ignored.
    :param alphas: the weights of the reconstruction term to try, each in [0, 1]. Default: 0 ... 1.
    :param metric: a key of :func:`benchmarks.metrics.detection_metrics`. Default: ``"auroc"``.
    :return: ``{alpha: {attack name: metric}}``.
    :raises ValueError: on mismatched attack names, an alpha outside [0, 1] or an unknown metric.
    """
    if set(rec_attack_by_set) != set(dev_attack_by_set):
        raise ValueError(f"rec and dev attack sets differ: {sorted(rec_attack_by_set)} vs {sorted(dev_attack_by_set)}")
    bad = [a for a in alphas if not 0.0 <= float(a) <= 1.0]
    if bad:
        raise ValueError(f"every alpha must be in [0, 1]; got {bad}")
    calibration = _as_calibration(calibration)
    out: Dict[float, Dict[str, float]] = {}
    for alpha in alphas:
        benign = _combine(calibration, rec_benign, dev_benign, float(alpha))
        row = {}
        for name in rec_attack_by_set:
            attack = _combine(calibration, rec_attack_by_set[name], dev_attack_by_set[name], float(alpha))
            metrics = detection_metrics(benign, attack)
            if metric not in metrics:
                raise ValueError(f"unknown metric {metric!r}; choose one of {sorted(metrics)}")
            row[name] = metrics[metric]
        out[float(alpha)] = row
    return out


# ------------------------------------------------------------------------------------------------------
# Running the grid
# ------------------------------------------------------------------------------------------------------
def _check_images(x: np.ndarray, data: DatasetSplits, name: str) -> np.ndarray:
    """Refuse arrays that are not (N, C, H, W) images shaped like the training data."""
    x = np.ascontiguousarray(x, dtype=np.float32)
    want = (data.in_chans, data.img_size, data.img_size)
    if x.ndim != 4 or x.shape[1:] != want or len(x) == 0:
        raise ValueError(f"{name} must be a non-empty (N, {want[0]}, {want[1]}, {want[2]}) array like the "
                         f"training images; got shape {x.shape}")
    if not np.isfinite(x).all():
        raise ValueError(f"{name} contains NaN or infinite pixels")
    return x


def _subsample(x: np.ndarray, max_queries: Optional[int], seed: int) -> np.ndarray:
    """A seeded random subset of at most max_queries rows, in their original order (all rows if None)."""
    if max_queries is None or len(x) <= max_queries:
        return x
    if max_queries < 1:
        raise ValueError(f"max_queries must be a positive integer, got {max_queries}")
    keep = np.sort(np.random.default_rng(seed).choice(len(x), size=max_queries, replace=False))
    return x[keep]


def _check_variants(variants: Sequence[AblationVariant], base: Preset) -> None:
    """Unique names, and overrides that the preset knows (fail before hours of training, not after)."""
    names = [v.name for v in variants]
    dupes = sorted({n for n in names if names.count(n) > 1})
    if dupes:
        raise ValueError(f"ablation variant names must be unique; repeated: {dupes}")
    for v in variants:
        v.preset(base)


def _run_variant(variant: AblationVariant, victim: nn.Module, data: DatasetSplits, base: Preset,
                 benign_x: np.ndarray, attack_sets: Mapping[str, np.ndarray],
                 make_classifier: Callable[[], nn.Module], seed: int, progress: bool,
                 input_mean: Sequence[float], input_std: Sequence[float]) -> Dict[str, Any]:
    """Train, calibrate and evaluate one variant; returns its result entry."""
    preset = variant.preset(base)
    mae, shadow, stats = train_defense(preset, data, make_classifier, seed, progress)
    t0 = time.time()
    scorer = SameScorer(victim, mae, shadow, calibration=None, input_mean=input_mean, input_std=input_std)
    scorer.calibration = fit_calibration(*_terms(scorer, data.calib[0]), preset.alpha, preset.target_fpr)
    rec_test, dev_test = _terms(scorer, data.test[0])
    benign = _terms(scorer, benign_x)
    attacks = {name: _terms(scorer, x) for name, x in attack_sets.items()}
    test_scores = _combine(scorer.calibration, rec_test, dev_test)
    return {
        "overrides": dict(variant.overrides),
        "mask_ratio": preset.mask_ratio,
        "mae_epochs": preset.mae_epochs,
        "mae_config": mae.config.to_dict(),
        "mae_parameters": sum(p.numel() for p in mae.parameters()),
        "train_seconds": round(sum(stats["seconds"].values()), 2),
        "score_seconds": round(time.time() - t0, 2),
        "mae_final_train_loss": stats["mae_loss"][-1] if stats["mae_loss"] else None,
        "mae_test_mse": float(np.mean(rec_test)),
        "shadow_test_acc": accuracy(shadow, data.test[0], data.test[1], transform=masked_reconstruction(mae, 0.0)),
        "calibration": scorer.calibration.to_dict(),
        "test_benign_fpr": float((test_scores > scorer.calibration.threshold).mean()),
        "detection": {name: _detection(scorer, benign, terms) for name, terms in attacks.items()},
        "alpha_sweep": alpha_sweep(*benign, {n: t[0] for n, t in attacks.items()},
                                   {n: t[1] for n, t in attacks.items()}, scorer.calibration),
    }


def run_ablations(victim: nn.Module, data: DatasetSplits, base: Preset, benign_x: np.ndarray,
                  attack_sets: Dict[str, np.ndarray], variants: List[AblationVariant], seed: int = 0,
                  progress: bool = False, input_mean: Sequence[float] = (0.5,), input_std: Sequence[float] = (0.5,),
                  make_classifier: Optional[Callable[[], nn.Module]] = None,
                  max_queries: Optional[int] = None) -> Dict[str, Any]:
    """Retrain SAME's MAE and shadow per variant and measure detection on fixed benign and attack queries.

    Each variant trains a fresh MAE on ``data.train`` (its preset's sizes, epochs and training mask ratio)
    and a fresh victim-architecture shadow on that MAE's masked reconstructions, calibrates on
    ``data.calib`` (``fit_calibration`` with the variant preset's alpha and target FPR), then scores
    ``benign_x`` and every attack set. The victim is shared and never retrained. Every variant uses the
    same ``seed``, so results are reproducible and variants differ only by their overrides.

    :param victim: the trained victim f_v (put in eval mode).
    :param data: the owner's data splits (train: MAE and shadow; calib: normalisation and threshold;
        test: the MAE's test MSE, the shadow's accuracy and the benign FPR at the threshold).
    :param base: the preset the variants' overrides apply to.
    :param benign_x: benign queries, (N, C, H, W) in [0, 1].
    :param attack_sets: attack name -> its queries, (M, C, H, W) in [0, 1].
    :param variants: the settings to compare, e.g. :func:`default_variants`.
    :param seed: seeds every variant's initialisation, batching and masking. Default: 0.
    :param progress: show tqdm bars. Default: False.
    :param input_mean: the victim's input normalisation (per channel). Default: (0.5,).
    :param input_std: ditto. Default: (0.5,).
    :param make_classifier: returns an untrained shadow of the victim's architecture. Default: rebuild a
        built-in victim (conv3, resnet18) from its class; required for a custom victim.
    :param max_queries: score at most this many queries per set (a seeded random subset, the same for every
        variant), to bound the scoring cost of large MAEs. Default: None (all).
    :return: ``{"seed", "base_preset", "variants": {name: {"overrides", "mask_ratio", "mae_epochs",
        "mae_config", "mae_parameters", "train_seconds", "score_seconds", "mae_final_train_loss",
        "mae_test_mse", "shadow_test_acc", "calibration", "test_benign_fpr",
        "detection": {attack: {"same" | "rec_only" | "dev_only": detection_metrics(...)}},
        "alpha_sweep": {alpha: {attack: auroc}}}}}``.
    :raises ValueError: on malformed queries, duplicate variant names or too few calibration images
        for the target FPR; ``ArchiverError`` on an unknown override.
    """
    _check_variants(variants, base)
    benign_x = _subsample(_check_images(benign_x, data, "benign_x"), max_queries, seed)
    attack_sets = {name: _subsample(_check_images(x, data, f"attack set {name!r}"), max_queries, seed)
                   for name, x in attack_sets.items()}
    make_classifier = make_classifier or _classifier_factory(victim, data)
    victim.eval()
    results: Dict[str, Any] = {}
    for variant in tqdm(variants, desc="ablations", disable=not progress, leave=False):
        results[variant.name] = _run_variant(variant, victim, data, base, benign_x, attack_sets, make_classifier,
                                             seed, progress, input_mean, input_std)
        logger.info("ablation %s: trained in %.1f s, MAE test MSE %.4f, AUROC %s", variant.name,
                    results[variant.name]["train_seconds"], results[variant.name]["mae_test_mse"],
                    {a: round(m["same"]["auroc"], 3) for a, m in results[variant.name]["detection"].items()})
    return {"seed": seed, "base_preset": base.to_dict(), "variants": results}
