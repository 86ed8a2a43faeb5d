"""JinaBERT cross-encoder in plain PyTorch.

Module names mirror the checkpoint's tensor names (``bert.encoder.layer.0.mlp.gated_layers.weight`` is
``model.bert.encoder.layer[0].mlp.gated_layers.weight``), so loading is a straight key match. The model knows
nothing of tokenization, batching or files: it maps packed ``input_ids`` and their ``lengths`` to one logit per
sequence.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from .config import JinaBertConfig

# Upper bound on attention-score (and bias) elements of one attention call, all heads: 64 MiB in fp32.
# Longer sequences are processed in blocks of query rows, so memory stays bounded at any length; larger
# blocks mean fewer, more efficient kernel calls.
ATTENTION_BLOCK_ELEMENTS = 1 << 24

# Token rows per pass of the row-wise work (projections, output, feed-forward) on CPUs: 1,024 rows keep a block's
# activations in the caches from one GEMM to the next (the projections run ~25% faster than on whole batches).
CPU_BLOCK_ROWS = 1024

# An attention weight below e^-40 of its row's largest changes nothing in fp32 (even 8,192 of them add < 4e-14).
# ALiBi pushes keys beyond a head's reach that low, so sequences of at least WINDOWED_MIN_LENGTH tokens skip them.
# Query rows are then taken WINDOWED_BLOCK_ROWS at a time: a block's keys span its rows plus twice the reach.
NEGLIGIBLE_LOGIT = 40.0
WINDOWED_MIN_LENGTH = 1024
WINDOWED_BLOCK_ROWS = 256


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
    """``LayerNorm(word[ids] + token_type[0])``: no position embeddings (ALiBi replaces them)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        # Uninitialized (the checkpoint fills them): nn.Embedding's random init on the meta device would import
        # torch._dynamo, seconds of load time.
        self.word_embeddings = nn.Embedding(
            config.vocab_size, config.hidden_size, _weight=torch.empty(config.vocab_size, config.hidden_size)
        )
        self.token_type_embeddings = nn.Embedding(
            config.type_vocab_size,
            config.hidden_size,
            _weight=torch.empty(config.type_vocab_size, config.hidden_size),
        )
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, input_ids: torch.Tensor) -> torch.Tensor:
        # Token type ids are always 0 for this model; row 0 is added to every position.
        return self.LayerNorm(self.word_embeddings(input_ids) + self.token_type_embeddings.weight[0])


def alibi_band(slopes: torch.Tensor, rows: int, width: int) -> torch.Tensor:
    """``band[h, i, t] = -slope[h] * |t - i - (width - 1)|``, fp32 ``[num_heads, rows, 2 * width - 1]``.

    Every block of ALiBi bias a sequence of up to ``width`` tokens needs is a view of it (see
    :meth:`PackedBatch.exact_mask`), so it is built once per forward pass and shared by all blocks and layers.
    """
    device = slopes.device
    offsets = torch.arange(2 * width - 1, device=device, dtype=torch.float32) - (width - 1)
    distance = (offsets[None, :] - torch.arange(rows, device=device, dtype=torch.float32)[:, None]).abs()
    return -slopes[:, None, None] * distance


class PackedBatch:
    """Sequences laid end to end (no padding): ``lengths`` and ``offsets`` in tokens, plus the shared ALiBi bias.

    ``padded`` selects attention over one padded, masked batch (one kernel call, for GPUs) instead of one call
    per sequence at its exact length (no padding work, for CPUs). Either way the bias is built once per forward
    pass for all layers, and attention scores are materialized ``block_rows`` query rows at a time at most.
    """

    def __init__(self, lengths: list[int], slopes: torch.Tensor, padded: bool) -> None:
        self.lengths = lengths
        self.offsets = [0]
        for length in lengths[:-1]:
            self.offsets.append(self.offsets[-1] + length)
        self.slopes = slopes
        self.padded = padded
        # Each sequence's first token (``<s>``): the only row the pooler reads.
        self.first = torch.tensor(self.offsets, device=slopes.device)
        num_heads = slopes.shape[0]
        self.width = max(lengths)
        rows = len(lengths) if padded else 1
        self.block_rows = min(self.width, max(1, ATTENTION_BLOCK_ELEMENTS // (rows * num_heads * self.width)))
        if padded:
            self.key_bias = torch.zeros((rows, self.width), dtype=torch.float32, device=slopes.device)
            for row, length in enumerate(lengths):
                self.key_bias[row, length:] = torch.finfo(torch.float32).min
            if self.block_rows == self.width:
                self.bias = alibi_bias(slopes, range(self.width), self.width)[None] + self.key_bias[:, None, None, :]
        elif self.block_rows == self.width:
            # Every sequence's bias is a corner of one square: rows only ``width`` apart, which the CPU flash kernel
            # reads faster than the band's rows ``2 * width - 1`` apart.
            self.square = alibi_bias(slopes, range(self.width), self.width)
        else:
            self.band = alibi_band(slopes, self.block_rows, self.width)

    def exact_mask(self, rows: range, keys: range, heads: slice = slice(None)) -> torch.Tensor:
        """ALiBi bias ``[1, heads, len(rows), len(keys)]`` from query ``rows`` to ``keys`` of a sequence (a view)."""
        if self.block_rows == self.width:
            return self.square[None, heads, rows.start : rows.stop, keys.start : keys.stop]
        start = self.width - 1 - rows.start
        return self.band[None, heads, : len(rows), start + keys.start : start + keys.stop]


def _key_windows(
    q_rows: torch.Tensor, key_norm: torch.Tensor, slopes: torch.Tensor, rows: range, length: int
) -> list[range]:
    """Per head, the keys whose attention weight from query ``rows`` can exceed e^-NEGLIGIBLE_LOGIT of the largest.

    ``q_rows`` is ``[1, heads, len(rows), d]``, ``key_norm`` the largest key norm per head. Each row attends to
    itself, and ``q.k_j - q.k_i <= |q| (|k_j| + |k_i|)``, so beyond
    ``(2 |q| max|k| scale + NEGLIGIBLE_LOGIT) / slope`` tokens the ALiBi penalty alone makes a key negligible.
    """
    spread = 2 * q_rows[0].norm(dim=-1).amax(-1) * key_norm / math.sqrt(q_rows.shape[-1])
    reach = ((spread + NEGLIGIBLE_LOGIT) / slopes).nan_to_num(nan=length).clamp(max=length).ceil()
    return [range(max(0, rows.start - r), min(length, rows.stop + r)) for r in map(int, reach.tolist())]


def _attention_exact(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: PackedBatch, first_only: bool
) -> torch.Tensor:
    """Attention per sequence at its exact length: ``k, v`` ``[T, heads, d]`` packed -> ``[len(q), heads, d]``.

    ``q`` holds every token's query (``[T, heads, d]``), or with ``first_only`` each sequence's first token's.
    Sequences of at least ``WINDOWED_MIN_LENGTH`` tokens attend, per head and block of rows, only to the keys
    within the head's ALiBi reach (see :func:`_key_windows`).
    """
    out = torch.empty_like(q)
    for index, (start, length) in enumerate(zip(batch.offsets, batch.lengths)):
        # [1, heads, L, d]: with a batch dimension, CPUs get the fused (flash) kernel rather than the math path.
        ks, vs = (t[start : start + length].transpose(0, 1)[None] for t in (k, v))
        query_start, query_rows = (index, 1) if first_only else (start, length)
        qs = q[query_start : query_start + query_rows].transpose(0, 1)[None]
        windowed = length >= WINDOWED_MIN_LENGTH
        if windowed:
            key_norm = ks[0].norm(dim=-1).amax(-1)
        step = min(batch.block_rows, WINDOWED_BLOCK_ROWS) if windowed else batch.block_rows
        for first in range(0, query_rows, step):
            rows = range(first, min(query_rows, first + step))
            q_rows, target = qs[:, :, rows.start : rows.stop], out[query_start + rows.start : query_start + rows.stop]
            windows = _key_windows(q_rows, key_norm, batch.slopes, rows, length) if windowed else []
            if all(len(keys) == length for keys in windows):
                context = F.scaled_dot_product_attention(
                    q_rows, ks, vs, attn_mask=batch.exact_mask(rows, range(length))
                )
                target.copy_(context[0].transpose(0, 1))
                continue
            for head, keys in enumerate(windows):
                heads = slice(head, head + 1)
                context = F.scaled_dot_product_attention(
                    q_rows[:, heads],
                    ks[:, heads, keys.start : keys.stop],
                    vs[:, heads, keys.start : keys.stop],
                    attn_mask=batch.exact_mask(rows, keys, heads),
                )
                target[:, head] = context[0, 0]
    return out


def _attention_padded(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, batch: PackedBatch, first_only: bool
) -> torch.Tensor:
    """Attention over the sequences padded into one masked batch ``[B, heads, L, d]``; returns ``[len(q), heads, d]``.

    ``q`` holds every token's query (``[T, heads, d]``), or with ``first_only`` each sequence's first token's.
    """
    rows, longest, num_heads = len(batch.lengths), max(batch.lengths), q.shape[1]
    index = torch.cat(
        [torch.arange(o, o + n, device=q.device) for o, n in zip(batch.offsets, batch.lengths)]
    )
    slot = torch.cat(
        [torch.arange(row * longest, row * longest + n, device=q.device) for row, n in enumerate(batch.lengths)]
    )

    def pad(t: torch.Tensor) -> torch.Tensor:
        padded = t.new_zeros((rows * longest, *t.shape[1:]))
        padded[slot] = t[index]
        return padded.view(rows, longest, num_heads, -1).transpose(1, 2)

    kp, vp = pad(k), pad(v)
    if first_only:
        mask = alibi_bias(batch.slopes, range(1), longest)[None] + batch.key_bias[:, None, None, :]
        context = F.scaled_dot_product_attention(q[:, :, None], kp, vp, attn_mask=mask)
        return context[:, :, 0]
    qp = pad(q)
    if batch.block_rows == longest:
        context = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=batch.bias)
    else:
        blocks = []
        for start in range(0, longest, batch.block_rows):
            block = range(start, min(longest, start + batch.block_rows))
            mask = alibi_bias(batch.slopes, block, longest)[None] + batch.key_bias[:, None, None, :]
            blocks.append(F.scaled_dot_product_attention(qp[:, :, block.start : block.stop], kp, vp, attn_mask=mask))
        context = torch.cat(blocks, dim=2)
    flat = context.transpose(1, 2).reshape(rows * longest, num_heads, -1)
    return flat[slot]


def cpu_row_blocks(x: torch.Tensor) -> list[slice]:
    """``x``'s rows as ``CPU_BLOCK_ROWS``-row slices on CPUs, one slice of all rows elsewhere."""
    step = CPU_BLOCK_ROWS if x.device.type == "cpu" else max(1, len(x))
    return [slice(start, start + step) for start in range(0, len(x), step)]


def blocked_linear(layer: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``layer(x)`` computed one row block (see :func:`cpu_row_blocks`) at a time into one output."""
    blocks = cpu_row_blocks(x)
    if len(blocks) == 1:
        return layer(x)
    out = x.new_empty((len(x), layer.out_features))
    for rows in blocks:
        if isinstance(layer, nn.Linear):
            torch.addmm(layer.bias, x[rows], layer.weight.t(), out=out[rows])
        else:  # dynamically quantized (dtype int8)
            out[rows] = layer(x[rows])
    return out


class JinaBertSelfAttention(nn.Module):
    """Multi-head self-attention with the symmetric ALiBi bias, over packed sequences."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.num_heads = config.num_attention_heads
        self.head_dim = config.head_dim
        self.query = nn.Linear(config.hidden_size, config.hidden_size)
        self.key = nn.Linear(config.hidden_size, config.hidden_size)
        self.value = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, x: torch.Tensor, batch: PackedBatch, first_only: bool = False) -> torch.Tensor:
        """``x`` packed ``[T, H]`` -> attention context with symmetric ALiBi, each sequence on its own.

        The context is ``[T, H]``, or with ``first_only`` ``[sequences, H]`` for each sequence's first token.
        """
        tokens, hidden = x.shape
        queries = x[batch.first] if first_only else x
        q = blocked_linear(self.query, queries).view(len(queries), self.num_heads, self.head_dim)
        k, v = (blocked_linear(proj, x).view(tokens, self.num_heads, self.head_dim) for proj in (self.key, self.value))
        # The ALiBi bias reaches -slope * 8191; in fp16/bf16 it would lose precision, so scores are fp32.
        if q.dtype != torch.float32:
            q, k, v = q.float(), k.float(), v.float()
        attend = _attention_padded if batch.padded else _attention_exact
        return attend(q, k, v, batch, first_only).reshape(len(queries), hidden).to(x.dtype)


class JinaBertSelfOutput(nn.Module):
    """Attention output projection, residual and post-norm."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)
        self.LayerNorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, context: torch.Tensor, residual: torch.Tensor) -> torch.Tensor:
        return self.LayerNorm(self.dense(context) + residual)


class JinaBertAttention(nn.Module):
    """``attention.self`` and ``attention.output``, which :class:`JinaBertLayer` runs in turn."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.self = JinaBertSelfAttention(config)
        self.output = JinaBertSelfOutput(config)


class JinaBertGLUMLP(nn.Module):
    """GEGLU feed-forward: exact (erf) GELU on the first half of ``gated_layers``, times the second half."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.intermediate_size = config.intermediate_size
        self.gated_layers = nn.Linear(config.hidden_size, 2 * config.intermediate_size, bias=False)
        self.wo = nn.Linear(config.intermediate_size, config.hidden_size)
        self.layernorm = nn.LayerNorm(config.hidden_size, eps=config.layer_norm_eps)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if isinstance(self.gated_layers, nn.Linear):
            # One GEMM per half gives contiguous outputs, so GELU and the product run without strided copies.
            weight = self.gated_layers.weight
            gated = F.linear(x, weight[: self.intermediate_size])
            non_gated = F.linear(x, weight[self.intermediate_size :])
        else:  # dynamically quantized (dtype int8): the packed weight cannot be sliced
            gated, non_gated = self.gated_layers(x).split(self.intermediate_size, dim=-1)
        return self.layernorm(self.wo(F.gelu(gated).mul_(non_gated)) + x)


class JinaBertLayer(nn.Module):
    """One encoder layer: attention, then the GEGLU feed-forward."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.attention = JinaBertAttention(config)
        self.mlp = JinaBertGLUMLP(config)

    def forward(self, x: torch.Tensor, batch: PackedBatch, first_only: bool = False) -> torch.Tensor:
        """``[T, H]`` -> ``[T, H]``; with ``first_only``, ``[sequences, H]`` for each sequence's first token only.

        After attention, the output block and feed-forward run one row block at a time (see :func:`cpu_row_blocks`).
        """
        context = self.attention.self(x, batch, first_only)
        residual = x[batch.first] if first_only else x
        blocks = cpu_row_blocks(context)
        if len(blocks) == 1:
            return self.mlp(self.attention.output(context, residual))
        out = torch.empty_like(residual)
        for rows in blocks:
            out[rows] = self.mlp(self.attention.output(context[rows], residual[rows]))
        return out


class JinaBertEncoder(nn.Module):
    """The stack of ``num_hidden_layers`` layers (``encoder.layer.N``)."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.layer = nn.ModuleList(JinaBertLayer(config) for _ in range(config.num_hidden_layers))


class JinaBertPooler(nn.Module):
    """``tanh(dense(x[<s>]))``: the pair representation the classifier reads."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.dense = nn.Linear(config.hidden_size, config.hidden_size)

    def forward(self, first_token: torch.Tensor) -> torch.Tensor:
        return torch.tanh(self.dense(first_token))


class JinaBertModel(nn.Module):
    """Embeddings, encoder and pooler: the ``bert.`` prefix of the checkpoint."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.embeddings = JinaBertEmbeddings(config)
        self.encoder = JinaBertEncoder(config)
        self.pooler = JinaBertPooler(config)


class JinaBertForReranking(nn.Module):
    """JinaBERT encoder + tanh pooler + one-logit classifier: ``(input_ids, lengths) -> logits [sequences]``."""

    def __init__(self, config: JinaBertConfig) -> None:
        super().__init__()
        self.config = config
        self.bert = JinaBertModel(config)
        self.classifier = nn.Linear(config.hidden_size, 1)
        self.register_buffer("alibi_slopes", alibi_slopes(config.num_attention_heads), persistent=False)

    def forward(self, input_ids: torch.Tensor, lengths: list[int], padded_attention: bool = False) -> torch.Tensor:
        """Raw logits (fp32, before sigmoid), one per sequence.

        ``input_ids`` ``[T]`` holds the sequences end to end (each starting with ``<s>``), ``lengths`` their token
        counts. Dense layers run on the ``T`` real tokens only; attention runs per sequence at its exact length,
        or with ``padded_attention`` over one padded, masked batch (fewer kernel calls on GPUs).
        """
        batch = PackedBatch(lengths, self.alibi_slopes, padded_attention)
        x = self.bert.embeddings(input_ids)
        *layers, last = self.bert.encoder.layer
        for layer in layers:
            x = layer(x, batch)
        # The pooler reads only <s>: the last layer needs keys and values of every token but queries, attention,
        # output and feed-forward for the first token alone (a quarter of the model's work skipped, same result).
        first = last(x, batch, first_only=True)
        return self.classifier(self.bert.pooler(first)).squeeze(-1).float()
