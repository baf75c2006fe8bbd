"""JBDA: Jacobian-based dataset augmentation from a small seed set.

| Paper link: https://arxiv.org/abs/1602.02697
| Papernot, McDaniel, Goodfellow, Jha, Celik, Swami. "Practical Black-Box Attacks against Machine Learning".
| AsiaCCS 2017.

Round 0 queries the seeds. Each later round trains the substitute on every answer so far, then adds, for
every point x of the current set, x' = clip(x + lam_r * sign(d F_c(x) / dx), 0, 1), where F_c is the
substitute's logit of c, the victim's argmax label for x, and queries the new points: the set doubles each
round. Choices made here (documented, not all from the paper):

- The perturbation is taken in [0, 1] image space (the paper's MNIST space); the gradient through model
  space x * 2 - 1 has the same sign.
- When a doubling would overshoot the budget, a uniform sample (without replacement) of the new points is
  queried, so exactly ``budget`` queries are spent (in the spirit of the paper's reservoir sampling).
- A refused query is still augmented, with the substitute's own label, but never trained on.
- The substitute is warm-started between rounds (``round_epochs`` each, the paper retrains from scratch);
  the returned substitute is trained from scratch on all answers with ``epochs``.
- ``tau`` enables the paper's periodic step size lam_r = lam * (-1) ** (r // tau); off by default.
"""
import logging
import math
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.attacks.base import BudgetedBlackBox, ExtractionAttack, to_model_space

logger = logging.getLogger(__name__)


class JBDA(ExtractionAttack):
    """Papernot et al.'s Jacobian-based dataset augmentation attack.

    :param seed_x: the attacker's seed images (e.g. 150 in-distribution images), float32 (N, C, H, W) in [0, 1].
    :param rounds: number of augmentation rounds. None: as many as the budget needs with all seeds. With an
        int, ceil(budget / 2 ** rounds) seeds are used (at most all of them); it must satisfy
        len(seed_x) * 2 ** rounds >= budget. Default: None.
    :param lam: step size in [0, 1] pixel units. Default: 0.1.
    :param tau: period of the step-size sign flip, or None for no flip. Default: None.
    :param round_epochs: substitute epochs per round (warm start). Default: 5.
    :param kwargs: substitute and query settings of :class:`ExtractionAttack`.
    """

    name = "jbda"
    attack_params = ExtractionAttack.attack_params + ("seed_x", "rounds", "lam", "tau", "round_epochs")

    def __init__(self, seed_x: np.ndarray, rounds: Optional[int] = None, lam: float = 0.1, tau: Optional[int] = None,
                 round_epochs: int = 5, **kwargs: Any):
        super().__init__(**kwargs)
        self.seed_x, self.rounds, self.lam, self.tau, self.round_epochs = seed_x, rounds, lam, tau, round_epochs
        self._check_params()

    def _check_params(self) -> None:
        super()._check_params()
        x = self.seed_x
        if not isinstance(x, np.ndarray) or x.ndim != 4 or len(x) == 0:
            raise ValueError("seed_x must be a non-empty numpy array of shape (N, C, H, W).")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError("seed_x must hold images with values in [0, 1].")
        if self.rounds is not None and (not isinstance(self.rounds, (int, np.integer)) or self.rounds < 0):
            raise ValueError(f"rounds must be None or a non-negative integer; got {self.rounds!r}.")
        if not 0 < self.lam <= 1:
            raise ValueError(f"The step size lam must lie in (0, 1]; got {self.lam!r}.")
        if self.tau is not None and (not isinstance(self.tau, (int, np.integer)) or self.tau < 1):
            raise ValueError(f"tau must be None or a positive integer; got {self.tau!r}.")
        if not isinstance(self.round_epochs, (int, np.integer)) or self.round_epochs < 1:
            raise ValueError(f"round_epochs must be a positive integer; got {self.round_epochs!r}.")

    def _run(self, box: BudgetedBlackBox, rng: np.random.Generator, seed: int) -> Tuple[nn.Module, Dict[str, Any]]:
        n_seeds = min(len(self.seed_x), box.budget)
        if self.rounds is not None:
            if len(self.seed_x) * 2 ** self.rounds < box.budget:
                raise ValueError(f"{len(self.seed_x)} seeds and {self.rounds} rounds reach at most "
                                 f"{len(self.seed_x) * 2 ** self.rounds} queries, fewer than the budget of "
                                 f"{box.budget}; give more seeds or rounds.")
            n_seeds = min(n_seeds, math.ceil(box.budget / 2 ** self.rounds))
        xs = self.seed_x[rng.permutation(len(self.seed_x))[:n_seeds]]
        ps = box(xs)
        substitute, rnd = None, 0
        pbar = tqdm(total=box.budget, initial=box.used, disable=not self.verbose, desc="jbda")
        while box.remaining > 0:
            substitute = self._train(xs, ps, seed + rnd, substitute=substitute, epochs=self.round_epochs)
            step = self.lam * (-1) ** (rnd // self.tau) if self.tau else self.lam
            new = self._augment(substitute, xs, ps, step)
            if len(new) > box.remaining:
                new = new[np.sort(rng.choice(len(new), size=box.remaining, replace=False))]
            xs, ps = np.concatenate([xs, new]), np.concatenate([ps, box(new)])
            rnd += 1
            pbar.update(len(new))
        pbar.close()
        return self._train(xs, ps, seed), {"n_seeds": n_seeds, "rounds": rnd}

    def _augment(self, substitute: nn.Module, x: np.ndarray, probs: np.ndarray, step: float,
                 batch: int = 256) -> np.ndarray:
        """x + step * sign(grad_x F_c(x)), clipped to [0, 1]; c = victim argmax (substitute's if refused)."""
        substitute.eval()
        refused = np.isnan(probs).any(axis=1)
        victim_label = torch.as_tensor(np.where(refused, -1, np.nan_to_num(probs, nan=0.0).argmax(axis=1)))
        out = np.empty_like(x)
        for i in range(0, len(x), batch):
            xt = to_model_space(x[i:i + batch], self.device).requires_grad_(True)
            logits = substitute(xt)
            label = victim_label[i:i + batch].to(self.device)
            label = torch.where(label < 0, logits.argmax(dim=1), label)
            grad, = torch.autograd.grad(logits.gather(1, label[:, None]).sum(), xt)
            out[i:i + batch] = np.clip(x[i:i + batch] + step * grad.sign().cpu().numpy(), 0.0, 1.0)
        return out
