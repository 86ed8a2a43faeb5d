"""Measuring a reranker on a BEIR-layout dataset: first stage (BM25 or a run file) versus reranked.

The names below are imported on first use, so the command line's parser loads neither torch nor numpy.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

_EXPORTS = {
    "BeirDataset": ".beir",
    "BeirDocument": ".beir",
    "DatasetError": ".beir",
    "load_beir": ".beir",
    "hit_rate_at": ".metrics",
    "mean_metrics": ".metrics",
    "mrr_at": ".metrics",
    "ndcg_at": ".metrics",
    "query_metrics": ".metrics",
    "recall_at": ".metrics",
    "spearman": ".metrics",
    "EvaluationReport": ".runner",
    "QueryEvaluation": ".runner",
    "default_cutoffs": ".runner",
    "evaluate": ".runner",
    "select_queries": ".runner",
    "FirstStage": ".runs",
    "bm25_first_stage": ".runs",
    "read_trec_run": ".runs",
    "run_file_first_stage": ".runs",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
