"""Append-only audit trail: one JSON line per query (scores, decision, client), for owners and benchmarks."""
import json
import logging
import os
import threading
from typing import Any, Dict, Optional

logger = logging.getLogger(__name__)


def resolve_log_path(path: str) -> str:
    """Relative paths go under TorchServe's $LOG_LOCATION (the worker's own cwd is the unpacked .mar,
    which TorchServe deletes on stop), or under ~/same-logs when it is not set."""
    if os.path.isabs(path):
        return path
    base = os.environ.get("LOG_LOCATION") or os.path.join(os.path.expanduser("~"), "same-logs")
    return os.path.abspath(os.path.join(base, path))


class AuditLog:
    """Writes JSON lines with O_APPEND, so the workers of one host can share a file line by line."""

    def __init__(self, path: Optional[str]):
        self.path = resolve_log_path(path) if path else None
        self._lock = threading.Lock()
        if self.path:
            os.makedirs(os.path.dirname(self.path), exist_ok=True)
            logger.info("SAME audit log: %s", self.path)

    def write(self, record: Dict[str, Any]) -> None:
        if not self.path:
            return
        line = (json.dumps(record, separators=(",", ":"), sort_keys=True) + "\n").encode("utf-8")
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
            try:
                os.write(fd, line)
            finally:
                os.close(fd)


def read_audit_log(path: str):
    """All records of an audit log, in file order."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]
