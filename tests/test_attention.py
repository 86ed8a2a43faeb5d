"""ALiBi attention over packed sequences against a float64 softmax reference.

Long sequences skip keys beyond each head's ALiBi reach, and the last layer computes only each sequence's first
row; both must leave the result unchanged at fp32 precision.
"""

from __future__ import annotations

import pytest
import torch
from attention_reference import HEAD_DIM, packed_qkv, reference_attention

from jina_local_rerank.model.attention import (
    WINDOWED_BLOCK_ROWS,
    WINDOWED_MIN_LENGTH,
    ExactLengthAttention,
    PaddedAttention,
    _key_windows,
    alibi_slopes,
)


@pytest.mark.parametrize("num_heads", [8, 12])
def test_long_sequences_skip_only_negligible_keys(num_heads):
    lengths = [WINDOWED_MIN_LENGTH + 500, 300]
    q, k, v = packed_qkv(lengths, num_heads, seed=num_heads)
    batch = ExactLengthAttention(lengths, alibi_slopes(num_heads))
    rows = range(WINDOWED_BLOCK_ROWS)
    key_norm = k[: lengths[0]].norm(dim=-1).amax(0)
    windows = _key_windows(q[rows.start : rows.stop].transpose(0, 1)[None], key_norm, batch.slopes, rows, lengths[0])
    # The steepest heads look at a few hundred keys, the flattest at all of them: the windowed path really ran.
    assert min(map(len, windows)) < lengths[0] // 2
    assert max(map(len, windows)) == lengths[0]
    error = (batch(q, k, v, cls_only=False) - reference_attention(q, k, v, batch)).abs().max()
    assert error < 1e-5


def test_large_query_norms_widen_the_windows_to_the_whole_sequence():
    lengths = [WINDOWED_MIN_LENGTH + 100]
    q, k, v = packed_qkv(lengths, 8, seed=3, query_scale=20.0)
    batch = ExactLengthAttention(lengths, alibi_slopes(8))
    rows = range(WINDOWED_BLOCK_ROWS)
    key_norm = k.norm(dim=-1).amax(0)
    windows = _key_windows(q[: rows.stop].transpose(0, 1)[None], key_norm, batch.slopes, rows, lengths[0])
    assert all(len(keys) == lengths[0] for keys in windows)
    error = (batch(q, k, v, cls_only=False) - reference_attention(q, k, v, batch)).abs().max()
    assert error < 1e-4  # logits of a few hundred: fp32 keeps ~1e-5 of them


@pytest.mark.parametrize("mode", [ExactLengthAttention, PaddedAttention], ids=["exact-length", "padded"])
def test_cls_only_gives_each_sequences_first_row(mode):
    lengths = [7, WINDOWED_MIN_LENGTH + 3, 1, 40]
    q, k, v = packed_qkv(lengths, 12, seed=4)
    batch = mode(lengths, alibi_slopes(12))
    full = batch(q, k, v, cls_only=False)
    first = batch(q[batch.cls_rows], k, v, cls_only=True)
    assert first.shape == (len(lengths), 12, HEAD_DIM)
    assert torch.allclose(first, full[batch.cls_rows], atol=1e-6)
    assert torch.allclose(full.double(), reference_attention(q, k, v, batch), atol=1e-5)
