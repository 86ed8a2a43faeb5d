"""``Reranker``: the scoring API every adapter, the CLI and the server call."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from typing import Any, Sequence

import torch

from .checkpoint import default_model
from .engine import ScoringEngine, get_engine, release_engine
from .tokenization import SPECIAL_TOKENS_PER_PAIR

logger = logging.getLogger(__name__)

DEFAULT_MAX_BATCH_TOKENS = 16384
DEFAULT_MAX_QUERY_LENGTH = 512
LONG_DOCUMENT_MODES = ("truncate", "chunk")
CHUNK_AGGREGATIONS = ("max", "mean_top2")


@dataclass(frozen=True)
class ScoreResult:
    """Scores of one call, in the input order of the documents.

    ``scores`` are sigmoid probabilities in 0..1, or raw logits when the call asked for ``raw``; ``logits`` are
    always the raw logits (rank by them: sigmoid saturates). ``truncated[i]`` tells whether document ``i`` was cut
    to fit the window, ``windows[i]`` how many windows it was scored as (1 unless chunked); ``num_tokens`` counts
    the tokens of every sequence scored, ``token_counts[i]`` those of document ``i``'s sequences (special tokens
    included), so a result merged from several requests can be split back per request.
    """

    scores: list[float]
    logits: list[float]
    truncated: list[bool]
    windows: list[int]
    num_tokens: int
    token_counts: list[int]

    @property
    def num_chunked(self) -> int:
        """How many documents were scored as more than one window."""
        return sum(1 for count in self.windows if count > 1)

    @property
    def num_truncated(self) -> int:
        """How many documents were cut to fit the window."""
        return sum(self.truncated)


def check_query(query: Any, name: str = "query") -> str:
    """Return ``query`` if it is a string, else raise ``TypeError`` naming ``name``."""
    if not isinstance(query, str):
        raise TypeError(f"{name} must be a string, got {type(query).__name__}")
    return query


def _check_documents(documents: Any) -> list[str]:
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"documents must be a list of strings, got {type(documents).__name__}")
    for index, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise TypeError(f"documents[{index}] must be a string, got {type(doc).__name__}")
    return list(documents)


def check_top(value: Any, name: str) -> int | None:
    """Return a ``top_k``/``top_n`` value (None or an int >= 1), else raise naming ``name``."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer or None, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an integer >= 1, else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def best_first(scores: Sequence[float]) -> list[int]:
    """Indices of ``scores`` from best to worst; ties keep input order."""
    return sorted(range(len(scores)), key=lambda i: -scores[i])


def jina_results(
    result: ScoreResult, documents: Sequence[str], *, top_n: int | None, return_documents: bool
) -> list[dict[str, Any]]:
    """Shape ``result`` like the Jina Reranker API's ``results``: best first, at most ``top_n``."""
    ranked = []
    for index in best_first(result.logits)[:top_n]:
        entry: dict[str, Any] = {"index": index, "relevance_score": result.scores[index]}
        if return_documents:
            entry["document"] = {"text": documents[index]}
        ranked.append(entry)
    return ranked


class Reranker:
    """A local Jina reranker v1 (tiny, turbo or any JinaBERT cross-encoder checkpoint).

    ``model`` is a Hugging Face Hub id or a local directory (default: ``$JINA_LOCAL_RERANK_MODEL``, else
    ``jinaai/jina-reranker-v1-tiny-en``). The weights are loaded once per
    (model, revision, device, dtype) in the process and shared by every ``Reranker`` with the same key, so
    creating more of them is cheap; their own settings (lengths, batch budget) may differ.

    Lengths are in tokens: ``max_length`` is the pair window (default: the model's 8192), ``max_query_length``
    caps the query (default ``min(512, max_length // 2)``), ``max_batch_tokens`` bounds the padded tokens of one
    forward pass (memory). Documents longer than what is left of the window are truncated (the count is logged
    and reported on [`ScoreResult`][jina_local_rerank.ScoreResult]), or with ``long_document="chunk"`` scored
    as overlapping windows ``chunk_stride`` tokens apart (default: half a window) whose logits are combined by
    ``chunk_aggregation`` (``"max"`` or ``"mean_top2"``, the mean of the best two).
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | None = None,
        *,
        revision: str | None = None,
        device: str | torch.device | None = "auto",
        dtype: str | torch.dtype | None = "auto",
        max_length: int | None = None,
        max_query_length: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
        long_document: str = "truncate",
        chunk_stride: int | None = None,
        chunk_aggregation: str = "max",
        cache_dir: str | os.PathLike[str] | None = None,
        token: str | bool | None = None,
    ) -> None:
        if max_length is not None:
            check_positive_int(max_length, "max_length")
        if max_query_length is not None:
            check_positive_int(max_query_length, "max_query_length")
        check_positive_int(max_batch_tokens, "max_batch_tokens")
        if long_document not in LONG_DOCUMENT_MODES:
            raise ValueError(f"long_document must be one of {LONG_DOCUMENT_MODES}, got {long_document!r}")
        if chunk_aggregation not in CHUNK_AGGREGATIONS:
            raise ValueError(f"chunk_aggregation must be one of {CHUNK_AGGREGATIONS}, got {chunk_aggregation!r}")
        if chunk_stride is not None:
            check_positive_int(chunk_stride, "chunk_stride")
        self.long_document = long_document
        self.chunk_stride = chunk_stride
        self.chunk_aggregation = chunk_aggregation
        model = default_model() if model is None else model
        self.engine: ScoringEngine = get_engine(
            model, revision=revision, device=device, dtype=dtype, cache_dir=cache_dir, token=token
        )
        self.model_name = os.fspath(model)
        window = self.engine.max_length
        if max_length is not None and max_length > window:
            raise ValueError(f"max_length {max_length} exceeds the model's window of {window} tokens")
        self.max_length = max_length or window
        self.max_query_length = max_query_length or min(DEFAULT_MAX_QUERY_LENGTH, self.max_length // 2)
        if self.max_query_length > self.max_length - SPECIAL_TOKENS_PER_PAIR - 1:
            raise ValueError(
                f"max_query_length {self.max_query_length} leaves no room for the document within "
                f"max_length {self.max_length}"
            )
        if max_batch_tokens < self.max_length:
            raise ValueError(
                f"max_batch_tokens {max_batch_tokens} is smaller than one pair of max_length {self.max_length} "
                "tokens; raise max_batch_tokens or lower max_length"
            )
        self.max_batch_tokens = max_batch_tokens

    @property
    def device(self) -> torch.device:
        """The device the shared weights are on."""
        return self.engine.device

    @property
    def dtype(self) -> torch.dtype:
        """The dtype of the shared weights."""
        return self.engine.dtype

    def __repr__(self) -> str:
        return (
            f"Reranker(model={self.model_name!r}, device='{self.device}', dtype={self.dtype}, "
            f"max_length={self.max_length})"
        )

    def release(self) -> None:
        """Drop the shared weights from the process cache; they are freed once no object holds them."""
        release_engine(self.engine)

    def score(
        self, query: str, documents: Sequence[str], *, raw: bool = False, show_progress: bool = False
    ) -> ScoreResult:
        """Score every document against ``query``; results in input order (sigmoid, or logits if ``raw``)."""
        query = check_query(query)
        documents = _check_documents(documents)
        return self._score([query], [(0, doc) for doc in documents], raw=raw, show_progress=show_progress)

    def score_pairs(
        self, pairs: Sequence[Sequence[str]], *, raw: bool = False, show_progress: bool = False
    ) -> ScoreResult:
        """Score (query, document) pairs whose queries may differ; results in input order."""
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise TypeError(f"pairs must be a list of [query, document] pairs, got {type(pairs).__name__}")
        queries: dict[str, int] = {}
        indexed: list[tuple[int, str]] = []
        for index, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise TypeError(f"pairs[{index}] must be a [query, document] pair of two strings")
            query = check_query(pair[0], f"pairs[{index}][0]")
            doc = check_query(pair[1], f"pairs[{index}][1]")
            indexed.append((queries.setdefault(query, len(queries)), doc))
        return self._score(list(queries), indexed, raw=raw, show_progress=show_progress)

    def compute_score(self, pairs: Sequence[Sequence[str]], *, raw: bool = False) -> list[float] | float:
        """The original remote code's method: ``[[query, doc], ...]`` -> scores; a single ``[query, doc]`` -> one."""
        if isinstance(pairs, Sequence) and len(pairs) == 2 and all(isinstance(p, str) for p in pairs):
            return self.score_pairs([pairs], raw=raw).scores[0]
        return self.score_pairs(pairs, raw=raw).scores

    def rank(
        self,
        query: str,
        documents: Sequence[str],
        top_k: int | None = None,
        return_documents: bool = False,
        *,
        raw: bool = False,
    ) -> list[dict[str, Any]]:
        """sentence-transformers ``CrossEncoder.rank`` output: ``[{"corpus_id", "score", "text"?}]``, best first."""
        top_k = check_top(top_k, "top_k")
        result = self.score(query, documents, raw=raw)
        ranked = []
        for index in best_first(result.logits)[:top_k]:
            entry: dict[str, Any] = {"corpus_id": index, "score": result.scores[index]}
            if return_documents:
                entry["text"] = documents[index]
            ranked.append(entry)
        return ranked

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = True,
        *,
        raw: bool = False,
    ) -> list[dict[str, Any]]:
        """Jina Reranker API results: ``[{"index", "relevance_score", "document": {"text"}?}]``, best first."""
        top_n = check_top(top_n, "top_n")
        result = self.score(query, documents, raw=raw)
        return jina_results(result, documents, top_n=top_n, return_documents=return_documents)

    def _score(
        self, queries: list[str], pairs: list[tuple[int, str]], *, raw: bool, show_progress: bool
    ) -> ScoreResult:
        if not pairs:
            return ScoreResult([], [], [], [], 0, [])
        encoded = self.engine.tokenizer.encode_pairs(
            queries,
            pairs,
            max_length=self.max_length,
            max_query_length=self.max_query_length,
            long_document=self.long_document,
            chunk_stride=self.chunk_stride,
        )
        if any(encoded.query_truncated):
            logger.warning("query truncated to max_query_length=%d tokens", self.max_query_length)
        truncated = sum(encoded.document_truncated)
        if truncated:
            logger.warning(
                "%d of %d documents truncated to fit max_length=%d tokens", truncated, len(pairs), self.max_length
            )
        sequence_logits = self.engine.logits(encoded.input_ids, self.max_batch_tokens, show_progress)
        logits = self._combine_windows(sequence_logits, encoded.owner, len(pairs))
        scores = logits if raw else torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).tolist()
        token_counts = [0] * len(pairs)
        for pair_index, ids in zip(encoded.owner, encoded.input_ids):
            token_counts[pair_index] += len(ids)
        return ScoreResult(
            scores, logits, encoded.document_truncated, encoded.windows, sum(token_counts), token_counts
        )

    def _combine_windows(self, sequence_logits: list[float], owner: list[int], num_pairs: int) -> list[float]:
        """One logit per pair: its only window's, or the windows' max / mean of the best two."""
        if len(sequence_logits) == num_pairs:
            return sequence_logits
        per_pair: list[list[float]] = [[] for _ in range(num_pairs)]
        for pair_index, logit in zip(owner, sequence_logits):
            per_pair[pair_index].append(logit)
        if self.chunk_aggregation == "max":
            return [max(values) for values in per_pair]
        return [sum(best := sorted(values, reverse=True)[:2]) / len(best) for values in per_pair]
