"""``jina-local-rerank serve``: run the rerank server (FastAPI + uvicorn, the ``server`` extra)."""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import threading
from typing import Any, TextIO

from ..flags import positive_int
from ..install_hints import extra_imports
from ..options import RerankerOptions, add_option_arguments, options_from_args
from .settings import (
    API_KEY_ENV_VAR,
    DEFAULT_BATCH_SLICE_TOKENS,
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_CONCURRENT_BATCHES,
    DEFAULT_MAX_CLIENT_BATCH_SIZE,
    DEFAULT_MAX_DOCUMENT_CHARS,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_QUEUED_REQUESTS,
    DEFAULT_MAX_REQUEST_BYTES,
    DEFAULT_MAX_REQUEST_TOKENS,
    DEFAULT_REQUEST_READ_TIMEOUT_S,
    MAX_BATCH_WAIT_MS,
    MAX_REQUEST_READ_TIMEOUT_S,
    ServerSettings,
    check_api_key_value,
    default_served_names,
)

LOOPBACK_HOSTS = ("localhost", "::1")

# Idle keep-alive connections stay open this long. uvicorn's default (5 s) equals the idle expiry of pooled
# clients such as httpx, so a client could reuse a connection just as the server closed it (a ReadError on a
# POST, which clients do not retry); outlasting the clients' expiry lets them close idle connections first.
KEEP_ALIVE_SECONDS = 75


def port_number(text: str) -> int:
    """A TCP port, 1 to 65535."""
    value = positive_int(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"must be a port number from 1 to 65535, got {value}")
    return value


def _bounded_number(low: float, high: float, *, zero: bool) -> Any:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not (low <= value <= high) or (value == 0 and not zero):
            raise argparse.ArgumentTypeError(
                f"must be a number {'from' if zero else 'over'} {low:g} to {high:g}, got {text}"
            )
        return value

    return parse


def register(commands: Any) -> None:
    """Add ``serve`` to the CLI's subcommands (``argparse`` ``add_subparsers()`` result)."""
    serve = commands.add_parser(
        "serve",
        help="serve the Jina (/v1/rerank), Cohere v2 (/v2/rerank) and TEI (/rerank) rerank APIs over HTTP",
        description="Serve a local JinaBERT reranker behind drop-in Jina, Cohere and TEI rerank APIs. Stop with "
        "Ctrl-C or SIGTERM: requests in flight finish first.",
    )
    add_option_arguments(serve)
    http = serve.add_argument_group("HTTP")
    http.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    http.add_argument("--port", type=port_number, default=8080, help="port, 1-65535 (default: 8080)")
    http.add_argument(
        "--served-model-name",
        action="append",
        default=None,
        metavar="NAME",
        help="a name requests may pass as 'model'; repeatable (default: the model's name, and a Hub id as given)",
    )
    http.add_argument(
        "--api-key",
        default=None,
        help=f"require 'Authorization: Bearer KEY', KEY visible ASCII (default: ${API_KEY_ENV_VAR}; unset: no auth)",
    )
    http.add_argument(
        "--allowed-host",
        action="append",
        default=None,
        metavar="NAME",
        help="a Host name served without an API key besides localhost, 127.0.0.1 and ::1; repeatable; '*' for any",
    )
    http.add_argument(
        "--request-read-timeout",
        type=_bounded_number(0, MAX_REQUEST_READ_TIMEOUT_S, zero=False),
        default=DEFAULT_REQUEST_READ_TIMEOUT_S,
        metavar="SECONDS",
        help=f"close a connection whose request (headers and body) has not arrived whole within this many seconds (default: {DEFAULT_REQUEST_READ_TIMEOUT_S:g})",
    )
    http.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level (info: one access-log line per request, with its request id)",
    )
    limits = serve.add_argument_group("limits (each answered with a 4xx JSON error)")
    limits.add_argument(
        "--max-documents",
        type=positive_int,
        default=DEFAULT_MAX_DOCUMENTS,
        help=f"documents per Jina or Cohere request (default: {DEFAULT_MAX_DOCUMENTS}; 413 over it)",
    )
    limits.add_argument(
        "--max-client-batch-size",
        type=positive_int,
        default=DEFAULT_MAX_CLIENT_BATCH_SIZE,
        help=f"texts per TEI /rerank request (default: {DEFAULT_MAX_CLIENT_BATCH_SIZE}, as TEI; 413 over it)",
    )
    limits.add_argument(
        "--max-request-bytes",
        type=positive_int,
        default=DEFAULT_MAX_REQUEST_BYTES,
        help=f"request body bytes (default: {DEFAULT_MAX_REQUEST_BYTES}; 413 over it)",
    )
    limits.add_argument(
        "--max-document-chars",
        type=positive_int,
        default=DEFAULT_MAX_DOCUMENT_CHARS,
        help="characters per document and query, 413 over it (default: no cap besides --max-request-bytes; long documents are scored truncated, tokenizing only the window's worth of text)",
    )
    limits.add_argument(
        "--max-request-tokens",
        type=positive_int,
        default=DEFAULT_MAX_REQUEST_TOKENS,
        help=f"tokens of all of a request's sequences, counted before scoring (default: {DEFAULT_MAX_REQUEST_TOKENS}; 413 over it)",
    )
    limits.add_argument(
        "--max-queued-requests",
        type=positive_int,
        default=DEFAULT_MAX_QUEUED_REQUESTS,
        help=f"scoring requests in flight at once (default: {DEFAULT_MAX_QUEUED_REQUESTS}; 429 with Retry-After over it)",
    )
    limits.add_argument(
        "--auto-truncate",
        action=argparse.BooleanOptionalAction,
        default=True,
        help="what TEI's 'truncate' means when absent or null (default: on, as TEI)",
    )
    batching = serve.add_argument_group("batching")
    batching.add_argument(
        "--batch-wait-ms",
        type=_bounded_number(0, MAX_BATCH_WAIT_MS, zero=True),
        default=DEFAULT_BATCH_WAIT_MS,
        help=f"how long a batch waits for more requests, in milliseconds, 0 to {MAX_BATCH_WAIT_MS:g} (default: {DEFAULT_BATCH_WAIT_MS})",
    )
    batching.add_argument(
        "--batch-concurrency",
        type=positive_int,
        default=DEFAULT_CONCURRENT_BATCHES,
        help=f"merged batches scored at the same time, each in its own thread (default: {DEFAULT_CONCURRENT_BATCHES})",
    )
    batching.add_argument(
        "--batch-slice-tokens",
        type=positive_int,
        default=DEFAULT_BATCH_SLICE_TOKENS,
        help=f"a request of more tokens is scored this many at a time beside the merged batches, so it never holds up small ones (default: {DEFAULT_BATCH_SLICE_TOKENS})",
    )
    batching.add_argument("--no-batching", action="store_true", help="score each request on its own (no merging)")
    serve.set_defaults(handler=run_serve)


def serve_options(args: argparse.Namespace) -> RerankerOptions:
    """The engine options of ``serve``, with the model resolved (its names are what clients ask for)."""

    options = options_from_args(args)
    return options.with_default_model()


def settings_from_args(args: argparse.Namespace, options: RerankerOptions) -> ServerSettings:
    """The server settings (served names, key, limits, batching) that ``serve``'s flags describe."""
    if args.api_key is not None:
        api_key: str | None = check_api_key_value(args.api_key, "--api-key")
    elif API_KEY_ENV_VAR in os.environ:
        api_key = check_api_key_value(os.environ[API_KEY_ENV_VAR], f"${API_KEY_ENV_VAR}")
    else:
        api_key = None
    return ServerSettings(
        served_model_names=tuple(args.served_model_name or default_served_names(options.model)),
        api_key=api_key,
        allowed_hosts=tuple(args.allowed_host or ()),
        max_documents=args.max_documents,
        max_client_batch_size=args.max_client_batch_size,
        max_request_bytes=args.max_request_bytes,
        max_document_chars=args.max_document_chars,
        max_request_tokens=args.max_request_tokens,
        max_queued_requests=args.max_queued_requests,
        auto_truncate=args.auto_truncate,
        request_read_timeout_s=args.request_read_timeout,
        batching=not args.no_batching,
        batch_wait_ms=args.batch_wait_ms,
        batch_concurrency=args.batch_concurrency,
        batch_slice_tokens=args.batch_slice_tokens,
    )


def run_serve(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """Load the model, then serve until SIGINT or SIGTERM; requests in flight finish first.

    After the graceful shutdown, SIGINT exits with status 0 and SIGTERM ends the process by that signal, as
    uvicorn re-raises it (what process supervisors expect).
    """
    with extra_imports("serve", "server"):
        import uvicorn

        from .app import create_app
        from .connections import deadline_protocol
    from ..reranker import Reranker

    options = serve_options(args)
    settings = settings_from_args(args, options)
    reranker = Reranker(options)
    reranker.warm_up()  # compiled kernels on CUDA: the first request must not pay for them
    if not settings.api_key and args.host not in LOOPBACK_HOSTS and not args.host.startswith("127."):
        print(
            f"jina-local-rerank: warning: listening on {args.host} without an API key; anyone who can reach "
            "this port can use the server (set --api-key or $" + API_KEY_ENV_VAR + "). Requests are answered "
            "only when their Host is localhost, 127.0.0.1, ::1 or an --allowed-host.",
            file=sys.stderr,
        )
    print(
        f"jina-local-rerank: serving {', '.join(settings.served_model_names)} ({reranker!r}); "
        f"auth {'on' if settings.api_key else 'off'}, batching {'on' if settings.batching else 'off'}",
        file=sys.stderr,
        flush=True,
    )
    if threading.current_thread() is threading.main_thread():
        # Not the CLI's SIGTERM-as-Ctrl-C: uvicorn shuts down gracefully, then the signal ends the process.
        signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        uvicorn.run(
            create_app(reranker, settings),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            log_config=log_config(args.log_level),
            access_log=False,  # the app writes its own access log, with request ids
            http=deadline_protocol(settings.request_read_timeout_s),
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
    except KeyboardInterrupt:
        # uvicorn re-raises SIGINT after its graceful shutdown; the server has already stopped cleanly.
        pass


def log_config(level: str) -> dict[str, Any]:
    """uvicorn's logging configuration plus the app's loggers (access log and errors) on uvicorn's handler, at
    ``level`` (the access log writes at info)."""
    from uvicorn.config import LOGGING_CONFIG

    config = copy.deepcopy(LOGGING_CONFIG)
    for name in ("jina_local_rerank.access", "jina_local_rerank.server"):
        config["loggers"][name] = {"handlers": ["default"], "level": level.upper(), "propagate": False}
    return config
