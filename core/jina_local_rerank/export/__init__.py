"""Exporting a checkpoint to other runtimes: ONNX for onnxruntime and transformers.js (``export onnx``).

The names below are imported on first use, so the command line's parser loads neither torch nor onnx.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

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


def __getattr__(name: str) -> Any:
    if name not in _EXPORTS:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(import_module(_EXPORTS[name], __name__), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])
