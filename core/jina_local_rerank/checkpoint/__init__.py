"""Checkpoints in the published on-disk format: where one comes from, what it holds, reading and writing it.

``hub.py`` finds a checkpoint (a directory, or a Hub id through the Hugging Face cache); ``format.py`` is the
format's specification (file names, every tensor's name and shape); ``files.py`` opens its files safely;
``loading.py`` builds the model from it and ``writer.py`` writes one.
"""

from __future__ import annotations

from .format import expected_shapes
from .hub import DEFAULT_MODEL, default_model, resolve_model_dir

__all__ = ["DEFAULT_MODEL", "default_model", "expected_shapes", "resolve_model_dir"]
