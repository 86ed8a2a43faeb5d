"""Arguments more than one subcommand takes, registered the same way everywhere (a leaf module: no torch).

The engine options come from :mod:`jina_local_rerank.options`; the value types from
:mod:`jina_local_rerank.flags`.
"""

from __future__ import annotations

import argparse


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (alias ``--quiet``): the progress bar on stderr, in ``args.progress``.

    By default (``"auto"``) the bar shows once the work has run a few seconds; ``--progress`` shows it from the
    start, ``--no-progress`` never.
    """
    group = parser.add_mutually_exclusive_group()
    group.add_argument(
        "--progress",
        dest="progress",
        action="store_const",
        const="always",
        default="auto",
        help="show the progress bar on stderr from the start (default: once the work runs a few seconds)",
    )
    group.add_argument(
        "--no-progress", "--quiet", dest="progress", action="store_const", const="never", help="no progress bar"
    )
