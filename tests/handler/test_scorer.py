import numpy as np
import pytest
import torch
from torch import nn

from archiver.calibration import conformal_threshold, fit_calibration
from handler.scorer import Calibration, SameScorer, class_mean_kl, combine_terms, reconstruction_error


class _Identity(nn.Module):
    """A perfect 'autoencoder': returns its input."""

    def forward(self, x, mask_ratio=0.0):
        return x, torch.zeros(x.shape[0], 1)


class _Zero(nn.Module):
    def forward(self, x, mask_ratio=0.0):
        return torch.zeros_like(x), torch.zeros(x.shape[0], 1)


class _MeanClassifier(nn.Module):
    """Logits that depend on the image mean, so victim and shadow agree on identical inputs."""

    def forward(self, x):
        m = x.mean(dim=(1, 2, 3))
        return torch.stack([m * 5, -m * 5, m * 0], dim=1)


def test_terms_at_their_extremes():
    x = torch.rand(6, 1, 8, 8)
    assert torch.allclose(reconstruction_error(x, x), torch.zeros(6))
    logits = torch.randn(6, 4)
    assert torch.allclose(class_mean_kl(logits, logits), torch.zeros(6), atol=1e-6)
    confident = torch.tensor([[10.0, 0, 0, 0]])
    opposite = torch.tensor([[0.0, 10, 0, 0]])
    assert class_mean_kl(confident, opposite) > 2.0  # about 10 nats / 4 classes


def test_perfect_reconstruction_scores_below_a_broken_one():
    calib = Calibration(alpha=0.5)
    x = torch.rand(4, 1, 8, 8) * 0.5 + 0.25
    good = SameScorer(_MeanClassifier(), _Identity(), _MeanClassifier(), calib)(x)
    bad = SameScorer(_MeanClassifier(), _Zero(), _MeanClassifier(), calib)(x)
    assert torch.all(good.rec < 1e-10) and torch.all(good.dev < 1e-6)
    assert torch.all(bad.rec > 0.01) and torch.all(bad.score > good.score)


def test_alpha_one_and_zero_select_one_term():
    scorer = SameScorer(_MeanClassifier(), _Zero(), _MeanClassifier(),
                        Calibration(alpha=1.0, rec_mu=0.0, rec_sigma=2.0, dev_mu=1.0, dev_sigma=3.0))
    rec, dev = torch.tensor([0.5, 2.0]), torch.tensor([7.0, 0.1])
    assert torch.allclose(scorer.combine(rec, dev), torch.log(rec) / 2.0, atol=1e-6)
    dev_z = (torch.log(dev) - 1.0) / 3.0
    assert dev_z[1] < 0  # below the benign mean: the one-sided dev' adds nothing
    assert torch.allclose(scorer.combine(rec, dev, alpha=0.0), dev_z.clamp_min(0), atol=1e-6)


def test_agreement_above_the_benign_norm_does_not_lower_the_score():
    calib = Calibration(alpha=0.5, rec_mu=0.0, rec_sigma=1.0, dev_mu=0.0, dev_sigma=1.0)
    rec = torch.tensor([1.0, 1.0])
    low_dev, usual_dev = torch.tensor([1e-6, 1e-6]), torch.tensor([1.0, 1.0])
    assert torch.equal(combine_terms(rec, low_dev, calib), combine_terms(rec, usual_dev, calib))


def test_calibration_hits_its_target_fpr_on_fresh_benign_data():
    rng = np.random.default_rng(0)
    rec_cal, dev_cal = rng.lognormal(-3, 0.4, 2000), rng.lognormal(-6, 1.0, 2000)
    calib = fit_calibration(rec_cal, dev_cal, alpha=0.5, target_fpr=0.01)
    scorer = SameScorer(_MeanClassifier(), _Zero(), _MeanClassifier(), calib)
    rec_new = torch.from_numpy(rng.lognormal(-3, 0.4, 20000))
    dev_new = torch.from_numpy(rng.lognormal(-6, 1.0, 20000))
    fpr = float((scorer.combine(rec_new, dev_new) > calib.threshold).double().mean())
    assert 0.004 < fpr < 0.016  # binomial noise around 1% for 2,000 calibration samples
    z = (np.log(rec_cal) - calib.rec_mu) / calib.rec_sigma
    assert abs(z.mean()) < 1e-6 and abs(z.std() - 1) < 1e-3


def test_conformal_threshold_rules():
    scores = np.arange(1, 101, dtype=float)  # 100 benign scores
    assert conformal_threshold(scores, 0.05) == 96.0  # ceil(101 * 0.95) = 96th smallest
    with pytest.raises(ValueError, match="too few"):
        conformal_threshold(scores[:10], 0.01)
    with pytest.raises(ValueError):
        conformal_threshold(scores, 0.0)
