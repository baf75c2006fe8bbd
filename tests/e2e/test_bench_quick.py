"""`same-serve bench detect --quick` machinery: every attack through a real TorchServe, every detector scored
on the same queries, stateful delays, ablations, and the report files."""
import json
import os

import pytest

from benchmarks.detect import DetectConfig, run_detect_bench

pytestmark = pytest.mark.e2e

DETECTORS = {"same", "same_rec_only", "same_dev_only", "msp", "energy", "plain_ae", "prada"}


def test_quick_bench_report(tiny_artifacts, tmp_path):
    out = tmp_path / "bench"
    report = run_detect_bench(DetectConfig(out_dir=str(out), quick=True, artifacts=tiny_artifacts[0], budget=120,
                                           n_benign=100))
    attacks = set(report["detection"])
    assert attacks == {"knockoff_natural", "knockoff_adaptive", "knockoff_digits", "jbda", "dfme",
                       "adaptive_recfilter", "adaptive_mixed"}
    for name in attacks:
        assert set(report["detection"][name]) == DETECTORS
        for metrics in report["detection"][name].values():
            assert 0 <= metrics["auroc"] <= 1 and metrics["n_attack"] == 120 and metrics["n_benign"] == 100
        assert report["attacks"][name]["n_queries"] == 120
        assert 0 <= report["attacks"][name]["substitute"]["accuracy"] <= 1
    assert set(report["queries_until_flagged"]["benign"]) == {"same_window", "prada"}
    assert "alpha_sweep" in report["ablations"] and "variants" in report["ablations"]
    on_disk = json.loads((out / "bench-detect.json").read_text())
    assert on_disk["detection"] == report["detection"]
    for name in ("bench-detect.md", "roc.png", "hist-same.png"):
        assert os.path.getsize(out / name) > 0
