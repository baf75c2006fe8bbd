"""DFME: data-free model extraction with a generator and zeroth-order gradient estimates.

| Paper link: https://arxiv.org/abs/2011.14779
| Truong, Maini, Walls, Papernot. "Data-Free Model Extraction". CVPR 2021.
| Code: github.com/cake-lab/datafree-model-extraction (the generator is DFAD's ``GeneratorA``).

A generator G maps noise to images; the student (the substitute) learns to match the victim on them, and G
learns to maximise their disagreement, the L1 distance between the student's logits and the victim's logits.
The victim is a black box, so G's gradient through it is estimated by forward differences: for each image,
``grad_m`` random unit directions u in G's pre-tanh output space, (L(x + eps u) - L(x)) / eps * u * d / m.
This module answers probabilities, so the victim's logits are approximated, as in DFME's ``no_logits`` mode,
by log-probabilities minus their mean over classes (``logit_correction="mean"``), clamped at ``min_prob``.

One iteration = ``student_steps`` student steps then ``generator_steps`` generator steps (DFME runs the
generator first; starting with the student lets the class count come from the first answers). It costs
``batch * (student_steps + generator_steps * (grad_m + 1))`` queries. The last iteration shrinks its batch to
fit the budget and any remainder is spent on one small student step, so exactly ``budget`` queries are sent.
Refused (NaN) answers are dropped from both losses.

Scaled down for a 2-core CPU and budgets in the thousands (the paper spends millions): batch 32 (paper
256, smaller gives more student steps per query), noise size 100 (256), generator width 32 (64), generator
Adam lr 1e-3 (1e-4); as in the paper: student SGD lr 0.1, momentum 0.9, weight decay 5e-4, 5 student steps
and 1 generator step per iteration, m = 1, eps = 1e-3; no learning-rate schedule.
``final_retrain=True`` (off by default, not in the paper) retrains a fresh substitute on all answers with
soft labels; against a conv3 MNIST victim at 4,000 queries it reached 0.94 test accuracy where the DFME
student reached 0.51-0.63.
"""
import logging
from typing import Any, Dict, Tuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from benchmarks.attacks.base import BudgetedBlackBox, ExtractionAttack, new_substitute

logger = logging.getLogger(__name__)


class DFMEGenerator(nn.Module):
    """DFAD/DFME ``GeneratorA``, narrower: noise (N, nz) -> images (N, C, H, W) in model space [-1, 1].

    Linear -> BN -> up x2 -> Conv-BN-LeakyReLU -> up (to img_size) -> Conv-BN-LeakyReLU -> Conv -> BN -> tanh.
    """

    def __init__(self, nz: int = 100, ngf: int = 32, img_size: int = 28, nc: int = 1):
        super().__init__()
        self.img_size, self.init_size = img_size, max(1, img_size // 4)
        self.l1 = nn.Linear(nz, 2 * ngf * self.init_size ** 2)
        self.bn0 = nn.BatchNorm2d(2 * ngf)
        self.block1 = nn.Sequential(nn.Conv2d(2 * ngf, 2 * ngf, 3, 1, 1), nn.BatchNorm2d(2 * ngf),
                                    nn.LeakyReLU(0.2, inplace=True))
        self.block2 = nn.Sequential(nn.Conv2d(2 * ngf, ngf, 3, 1, 1), nn.BatchNorm2d(ngf),
                                    nn.LeakyReLU(0.2, inplace=True), nn.Conv2d(ngf, nc, 3, 1, 1),
                                    nn.BatchNorm2d(nc, affine=False))

    def forward(self, z: torch.Tensor, pre_x: bool = False) -> torch.Tensor:
        """Images in [-1, 1]; with ``pre_x`` the pre-tanh output (where DFME perturbs)."""
        out = self.bn0(self.l1(z).view(len(z), -1, self.init_size, self.init_size))
        out = self.block1(F.interpolate(out, scale_factor=2))
        out = self.block2(F.interpolate(out, size=(self.img_size, self.img_size)))
        return out if pre_x else torch.tanh(out)


class DFME(ExtractionAttack):
    """Truong et al.'s data-free model extraction, scaled down (see the module docstring).

    :param img_shape: (C, H, W) of the victim's inputs. Default: (1, 28, 28).
    :param batch: generated images per step. Default: 32.
    :param grad_m: random directions per image in the gradient estimate. Default: 1.
    :param grad_eps: forward-difference step. Default: 1e-3.
    :param generator_steps: generator steps per iteration. Default: 1.
    :param student_steps: student steps per iteration. Default: 5.
    :param nz: noise size. Default: 100.
    :param ngf: generator width. Default: 32.
    :param lr_generator: generator Adam learning rate. Default: 1e-3.
    :param lr_student: student SGD learning rate (momentum 0.9, weight decay 5e-4). Default: 0.1.
    :param min_prob: probabilities are clamped here before the log. Default: 1e-8.
    :param final_retrain: retrain a fresh substitute on all answers at the end. Default: False.
    :param kwargs: substitute and query settings of :class:`ExtractionAttack` (``epochs``, ``lr`` and
        ``batch_size`` only serve ``final_retrain``).
    """

    name = "dfme"
    attack_params = ExtractionAttack.attack_params + (
        "img_shape", "batch", "grad_m", "grad_eps", "generator_steps", "student_steps", "nz", "ngf",
        "lr_generator", "lr_student", "min_prob", "final_retrain")

    def __init__(self, img_shape: Tuple[int, int, int] = (1, 28, 28), batch: int = 32, grad_m: int = 1,
                 grad_eps: float = 1e-3, generator_steps: int = 1, student_steps: int = 5, nz: int = 100,
                 ngf: int = 32, lr_generator: float = 1e-3, lr_student: float = 0.1, min_prob: float = 1e-8,
                 final_retrain: bool = False, **kwargs: Any):
        kwargs.setdefault("query_batch", 256)
        super().__init__(**kwargs)
        self.img_shape, self.batch, self.grad_m, self.grad_eps = tuple(img_shape), batch, grad_m, grad_eps
        self.generator_steps, self.student_steps, self.nz, self.ngf = generator_steps, student_steps, nz, ngf
        self.lr_generator, self.lr_student, self.min_prob = lr_generator, lr_student, min_prob
        self.final_retrain = final_retrain
        self._check_params()

    def _check_params(self) -> None:
        super()._check_params()
        if len(self.img_shape) != 3 or self.img_shape[1] != self.img_shape[2] or min(self.img_shape) < 1:
            raise ValueError(f"img_shape must be (C, H, W) with H == W; got {self.img_shape!r}.")
        for key in ("batch", "grad_m", "nz", "ngf", "student_steps"):
            if not isinstance(getattr(self, key), (int, np.integer)) or getattr(self, key) < 1:
                raise ValueError(f"{key} must be a positive integer; got {getattr(self, key)!r}.")
        if not isinstance(self.generator_steps, (int, np.integer)) or self.generator_steps < 0:
            raise ValueError(f"generator_steps must be a non-negative integer; got {self.generator_steps!r}.")
        for key in ("grad_eps", "lr_generator", "lr_student", "min_prob"):
            if not getattr(self, key) > 0:
                raise ValueError(f"{key} must be positive; got {getattr(self, key)!r}.")

    def _run(self, box: BudgetedBlackBox, rng: np.random.Generator, seed: int) -> Tuple[nn.Module, Dict[str, Any]]:
        gen = DFMEGenerator(self.nz, self.ngf, self.img_shape[1], self.img_shape[0]).to(self.device)
        opt_g = torch.optim.Adam(gen.parameters(), lr=self.lr_generator)
        student, opt_s = None, None
        per_item = self.student_steps + self.generator_steps * (self.grad_m + 1)
        history = {"student_loss": [], "generator_disagreement": []}
        pbar = tqdm(total=box.budget, disable=not self.verbose, desc="dfme")
        while box.remaining > 0:
            b = min(self.batch, box.remaining // per_item)
            for _ in range(self.student_steps if b else 1):
                n = b or box.remaining  # the remainder goes to one last small student step
                with torch.no_grad():
                    x = gen(torch.randn(n, self.nz, device=self.device))
                probs = box(self._to_unit(x))
                if student is None:
                    student = new_substitute(self.arch, x.shape, probs.shape[1], seed, self.device)
                    opt_s = torch.optim.SGD(student.parameters(), lr=self.lr_student, momentum=0.9, weight_decay=5e-4)
                history["student_loss"].append(self._student_step(student, opt_s, x, probs))
            for _ in range(self.generator_steps if b else 0):
                history["generator_disagreement"].append(self._generator_step(gen, opt_g, student, box, b))
            pbar.update(b * per_item if b else n)
        pbar.close()
        extra = {"iterations": len(history["generator_disagreement"]) // max(self.generator_steps, 1), **history}
        if self.final_retrain:
            extra["student"] = student.eval()
            student = self._train(box.queries, box.outputs, seed)
        return student, extra

    def _to_unit(self, x: torch.Tensor) -> np.ndarray:
        """Model space tensor -> [0, 1] numpy queries."""
        return ((x.detach() + 1.0) / 2.0).clamp_(0.0, 1.0).cpu().numpy()

    def _victim_logits(self, probs: np.ndarray) -> torch.Tensor:
        """Mean-corrected log-probabilities (DFME's logit approximation); NaN rows stay NaN."""
        logp = torch.as_tensor(probs, device=self.device).clamp_min(self.min_prob).log()
        return logp - logp.mean(dim=1, keepdim=True)

    def _student_step(self, student: nn.Module, opt: torch.optim.Optimizer, x: torch.Tensor,
                      probs: np.ndarray) -> float:
        ok = torch.as_tensor(~np.isnan(probs).any(axis=1), device=self.device)
        if not ok.any():
            return float("nan")
        student.train()
        loss = F.l1_loss(student(x[ok]), self._victim_logits(probs)[ok])
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    def _generator_step(self, gen: DFMEGenerator, opt: torch.optim.Optimizer, student: nn.Module,
                        box: BudgetedBlackBox, b: int) -> float:
        """One generator step with the forward-differences estimate; costs b * (grad_m + 1) queries."""
        m, shape = self.grad_m, (self.img_shape[0], self.img_shape[1], self.img_shape[2])
        dim = int(np.prod(shape))
        gen.train()
        pre = gen(torch.randn(b, self.nz, device=self.device), pre_x=True)
        with torch.no_grad():
            u = torch.randn(b, m, dim, device=self.device)
            u = torch.cat([u / u.norm(dim=2, keepdim=True), torch.zeros(b, 1, dim, device=self.device)], dim=1)
            points = torch.tanh(pre.detach()[:, None] + self.grad_eps * u.view(b, m + 1, *shape)).view(-1, *shape)
            student.eval()
            loss = F.l1_loss(student(points), self._victim_logits(box(self._to_unit(points))), reduction="none")
            loss = -loss.mean(dim=1).view(b, m + 1)  # the generator minimises minus the disagreement
            diff = (loss[:, :m] - loss[:, m:]) / self.grad_eps  # (b, m); NaN where a query was refused
            ok = ~torch.isnan(diff).any(dim=1)
            grad = (torch.nan_to_num(diff)[:, :, None] * u[:, :m]).mean(dim=1) * dim
            grad = (grad * ok[:, None]).view(b, *shape) / max(int(ok.sum()), 1)
        opt.zero_grad(set_to_none=True)
        pre.backward(grad)
        opt.step()
        return float(-loss[ok, m].mean()) if ok.any() else float("nan")
