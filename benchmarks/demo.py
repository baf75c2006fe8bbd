"""`same-serve demo`: train, archive, serve, attack over REST, and report, on the embedded MNIST subset.

Benign queries are held-out MNIST test images; the attacker is KnockoffNets-style (random crops of the
offline scikit-image photos, grey, 28x28). Both go through TorchServe with the inference token; the
per-query SAME scores are read back from the server's audit log.
"""
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Dict

import numpy as np

from archiver.calibration import victim_logits
from archiver.data import load_dataset
from archiver.packaging import ArchiveConfig, build_archive
from archiver.pipeline import TrainConfig, load_trained, run_training
from archiver.server import ServerConfig, TorchServeProcess
from benchmarks.metrics import detection_metrics
from benchmarks.proxies import natural_crops
from benchmarks.report import write_json
from benchmarks.served import audit_by_client, scores_of, send_queries

logger = logging.getLogger(__name__)
BENIGN, ATTACK = "benign-user", "knockoff-natural"


@dataclass
class DemoConfig:
    out_dir: str = "demo-out"
    report_path: str = "demo-report.json"
    quick: bool = False           # tiny preset, a data subset and 200 + 200 queries: for tests
    n_queries: int = 1000
    seed: int = 0
    model_name: str = "mnist_same"
    concurrency: int = 4
    progress: bool = True


def run_demo(cfg: DemoConfig) -> Dict[str, Any]:
    timings: Dict[str, float] = {}
    t_all = time.time()
    n = 200 if cfg.quick else cfg.n_queries
    artifacts = os.path.join(cfg.out_dir, "artifacts")

    t0 = time.time()
    train_cfg = TrainConfig(data="mnist5k", out_dir=artifacts, preset="tiny" if cfg.quick else "compact",
                            seed=cfg.seed, limit=2000 if cfg.quick else None, progress=cfg.progress)
    train_report = run_training(train_cfg)
    timings["train"] = time.time() - t0

    t0 = time.time()
    mar = build_archive(ArchiveConfig(artifacts_dir=artifacts, model_name=cfg.model_name,
                                      export_path=os.path.join(cfg.out_dir, "model_store"),
                                      handler={"policy": "log", "topk": 10}))
    timings["archive"] = time.time() - t0

    data = load_dataset("mnist5k", seed=cfg.seed, limit=train_cfg.limit)
    x_benign, y_benign = data.test[0][:n], data.test[1][:n]
    x_attack = natural_crops(n, size=data.img_size, channels=data.in_chans, seed=cfg.seed + 1)
    victim_offline = _offline_accuracy(artifacts, x_benign, y_benign)

    run_dir = os.path.join(cfg.out_dir, "server")
    shutil.rmtree(run_dir, ignore_errors=True)  # the audit log appends: a previous run's records must not count
    server_cfg = ServerConfig.on_free_ports(model_store=os.path.join(cfg.out_dir, "model_store"),
                                            models={cfg.model_name: os.path.basename(mar)}, run_dir=run_dir)
    t0 = time.time()
    with TorchServeProcess(server_cfg) as ts:
        timings["server_start"] = time.time() - t0
        runs = {}
        for client_id, images in ((BENIGN, x_benign), (ATTACK, x_attack)):
            runs[client_id] = send_queries(ts.inference_url, cfg.model_name, ts.inference_key, client_id, images,
                                           data.class_names, cfg.concurrency)
            timings[f"queries_{client_id}"] = runs[client_id].seconds
        audit = audit_by_client(ts.audit_log_path(), {BENIGN: n, ATTACK: n})
    timings["total"] = time.time() - t_all

    benign_scores, attack_scores = scores_of(audit.get(BENIGN, [])), scores_of(audit.get(ATTACK, []))
    threshold = train_report["calibration"]["threshold"]
    report = {
        "detection": {"knockoff_natural": detection_metrics(benign_scores, attack_scores)},
        "accuracy": {"victim_offline": victim_offline,
                     "served": float((runs[BENIGN].predictions == y_benign).mean())},
        "threshold": {"value": threshold, "alpha": train_report["calibration"]["alpha"],
                      "target_fpr": train_report["calibration"]["target_fpr"],
                      "benign_flagged": float((benign_scores > threshold).mean()),
                      "attack_flagged": float((attack_scores > threshold).mean())},
        "served_ok": {k: int((r.statuses == 200).sum()) for k, r in runs.items()},
        "preset": train_cfg.preset, "quick": cfg.quick, "seed": cfg.seed,
        "timings_s": {k: round(v, 2) for k, v in timings.items()},
    }
    write_json(report, cfg.report_path)
    return report


def _offline_accuracy(artifacts: str, x: np.ndarray, y: np.ndarray) -> float:
    """The victim's accuracy computed in-process, on the same images the server receives."""
    scorer, _ = load_trained(artifacts)
    x_png = np.rint(x * 255) / 255.0  # what PNG transport delivers
    logits = victim_logits(scorer, x_png.astype(np.float32))
    return float((logits.argmax(1) == y).mean())


def format_report(report: Dict[str, Any]) -> str:
    lines = ["attack               AUROC   AUPR   FPR@95  FPR@90   n_attack  n_benign"]
    for attack, m in report["detection"].items():
        lines.append(f"{attack:<20} {m['auroc']:.3f}  {m['aupr']:.3f}  {m['fpr95']:.3f}   {m['fpr90']:.3f}   "
                     f"{m['n_attack']:>8}  {m['n_benign']:>8}")
    acc, thr = report["accuracy"], report["threshold"]
    lines.append(f"accuracy: victim offline {acc['victim_offline']:.4f}, served {acc['served']:.4f}")
    lines.append(f"threshold {thr['value']:.3f} (alpha {thr['alpha']}, target FPR {thr['target_fpr']}): "
                 f"benign flagged {thr['benign_flagged']:.3f}, attack flagged {thr['attack_flagged']:.3f}")
    lines.append("timings (s): " + ", ".join(f"{k} {v}" for k, v in report["timings_s"].items()))
    return "\n".join(lines)
