"""Tests for benchmarks.metrics: hand-computed cases, the release's interpolation, and input errors."""
import json

import numpy as np
import pytest
from numpy.testing import assert_allclose
from scipy.interpolate import interp1d
from sklearn.metrics import roc_curve

from benchmarks.metrics import detection_metrics, fpr_at_tpr, queries_until_flagged

KEYS = {"auroc", "aupr", "fpr95", "fpr90", "n_attack", "n_benign"}


def test_perfect_separation():
    m = detection_metrics([0.1, 0.2, 0.3, 0.4], [0.6, 0.7, 0.8])
    assert set(m) == KEYS
    assert m["auroc"] == 1.0 and m["aupr"] == 1.0
    assert m["fpr95"] == 0.0 and m["fpr90"] == 0.0
    assert (m["n_benign"], m["n_attack"]) == (4, 3)


def test_reversed_scores():
    m = detection_metrics([0.6, 0.7, 0.8], [0.1, 0.2, 0.3])
    assert m["auroc"] == 0.0
    assert m["fpr95"] == 1.0 and m["fpr90"] == 1.0


def test_hand_computed_case_with_a_tie():
    # benign 0.1 0.2 0.5, attack 0.5 0.6 0.7 0.8: the ROC is (0,0) (0,.25) (0,.5) (0,.75) (1/3,1) (1,1);
    # the tie at 0.5 gives the diagonal segment from (0, .75) to (1/3, 1).
    m = detection_metrics([0.1, 0.2, 0.5], [0.5, 0.6, 0.7, 0.8])
    assert_allclose(m["fpr95"], (0.95 - 0.75) / 0.25 / 3, atol=1e-12)  # 0.2667
    assert_allclose(m["fpr90"], (0.90 - 0.75) / 0.25 / 3, atol=1e-12)  # 0.2
    assert_allclose(m["auroc"], 11.5 / 12, atol=1e-12)  # Mann-Whitney: 11 wins + 1 tie out of 12 pairs
    # PR points (recall, precision): (0,1) (.25,1) (.5,1) (.75,1) (1,.8) -> area .75 + .25 * .9
    assert_allclose(m["aupr"], 0.975, atol=1e-12)


def test_all_tied_scores_are_chance():
    # every query ties: the ROC is the diagonal from (0, 0) to (1, 1)
    m = detection_metrics(np.zeros(10), np.zeros(10))
    assert m["auroc"] == 0.5
    assert_allclose([m["fpr95"], m["fpr90"]], [0.95, 0.90], atol=1e-12)


def test_identical_distributions_give_auroc_near_half():
    rng = np.random.default_rng(0)
    m = detection_metrics(rng.normal(size=5000), rng.normal(size=5000))
    # The null standard deviation of AUROC for 5000 vs 5000 is sqrt(10001 / (12 * 5000**2)) = 0.0058;
    # this seed measures 0.5093 (1.6 standard deviations off). 0.02 is about 3.5 standard deviations.
    assert abs(m["auroc"] - 0.5) < 0.02
    assert abs(m["fpr95"] - 0.95) < 0.02  # measured 0.9504


def test_fpr_matches_the_release_interp1d():
    # The SAME release reads FPR95 with scipy's interp1d(tpr, fpr); integer scores make many ties.
    rng = np.random.default_rng(1)
    for _ in range(200):
        b = rng.integers(0, 6, rng.integers(1, 30)).astype(float)
        a = rng.integers(2, 8, rng.integers(1, 30)).astype(float)
        fpr, tpr, _ = roc_curve(np.r_[np.zeros(b.size), np.ones(a.size)], np.r_[b, a])
        for target in (0.9, 0.95):
            assert_allclose(fpr_at_tpr(fpr, tpr, target), float(interp1d(tpr, fpr)(target)), atol=1e-12)
        m = detection_metrics(b, a)
        assert_allclose(m["fpr95"], float(interp1d(tpr, fpr)(0.95)), atol=1e-12)


def test_results_are_plain_json_numbers():
    m = detection_metrics(np.float32([0.1, 0.3]), np.float32([0.2, 0.4]))
    assert all(type(m[k]) is float for k in ("auroc", "aupr", "fpr95", "fpr90"))
    assert all(type(m[k]) is int for k in ("n_attack", "n_benign"))
    json.dumps(m, allow_nan=False)


@pytest.mark.parametrize("benign, attack, match", [
    ([0.1, float("nan")], [0.5], "benign_scores contains 1 NaN"),
    ([0.1], [np.nan, np.nan], "attack_scores contains 2 NaN"),
    ([], [0.5], "benign_scores is empty"),
    ([0.1], [], "attack_scores is empty"),
    ([0.1], [np.inf], "infinite"),
])
def test_bad_inputs_raise(benign, attack, match):
    with pytest.raises(ValueError, match=match):
        detection_metrics(benign, attack)


def test_queries_until_flagged():
    assert queries_until_flagged([False, False, True, True]) == 3
    assert queries_until_flagged([True]) == 1
    assert queries_until_flagged([False, False]) is None
    assert queries_until_flagged([]) is None
    assert queries_until_flagged(np.array([0, 0, 0, 1])) == 4
