"""Per-client aggregation of per-query SAME flags: a sliding-window binomial test.

SAME scores each query on its own; deployments decide per client. With the threshold calibrated at a
benign false-positive rate p, a benign client's flags in a window of w queries are ~Binomial(w, p).
A client is flagged once its window holds k flags, with k the smallest count whose benign tail
probability is below `alarm_level`. That turns a 1% per-query FPR into a per-window false-alarm rate of
`alarm_level`, and catches attackers whose flag rate is well above p within a few windows.
"""
from typing import Optional, Sequence

import numpy as np
from scipy.stats import binom


def flags_needed(window: int, benign_rate: float, alarm_level: float = 1e-4) -> int:
    """Smallest k with P(Binomial(window, benign_rate) >= k) <= alarm_level."""
    for k in range(1, window + 1):
        if binom.sf(k - 1, window, benign_rate) <= alarm_level:
            return k
    return window + 1


def window_alarm(scores: Sequence[float], threshold: float, benign_rate: float, window: int = 50,
                 alarm_level: float = 1e-4) -> Optional[int]:
    """1-based index of the query at which the client is first flagged, or None."""
    flags = (np.asarray(scores, dtype=np.float64) > threshold).astype(np.int64)
    k = flags_needed(window, benign_rate, alarm_level)
    counts = np.convolve(flags, np.ones(window, dtype=np.int64))[:len(flags)]  # flags among the last `window`
    hits = np.nonzero(counts >= k)[0]
    return int(hits[0]) + 1 if len(hits) else None
