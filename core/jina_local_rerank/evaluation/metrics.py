"""Ranking metrics of one query: NDCG@k, MRR@k, Recall@k and hit rate@k.

A ranking is a list of document ids, best first, without duplicates; ``qrels`` maps document ids to graded
relevance (integers; a grade of 0 or less, or a document absent from ``qrels``, is not relevant). The
definitions are trec_eval's (``ndcg_cut``, ``recip_rank``, ``recall``): a query with no relevant document scores
0 on every metric.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

NDCG_AT = 10
MRR_AT = 10


def _check_ranking(ranking: Sequence[str], k: int) -> None:
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ValueError(f"the cutoff k must be an integer >= 1, got {k!r}")
    seen: set[str] = set()
    for doc in ranking:
        if doc in seen:
            raise ValueError(f"ranking lists document {doc!r} more than once")
        seen.add(doc)


def _gain(qrels: Mapping[str, int], doc_id: str) -> int:
    return max(qrels.get(doc_id, 0), 0)


def ndcg_at(ranking: Sequence[str], qrels: Mapping[str, int], k: int = NDCG_AT) -> float:
    """Normalized DCG of the first ``k`` documents: gain = grade, discount = log2(rank + 1), ideal from ``qrels``."""
    _check_ranking(ranking, k)
    dcg = sum(_gain(qrels, doc) / math.log2(rank + 1) for rank, doc in enumerate(ranking[:k], start=1))
    ideal_grades = sorted((grade for grade in qrels.values() if grade > 0), reverse=True)[:k]
    ideal = sum(grade / math.log2(rank + 1) for rank, grade in enumerate(ideal_grades, start=1))
    return dcg / ideal if ideal > 0 else 0.0


def mrr_at(ranking: Sequence[str], qrels: Mapping[str, int], k: int = MRR_AT) -> float:
    """Reciprocal rank of the first relevant document among the first ``k``; 0 if there is none."""
    _check_ranking(ranking, k)
    for rank, doc in enumerate(ranking[:k], start=1):
        if _gain(qrels, doc) > 0:
            return 1.0 / rank
    return 0.0


def recall_at(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """Fraction of the relevant documents found among the first ``k``; 0 if the query has none."""
    _check_ranking(ranking, k)
    relevant = sum(1 for grade in qrels.values() if grade > 0)
    if relevant == 0:
        return 0.0
    return sum(1 for doc in ranking[:k] if _gain(qrels, doc) > 0) / relevant


def hit_rate_at(ranking: Sequence[str], qrels: Mapping[str, int], k: int) -> float:
    """1.0 if a relevant document is among the first ``k``, else 0.0."""
    _check_ranking(ranking, k)
    return 1.0 if any(_gain(qrels, doc) > 0 for doc in ranking[:k]) else 0.0


def query_metrics(ranking: Sequence[str], qrels: Mapping[str, int], cutoffs: Sequence[int]) -> dict[str, float]:
    """``ndcg@10``, ``mrr@10`` and ``recall@k`` / ``hit_rate@k`` for each ``k`` in ``cutoffs``."""
    metrics = {f"ndcg@{NDCG_AT}": ndcg_at(ranking, qrels), f"mrr@{MRR_AT}": mrr_at(ranking, qrels)}
    for k in cutoffs:
        metrics[f"recall@{k}"] = recall_at(ranking, qrels, k)
    for k in cutoffs:
        metrics[f"hit_rate@{k}"] = hit_rate_at(ranking, qrels, k)
    return metrics


def mean_metrics(per_query: Sequence[Mapping[str, float]]) -> dict[str, float]:
    """The mean of each metric over queries (every mapping has the same names); empty -> {}."""
    if not per_query:
        return {}
    return {name: sum(metrics[name] for metrics in per_query) / len(per_query) for name in per_query[0]}


def _average_ranks(values: Sequence[float]) -> list[float]:
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for position in range(start, end + 1):  # ties share the mean of their ranks
            ranks[order[position]] = (start + end) / 2
        start = end + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman rank correlation of two score lists over the same items (ties get their mean rank), -1..1.

    0 when either list has fewer than two distinct values (no ranking to agree with).
    """
    if len(a) != len(b):
        raise ValueError(f"spearman needs two lists of the same length, got {len(a)} and {len(b)}")
    ra, rb = _average_ranks(a), _average_ranks(b)
    mean_a, mean_b = sum(ra) / len(ra) if ra else 0.0, sum(rb) / len(rb) if rb else 0.0
    covariance = sum((x - mean_a) * (y - mean_b) for x, y in zip(ra, rb))
    spread = math.sqrt(sum((x - mean_a) ** 2 for x in ra) * sum((y - mean_b) ** 2 for y in rb))
    return covariance / spread if spread > 0 else 0.0
