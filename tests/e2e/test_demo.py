"""`same-serve demo --quick`: the whole path (train, archive, serve, query over REST, report) in one go."""
import json

import pytest

from archiver.cli import main

pytestmark = pytest.mark.e2e


def test_quick_demo_writes_a_complete_report(tmp_path):
    report_path = tmp_path / "demo-report.json"
    assert main(["demo", "--quick", "--out", str(tmp_path / "out"), "--report", str(report_path)]) == 0
    report = json.loads(report_path.read_text())
    m = report["detection"]["knockoff_natural"]
    assert set(m) == {"auroc", "aupr", "fpr95", "fpr90", "n_attack", "n_benign"}
    assert m["n_attack"] == 200 and m["n_benign"] == 200
    assert 0.0 <= m["auroc"] <= 1.0 and m["auroc"] > 0.5
    assert report["accuracy"]["served"] == report["accuracy"]["victim_offline"]
    assert report["served_ok"] == {"benign-user": 200, "knockoff-natural": 200}
    assert report["timings_s"]["total"] > 0
