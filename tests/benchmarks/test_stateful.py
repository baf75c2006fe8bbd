import numpy as np
from scipy.stats import binom

from benchmarks.stateful import flags_needed, window_alarm


def test_flags_needed_bounds_the_benign_tail():
    k = flags_needed(50, 0.01, 1e-4)
    assert binom.sf(k - 1, 50, 0.01) <= 1e-4 < binom.sf(k - 2, 50, 0.01)


def test_window_alarm_fires_on_attack_streams_only():
    rng = np.random.default_rng(0)
    benign = rng.normal(0, 1, 5000)
    threshold = float(np.quantile(benign, 0.99))
    assert window_alarm(rng.normal(0, 1, 5000), threshold, 0.01) is None
    attack = np.concatenate([rng.normal(0, 1, 100), rng.normal(3, 1, 200)])  # turns hostile at query 101
    first = window_alarm(attack, threshold, 0.01)
    assert first is not None and 100 < first < 120
