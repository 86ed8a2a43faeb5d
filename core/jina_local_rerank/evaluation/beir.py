"""Loading a dataset in BEIR layout: ``corpus.jsonl``, ``queries.jsonl`` and ``qrels/<split>.tsv``.

``corpus.jsonl`` holds one ``{"_id", "title"?, "text"}`` object per line, ``queries.jsonl`` one ``{"_id", "text"}``
per line, and ``qrels/<split>.tsv`` tab-separated ``query-id  corpus-id  score`` lines (integer grades) after an
optional header line. Errors name the file and the line.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ..errors import DatasetError, FileProblem
from ..files.json_input import parse_json
from ..files.user_files import text_lines

# The largest relevance grade a qrels file may hold (real ones are 0 to 3 or so); metrics and training stay finite.
MAX_GRADE = 1_000_000


@dataclass(frozen=True)
class BeirDocument:
    """One corpus entry of a BEIR dataset."""

    title: str
    text: str

    @property
    def full_text(self) -> str:
        """What the reranker reads, as BEIR builds it: ``title + " " + text``, stripped."""
        return f"{self.title} {self.text}".strip()


@dataclass(frozen=True)
class BeirDataset:
    """A corpus, its queries and the relevance judgments of one split (query id -> document id -> grade)."""

    corpus: dict[str, BeirDocument]
    queries: dict[str, str]
    qrels: dict[str, dict[str, int]]
    directory: Path
    split: str


def json_lines(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line of a JSON Lines file; ``DatasetError`` naming the line
    for a line that is not a JSON object (malformed, nested too deeply, an integer of thousands of digits), not
    UTF-8, or longer than ``MAX_LINE_CHARS``."""
    try:
        for number, line in text_lines(path):
            if not line.strip():
                continue
            item = parse_json(line, f"{path} line {number}", DatasetError)
            if not isinstance(item, dict):
                raise DatasetError(f"{path} line {number}: expected a JSON object, got {type(item).__name__}")
            yield number, item
    except FileProblem as exc:
        raise DatasetError(str(exc)) from None


def _string_field(item: dict[str, Any], name: str, where: str, *, required: bool) -> str:
    value = item.get(name)
    if value is None and not required:
        return ""
    if name == "_id" and isinstance(value, int) and not isinstance(value, bool):
        return str(value)  # some exports write numeric ids
    if not isinstance(value, str):
        problem = "is missing" if value is None else f"must be a string, got {type(value).__name__}"
        raise DatasetError(f"{where}: {name!r} {problem}")
    return value


def _require_file(path: Path) -> Path:
    if not path.is_file():
        raise DatasetError(f"{path} not found")
    return path


def load_corpus(path: Path) -> dict[str, BeirDocument]:
    """Read ``corpus.jsonl``: document id -> title and text (a missing title is empty)."""
    corpus: dict[str, BeirDocument] = {}
    for number, item in json_lines(_require_file(path)):
        where = f"{path} line {number}"
        doc_id = _string_field(item, "_id", where, required=True)
        if doc_id in corpus:
            raise DatasetError(f"{where}: duplicate document id {doc_id!r}")
        corpus[doc_id] = BeirDocument(
            _string_field(item, "title", where, required=False), _string_field(item, "text", where, required=True)
        )
    return corpus


def load_queries(path: Path) -> dict[str, str]:
    """Read ``queries.jsonl``: query id -> text."""
    queries: dict[str, str] = {}
    for number, item in json_lines(_require_file(path)):
        where = f"{path} line {number}"
        query_id = _string_field(item, "_id", where, required=True)
        if query_id in queries:
            raise DatasetError(f"{where}: duplicate query id {query_id!r}")
        queries[query_id] = _string_field(item, "text", where, required=True)
    return queries


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def load_qrels(path: Path) -> dict[str, dict[str, int]]:
    """Read ``qrels/<split>.tsv``: query id -> document id -> integer grade, in file order."""
    qrels: dict[str, dict[str, int]] = {}
    try:
        for number, line in text_lines(_require_file(path)):
            _add_judgment(qrels, path, number, line)
    except FileProblem as exc:
        raise DatasetError(str(exc)) from None
    return qrels


def _add_judgment(qrels: dict[str, dict[str, int]], path: Path, number: int, line: str) -> None:
    """Add line ``number`` of a qrels file to ``qrels`` (a blank line or the header adds nothing)."""
    if not line.strip():
        return
    fields = line.rstrip("\r\n").split("\t")
    if len(fields) != 3:
        raise DatasetError(
            f"{path} line {number}: expected 3 tab-separated fields (query-id, corpus-id, score), got {len(fields)}"
        )
    query_id, doc_id, grade = (field.strip() for field in fields)
    try:
        value = int(grade)
    except ValueError:
        if number == 1 and not _is_number(grade):  # the header line, "query-id  corpus-id  score"
            return
        raise DatasetError(f"{path} line {number}: score {grade[:40]!r} is not an integer") from None
    if abs(value) > MAX_GRADE:
        raise DatasetError(f"{path} line {number}: score {grade[:40]} is outside -{MAX_GRADE:,}..{MAX_GRADE:,}")
    judged = qrels.setdefault(query_id, {})
    if doc_id in judged:
        raise DatasetError(f"{path} line {number}: query {query_id!r} judges document {doc_id!r} twice")
    judged[doc_id] = value


def load_beir(directory: str | os.PathLike[str], split: str = "test") -> BeirDataset:
    """Load a BEIR-layout dataset folder and the judgments of ``split``."""
    root = Path(directory).expanduser()
    if not root.is_dir():
        raise DatasetError(f"dataset folder {root} not found")
    qrels_path = root / "qrels" / f"{split}.tsv"
    if not qrels_path.is_file():
        available = sorted(p.stem for p in (root / "qrels").glob("*.tsv"))
        raise DatasetError(f"{qrels_path} not found (splits in {root / 'qrels'}: {', '.join(available) or 'none'})")
    return BeirDataset(
        corpus=load_corpus(root / "corpus.jsonl"),
        queries=load_queries(root / "queries.jsonl"),
        qrels=load_qrels(qrels_path),
        directory=root,
        split=split,
    )
