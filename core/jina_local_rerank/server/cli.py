"""``jina-local-rerank serve``: run the rerank server (FastAPI + uvicorn, the ``server`` extra)."""

from __future__ import annotations

import argparse
import copy
import os
import signal
import sys
import threading
from typing import Any, TextIO

from ..flags import add_field_arguments, positive_int, values_from_args
from ..install_hints import extra_imports
from ..options import RerankerOptions, add_option_arguments, options_from_args
from .settings import (
    API_KEY_ENV_VAR,
    HTTP_SECTION,
    LOCAL_HOSTS,
    ServerSettings,
    check_api_key_value,
    default_served_names,
)

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


def register(commands: Any) -> None:
    """Add ``serve`` to the CLI's subcommands (``argparse`` ``add_subparsers()`` result)."""
    serve = commands.add_parser(
        "serve",
        help="serve the Jina (/v1/rerank), Cohere v2 (/v2/rerank) and TEI (/rerank) rerank APIs over HTTP",
        description="Serve a local JinaBERT reranker behind drop-in Jina, Cohere and TEI rerank APIs. Stop with "
        "Ctrl-C or SIGTERM: requests in flight finish first.",
    )
    add_option_arguments(serve)
    http = serve.add_argument_group(HTTP_SECTION)
    http.add_argument("--host", default="127.0.0.1", help="address to bind (default: %(default)s, this machine only)")
    http.add_argument("--port", type=port_number, default=8080, help="port, 1-65535 (default: %(default)s)")
    # A repeated flag appends to a copy of its default, which must be a list or None (not the field's tuple).
    add_field_arguments(serve, ServerSettings, defaults={"allowed_hosts": None}, sections={HTTP_SECTION: http})
    http.add_argument(
        "--log-level",
        default="info",
        choices=("critical", "error", "warning", "info", "debug"),
        help="log level (info: one access-log line per request, with its request id)",
    )
    serve.set_defaults(handler=run_serve)


def serve_options(args: argparse.Namespace) -> RerankerOptions:
    """The engine options of ``serve``, with the model resolved (its names are what clients ask for)."""
    return options_from_args(args).with_default_model()


def api_key_from(flag: str | None) -> str | None:
    """The API key: ``--api-key``'s value, else ``$JINA_LOCAL_RERANK_API_KEY``, else None (no auth); a key that
    can never match is a ``ValueError`` naming where it came from."""
    if flag is not None:
        return check_api_key_value(flag, "--api-key")
    if API_KEY_ENV_VAR in os.environ:
        return check_api_key_value(os.environ[API_KEY_ENV_VAR], f"${API_KEY_ENV_VAR}")
    return None


def settings_from_args(args: argparse.Namespace, options: RerankerOptions) -> ServerSettings:
    """The server settings (served names, key, limits, batching) that ``serve``'s flags describe."""
    values = values_from_args(ServerSettings, args)
    values["served_model_names"] = values["served_model_names"] or default_served_names(options.model)
    values["allowed_hosts"] = values["allowed_hosts"] or ()
    values["api_key"] = api_key_from(values["api_key"])
    return ServerSettings(**values)


def is_loopback(host: str) -> bool:
    """Whether binding ``host`` listens on this machine only."""
    return host in LOCAL_HOSTS or host.startswith("127.")


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
    if not settings.keyed and not is_loopback(args.host):
        print(
            f"jina-local-rerank: warning: listening on {args.host} without an API key; anyone who can reach "
            f"this port can use the server (set --api-key or ${API_KEY_ENV_VAR}). Requests are answered only "
            f"when their Host is {', '.join(LOCAL_HOSTS)} or an --allowed-host.",
            file=sys.stderr,
        )
    print(
        f"jina-local-rerank: serving {', '.join(settings.served_model_names)} ({reranker!r}); "
        f"auth {'on' if settings.keyed else 'off'}, batching {'on' if settings.batching else 'off'}",
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
