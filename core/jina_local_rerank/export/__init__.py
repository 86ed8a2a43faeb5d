"""Exporting a checkpoint to other runtimes: ONNX for onnxruntime and transformers.js (``export onnx``).

The names below are imported on first use, so the command line's parser loads neither torch nor onnx.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:  # what the lazy names are, for type checkers and the API docs
    from .agreement import int8_agreement
    from .onnx import OnnxExport, export_onnx
    from .runtime import OnnxReranker

_EXPORTS = {
    "OnnxExport": ".onnx",
    "export_onnx": ".onnx",
    "OnnxReranker": ".runtime",
    "int8_agreement": ".agreement",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
