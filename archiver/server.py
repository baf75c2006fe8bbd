"""Start and stop a TorchServe for the defended model with a locked-down config.

Every address is on loopback, token authorization stays ON, the model-registration API stays off,
logs are quiet (one file, warnings and up, plus the access log) and metrics are Prometheus.
Each server gets its own run directory: config.properties, log4j2.xml, key_file.json (the tokens),
logs/ and a private TEMP (TorchServe's pid file and sockets live there, so stale servers of other
runs do not collide with this one).
"""
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from dataclasses import dataclass, field
from typing import Dict, Optional

from archiver.errors import ArchiverError

_APPENDER = """    <RollingFile name="{name}" fileName="${{env:LOG_LOCATION:-logs}}/{name}.log"
                 filePattern="${{env:LOG_LOCATION:-logs}}/{name}.%d{{yyyy-MM-dd}}.log.gz">
      <PatternLayout pattern="{pattern}"/>
      <Policies><SizeBasedTriggeringPolicy size="20 MB"/></Policies>
      <DefaultRolloverStrategy max="3"/>
    </RollingFile>
"""
_FULL, _SHORT = "%d{ISO8601} [%-5p] %t %c - %m%n", "%d{ISO8601} - %m%n"
LOG4J2 = ("""<?xml version="1.0" encoding="UTF-8"?>
<Configuration>
  <Appenders>
""" + "".join(_APPENDER.format(name=n, pattern=p) for n, p in
              (("ts_log", _FULL), ("model_log", _FULL), ("access_log", _SHORT))) + """  </Appenders>
  <Loggers>
    <Logger name="ACCESS_LOG" level="info" additivity="false"><AppenderRef ref="access_log"/></Logger>
    <Logger name="MODEL_LOG" level="info" additivity="false"><AppenderRef ref="model_log"/></Logger>
    <Logger name="MODEL_METRICS" level="off" additivity="false"/>
    <Logger name="TS_METRICS" level="off" additivity="false"/>
    <Logger name="org.pytorch.serve" level="info" additivity="false"><AppenderRef ref="ts_log"/></Logger>
    <Root level="warn"><AppenderRef ref="ts_log"/></Root>
  </Loggers>
</Configuration>
""")


@dataclass
class ServerConfig:
    model_store: str
    models: Dict[str, str]                      # name -> .mar file name in model_store
    run_dir: str = "runs/server"
    inference_port: int = 8080
    management_port: int = 8081
    metrics_port: int = 8082
    grpc_inference_port: int = 7070
    grpc_management_port: int = 7071
    token_auth: bool = True                     # keep on outside tests of the refusal path itself
    max_request_size: int = 2_000_000
    extra_properties: Dict[str, str] = field(default_factory=dict)

    @classmethod
    def on_free_ports(cls, **kwargs) -> "ServerConfig":
        """A config on five currently free loopback ports (demos, benchmarks and tests run beside other servers)."""
        names = ("inference_port", "management_port", "metrics_port", "grpc_inference_port", "grpc_management_port")
        sockets = [socket.socket() for _ in names]
        try:
            for sock in sockets:
                sock.bind(("127.0.0.1", 0))
            ports = {name: sock.getsockname()[1] for name, sock in zip(names, sockets)}
        finally:
            for sock in sockets:
                sock.close()
        return cls(**{**ports, **kwargs})

    def properties(self) -> str:
        props = {
            "inference_address": f"http://127.0.0.1:{self.inference_port}",
            "management_address": f"http://127.0.0.1:{self.management_port}",
            "metrics_address": f"http://127.0.0.1:{self.metrics_port}",
            "grpc_inference_address": "127.0.0.1", "grpc_management_address": "127.0.0.1",
            "grpc_inference_port": str(self.grpc_inference_port),
            "grpc_management_port": str(self.grpc_management_port),
            "enable_model_api": "false", "metrics_mode": "prometheus", "model_metrics_auto_detect": "true",
            "max_request_size": str(self.max_request_size), "max_response_size": str(self.max_request_size),
            "default_workers_per_model": "1", "install_py_dep_per_model": "false",
        }
        if not self.token_auth:
            props["disable_token_authorization"] = "true"
        props.update(self.extra_properties)
        return "".join(f"{k}={v}\n" for k, v in props.items())


def check_java() -> str:
    java = shutil.which("java")
    if not java:
        raise ArchiverError("TorchServe needs Java 11+ and `java` is not on PATH: install it, e.g. "
                            "`sudo apt-get install -y openjdk-17-jre-headless` (the README's `make setup` does)")
    return java


def torchserve_command() -> str:
    """The `torchserve` launcher of this interpreter's environment (works from an un-activated venv too)."""
    beside = os.path.join(os.path.dirname(sys.executable), "torchserve")
    found = beside if os.access(beside, os.X_OK) else shutil.which("torchserve")
    if not found:
        raise ArchiverError("the `torchserve` command is not installed: pip install torchserve==0.12.0")
    return found


class TorchServeProcess:
    """Context manager: `with TorchServeProcess(cfg) as ts: ts.inference_key ...`; stops the server on exit."""

    def __init__(self, cfg: ServerConfig, ready_timeout_s: float = 120.0):
        self.cfg = cfg
        self.run_dir = os.path.abspath(cfg.run_dir)
        self.ready_timeout_s = ready_timeout_s
        self.proc: Optional[subprocess.Popen] = None
        self.env = dict(os.environ, TEMP=os.path.join(self.run_dir, "tmp"), TMPDIR=os.path.join(self.run_dir, "tmp"),
                        LOG_LOCATION=os.path.join(self.run_dir, "logs"),
                        METRICS_LOCATION=os.path.join(self.run_dir, "logs"))

    # ----- lifecycle
    def start(self) -> "TorchServeProcess":
        check_java()
        os.makedirs(os.path.join(self.run_dir, "tmp"), exist_ok=True)
        os.makedirs(os.path.join(self.run_dir, "logs"), exist_ok=True)
        with open(os.path.join(self.run_dir, "config.properties"), "w") as fh:
            fh.write(self.cfg.properties())
        with open(os.path.join(self.run_dir, "log4j2.xml"), "w") as fh:
            fh.write(LOG4J2)
        models = ",".join(f"{name}={mar}" for name, mar in self.cfg.models.items())
        cmd = [torchserve_command(), "--start", "--foreground", "--ncs", "--model-store",
               os.path.abspath(self.cfg.model_store), "--models", models, "--ts-config", "config.properties",
               "--log-config", "log4j2.xml"]
        self._stdout = open(os.path.join(self.run_dir, "logs", "console.log"), "ab")
        self.proc = subprocess.Popen(cmd, cwd=self.run_dir, env=self.env, stdout=self._stdout,
                                     stderr=subprocess.STDOUT, start_new_session=True)
        try:
            self.wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def wait_ready(self) -> None:
        deadline = time.time() + self.ready_timeout_s
        pending = set(self.cfg.models)
        while time.time() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise ArchiverError(f"TorchServe exited with code {self.proc.returncode}; see {self.run_dir}/logs")
            self._raise_on_load_failure()
            for name in list(pending):
                try:
                    status = self.management(f"/models/{name}")
                    workers = status[0].get("workers", [])
                    if workers and all(w.get("status") == "READY" for w in workers):
                        pending.discard(name)
                except (OSError, ValueError, KeyError, IndexError):
                    pass
            if not pending:
                return
            time.sleep(0.5)
        raise ArchiverError(f"models {sorted(pending)} not ready after {self.ready_timeout_s:.0f}s; "
                            f"see {self.run_dir}/logs/ts_log.log and model_log.log")

    def _raise_on_load_failure(self) -> None:
        """Fail fast with the worker's own error instead of waiting out TorchServe's retries."""
        model_log = os.path.join(self.run_dir, "logs", "model_log.log")
        if not os.path.isfile(model_log):
            return
        with open(model_log, encoding="utf-8", errors="replace") as fh:
            lines = [line for line in fh if "MODEL_LOG" in line]
        for i, line in enumerate(lines):
            if "Backend worker process died" in line:
                errors = [l.split("MODEL_LOG - ", 1)[-1].strip() for l in lines[i:] if "Error" in l]
                raise ArchiverError(f"the model failed to load: {errors[-1] if errors else 'see model_log.log'} "
                                    f"(logs in {self.run_dir}/logs)")

    def stop(self) -> None:
        if self.proc is None:
            return
        try:
            subprocess.run([torchserve_command(), "--stop", "--foreground"], cwd=self.run_dir, env=self.env,
                           stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, timeout=60)
            self.proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, OSError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)
        finally:
            self.proc = None
            self._stdout.close()

    def __enter__(self) -> "TorchServeProcess":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # ----- access
    def keys(self) -> Dict[str, str]:
        path = os.path.join(self.run_dir, "key_file.json")
        if not os.path.isfile(path):
            return {}
        with open(path) as fh:
            data = json.load(fh)
        return {kind: data[kind]["key"] for kind in ("inference", "management", "API") if kind in data}

    @property
    def inference_key(self) -> Optional[str]:
        return self.keys().get("inference")

    @property
    def inference_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.inference_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.cfg.metrics_port}/metrics"

    def management(self, path: str):
        req = urllib.request.Request(f"http://127.0.0.1:{self.cfg.management_port}{path}")
        key = self.keys().get("management")
        if key:
            req.add_header("Authorization", f"Bearer {key}")
        with urllib.request.urlopen(req, timeout=5) as resp:
            return json.loads(resp.read())

    def audit_log_path(self, relative: str = "same_audit.jsonl") -> str:
        """Where the workers write a relative audit_log path: under this server's logs/ ($LOG_LOCATION)."""
        return os.path.join(self.run_dir, "logs", relative)
