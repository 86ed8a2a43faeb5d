"""jina-local-rerank: the Jina reranker v1 (tiny/turbo/base) run locally in plain PyTorch.

The public names below are imported on first use, so ``import jina_local_rerank`` (and the command line's
``--help``) does not load torch.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from .lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for type checkers and the API docs
    from .checkpoint.hub import DEFAULT_MODEL
    from .engine.scoring_engine import ScoringEngine, cached_engines, clear_engine_cache
    from .errors import CheckpointError, JinaLocalRerankError, ModelNotFoundError, UnsupportedModelError
    from .options import RerankerOptions
    from .reranker import Reranker, ScoreResult
    from .reranker_registry import reranker_for

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_MODEL": ".checkpoint.hub",
    "CheckpointError": ".errors",
    "JinaLocalRerankError": ".errors",
    "ModelNotFoundError": ".errors",
    "Reranker": ".reranker",
    "RerankerOptions": ".options",
    "ScoreResult": ".reranker",
    "ScoringEngine": ".engine.scoring_engine",
    "UnsupportedModelError": ".errors",
    "cached_engines": ".engine.scoring_engine",
    "clear_engine_cache": ".engine.scoring_engine",
    "reranker_for": ".reranker_registry",
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
