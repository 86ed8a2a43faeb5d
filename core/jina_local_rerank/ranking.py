"""Ranking scored documents: best first, cut to ``top_n``, filtered by a score threshold.

The one ranking rule of the project: the scoring API, the server's response shapes and every framework adapter
call :func:`ranked_indices`, then wrap the chosen indices in their own result objects.
"""

from __future__ import annotations

from collections.abc import Sequence

from .validation import check_optional_positive_int, check_threshold


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
