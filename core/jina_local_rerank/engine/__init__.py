"""The engine: a loaded model and tokenizer per (model, revision, device, dtype), and the batches it scores.

``scoring_engine.py`` holds the engine and the process-wide cache of them; ``tokenization.py`` encodes pairs;
``batching.py`` packs them under a token budget; ``devices.py`` resolves ``device``/``dtype``; ``cpu_workers.py``
runs independent batches one per core. The names below are imported on first use (torch is loaded then).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from .scoring_engine import EngineKey, ScoringEngine, cached_engines, clear_engine_cache, get_engine

_EXPORTS = {
    name: ".scoring_engine"
    for name in ("EngineKey", "ScoringEngine", "cached_engines", "clear_engine_cache", "get_engine")
}

__all__ = sorted(_EXPORTS)
__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
