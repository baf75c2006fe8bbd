"""End to end against a real TorchServe (Java) with a built .mar: token auth, per-item decisions, metrics."""
import os
import urllib.request

import numpy as np
import pytest
import torch

from archiver.calibration import raw_terms
from archiver.packaging import ArchiveConfig, build_archive
from archiver.server import ServerConfig, TorchServeProcess
from benchmarks.client import RestClient
from handler.audit import read_audit_log
from handler.bundle import load_scorer
from handler.config import HandlerConfig

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def server(tiny_artifacts, tmp_path_factory):
    root = tmp_path_factory.mktemp("e2e")
    mar = build_archive(ArchiveConfig(artifacts_dir=tiny_artifacts[0], model_name="digits",
                                      export_path=str(root / "store"), handler={"policy": "reject", "topk": 10}))
    cfg = ServerConfig.on_free_ports(model_store=str(root / "store"), models={"digits": os.path.basename(mar)},
                       run_dir=str(root / "run"))
    ts = TorchServeProcess(cfg)
    ts.start()
    try:
        yield ts
    finally:
        ts.stop()


@pytest.fixture(scope="module")
def queries(tiny_artifacts, mnist_small):
    """A benign image and a noise image whose offline scores sit clearly on each side of the threshold."""
    artifacts, report = tiny_artifacts
    scorer, _ = load_scorer(artifacts, "victim.pt", HandlerConfig())
    x = (np.rint(mnist_small.test[0][:100] * 255) / 255).astype(np.float32)
    noise = (np.rint(np.random.default_rng(1).random((20, 1, 28, 28)) * 255) / 255).astype(np.float32)
    sb = scorer.combine(*map(torch.from_numpy, raw_terms(scorer, x)[1:])).numpy()
    sn = scorer.combine(*map(torch.from_numpy, raw_terms(scorer, noise)[1:])).numpy()
    benign, ood = x[int(np.argmin(sb))], noise[int(np.argmax(sn))]
    assert sb.min() < report["calibration"]["threshold"] < sn.max()
    return benign, ood


def test_requests_without_the_token_are_refused(server, queries):
    resp = RestClient(server.inference_url, "digits", token=None).predict_one(queries[0])
    assert resp.status == 400 and "Token Authorization failed" in resp.body["message"]
    resp = RestClient(server.inference_url, "digits", token="wrong").predict_one(queries[0])
    assert resp.status == 400


def test_benign_answered_and_ood_rejected(server, queries):
    client = RestClient(server.inference_url, "digits", token=server.inference_key, client_id="e2e-user")
    benign, ood = client.predict(np.stack(queries))
    assert benign.status == 200 and len(benign.body) == 10
    assert abs(sum(benign.body.values()) - 1) < 1e-4
    assert ood.status == 403 and ood.body["type"] == "QueryRefused"
    bad = client.post(b"\x89PNG\r\n\x1a\ntruncated", "image/png")
    assert bad.status == 415
    records = [r for r in read_audit_log(server.audit_log_path()) if r["client_id"] == "e2e-user"]
    assert sorted(r["decision"] for r in records) == ["allow", "input_error", "reject"]


def test_model_registration_is_off_and_metrics_are_exported(server, queries):
    req = urllib.request.Request(f"http://127.0.0.1:{server.cfg.management_port}/models?url=x.mar", method="POST")
    req.add_header("Authorization", f"Bearer {server.keys()['management']}")
    with pytest.raises(urllib.error.HTTPError) as info:
        urllib.request.urlopen(req, timeout=10)
    assert info.value.code == 405
    RestClient(server.inference_url, "digits", token=server.inference_key).predict_one(queries[0])
    text = urllib.request.urlopen(server.metrics_url, timeout=10).read().decode()
    assert 'SameQueries{ModelName="digits"' in text
    assert "SameRejected" in text and "SameScoreMax" in text
