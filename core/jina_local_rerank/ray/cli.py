"""Command-line pieces: ``jina-local-rerank score-pairs`` and the ``--ray`` options of ``serve``.

Nothing here imports Ray until a command asks for it, so ``score-pairs`` without ``--ray`` (in-process
scoring) works where Ray is not installed.
"""

from __future__ import annotations

import argparse
import json
import signal
import sys
import time
from typing import Any, TextIO

from ..argtypes import non_negative_float, positive_int
from ..server.settings import ServerSettings
from . import DEFAULT_MAX_ONGOING_REQUESTS
from .pairs_file import DEFAULT_BATCH_ROWS, FORMATS, PairColumns

APP_NAME = "jina-local-rerank"


def _add_cluster_argument(group: Any) -> None:
    group.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto' for the one started on this machine with 'ray start'; default: "
        "$RAY_ADDRESS, else a new local Ray instance)",
    )


def _init_ray(address: str | None) -> None:
    try:
        import ray
    except ImportError:
        raise SystemExit(
            "jina-local-rerank: error: --ray needs the 'ray' extra: pip install 'jina-local-rerank[ray]'"
        ) from None
    if not ray.is_initialized():
        # A new local instance stays on loopback; an address joins an existing cluster as configured there.
        ray.init(address=address, _node_ip_address="127.0.0.1" if address is None else None)


def add_score_pairs_command(subparsers: Any) -> None:
    """Register ``score-pairs`` on the CLI's subparsers (``argparse`` ``add_subparsers()`` result)."""
    from ..cli import add_model_arguments

    command = subparsers.add_parser(
        "score-pairs",
        help="score a JSONL or Parquet file of (query, document) pairs, in this process or on Ray",
        description="Score every (query, document) row of INPUT and write its rows, in order, with a score "
        "column added to OUTPUT (JSON Lines or Parquet, by suffix). Prints a JSON summary.",
    )
    command.add_argument("input", help="JSONL (.jsonl, .ndjson, .json) or Parquet (.parquet, .pq) file")
    command.add_argument("output", help="file to write (JSONL or Parquet, by suffix; may differ from the input's)")
    columns = command.add_argument_group("columns and formats")
    columns.add_argument("--query-column", default="query", help="column holding queries (default: query)")
    columns.add_argument("--document-column", default="document", help="column holding documents (default: document)")
    columns.add_argument("--score-column", default="score", help="column to add (default: score)")
    columns.add_argument("--input-format", choices=FORMATS, default=None, help="override the input's suffix")
    columns.add_argument("--output-format", choices=FORMATS, default=None, help="override the output's suffix")
    columns.add_argument("--raw", action="store_true", help="write raw logits instead of sigmoid scores")
    columns.add_argument(
        "--batch-size", type=positive_int, default=DEFAULT_BATCH_ROWS,
        help=f"rows per scoring call (default: {DEFAULT_BATCH_ROWS})",
    )
    add_model_arguments(command)
    ray = command.add_argument_group("Ray (with --ray)")
    ray.add_argument("--ray", action="store_true", help="score on a Ray cluster with an actor pool (the 'ray' extra)")
    ray.add_argument("--num-actors", type=positive_int, default=1, help="scoring actors, one model each (default: 1)")
    ray.add_argument(
        "--num-cpus-per-actor", type=non_negative_float, default=1.0, help="CPUs each actor holds (default: 1)"
    )
    ray.add_argument(
        "--num-gpus-per-actor", type=non_negative_float, default=0.0, help="GPUs each actor holds (default: 0)"
    )
    _add_cluster_argument(ray)
    command.set_defaults(handler=run_score_pairs)


def run_score_pairs(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``score-pairs``: score the input file's rows in process or on Ray, print a JSON summary."""
    from ..cli import reranker_from_args, reranker_options  # the main CLI imports this module

    columns = PairColumns(args.query_column, args.document_column, args.score_column)
    common = {
        "columns": columns,
        "raw": args.raw,
        "input_format": args.input_format,
        "output_format": args.output_format,
    }
    started = time.perf_counter()
    if args.ray:
        _init_ray(args.address)
        from .batch import score_pairs_file

        rows = score_pairs_file(
            args.input,
            args.output,
            model=args.model,
            num_actors=args.num_actors,
            batch_size=args.batch_size,
            num_cpus_per_actor=args.num_cpus_per_actor,
            num_gpus_per_actor=args.num_gpus_per_actor,
            reranker_options=reranker_options(args),
            **common,
        )
    else:
        from .pairs_file import score_pairs_file_local

        reranker = reranker_from_args(args)
        try:
            rows = score_pairs_file_local(
                args.input, args.output, reranker=reranker, batch_rows=args.batch_size, **common
            )
        except ImportError as exc:  # pyarrow missing: say which extra brings it
            raise SystemExit(f"jina-local-rerank: error: {exc}") from None
    seconds = time.perf_counter() - started
    summary = {"rows": rows, "output": args.output, "seconds": round(seconds, 3), "ray": args.ray}
    json.dump(summary, stdout)
    stdout.write("\n")


def add_ray_serve_arguments(parser: argparse.ArgumentParser) -> None:
    """Add ``--ray`` and the replica options to the ``serve`` command's parser."""
    ray = parser.add_argument_group("Ray Serve (with --ray; the 'ray' extra)")
    ray.add_argument("--ray", action="store_true", help="serve from Ray Serve replicas instead of one process")
    ray.add_argument("--num-replicas", type=positive_int, default=1, help="replicas, one model each (default: 1)")
    ray.add_argument(
        "--num-cpus-per-replica", type=non_negative_float, default=1.0, help="CPUs each replica holds (default: 1)"
    )
    ray.add_argument(
        "--num-gpus-per-replica", type=non_negative_float, default=0.0, help="GPUs each replica holds (default: 0)"
    )
    ray.add_argument(
        "--max-replicas", type=positive_int, default=None,
        help="autoscale between --min-replicas and this many replicas (replaces --num-replicas)",
    )
    ray.add_argument("--min-replicas", type=int, default=1, help="fewest replicas when autoscaling (default: 1)")
    ray.add_argument(
        "--max-ongoing-requests", type=positive_int, default=DEFAULT_MAX_ONGOING_REQUESTS,
        help=f"requests in flight per replica; more wait in the proxy (default: {DEFAULT_MAX_ONGOING_REQUESTS})",
    )
    _add_cluster_argument(ray)


def _stop_on_sigterm() -> None:
    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, interrupt)


def run_serve_on_ray(args: argparse.Namespace, reranker_options: dict[str, Any], settings: ServerSettings) -> None:
    """Deploy the app on Ray Serve at ``--host``/``--port`` and block; Ctrl-C or SIGTERM deletes it again."""
    if args.max_replicas is not None and not 0 <= args.min_replicas <= args.max_replicas:
        raise ValueError(f"--min-replicas must be between 0 and --max-replicas, got {args.min_replicas}")
    _init_ray(args.address)
    from ray import serve

    from .serve import build_app

    autoscaling = None
    if args.max_replicas is not None:
        autoscaling = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas}
    app = build_app(
        args.model,
        reranker_options=reranker_options,
        settings=settings,
        num_replicas=None if autoscaling else args.num_replicas,
        ray_actor_options={"num_cpus": args.num_cpus_per_replica, "num_gpus": args.num_gpus_per_replica},
        autoscaling_config=autoscaling,
        max_ongoing_requests=args.max_ongoing_requests,
    )
    # http_options only take effect where Serve is not running yet on the cluster.
    serve.start(http_options={"host": args.host, "port": args.port})
    _stop_on_sigterm()
    try:
        serve.run(app, name=APP_NAME, route_prefix="/")
        print(
            f"jina-local-rerank: serving {', '.join(settings.served_model_names)} on Ray Serve at "
            f"http://{args.host}:{args.port}; Ctrl-C to stop",
            file=sys.stderr,
            flush=True,
        )
        while True:
            time.sleep(3600)
    except KeyboardInterrupt:
        pass
    finally:
        serve.delete(APP_NAME)
