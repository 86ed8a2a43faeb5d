"""Scale-out on Ray (the ``ray`` extra): Ray Serve replicas of the rerank server and Ray Data batch scoring.

``build_app`` (:mod:`.serve`) makes the Serve application; ``score_pairs_file`` and ``score_pairs_dataset``
(:mod:`.batch`) score (query, document) pairs with an actor pool. Ray is imported on first use of those names,
so the CLI's in-process ``score-pairs`` works without it.
"""

from __future__ import annotations

from ..lazy import lazy_exports

DEFAULT_MAX_ONGOING_REQUESTS = 32

_EXPORTS = {
    "build_app": ".serve",
    "RerankDeployment": ".serve",
    "score_pairs_dataset": ".batch",
    "score_pairs_file": ".batch",
    "PairColumns": "..files.pairs",
}

__all__ = ["DEFAULT_MAX_ONGOING_REQUESTS", *_EXPORTS]
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
