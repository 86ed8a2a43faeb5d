"""Reranking each query's first-stage candidates and measuring both rankings against the judgments."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from ..errors import DatasetError
from ..progress import progress_bar
from ..ranking import best_first
from ..reranker import Reranker
from ..validation import check_positive_int
from .beir import BeirDataset
from .metrics import NDCG_AT, mean_metrics, query_metrics
from .runs import FirstStage


@dataclass(frozen=True)
class QueryEvaluation:
    """One query: its metrics before and after reranking, the reranked ids (best first) and the rerank time (s)."""

    query_id: str
    first_stage: dict[str, float]
    reranked: dict[str, float]
    ranking: list[str]
    rerank_seconds: float
    truncated: int
    chunked: int
    windows: int


@dataclass(frozen=True)
class EvaluationReport:
    """Mean metrics of the first stage and of the reranked candidates, per-query results, times in seconds."""

    dataset: str
    split: str
    first_stage_name: str
    model: str
    long_document: str
    max_length: int
    top_k: int
    cutoffs: tuple[int, ...]
    first_stage: dict[str, float]
    reranked: dict[str, float]
    queries: list[QueryEvaluation]
    skipped_queries: list[str]
    first_stage_seconds: float
    rerank_seconds: float

    def to_dict(self, *, per_query: bool = False) -> dict[str, Any]:
        """JSON-ready summary; ``per_query`` adds each query's metrics, reranked ids and time."""
        scored = sum(len(q.ranking) for q in self.queries)
        data: dict[str, Any] = {
            "dataset": self.dataset,
            "split": self.split,
            "first_stage": self.first_stage_name,
            "model": self.model,
            "long_document": self.long_document,
            "max_length": self.max_length,
            "top_k": self.top_k,
            "cutoffs": list(self.cutoffs),
            "num_queries": len(self.queries),
            "skipped_queries": self.skipped_queries,
            "metrics": {"first_stage": self.first_stage, "reranked": self.reranked},
            "time_s": {"first_stage": self.first_stage_seconds, "rerank": self.rerank_seconds},
            "documents": {
                "scored": scored,
                "truncated": sum(q.truncated for q in self.queries),
                "chunked": sum(q.chunked for q in self.queries),
                "windows": sum(q.windows for q in self.queries),
            },
        }
        if per_query:
            data["per_query"] = {
                q.query_id: {
                    "first_stage": q.first_stage,
                    "reranked": q.reranked,
                    "ranking": q.ranking,
                    "rerank_s": q.rerank_seconds,
                    "truncated": q.truncated,
                    "chunked": q.chunked,
                    "windows": q.windows,
                }
                for q in self.queries
            }
        return data


def select_queries(dataset: BeirDataset, max_queries: int | None = None) -> tuple[list[str], list[str]]:
    """The judged queries to evaluate, in qrels order (at most ``max_queries``), and the judged ones skipped.

    A query is skipped when it has no relevant document (every metric would be 0 whatever the ranking) or no
    text in ``queries.jsonl``.
    """
    selected, skipped = [], []
    for query_id, judgments in dataset.qrels.items():
        if query_id in dataset.queries and any(grade > 0 for grade in judgments.values()):
            selected.append(query_id)
        else:
            skipped.append(query_id)
    return selected[:max_queries], skipped


def default_cutoffs(top_k: int) -> tuple[int, ...]:
    """Recall and hit-rate depths: 10 (what a reader sees) and ``top_k`` (what the reranker can reach).

    Depths past ``top_k`` would repeat the ``top_k`` values: only the candidates are ranked.
    """
    return tuple(sorted({min(NDCG_AT, top_k), top_k}))


def evaluate(
    reranker: Reranker,
    dataset: BeirDataset,
    first_stage: FirstStage,
    *,
    top_k: int = 100,
    max_queries: int | None = None,
    cutoffs: Sequence[int] | None = None,
    show_progress: bool = False,
) -> EvaluationReport:
    """Rerank each query's first ``top_k`` first-stage candidates with ``reranker`` and measure both rankings.

    Candidates are scored with :meth:`Reranker.score` on ``title + " " + text`` and ordered by logit, ties in
    first-stage order. A query the first stage returned nothing for is evaluated with an empty ranking.
    """
    check_positive_int(top_k, "top_k")
    if max_queries is not None:
        check_positive_int(max_queries, "max_queries")
    cutoffs = tuple(cutoffs) if cutoffs is not None else default_cutoffs(top_k)
    for index, k in enumerate(cutoffs):
        check_positive_int(k, f"cutoffs[{index}]")
    query_ids, skipped = select_queries(dataset, max_queries)
    results = []
    with progress_bar("reranking", "query", show_progress, total=len(query_ids)) as progress:
        for query_id in query_ids:
            results.append(_evaluate_query(reranker, dataset, first_stage, query_id, top_k, cutoffs))
            progress.update(1)
    return EvaluationReport(
        dataset=str(dataset.directory),
        split=dataset.split,
        first_stage_name=first_stage.name,
        model=reranker.model_name,
        long_document=reranker.long_document,
        max_length=reranker.max_length,
        top_k=top_k,
        cutoffs=cutoffs,
        first_stage=mean_metrics([r.first_stage for r in results]),
        reranked=mean_metrics([r.reranked for r in results]),
        queries=results,
        skipped_queries=skipped,
        first_stage_seconds=first_stage.seconds,
        rerank_seconds=sum(r.rerank_seconds for r in results),
    )


def _evaluate_query(
    reranker: Reranker,
    dataset: BeirDataset,
    first_stage: FirstStage,
    query_id: str,
    top_k: int,
    cutoffs: tuple[int, ...],
) -> QueryEvaluation:
    candidates = first_stage.rankings.get(query_id, [])[:top_k]
    missing = next((doc_id for doc_id in candidates if doc_id not in dataset.corpus), None)
    if missing is not None:
        raise DatasetError(f"{first_stage.name}: document {missing!r} (query {query_id!r}) is not in the corpus")
    texts = [dataset.corpus[doc_id].full_text for doc_id in candidates]
    start = time.perf_counter()
    result = reranker.score(dataset.queries[query_id], texts)
    seconds = time.perf_counter() - start
    ranking = [candidates[i] for i in best_first(result.logits)]
    qrels = dataset.qrels[query_id]
    return QueryEvaluation(
        query_id=query_id,
        first_stage=query_metrics(candidates, qrels, cutoffs),
        reranked=query_metrics(ranking, qrels, cutoffs),
        ranking=ranking,
        rerank_seconds=seconds,
        truncated=result.num_truncated,
        chunked=result.num_chunked,
        windows=sum(result.windows),
    )
