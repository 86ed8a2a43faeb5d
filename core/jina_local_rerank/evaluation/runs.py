"""First-stage rankings: read from a TREC run file, or computed with BM25 (the ``bm25s`` package)."""

from __future__ import annotations

import os
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from ..errors import DatasetError, FileProblem
from ..files.user_files import text_lines
from ..install_hints import extra_imports
from ..progress import Progress, progress_bar
from .beir import BeirDataset


@dataclass(frozen=True)
class FirstStage:
    """Candidate document ids per query, best first; ``seconds`` is the wall time spent producing them."""

    name: str
    rankings: dict[str, list[str]]
    seconds: float


def read_trec_run(path: str | os.PathLike[str]) -> dict[str, list[str]]:
    """Read a TREC run file (``query-id Q0 doc-id rank score tag`` per line): query id -> doc ids, best first.

    Documents are ordered by score, highest first, ties in file order (the rank column is not used, as in
    trec_eval). A document listed twice for one query is an error.
    """
    path = Path(path)
    if path.is_dir():
        raise DatasetError(f"run file {path} is a directory, not a file")
    if not path.exists():
        raise DatasetError(f"run file {path} does not exist")
    try:
        return _rankings(path, text_lines(path, "run file"))
    except FileProblem as exc:
        raise DatasetError(str(exc)) from None


def _rankings(path: Path, lines: Iterator[tuple[int, str]]) -> dict[str, list[str]]:
    scored: dict[str, dict[str, float]] = {}
    for number, line in lines:
        fields = line.split()
        if not fields:
            continue
        if len(fields) != 6:
            raise DatasetError(
                f"{path} line {number}: expected 6 fields (query-id Q0 doc-id rank score tag), got {len(fields)}"
            )
        query_id, _, doc_id, _, score, _ = fields
        try:
            value = float(score)
        except ValueError:
            raise DatasetError(f"{path} line {number}: score {score!r} is not a number") from None
        documents = scored.setdefault(query_id, {})
        if doc_id in documents:
            raise DatasetError(f"{path} line {number}: document {doc_id!r} listed twice for query {query_id!r}")
        documents[doc_id] = value
    return {
        query_id: sorted(documents, key=lambda doc: -documents[doc])  # stable: ties keep file order
        for query_id, documents in scored.items()
    }


def run_file_first_stage(path: str | os.PathLike[str]) -> FirstStage:
    """The rankings of a TREC run file, timed."""
    start = time.perf_counter()
    rankings = read_trec_run(path)
    return FirstStage(f"run:{os.fspath(path)}", rankings, time.perf_counter() - start)


TOKENIZE_CHUNK = 2048  # documents tokenized between progress updates


class BM25Index:
    """BM25 over ``texts`` (bm25s defaults: Lucene variant, k1=1.5, b=0.75, English stopwords, no stemming).

    The one home of the project's BM25 settings: the ``eval`` first stage and the training data's hard-negative
    mining both score with it. Indexing shows the project's progress bar (``show_progress``), never bm25s's own.
    """

    def __init__(self, texts: Sequence[str], *, show_progress: Progress = False) -> None:
        with extra_imports("BM25 (the eval first stage and hard-negative mining)", "eval"):
            import bm25s
        self._bm25s = bm25s
        self.size = len(texts)
        self._retriever = bm25s.BM25()
        corpus_tokens: list[list[str]] = []
        with progress_bar("BM25 index", "document", show_progress, total=len(texts)) as progress:
            for start in range(0, len(texts), TOKENIZE_CHUNK):
                chunk = list(texts[start : start + TOKENIZE_CHUNK])
                corpus_tokens += self._tokenize(chunk)
                progress.update(len(chunk))
        self._indexed = any(corpus_tokens)  # a corpus of stopwords alone has no terms
        if self._indexed:
            self._retriever.index(corpus_tokens, show_progress=False)

    def _tokenize(self, texts: list[str]) -> list[list[str]]:
        return self._bm25s.tokenize(texts, stopwords="en", return_ids=False, show_progress=False)

    def scores(self, queries: Sequence[str]) -> Iterator[np.ndarray]:
        """Each query's score for every text (``[len(texts)]``, 0 where no term is shared), in query order."""
        query_tokens = self._tokenize(list(queries))
        for tokens in query_tokens:
            if not tokens or not self._indexed:  # only stopwords: nothing to match (bm25s cannot score an empty query)
                yield np.zeros(self.size, dtype=np.float32)
            else:
                yield self._retriever.get_scores(tokens)


def bm25_first_stage(
    dataset: BeirDataset, query_ids: Sequence[str], top_k: int, *, show_progress: Progress = False
) -> FirstStage:
    """BM25 (see :class:`BM25Index`) over the corpus.

    Each query gets at most ``top_k`` documents sharing a term with it, by score, ties in corpus order; the
    time covers indexing the corpus and retrieving for ``query_ids``.
    """
    start = time.perf_counter()
    doc_ids = list(dataset.corpus)
    index = BM25Index([document.full_text for document in dataset.corpus.values()], show_progress=show_progress)
    rankings: dict[str, list[str]] = {}
    with progress_bar("BM25 retrieval", "query", show_progress, total=len(query_ids)) as progress:
        for query_id, scores in zip(query_ids, index.scores([dataset.queries[q] for q in query_ids])):
            matched = np.flatnonzero(scores > 0)
            best = matched[np.lexsort((matched, -scores[matched]))][:top_k]
            rankings[query_id] = [doc_ids[i] for i in best]
            progress.update(1)
    return FirstStage("bm25", rankings, time.perf_counter() - start)
