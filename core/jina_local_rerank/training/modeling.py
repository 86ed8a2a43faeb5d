"""The inference model, made trainable: the one ``JinaBertForReranking`` definition, no training copy of it.

The engine's attention modes backpropagate exactly (``tests/test_training.py`` checks every parameter's gradient
against a float64 reference). On CPUs training attends in the exact-length mode: the padded mode holds, for the
backward pass, its padded q, k, v and a mask of every sequence x head x query x key of the pass (100 pairs x 12
heads x 512 x 512 fp32 per layer, 5 GB on tiny, for a pass of 16k tokens of pairs up to 512 tokens), and its
padding is work too: on that pass the exact mode ran 4x faster and peaked at 3.5 GB against 7.9 GB. Elsewhere
training attends in the padded mode. Passes hold at most ``batch_tokens`` tokens (:func:`forward_backward`). Two things
are added around the model, not inside it:

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

from ..checkpoint.loading import load_checkpoint
from ..model.attention import ExactLengthAttention, PackedAttention, PaddedAttention
from ..model.jinabert import JinaBertForReranking
from .batches import Batch
from .losses import ListLoss


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
    """The attention of one training forward pass, in fp32: the exact-length mode on CPUs, else the padded one."""
    mode = ExactLengthAttention if model.alibi_slopes.device.type == "cpu" else PaddedAttention
    return FullPrecisionAttention(mode(lengths, model.alibi_slopes))


def forward_backward(
    model: JinaBertForReranking,
    batch: Batch,
    loss: ListLoss,
    *,
    weight: float,
    batch_tokens: int,
    autocast: torch.dtype | None,
) -> torch.Tensor:
    """One forward pass over ``batch`` and the backward pass of ``weight`` x its summed losses; returns the loss of
    each list (detached).

    A batch over ``batch_tokens`` (a list longer than the budget: a list never straddles two passes of the loss)
    runs in chunks of sequences within the budget: every logit first without a graph, then the loss's gradient
    with respect to them, then each chunk again with its share of that gradient. The gradients are the same; the
    memory is one chunk's activations, at the cost of one more forward pass over that list.
    """
    device = batch.input_ids.device

    def logits_of(input_ids: torch.Tensor, lengths: list[int]) -> torch.Tensor:
        with torch.autocast(device.type, dtype=autocast or torch.float32, enabled=autocast is not None):
            return model(input_ids, training_attention(lengths, model)).float()

    if batch.num_tokens <= batch_tokens or len(batch.lengths) == 1:
        losses = loss(batch.as_lists(logits_of(batch.input_ids, batch.lengths)), batch.targets, batch.mask)
        (losses.sum() * weight).backward()
        return losses.detach()
    chunks: list[list[int]] = [[]]
    for length in batch.lengths:
        if chunks[-1] and sum(chunks[-1]) + length > batch_tokens:
            chunks.append([])
        chunks[-1].append(length)
    inputs = batch.input_ids.split([sum(lengths) for lengths in chunks])
    with torch.no_grad():
        logits = torch.cat([logits_of(ids, lengths) for ids, lengths in zip(inputs, chunks)])
    logits.requires_grad_(True)
    losses = loss(batch.as_lists(logits), batch.targets, batch.mask)
    (losses.sum() * weight).backward()
    assert logits.grad is not None
    for ids, lengths, grad in zip(inputs, chunks, logits.grad.split([len(lengths) for lengths in chunks])):
        logits_of(ids, lengths).backward(grad)
    return losses.detach()


def enable_activation_checkpointing(model: JinaBertForReranking) -> None:
    """Recompute every encoder layer's activations during the backward pass (the state dict is unchanged)."""
    for layer in model.bert.encoder.layer:
        if not isinstance(layer.forward, functools.partial):
            layer.forward = functools.partial(checkpoint, layer.forward, use_reentrant=False)
