"""JinaBERT cross-encoder in plain PyTorch.

Module names mirror the checkpoint's tensor names (``bert.encoder.layer.0.mlp.gated_layers.weight`` is
``model.bert.encoder.layer[0].mlp.gated_layers.weight``), so loading is a straight key match. The model knows
nothing of tokenization, batching or files: it maps padded ``input_ids``/``attention_mask`` to one logit per row.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import JinaBertConfig

# Upper bound on attention-score elements materialized at once (per forward, all heads): 64 MiB in fp32.
# Long sequences are processed in blocks of query rows so that memory stays bounded at any length.
ATTENTION_BLOCK_ELEMENTS = 1 << 24


def alibi_slopes(num_heads: int) -> torch.Tensor:
    """Per-head ALiBi slopes (ALiBi paper recipe, as in the original JinaBERT), shape ``[num_heads]``."""

    def power_of_two_slopes(n: int) -> list[float]:
        start = 2.0 ** (-(2.0 ** -(math.log2(n) - 3)))
        return [start ** (k + 1) for k in range(n)]

    if math.log2(num_heads).is_integer():
        slopes = power_of_two_slopes(num_heads)
    else:
        closest = 2 ** math.floor(math.log2(num_heads))
        extra = power_of_two_slopes(2 * closest)[0::2][: num_heads - closest]
        slopes = power_of_two_slopes(closest) + extra
    return torch.tensor(slopes, dtype=torch.float32)


def alibi_bias(slopes: torch.Tensor, rows: range, length: int) -> torch.Tensor:
    """Symmetric ALiBi bias ``-slope[h] * |i - j|`` for query rows ``rows`` and keys ``0..length-1``.

    Returns fp32 ``[num_heads, len(rows), length]``; built per batch, never for the full 8192 window.
    """
    device = slopes.device
    query_pos = torch.arange(rows.start, rows.stop, device=device, dtype=torch.float32)
    key_pos = torch.arange(length, device=device, dtype=torch.float32)
    distance = (query_pos[:, None] - key_pos[None, :]).abs()
    return -slopes[:, None, None] * distance


class JinaBertEmbeddings(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.word_embeddings = nn.Embedding(config.vocab_size, config.hidden_size)
        self.token_type_embeddings = nn.Embedding(config.type_vocab_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Token type ids are always 0 for this model; row 0 is added to every position.
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


class JinaBertSelfAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, L, H]``; ``key_bias`` fp32 ``[B, L]`` (0 for real keys, -inf-like for padding)."""
        batch, length, hidden = x.shape

        def heads(t: torch.Tensor) -> torch.Tensor:
            return t.view(batch, length, self.num_heads, self.head_dim).transpose(1, 2)

        q, k, v = heads(self.query(x)), heads(self.key(x)), heads(self.value(x))
        # The ALiBi bias reaches -slope * 8191; in fp16/bf16 it would lose precision, so scores are fp32.
        if q.dtype != torch.float32:
            q, k, v = q.float(), k.float(), v.float()
        rows_per_block = max(1, ATTENTION_BLOCK_ELEMENTS // (batch * self.num_heads * length))
        blocks = []
        for start in range(0, length, rows_per_block):
            rows = range(start, min(length, start + rows_per_block))
            mask = alibi_bias(slopes, rows, length)[None] + key_bias[:, None, None, :]
            blocks.append(
                F.scaled_dot_product_attention(q[:, :, rows.start : rows.stop], k, v, attn_mask=mask)
            )
        context = blocks[0] if len(blocks) == 1 else torch.cat(blocks, dim=2)
        return context.transpose(1, 2).reshape(batch, length, hidden).to(x.dtype)


class JinaBertSelfOutput(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(context) + residual)


class JinaBertAttention(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.self = JinaBertSelfAttention(config)
        self.output = JinaBertSelfOutput(config)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        return self.output(self.self(x, key_bias, slopes), x)


class JinaBertGLUMLP(nn.Module):
    """GEGLU feed-forward: exact (erf) GELU on the first half of ``gated_layers``, times the second half."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gated, non_gated = self.gated_layers(x).split(self.intermediate_size, dim=-1)
        return self.layernorm(self.wo(F.gelu(gated) * non_gated) + x)


class JinaBertLayer(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.attention = JinaBertAttention(config)
        self.mlp = JinaBertGLUMLP(config)

    def forward(self, x: torch.Tensor, key_bias: torch.Tensor, slopes: torch.Tensor) -> torch.Tensor:
        return self.mlp(self.attention(x, key_bias, slopes))


class JinaBertEncoder(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(JinaBertLayer(config) for _ in range(config.num_hidden_layers))


class JinaBertPooler(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first_token))


class JinaBertModel(nn.Module):
    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.embeddings = JinaBertEmbeddings(config)
        self.encoder = JinaBertEncoder(config)
        self.pooler = JinaBertPooler(config)


class JinaBertForReranking(nn.Module):
    """JinaBERT encoder + tanh pooler + one-logit classifier: ``(input_ids, attention_mask) -> logits [B]``."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = JinaBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.register_buffer("alibi_slopes", alibi_slopes(config.num_attention_heads), persistent=False)

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Raw logits (fp32, before sigmoid) for a right-padded batch ``[B, L]`` whose first token is ``<s>``."""
        key_bias = torch.zeros(attention_mask.shape, dtype=torch.float32, device=attention_mask.device)
        key_bias.masked_fill_(attention_mask == 0, torch.finfo(torch.float32).min)
        x = self.bert.embeddings(input_ids)
        for layer in self.bert.encoder.layer:
            x = layer(x, key_bias, self.alibi_slopes)
        return self.classifier(self.bert.pooler(x[:, 0])).squeeze(-1).float()
