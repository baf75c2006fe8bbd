"""`same-serve`: train the defense, pack the .mar, serve it, run the demo and the benchmarks.

  same-serve train   --data mnist5k --out artifacts [--preset compact|paper|tiny] [--victim-weights w.pt ...]
  same-serve calibrate --artifacts artifacts [--alpha 0.85] [--target-fpr 0.01]   (no retraining)
  same-serve archive --artifacts artifacts --model-name mnist --export-path model_store [--policy reject]
  same-serve serve   --model-store model_store --models mnist=mnist.mar      (Ctrl-C stops it)
  same-serve demo    [--quick]                                              (all of the above, then attacks)
  same-serve bench detect [--quick]                                         (attacks, baselines, ablations)
"""
import argparse
import json
import logging
import signal
import sys
from typing import List, Optional

from archiver.errors import ArchiverError
from handler.config import ConfigError


def _floats(text: str) -> List[float]:
    return [float(v) for v in text.split(",")]


def _key_values(pairs: List[str]) -> dict:
    """--set key=value pairs, values parsed as JSON when they parse (numbers, true/false, null)."""
    out = {}
    for pair in pairs or []:
        if "=" not in pair:
            raise ArchiverError(f"--set expects key=value, got {pair!r}")
        key, value = pair.split("=", 1)
        try:
            out[key] = json.loads(value)
        except json.JSONDecodeError:
            out[key] = value
    return out


def get_args_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="same-serve", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-v", "--verbose", action="store_true")
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("train", help="train the MAE and shadow (and a victim if none is given), calibrate")
    p.add_argument("--data", default="mnist5k", help="mnist5k, a folder of class sub-folders, or an .npz with x and y")
    p.add_argument("--out", default="artifacts", help="output folder for the trained files")
    p.add_argument("--preset", default="compact", help="compact (2-core CPU, default), paper (released recipe), tiny")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="preset overrides, e.g. mae_epochs=10 alpha=0.7")
    p.add_argument("--victim-arch", help="conv3 | resnet18 | custom (default: conv3 for grey, resnet18 for colour)")
    p.add_argument("--victim-weights", help="your trained victim's state_dict (.pt); trained here when absent")
    p.add_argument("--victim-model-file", help="a .py file defining your victim class (torch-model-archiver's --model-file)")
    p.add_argument("--victim-class", help="the class name in --victim-model-file")
    p.add_argument("--input-mean", type=_floats, default=[0.5], help="victim input normalisation mean(s), comma-separated")
    p.add_argument("--input-std", type=_floats, default=[0.5], help="victim input normalisation std(s), comma-separated")
    p.add_argument("--img-size", type=int, help="resize folder images to this size")
    p.add_argument("--limit", type=int, help="use a random subset of this many images")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("calibrate", help="refit the threshold / alpha of trained artifacts without retraining")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--alpha", type=float, help="weight of the reconstruction term, in [0, 1]")
    p.add_argument("--target-fpr", type=float, help="benign false-positive rate of the threshold, e.g. 0.01")

    p = sub.add_parser("archive", help="pack victim + MAE + shadow + calibration + config into one .mar")
    p.add_argument("--artifacts", default="artifacts")
    p.add_argument("--model-name", default="same")
    p.add_argument("--version", default="1.0")
    p.add_argument("--export-path", default="model_store")
    p.add_argument("--policy", choices=("log", "reject"), help="handler.policy (default log)")
    p.add_argument("--set", nargs="*", metavar="KEY=VALUE", help="other handler settings, e.g. topk=3 expose_scores=true")
    p.add_argument("--workers", type=int, default=1)
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--max-batch-delay", type=int, default=5, help="ms")

    p = sub.add_parser("serve", help="start TorchServe (token auth on, loopback only) until Ctrl-C")
    p.add_argument("--model-store", default="model_store")
    p.add_argument("--models", nargs="+", default=["same=same.mar"], help="name=file.mar ...")
    p.add_argument("--run-dir", default="runs/server")
    p.add_argument("--inference-port", type=int, default=8080)
    p.add_argument("--management-port", type=int, default=8081)
    p.add_argument("--metrics-port", type=int, default=8082)

    p = sub.add_parser("demo", help="train, archive, serve and attack on the embedded MNIST subset")
    p.add_argument("--quick", action="store_true", help="tiny preset and 200 + 200 queries (about 1-2 minutes)")
    p.add_argument("--out", default="demo-out")
    p.add_argument("--report", default="demo-report.json")
    p.add_argument("--seed", type=int, default=0)

    p = sub.add_parser("bench", help="benchmarks against the served model")
    p.add_argument("suite", choices=("detect",))
    p.add_argument("--quick", action="store_true")
    p.add_argument("--out", default="bench-out")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--artifacts", help="benchmark an already trained defense (same-serve train output)")
    p.add_argument("--budget", type=int, help="queries per attack (default 4000, quick 300)")
    p.add_argument("--attacks", nargs="+", help="a subset of the attacks")
    p.add_argument("--no-ablations", action="store_true")
    p.add_argument("--paper-arch", action="store_true", help="add the paper-size MAE to the ablations (slow on CPU)")
    return parser


def _serve(args) -> int:
    from archiver.server import ServerConfig, TorchServeProcess

    models = dict(m.split("=", 1) for m in args.models)
    cfg = ServerConfig(model_store=args.model_store, models=models, run_dir=args.run_dir,
                       inference_port=args.inference_port, management_port=args.management_port,
                       metrics_port=args.metrics_port)
    with TorchServeProcess(cfg) as ts:
        print(f"TorchServe ready: inference {ts.inference_url}, metrics {ts.metrics_url}")
        print(f"tokens are in {ts.run_dir}/key_file.json; send 'Authorization: Bearer <inference key>'")
        print(f"audit log: {ts.audit_log_path()}   (Ctrl-C to stop)")
        try:
            signal.sigwait({signal.SIGINT, signal.SIGTERM})
        except KeyboardInterrupt:
            pass
    return 0


def main(argv: Optional[List[str]] = None) -> int:
    args = get_args_parser().parse_args(argv)
    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.command == "train":
            from archiver.pipeline import TrainConfig, run_training
            report = run_training(TrainConfig(
                data=args.data, out_dir=args.out, preset=args.preset, overrides=_key_values(args.set),
                victim_arch=args.victim_arch, victim_weights=args.victim_weights,
                victim_model_file=args.victim_model_file, victim_class=args.victim_class,
                input_mean=args.input_mean, input_std=args.input_std, img_size=args.img_size, limit=args.limit,
                seed=args.seed))
            print(json.dumps({k: report[k] for k in ("accuracy", "calibration", "test_benign_fpr", "timings_s")}, indent=2))
        elif args.command == "calibrate":
            from archiver.pipeline import recalibrate
            report = recalibrate(args.artifacts, args.alpha, args.target_fpr)
            print(json.dumps({k: report[k] for k in ("calibration", "test_benign_fpr")}, indent=2))
        elif args.command == "archive":
            from archiver.packaging import ArchiveConfig, build_archive
            handler = _key_values(args.set)
            if args.policy:
                handler["policy"] = args.policy
            path = build_archive(ArchiveConfig(
                artifacts_dir=args.artifacts, model_name=args.model_name, version=args.version,
                export_path=args.export_path, handler=handler, min_workers=args.workers, max_workers=args.workers,
                batch_size=args.batch_size, max_batch_delay_ms=args.max_batch_delay))
            print(path)
        elif args.command == "serve":
            return _serve(args)
        elif args.command == "demo":
            from benchmarks.demo import DemoConfig, format_report, run_demo
            report = run_demo(DemoConfig(out_dir=args.out, report_path=args.report, quick=args.quick, seed=args.seed))
            print(format_report(report))
            print(f"report written to {args.report}")
        elif args.command == "bench":
            from benchmarks.detect import DetectConfig, run_detect_bench
            from benchmarks.report import markdown_table
            report = run_detect_bench(DetectConfig(
                out_dir=args.out, quick=args.quick, seed=args.seed, artifacts=args.artifacts, budget=args.budget,
                attacks=args.attacks, ablations=not args.no_ablations, paper_arch=args.paper_arch))
            print(markdown_table(report["detection"]))
            print(f"results in {args.out}/ (bench-detect.json, bench-detect.md, roc.png, hist-same.png)")
        return 0
    except (ArchiverError, ConfigError, FileNotFoundError) as err:
        print(f"same-serve: error: {err}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
