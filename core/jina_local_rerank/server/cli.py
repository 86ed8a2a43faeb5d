"""``jina-local-rerank serve``: run the rerank server (FastAPI + uvicorn, the ``server`` extra)."""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any, TextIO

from ..argtypes import non_negative_float, positive_int
from ..reranker import CHUNK_AGGREGATIONS, DEFAULT_MAX_BATCH_TOKENS, LONG_DOCUMENT_MODES
from .settings import (
    API_KEY_ENV_VAR,
    DEFAULT_BATCH_WAIT_MS,
    DEFAULT_CONCURRENT_BATCHES,
    DEFAULT_MAX_DOCUMENT_CHARS,
    DEFAULT_MAX_DOCUMENTS,
    DEFAULT_MAX_REQUEST_BYTES,
)

LOOPBACK_HOSTS = ("localhost", "::1")

# Idle keep-alive connections stay open this long. uvicorn's default (5 s) equals the idle expiry of pooled
# clients such as httpx, so a client could reuse a connection just as the server closed it (a ReadError on a
# POST, which clients do not retry); outlasting the clients' expiry lets them close idle connections first.
KEEP_ALIVE_SECONDS = 75


def add_serve_command(subparsers: Any) -> None:
    """Register ``serve`` on the CLI's subparsers (``argparse`` ``add_subparsers()`` result)."""
    serve = subparsers.add_parser(
        "serve",
        help="serve the Jina Reranker API (POST /v1/rerank) and TEI's POST /rerank over HTTP",
        description="Serve a local JinaBERT reranker behind a drop-in Jina Reranker API. Stop with Ctrl-C or "
        "SIGTERM: requests in flight finish first.",
    )
    model = serve.add_argument_group("model")
    model.add_argument("--model", default=None, help="Hub id or local directory (default: $JINA_LOCAL_RERANK_MODEL or jinaai/jina-reranker-v1-tiny-en)")
    model.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    model.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    model.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    model.add_argument("--max-length", type=positive_int, default=None, help="pair window in tokens (default: the model's)")
    model.add_argument("--long-document", choices=LONG_DOCUMENT_MODES, default="truncate", help="documents longer than the window: truncate, or score overlapping windows (chunk)")
    model.add_argument("--chunk-stride", type=positive_int, default=None, help="tokens between chunk windows (default: half a window)")
    model.add_argument("--chunk-aggregation", choices=CHUNK_AGGREGATIONS, default="max", help="combine a chunked document's window scores (default: max)")
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
    batching.add_argument("--batch-max-tokens", dest="max_batch_tokens", type=positive_int, default=DEFAULT_MAX_BATCH_TOKENS, help=f"token budget of one merged batch and of one forward pass, padded tokens (default: {DEFAULT_MAX_BATCH_TOKENS})")
    batching.add_argument("--batch-concurrency", type=positive_int, default=DEFAULT_CONCURRENT_BATCHES, help=f"merged batches scored at the same time, each in its own thread (default: {DEFAULT_CONCURRENT_BATCHES})")
    batching.add_argument("--no-batching", action="store_true", help="score each request on its own (no merging)")
    from ..ray.cli import add_ray_serve_arguments  # here: ray.cli imports this module

    add_ray_serve_arguments(serve)
    serve.set_defaults(handler=run_serve)


def run_serve(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """Load the model, then serve until SIGINT or SIGTERM; requests in flight finish first.

    After the graceful shutdown, SIGINT exits with status 0 and SIGTERM ends the process by that signal, as
    uvicorn re-raises it (what process supervisors expect).
    """
    try:
        import uvicorn

        from .app import create_app
    except ImportError as exc:
        raise SystemExit(
            f"jina-local-rerank: error: serve needs the 'server' extra ({exc.name} is missing): "
            "pip install 'jina-local-rerank[server]'"
        ) from None
    from ..checkpoint import default_model
    from ..cli import reranker_options
    from ..reranker import Reranker
    from .settings import ServerSettings, default_served_names

    options = reranker_options(args)
    model = default_model() if args.model is None else args.model
    settings = ServerSettings(
        served_model_names=tuple(args.served_model_name or default_served_names(model)),
        api_key=args.api_key or os.environ.get(API_KEY_ENV_VAR) or None,
        max_documents=args.max_documents,
        max_request_bytes=args.max_request_bytes,
        max_document_chars=args.max_document_chars,
        batching=not args.no_batching,
        batch_wait_ms=args.batch_wait_ms,
        batch_concurrency=args.batch_concurrency,
    )
    if args.ray:
        from ..ray.cli import run_serve_on_ray

        run_serve_on_ray(args, options, settings)
        return
    reranker = Reranker(model, **options)
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
