"""``jina-local-rerank eval``: measure the reranker on a BEIR-layout dataset, first stage versus reranked."""

from __future__ import annotations

import argparse
import json
from typing import TYPE_CHECKING, TextIO

from ..cli.arguments import add_progress_argument
from ..files.user_files import check_output_path, write_text_atomically
from ..flags import positive_int
from ..install_hints import extra_imports
from ..options import add_option_arguments, options_from_args
from .metrics import NDCG_AT

if TYPE_CHECKING:
    from .runner import EvaluationReport


def _cutoff_list(text: str) -> list[int]:
    return [positive_int(part) for part in text.split(",") if part.strip()]


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``eval`` to the CLI's subcommands."""
    parser = commands.add_parser(
        "eval",
        help="measure NDCG@10, MRR@10, recall and hit rate on a BEIR-layout dataset, before and after reranking",
        description="Rerank each query's first-stage candidates and compare both rankings with the judgments.",
    )
    parser.add_argument("dataset", metavar="DATASET_DIR", help="folder with corpus.jsonl, queries.jsonl, qrels/")
    parser.add_argument("--split", default="test", help="qrels/<split>.tsv to judge with (default: test)")
    first = parser.add_mutually_exclusive_group()
    first.add_argument("--run", metavar="RUN_FILE", default=None, help="first stage from a TREC run file")
    first.add_argument("--bm25", action="store_true", help="first stage from BM25 over the corpus (the default)")
    parser.add_argument("--top-k", type=positive_int, default=100, help="candidates reranked per query (100)")
    parser.add_argument("--max-queries", type=positive_int, default=None, help="evaluate the first N queries")
    parser.add_argument(
        "--cutoffs", type=_cutoff_list, default=None, help="recall/hit-rate depths, e.g. 5,10,100 (default: 10,TOP_K)"
    )
    parser.add_argument("--json", metavar="OUT.json", default=None, help="write the results as JSON")
    parser.add_argument("--per-query", action="store_true", help="print and write per-query results too")
    add_progress_argument(parser)
    add_option_arguments(parser)

    def handler(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
        if args.run is None:  # before loading the dataset or the model
            with extra_imports("eval without --run (its BM25 first stage)", "eval"):
                import bm25s  # noqa: F401
        if args.json:
            check_output_path(args.json, what="--json")  # before hours of reranking, not after
        _run_eval(args, stdout)

    parser.set_defaults(handler=handler)


def _run_eval(args: argparse.Namespace, stdout: TextIO) -> None:
    from ..reranker import Reranker
    from .beir import load_beir
    from .runner import evaluate, select_queries
    from .runs import FirstStage, bm25_first_stage, run_file_first_stage

    dataset = load_beir(args.dataset, args.split)
    first_stage: FirstStage
    if args.run is not None:
        first_stage = run_file_first_stage(args.run)
    else:
        query_ids, _ = select_queries(dataset, args.max_queries)
        first_stage = bm25_first_stage(dataset, query_ids, args.top_k, show_progress=args.progress)
    reranker = Reranker(options_from_args(args))
    report = evaluate(
        reranker,
        dataset,
        first_stage,
        top_k=args.top_k,
        max_queries=args.max_queries,
        cutoffs=args.cutoffs,
        show_progress=args.progress,
    )
    stdout.write(format_report(report, per_query=args.per_query))
    if args.json:
        text = json.dumps(report.to_dict(per_query=args.per_query), ensure_ascii=False, indent=2) + "\n"
        write_text_atomically(args.json, text, "--json")


def format_report(report: EvaluationReport, *, per_query: bool = False) -> str:
    """The summary table (first stage versus reranked, with the difference), optionally one line per query."""
    data = report.to_dict()
    documents = data["documents"]
    lines = [
        f"dataset      {report.dataset} (split {report.split}): {len(report.queries)} queries evaluated, "
        f"{len(report.skipped_queries)} judged queries skipped (no relevant document or no text)",
        f"first stage  {report.first_stage_name}, top {report.top_k} candidates reranked",
        f"reranker     {report.model}, max_length {report.max_length}, long documents: {report.long_document}; "
        f"{documents['scored']} documents scored, {documents['truncated']} truncated, "
        f"{documents['chunked']} chunked ({documents['windows']} windows)",
        "",
        f"{'metric':<14}{'first stage':>12}{'reranked':>12}{'change':>10}",
    ]
    for name, before in report.first_stage.items():
        after = report.reranked[name]
        lines.append(f"{name:<14}{before:>12.4f}{after:>12.4f}{after - before:>+10.4f}")
    lines.append(f"{'time (s)':<14}{report.first_stage_seconds:>12.3f}{report.rerank_seconds:>12.3f}")
    if per_query:
        ndcg = f"ndcg@{NDCG_AT}"
        lines += ["", f"{'query':<20}{ndcg + ' first':>16}{ndcg + ' reranked':>18}{'rerank (s)':>12}"]
        for query in report.queries:
            lines.append(
                f"{query.query_id:<20}{query.first_stage[ndcg]:>16.4f}{query.reranked[ndcg]:>18.4f}"
                f"{query.rerank_seconds:>12.3f}"
            )
    return "\n".join(lines) + "\n"
