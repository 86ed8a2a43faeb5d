"""Argument checks shared by every entry point: each raises ``TypeError``/``ValueError`` naming the argument.

No torch, no framework: the options object, the scoring API, the adapters, the CLI and the server all call these,
so a value is judged the same way wherever it comes in.
"""

from __future__ import annotations

import math
import os
from collections.abc import Sequence
from typing import Any


def check_text(value: Any, name: str) -> str:
    """Return ``value`` if it is a string (a query or a document), else raise ``TypeError`` naming ``name``."""
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string, got {type(value).__name__}")
    return value


def check_documents(documents: Any, name: str = "documents") -> list[str]:
    """A new list of the ``documents`` strings; ``TypeError`` naming the first one that is not a string."""
    if isinstance(documents, (str, bytes)) or not isinstance(documents, Sequence):
        raise TypeError(f"{name} must be a list of strings, got {type(documents).__name__}")
    for index, doc in enumerate(documents):
        if not isinstance(doc, str):
            raise TypeError(f"{name}[{index}] must be a string, got {type(doc).__name__}")
    return list(documents)


def check_positive_int(value: Any, name: str) -> int:
    """Return ``value`` if it is an integer >= 1 (not a bool), else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return value


def check_optional_positive_int(value: Any, name: str) -> int | None:
    """None, or an integer >= 1; a ``top_k``/``top_n``/length value."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer or None, got {type(value).__name__}")
    return check_positive_int(value, name)


def check_number(value: Any, name: str, *, low: float = 0.0, high: float = math.inf, open_low: bool = False) -> float:
    """``value`` as a float if it is a finite number in ``[low, high]`` (``(low, high]`` with ``open_low``), else
    ``TypeError``/``ValueError`` naming ``name`` and the bounds."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low):
        bound = f"> {low:g}" if open_low else f">= {low:g}"
        upper = f" and <= {high:g}" if high < math.inf else ""
        raise ValueError(f"{name} must be {bound}{upper}, got {value:g}")
    return float(value)


def check_threshold(value: Any, name: str = "score_threshold") -> float | None:
    """None, or a finite number (a score threshold); NaN would silently drop every result, so it is refused."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be a number or None, got {type(value).__name__}")
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value}")
    return float(value)


def check_choice(value: Any, choices: Sequence[str], name: str) -> str:
    """``value`` if it is one of ``choices``, else ``ValueError`` listing them."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{name} must be one of {', '.join(map(repr, choices))}, got {value!r}")
    return value


def check_optional_text(value: Any, name: str) -> str | None:
    """None, or a non-empty string (a path-like becomes its string)."""
    if value is None:
        return None
    if isinstance(value, os.PathLike):
        value = os.fspath(value)
    if not isinstance(value, str):
        raise TypeError(f"{name} must be a string or None, got {type(value).__name__}")
    if not value:
        raise ValueError(f"{name} must not be empty (pass None for the default)")
    return value


# The one wording of the devices and dtypes there are, for the flags' help and every error about them
# (engine/devices.py resolves them to torch objects; no torch here).
_EXPLICIT_DEVICES = "'cpu', 'cuda', 'cuda:N' or 'mps'"
DEVICE_NAMES = f"'auto', {_EXPLICIT_DEVICES}"
DEVICE_HELP = f"'auto' (cuda, then mps, then cpu), {_EXPLICIT_DEVICES}"
# Canonical dtype names and their short aliases.
DTYPES = ("auto", "float32", "bfloat16", "float16", "int8")
DTYPE_ALIASES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def torch_name(value: Any) -> Any:
    """``torch.device``/``torch.dtype`` objects as the strings the options hold (``torch.float16`` -> ``float16``)."""
    if type(value).__module__ == "torch" and type(value).__name__ in ("device", "dtype"):
        return str(value).removeprefix("torch.")
    return value


def dtype_name(dtype: Any) -> str:
    """``dtype`` as one of ``DTYPES``: None is ``"auto"``, a short name (``"bf16"``) or a torch dtype
    (``torch.float16``, ``torch.qint8``) its canonical name, in any case; else ``ValueError`` listing them."""
    name = torch_name(dtype)
    if name is None:
        name = "auto"
    if isinstance(name, str):
        name = DTYPE_ALIASES.get(name.lower(), name.lower())
    if name == "qint8":
        name = "int8"
    return check_choice(name, DTYPES, "dtype")
