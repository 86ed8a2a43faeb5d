"""jina-local-rerank: the Jina reranker v1 (tiny/turbo/base) run locally in plain PyTorch."""

from .checkpoint import DEFAULT_MODEL
from .engine import ScoringEngine, cached_engines, clear_engine_cache
from .errors import CheckpointError, JinaLocalRerankError, ModelNotFoundError, UnsupportedModelError
from .reranker import Reranker, ScoreResult

__version__ = "0.1.0"

__all__ = [
    "DEFAULT_MODEL",
    "CheckpointError",
    "JinaLocalRerankError",
    "ModelNotFoundError",
    "Reranker",
    "ScoreResult",
    "ScoringEngine",
    "UnsupportedModelError",
    "cached_engines",
    "clear_engine_cache",
]
