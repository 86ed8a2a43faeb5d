"""jina-local-rerank: the Jina reranker v1 (tiny/turbo/base) run locally in plain PyTorch.

The public names below are imported on first use, so ``import jina_local_rerank`` (and the command line's
``--help``) does not load torch.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # what the lazy names are, for type checkers and the API docs
    from .checkpoint import DEFAULT_MODEL
    from .engine import ScoringEngine, cached_engines, clear_engine_cache
    from .errors import CheckpointError, JinaLocalRerankError, ModelNotFoundError, UnsupportedModelError
    from .options import RerankerOptions
    from .reranker import Reranker, ScoreResult, reranker_for

__version__ = "0.1.0"

_EXPORTS = {
    "DEFAULT_MODEL": ".checkpoint",
    "CheckpointError": ".errors",
    "JinaLocalRerankError": ".errors",
    "ModelNotFoundError": ".errors",
    "Reranker": ".reranker",
    "RerankerOptions": ".options",
    "ScoreResult": ".reranker",
    "ScoringEngine": ".engine",
    "UnsupportedModelError": ".errors",
    "cached_engines": ".engine",
    "clear_engine_cache": ".engine",
    "reranker_for": ".reranker",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
