"""`python -m serving --model_dir=/mnt/models [--state=redis://host:6379/0] [--max_batch=N] [--max_in_flight=N]
[--deadline_ms=MS] [--score_threads=N] [--inline_clicks=N]` plus every KServe model-server flag (--http_port, --grpc_port,
--workers, --model_name, ...)."""

from __future__ import annotations

import argparse
import logging
import sys

import kserve
from kserve import logging as kserve_logging
from kserve import model_server
from prometheus_client import REGISTRY

from attribution.features.online.flags import add_state_flags, state_options
from attribution.inference import DEFAULT_MAX_BATCH
from attribution.monitoring.prediction_log import attach_prediction_log
from serving import DEFAULT_MODEL_NAME, asgi, max_body_bytes
from serving.access import configure_logging
from serving.guard import (
    DEFAULT_DEADLINE_S,
    DEFAULT_INLINE_CLICKS,
    DEFAULT_MAX_IN_FLIGHT,
    DEFAULT_SCORE_THREADS,
    Gate,
)
from serving.metrics import register_core
from serving.model import AttributionModel
from serving.responses import install as install_responses
from serving.runtime import settle_garbage_collector

parser = argparse.ArgumentParser(parents=[kserve.model_server.parser], description=__doc__)
parser.add_argument("--model_dir", default="/mnt/models", help="local model directory (KServe mounts it here)")
parser.add_argument("--state", default="memory", help="online state: memory, or redis://HOST:PORT/DB shared by replicas")
parser.add_argument("--max_batch", type=int, default=DEFAULT_MAX_BATCH, help="most clicks per request")
parser.add_argument("--max_in_flight", type=int, default=DEFAULT_MAX_IN_FLIGHT,
                    help="requests scored or queued at once; the next gets 503 with Retry-After")
parser.add_argument("--deadline_ms", type=float, default=DEFAULT_DEADLINE_S * 1000,
                    help="a prediction not answered within this gets 503 with Retry-After")
parser.add_argument("--score_threads", type=int, default=DEFAULT_SCORE_THREADS,
                    help="threads that decode, touch the state and score (never the event loop)")
parser.add_argument("--inline_clicks", type=int, default=DEFAULT_INLINE_CLICKS,
                    help="requests of at most this many clicks on the in-process state are scored on the event loop "
                         "when no thread holds the state (cheaper than a thread hop); 0: never")
add_state_flags(parser)  # --clock, --max-clock-skew, --allowed-lateness, --warm-from
parser.add_argument("--prediction_log", default=None,
                    help="log every prediction as rolling Parquet files under this folder or gs:// prefix")
parser.set_defaults(model_name=DEFAULT_MODEL_NAME)


def main(argv: list[str] | None = None) -> None:
    args, _ = parser.parse_known_args(argv)
    if args.configure_logging:
        kserve_logging.configure_logging(args.log_config_file)
    configure_logging()
    log = logging.getLogger("serving")
    if args.workers > 1 and args.state == "memory":
        log.error("cannot serve: --workers %d with the in-memory state would give each worker a partial state; "
                  "use one worker, or --state redis://HOST:PORT/DB", args.workers)
        sys.exit(2)
    try:
        gate = Gate(args.max_in_flight, args.deadline_ms / 1000, args.score_threads, args.inline_clicks)
        model = AttributionModel(args.model_name, args.model_dir, args.state, args.max_batch, gate=gate,
                                 state_options=state_options(args))
        model.load()
    except (ValueError, OSError) as err:  # ModelLoadError, bad --state or limits, an unreadable --warm-from
        log.error("cannot serve: %s", err)
        sys.exit(2)
    register_core(model.core, model.watch, REGISTRY, model.gate)
    plog = attach_prediction_log(model.core, args.prediction_log, REGISTRY) if args.prediction_log else None
    settle_garbage_collector()
    install_responses()
    asgi.install(model_server.app, max_body_bytes(args.max_batch), args.max_batch, on_first_request=model.watch.start_async,
                 on_bad_request=model.core.count_bad_request)
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
