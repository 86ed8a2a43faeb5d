"""The inference model, made trainable: the one ``JinaBertForReranking`` definition, no training copy of it.

The engine's attention modes backpropagate exactly (``tests/test_training.py`` checks every parameter's gradient
against a float64 reference). Training attends in the padded mode on every device: on CPUs its one kernel call
per layer runs forward and backward 1.3-3x faster than the exact-length mode's call per sequence (whose backward
passes do not batch), and the dense layers still run on the packed tokens alone. Two things are added around the
model, not inside it:

- :class:`FullPrecisionAttention` keeps attention out of bf16 autocast: the model computes scores in fp32 because
  the ALiBi bias is too large for bf16, and autocast would cast them back down.
- :func:`enable_activation_checkpointing` recomputes each layer in the backward pass instead of storing its
  activations (long documents).

No dropout: the published model has none at inference, the fused attention calls take a precomputed bias, and
fine-tuning runs are short with the best checkpoint chosen on held-out data, which guards against overfitting
more directly; train and inference then compute the very same function.
"""

from __future__ import annotations

import functools
from pathlib import Path

import torch
from torch.utils.checkpoint import checkpoint

from ..attention import PackedAttention, PaddedAttention
from ..checkpoint import load_checkpoint
from ..model import JinaBertForReranking


def trainable_model(directory: Path, device: torch.device) -> JinaBertForReranking:
    """The checkpoint's model in fp32 on ``device``, in training mode, every parameter a trainable leaf tensor."""
    model = load_checkpoint(directory, torch.float32, device)
    for parameter in model.parameters():
        parameter.requires_grad_(True)
    return model.train()


class FullPrecisionAttention(PackedAttention):
    """Another mode's attention run with autocast off, on fp32 queries, keys and values."""

    def __init__(self, inner: PackedAttention) -> None:
        super().__init__(inner.lengths, inner.slopes)
        self.inner = inner

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool) -> torch.Tensor:
        with torch.autocast(q.device.type, enabled=False):
            return self.inner(q.float(), k.float(), v.float(), cls_only)


def training_attention(lengths: list[int], model: JinaBertForReranking) -> PackedAttention:
    """The attention of one training forward pass: the padded mode, in fp32."""
    return FullPrecisionAttention(PaddedAttention(lengths, model.alibi_slopes))


def enable_activation_checkpointing(model: JinaBertForReranking) -> None:
    """Recompute every encoder layer's activations during the backward pass (the state dict is unchanged)."""
    for layer in model.bert.encoder.layer:
        if not isinstance(layer.forward, functools.partial):
            layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
