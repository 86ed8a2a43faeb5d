"""Resolving the ``device`` and ``dtype`` arguments (``"auto"`` or explicit) to torch objects."""

from __future__ import annotations

import torch

from ..validation import DEVICE_NAMES, dtype_name


def resolve_device(device: str | torch.device | None) -> torch.device:
    """``"auto"``/None picks cuda, then mps, then cpu; an explicit device must exist on this machine."""
    if device is None or device == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda")
        if torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if not isinstance(device, (str, torch.device)):
        raise TypeError(f"device must be a string or torch.device, got {type(device).__name__}")
    try:
        resolved = torch.device(device)
    except (RuntimeError, ValueError):
        raise ValueError(f"device {device!r} is not a known device (use {DEVICE_NAMES})") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device {device!r} was requested but CUDA is not available on this machine")
    if resolved.type == "cuda" and resolved.index is not None and resolved.index >= torch.cuda.device_count():
        raise ValueError(f"device {device!r} does not exist: {torch.cuda.device_count()} CUDA device(s) found")
    if resolved.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"device {device!r} was requested but MPS is not available on this machine")
    if resolved.type not in ("cpu", "cuda", "mps"):
        raise ValueError(f"device {device!r} is not supported (use {DEVICE_NAMES})")
    return resolved


def resolve_dtype(dtype: str | torch.dtype | None, device: torch.device) -> torch.dtype:
    """``"auto"``/None: bf16 on CUDA where supported (else fp16), fp32 elsewhere; or an explicit dtype (any name
    :func:`~jina_local_rerank.validation.dtype_name` accepts).

    ``"int8"`` (CPU only) gives ``torch.qint8``: the encoder's linear layers in int8
    (:mod:`~jina_local_rerank.model.quantization`), the rest in fp32.
    """
    name = dtype_name(dtype)
    if name == "int8":
        if device.type != "cpu":
            raise ValueError(f"dtype 'int8' runs on the CPU only, not on {device}")
        return torch.qint8
    if name == "auto":
        if device.type == "cuda":
            return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return torch.float32
    return getattr(torch, name)
