"""`python -m serving --model_dir=/mnt/models [--state=redis://host:6379/0] [--max_batch=N]` plus every
KServe model-server flag (--http_port, --grpc_port, --workers, --model_name, ...)."""

from __future__ import annotations

import argparse
import logging
import sys

import kserve
from kserve import logging as kserve_logging
from prometheus_client import REGISTRY

from attribution.features.online.clock import CLOCKS, DEFAULT_MAX_SKEW
from attribution.inference import DEFAULT_MAX_BATCH
from attribution.monitoring.prediction_log import attach_prediction_log
from serving import DEFAULT_MODEL_NAME
from serving.metrics import register_core
from serving.model import AttributionModel
from serving.responses import install as install_responses
from serving.runtime import settle_garbage_collector

parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=__doc__)
parser.add_argument("--model_dir", default="/mnt/models", help="local model directory (KServe mounts it here)")
parser.add_argument("--state", default="memory", help="online state: memory, or redis://HOST:PORT/DB shared by replicas")
parser.add_argument("--max_batch", type=int, default=DEFAULT_MAX_BATCH, help="most clicks per request")
# online state time and warm start (docs/online-state.md)
parser.add_argument("--clock", choices=CLOCKS, default="server",
                    help="reference for --max-clock-skew: server (production) or stream (replays of history)")
parser.add_argument("--max-clock-skew", dest="max_clock_skew", type=int, default=DEFAULT_MAX_SKEW,
                    help="seconds a click_time may be ahead of the reference clock (else 400)")
parser.add_argument("--allowed-lateness", dest="allowed_lateness", type=int, default=0,
                    help="seconds behind the stream a click is still recorded (later: scored, not recorded, counted)")
parser.add_argument("--warm-from", dest="warm_from", default=None,
                    help="click log (CSV/Parquet) to rebuild the state from before reporting ready")
parser.add_argument("--prediction_log", default=None,
                    help="log every prediction as rolling Parquet files under this folder or gs:// prefix")
parser.set_defaults(model_name=DEFAULT_MODEL_NAME)


def main(argv: list[str] | None = None) -> None:
    args, _ = parser.parse_known_args(argv)
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    log = logging.getLogger("serving")
    model = AttributionModel(args.model_name, args.model_dir, args.state, args.max_batch, state_options={
        "clock": args.clock, "max_clock_skew": args.max_clock_skew, "allowed_lateness": args.allowed_lateness,
        "warm_from": args.warm_from})
    try:
        model.load()
    except ValueError as err:  # ModelLoadError (missing/corrupt files, another feature spec), bad --state
        log.error("cannot serve: %s", err)
        sys.exit(2)
    register_core(model.core, REGISTRY)
    plog = attach_prediction_log(model.core, args.prediction_log, REGISTRY) if args.prediction_log else None
    settle_garbage_collector()
    install_responses()
    try:
        kserve.ModelServer(
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            workers=args.workers,
            enable_grpc=args.enable_grpc,
        ).start([model])
    finally:  # SIGTERM stops the server and returns here: write what the log holds
        if plog is not None:
            plog.close()


if __name__ == "__main__":
    main()
