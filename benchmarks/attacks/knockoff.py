"""KnockoffNets: query a proxy (natural-image) set, train a substitute on the victim's soft labels.

| Paper link: https://arxiv.org/abs/1812.02766
| Orekondy, Schiele, Fritz. "Knockoff Nets: Stealing Functionality of Black-Box Models". CVPR 2019.

Two sampling strategies, as in the paper:

- ``random``: draw ``budget`` proxy images without replacement.
- ``adaptive``: a gradient bandit over proxy groups (the paper's label hierarchy; here, e.g., the source photo
  of each natural crop). Each round draws ``round_size`` images, arm by arm from the softmax policy over
  preferences H, queries them in ONE call (the paper and ART query one image at a time, unusable over a
  network), and updates H with the paper's rewards: certainty (top-1 minus top-2 victim probability),
  diversity (how much the answer exceeds the mean of the last ``delta`` answers, summed over classes) and
  loss (the online substitute's soft cross-entropy on the answer). Each reward is standardised with running
  mean/variance and the chosen ones averaged, as in ART. A refused query earns zero raw rewards. The online
  substitute takes ``online_steps`` Adam steps per round on the round's answers plus as many replayed ones.
  Images are never sampled twice; an exhausted group leaves the policy.

After the budget is spent, a fresh substitute is trained on all answers (as the paper's final training).
"""
import logging
from typing import Any, Dict, Optional, Tuple

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from benchmarks.attacks.base import (BudgetedBlackBox, ExtractionAttack, answered, new_substitute, soft_cross_entropy,
                                     to_model_space)

logger = logging.getLogger(__name__)

REWARDS = ("certainty", "diversity", "loss")


class KnockoffNets(ExtractionAttack):
    """KnockoffNets with random or adaptive (gradient-bandit) sampling of a proxy set.

    :param proxy_x: the attacker's proxy images, float32 (N, C, H, W) in [0, 1].
    :param proxy_groups: group label (int) of each proxy image; required by ``strategy="adaptive"``.
    :param strategy: "random" or "adaptive". Default: "random".
    :param reward: "all" (mean of certainty, diversity, loss) or one of them. Default: "all".
    :param round_size: adaptive: images per round (one black-box call). Default: 32.
    :param bandit_lr: adaptive: step size of the preference update. Default: 0.1.
    :param delta: adaptive: window (in answers) of the diversity reward. Default: 64.
    :param online_steps: adaptive: Adam steps of the online substitute per round. Default: 2.
    :param kwargs: substitute and query settings of :class:`ExtractionAttack`.

    Example::

        x, groups = natural_crops(20000, return_groups=True)
        result = KnockoffNets(x, groups, strategy="adaptive").extract(blackbox, budget=4000)
    """

    name = "knockoff"
    attack_params = ExtractionAttack.attack_params + (
        "proxy_x", "proxy_groups", "strategy", "reward", "round_size", "bandit_lr", "delta", "online_steps")

    def __init__(self, proxy_x: np.ndarray, proxy_groups: Optional[np.ndarray] = None, strategy: str = "random",
                 reward: str = "all", round_size: int = 32, bandit_lr: float = 0.1, delta: int = 64,
                 online_steps: int = 2, **kwargs: Any):
        super().__init__(**kwargs)
        self.proxy_x, self.proxy_groups, self.strategy, self.reward = proxy_x, proxy_groups, strategy, reward
        self.round_size, self.bandit_lr, self.delta, self.online_steps = round_size, bandit_lr, delta, online_steps
        self._check_params()

    def _check_params(self) -> None:
        super()._check_params()
        x = self.proxy_x
        if not isinstance(x, np.ndarray) or x.ndim != 4 or len(x) == 0:
            raise ValueError("proxy_x must be a non-empty numpy array of shape (N, C, H, W).")
        if x.min() < 0.0 or x.max() > 1.0:
            raise ValueError("proxy_x must hold images with values in [0, 1].")
        if self.strategy not in ("random", "adaptive"):
            raise ValueError(f"strategy must be 'random' or 'adaptive'; got {self.strategy!r}.")
        if self.strategy == "adaptive" and self.proxy_groups is None:
            raise ValueError("The adaptive strategy needs proxy_groups, the group label of each proxy image.")
        if self.proxy_groups is not None and np.shape(self.proxy_groups) != (len(x),):
            raise ValueError(f"proxy_groups must have one label per proxy image ({len(x)}); "
                             f"got shape {np.shape(self.proxy_groups)}.")
        if self.reward != "all" and self.reward not in REWARDS:
            raise ValueError(f"reward must be 'all' or one of {REWARDS}; got {self.reward!r}.")
        for key in ("round_size", "delta"):
            if not isinstance(getattr(self, key), (int, np.integer)) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer; got {getattr(self, key)!r}.")
        if not isinstance(self.online_steps, (int, np.integer)) or self.online_steps < 0:
            raise ValueError(f"online_steps must be a non-negative integer; got {self.online_steps!r}.")
        if not self.bandit_lr > 0:
            raise ValueError(f"bandit_lr must be positive; got {self.bandit_lr!r}.")

    def _run(self, box: BudgetedBlackBox, rng: np.random.Generator, seed: int) -> Tuple[nn.Module, Dict[str, Any]]:
        if box.budget > len(self.proxy_x):
            raise ValueError(f"The budget ({box.budget}) exceeds the proxy set ({len(self.proxy_x)} images); "
                             "KnockoffNets never queries an image twice, so give it a larger proxy set.")
        extra: Dict[str, Any] = {"strategy": self.strategy}
        if self.strategy == "random":
            box(self.proxy_x[rng.permutation(len(self.proxy_x))[:box.budget]])
        else:
            extra.update(self._adaptive(box, rng, seed))
        return self._train(box.queries, box.outputs, seed), extra

    # ------------------------------------------------------------------ adaptive sampling (gradient bandit)
    def _adaptive(self, box: BudgetedBlackBox, rng: np.random.Generator, seed: int) -> Dict[str, Any]:
        arms, inverse = np.unique(np.asarray(self.proxy_groups), return_inverse=True)
        pools = [list(rng.permutation(np.flatnonzero(inverse == a))) for a in range(len(arms))]
        bandit, stats = _GradientBandit(len(arms), self.bandit_lr), _RunningStats(len(REWARDS))
        cols = [REWARDS.index(r) for r in (REWARDS if self.reward == "all" else (self.reward,))]
        bank_x = np.empty((box.budget,) + self.proxy_x.shape[1:], dtype=np.float32)  # answered queries
        bank_p: Optional[np.ndarray] = None
        n_bank, online, opt, picked, round_rewards = 0, None, None, [], []
        pbar = tqdm(total=box.budget, disable=not self.verbose, desc="knockoff-adaptive")
        while box.remaining > 0:
            arm_of = []
            for _ in range(min(self.round_size, box.remaining)):
                arm_of.append(bandit.sample(rng, [len(p) > 0 for p in pools]))
                picked.append(pools[arm_of[-1]].pop())
            x = self.proxy_x[picked[-len(arm_of):]]
            probs = box(x)
            if online is None:
                online = new_substitute(self.arch, x.shape, probs.shape[1], seed, self.device)
                opt = torch.optim.Adam(online.parameters(), lr=self.lr)
                bank_p = np.empty((box.budget, probs.shape[1]), dtype=np.float32)
            recent = bank_p[max(0, n_bank - self.delta):n_bank]
            raw = _raw_rewards(online, x, probs, recent, self.device)
            stats.update(raw)
            rewards = stats.standardise(raw)[:, cols].mean(axis=1)
            for arm, r in zip(arm_of, rewards):
                bandit.update(arm, r, [len(p) > 0 for p in pools])
            x_ok, p_ok = answered(x, probs)
            bank_x[n_bank:n_bank + len(x_ok)], bank_p[n_bank:n_bank + len(x_ok)] = x_ok, p_ok
            self._online_update(online, opt, bank_x, bank_p, n_bank, len(x_ok), rng)
            n_bank += len(x_ok)
            round_rewards.append(float(rewards.mean()))
            pbar.update(len(arm_of))
        pbar.close()
        return {"groups": arms.tolist(), "policy": bandit.policy([True] * len(arms)).tolist(),
                "arm_counts": np.bincount(inverse[picked], minlength=len(arms)).tolist(),
                "round_rewards": round_rewards}

    def _online_update(self, online: nn.Module, opt: torch.optim.Optimizer, bank_x: np.ndarray, bank_p: np.ndarray,
                       n_old: int, n_new: int, rng: np.random.Generator) -> None:
        """A few Adam steps on the n_new newest answers plus as many replayed earlier ones."""
        if self.online_steps == 0 or n_new == 0:
            return
        idx = np.arange(n_old, n_old + n_new)
        if n_old > 0:
            idx = np.concatenate([idx, rng.choice(n_old, size=min(n_old, n_new), replace=False)])
        xt, pt = to_model_space(bank_x[idx], self.device), torch.as_tensor(bank_p[idx], device=self.device)
        online.train()
        for _ in range(self.online_steps):
            loss = soft_cross_entropy(online(xt), pt)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()


@torch.no_grad()
def _raw_rewards(online: nn.Module, x: np.ndarray, probs: np.ndarray, recent: np.ndarray, device: str) -> np.ndarray:
    """(n, 3) raw certainty, diversity and loss rewards of one round; refused rows get zeros.

    certainty: top-1 minus top-2 probability; diversity: sum_k max(0, p_k - mean of the recent answers_k);
    loss: soft cross-entropy of the online substitute on the answer.
    """
    raw = np.zeros((len(x), len(REWARDS)))
    ok = ~np.isnan(probs).any(axis=1)
    if not ok.any():
        return raw
    p = probs[ok]
    top2 = np.sort(p, axis=1)[:, -2:]
    raw[ok, 0] = top2[:, 1] - top2[:, 0]
    raw[ok, 1] = np.clip(p - (recent.mean(axis=0) if len(recent) else 0.0), 0.0, None).sum(axis=1)
    online.eval()
    logp = torch.log_softmax(online(to_model_space(x[ok], device)), dim=1).cpu().numpy()
    raw[ok, 2] = -(p * logp).sum(axis=1)
    return raw


class _GradientBandit:
    """Gradient bandit (Sutton & Barto, 2nd ed., section 2.8) over arms that can become unavailable."""

    def __init__(self, n_arms: int, lr: float):
        self.prefs, self.lr, self.avg_reward, self.n = np.zeros(n_arms), lr, 0.0, 0

    def policy(self, available: list) -> np.ndarray:
        """Softmax of the preferences over the available arms (zero probability elsewhere)."""
        mask = np.asarray(available, dtype=bool)
        e = np.where(mask, np.exp(self.prefs - self.prefs[mask].max()), 0.0)
        return e / e.sum()

    def sample(self, rng: np.random.Generator, available: list) -> int:
        return int(rng.choice(len(self.prefs), p=self.policy(available)))

    def update(self, arm: int, reward: float, available: list) -> None:
        """H_a += lr (r - r_avg)(1 - pi_a); H_b -= lr (r - r_avg) pi_b for the other arms."""
        step = self.lr * (reward - self.avg_reward)  # baseline: mean of the earlier rewards
        self.prefs -= step * self.policy(available)
        self.prefs[arm] += step
        self.n += 1
        self.avg_reward += (reward - self.avg_reward) / self.n


class _RunningStats:
    """Running mean and variance (Welford) of reward vectors, to standardise them."""

    def __init__(self, dim: int):
        self.n, self.mean, self.m2 = 0, np.zeros(dim), np.zeros(dim)

    def update(self, rows: np.ndarray) -> None:
        for row in rows:
            self.n += 1
            d = row - self.mean
            self.mean += d / self.n
            self.m2 += d * (row - self.mean)

    def standardise(self, rows: np.ndarray) -> np.ndarray:
        std = np.sqrt(self.m2 / max(self.n, 1))
        return np.where(std > 0, (rows - self.mean) / np.where(std > 0, std, 1.0), 0.0)
