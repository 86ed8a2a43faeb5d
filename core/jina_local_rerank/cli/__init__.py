"""The ``jina-local-rerank`` command line.

Each subcommand is a module with a ``register(commands)`` function that adds its parser and sets its
``handler(args, stdin, stdout)``; :data:`COMMANDS` lists them. :data:`EXTENSIONS` are modules whose
``extend(commands)`` adds options to commands registered by others (Ray adds ``--ray`` to ``serve`` and
``score-pairs``, which know nothing of it). Modules import torch, FastAPI or Ray only when their command runs, so
``--help`` and argument errors come at once.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from collections.abc import Sequence
from importlib import import_module
from typing import TextIO

from .. import __version__
from ..errors import CheckpointError, JinaLocalRerankError, ModelNotFoundError

COMMANDS = (
    "jina_local_rerank.cli.rerank",
    "jina_local_rerank.cli.score_pairs",
    "jina_local_rerank.evaluation.cli",
    "jina_local_rerank.export.cli",
    "jina_local_rerank.server.cli",
    "jina_local_rerank.training.cli",
)
EXTENSIONS = ("jina_local_rerank.ray.cli",)

DESCRIPTION = (
    "Rerank documents with a Jina reranker v1 running locally: from the command line, over HTTP (serve), "
    "on files of pairs (score-pairs) or on a BEIR dataset (eval)."
)


def build_parser() -> argparse.ArgumentParser:
    """The ``jina-local-rerank`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="jina-local-rerank", description=DESCRIPTION)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMANDS:
        import_module(name).register(commands)
    for name in EXTENSIONS:
        import_module(name).extend(commands)
    return parser


def _error(message: object, status: int) -> int:
    if _sigterm.is_set():
        # SIGTERM raised inside a native call (safetensors' reader calls back into Python) can come out as that
        # call's own error, not as Terminated: it is still a termination, and was cleaned up on the way out.
        return _terminated()
    print(f"jina-local-rerank: error: {message}", file=sys.stderr)
    return status


def _terminated() -> int:
    print("jina-local-rerank: terminated", file=sys.stderr)
    return 143


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised where Ctrl-C's ``KeyboardInterrupt`` would be, so a command cleans up the same way (no
    partial output folder, no state of a run that saved nothing).

    Control flow, not an error: it is no :class:`~jina_local_rerank.errors.JinaLocalRerankError`, so that it
    passes every ``except Exception`` (and ``except JinaLocalRerankError``) on its way out, as Ctrl-C does."""


_sigterm = threading.Event()  # set by the handler: the run ends in 143 whichever exception carried it out


def raise_terminated(signum: int, frame: object) -> None:
    """The SIGTERM handler: raise :class:`Terminated` in the main thread."""
    _sigterm.set()
    raise Terminated


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Entry point; returns the exit status: 0, 1 for model and checkpoint errors, 2 for bad input or arguments,
    130 when interrupted (Ctrl-C), 143 when terminated (SIGTERM, cleaned up as Ctrl-C is). Every error is one line
    on stderr, never a traceback."""
    args = build_parser().parse_args(argv)
    out = stdout or sys.stdout
    in_main = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGTERM, raise_terminated) if in_main else None
    _sigterm.clear()
    try:
        return _run(args, stdin, out)
    finally:
        if in_main:
            signal.signal(signal.SIGTERM, signal.SIG_DFL if previous is None else previous)


def _run(args: argparse.Namespace, stdin: TextIO | None, out: TextIO) -> int:
    try:
        args.handler(args, stdin or sys.stdin, out)
        out.flush()
    except BrokenPipeError:
        # The reader went away (``| head``): stop quietly; point stdout at devnull so exit's flush cannot fail.
        if out is sys.stdout:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1
    except (CheckpointError, ModelNotFoundError, ImportError) as exc:  # our ImportErrors name the extra to install
        return _error(exc, 1)
    except (TypeError, ValueError) as exc:  # bad arguments or input (our FileProblem, DatasetError, InputError...)
        return _error(exc, 2)
    except JinaLocalRerankError as exc:  # a run that failed on its own (TrainingDivergedError)
        return _error(exc, 1)
    except OSError as exc:
        where = f" {exc.filename}" if exc.filename else ""
        return _error(f"{exc.strerror or exc}{where}", 1)
    except RecursionError:
        return _error("input nested too deeply", 2)
    except Terminated:
        return _terminated()
    except KeyboardInterrupt:
        print("jina-local-rerank: interrupted", file=sys.stderr)
        return 130
    return 0
