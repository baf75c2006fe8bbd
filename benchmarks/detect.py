"""`same-serve bench detect`: real extraction attacks against the served, defended model; SAME against
baselines on exactly the same queries; stateful detection delay; ablations.

Protocol (same-method.md §3.2): benign queries are held-out task images sent by one client; each attack
runs with its own client id through TorchServe's REST endpoint (token on, policy `log` so the attacks get
answers) and trains its substitute. SAME's per-query scores are read back from the server's audit log;
baselines are computed on the very same query arrays. Metrics: AUROC, AUPR (attacker positive), FPR at
95% / 90% TPR, as fractions.
"""
import logging
import os
import shutil
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, List, Optional

import numpy as np
import torch

from archiver.calibration import victim_logits
from archiver.data import DatasetSplits, load_dataset
from archiver.packaging import ArchiveConfig, build_archive
from archiver.pipeline import TrainConfig, load_trained, run_training
from archiver.presets import get_preset
from archiver.server import ServerConfig, TorchServeProcess
from benchmarks import attacks as attack_lib
from benchmarks.ablations import score_views
from benchmarks.attacks.base import evaluate_substitute
from benchmarks.baselines import energy_score, msp_score, reconstruction_score, train_plain_autoencoder
from benchmarks.client import RestClient
from benchmarks.metrics import detection_metrics
from benchmarks.prada import Prada
from benchmarks.proxies import natural_crops, upsampled_digits
from benchmarks.report import markdown_table, plot_roc_curves, plot_score_histograms, write_json
from benchmarks.served import audit_by_client, scores_of, send_queries
from benchmarks.stateful import window_alarm

logger = logging.getLogger(__name__)
BENIGN = "benign"


@dataclass
class DetectConfig:
    out_dir: str = "bench-out"
    quick: bool = False
    seed: int = 0
    budget: Optional[int] = None          # per attack; default 4,000 (the paper's MNIST budget), quick 300
    n_benign: Optional[int] = None        # default 800 held-out test images, quick 200
    artifacts: Optional[str] = None       # reuse a trained defense instead of training one
    attacks: Optional[List[str]] = None   # subset of attack names
    ablations: bool = True
    paper_arch: bool = False              # add the paper-size MAE to the ablations (about 2 h on a 2-core CPU)
    concurrency: int = 4
    progress: bool = False

    @property
    def budget_(self) -> int:
        return self.budget or (300 if self.quick else 4000)

    @property
    def n_benign_(self) -> int:
        return self.n_benign or (200 if self.quick else 800)


def attack_suite(data: DatasetSplits, cfg: DetectConfig) -> Dict[str, Callable[[], Any]]:
    """name -> factory of a configured attack. Attacker data never overlaps the benign query set:
    JBDA seeds and the mixing attacker's real images come from the end of the test split."""
    n_test = len(data.test[0])
    seeds = data.test[0][n_test - 200:n_test - 100][: 20 if cfg.quick else 100]
    id_pool = data.test[0][n_test - 100:]
    pool = 2 * cfg.budget_
    natural, groups = natural_crops(pool, size=data.img_size, channels=data.in_chans, seed=cfg.seed + 11,
                                    return_groups=True)
    digits, _ = upsampled_digits(pool, size=data.img_size, seed=cfg.seed + 12)
    epochs = 5 if cfg.quick else 20
    common = dict(epochs=epochs, verbose=cfg.progress)
    return {
        "knockoff_natural": lambda: attack_lib.KnockoffNets(natural, strategy="random", **common),
        "knockoff_adaptive": lambda: attack_lib.KnockoffNets(natural, proxy_groups=groups, strategy="adaptive", **common),
        "knockoff_digits": lambda: attack_lib.KnockoffNets(digits, strategy="random", **common),
        "jbda": lambda: attack_lib.JBDA(seeds, **common),
        "dfme": lambda: attack_lib.DFME(img_shape=(data.in_chans, data.img_size, data.img_size), **common),
        "adaptive_recfilter": lambda: attack_lib.ReconstructionFilterKnockoff(
            pool_x=np.concatenate([natural, digits[len(digits) // 2:]]), public_x=digits[: len(digits) // 2],
            **common),
        "adaptive_mixed": lambda: attack_lib.MixedQueryAttack(
            attack_lib.KnockoffNets(natural, strategy="random", **common), benign_x=id_pool, mix=0.5),
    }


def run_detect_bench(cfg: DetectConfig) -> Dict[str, Any]:
    # the attacker's training shares the CPU with the TorchServe worker: one thread each avoids oversubscription
    torch.set_num_threads(1)
    t_all = time.time()
    os.makedirs(cfg.out_dir, exist_ok=True)
    timings: Dict[str, float] = {}
    artifacts = cfg.artifacts or os.path.join(cfg.out_dir, "artifacts")
    preset_name = "tiny" if cfg.quick else "compact"
    limit = 2000 if cfg.quick else None
    if cfg.artifacts is None:
        t0 = time.time()
        run_training(TrainConfig(out_dir=artifacts, preset=preset_name, seed=cfg.seed, limit=limit,
                                 progress=cfg.progress))
        timings["train_defense"] = time.time() - t0
    scorer, train_report = load_trained(artifacts)
    data = load_dataset(train_report["config"]["data"], seed=train_report["config"]["seed"],
                        limit=train_report["config"].get("limit"))
    calibration = scorer.calibration
    x_benign = data.test[0][: cfg.n_benign_]

    t0 = time.time()
    plain_ae = train_plain_autoencoder(data.train[0], epochs=3 if cfg.quick else 15, seed=cfg.seed,
                                       progress=cfg.progress)
    timings["train_plain_ae"] = time.time() - t0

    store = os.path.join(cfg.out_dir, "model_store")
    mar = build_archive(ArchiveConfig(artifacts_dir=artifacts, model_name="bench", export_path=store,
                                      handler={"policy": "log", "topk": data.num_classes}))
    suite = attack_suite(data, cfg)
    names = cfg.attacks or list(suite)
    unknown = sorted(set(names) - set(suite))
    if unknown:
        raise ValueError(f"unknown attack(s) {unknown}; choose from {sorted(suite)}")
    victim_probs_test = torch.softmax(torch.from_numpy(victim_logits(scorer, data.test[0])), 1).numpy()

    results: Dict[str, Any] = {}
    run_dir = os.path.join(cfg.out_dir, "server")
    shutil.rmtree(run_dir, ignore_errors=True)  # the audit log appends: a previous run's records must not count
    server_cfg = ServerConfig.on_free_ports(model_store=store, models={"bench": os.path.basename(mar)},
                                            run_dir=run_dir)
    with TorchServeProcess(server_cfg) as ts:
        t0 = time.time()
        send_queries(ts.inference_url, "bench", ts.inference_key, BENIGN, x_benign, data.class_names, cfg.concurrency)
        timings["benign_queries"] = time.time() - t0
        for name in names:
            t0 = time.time()
            client = RestClient(ts.inference_url, "bench", ts.inference_key, client_id=name,
                                concurrency=cfg.concurrency)
            result = suite[name]().extract(client.as_blackbox(data.class_names), cfg.budget_, seed=cfg.seed)
            stolen = evaluate_substitute(result.substitute, data.test[0], data.test[1], victim_probs_test)
            results[name] = {"queries": result.queries, "n_queries": int(result.n_queries),
                             "n_refused": int(result.n_refused), "substitute": stolen}
            timings[f"attack_{name}"] = time.time() - t0
            logger.info("%s: %d queries, substitute accuracy %.3f", name, result.n_queries, stolen["accuracy"])
        audit = audit_by_client(ts.audit_log_path(),
                                {BENIGN: len(x_benign), **{n: results[n]["n_queries"] for n in names}})

    t0 = time.time()
    served = {BENIGN: _served_terms(audit.get(BENIGN, []), len(x_benign)),
              **{n: _served_terms(audit.get(n, []), results[n]["n_queries"]) for n in names}}
    benign_logits = victim_logits(scorer, x_benign)
    benign_terms = _detector_scores(x_benign, benign_logits, served[BENIGN], scorer, plain_ae)
    scores_by_attack: Dict[str, Dict[str, tuple]] = {}
    detection, stateful, attack_info = {}, {}, {}
    for name in names:
        queries = results[name]["queries"]
        logits = victim_logits(scorer, queries)
        terms = _detector_scores(queries, logits, served[name], scorer, plain_ae)
        scores_by_attack[name] = {d: (benign_terms[d], terms[d]) for d in terms}
        detection[name] = {d: detection_metrics(benign_terms[d], terms[d]) for d in terms}
        stateful[name] = {
            "same_window": window_alarm(terms["same"], calibration.threshold, calibration.target_fpr),
            "prada": Prada().queries_until_flagged(queries, logits.argmax(1)),
        }
        attack_info[name] = {k: results[name][k] for k in ("n_queries", "n_refused", "substitute")}
    stateful[BENIGN] = {
        "same_window": window_alarm(benign_terms["same"], calibration.threshold, calibration.target_fpr),
        "prada": Prada().queries_until_flagged(x_benign, benign_logits.argmax(1)),
    }
    timings["scoring"] = time.time() - t0

    report: Dict[str, Any] = {
        "detection": detection,
        "queries_until_flagged": stateful,
        "attacks": attack_info,
        "accuracy": {"victim_test": float((victim_probs_test.argmax(1) == data.test[1]).mean())},
        "threshold": {"value": calibration.threshold, "alpha": calibration.alpha, "target_fpr": calibration.target_fpr},
        "setup": {"preset": train_report["preset"], "budget": cfg.budget_, "n_benign": len(x_benign),
                  "seed": cfg.seed, "quick": cfg.quick, "transport": "REST, PNG, one image per request"},
    }
    if cfg.ablations:  # write the detection results first: the ablations retrain MAEs and take a while
        report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
        _write_outputs(cfg.out_dir, report, scores_by_attack, calibration.threshold)
        t0 = time.time()
        report["ablations"] = _ablations(cfg, data, scorer, train_report, served, x_benign,
                                         {n: results[n]["queries"] for n in names})
        timings["ablations"] = time.time() - t0
    timings["total"] = time.time() - t_all
    report["timings_s"] = {k: round(v, 1) for k, v in timings.items()}
    _write_outputs(cfg.out_dir, report, scores_by_attack, calibration.threshold)
    return report


def _served_terms(audit_records: List[dict], n_sent: int) -> Dict[str, np.ndarray]:
    """The served SAME score and its raw terms, from the audit log."""
    served = [r for r in audit_records if "score" in r]
    if len(served) != n_sent:
        raise RuntimeError(f"audit log holds {len(served)} scored queries for {n_sent} sent")
    return {key: scores_of(served, key) for key in ("score", "rec", "dev")}


def _detector_scores(queries: np.ndarray, logits: np.ndarray, served: Dict[str, np.ndarray], scorer,
                     plain_ae) -> Dict[str, np.ndarray]:
    """Every detector's per-query scores for one population (higher = more suspicious)."""
    views = score_views(served["rec"], served["dev"], scorer.calibration)
    return {
        "same": served["score"],
        "same_rec_only": views["rec_only"],
        "same_dev_only": views["dev_only"],
        "msp": msp_score(logits),
        "energy": energy_score(logits),
        "plain_ae": reconstruction_score(plain_ae, queries),
        "prada": Prada().per_query_scores(queries, logits.argmax(1)),
    }


def _ablations(cfg, data, scorer, train_report, served, x_benign, attack_queries) -> Dict[str, Any]:
    """The a-sweep on the served terms (no retraining), then MAE variants retrained offline."""
    from benchmarks.ablations import alpha_sweep, default_variants, run_ablations

    attacks = list(attack_queries)
    out: Dict[str, Any] = {"alpha_sweep": alpha_sweep(
        served[BENIGN]["rec"], served[BENIGN]["dev"], {n: served[n]["rec"] for n in attacks},
        {n: served[n]["dev"] for n in attacks}, scorer.calibration)}
    base = get_preset(train_report["config"]["preset"]).with_overrides(**train_report["config"]["overrides"])
    variants = [v for v in default_variants(base, cfg.quick) if cfg.quick or cfg.paper_arch
                or not v.name.startswith("paper-arch")]
    out.update(run_ablations(scorer.victim, data, base, x_benign, attack_queries, variants,
                             seed=cfg.seed, progress=cfg.progress))
    return out


def _write_outputs(out_dir: str, report: Dict[str, Any], scores_by_attack, threshold: float) -> None:
    write_json(report, os.path.join(out_dir, "bench-detect.json"))
    with open(os.path.join(out_dir, "bench-detect.md"), "w", encoding="utf-8") as fh:
        fh.write(markdown_table(report["detection"]) + "\n")
    plot_roc_curves(scores_by_attack, os.path.join(out_dir, "roc.png"))
    plot_score_histograms(scores_by_attack, "same", os.path.join(out_dir, "hist-same.png"), threshold=threshold)
