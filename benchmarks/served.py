"""Run query sets through a served, defended model and collect what its audit log recorded.

Each query set is sent under its own client id, so the audit log's per-query scores can be joined
back to the population (benign user, attack name) that sent them.
"""
import os
import time
from dataclasses import dataclass
from typing import Dict, List, Sequence

import numpy as np

from benchmarks.client import Response, RestClient, top1
from handler.audit import read_audit_log


@dataclass
class ServedRun:
    responses: List[Response]
    predictions: np.ndarray     # top-1 index or -1 when refused / failed
    statuses: np.ndarray
    seconds: float


def send_queries(base_url: str, model: str, token: str, client_id: str, images: np.ndarray,
                 class_names: Sequence[str], concurrency: int = 4, fmt: str = "png") -> ServedRun:
    client = RestClient(base_url, model, token, client_id=client_id, concurrency=concurrency, fmt=fmt)
    start = time.time()
    responses = client.predict(images)
    preds, statuses = top1(responses, class_names)
    return ServedRun(responses, preds, statuses, time.time() - start)


def audit_by_client(path: str, wait_for: Dict[str, int], timeout_s: float = 30.0) -> Dict[str, List[dict]]:
    """Audit records grouped by client id, waiting until each listed client has its expected count."""
    deadline = time.time() + timeout_s
    while True:
        records = read_audit_log(path) if os.path.isfile(path) else []
        groups: Dict[str, List[dict]] = {}
        for rec in records:
            groups.setdefault(rec.get("client_id"), []).append(rec)
        if all(len(groups.get(c, [])) >= n for c, n in wait_for.items()) or time.time() > deadline:
            return groups
        time.sleep(0.2)


def scores_of(records: List[dict], key: str = "score") -> np.ndarray:
    return np.array([r[key] for r in records if key in r], dtype=np.float64)
