"""Test helpers: random packed q, k, v, a float64 softmax reference for ALiBi attention over packed sequences, and
FlexAttention with its kernel compiled on CPU."""

from __future__ import annotations

import math

import pytest
import torch

from jina_local_rerank.model.attention import FlexAttention, PackedAttention, alibi_bias, flex_attention

HEAD_DIM = 32
needs_flex = pytest.mark.skipif(flex_attention is None, reason="FlexAttention needs torch >= 2.5")


def reference_attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: PackedAttention) -> torch.Tensor:
    """Full softmax over every key with the ALiBi bias, in float64, one head of one sequence at a time."""
    out = torch.empty(q.shape, dtype=torch.float64)
    for start, length in zip(batch.offsets, batch.lengths):
        bias = alibi_bias(batch.slopes, range(length), length).double()
        for head in range(q.shape[1]):
            qs, ks, vs = (t[start : start + length, head].double() for t in (q, k, v))
            weights = (qs @ ks.T / math.sqrt(q.shape[-1]) + bias[head]).softmax(-1)
            out[start : start + length, head] = weights @ vs
    return out


def packed_qkv(
    lengths: list[int], num_heads: int, seed: int, query_scale: float = 1.0, head_dim: int = HEAD_DIM
) -> list[torch.Tensor]:
    """Standard-normal ``[sum(lengths), num_heads, head_dim]`` q, k, v (q scaled by ``query_scale``)."""
    generator = torch.Generator().manual_seed(seed)
    shape = (sum(lengths), num_heads, head_dim)
    q, k, v = (torch.randn(shape, generator=generator) for _ in range(3))
    return [q * query_scale, k, v]


class CompiledFlexAttention(FlexAttention):
    """FlexAttention through its compiled kernel on CPU too (inductor's CPU flex template): the fused path, which
    skips the BlockMask's empty tiles, as on GPUs. Compiles once per bucket and dtype (seconds each)."""

    compiled = True
