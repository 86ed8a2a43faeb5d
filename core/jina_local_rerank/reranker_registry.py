"""The process-wide ``Reranker`` of each :class:`~jina_local_rerank.options.RerankerOptions`, for the adapters.

Framework components are created, copied and serialized freely; each asks :func:`reranker_for` on every use
rather than holding a ``Reranker``, so equal settings share one object and changed settings simply get another.
"""

from __future__ import annotations

import threading

from .engine.scoring_engine import ScoringEngine, is_cached
from .options import RerankerOptions
from .reranker import Reranker

_rerankers: dict[RerankerOptions, Reranker] = {}
_rerankers_lock = threading.Lock()


def reranker_for(options: RerankerOptions) -> Reranker:
    """The process-wide ``Reranker`` for ``options``, built on first use (adapters call this on every use).

    Equal options give the same object, so a component whose settings change simply gets another one; the weights
    behind it are shared per (model, revision, device, dtype) either way.
    """
    with _rerankers_lock:
        reranker = _rerankers.get(options)
    if reranker is None or not is_cached(reranker.engine):  # a released engine is loaded again
        # Built outside the lock: loading takes a while, and two racing builds share the cached engine anyway.
        reranker = Reranker(options)
        with _rerankers_lock:
            reranker = _rerankers[options] = reranker
    return reranker


def forget_engine(engine: ScoringEngine) -> None:
    """Drop every registered ``Reranker`` on ``engine`` (:meth:`Reranker.release`), so none keeps it in memory."""
    with _rerankers_lock:
        for options in [key for key, reranker in _rerankers.items() if reranker.engine is engine]:
            del _rerankers[options]
