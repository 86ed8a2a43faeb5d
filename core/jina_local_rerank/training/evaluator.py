"""Held-out evaluation during training: NDCG@10 and MRR@10 where documents are judged, Spearman with the teacher
where a teacher scored them, with the project's metrics and ranking rule.

A BEIR-layout dataset is evaluated as ``jina-local-rerank eval`` does (BM25 candidates, the judgments of the
split), so the numbers of a run's model card are the ones that command reports for the saved model at the same
``max_length``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from ..engine.scoring_engine import ScoringEngine
from ..evaluation.beir import load_beir
from ..evaluation.metrics import MRR_AT, NDCG_AT, mean_metrics, mrr_at, ndcg_at, spearman
from ..evaluation.runner import select_queries
from ..evaluation.runs import bm25_first_stage
from ..progress import Progress, progress_bar
from ..ranking import best_first
from .data import QueryGroup

PROGRESS_CHUNK_PAIRS = 2048  # pairs scored between progress updates (whole queries)
NDCG = f"ndcg@{NDCG_AT}"
MRR = f"mrr@{MRR_AT}"
SPEARMAN = "spearman"


@dataclass(frozen=True)
class EvalQuery:
    """One held-out query: its candidates, their judgments (document index -> grade) and teacher logits, if any."""

    query: str
    documents: tuple[str, ...]
    qrels: dict[str, float]
    teacher: tuple[float, ...] | None = None


class RerankingEvaluator:
    """Mean metrics of a model over held-out queries; ``metric`` is the one the best checkpoint is chosen by
    (NDCG@10 where documents are judged, else Spearman with the teacher).

    Candidates are tokenized once; each call scores them all through the engine and ranks them by logit.
    """

    def __init__(self, queries: list[EvalQuery], name: str) -> None:
        if not queries:
            raise ValueError(f"evaluation set {name} has no queries")
        self.queries = queries
        self.name = name
        self.judged = any(query.qrels for query in queries)
        self.metric = NDCG if self.judged else SPEARMAN
        self._encoded: tuple[tuple[int, int], list[list[int]]] | None = None

    @classmethod
    def from_groups(cls, groups: list[QueryGroup] | tuple[QueryGroup, ...], name: str) -> RerankingEvaluator:
        """Groups as evaluation queries: labels above 0 are the judgments, ``teacher`` the teacher's logits."""
        queries = []
        for group in groups:
            labels = group.labels or ()
            qrels = {str(i): label for i, label in enumerate(labels) if label > 0}
            queries.append(EvalQuery(group.query, group.documents, qrels, group.teacher))
        return cls(queries, name)

    @classmethod
    def from_beir(
        cls,
        directory: str | os.PathLike[str],
        *,
        split: str = "test",
        top_k: int = 100,
        max_queries: int | None = None,
        show_progress: Progress = False,
    ) -> RerankingEvaluator:
        """The judged queries of a BEIR-layout dataset, each with its ``top_k`` BM25 candidates."""
        dataset = load_beir(directory, split)
        query_ids, _ = select_queries(dataset, max_queries)
        rankings = bm25_first_stage(dataset, query_ids, top_k, show_progress=show_progress).rankings
        queries = []
        for query_id in query_ids:
            candidates = rankings[query_id]
            position = {doc_id: str(i) for i, doc_id in enumerate(candidates)}
            # Relevant documents BM25 missed keep ids of their own: they still count in the ideal DCG, as in eval.
            qrels = {
                position.get(doc_id, f"missed:{doc_id}"): float(grade)
                for doc_id, grade in dataset.qrels[query_id].items()
                if grade > 0
            }
            documents = tuple(dataset.corpus[doc_id].full_text for doc_id in candidates)
            queries.append(EvalQuery(dataset.queries[query_id], documents, qrels))
        return cls(queries, f"{Path(directory)} ({split}, BM25 top {top_k})")

    def with_teacher(self, teacher: list[tuple[float, ...]]) -> RerankingEvaluator:
        """The same queries with the teacher's logits for their candidates (in order); the best checkpoint is then
        the one closest to the teacher (Spearman), what distillation optimizes."""
        queries = [
            EvalQuery(query.query, query.documents, query.qrels, logits) for query, logits in zip(self.queries, teacher)
        ]
        evaluator = RerankingEvaluator(queries, self.name)
        evaluator.metric = SPEARMAN
        return evaluator

    def _sequences(self, engine: ScoringEngine, max_length: int, max_query_length: int) -> list[list[int]]:
        settings = (max_length, max_query_length)
        if self._encoded is None or self._encoded[0] != settings:
            texts = [query.query for query in self.queries]
            pairs = [(index, doc) for index, query in enumerate(self.queries) for doc in query.documents]
            encoded = engine.tokenizer.encode_pairs(
                texts, pairs, max_length=max_length, max_query_length=max_query_length
            )
            self._encoded = (settings, encoded.input_ids)
        return self._encoded[1]

    def __call__(
        self,
        engine: ScoringEngine,
        *,
        max_length: int,
        max_query_length: int,
        max_batch_tokens: int,
        show_progress: Progress = False,
        description: str = "evaluation",
    ) -> dict[str, float]:
        """Mean ``ndcg@10`` and ``mrr@10`` (judged sets) and ``spearman`` (teacher-scored sets) of ``engine``;
        a progress bar named ``description`` counts the queries scored."""
        sequences = self._sequences(engine, max_length, max_query_length)
        logits: list[float] = []
        with progress_bar(description, "query", show_progress, total=len(self.queries)) as progress:
            first = 0
            while first < len(self.queries):  # chunks of queries between progress updates
                last, pairs = first, 0
                while last < len(self.queries) and (last == first or pairs < PROGRESS_CHUNK_PAIRS):
                    pairs += len(self.queries[last].documents)
                    last += 1
                logits += engine.logits(sequences[len(logits) : len(logits) + pairs], max_batch_tokens)
                progress.update(last - first)
                first = last
        per_query, start = [], 0
        for query in self.queries:
            scores = logits[start : start + len(query.documents)]
            start += len(query.documents)
            metrics = {}
            if self.judged:
                ranking = [str(i) for i in best_first(scores)]
                metrics[NDCG] = ndcg_at(ranking, query.qrels)
                metrics[MRR] = mrr_at(ranking, query.qrels)
            if query.teacher is not None:
                metrics[SPEARMAN] = spearman(scores, query.teacher)
            per_query.append(metrics)
        if any(set(m) != set(per_query[0]) for m in per_query):
            raise ValueError(f"evaluation set {self.name}: only some queries have teacher scores")
        return mean_metrics(per_query)
