"""Measuring a reranker on a BEIR-layout dataset: first stage (BM25 or a run file) versus reranked.

The names below are imported on first use, so the command line's parser loads neither torch nor numpy.
"""

from __future__ import annotations

from ..lazy import lazy_exports

_EXPORTS = {
    "RankingAgreement": ".agreement",
    "ranking_agreement": ".agreement",
    "BeirDataset": ".beir",
    "BeirDocument": ".beir",
    "DatasetError": "..errors",
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
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
