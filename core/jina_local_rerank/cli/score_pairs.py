"""``jina-local-rerank score-pairs``: score a JSONL or Parquet file of (query, document) pairs in this process.

Ray (:mod:`jina_local_rerank.ray.cli`) adds ``--ray`` to this command to run the same job on an actor pool.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import TextIO

from ..files.pairs import DEFAULT_BATCH_ROWS, FORMATS, PairColumns
from ..flags import positive_int
from ..options import add_option_arguments, options_from_args
from .arguments import add_progress_argument


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``score-pairs`` to the CLI's subcommands."""
    command = commands.add_parser(
        "score-pairs",
        help="score a JSONL or Parquet file of (query, document) pairs",
        description="Score every (query, document) row of INPUT and write its rows, in order, with a score "
        "column added to OUTPUT (JSON Lines or Parquet, by suffix). OUTPUT is replaced only once every row is "
        "scored; it must not be INPUT. Prints a JSON summary.",
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
        "--batch-size",
        type=positive_int,
        default=DEFAULT_BATCH_ROWS,
        help=f"rows per scoring call (default: {DEFAULT_BATCH_ROWS})",
    )
    add_progress_argument(command)
    add_option_arguments(command)
    command.set_defaults(handler=run_score_pairs)


def pair_columns(args: argparse.Namespace) -> PairColumns:
    """The column names the command's ``--*-column`` flags give."""
    return PairColumns(args.query_column, args.document_column, args.score_column)


def print_summary(stdout: TextIO, rows: int, args: argparse.Namespace, started: float, ray: bool) -> None:
    """The one-line JSON summary every ``score-pairs`` run prints."""
    seconds = round(time.perf_counter() - started, 3)
    json.dump({"rows": rows, "output": args.output, "seconds": seconds, "ray": ray}, stdout)
    stdout.write("\n")


def run_score_pairs(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """Score the input file's rows in this process and print a JSON summary."""
    from ..files.pairs import score_pairs_file_local
    from ..reranker import Reranker

    started = time.perf_counter()
    rows = score_pairs_file_local(
        args.input,
        args.output,
        reranker=Reranker(options_from_args(args)),
        columns=pair_columns(args),
        raw=args.raw,
        input_format=args.input_format,
        output_format=args.output_format,
        batch_rows=args.batch_size,
        show_progress=args.progress,
    )
    print_summary(stdout, rows, args, started, ray=False)
