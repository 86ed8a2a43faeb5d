"""How closely one set of logits ranks like another (int8 against fp32): rank correlation and top-k overlap per
query."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .metrics import spearman


@dataclass(frozen=True)
class RankingAgreement:
    """Agreement of candidate logits with reference logits over ``queries`` rankings of 3+ documents each.

    ``mean_spearman``/``min_spearman``: Spearman's rank correlation per query; ``top1``: the share of queries whose
    best document is the same; ``top3``: the mean share of the reference's best three among the candidate's best
    three; ``max_logit_change``: the largest absolute logit difference, next to ``logit_spread``, the largest
    reference range (max - min) of one query's logits.
    """

    queries: int
    documents: int
    mean_spearman: float
    min_spearman: float
    top1: float
    top3: float
    max_logit_change: float
    logit_spread: float


def _best(values: Sequence[float], k: int) -> set[int]:
    return set(sorted(range(len(values)), key=lambda i: -values[i])[:k])


def ranking_agreement(reference: Sequence[Sequence[float]], candidate: Sequence[Sequence[float]]) -> RankingAgreement:
    """Compare per-query logit lists (``reference[q][d]`` against ``candidate[q][d]``); queries with fewer than 3
    documents are left out."""
    if len(reference) != len(candidate):
        raise ValueError(f"{len(reference)} reference queries but {len(candidate)} candidate queries")
    pairs = [(a, b) for a, b in zip(reference, candidate) if len(a) >= 3]
    if not pairs:
        raise ValueError("ranking agreement needs at least one query with 3 or more documents")
    correlations = [spearman(a, b) for a, b in pairs]
    return RankingAgreement(
        queries=len(pairs),
        documents=sum(len(a) for a, _ in pairs),
        mean_spearman=sum(correlations) / len(correlations),
        min_spearman=min(correlations),
        top1=sum(_best(a, 1) == _best(b, 1) for a, b in pairs) / len(pairs),
        top3=sum(len(_best(a, 3) & _best(b, 3)) / 3 for a, b in pairs) / len(pairs),
        max_logit_change=max(abs(x - y) for a, b in pairs for x, y in zip(a, b)),
        logit_spread=max(max(a) - min(a) for a, _ in pairs),
    )
