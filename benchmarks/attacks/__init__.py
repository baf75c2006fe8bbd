"""Model-extraction attacks run against the (defended) classifier, one class per attack.

Every attack is an :class:`ExtractionAttack`: ``attack.extract(blackbox, budget, seed)`` spends exactly
``budget`` queries through ``blackbox`` (float32 (N, C, H, W) in [0, 1] -> (N, K) probabilities, all-NaN rows
for refused queries) and returns an :class:`AttackResult`. ``ATTACKS`` maps short names to classes.

Example::

    from benchmarks.attacks import KnockoffNets, evaluate_substitute
    from benchmarks.proxies import natural_crops

    result = KnockoffNets(natural_crops(10000)).extract(blackbox, budget=4000, seed=0)
    evaluate_substitute(result.substitute, x_test, y_test)
"""
from typing import Dict, Type

from benchmarks.attacks.adaptive import MixedQueryAttack, ReconstructionFilterKnockoff
from benchmarks.attacks.base import (AttackResult, BudgetedBlackBox, BudgetExceededError, ExtractionAttack,
                                     evaluate_substitute, train_substitute)
from benchmarks.attacks.dfme import DFME
from benchmarks.attacks.jbda import JBDA
from benchmarks.attacks.knockoff import KnockoffNets

ATTACKS: Dict[str, Type[ExtractionAttack]] = {
    "knockoff": KnockoffNets,
    "jbda": JBDA,
    "dfme": DFME,
    "recon_filter_knockoff": ReconstructionFilterKnockoff,
    "mixed": MixedQueryAttack,
}

__all__ = [
    "ATTACKS", "AttackResult", "BudgetExceededError", "BudgetedBlackBox", "DFME", "ExtractionAttack", "JBDA",
    "KnockoffNets", "MixedQueryAttack", "ReconstructionFilterKnockoff", "evaluate_substitute", "train_substitute",
]
