"""``jina-local-rerank``: the command line.

``jina-local-rerank rerank --query Q doc1 doc2 ...`` prints Jina-API-shaped JSON results. Documents come from
arguments, ``--input FILE`` (JSON or JSONL) or standard input.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Sequence, TextIO

from .errors import JinaLocalRerankError
from .evaluation.cli import add_eval_command
from .ray.cli import add_score_pairs_command
from .reranker import CHUNK_AGGREGATIONS, DEFAULT_MAX_BATCH_TOKENS, LONG_DOCUMENT_MODES, Reranker, jina_results
from .server.cli import add_serve_command


class InputError(ValueError):
    """The command's input could not be read as a query and documents."""


def _document_text(item: Any, where: str) -> str:
    if isinstance(item, str):
        return item
    if isinstance(item, dict) and isinstance(item.get("text"), str):
        return item["text"]
    raise InputError(f"{where}: a document must be a string or an object with a string 'text'")


def parse_input(text: str, source: str) -> tuple[str | None, list[str]]:
    """Read ``{"query", "documents"}`` JSON, a JSON list of documents, or JSONL (one document per line)."""
    stripped = text.strip()
    if not stripped:
        return None, []
    try:
        data = json.loads(stripped)
    except json.JSONDecodeError:
        data = None
        lines = [line for line in stripped.splitlines() if line.strip()]
        documents = []
        for number, line in enumerate(lines, start=1):
            try:
                item = json.loads(line)
            except json.JSONDecodeError as exc:
                raise InputError(f"{source} line {number}: not JSON ({exc.msg})") from None
            documents.append(_document_text(item, f"{source} line {number}"))
        return None, documents
    if isinstance(data, dict):
        query = data.get("query")
        if query is not None and not isinstance(query, str):
            raise InputError(f"{source}: 'query' must be a string")
        documents = data.get("documents", [])
        if not isinstance(documents, list):
            raise InputError(f"{source}: 'documents' must be a list")
        return query, [_document_text(d, f"{source} documents[{i}]") for i, d in enumerate(documents)]
    if isinstance(data, list):
        return None, [_document_text(d, f"{source}[{i}]") for i, d in enumerate(data)]
    if isinstance(data, str):
        return None, [data]
    raise InputError(f"{source}: expected a JSON object, a JSON list or JSON lines")


def _read_request(args: argparse.Namespace, stdin: TextIO) -> tuple[str, list[str]]:
    query, documents = args.query, list(args.documents)
    sources = []
    if args.input:
        path = Path(args.input)
        try:
            sources.append((path.read_text(encoding="utf-8"), str(path)))
        except OSError as exc:
            raise InputError(f"cannot read --input {path}: {exc.strerror}") from None
    elif not documents and not stdin.isatty():
        sources.append((stdin.read(), "stdin"))
    for text, source in sources:
        file_query, file_documents = parse_input(text, source)
        query = query if query is not None else file_query
        documents.extend(file_documents)
    if query is None:
        raise InputError("no query: pass --query or a JSON object with a 'query' field")
    return query, documents


def add_model_arguments(parser: argparse.ArgumentParser) -> None:
    """The model options every subcommand shares (``--model``, ``--device``, lengths, long documents)."""
    parser.add_argument("--model", default=None, help="Hub id or local directory (default: $JINA_LOCAL_RERANK_MODEL or jinaai/jina-reranker-v1-tiny-en)")
    parser.add_argument("--revision", default=None, help="Hub revision (branch, tag or commit)")
    parser.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:N or mps")
    parser.add_argument("--dtype", default="auto", help="auto, float32, bfloat16 or float16")
    parser.add_argument("--max-length", type=int, default=None, help="pair window in tokens (default: the model's)")
    parser.add_argument("--max-batch-tokens", type=int, default=None, help="padded tokens per forward pass")
    parser.add_argument(
        "--long-document", choices=LONG_DOCUMENT_MODES, default="truncate",
        help="a document longer than the window: truncate it, or chunk it into overlapping windows",
    )
    parser.add_argument("--chunk-stride", type=int, default=None, help="tokens between windows (default: half one)")
    parser.add_argument(
        "--chunk-aggregation", choices=CHUNK_AGGREGATIONS, default="max", help="combine window scores (default: max)"
    )


def reranker_options(args: argparse.Namespace) -> dict[str, Any]:
    """``Reranker`` keyword arguments from a subcommand's model options (``--model`` itself excluded)."""
    return {
        "revision": args.revision,
        "device": args.device,
        "dtype": args.dtype,
        "max_length": args.max_length,
        "max_batch_tokens": args.max_batch_tokens or DEFAULT_MAX_BATCH_TOKENS,
        "long_document": args.long_document,
        "chunk_stride": args.chunk_stride,
        "chunk_aggregation": args.chunk_aggregation,
    }


def reranker_from_args(args: argparse.Namespace) -> Reranker:
    """The ``Reranker`` that a subcommand's model options (``--model``, ``--device``, ...) describe."""
    return Reranker(args.model, **reranker_options(args))


def _run_rerank(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    query, documents = _read_request(args, stdin)
    reranker = reranker_from_args(args)
    result = reranker.score(query, documents, raw=args.raw, show_progress=not args.quiet)
    results = jina_results(result, documents, top_n=args.top_n, return_documents=not args.no_documents)
    for entry in results:
        entry["truncated"] = result.truncated[entry["index"]]
        entry["windows"] = result.windows[entry["index"]]
    output = {
        "model": reranker.model_name,
        "usage": {"total_tokens": result.num_tokens},
        "truncated_documents": result.num_truncated,
        "chunked_documents": result.num_chunked,
        "results": results,
    }
    json.dump(output, stdout, ensure_ascii=False, indent=2 if args.pretty else None)
    stdout.write("\n")


def build_parser() -> argparse.ArgumentParser:
    """The ``jina-local-rerank`` parser with every subcommand registered."""
    parser = argparse.ArgumentParser(prog="jina-local-rerank", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    rerank = commands.add_parser("rerank", help="rerank documents for a query and print JSON results")
    rerank.add_argument("documents", nargs="*", help="documents to rerank (or use --input / stdin)")
    rerank.add_argument("--query", "-q", default=None, help="the query (or the 'query' field of the JSON input)")
    rerank.add_argument("--input", "-i", default=None, help="JSON {query, documents}, a JSON list, or JSONL file")
    rerank.add_argument("--top-n", type=int, default=None, help="keep the best N results")
    rerank.add_argument("--raw", action="store_true", help="report raw logits instead of sigmoid scores")
    rerank.add_argument("--no-documents", action="store_true", help="omit document texts from the output")
    rerank.add_argument("--pretty", action="store_true", help="indent the JSON output")
    rerank.add_argument("--quiet", action="store_true", help="no progress bar on stderr")
    add_model_arguments(rerank)
    rerank.set_defaults(handler=_run_rerank)
    add_eval_command(commands)
    add_serve_command(commands)
    add_score_pairs_command(commands)
    return parser


def main(argv: Sequence[str] | None = None, stdin: TextIO | None = None, stdout: TextIO | None = None) -> int:
    """Entry point; returns the exit status (2 for bad input or arguments, 1 for model errors)."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "top_n", None) is not None and args.top_n < 1:
        parser.error(f"--top-n must be >= 1, got {args.top_n}")
    try:
        args.handler(args, stdin or sys.stdin, stdout or sys.stdout)
    except JinaLocalRerankError as exc:
        print(f"jina-local-rerank: error: {exc}", file=sys.stderr)
        return 1
    except (TypeError, ValueError) as exc:
        print(f"jina-local-rerank: error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
