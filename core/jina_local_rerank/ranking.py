"""Ranking scored documents: best first, cut to ``top_n``, filtered by a score threshold; and the result shapes.

The one ranking rule of the project: the scoring API, the server's response shapes and every framework adapter
call :func:`ranked_indices`, then wrap the chosen indices in their own result objects. The two shapes the scoring
API returns live here too: the Jina Reranker API's ``results`` (:func:`jina_results`, also the server's and the
``rerank`` command's) and sentence-transformers' ``CrossEncoder.rank`` output (:func:`cross_encoder_results`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from .validation import check_optional_positive_int, check_threshold

if TYPE_CHECKING:
    from .reranker import ScoreResult


def best_first(logits: Sequence[float]) -> list[int]:
    """Indices of ``logits`` from best to worst; ties keep input order."""
    return sorted(range(len(logits)), key=lambda i: -logits[i])


def ranked_indices(
    logits: Sequence[float],
    scores: Sequence[float] | None = None,
    *,
    top_n: int | None = None,
    score_threshold: float | None = None,
    top_name: str = "top_n",
) -> list[int]:
    """Document indices best first by logit (sigmoid saturates, logits do not), ties in input order.

    Those whose score (``scores[i]``, the value reported to the caller: a probability or a logit; default the
    logits) is below ``score_threshold`` are dropped, and at most ``top_n`` are kept. ``top_name`` names the
    cut-off in errors (``top_k`` for some frameworks).
    """
    top_n = check_optional_positive_int(top_n, top_name)
    score_threshold = check_threshold(score_threshold)
    reported = logits if scores is None else scores
    order = best_first(logits)
    if score_threshold is not None:
        # Scores are monotone in logits, so the kept documents are a prefix of the order.
        order = [index for index in order if reported[index] >= score_threshold]
    return order[:top_n]


def jina_results(
    result: ScoreResult, documents: Sequence[str], *, top_n: int | None, return_documents: bool
) -> list[dict[str, Any]]:
    """Shape ``result`` like the Jina Reranker API's ``results``: best first, at most ``top_n``;
    ``[{"index", "relevance_score", "document": {"text"}?}]``."""
    ranked = []
    for index in ranked_indices(result.logits, top_n=top_n):
        entry: dict[str, Any] = {"index": index, "relevance_score": result.scores[index]}
        if return_documents:
            entry["document"] = {"text": documents[index]}
        ranked.append(entry)
    return ranked


def cross_encoder_results(
    result: ScoreResult, documents: Sequence[str], *, top_k: int | None, return_documents: bool
) -> list[dict[str, Any]]:
    """Shape ``result`` like sentence-transformers' ``CrossEncoder.rank``: best first, at most ``top_k``;
    ``[{"corpus_id", "score", "text"?}]``."""
    ranked = []
    for index in ranked_indices(result.logits, top_n=top_k, top_name="top_k"):
        entry: dict[str, Any] = {"corpus_id": index, "score": result.scores[index]}
        if return_documents:
            entry["text"] = documents[index]
        ranked.append(entry)
    return ranked
