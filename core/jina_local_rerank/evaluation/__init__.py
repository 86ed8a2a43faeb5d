"""Measuring a reranker on a BEIR-layout dataset: first stage (BM25 or a run file) versus reranked."""

from .beir import BeirDataset, BeirDocument, DatasetError, load_beir
from .metrics import hit_rate_at, mean_metrics, mrr_at, ndcg_at, query_metrics, recall_at
from .runner import EvaluationReport, QueryEvaluation, default_cutoffs, evaluate, select_queries
from .runs import FirstStage, bm25_first_stage, read_trec_run, run_file_first_stage

__all__ = [
    "BeirDataset",
    "BeirDocument",
    "DatasetError",
    "EvaluationReport",
    "FirstStage",
    "QueryEvaluation",
    "bm25_first_stage",
    "default_cutoffs",
    "evaluate",
    "hit_rate_at",
    "load_beir",
    "mean_metrics",
    "mrr_at",
    "ndcg_at",
    "query_metrics",
    "read_trec_run",
    "recall_at",
    "run_file_first_stage",
    "select_queries",
]
