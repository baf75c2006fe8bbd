"""Custom TorchServe metrics for the defense (shown on the Prometheus endpoint with
model_metrics_auto_detect=true): query, flag, refusal and input-error counters and score gauges."""
import logging
from typing import Any, Dict, List

logger = logging.getLogger(__name__)


class Telemetry:
    def __init__(self, metrics: Any, model_name: str):
        self.metrics = metrics
        self.model_name = model_name or "model"
        self._scores: List[float] = []
        self._counts: Dict[str, int] = {}

    def _dims(self):
        from ts.metrics.dimension import Dimension
        return [Dimension("ModelName", self.model_name), Dimension("Level", "Model")]

    def record(self, record: Dict[str, Any]) -> None:
        key = {"input_error": "SameInputErrors", "reject": "SameRejected", "flag": "SameFlagged"}.get(record["decision"])
        self._counts["SameQueries"] = self._counts.get("SameQueries", 0) + 1
        if key:
            self._counts[key] = self._counts.get(key, 0) + 1
        if record["decision"] == "reject":  # refused queries are flagged too
            self._counts["SameFlagged"] = self._counts.get("SameFlagged", 0) + 1
        if "score" in record:
            self._scores.append(record["score"])

    def batch_done(self, seconds: float) -> None:
        """Flush the batch's counters and gauges; metric failures never fail a request."""
        if self.metrics is None:
            return
        try:
            from ts.metrics.metric_type_enum import MetricTypes
            dims = self._dims()
            for name, value in self._counts.items():
                self.metrics.add_counter(name, value, None, dims)
            if self._scores:
                self.metrics.add_metric("SameScoreMax", max(self._scores), "score", None, dims, MetricTypes.GAUGE)
                self.metrics.add_metric("SameScoreMean", sum(self._scores) / len(self._scores), "score", None, dims,
                                        MetricTypes.GAUGE)
            self.metrics.add_time("SameBatchLatency", seconds * 1000.0, None, "ms", dims)
        except Exception:  # noqa: BLE001 - telemetry must not take requests down
            logger.exception("could not emit SAME metrics")
        finally:
            self._scores, self._counts = [], {}
