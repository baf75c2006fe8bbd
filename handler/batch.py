"""Per-request state of one TorchServe batch, carried from preprocess to postprocess."""
import time
from dataclasses import dataclass, field
from typing import List, Optional

import torch

from handler.decoding import InputError
from handler.scorer import ScoreBatch


@dataclass
class RequestItem:
    request_id: str
    client_id: Optional[str]
    image: Optional[torch.Tensor] = None
    error: Optional[InputError] = None


@dataclass
class RequestBatch:
    items: List[RequestItem]
    scores: Optional[ScoreBatch] = None
    started: float = field(default_factory=time.time)
