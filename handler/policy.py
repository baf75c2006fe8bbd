"""What to do with a scored query: the response policy.

`log` answers every query and records the flag; `reject` refuses queries whose score is above the
threshold with a per-item 403 (the other items of the batch are answered as usual).
"""
from dataclasses import dataclass

ALLOW, FLAG, REJECT = "allow", "flag", "reject"


@dataclass(frozen=True)
class Decision:
    action: str          # allow | flag (answered, recorded) | reject (refused)
    flagged: bool
    status: int = 200
    message: str = ""


def decide(score: float, threshold: float, policy: str) -> Decision:
    flagged = score > threshold
    if not flagged:
        return Decision(ALLOW, False)
    if policy == "reject":
        return Decision(REJECT, True, 403, "query refused by the model-extraction defense")
    return Decision(FLAG, True)
