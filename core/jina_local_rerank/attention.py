"""How one forward pass attends: symmetric ALiBi self-attention over packed sequences, one class per mode.

The model lays a batch's sequences end to end (``[tokens, ...]``, no padding) and hands each layer's queries,
keys and values to an attention object built once per forward pass from the sequences' lengths. Each mode
computes the same function (``softmax(q k^T / sqrt(d) + ALiBi) v`` within each sequence) its own way:

- :class:`ExactLengthAttention`: one kernel call per sequence at its exact length, no padding work; long
  sequences skip keys beyond each head's ALiBi reach. Suits CPUs.
- :class:`PaddedAttention`: the sequences padded into one masked batch, one kernel call. Suits GPUs.

Scores are fp32 whatever the weights' dtype: the ALiBi bias reaches ``-slope * 8191``, which fp16/bf16 cannot
hold exactly.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod
from collections.abc import Sequence

import torch
import torch.nn.functional as F

# Upper bound on attention-score (and bias) elements of one attention call, all heads: 64 MiB in fp32.
# Longer sequences are processed in blocks of query rows, so memory stays bounded at any length; larger
# blocks mean fewer, more efficient kernel calls.
ATTENTION_BLOCK_ELEMENTS = 1 << 24

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


def alibi_bias(slopes: torch.Tensor, query_positions: range, length: int) -> torch.Tensor:
    """Symmetric ALiBi bias ``-slope[h] * |i - j|`` for query positions ``i`` and keys ``j`` in ``0..length-1``.

    Returns fp32 ``[num_heads, len(query_positions), length]``; built per batch, never for the full 8192 window.
    """
    device = slopes.device
    query_pos = torch.arange(query_positions.start, query_positions.stop, device=device, dtype=torch.float32)
    key_pos = torch.arange(length, device=device, dtype=torch.float32)
    distance = (query_pos[:, None] - key_pos[None, :]).abs()
    return -slopes[:, None, None] * distance


def alibi_band(slopes: torch.Tensor, num_queries: int, width: int) -> torch.Tensor:
    """``band[h, i, t] = -slope[h] * |t - i - (width - 1)|``, fp32 ``[num_heads, num_queries, 2 * width - 1]``.

    Every block of ALiBi bias a sequence of up to ``width`` tokens needs is a view of it (see
    :meth:`ExactLengthAttention.bias`), so it is built once per forward pass and shared by all blocks and layers.
    """
    device = slopes.device
    offsets = torch.arange(2 * width - 1, device=device, dtype=torch.float32) - (width - 1)
    distance = (offsets[None, :] - torch.arange(num_queries, device=device, dtype=torch.float32)[:, None]).abs()
    return -slopes[:, None, None] * distance


class PackedAttention(ABC):
    """Attention for one forward pass over sequences of ``lengths`` tokens laid end to end.

    ``offsets[i]`` is the packed row where sequence ``i`` starts, and ``cls_rows`` the same as a tensor: the rows
    of each sequence's ``<s>`` token, the only rows the pooler reads. Called with every token's queries, or with
    ``cls_only`` the ``<s>`` rows' queries alone (the last layer), it returns the attention context in the shape
    of ``q``.
    """

    def __init__(self, lengths: Sequence[int], slopes: torch.Tensor) -> None:
        self.lengths = list(lengths)
        self.offsets = [0]
        for length in self.lengths[:-1]:
            self.offsets.append(self.offsets[-1] + length)
        self.slopes = slopes
        self.cls_rows = torch.tensor(self.offsets, device=slopes.device)
        self.width = max(self.lengths)

    @abstractmethod
    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool) -> torch.Tensor:
        """``k, v`` ``[tokens, heads, d]`` packed; ``q`` the same, or ``[sequences, heads, d]`` with ``cls_only``."""


def _key_windows(
    q_block: torch.Tensor, key_norm: torch.Tensor, slopes: torch.Tensor, query_positions: range, length: int
) -> list[range]:
    """Per head, the keys whose attention weight from ``query_positions`` can exceed e^-NEGLIGIBLE_LOGIT of the best.

    ``q_block`` is ``[1, heads, len(query_positions), d]``, ``key_norm`` the largest key norm per head. Each query
    attends to itself, and ``q.k_j - q.k_i <= |q| (|k_j| + |k_i|)``, so beyond
    ``(2 |q| max|k| scale + NEGLIGIBLE_LOGIT) / slope`` tokens the ALiBi penalty alone makes a key negligible.
    """
    spread = 2 * q_block[0].norm(dim=-1).amax(-1) * key_norm / math.sqrt(q_block.shape[-1])
    reach = ((spread + NEGLIGIBLE_LOGIT) / slopes).nan_to_num(nan=length).clamp(max=length).ceil()
    start, stop = query_positions.start, query_positions.stop
    return [range(max(0, start - r), min(length, stop + r)) for r in map(int, reach.tolist())]


class ExactLengthAttention(PackedAttention):
    """One attention call per sequence at its exact length (no padding work): the CPU mode.

    Queries are taken ``block_queries`` at a time, so scores stay within ``ATTENTION_BLOCK_ELEMENTS``. Sequences
    of at least ``WINDOWED_MIN_LENGTH`` tokens attend, per head and block of queries, only to the keys within the
    head's ALiBi reach (see :func:`_key_windows`).
    """

    def __init__(self, lengths: Sequence[int], slopes: torch.Tensor) -> None:
        super().__init__(lengths, slopes)
        num_heads = slopes.shape[0]
        self.block_queries = min(self.width, max(1, ATTENTION_BLOCK_ELEMENTS // (num_heads * self.width)))
        if self.block_queries == self.width:
            # Every sequence's bias is a corner of one square: rows only ``width`` apart, which the CPU flash kernel
            # reads faster than the band's rows ``2 * width - 1`` apart.
            self._square = alibi_bias(slopes, range(self.width), self.width)
        else:
            self._band = alibi_band(slopes, self.block_queries, self.width)

    def bias(self, query_positions: range, keys: range, heads: slice = slice(None)) -> torch.Tensor:
        """ALiBi bias ``[1, heads, len(query_positions), len(keys)]`` within one sequence (a view, not a copy)."""
        if self.block_queries == self.width:
            return self._square[None, heads, query_positions.start : query_positions.stop, keys.start : keys.stop]
        start = self.width - 1 - query_positions.start
        return self._band[None, heads, : len(query_positions), start + keys.start : start + keys.stop]

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool) -> torch.Tensor:
        out = torch.empty_like(q)
        for index, (start, length) in enumerate(zip(self.offsets, self.lengths)):
            # [1, heads, L, d]: with a batch dimension, CPUs get the fused (flash) kernel rather than the math path.
            ks, vs = (t[start : start + length].transpose(0, 1)[None] for t in (k, v))
            q_start, num_queries = (index, 1) if cls_only else (start, length)
            qs = q[q_start : q_start + num_queries].transpose(0, 1)[None]
            windowed = length >= WINDOWED_MIN_LENGTH
            if windowed:
                key_norm = ks[0].norm(dim=-1).amax(-1)
            step = min(self.block_queries, WINDOWED_BLOCK_ROWS) if windowed else self.block_queries
            for block_start in range(0, num_queries, step):
                positions = range(block_start, min(num_queries, block_start + step))
                q_block = qs[:, :, positions.start : positions.stop]
                target = out[q_start + positions.start : q_start + positions.stop]
                windows = _key_windows(q_block, key_norm, self.slopes, positions, length) if windowed else []
                if all(len(keys) == length for keys in windows):
                    context = F.scaled_dot_product_attention(
                        q_block, ks, vs, attn_mask=self.bias(positions, range(length))
                    )
                    target.copy_(context[0].transpose(0, 1))
                    continue
                for head, keys in enumerate(windows):
                    heads = slice(head, head + 1)
                    context = F.scaled_dot_product_attention(
                        q_block[:, heads],
                        ks[:, heads, keys.start : keys.stop],
                        vs[:, heads, keys.start : keys.stop],
                        attn_mask=self.bias(positions, keys, heads),
                    )
                    target[:, head] = context[0, 0]
        return out


class PaddedAttention(PackedAttention):
    """The sequences padded into one masked batch ``[sequences, heads, width, d]``, one call: the GPU mode.

    Queries are taken ``block_queries`` at a time, so scores stay within ``ATTENTION_BLOCK_ELEMENTS``.
    """

    def __init__(self, lengths: Sequence[int], slopes: torch.Tensor) -> None:
        super().__init__(lengths, slopes)
        num_sequences, num_heads, device = len(self.lengths), slopes.shape[0], slopes.device
        self.block_queries = min(
            self.width, max(1, ATTENTION_BLOCK_ELEMENTS // (num_sequences * num_heads * self.width))
        )
        self._key_mask = torch.zeros((num_sequences, self.width), dtype=torch.float32, device=device)
        for sequence, length in enumerate(self.lengths):
            self._key_mask[sequence, length:] = torch.finfo(torch.float32).min
        # Packed row of every real token, and its slot in the padded [sequences * width] layout.
        self._packed_rows = torch.cat([torch.arange(o, o + n, device=device) for o, n in zip(self.offsets, self.lengths)])
        self._padded_rows = torch.cat(
            [torch.arange(s * self.width, s * self.width + n, device=device) for s, n in enumerate(self.lengths)]
        )
        self._full_mask = self.mask(range(self.width)) if self.block_queries == self.width else None

    def mask(self, query_positions: range) -> torch.Tensor:
        """ALiBi bias plus the padding mask, ``[sequences, heads, len(query_positions), width]``."""
        return alibi_bias(self.slopes, query_positions, self.width)[None] + self._key_mask[:, None, None, :]

    def _pad(self, t: torch.Tensor) -> torch.Tensor:
        padded = t.new_zeros((len(self.lengths) * self.width, *t.shape[1:]))
        padded[self._padded_rows] = t[self._packed_rows]
        return padded.view(len(self.lengths), self.width, t.shape[1], -1).transpose(1, 2)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool) -> torch.Tensor:
        kp, vp = self._pad(k), self._pad(v)
        if cls_only:
            return F.scaled_dot_product_attention(q[:, :, None], kp, vp, attn_mask=self.mask(range(1)))[:, :, 0]
        qp = self._pad(q)
        if self._full_mask is not None:
            context = F.scaled_dot_product_attention(qp, kp, vp, attn_mask=self._full_mask)
        else:
            blocks = []
            for block_start in range(0, self.width, self.block_queries):
                positions = range(block_start, min(self.width, block_start + self.block_queries))
                q_block = qp[:, :, positions.start : positions.stop]
                blocks.append(F.scaled_dot_product_attention(q_block, kp, vp, attn_mask=self.mask(positions)))
            context = torch.cat(blocks, dim=2)
        flat = context.transpose(1, 2).reshape(len(self.lengths) * self.width, q.shape[1], -1)
        return flat[self._padded_rows]
