"""Shared pieces of the model-extraction attacks: the query accounting, the result record, the base class
and the substitute training and evaluation helpers.

Conventions: images at every boundary are numpy float32 (N, C, H, W) in [0, 1]; a black box maps such a
batch to (N, K) probabilities, with an all-NaN row for each query the server refused. Substitutes are
``handler.classifiers`` networks and consume model space, x * 2 - 1 in [-1, 1].

The base class follows the Adversarial Robustness Toolbox (``art.attacks.ExtractionAttack``): parameters are
checked once in ``_check_params`` with full-sentence errors, and ``extract`` lists its inputs explicitly.
"""
import abc
import contextlib
import dataclasses
import logging
from typing import Any, Callable, Dict, Iterator, List, Optional, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from handler.classifiers import build_classifier

logger = logging.getLogger(__name__)

BlackBox = Callable[[np.ndarray], np.ndarray]


class BudgetExceededError(RuntimeError):
    """Raised when an attack asks for more queries than its budget allows (nothing is sent)."""


def to_model_space(x: np.ndarray, device: str = "cpu") -> torch.Tensor:
    """Map float images in [0, 1] (numpy) to a model-space tensor x * 2 - 1 in [-1, 1]."""
    return torch.as_tensor(np.asarray(x, dtype=np.float32), device=device) * 2.0 - 1.0


@contextlib.contextmanager
def seeded(seed: int, device: str = "cpu") -> Iterator[None]:
    """Run a block with torch's RNG seeded, restoring the caller's RNG state afterwards."""
    devices = [torch.device(device).index or 0] if torch.device(device).type == "cuda" else []
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        yield


class BudgetedBlackBox:
    """Wraps a black box: validates queries, counts them against a budget and records queries and answers.

    Every attack talks to the victim through one of these, so all attacks share the same accounting.
    A call that would exceed the budget raises :class:`BudgetExceededError` before anything is sent. Large
    calls are split into chunks of ``max_batch`` items. Rows containing any NaN count as refused and are
    returned (and recorded) as all-NaN rows.

    :param blackbox: callable mapping float32 (N, C, H, W) in [0, 1] to (N, K) probabilities.
    :param budget: largest number of queries (items) that may be sent.
    :param max_batch: largest number of items per call to ``blackbox``. Default: 256.
    """

    def __init__(self, blackbox: BlackBox, budget: int, max_batch: int = 256):
        if not callable(blackbox):
            raise ValueError("The black box must be a callable mapping images to probabilities.")
        if int(budget) != budget or budget < 1:
            raise ValueError(f"The query budget must be a positive integer; got {budget!r}.")
        if int(max_batch) != max_batch or max_batch < 1:
            raise ValueError(f"max_batch must be a positive integer; got {max_batch!r}.")
        self.blackbox, self.budget, self.max_batch = blackbox, int(budget), int(max_batch)
        self._queries: List[np.ndarray] = []
        self._outputs: List[np.ndarray] = []
        self.used = 0
        self.n_refused = 0
        self.num_classes: Optional[int] = None

    @property
    def remaining(self) -> int:
        """Queries left in the budget."""
        return self.budget - self.used

    def __call__(self, x: np.ndarray) -> np.ndarray:
        """Send a batch; return its (N, K) float32 probabilities, all-NaN rows for refused items."""
        x = np.ascontiguousarray(x, dtype=np.float32)
        if x.ndim != 4:
            raise ValueError(f"Queries must be a (N, C, H, W) array; got shape {x.shape}.")
        if len(x) > self.remaining:
            raise BudgetExceededError(
                f"A batch of {len(x)} queries exceeds the remaining budget of {self.remaining} "
                f"(budget {self.budget}, used {self.used}).")
        if not np.isfinite(x).all() or x.min(initial=0.0) < 0.0 or x.max(initial=0.0) > 1.0:
            raise ValueError("Queries must be finite and lie in [0, 1]; clip them before querying.")
        if len(x) == 0:
            return np.zeros((0, self.num_classes or 0), dtype=np.float32)
        outs = [self._send(x[i:i + self.max_batch]) for i in range(0, len(x), self.max_batch)]
        return np.concatenate(outs)

    def _send(self, x: np.ndarray) -> np.ndarray:
        out = np.array(self.blackbox(x), dtype=np.float32, copy=True)
        if out.ndim != 2 or len(out) != len(x):
            raise ValueError(f"The black box must return (N, K) probabilities; got shape {out.shape} for N={len(x)}.")
        if self.num_classes is None:
            self.num_classes = out.shape[1]
        elif out.shape[1] != self.num_classes:
            raise ValueError(f"The black box returned {out.shape[1]} classes after {self.num_classes} before.")
        refused = np.isnan(out).any(axis=1)
        out[refused] = np.nan
        self.used += len(x)
        self.n_refused += int(refused.sum())
        self._queries.append(x.copy())
        self._outputs.append(out)
        return out

    @property
    def queries(self) -> np.ndarray:
        """All queries sent so far, in order: float32 (used, C, H, W)."""
        return np.concatenate(self._queries) if self._queries else np.zeros((0, 0, 0, 0), dtype=np.float32)

    @property
    def outputs(self) -> np.ndarray:
        """All answers so far, in order: float32 (used, K), all-NaN rows for refused queries."""
        k = self.num_classes or 0
        return np.concatenate(self._outputs) if self._outputs else np.zeros((0, k), dtype=np.float32)


@dataclasses.dataclass
class AttackResult:
    """What an extraction attack produced.

    :param name: attack name.
    :param queries: every query sent, in order, float32 (n_queries, C, H, W) in [0, 1].
    :param outputs: the answers, float32 (n_queries, K); all-NaN rows for refused queries.
    :param substitute: the stolen model (eval mode; consumes model space, returns logits).
    :param n_queries: number of queries sent (equals the budget for the attacks here).
    :param n_refused: number of refused queries (all-NaN rows).
    :param extra: attack-specific details (rounds, bandit policy, timings...).
    """

    name: str
    queries: np.ndarray
    outputs: np.ndarray
    substitute: nn.Module
    n_queries: int
    n_refused: int
    extra: Dict[str, Any] = dataclasses.field(default_factory=dict)


def answered(x: np.ndarray, probs: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    """Drop refused (NaN) rows: return the answered queries and their probabilities."""
    keep = ~np.isnan(probs).any(axis=1)
    return x[keep], probs[keep]


def soft_cross_entropy(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
    """Mean over the batch of -sum_k p_k log softmax(logits)_k (KL to the soft labels up to a constant)."""
    return -(target * F.log_softmax(logits, dim=1)).sum(dim=1).mean()


def new_substitute(arch: str, x_shape: Tuple[int, ...], num_classes: int, seed: int, device: str = "cpu") -> nn.Module:
    """A freshly initialised substitute for images of shape (N, C, H, W), seeded."""
    with seeded(seed, device):
        return build_classifier(arch, in_chans=x_shape[1], num_classes=num_classes, img_size=x_shape[2]).to(device)


def train_substitute(x: np.ndarray, probs: np.ndarray, arch: str = "conv3", epochs: int = 10, seed: int = 0,
                     batch_size: int = 64, lr: float = 1e-3, device: str = "cpu",
                     substitute: Optional[nn.Module] = None) -> nn.Module:
    """Train a substitute on soft labels (soft cross-entropy) in model space, dropping refused (NaN) rows.

    :param x: queries, float32 (N, C, H, W) in [0, 1].
    :param probs: the black box's answers (N, K); rows with NaN are dropped.
    :param arch: ``handler.classifiers`` architecture of a new substitute. Default: "conv3".
    :param epochs: passes over the data. Default: 10.
    :param seed: seed of the initialisation and the shuffling. Default: 0.
    :param batch_size: minibatch size. Default: 64.
    :param lr: Adam learning rate. Default: 1e-3.
    :param device: torch device. Default: "cpu".
    :param substitute: continue training this model instead of a new one. Default: None.
    :return: the trained substitute, in eval mode.
    """
    x, probs = answered(np.asarray(x, dtype=np.float32), np.asarray(probs, dtype=np.float32))
    if substitute is None:
        substitute = new_substitute(arch, x.shape, probs.shape[1], seed, device)
    if len(x) == 0:
        logger.warning("No answered queries to train the substitute on; returning it untrained.")
        return substitute.eval()
    xt, pt = to_model_space(x, device), torch.as_tensor(probs, device=device)
    pt = pt / pt.sum(dim=1, keepdim=True).clamp_min(1e-12)
    opt = torch.optim.Adam(substitute.parameters(), lr=lr)
    gen = torch.Generator().manual_seed(seed)
    substitute.train()
    for _ in range(epochs):
        for idx in torch.randperm(len(xt), generator=gen).split(batch_size):
            idx = idx.to(device)
            loss = soft_cross_entropy(substitute(xt[idx]), pt[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    return substitute.eval()


@torch.no_grad()
def predict_logits(model: nn.Module, x: np.ndarray, batch_size: int = 256, device: str = "cpu") -> torch.Tensor:
    """Logits (N, K) on CPU of ``model`` for float images in [0, 1], computed in batches in eval mode."""
    was_training = model.training
    model.eval()
    out = [model(to_model_space(x[i:i + batch_size], device)).float().cpu() for i in range(0, len(x), batch_size)]
    model.train(was_training)
    return torch.cat(out) if out else torch.zeros(0, 0)


def evaluate_substitute(substitute: nn.Module, x_test: np.ndarray, y_test: np.ndarray,
                        victim_probs_test: Optional[np.ndarray] = None, device: str = "cpu") -> Dict[str, float]:
    """Test accuracy of a substitute and its agreement with the victim.

    :param substitute: the stolen model (model space in, logits out).
    :param x_test: float32 (N, C, H, W) in [0, 1].
    :param y_test: true labels (N,).
    :param victim_probs_test: the victim's outputs on ``x_test`` (N, K); without them agreement is NaN.
    :param device: torch device of ``substitute``. Default: "cpu".
    :return: {"accuracy": fraction of argmax == y_test, "agreement": fraction of argmax == victim argmax}.
    """
    pred = predict_logits(substitute, x_test, device=device).argmax(dim=1).numpy()
    acc = float(np.mean(pred == np.asarray(y_test)))
    agree = float("nan")
    if victim_probs_test is not None:
        agree = float(np.mean(pred == np.asarray(victim_probs_test).argmax(axis=1)))
    return {"accuracy": acc, "agreement": agree}


class ExtractionAttack(abc.ABC):
    """Base class of the extraction attacks: ``extract(blackbox, budget, seed)`` returns an :class:`AttackResult`.

    Subclasses set ``name`` and ``attack_params`` (the constructor arguments ``set_params`` may change),
    implement ``_run`` and extend ``_check_params``.

    :param arch: substitute architecture (``handler.classifiers``). Default: "conv3".
    :param epochs: epochs of the final substitute training. Default: 10.
    :param batch_size: substitute training minibatch. Default: 64.
    :param lr: substitute Adam learning rate. Default: 1e-3.
    :param query_batch: largest number of items per call to the black box. Default: 128.
    :param device: torch device for the attacker's own models. Default: "cpu".
    :param verbose: show progress bars. Default: False.
    """

    name = "attack"
    attack_params: Tuple[str, ...] = ("arch", "epochs", "batch_size", "lr", "query_batch", "device", "verbose")

    def __init__(self, arch: str = "conv3", epochs: int = 10, batch_size: int = 64, lr: float = 1e-3,
                 query_batch: int = 128, device: str = "cpu", verbose: bool = False):
        self.arch, self.epochs, self.batch_size, self.lr = arch, epochs, batch_size, lr
        self.query_batch, self.device, self.verbose = query_batch, device, verbose

    def set_params(self, **kwargs: Any) -> None:
        """Change constructor parameters; an unknown name raises ValueError."""
        for key, value in kwargs.items():
            if key not in self.attack_params:
                raise ValueError(f"{key!r} is not a parameter of {type(self).__name__}; "
                                 f"choose from {list(self.attack_params)}.")
            setattr(self, key, value)
        self._check_params()

    def _check_params(self) -> None:
        for key in ("epochs", "batch_size", "query_batch"):
            value = getattr(self, key)
            if not isinstance(value, (int, np.integer)) or value < (0 if key == "epochs" else 1):
                raise ValueError(f"{key} must be a {'non-negative' if key == 'epochs' else 'positive'} integer; "
                                 f"got {value!r}.")
        if not self.lr > 0:
            raise ValueError(f"The learning rate lr must be positive; got {self.lr!r}.")

    def extract(self, blackbox: BlackBox, budget: int, seed: int = 0) -> AttackResult:
        """Run the attack against ``blackbox`` with exactly ``budget`` queries.

        :param blackbox: callable mapping float32 (N, C, H, W) in [0, 1] to (N, K) probabilities
            (all-NaN rows for refused queries).
        :param budget: number of queries to spend.
        :param seed: seed of every random choice of the attack.
        :return: the :class:`AttackResult`.
        """
        box = BudgetedBlackBox(blackbox, budget, max_batch=self.query_batch)
        with seeded(seed, self.device):
            substitute, extra = self._run(box, np.random.default_rng(seed), seed)
        logger.info("%s: %d queries (%d refused)", self.name, box.used, box.n_refused)
        return AttackResult(name=self.name, queries=box.queries, outputs=box.outputs, substitute=substitute.eval(),
                            n_queries=box.used, n_refused=box.n_refused, extra=extra)

    @abc.abstractmethod
    def _run(self, box: BudgetedBlackBox, rng: np.random.Generator, seed: int) -> Tuple[nn.Module, Dict[str, Any]]:
        """Spend ``box.budget`` queries through ``box``; return the substitute and the ``extra`` dict."""

    def _train(self, x: np.ndarray, probs: np.ndarray, seed: int, substitute: Optional[nn.Module] = None,
               epochs: Optional[int] = None) -> nn.Module:
        """``train_substitute`` with this attack's settings."""
        return train_substitute(x, probs, arch=self.arch, epochs=self.epochs if epochs is None else epochs,
                                seed=seed, batch_size=self.batch_size, lr=self.lr, device=self.device,
                                substitute=substitute)
