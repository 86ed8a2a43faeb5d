"""The reranker on padded ``[batch, sequence]`` inputs, as an exported graph computes it: the model's own modules.

:class:`PaddedBatchReranker` runs :class:`~jina_local_rerank.model.jinabert.JinaBertForReranking` unchanged on the
flattened batch (padding tokens included), with :class:`PaddedBatchAttention` telling each layer how to attend.
Everything the attention needs is derived from ``attention_mask`` with tensor operations, never Python numbers,
so one traced graph holds for every batch size and sequence length: no lengths, no ALiBi table.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from ..model.attention import PackedAttention
from ..model.jinabert import JinaBertForReranking
from .blocked_attention import alibi_attention


class PaddedBatchAttention(PackedAttention):
    """Symmetric ALiBi attention within each row of a padded batch, built from its ``attention_mask``.

    Token positions are ``cumsum(attention_mask) - 1``, so left and right padding (or none) give the same scores,
    and each row's ``<s>`` is its first real token. Padding keys are masked; padding query rows compute values
    nobody reads. The lengths are tensors known only when the graph runs, so the Python ``lengths``, ``offsets``
    and ``width`` of :class:`~jina_local_rerank.model.attention.PackedAttention` are not set; ``cls_rows`` (rows of the
    flattened ``[batch * sequence]`` layout) is.
    """

    def __init__(self, attention_mask: torch.Tensor, slopes: torch.Tensor) -> None:
        self.slopes = slopes
        self.batch, self.sequence = attention_mask.shape
        real = attention_mask.to(torch.float32)
        self.positions = real.cumsum(1) - 1  # -1 on left padding, the last real position repeated on right padding
        first_real = (self.positions < 0).sum(1)
        self.cls_rows = torch.arange(self.batch, device=slopes.device) * self.sequence + first_real
        self.key_mask = (1 - real) * torch.finfo(torch.float32).min
        # Only the <s> rows' bias is built here ([batch, heads, 1, sequence]); every row's is built per block of
        # query rows inside the graph (blocked_attention).
        distance = self.positions.abs()[:, None, None, :]
        self.cls_bias = -slopes[None, :, None, None] * distance + self.key_mask[:, None, None, :]

    def _rows(self, t: torch.Tensor) -> torch.Tensor:
        """Flattened ``[batch * sequence, heads, d]`` as ``[batch, heads, sequence, d]``."""
        return t.view(self.batch, self.sequence, t.shape[1], t.shape[2]).transpose(1, 2)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool) -> torch.Tensor:
        keys, values = self._rows(k), self._rows(v)
        if cls_only:  # q: [batch, heads, d], each row's <s> only
            return F.scaled_dot_product_attention(q[:, :, None], keys, values, attn_mask=self.cls_bias)[:, :, 0]
        queries = self._rows(q) * q.shape[-1] ** -0.5
        context = alibi_attention(queries, keys, values, self.positions, self.key_mask, -self.slopes)
        return context.transpose(1, 2).reshape(q.shape)


class PaddedBatchReranker(nn.Module):
    """``(input_ids, attention_mask)`` ``[batch, sequence]`` int64 -> raw logits ``[batch, 1]`` (fp32).

    The graph transformers.js and onnxruntime callers expect of a one-label sequence classifier; the computation is
    ``model``'s forward pass on the flattened batch (the last layer for ``<s>`` only, as in the engine).
    """

    def __init__(self, model: JinaBertForReranking) -> None:
        super().__init__()
        self.model = model

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        attention = PaddedBatchAttention(attention_mask, self.model.alibi_slopes)
        return self.model(input_ids.reshape(-1), attention)[:, None]
