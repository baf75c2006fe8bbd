"""Tests for the baseline detectors: MSP, energy, the plain autoencoder and PRADA."""
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from benchmarks.baselines import (PlainAutoencoder, energy_score, msp_score, reconstruction_score,
                                  train_plain_autoencoder)
from benchmarks.prada import Prada


# ------------------------------------------------------------------------------------------------------
# MSP and energy
# ------------------------------------------------------------------------------------------------------
CRAFTED = np.array([
    [8.0, 0.0, 0.0, 0.0],   # peaked: confident, in-distribution-like
    [2.0, 1.0, 0.0, 0.0],   # mildly peaked
    [0.5, 0.5, 0.5, 0.5],   # uniform: the most suspicious
])


def test_msp_fixed_values_and_ordering():
    s = msp_score(CRAFTED)
    assert_allclose(s, [1 - np.exp(8) / (np.exp(8) + 3), 1 - np.exp(2) / (np.exp(2) + np.e + 2), 0.75], atol=1e-12)
    assert s[0] < s[1] < s[2]


def test_energy_fixed_values_and_ordering():
    s = energy_score(CRAFTED)
    assert_allclose(s, [-np.log(np.exp(8) + 3), -np.log(np.exp(2) + np.e + 2), -(0.5 + np.log(4))], atol=1e-12)
    assert s[0] < s[1] < s[2]
    s_t = energy_score(CRAFTED, T=2.0)
    assert_allclose(s_t[2], -2.0 * (0.25 + np.log(4)), atol=1e-12)
    assert s_t[0] < s_t[1] < s_t[2]


def test_baselines_accept_torch_and_refuse_bad_shapes():
    assert_allclose(msp_score(torch.tensor(CRAFTED)), msp_score(CRAFTED))
    assert_allclose(energy_score(torch.tensor(CRAFTED, requires_grad=True)), energy_score(CRAFTED))
    assert msp_score(np.full((2, 10), 1e4)).shape == (2,)  # no overflow on huge logits
    with pytest.raises(ValueError, match="shape"):
        msp_score(np.zeros(5))
    with pytest.raises(ValueError, match="temperature"):
        energy_score(CRAFTED, T=0)


# ------------------------------------------------------------------------------------------------------
# Plain autoencoder
# ------------------------------------------------------------------------------------------------------
def _blobs(n: int, chans: int, side: int, rng: np.random.Generator) -> np.ndarray:
    """Images of one Gaussian blob at a random place and scale: simple structured data in [0, 1]."""
    yy, xx = np.mgrid[0:side, 0:side] / (side - 1)
    cx, cy = rng.uniform(0.3, 0.7, (2, n, 1, 1))
    r = rng.uniform(0.1, 0.25, (n, 1, 1))
    img = np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * r ** 2))
    return np.repeat(img[:, None], chans, axis=1).astype(np.float32)


@pytest.mark.parametrize("chans, side", [(1, 28), (3, 32)])
def test_plain_autoencoder_shapes(chans, side):
    model = PlainAutoencoder(chans, side)
    out = model(torch.zeros(2, chans, side, side))
    assert out.shape == (2, chans, side, side)
    with pytest.raises(ValueError, match="divisible by 4"):
        PlainAutoencoder(1, 30)


@pytest.mark.parametrize("chans, side", [(1, 28), (3, 32)])
def test_plain_autoencoder_reconstructs_structure_better_than_noise(chans, side):
    x_train = _blobs(256, chans, side, np.random.default_rng(0))
    model = train_plain_autoencoder(x_train, epochs=6, batch_size=32, seed=0, lr=2e-3, width=16)
    x_test = _blobs(64, chans, side, np.random.default_rng(1))
    noise = np.random.default_rng(2).uniform(0, 1, x_test.shape).astype(np.float32)
    s_test, s_noise = reconstruction_score(model, x_test, batch_size=16), reconstruction_score(model, noise)
    assert s_test.shape == (64,) and s_test.dtype == np.float64
    # measured (model-space MSE): blobs mean 0.021-0.027, max 0.039-0.040; uniform noise min 0.335-0.346,
    # i.e. noise.min / blobs.max = 8.5-8.8 and a ratio of means of 12.7-18.5
    assert s_noise.min() > 4 * s_test.max()
    assert s_noise.mean() > 8 * s_test.mean()


def test_plain_autoencoder_training_is_seeded():
    x = _blobs(64, 1, 28, np.random.default_rng(0))
    a = reconstruction_score(train_plain_autoencoder(x, epochs=1, batch_size=32, seed=3, width=16), x)
    b = reconstruction_score(train_plain_autoencoder(x, epochs=1, batch_size=32, seed=3, width=16), x)
    assert_allclose(a, b, rtol=1e-5)
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        train_plain_autoencoder(x[0])


# ------------------------------------------------------------------------------------------------------
# PRADA
# ------------------------------------------------------------------------------------------------------
_SIDE = 28
_rng = np.random.default_rng(0)
_yy, _xx = np.mgrid[0:_SIDE, 0:_SIDE] / (_SIDE - 1)
_K = 16  # a fixed basis of smooth random gratings for the "natural" distribution
_BASIS = np.stack([
    np.cos(2 * np.pi * (fx * _xx + fy * _yy) + ph).ravel()
    for fx, fy, ph in zip(_rng.uniform(0, 3, _K), _rng.uniform(0, 3, _K), _rng.uniform(0, 2 * np.pi, _K))
]) * 0.8
_VICTIM_W = np.random.default_rng(1).normal(size=(_SIDE * _SIDE, 10))


def _natural(n: int, rng: np.random.Generator) -> np.ndarray:
    """Smooth random images: a 16-d Gaussian latent through smooth gratings, squashed into [0, 1]."""
    z = rng.normal(size=(n, _K))
    return (1 / (1 + np.exp(-(z @ _BASIS)))).reshape(n, 1, _SIDE, _SIDE).astype(np.float32)


def _victim(x: np.ndarray) -> np.ndarray:
    """A fixed random linear 10-class 'victim'."""
    return np.argmax((x.reshape(len(x), -1) - 0.5) @ _VICTIM_W, axis=1)


def _jbda_like(n_seeds: int, rounds: int, lam: float, rng: np.random.Generator) -> np.ndarray:
    """Seeds, then rounds that add x + lam * sign(noise) for every point so far (JBDA's doubling scheme)."""
    pts = _natural(n_seeds, rng)
    stream = [pts]
    for _ in range(rounds):
        new = np.clip(pts + lam * np.sign(rng.normal(size=pts.shape)), 0, 1).astype(np.float32)
        stream.append(new)
        pts = np.concatenate([pts, new])
    return np.concatenate(stream)


def test_prada_flags_jbda_like_stream_but_not_natural_stream():
    # Why these data: i.i.d. draws from a smooth continuous distribution have nearest-neighbour distances
    # that sum many small independent pixel differences, so they form one near-Gaussian bump (W stays
    # about 0.97-0.99 here, above delta = 0.95). A JBDA-like stream has a few far-apart seeds and then
    # children at almost exactly lam * sqrt(unclipped pixels) from their parent: a spike plus a few
    # large values, far from normal (W drops to about 0.2-0.35).
    rng = np.random.default_rng(100)
    attack = _jbda_like(10, 6, 0.05, rng)[:400]
    benign = _natural(400, rng)
    det = Prada(delta=0.95, min_queries=100)
    n_attack = det.queries_until_flagged(attack, _victim(attack))
    assert n_attack is not None and n_attack <= 150  # measured: 110 (the start-up needs ~100 distances)
    assert det.queries_until_flagged(benign, _victim(benign)) is None
    s_attack = det.per_query_scores(attack, _victim(attack))
    s_benign = det.per_query_scores(benign, _victim(benign))
    assert s_attack.shape == s_benign.shape == (400,)
    assert np.all(s_attack[:50] == 0) and np.all(s_benign[:50] == 0)  # start-up: no W yet
    assert s_benign.max() < 0.05 < s_attack.max()


def _naive_prada(xs: np.ndarray, preds: np.ndarray, min_queries: int) -> list:
    """Direct transcription of the algorithm (float64, no batching, no outlier removal): W per query."""
    from scipy.stats import shapiro
    sets, add_d, thr, dists, ws = {}, {}, {}, [], []
    for x, c in zip(xs.reshape(len(xs), -1).astype(np.float64), preds):
        if c not in sets:
            sets[c], add_d[c], thr[c] = [x], [0.0], 0.0
        else:
            d = min(np.linalg.norm(y - x) for y in sets[c])
            dists.append(d)
            if d > thr[c]:
                sets[c].append(x)
                add_d[c].append(d)
                thr[c] = max(thr[c], np.mean(add_d[c]) - np.std(add_d[c]))
        ws.append(shapiro(dists).statistic if len(dists) >= min_queries else np.nan)
    return ws


def test_prada_matches_a_naive_transcription_and_batches_like_single_queries():
    rng = np.random.default_rng(5)
    xs = np.concatenate([_jbda_like(5, 4, 0.05, rng), _natural(70, rng)])
    rng.shuffle(xs)
    preds = _victim(xs)
    expected = _naive_prada(xs, preds, min_queries=20)

    batched = Prada(min_queries=20, outlier_std=None)
    flags, ws = batched.observe_batch("a", xs[:60], preds[:60])
    flags2, ws2 = batched.observe_batch("a", xs[60:], preds[60:])  # state carries over between batches
    assert_allclose(np.r_[ws, ws2], expected, atol=1e-9)
    assert np.array_equal(np.r_[flags, flags2], np.nan_to_num(np.asarray(expected), nan=1.0) < 0.95)

    single = Prada(min_queries=20, outlier_std=None)
    got = [single.observe("b", x, int(c))[1] for x, c in zip(xs, preds)]
    assert_allclose([np.nan if w is None else w for w in got], expected, atol=1e-9)
    assert single.first_flagged("b") == batched.first_flagged("a")


def test_prada_keeps_clients_apart_and_checks_params():
    rng = np.random.default_rng(7)
    attack = _jbda_like(10, 6, 0.05, rng)[:200]
    det = Prada()
    for i, x in enumerate(attack):
        det.observe("attacker", x, int(_victim(x[None])[0]))
        if i < 50:
            det.observe("other", _natural(1, rng)[0], 0)
    assert det.first_flagged("attacker") is not None
    assert det.first_flagged("other") is None and det.first_flagged("unknown") is None
    det.reset("attacker")
    assert det.first_flagged("attacker") is None
    for bad in ({"delta": 0.0}, {"min_queries": 2}, {"window": 6000}, {"outlier_std": -1.0}, {"check_every": 0}):
        with pytest.raises(ValueError):
            Prada(**bad)
    with pytest.raises(ValueError, match="predicted classes"):
        det.observe_batch("c", attack[:3], [0, 1])
