"""Scale-out on Ray (the ``ray`` extra): Ray Serve replicas of the rerank server and Ray Data batch scoring.

``build_app`` (:mod:`.serve`) makes the Serve application; ``score_pairs_file`` and ``score_pairs_dataset``
(:mod:`.batch`) score (query, document) pairs with an actor pool. Ray is imported on first use of those names,
so the CLI's in-process ``score-pairs`` (:mod:`.pairs_file`) works without it.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

DEFAULT_MAX_ONGOING_REQUESTS = 32

_EXPORTS = {
    "build_app": ".serve",
    "RerankDeployment": ".serve",
    "score_pairs_dataset": ".batch",
    "score_pairs_file": ".batch",
    "PairColumns": "..pairs_file",
}

__all__ = ["DEFAULT_MAX_ONGOING_REQUESTS", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(import_module(_EXPORTS[name], __name__), name)
