"""Tests for benchmarks.report: the Markdown table, the plots and strict JSON."""
import json
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from benchmarks.metrics import detection_metrics
from benchmarks.report import markdown_table, plot_roc_curves, plot_score_histograms, write_json


def _scores() -> dict:
    rng = np.random.default_rng(0)
    benign_same, benign_msp = rng.normal(0, 1, 200), rng.normal(0, 1, 200)
    return {
        "knockoff": {"same": (benign_same, rng.normal(3, 1, 200)), "msp": (benign_msp, rng.normal(1, 1, 200))},
        "jbda": {"same": (benign_same, rng.normal(1, 1, 150)), "msp": (benign_msp, rng.normal(-0.5, 1, 150))},
    }


def _detection(scores: dict) -> dict:
    return {a: {d: detection_metrics(*pair) for d, pair in by_d.items()} for a, by_d in scores.items()}


def test_markdown_table_rows_and_bold_best():
    detection = {
        "knockoff": {
            "same": {"auroc": 0.9876, "aupr": 0.9, "fpr95": 0.05, "fpr90": 0.02, "n_attack": 10, "n_benign": 12},
            "msp": {"auroc": 0.8, "aupr": 0.7, "fpr95": 0.5, "fpr90": 0.4, "n_attack": 10, "n_benign": 12},
        },
        "jbda": {
            "same": {"auroc": 0.6, "aupr": 0.6, "fpr95": 0.9, "fpr90": 0.8, "n_attack": 10, "n_benign": 12},
            "prada": {"auroc": 0.9, "aupr": 0.9, "fpr95": 0.1, "fpr90": 0.05, "n_attack": 10, "n_benign": 12},
        },
    }
    table = markdown_table(detection)
    lines = table.strip().splitlines()
    assert len(lines) == 2 + 4
    assert lines[0].startswith("| attack | detector | AUROC | AUPR | FPR95 | FPR90")
    assert lines[2] == "| knockoff | same | **0.988** | 0.900 | 0.050 | 0.020 | 10 | 12 |"
    assert lines[3] == "| knockoff | msp | 0.800 | 0.700 | 0.500 | 0.400 | 10 | 12 |"
    assert "| jbda | prada | **0.900** |" in lines[5] and "**" not in lines[4]


def test_plots_are_written(tmp_path):
    scores = _scores()
    roc = plot_roc_curves(scores, tmp_path / "plots" / "roc.png")
    hist = plot_score_histograms(scores, "same", tmp_path / "hist.png", threshold=1.64)
    hist_lin = plot_score_histograms(scores, "msp", tmp_path / "hist_lin.png", log=False)
    for path in (roc, hist, hist_lin):
        assert path.exists() and path.stat().st_size > 1000
        assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(ValueError, match="detector 'nope'"):
        plot_score_histograms(scores, "nope", tmp_path / "x.png")


def test_write_json_is_sorted_and_round_trips(tmp_path):
    result = {"detection": _detection(_scores()), "config": {"alpha": np.float32(0.5), "budget": np.int64(200)}}
    path = write_json(result, tmp_path / "out" / "result.json")
    text = path.read_text()
    loaded = json.loads(text)
    assert loaded["config"] == {"alpha": 0.5, "budget": 200}
    assert loaded["detection"]["jbda"]["msp"]["n_attack"] == 150
    assert text.index('"config"') < text.index('"detection"')  # sorted keys
    assert text.endswith("\n") and '\n  "config"' in text     # indented


@pytest.mark.parametrize("bad", [math.nan, np.float64("nan"), math.inf])
def test_write_json_rejects_nan(tmp_path, bad):
    result = {"detection": {"jbda": {"prada": {"auroc": bad}}}}
    with pytest.raises(ValueError, match=r"\['detection'\]\['jbda'\]\['prada'\]\['auroc'\] is NaN or infinite"):
        write_json(result, tmp_path / "r.json")
    assert not (tmp_path / "r.json").exists()


def test_importing_report_is_cheap():
    code = "import sys, benchmarks.report; print('matplotlib' in sys.modules, 'sklearn' in sys.modules)"
    repo_root = Path(__file__).resolve().parents[2]
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=repo_root)
    assert out.stdout.split() == ["False", "False"]
