"""``jina-local-rerank serve``: run the rerank server (FastAPI + uvicorn, the ``server`` extra)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from ..argtypes import non_negative_float, positive_int
from ..extras import install_hint
from ..options import RerankerOptions, add_option_arguments, options_from_args
from .settings import (
    API_KEY_ENV_VAR,
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_CONCURRENT_BATCHES,
    DEFAULT_MAX_DOCUMENT_CHARS,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_REQUEST_BYTES,
    ServerSettings,
    default_served_names,
)

LOOPBACK_HOSTS = ("localhost", "::1")

# Idle keep-alive connections stay open this long. uvicorn's default (5 s) equals the idle expiry of pooled
# clients such as httpx, so a client could reuse a connection just as the server closed it (a ReadError on a
# POST, which clients do not retry); outlasting the clients' expiry lets them close idle connections first.
KEEP_ALIVE_SECONDS = 75


def register(commands: Any) -> None:
    """Add ``serve`` to the CLI's subcommands (``argparse`` ``add_subparsers()`` result)."""
    serve = commands.add_parser(
        "serve",
        help="serve the Jina Reranker API (POST /v1/rerank) and TEI's POST /rerank over HTTP",
        description="Serve a local JinaBERT reranker behind a drop-in Jina Reranker API. Stop with Ctrl-C or "
        "SIGTERM: requests in flight finish first.",
    )
    add_option_arguments(serve)
    http = serve.add_argument_group("HTTP")
    http.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, this machine only)")
    http.add_argument("--port", type=int, default=8080, help="port (default: 8080)")
    http.add_argument("--served-model-name", action="append", default=None, metavar="NAME", help="a name requests may pass as 'model'; repeatable (default: the model id and its last path component)")
    http.add_argument("--api-key", default=None, help=f"require 'Authorization: Bearer KEY' (default: ${API_KEY_ENV_VAR}; unset: no auth)")
    http.add_argument("--log-level", default="info", choices=("critical", "error", "warning", "info", "debug"), help="uvicorn log level")
    limits = serve.add_argument_group("limits (each answered with a 4xx JSON error)")
    limits.add_argument("--max-documents", type=positive_int, default=DEFAULT_MAX_DOCUMENTS, help=f"documents per request (default: {DEFAULT_MAX_DOCUMENTS}; 413 over it)")
    limits.add_argument("--max-request-bytes", type=positive_int, default=DEFAULT_MAX_REQUEST_BYTES, help=f"request body bytes (default: {DEFAULT_MAX_REQUEST_BYTES}; 413 over it)")
    limits.add_argument("--max-document-chars", type=positive_int, default=DEFAULT_MAX_DOCUMENT_CHARS, help=f"characters per document and query (default: {DEFAULT_MAX_DOCUMENT_CHARS}; 413 over it)")
    batching = serve.add_argument_group("batching")
    batching.add_argument("--batch-wait-ms", type=non_negative_float, default=DEFAULT_BATCH_WAIT_MS, help=f"how long a batch waits for more requests, in milliseconds (default: {DEFAULT_BATCH_WAIT_MS})")
    batching.add_argument("--batch-concurrency", type=positive_int, default=DEFAULT_CONCURRENT_BATCHES, help=f"merged batches scored at the same time, each in its own thread (default: {DEFAULT_CONCURRENT_BATCHES})")
    batching.add_argument("--no-batching", action="store_true", help="score each request on its own (no merging)")
    serve.set_defaults(handler=run_serve)


def serve_options(args: argparse.Namespace) -> RerankerOptions:
    """The engine options of ``serve``, with the model resolved (its names are what clients ask for)."""
    from ..checkpoint import default_model

    options = options_from_args(args)
    return options.replace(model=options.model or default_model())


def settings_from_args(args: argparse.Namespace, options: RerankerOptions) -> ServerSettings:
    """The server settings (served names, key, limits, batching) that ``serve``'s flags describe."""
    return ServerSettings(
        served_model_names=tuple(args.served_model_name or default_served_names(options.model)),
        api_key=args.api_key or os.environ.get(API_KEY_ENV_VAR) or None,
        max_documents=args.max_documents,
        max_request_bytes=args.max_request_bytes,
        max_document_chars=args.max_document_chars,
        batching=not args.no_batching,
        batch_wait_ms=args.batch_wait_ms,
        batch_concurrency=args.batch_concurrency,
    )


def run_serve(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """Load the model, then serve until SIGINT or SIGTERM; requests in flight finish first.

    After the graceful shutdown, SIGINT exits with status 0 and SIGTERM ends the process by that signal, as
    uvicorn re-raises it (what process supervisors expect).
    """
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise ImportError(f"serve needs {exc.name}: {install_hint('server')}") from None
    from ..reranker import Reranker

    options = serve_options(args)
    settings = settings_from_args(args, options)
    reranker = Reranker(options)
    if not settings.api_key and args.host not in LOOPBACK_HOSTS and not args.host.startswith("127."):
        print(
            f"jina-local-rerank: warning: listening on {args.host} without an API key; anyone who can reach "
            "this port can use the server (set --api-key or $" + API_KEY_ENV_VAR + ")",
            file=sys.stderr,
        )
    print(
        f"jina-local-rerank: serving {', '.join(settings.served_model_names)} ({reranker!r}); "
        f"auth {'on' if settings.api_key else 'off'}, batching {'on' if settings.batching else 'off'}",
        file=sys.stderr,
        flush=True,
    )
    try:
        uvicorn.run(
            create_app(reranker, settings),
            host=args.host,
            port=args.port,
            log_level=args.log_level,
            timeout_keep_alive=KEEP_ALIVE_SECONDS,
        )
    except KeyboardInterrupt:
        # uvicorn re-raises SIGINT after its graceful shutdown; the server has already stopped cleanly.
        pass
