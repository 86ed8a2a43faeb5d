"""Ray's additions to the command line: ``--ray`` on ``score-pairs`` (an actor pool) and on ``serve`` (replicas).

:func:`extend` attaches them to commands that know nothing of Ray. Ray itself is imported only when a command
runs with ``--ray``, so both commands work where Ray is not installed.
"""

from __future__ import annotations

import argparse
import signal
import sys
import time
from collections.abc import Callable
from typing import Any, TextIO

from ..cli import raise_terminated
from ..flags import non_negative_float, positive_int
from ..install_hints import extra_imports
from . import DEFAULT_MAX_ONGOING_REQUESTS

APP_NAME = "jina-local-rerank"
Handler = Callable[[argparse.Namespace, TextIO, TextIO], None]


def extend(commands: Any) -> None:
    """Add ``--ray`` and its options to the ``score-pairs`` and ``serve`` parsers registered in ``commands``."""
    _add_score_pairs_arguments(commands.choices["score-pairs"])
    _add_serve_arguments(commands.choices["serve"])
    _dispatch(commands.choices["score-pairs"], run_score_pairs_on_ray)
    _dispatch(commands.choices["serve"], run_serve_on_ray)


def _dispatch(parser: argparse.ArgumentParser, on_ray: Handler) -> None:
    """Make ``parser``'s command run ``on_ray`` when ``--ray`` is given, its own handler otherwise."""
    local: Handler = parser.get_default("handler")

    def handler(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
        (on_ray if args.ray else local)(args, stdin, stdout)

    parser.set_defaults(handler=handler)


def _add_cluster_argument(group: Any) -> None:
    group.add_argument(
        "--address",
        default=None,
        help="Ray cluster to join ('auto' for the one started on this machine with 'ray start'; default: "
        "$RAY_ADDRESS, else a new local Ray instance)",
    )


def _init_ray(address: str | None) -> None:
    with extra_imports("--ray", "ray"):
        import ray
    if not ray.is_initialized():
        # A new local instance stays on loopback; an address joins an existing cluster as configured there.
        ray.init(address=address, _node_ip_address="127.0.0.1" if address is None else None)


def _add_score_pairs_arguments(parser: argparse.ArgumentParser) -> None:
    ray = parser.add_argument_group("Ray (with --ray)")
    ray.add_argument("--ray", action="store_true", help="score on a Ray cluster with an actor pool (the 'ray' extra)")
    ray.add_argument("--num-actors", type=positive_int, default=1, help="scoring actors, one model each (default: 1)")
    ray.add_argument(
        "--num-cpus-per-actor", type=non_negative_float, default=1.0, help="CPUs each actor holds (default: 1)"
    )
    ray.add_argument(
        "--num-gpus-per-actor", type=non_negative_float, default=0.0, help="GPUs each actor holds (default: 0)"
    )
    _add_cluster_argument(ray)


def run_score_pairs_on_ray(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``score-pairs --ray``: the same job on an actor pool; prints the same JSON summary."""
    from ..cli.score_pairs import pair_columns, print_summary
    from ..options import options_from_args

    started = time.perf_counter()
    _init_ray(args.address)
    from .batch import score_pairs_file

    rows = score_pairs_file(
        args.input,
        args.output,
        options=options_from_args(args),
        num_actors=args.num_actors,
        batch_size=args.batch_size,
        num_cpus_per_actor=args.num_cpus_per_actor,
        num_gpus_per_actor=args.num_gpus_per_actor,
        columns=pair_columns(args),
        raw=args.raw,
        input_format=args.input_format,
        output_format=args.output_format,
        show_progress=args.progress,
    )
    print_summary(stdout, rows, args, started, ray=True)


def _add_serve_arguments(parser: argparse.ArgumentParser) -> None:
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
        "--max-replicas",
        type=positive_int,
        default=None,
        help="autoscale between --min-replicas and this many replicas (replaces --num-replicas)",
    )
    ray.add_argument("--min-replicas", type=int, default=1, help="fewest replicas when autoscaling (default: 1)")
    ray.add_argument(
        "--max-ongoing-requests",
        type=positive_int,
        default=DEFAULT_MAX_ONGOING_REQUESTS,
        help=f"requests in flight per replica; more wait in the proxy (default: {DEFAULT_MAX_ONGOING_REQUESTS})",
    )
    _add_cluster_argument(ray)


def run_serve_on_ray(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """``serve --ray``: deploy the app on Ray Serve at ``--host``/``--port`` and block; Ctrl-C or SIGTERM deletes
    it again."""
    from ..server.cli import serve_options, settings_from_args

    options = serve_options(args)
    settings = settings_from_args(args, options)
    if args.max_replicas is not None and not 0 <= args.min_replicas <= args.max_replicas:
        raise ValueError(f"--min-replicas must be between 0 and --max-replicas, got {args.min_replicas}")
    _init_ray(args.address)
    from ray import serve

    from .serve import build_app

    autoscaling = None
    if args.max_replicas is not None:
        autoscaling = {"min_replicas": args.min_replicas, "max_replicas": args.max_replicas}
    app = build_app(
        options,
        settings=settings,
        num_replicas=None if autoscaling else args.num_replicas,
        ray_actor_options={"num_cpus": args.num_cpus_per_replica, "num_gpus": args.num_gpus_per_replica},
        autoscaling_config=autoscaling,
        max_ongoing_requests=args.max_ongoing_requests,
    )
    # http_options only take effect where Serve is not running yet on the cluster.
    serve.start(http_options={"host": args.host, "port": args.port})
    signal.signal(signal.SIGTERM, raise_terminated)  # again: ray.init installs a handler of its own
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
