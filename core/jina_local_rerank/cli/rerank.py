"""``jina-local-rerank rerank``: rerank documents for a query and print Jina-API-shaped JSON results.

Documents come from arguments, ``--input FILE`` (JSON or JSONL) or standard input.
"""

from __future__ import annotations

import argparse
import io
import json
from typing import Any, TextIO

from ..errors import InputError
from ..files.json_input import decode_json, parse_json
from ..files.user_files import MAX_INPUT_BYTES, read_bounded, read_text_file
from ..flags import positive_int
from ..options import add_option_arguments, options_from_args
from ..ranking import jina_results
from .arguments import add_progress_argument

EXPECTED_INPUT = 'a JSON object {"query": ..., "documents": [...]}, a JSON list of documents, or JSON lines'


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
        data = decode_json(stripped, source, InputError)
    except json.JSONDecodeError:  # JSON lines, one document per line
        lines = [line for line in stripped.splitlines() if line.strip()]
        documents = []
        for number, line in enumerate(lines, start=1):
            where = f"{source} line {number}"
            documents.append(_document_text(parse_json(line, where, InputError), where))
        return None, documents
    if isinstance(data, dict):
        if "documents" not in data:
            hint = " (this looks like a TEI request: name the list 'documents', not 'texts')" if "texts" in data else ""
            raise InputError(f"{source}: the JSON object has no 'documents' list{hint}; expected {EXPECTED_INPUT}")
        query = data.get("query")
        if query is not None and not isinstance(query, str):
            raise InputError(f"{source}: 'query' must be a string")
        documents = data["documents"]
        if not isinstance(documents, list):
            raise InputError(f"{source}: 'documents' must be a list")
        return query, [_document_text(d, f"{source} documents[{i}]") for i, d in enumerate(documents)]
    if isinstance(data, list):
        return None, [_document_text(d, f"{source}[{i}]") for i, d in enumerate(data)]
    if isinstance(data, str):
        return None, [data]
    raise InputError(f"{source}: expected {EXPECTED_INPUT}")


def _read_request(args: argparse.Namespace, stdin: TextIO) -> tuple[str, list[str]]:
    query, documents = args.query, list(args.documents)
    sources = []
    if args.input:
        sources.append((read_text_file(args.input, "--input"), args.input))
    elif not documents and not stdin.isatty():
        # The bytes, decoded strictly: a text stream may mask bad bytes as surrogates (Python's UTF-8 mode).
        # A text stream without bytes (tests) is read to the limit in characters, then bounded as bytes.
        stream = (
            stdin.buffer
            if hasattr(stdin, "buffer")
            else io.BytesIO(stdin.read(MAX_INPUT_BYTES + 1).encode("utf-8", "surrogateescape"))
        )
        raw = read_bounded(stream, "standard input")
        try:
            sources.append((raw.decode("utf-8"), "stdin"))
        except UnicodeDecodeError as exc:
            raise InputError(f"standard input is not UTF-8 text (byte {exc.start}: {exc.reason})") from None
    for text, source in sources:
        file_query, file_documents = parse_input(text, source)
        query = query if query is not None else file_query
        documents.extend(file_documents)
    if query is None:
        raise InputError("no query: pass --query or a JSON object with a 'query' field")
    if not documents:
        raise InputError("no documents to rerank: pass them as arguments, with --input FILE or on standard input")
    return query, documents


def _run_rerank(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    from ..reranker import Reranker  # torch: only once the command runs

    query, documents = _read_request(args, stdin)
    reranker = Reranker(options_from_args(args))
    result = reranker.score(query, documents, raw=args.raw, show_progress=args.progress)
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


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``rerank`` to the CLI's subcommands."""
    rerank = commands.add_parser(
        "rerank",
        help="rerank documents for a query and print JSON results",
        description="Rerank documents for a query and print the Jina Reranker API's JSON results, best first.",
    )
    rerank.add_argument("documents", nargs="*", help="documents to rerank (or use --input / stdin)")
    rerank.add_argument("--query", "-q", default=None, help="the query (or the 'query' field of the JSON input)")
    rerank.add_argument("--input", "-i", default=None, help="JSON {query, documents}, a JSON list, or JSONL file")
    rerank.add_argument("--top-n", type=positive_int, default=None, help="keep the best N results")
    rerank.add_argument("--raw", action="store_true", help="report raw logits instead of sigmoid scores")
    rerank.add_argument("--no-documents", action="store_true", help="omit document texts from the output")
    rerank.add_argument("--pretty", action="store_true", help="indent the JSON output")
    add_progress_argument(rerank)
    add_option_arguments(rerank)
    rerank.set_defaults(handler=_run_rerank)
