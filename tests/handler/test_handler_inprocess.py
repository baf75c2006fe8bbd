"""The TorchServe handler driven in-process with a real ts Context (no Java): per-item errors,
decisions, audit records and metrics."""
import json

import numpy as np
import pytest
import torch

from archiver.calibration import raw_terms
from handler.bundle import load_scorer
from handler.config import ConfigError, HandlerConfig
from handler.same_handler import SameDefenseHandler
from tests.conftest import make_context, png_bytes


@pytest.fixture(scope="module")
def scored(tiny_artifacts, mnist_small):
    """Offline scores of benign test images and of uniform noise, to pick clear-cut queries."""
    artifacts, report = tiny_artifacts
    scorer, _ = load_scorer(artifacts, "victim.pt", HandlerConfig())
    x_benign = mnist_small.test[0][:100]
    noise = np.random.default_rng(0).random((20, 1, 28, 28)).astype(np.float32)
    b = scorer.combine(*map(torch.from_numpy, raw_terms(scorer, np.rint(x_benign * 255) / 255)[1:])).numpy()
    n = scorer.combine(*map(torch.from_numpy, raw_terms(scorer, np.rint(noise * 255) / 255)[1:])).numpy()
    return x_benign, b, noise, n, report["calibration"]["threshold"]


def _handler(artifacts, section, headers=None, batch_size=8):
    ctx = make_context(artifacts, section, batch_size=batch_size, headers=headers)
    handler = SameDefenseHandler()
    handler.initialize(ctx)
    return handler, ctx


def test_mixed_batch_answers_each_item(tiny_artifacts, scored, tmp_path):
    artifacts, _ = tiny_artifacts
    x_benign = scored[0]
    audit = tmp_path / "audit.jsonl"
    headers = [{"X-Client-Id": "alice"}, {"x-client-id": "bob"}, {}, {}]
    handler, ctx = _handler(artifacts, {"audit_log": str(audit), "topk": 3}, headers, batch_size=4)
    data = [{"body": png_bytes(x_benign[0])}, {"body": b"not an image"},
            {"body": png_bytes(np.zeros((1, 32, 32), np.float32))}, {"body": {"data": x_benign[1][0].tolist()}}]
    out = handler.handle(data, ctx)
    assert len(out) == 4
    assert [ctx.get_response_status(i)[0] for i in range(4)] == [200, 415, 400, 200]
    assert len(out[0]) == 3 and all(0 <= p <= 1 for p in out[0].values())
    assert "same" not in out[0]  # scores stay hidden by default
    assert out[1]["type"] == "InputError" and "unsupported" in out[1]["message"]
    assert "32x32" in out[2]["message"]
    records = [json.loads(line) for line in audit.read_text().splitlines()]
    assert [r["decision"] for r in records][1:3] == ["input_error", "input_error"]
    assert records[0]["decision"] in ("allow", "flag") and records[3]["decision"] in ("allow", "flag")
    assert [r["status"] for r in records] == [200, 415, 400, 200]
    assert records[0]["client_id"] == "alice" and records[1]["client_id"] == "bob"
    assert all(np.isfinite(records[i]["score"]) and records[i]["rec"] > 0 for i in (0, 3))


def test_reject_policy_refuses_only_suspicious_items(tiny_artifacts, scored, tmp_path):
    artifacts, _ = tiny_artifacts
    x_benign, benign_scores, noise, noise_scores, threshold = scored
    calm = int(np.argmin(benign_scores))
    loud = int(np.argmax(noise_scores))
    assert benign_scores[calm] < threshold < noise_scores[loud], "tiny model must separate these two"
    handler, ctx = _handler(artifacts, {"policy": "reject", "audit_log": str(tmp_path / "a.jsonl")}, batch_size=3)
    out = handler.handle([{"body": png_bytes(x_benign[calm])}, {"body": png_bytes(noise[loud])},
                          {"body": png_bytes(x_benign[calm])}], ctx)
    assert [ctx.get_response_status(i)[0] for i in range(3)] == [200, 403, 200]
    assert out[1]["type"] == "QueryRefused"
    assert out[0] == out[2] and isinstance(out[0], dict)


def test_log_policy_answers_everything_and_can_expose_scores(tiny_artifacts, scored):
    artifacts, _ = tiny_artifacts
    _, _, noise, noise_scores, threshold = scored
    loud = int(np.argmax(noise_scores))
    handler, ctx = _handler(artifacts, {"expose_scores": True, "audit_log": None}, batch_size=1)
    out = handler.handle([{"body": png_bytes(noise[loud])}], ctx)
    assert ctx.get_response_status(0)[0] == 200
    assert out[0]["same"]["flagged"] is True and out[0]["same"]["score"] > threshold


def test_bad_config_fails_at_load(tiny_artifacts):
    with pytest.raises(ConfigError, match="policy"):
        _handler(tiny_artifacts[0], {"policy": "nope"})


def test_served_prediction_equals_offline_victim(tiny_artifacts, scored):
    artifacts, _ = tiny_artifacts
    x_benign = scored[0][:8]
    handler, ctx = _handler(artifacts, {"topk": 10, "audit_log": None}, batch_size=8)
    out = handler.handle([{"body": png_bytes(img)} for img in x_benign], ctx)
    scorer, _ = load_scorer(artifacts, "victim.pt", HandlerConfig())
    logits = raw_terms(scorer, (np.rint(x_benign * 255) / 255).astype(np.float32))[0]
    probs = torch.softmax(torch.from_numpy(logits), 1).numpy()
    for row, resp in enumerate(out):
        served = np.array([resp[str(k)] for k in range(10)])
        assert np.allclose(served, probs[row], atol=1e-5)


def test_explanations_attribute_the_victim(tiny_artifacts, scored):
    artifacts, _ = tiny_artifacts
    headers = [{"explain": "True"}, {"explain": "True"}]
    handler, ctx = _handler(artifacts, {"audit_log": None}, headers, batch_size=2)
    out = handler.handle([{"body": png_bytes(scored[0][0]), "target": 3}, {"body": b"junk"}], ctx)
    attribution = np.array(out[0])
    assert attribution.shape == (1, 28, 28) and np.abs(attribution).sum() > 0
    assert out[1]["type"] == "InputError"
