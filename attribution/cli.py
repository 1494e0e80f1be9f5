"""`attribution` command line: the interfaces that users and the pipeline script against (DESIGN.md §5).

Each subcommand parses arguments and calls one function of the library; nothing else happens here.
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
import time
from pathlib import Path

log = logging.getLogger("attribution")


def _setup_logging(verbose: bool) -> None:
    logging.basicConfig(
        level=logging.DEBUG if verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        datefmt="%H:%M:%S",
    )
    for noisy in ("py4j", "urllib3", "hyperopt", "gensim", "matplotlib"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def cmd_generate(a: argparse.Namespace) -> None:
    from attribution.io import write_clicks
    from attribution.synth import generate_slices

    t0 = time.perf_counter()
    rows = positives = 0

    def counted(frames):
        nonlocal rows, positives
        for df in frames:
            rows, positives = rows + len(df), positives + int(df["is_attributed"].sum())
            log.info("generated %d of %d clicks", rows, a.rows)
            yield df

    write_clicks(counted(generate_slices(a.rows, seed=a.seed, start=a.start, days=a.days)), a.output)
    log.info("wrote %d clicks (%d positives, %.3f%%) to %s in %.1fs",
             rows, positives, 100 * positives / max(rows, 1), a.output, time.perf_counter() - t0)


def cmd_features(a: argparse.Namespace) -> None:
    # numpy advises transparent huge pages for big arrays; with THP defrag=madvise (common on VMs) the
    # kernel threads' allocations then stall in page faults: 1.9-2.9 s of system time on 4M rows, 1.2-1.3 s
    # without. Switched off at run time: the parser has already imported numpy (the serve flags' defaults),
    # so the NUMPY_MADVISE_HUGEPAGE variable, read at import, came too late.
    from numpy._core.multiarray import _set_madvise_hugepage

    _set_madvise_hugepage(False)
    from attribution.features.build import build_features_file

    summary = build_features_file(
        a.input, a.output, engine=a.engine, on_bad_rows=a.on_bad_rows, memory_limit=a.memory_limit,
        progress=not a.no_progress,
    )
    log.info("%s", summary)


def cmd_sql(a: argparse.Namespace) -> None:
    from attribution.features.engines.sql import bigquery_file_text

    text = bigquery_file_text()
    if a.check:
        current = Path(a.output).read_text() if Path(a.output).exists() else ""
        if current != text:
            sys.exit(f"{a.output} is stale: run `make sql` (or `attribution sql`) and commit it")
        log.info("%s is current", a.output)
        return
    Path(a.output).parent.mkdir(parents=True, exist_ok=True)
    Path(a.output).write_text(text)
    log.info("wrote %s", a.output)


def cmd_train(a: argparse.Namespace) -> None:
    from attribution.training.config import TrainConfig
    from attribution.training.train import train

    cfg = TrainConfig(
        trainer=a.trainer, valid_from=a.valid_from, max_evals=a.max_evals, negative_rate=a.negative_rate,
        use_cat2vec=not a.no_cat2vec, use_window_features=not a.no_window_features, seed=a.seed,
    )
    train(a.input, a.model_dir, cfg)


def cmd_evaluate(a: argparse.Namespace) -> None:
    from attribution.evaluation.evaluate import evaluate

    metrics = evaluate(a.model_dir, a.input, a.output, from_ts=a.from_ts)
    log.info("roc_auc=%.4f pr_auc=%.4f log_loss=%.4f -> %s", metrics["roc_auc"], metrics["pr_auc"], metrics["log_loss"], a.output)


def cmd_predict(a: argparse.Namespace) -> None:
    from attribution.batch import predict_file

    n = predict_file(a.model_dir, a.input, a.output)
    log.info("scored %d clicks -> %s", n, a.output)


def cmd_serve(a: argparse.Namespace) -> None:
    from attribution.features.online.flags import state_argv, state_options

    if a.flask:
        from serving.flask_app import run_gunicorn

        run_gunicorn(model_dir=a.model_dir, port=a.port, state=a.state, workers=a.workers, max_batch=a.max_batch,
                     prediction_log=a.prediction_log, state_options=state_options(a))
    else:
        argv = [f"--model_dir={a.model_dir}", f"--http_port={a.port}", f"--state={a.state}", "--model_name=attribution",
                f"--max_batch={a.max_batch}", *state_argv(a)]
        if a.prediction_log:
            argv.append(f"--prediction_log={a.prediction_log}")
        os.execv(sys.executable, [sys.executable, "-m", "serving", *argv])


def cmd_monitor(a: argparse.Namespace) -> None:
    from attribution.monitoring.live import parse_horizon

    horizon = parse_horizon(a.label_horizon)
    if a.serve:
        from attribution.monitoring.drift import read_reference
        from attribution.monitoring.service import run_monitor

        if not a.predictions:
            raise ValueError("--serve needs --predictions (the prediction log it reads)")
        refs = {r["model_id"]: r for r in map(read_reference, a.reference)}
        run_monitor({"predictions": a.predictions, "horizon": horizon, "references": refs, "state_dir": a.state_dir,
                     "unknown_ttl": a.unknown_ttl, "max_unknown": a.max_unknown},
                    port=a.port, poll_seconds=a.poll_seconds, min_roc_auc=a.min_roc_auc)
        return
    from attribution.monitoring.batch import monitor_batch

    missing = [f for f, v in (("--predictions", a.predictions), ("--attributions", a.attributions), ("--output", a.output)) if not v]
    if missing:
        raise ValueError(f"the batch form needs {', '.join(missing)} (or pass --serve)")
    monitor_batch(a.predictions, a.attributions, a.output, horizon, a.as_of, a.reference)


def cmd_run(a: argparse.Namespace) -> None:
    if a.cloud == "emulated":
        from pipelines.emulated_run import run_emulated

        run_emulated(output=a.output, data=a.data, rows=a.rows, valid_from=a.valid_from, max_evals=a.max_evals,
                     seed=a.seed, feature_engine=a.feature_engine or "bigquery", trainer=a.trainer,
                     canary_percent=a.canary_percent, memory_budget=a.memory_budget, min_roc_auc=a.min_roc_auc,
                     min_pr_auc=a.min_pr_auc)
        return
    if a.feature_engine == "bigquery":
        raise ValueError("--feature-engine bigquery needs BigQuery: pass --cloud emulated")
    from attribution.features.compute import DEFAULT_ENGINE
    from pipelines.local_run import run_local

    run_local(feature_engine=a.feature_engine or DEFAULT_ENGINE, trainer=a.trainer, min_roc_auc=a.min_roc_auc,
              min_pr_auc=a.min_pr_auc, data=a.data, rows=a.rows, output=a.output, valid_from=a.valid_from, max_evals=a.max_evals, seed=a.seed,
              memory_budget=a.memory_budget)


def cmd_pipeline(a: argparse.Namespace) -> None:
    from pipelines import cli as pipeline_cli

    pipeline_cli.dispatch(a)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="attribution",
        description="Predict, at click time, the probability that a mobile-ad click leads to an app download.",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = p.add_subparsers(dest="command", required=True, metavar="COMMAND")
    fmt = argparse.ArgumentDefaultsHelpFormatter

    g = sub.add_parser("generate", help="synthetic TalkingData-shaped clicks with true probabilities", formatter_class=fmt)
    g.add_argument("--rows", type=int, required=True,
                   help="number of clicks; above 20M they are generated and written in time slices, so the "
                   "full 184.9M rows fit in memory")
    g.add_argument("--seed", type=int, default=0, help="RNG seed; same seed, same file")
    g.add_argument("--start", default="2017-11-06 16:00:00", help="first second (UTC)")
    g.add_argument("--days", type=float, default=4.0, help="length of the stream in days")
    g.add_argument("--output", required=True, help="CSV, CSV.gz or .parquet path")
    g.set_defaults(func=cmd_generate)

    f = sub.add_parser("features", help="window features for every click of a file (Parquet out)", formatter_class=fmt)
    f.add_argument("--input", required=True, help="click file: CSV, CSV.gz or Parquet in the Kaggle format")
    f.add_argument("--output", required=True, help="Parquet file to write")
    f.add_argument("--engine", default="vectorized", choices=["vectorized", "duckdb", "spark", "online"],
                   help="vectorized: compiled (numba) kernel, the fastest; duckdb: the spec's SQL, embedded; "
                        "spark: Spark SQL; online: replay through the serving state (all give identical features)")
    f.add_argument("--on-bad-rows", default="error", choices=["error", "quarantine"],
                   help="stop at the first bad row, or write bad rows with reasons to a side file")
    f.add_argument("--memory-limit", default=None, help="e.g. 16GB: process out of core in time chunks")
    f.add_argument("--no-progress", action="store_true", help="no progress bar")
    f.set_defaults(func=cmd_features)

    s = sub.add_parser("sql", help="write (or --check) the BigQuery feature SQL rendered from the spec", formatter_class=fmt)
    s.add_argument("--output", default="sql/features.sql")
    s.add_argument("--check", action="store_true", help="fail if the file differs from the spec's rendering")
    s.set_defaults(func=cmd_sql)

    t = sub.add_parser("train", help="fit Cat2Vec + XGBoost with Hyperopt tuning; write a model directory", formatter_class=fmt)
    t.add_argument("--input", required=True, help="click file (features are computed) or a features Parquet")
    t.add_argument("--model-dir", required=True)
    t.add_argument("--trainer", default="xgboost", choices=["xgboost", "spark"], help="single node or xgboost.spark")
    t.add_argument("--valid-from", default=None,
                   help="holdout starts at this UTC time ('2017-11-09 00:00:00'); default: the last 25%% of time")
    t.add_argument("--max-evals", type=int, default=0, help="Hyperopt TPE trials (0: default parameters)")
    t.add_argument("--negative-rate", type=float, default=None,
                   help="keep this fraction of negatives for training (probabilities are re-calibrated); "
                        "default: chosen from the data size")
    t.add_argument("--no-cat2vec", action="store_true", help="ablation: without Cat2Vec vectors")
    t.add_argument("--no-window-features", action="store_true", help="ablation: without window features")
    t.add_argument("--seed", type=int, default=0)
    t.set_defaults(func=cmd_train)

    e = sub.add_parser("evaluate", help="metrics.json + report.html for a model on a click file", formatter_class=fmt)
    e.add_argument("--model-dir", required=True)
    e.add_argument("--input", required=True)
    e.add_argument("--output", required=True, help="directory for metrics.json and report.html")
    e.add_argument("--from", dest="from_ts", default=None, help="evaluate only clicks from this UTC time on")
    e.set_defaults(func=cmd_evaluate)

    pr = sub.add_parser("predict", help="batch scoring of a click file", formatter_class=fmt)
    pr.add_argument("--model-dir", required=True)
    pr.add_argument("--input", required=True)
    pr.add_argument("--output", required=True, help="Parquet with row_id, click_id if any, probability")
    pr.set_defaults(func=cmd_predict)

    from attribution.features.online.flags import add_state_flags
    from attribution.inference import DEFAULT_MAX_BATCH

    sv = sub.add_parser("serve", help="serve a model directory (KServe V1/V2, or Flask)", formatter_class=fmt)
    sv.add_argument("--model-dir", required=True)
    sv.add_argument("--port", type=int, default=8080)
    sv.add_argument("--state", default="memory", help="memory, or redis://HOST:PORT/DB for many replicas")
    sv.add_argument("--flask", action="store_true", help="the Flask app under gunicorn instead of KServe")
    sv.add_argument("--workers", type=int, default=1, help="gunicorn workers (use Redis state when > 1)")
    sv.add_argument("--max-batch", type=int, default=DEFAULT_MAX_BATCH, help="most clicks per request")
    sv.add_argument("--prediction-log", default=None,
                    help="log every prediction (rolling Parquet, off the request path) under this folder or gs:// prefix")
    add_state_flags(sv)
    sv.set_defaults(func=cmd_serve)

    mo = sub.add_parser("monitor", help="live quality from the prediction log and attribution postbacks "
                        "(batch files, or --serve for the postback service)", formatter_class=fmt)
    mo.add_argument("--predictions", default=None, help="the prediction log (folder or gs:// prefix)")
    mo.add_argument("--attributions", default=None, help="batch: postbacks file (CSV, JSON lines or Parquet: "
                    "click_id, attributed_time)")
    mo.add_argument("--output", default=None, help="batch: directory for live_metrics.json and live_report.html")
    mo.add_argument("--label-horizon", default="24h", help="a click without a postback this long after it is a negative")
    mo.add_argument("--as-of", type=float, default=None, help="batch: epoch seconds to compute at (default: now)")
    mo.add_argument("--reference", action="append", default=[],
                    help="model directory or reference_histograms.json for drift (repeatable, one per model)")
    mo.add_argument("--serve", action="store_true", help="run the monitor service (POST /v1/attributions, /metrics)")
    mo.add_argument("--port", type=int, default=8081)
    mo.add_argument("--state-dir", default=None, help="service: keep the postbacks journal here (survives restarts)")
    mo.add_argument("--poll-seconds", type=float, default=30.0, help="service: how often to read new log files")
    mo.add_argument("--unknown-ttl", type=float, default=6 * 3600, help="service: seconds to keep unknown click_ids")
    mo.add_argument("--max-unknown", type=int, default=1_000_000, help="service: most unknown click_ids kept")
    mo.add_argument("--min-roc-auc", type=float, default=0.9, help="service: the deploy gate's threshold (alerts)")
    mo.set_defaults(func=cmd_monitor)

    r = sub.add_parser("run", help="the whole pipeline locally through kfp.local", formatter_class=fmt)
    src = r.add_mutually_exclusive_group()
    src.add_argument("--data", default=None, help="click file to use")
    src.add_argument("--rows", type=int, default=300_000, help="synthetic clicks to generate when no --data")
    r.add_argument("--output", default="out/run", help="directory for the model, metrics and report")
    r.add_argument("--valid-from", default=None)
    r.add_argument("--max-evals", type=int, default=0)
    r.add_argument("--seed", type=int, default=0)
    r.add_argument("--cloud", default="none", choices=["none", "emulated"],
                   help="none: kfp.local on local files; emulated: the cluster's semantics against GCS and "
                        "BigQuery emulators and a recording Kubernetes API (gs:// pipeline root, docs/pipelines.md)")
    r.add_argument("--feature-engine", default=None,
                   choices=["bigquery", "vectorized", "duckdb", "spark"],
                   help="default: bigquery with --cloud emulated, else the vectorized kernel")
    r.add_argument("--trainer", default="xgboost", choices=["xgboost", "spark"],
                   help="spark: with --cloud emulated, a SparkApplication run by the emulated operator")
    r.add_argument("--canary-percent", type=int, default=10, help="--cloud emulated: the gate's canary traffic")
    r.add_argument("--min-roc-auc", type=float, default=0.9, help="the deploy gate's ROC-AUC threshold")
    r.add_argument("--min-pr-auc", type=float, default=0.05, help="the deploy gate's PR-AUC threshold")
    r.add_argument("--memory-budget", default=None,
                   help="what each pipeline step may use (default: the pipeline's, 16GiB; 'auto': 75%% of the "
                        "container's memory limit): a step whose input would not fit goes out of core "
                        "(extraction), samples (Cat2Vec, tuning) or streams (training, evaluation)")
    r.set_defaults(func=cmd_run)

    pl = sub.add_parser("pipeline", help="compile, submit or schedule the Kubeflow pipeline", formatter_class=fmt)
    pl.set_defaults(func=cmd_pipeline)
    try:
        from pipelines import cli as pipeline_cli

        pipeline_cli.add_arguments(pl)
    except ImportError:  # pipelines/ not installed beside the library (e.g. the serving image)
        pass
    return p


def main(argv: list[str] | None = None) -> None:
    parser = build_parser()
    args = parser.parse_args(argv)
    _setup_logging(args.verbose)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError) as err:
        # User mistakes (bad rows, missing files, stale hashes) end with the message, not a traceback.
        log.error("%s", err)
        sys.exit(2)


if __name__ == "__main__":
    main()
