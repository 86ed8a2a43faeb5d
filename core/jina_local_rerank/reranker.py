"""``Reranker``: the scoring API every adapter, the CLI and the server call."""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import torch

from .engine.scoring_engine import ScoringEngine, get_engine, release_engine
from .engine.tokenization import EncodedPairs
from .options import RerankerOptions, pair_lengths
from .progress import Progress
from .ranking import cross_encoder_results, jina_results
from .validation import check_documents, check_text

logger = logging.getLogger(__name__)


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


class Reranker:
    """A local Jina reranker v1 (tiny, turbo or any JinaBERT cross-encoder checkpoint).

    ``Reranker(model, **options)`` takes the :class:`~jina_local_rerank.options.RerankerOptions` by keyword (or
    one ``RerankerOptions`` object): ``model`` is a Hub id or a local directory (default:
    ``$JINA_LOCAL_RERANK_MODEL``, else ``jinaai/jina-reranker-v1-tiny-en``); ``revision``, ``device``, ``dtype``,
    ``cache_dir`` and ``token`` say where it comes from and runs. The weights are loaded once per
    (model, revision, device, dtype) in the process and shared by every ``Reranker`` with the same key, so
    creating more of them is cheap; their own settings (lengths, batch budget) may differ.

    Lengths are in tokens: ``max_length`` is the pair window (default: the model's 8192), ``max_query_length``
    caps the query (default ``min(512, max_length // 2)``), ``max_batch_tokens`` bounds the padded tokens of one
    forward pass (memory). Documents longer than what is left of the window are truncated (the count is logged
    and reported on [`ScoreResult`][jina_local_rerank.ScoreResult]), or with ``long_document="chunk"`` scored
    as overlapping windows ``chunk_stride`` tokens apart (default: half a window) whose logits are combined by
    ``chunk_aggregation`` (``"max"`` or ``"mean_top2"``, the mean of the best two). ``query_prefix``,
    ``query_suffix``, ``document_prefix`` and ``document_suffix`` are put around every query and document before
    they are tokenized (instructions some models want), and ``max_batch_size`` caps the sequences of a pass.
    """

    def __init__(self, model: str | os.PathLike[str] | RerankerOptions | None = None, **options: Any) -> None:
        if isinstance(model, RerankerOptions):
            if options:
                raise TypeError("pass a RerankerOptions or keyword options, not both")
            self.options = model
        else:
            self.options = RerankerOptions.from_dict({"model": model, **options})
        opts = self.options
        self.long_document = opts.long_document
        self.chunk_stride = opts.chunk_stride
        self.chunk_aggregation = opts.chunk_aggregation
        self.model_name = opts.with_default_model().model
        self.engine: ScoringEngine = get_engine(
            self.model_name,
            revision=opts.revision,
            device=opts.device,
            dtype=opts.dtype,
            cache_dir=opts.cache_dir,
            token=opts.token,
        )
        self.max_length, self.max_query_length = pair_lengths(opts, self.engine.max_length)
        if opts.max_batch_tokens < self.max_length:
            raise ValueError(
                f"max_batch_tokens {opts.max_batch_tokens} is smaller than one pair of max_length {self.max_length} "
                "tokens; raise max_batch_tokens or lower max_length"
            )
        self.max_batch_tokens = opts.max_batch_tokens
        self.max_batch_size = opts.max_batch_size

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

    def warm_up(self) -> None:
        """Pay first-use costs now: on CUDA with FlexAttention, compile the kernels of every batch size up to
        ``max_batch_tokens`` (seconds), so the first request is as fast as later ones; elsewhere one short pass."""
        self.engine.warm_up(self.max_batch_tokens)

    def release(self) -> None:
        """Drop the shared weights from the process cache; they are freed once no object holds them."""
        from .reranker_registry import forget_engine  # the registry builds Rerankers: it imports this module

        release_engine(self.engine)
        forget_engine(self.engine)

    def score(
        self, query: str, documents: Sequence[str], *, raw: bool = False, show_progress: Progress = False
    ) -> ScoreResult:
        """Score every document against ``query``; results in input order (sigmoid, or logits if ``raw``).

        ``show_progress``: True (or ``"auto"``) shows a progress bar on stderr once scoring has run a few seconds,
        ``"always"`` from the start (the same in :meth:`score_pairs`, :meth:`rank` and :meth:`rerank`).
        """
        query = check_text(query, "query")
        documents = check_documents(documents)
        return self._score([query], [(0, doc) for doc in documents], raw=raw, show_progress=show_progress)

    def score_pairs(
        self, pairs: Sequence[Sequence[str]], *, raw: bool = False, show_progress: Progress = False
    ) -> ScoreResult:
        """Score (query, document) pairs whose queries may differ; results in input order."""
        if isinstance(pairs, (str, bytes)) or not isinstance(pairs, Sequence):
            raise TypeError(f"pairs must be a list of [query, document] pairs, got {type(pairs).__name__}")
        queries: dict[str, int] = {}
        indexed: list[tuple[int, str]] = []
        for index, pair in enumerate(pairs):
            if isinstance(pair, (str, bytes)) or not isinstance(pair, Sequence) or len(pair) != 2:
                raise TypeError(f"pairs[{index}] must be a [query, document] pair of two strings")
            query = check_text(pair[0], f"pairs[{index}][0]")
            doc = check_text(pair[1], f"pairs[{index}][1]")
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
        show_progress: Progress = False,
    ) -> list[dict[str, Any]]:
        """sentence-transformers ``CrossEncoder.rank`` output: ``[{"corpus_id", "score", "text"?}]``, best first."""
        result = self.score(query, documents, raw=raw, show_progress=show_progress)
        return cross_encoder_results(result, documents, top_k=top_k, return_documents=return_documents)

    def rerank(
        self,
        query: str,
        documents: Sequence[str],
        top_n: int | None = None,
        return_documents: bool = True,
        *,
        raw: bool = False,
        show_progress: Progress = False,
    ) -> list[dict[str, Any]]:
        """Jina Reranker API results: ``[{"index", "relevance_score", "document": {"text"}?}]``, best first."""
        result = self.score(query, documents, raw=raw, show_progress=show_progress)
        return jina_results(result, documents, top_n=top_n, return_documents=return_documents)

    def _score(
        self, queries: list[str], pairs: list[tuple[int, str]], *, raw: bool, show_progress: bool
    ) -> ScoreResult:
        if not pairs:
            return ScoreResult([], [], [], [], 0, [])
        encoded = self._encode(queries, pairs)
        if any(encoded.query_truncated):
            logger.warning("query truncated to max_query_length=%d tokens", self.max_query_length)
        truncated = sum(encoded.document_truncated)
        if truncated:
            logger.warning(
                "%d of %d documents truncated to fit max_length=%d tokens", truncated, len(pairs), self.max_length
            )
        sequence_logits = self.engine.logits(
            encoded.input_ids, self.max_batch_tokens, show_progress, max_batch_size=self.max_batch_size
        )
        return self.result_from_logits(encoded, sequence_logits, raw=raw)

    def _encode(self, queries: list[str], pairs: list[tuple[int, str]], **cuts: Any) -> EncodedPairs:
        opts = self.options
        if opts.query_prefix or opts.query_suffix:
            queries = [opts.query_prefix + query + opts.query_suffix for query in queries]
        if opts.document_prefix or opts.document_suffix:
            pairs = [(index, opts.document_prefix + doc + opts.document_suffix) for index, doc in pairs]
        return self.engine.tokenizer.encode_pairs(
            queries,
            pairs,
            max_length=self.max_length,
            max_query_length=self.max_query_length,
            long_document=self.long_document,
            chunk_stride=self.chunk_stride,
            **cuts,
        )

    # Pre-encoded scoring, for servers: tokenize a request once with ``encode``, check limits on the encoding
    # (token budgets, truncation), score its sequences with ``engine.logits`` (possibly merged with other
    # requests' sequences), then build its result with ``result_from_logits``. ``score`` is these three steps.

    def encode(
        self,
        query: str,
        documents: Sequence[str],
        *,
        truncation_side: str = "right",
        max_document_length: int | None = None,
    ) -> EncodedPairs:
        """The token sequences ``score(query, documents)`` scores, special tokens included.

        ``truncation_side="left"`` keeps the end of a document that does not fit; ``max_document_length`` cuts
        every document to that many tokens first (both count as truncation).
        """
        query = check_text(query, "query")
        documents = check_documents(documents)
        return self._encode(
            [query],
            [(0, doc) for doc in documents],
            truncation_side=truncation_side,
            max_document_length=max_document_length,
        )

    def result_from_logits(
        self, encoded: EncodedPairs, sequence_logits: Sequence[float], *, raw: bool = False
    ) -> ScoreResult:
        """The ``ScoreResult`` of ``encoded`` given the raw logit of each of its sequences, in order."""
        num_pairs = len(encoded.windows)
        logits = self._combine_windows(list(sequence_logits), encoded.pair_of_sequence, num_pairs)
        scores = logits if raw else torch.sigmoid(torch.tensor(logits, dtype=torch.float32)).tolist()
        token_counts = [0] * num_pairs
        for pair_index, ids in zip(encoded.pair_of_sequence, encoded.input_ids):
            token_counts[pair_index] += len(ids)
        return ScoreResult(
            scores, logits, list(encoded.document_truncated), list(encoded.windows), sum(token_counts), token_counts
        )

    def _combine_windows(
        self, sequence_logits: list[float], pair_of_sequence: list[int], num_pairs: int
    ) -> list[float]:
        """One logit per pair: its only window's, or the windows' max / mean of the best two."""
        if len(sequence_logits) == num_pairs:
            return sequence_logits
        per_pair: list[list[float]] = [[] for _ in range(num_pairs)]
        for pair_index, logit in zip(pair_of_sequence, sequence_logits):
            per_pair[pair_index].append(logit)
        if self.chunk_aggregation == "max":
            return [max(values) for values in per_pair]
        return [sum(best := sorted(values, reverse=True)[:2]) / len(best) for values in per_pair]
