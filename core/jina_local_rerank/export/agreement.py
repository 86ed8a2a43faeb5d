"""How closely one set of logits ranks like another (int8 against fp32): rank correlation and top-k overlap per query."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass

from .layout import MODEL_FILE, QUANTIZED_MODEL_FILE
from .runtime import OnnxReranker


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


def _ranks(values: Sequence[float]) -> list[float]:
    """Rank of each value from 0 (smallest); tied values share their mean rank."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        stop = start
        while stop + 1 < len(order) and values[order[stop + 1]] == values[order[start]]:
            stop += 1
        for position in range(start, stop + 1):
            ranks[order[position]] = (start + stop) / 2
        start = stop + 1
    return ranks


def spearman(a: Sequence[float], b: Sequence[float]) -> float:
    """Spearman's rank correlation of two score lists of the same documents (1: same order, -1: reversed)."""
    n = len(a)
    if n < 2 or len(b) != n:
        raise ValueError(f"spearman needs two lists of the same length of at least 2, got {len(a)} and {len(b)}")
    return 1 - 6 * sum((x - y) ** 2 for x, y in zip(_ranks(a), _ranks(b))) / (n * (n * n - 1))


def _best(values: Sequence[float], k: int) -> set[int]:
    return set(sorted(range(len(values)), key=lambda i: -values[i])[:k])


def ranking_agreement(
    reference: Sequence[Sequence[float]], candidate: Sequence[Sequence[float]]
) -> RankingAgreement:
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


def int8_agreement(
    directory: str | os.PathLike[str],
    rankings: Sequence[tuple[str, Sequence[str]]],
    *,
    threads: int | None = None,
) -> RankingAgreement:
    """How ``directory/onnx/model_quantized.onnx`` ranks each (query, documents) of ``rankings`` compared with
    ``model.onnx`` of the same export (onnxruntime, CPU)."""
    # One session at a time: each keeps the memory of its largest call.
    logits = [
        [scorer.logits(query, documents) for query, documents in rankings]
        for scorer in (OnnxReranker(directory, file, threads=threads) for file in (MODEL_FILE, QUANTIZED_MODEL_FILE))
    ]
    return ranking_agreement(*logits)
