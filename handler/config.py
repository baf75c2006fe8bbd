"""The `handler:` section of the archive's model-config.yaml: every runtime setting, validated in one place.

Unknown keys and bad values raise ConfigError with a message that names the key and what is allowed,
so a typo in model-config.yaml stops the worker at load time instead of silently using a default.
"""
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Dict, List, Optional

POLICIES = ("log", "reject")
DEVICES = ("auto", "cpu", "cuda")


class ConfigError(ValueError):
    """A setting in the `handler:` section of model-config.yaml is missing, unknown or invalid."""


@dataclass(frozen=True)
class HandlerConfig:
    policy: str = "log"                  # log: answer and record; reject: refuse queries scoring above the threshold
    threshold: Optional[float] = None    # overrides the calibrated threshold when set
    topk: int = 5                        # classes returned per prediction
    client_id_header: str = "X-Client-Id"  # REST header (case-insensitive) naming the client
    client_id_key: str = "client_id"     # input key carrying the client id over gRPC (metadata is not forwarded)
    audit_log: Optional[str] = "same_audit.jsonl"  # JSON line per query; relative paths under $LOG_LOCATION; null = off
    expose_scores: bool = False          # add the SAME score to responses (teaches adaptive attackers: off by default)
    max_request_bytes: int = 1_000_000   # larger payloads get 413
    torch_threads: int = 1               # per worker; 1 is right on small CPU hosts
    device: str = "auto"                 # auto: TorchServe's gpu_id when CUDA is there, else cpu
    amp: bool = False                    # autocast to float16 on CUDA
    input_mean: List[float] = field(default_factory=lambda: [0.5])  # victim input = (x01 - mean) / std
    input_std: List[float] = field(default_factory=lambda: [0.5])
    calibration_file: str = "calibration.json"
    mae_file: str = "mae.pt"
    shadow_file: str = "shadow.pt"

    def __post_init__(self):
        self._check_params()

    def _check_params(self) -> None:
        if self.policy not in POLICIES:
            raise ConfigError(f"handler.policy must be one of {POLICIES}, got {self.policy!r}")
        if self.device not in DEVICES:
            raise ConfigError(f"handler.device must be one of {DEVICES}, got {self.device!r}")
        for name in ("topk", "max_request_bytes", "torch_threads"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ConfigError(f"handler.{name} must be a positive integer, got {value!r}")
        for name in ("expose_scores", "amp"):
            if not isinstance(getattr(self, name), bool):
                raise ConfigError(f"handler.{name} must be true or false, got {getattr(self, name)!r}")
        if self.threshold is not None and not isinstance(self.threshold, (int, float)):
            raise ConfigError(f"handler.threshold must be a number or null, got {self.threshold!r}")
        for name in ("client_id_header", "client_id_key", "calibration_file", "mae_file", "shadow_file"):
            if not isinstance(getattr(self, name), str) or not getattr(self, name):
                raise ConfigError(f"handler.{name} must be a non-empty string")
        if self.audit_log is not None and not isinstance(self.audit_log, str):
            raise ConfigError(f"handler.audit_log must be a path or null, got {self.audit_log!r}")
        for name in ("input_mean", "input_std"):
            value = getattr(self, name)
            if not isinstance(value, list) or not value or not all(isinstance(v, (int, float)) for v in value):
                raise ConfigError(f"handler.{name} must be a non-empty list of numbers, got {value!r}")
        if len(self.input_mean) != len(self.input_std):
            raise ConfigError("handler.input_mean and handler.input_std must have the same length")
        if any(v <= 0 for v in self.input_std):
            raise ConfigError("handler.input_std values must be positive")

    @classmethod
    def from_dict(cls, section: Optional[Dict[str, Any]]) -> "HandlerConfig":
        section = dict(section or {})
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(section) - known)
        if unknown:
            raise ConfigError(f"unknown key(s) in handler section: {unknown}; known keys: {sorted(known)}")
        try:
            return cls(**section)
        except TypeError as err:  # pragma: no cover - guarded by the key check above
            raise ConfigError(str(err)) from err

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)
