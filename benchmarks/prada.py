"""PRADA: a stateful, per-client detector of model-extraction query streams.

Juuti, Szyller, Marchal & Asokan, "PRADA: Protecting Against DNN Model Stealing Attacks",
IEEE EuroS&P 2019. | Paper link: https://arxiv.org/abs/1805.02628
| Reference code: https://github.com/SSGAalto/prada-protecting-against-dnn-model-stealing-attacks

Idea: benign clients send natural images, whose distances to their nearest earlier query are roughly
normally distributed; extraction attacks that synthesise queries (JBDA-style Jacobian steps around a few
seeds) produce minimum distances that are not. For each client PRADA keeps

* a growing set G_c per predicted class c, with the distances D_Gc at which its members were added
  (starting at 0 for the first member) and a threshold T_c;
* the list D of the minimum distances of all queries.

For a query x with predicted class c (Algorithm 1 of the paper):

1. if G_c is empty, x becomes its first member (D_Gc = [0], T_c = 0) and no distance is recorded;
2. otherwise d = min_{y in G_c} ||x - y||_2 (pixel space, flattened) is appended to D, and if d > T_c,
   x joins G_c, d joins D_Gc and T_c = max(T_c, mean(D_Gc) - std(D_Gc));
3. once enough distances exist, the Shapiro-Wilk statistic W of D (outliers beyond 3 standard
   deviations removed, as in the reference code) is computed, and the client is flagged when W < delta.

The paper tunes delta per dataset on benign streams; 0.95 is a reasonable default for MNIST-like data.
Scipy's Shapiro-Wilk is meant for at most 5,000 points, so W is computed on the most recent ``window``
distances. Distances are computed with matrix products (with an exact recheck of the nearest candidates),
so a 4,000-query stream of 784-pixel images takes a few seconds.

Unlike SAME, PRADA's decision is about a client's whole stream: :meth:`Prada.per_query_scores` gives
1 - W after each query so that PRADA can share an AUROC table with per-query detectors, but that score
describes the stream up to that query, not the query itself.
"""
from dataclasses import dataclass, field
from typing import Dict, Hashable, List, Optional, Sequence, Tuple

import numpy as np
from scipy.stats import shapiro

__all__ = ["Prada"]

_RECHECK = 8  # nearest candidates (by the fast float32 estimate) whose distance is recomputed exactly


@dataclass
class _GrowingSet:
    """The growing set of one predicted class of one client."""

    dim: int
    vectors: np.ndarray = field(init=False)   # (capacity, dim) float32; rows [:size] are members
    sq_norms: np.ndarray = field(init=False)  # (capacity,) float64 squared L2 norms of the members
    size: int = 0
    add_dists: List[float] = field(default_factory=list)  # D_Gc: the distance at which each member joined
    threshold: float = 0.0                                  # T_c

    def __post_init__(self) -> None:
        self.vectors = np.empty((16, self.dim), dtype=np.float32)
        self.sq_norms = np.empty(16, dtype=np.float64)

    def add(self, x: np.ndarray, dist: float) -> None:
        """Add ``x`` (flattened, float64) that joined at distance ``dist``, and update T_c."""
        if self.size == self.vectors.shape[0]:
            self.vectors = np.concatenate([self.vectors, np.empty_like(self.vectors)])
            self.sq_norms = np.concatenate([self.sq_norms, np.empty_like(self.sq_norms)])
        self.vectors[self.size] = x
        self.sq_norms[self.size] = float(x @ x)
        self.size += 1
        self.add_dists.append(dist)
        gd = np.asarray(self.add_dists)
        self.threshold = max(self.threshold, float(gd.mean() - gd.std()))


@dataclass
class _ClientState:
    """Everything PRADA remembers about one client."""

    sets: Dict[int, _GrowingSet] = field(default_factory=dict)
    dists: List[float] = field(default_factory=list)  # D, in query order
    n_queries: int = 0
    last_w: Optional[float] = None
    first_flagged: Optional[int] = None  # 1-based index of the first flagged query


class Prada:
    """PRADA detector holding the state of many clients (in memory).

    Example::

        >>> det = Prada(delta=0.95)
        >>> flagged, w = det.observe("client-1", x_query, predicted_class=3)   # x_query: (C, H, W) in [0, 1]
        >>> det.queries_until_flagged(stream_x, stream_pred)                    # replay one whole stream
    """

    def __init__(
        self,
        delta: float = 0.95,
        min_queries: int = 100,
        window: int = 5000,
        outlier_std: Optional[float] = 3.0,
        check_every: int = 1,
    ) -> None:
        """
        :param delta: flag a client when its Shapiro-Wilk W falls below this. Default: 0.95.
        :param min_queries: recorded distances (after outlier removal) needed before W is computed; the
            paper's start-up phase is 100. Default: 100.
        :param window: W uses the most recent ``window`` distances; at most 5,000 (scipy's limit for an
            accurate Shapiro-Wilk test). Default: 5000.
        :param outlier_std: drop distances further than this many standard deviations from the mean before
            the test, as the reference code does; None keeps all. Default: 3.0.
        :param check_every: recompute W every this many queries of a client (the reference code uses 10);
            in between, the last W and decision are repeated. Default: 1.
        """
        self.delta = delta
        self.min_queries = min_queries
        self.window = window
        self.outlier_std = outlier_std
        self.check_every = check_every
        self._check_params()
        self._clients: Dict[Hashable, _ClientState] = {}

    def _check_params(self) -> None:
        if not 0.0 < self.delta <= 1.0:
            raise ValueError(f"delta must lie in (0, 1], got {self.delta}.")
        if int(self.min_queries) != self.min_queries or self.min_queries < 3:
            raise ValueError(
                f"min_queries must be an integer >= 3 (Shapiro-Wilk needs 3 points), got {self.min_queries}."
            )
        if int(self.window) != self.window or not self.min_queries <= self.window <= 5000:
            raise ValueError(f"window must be an integer between min_queries and 5000, got {self.window}.")
        if self.outlier_std is not None and not self.outlier_std > 0:
            raise ValueError(f"outlier_std must be positive or None, got {self.outlier_std}.")
        if int(self.check_every) != self.check_every or self.check_every < 1:
            raise ValueError(f"check_every must be a positive integer, got {self.check_every}.")

    # ---------------------------------------------------------------------------------------------------
    # State
    # ---------------------------------------------------------------------------------------------------
    def reset(self, client_id: Optional[Hashable] = None) -> None:
        """Forget one client (or every client when ``client_id`` is None)."""
        if client_id is None:
            self._clients.clear()
        else:
            self._clients.pop(client_id, None)

    def first_flagged(self, client_id: Hashable) -> Optional[int]:
        """1-based index of the client's first flagged query, or None (also for an unknown client)."""
        state = self._clients.get(client_id)
        return state.first_flagged if state is not None else None

    # ---------------------------------------------------------------------------------------------------
    # Observing queries
    # ---------------------------------------------------------------------------------------------------
    def observe(self, client_id: Hashable, x: np.ndarray, predicted_class: int) -> Tuple[bool, Optional[float]]:
        """Record one query of a client and test the client's stream.

        :param client_id: any hashable key (API key, account, IP).
        :param x: the query image, any shape (e.g. (C, H, W)), values in [0, 1]; it is flattened.
        :param predicted_class: the victim's predicted class for ``x``.
        :return: ``(flagged, w)``: whether W < delta after this query, and W (None during the start-up).
        """
        flags, ws = self.observe_batch(client_id, np.asarray(x)[None], [predicted_class])
        w = float(ws[0])
        return bool(flags[0]), (None if np.isnan(w) else w)

    def observe_batch(
        self, client_id: Hashable, xs: np.ndarray, predicted_classes: Sequence[int]
    ) -> Tuple[np.ndarray, np.ndarray]:
        """Record a batch of queries of one client, in order; equivalent to calling :meth:`observe` on each.

        :param client_id: any hashable key.
        :param xs: queries, (N, ...) with values in [0, 1]; each is flattened.
        :param predicted_classes: the victim's predicted class of each query, (N,).
        :return: ``(flags, w)``: bool (N,) with W < delta after each query, and float64 (N,) with W after
            each query (NaN during the start-up).
        """
        x_flat, preds = self._check_inputs(xs, predicted_classes)
        state = self._clients.setdefault(client_id, _ClientState())
        n = x_flat.shape[0]
        if state.sets and x_flat.shape[1] != next(iter(state.sets.values())).dim:
            raise ValueError("All queries of a client must have the same number of pixels.")

        # 1. minimum distances, class by class (growing sets of different classes are independent)
        new_dists = np.full(n, np.nan)
        for c in np.unique(preds):
            idx = np.flatnonzero(preds == c)
            gset = state.sets.setdefault(int(c), _GrowingSet(x_flat.shape[1]))
            new_dists[idx] = self._process_class(gset, x_flat[idx])

        # 2. the Shapiro-Wilk test after each query, in query order
        flags = np.zeros(n, dtype=bool)
        ws = np.full(n, np.nan)
        for i in range(n):
            if not np.isnan(new_dists[i]):
                state.dists.append(float(new_dists[i]))
            state.n_queries += 1
            if state.n_queries % self.check_every == 0 or state.last_w is None:
                state.last_w = self._shapiro_w(state.dists)
            if state.last_w is not None:
                ws[i] = state.last_w
                flags[i] = state.last_w < self.delta
                if flags[i] and state.first_flagged is None:
                    state.first_flagged = state.n_queries
        return flags, ws

    def _process_class(self, gset: _GrowingSet, xs: np.ndarray) -> np.ndarray:
        """Run step 1-2 of the algorithm for queries ``xs`` (float64, (M, dim)) of one class, in order.

        :return: each query's minimum distance to the growing set, NaN for a set's first member.
        """
        out = np.full(xs.shape[0], np.nan)
        n_before = gset.size
        approx_sq: Optional[np.ndarray] = None
        if n_before:  # float32 estimate of all squared distances to the members present before this batch
            members = gset.vectors[:n_before]
            cross = xs.astype(np.float32) @ members.T
            approx_sq = np.einsum("ij,ij->i", xs, xs)[:, None] + gset.sq_norms[None, :n_before] - 2.0 * cross
        for j, x in enumerate(xs):
            best = np.inf
            if approx_sq is not None:
                k = min(_RECHECK, n_before)
                cand = np.argpartition(approx_sq[j], k - 1)[:k]
                best = float(np.min(np.linalg.norm(gset.vectors[cand].astype(np.float64) - x, axis=1)))
            if gset.size > n_before:  # members added earlier in this batch: exact distances
                added = gset.vectors[n_before:gset.size].astype(np.float64)
                best = min(best, float(np.min(np.linalg.norm(added - x, axis=1))))
            if gset.size == 0:
                gset.add(x, 0.0)
                continue
            out[j] = best
            if best > gset.threshold:
                gset.add(x, best)
        return out

    def _shapiro_w(self, dists: List[float]) -> Optional[float]:
        """W of the most recent ``window`` distances after outlier removal; None if too few remain."""
        if len(dists) < self.min_queries:
            return None
        d = np.asarray(dists[-self.window:])
        if self.outlier_std is not None:
            std = d.std()
            if std > 0:
                d = d[np.abs(d - d.mean()) < self.outlier_std * std]
        if d.size < self.min_queries:
            return None
        if np.ptp(d) == 0:  # all distances equal: scipy would warn and return 1
            return 1.0
        return float(shapiro(d).statistic)

    @staticmethod
    def _check_inputs(xs: np.ndarray, predicted_classes: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        arr = np.asarray(xs, dtype=np.float64)
        if arr.ndim < 2 or arr.shape[0] == 0:
            raise ValueError(f"xs must be a non-empty batch (N, ...) of queries, got shape {arr.shape}.")
        arr = arr.reshape(arr.shape[0], -1)
        if not np.isfinite(arr).all():
            raise ValueError("xs contains NaN or infinite pixels.")
        preds = np.asarray(predicted_classes).reshape(-1)
        if preds.shape[0] != arr.shape[0]:
            raise ValueError(f"Got {arr.shape[0]} queries but {preds.shape[0]} predicted classes.")
        if preds.dtype.kind not in "iub" and not np.all(np.mod(preds, 1) == 0):
            raise ValueError("predicted_classes must be integers.")
        return arr, preds.astype(np.int64)

    # ---------------------------------------------------------------------------------------------------
    # Whole-stream conveniences for benchmarks (run on a fresh, private state)
    # ---------------------------------------------------------------------------------------------------
    def _replay(self, stream_x: np.ndarray, stream_pred: Sequence[int]) -> Tuple[np.ndarray, np.ndarray]:
        fresh = Prada(self.delta, self.min_queries, self.window, self.outlier_std, self.check_every)
        return fresh.observe_batch("stream", stream_x, stream_pred)

    def per_query_scores(self, stream_x: np.ndarray, stream_pred: Sequence[int]) -> np.ndarray:
        """1 - W after each query of a stream replayed as one new client (0 during the start-up).

        The score describes the client's stream up to that query, not the query itself: put it next to
        per-query detectors only with that caveat. This detector's own client state is left untouched.

        :param stream_x: the client's queries in order, (N, ...) in [0, 1].
        :param stream_pred: the victim's predicted class of each query, (N,).
        :return: float64 (N,), higher = more suspicious.
        """
        _, ws = self._replay(stream_x, stream_pred)
        return 1.0 - np.nan_to_num(ws, nan=1.0)

    def queries_until_flagged(self, stream_x: np.ndarray, stream_pred: Sequence[int]) -> Optional[int]:
        """Replay a stream as one new client: 1-based index of the first flagged query, or None.

        :param stream_x: the client's queries in order, (N, ...) in [0, 1].
        :param stream_pred: the victim's predicted class of each query, (N,).
        """
        flags, _ = self._replay(stream_x, stream_pred)
        hits = np.flatnonzero(flags)
        return int(hits[0]) + 1 if hits.size else None
