"""The .mar is ONE self-contained archive: three models, calibration, config, and a handler that loads
without this project, numpy or any benchmark/training dependency installed."""
import json
import os
import subprocess
import sys
import zipfile

import pytest
import yaml

from archiver.errors import ArchiverError
from archiver.packaging import ArchiveConfig, build_archive
from handler.config import ConfigError

CHILD = r'''
import json, os, sys
BLOCKED = {"numpy", "captum", "sklearn", "scipy", "skimage", "mlxtend", "matplotlib", "tqdm", "archiver", "benchmarks"}
class Block:
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            raise ModuleNotFoundError("blocked " + name, name=name)
sys.meta_path.insert(0, Block())
model_dir = sys.argv[1]
sys.path = [model_dir] + [p for p in sys.path if p not in ("", os.getcwd(), sys.argv[2])]
import yaml, ts
from ts.context import Context, RequestProcessor
from ts.metrics.metric_cache_yaml_impl import MetricsCacheYamlImpl
import same_handler, handler
metrics = MetricsCacheYamlImpl(os.path.join(os.path.dirname(ts.__file__), "configs", "metrics.yaml"))
metrics.initialize_cache()
manifest = json.load(open(os.path.join(model_dir, "MAR-INF", "MANIFEST.json")))
cfg = yaml.safe_load(open(os.path.join(model_dir, "model-config.yaml")))
ctx = Context("m", model_dir, manifest, 2, None, "0.12.0", metrics=metrics, model_yaml_config=cfg)
ctx.request_processor = [RequestProcessor({}), RequestProcessor({})]
h = same_handler.SameDefenseHandler()
h.initialize(ctx)
out = h.handle([{"body": {"data": [[0.0] * 28] * 28}}, {"body": b"junk"}], ctx)
print(json.dumps({"handler_file": handler.__file__, "out": out,
                  "status": [ctx.get_response_status(i)[0] for i in range(2)],
                  "numpy_loaded": "numpy" in sys.modules}))
'''


@pytest.fixture(scope="module")
def mar(tiny_artifacts, tmp_path_factory):
    export = tmp_path_factory.mktemp("store")
    return build_archive(ArchiveConfig(artifacts_dir=tiny_artifacts[0], model_name="digits", export_path=str(export),
                                       handler={"policy": "reject", "topk": 2, "audit_log": None}))


def test_archive_holds_models_config_and_handler(mar):
    names = set(zipfile.ZipFile(mar).namelist())
    for required in ("victim.pt", "mae.pt", "shadow.pt", "calibration.json", "index_to_name.json",
                     "model-config.yaml", "same_handler.py", "handler/scorer.py", "MAR-INF/MANIFEST.json"):
        assert required in names
    with zipfile.ZipFile(mar) as zf:
        cfg = yaml.safe_load(zf.read("model-config.yaml"))
        manifest = json.loads(zf.read("MAR-INF/MANIFEST.json"))
    assert cfg["handler"]["policy"] == "reject" and cfg["handler"]["expose_scores"] is False
    assert manifest["model"]["serializedFile"] == "victim.pt"


def test_handler_loads_from_the_archive_alone(mar, tmp_path):
    model_dir = tmp_path / "unpacked"
    zipfile.ZipFile(mar).extractall(model_dir)
    repo_root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    result = subprocess.run([sys.executable, "-c", CHILD, str(model_dir), repo_root], cwd=str(tmp_path),
                            capture_output=True, text=True, timeout=120, env={**os.environ, "PYTHONPATH": ""})
    assert result.returncode == 0, result.stderr[-3000:]
    report = json.loads(result.stdout.strip().splitlines()[-1])
    assert report["handler_file"].startswith(str(model_dir))
    assert report["numpy_loaded"] is False
    assert report["status"][1] == 415
    assert report["status"][0] in (200, 403) and isinstance(report["out"][0], dict)


def test_bad_handler_setting_fails_at_archive_time(tiny_artifacts, tmp_path):
    with pytest.raises(ConfigError, match="unknown key"):
        build_archive(ArchiveConfig(artifacts_dir=tiny_artifacts[0], export_path=str(tmp_path), handler={"polcy": 1}))


def test_missing_artifacts_are_named(tmp_path):
    with pytest.raises(ArchiverError, match="victim.pt"):
        build_archive(ArchiveConfig(artifacts_dir=str(tmp_path), export_path=str(tmp_path / "out")))
