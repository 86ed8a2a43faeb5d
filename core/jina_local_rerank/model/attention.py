"""How one forward pass attends: symmetric ALiBi self-attention over packed sequences, one class per mode.

The model lays a batch's sequences end to end (``[tokens, ...]``, no padding) and hands each layer's queries,
keys and values to an attention object built once per forward pass from the sequences' lengths. Each mode
computes the same function (``softmax(q k^T / sqrt(d) + ALiBi) v`` within each sequence) its own way:

- :class:`ExactLengthAttention`: one kernel call per sequence at its exact length, no padding work; long
  sequences skip keys beyond each head's ALiBi reach. Suits CPUs.
- :class:`NativeAttention`: every sequence in one call of the project's own CPU kernel, in bf16 products (the
  low-precision CPU modes).
- :class:`PaddedAttention`: the sequences padded into one masked batch, one kernel call.
- :class:`FlexAttention`: every sequence in one fused ``flex_attention`` call over the packed tokens, the ALiBi
  bias computed inside the kernel. Suits GPUs (torch >= 2.5).

Scores are fp32 whatever the weights' dtype: the ALiBi bias reaches ``-slope * 8191``, which fp16/bf16 cannot
hold exactly. The exact-length and padded modes pass the bias as a tensor, so they cast q, k, v to fp32; the native
and flex kernels add it to their fp32 scores themselves, so q, k, v stay in the model's dtype.
"""

from __future__ import annotations

import functools
import importlib.util
import math
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from .native_kernels import native_kernels_problem
from .quantization import float_weight
from .row_blocks import blocked_linears

try:
    from torch.nn.attention.flex_attention import BlockMask, flex_attention
except ImportError:  # torch < 2.5
    BlockMask = flex_attention = None

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

# FlexAttention pads a pass's tokens to a power of two of at least FLEX_MIN_TOKENS, so compiled kernels (specialised
# to their shapes) are built once per such bucket. Its BlockMask tiles are FLEX_BLOCK x FLEX_BLOCK tokens.
# Compiled kernels stay cached for up to FLEX_MAX_BUCKETS buckets (torch's default keeps 8 shapes, then falls back
# to the eager reference, which holds every score in memory).
FLEX_MIN_TOKENS = 1024
FLEX_BLOCK = 128
FLEX_MAX_BUCKETS = 64


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
    and dtype of ``q``.
    """

    # Whether a pass's memory and work grow with its packed tokens alone (then batch budgets count packed tokens)
    # rather than with rows x longest (then they count padded tokens).
    packed_budget: ClassVar[bool] = False

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

    def cls_context(self, x: torch.Tensor, q: torch.Tensor, key: nn.Module, value: nn.Module) -> torch.Tensor:
        """The last layer's context of the ``<s>`` rows, ``[sequences, heads, d]``, from the layer's input ``x``
        ``[tokens, H]``, the ``<s>`` rows' queries ``q`` ``[sequences, heads, d]`` and the key and value layers."""
        k, v = (t.view(len(t), *q.shape[1:]) for t in blocked_linears([key, value], x))
        return self(q, k, v, cls_only=True)

    @classmethod
    def warm_up_batches(cls, max_batch_tokens: int, max_length: int) -> list[list[int]]:
        """Sequence lengths of the forward passes after which no batch of up to ``max_batch_tokens`` tokens
        (sequences of up to ``max_length``) meets a first-use cost (compilation): one short pass by default."""
        return [[min(8, max_length)]]


def _fp32_scores(call: Callable[..., torch.Tensor]) -> Callable[..., torch.Tensor]:
    """Run a mode's ``__call__`` on fp32 q, k, v and return q's dtype: modes that pass the ALiBi bias as a tensor
    need fp32 scores (the bias reaches ``-slope * 8191``, which fp16/bf16 cannot hold exactly)."""

    @functools.wraps(call)
    def fp32_call(
        self: PackedAttention, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool
    ) -> torch.Tensor:
        return call(self, q.float(), k.float(), v.float(), cls_only).to(q.dtype)

    return fp32_call


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

    @_fp32_scores
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
    """The sequences padded into one masked batch ``[sequences, heads, width, d]``, one call: GPUs without
    :class:`FlexAttention`.

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
        self._packed_rows = torch.cat(
            [torch.arange(o, o + n, device=device) for o, n in zip(self.offsets, self.lengths)]
        )
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

    @_fp32_scores
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


def flex_bucket(tokens: int) -> int:
    """The packed length (tokens) :class:`FlexAttention` pads a pass of ``tokens`` tokens to."""
    return max(FLEX_MIN_TOKENS, 1 << (tokens - 1).bit_length())


def flex_available(device: torch.device) -> bool:
    """Whether :class:`FlexAttention` runs compiled on ``device``: torch >= 2.5 with Triton (which compiles the
    kernel), and a CUDA GPU of compute capability 8.0 or later (bf16 tensor cores, the kernel's target)."""
    return (
        flex_attention is not None
        and device.type == "cuda"
        and importlib.util.find_spec("triton") is not None
        and torch.cuda.get_device_capability(device) >= (8, 0)
    )


class NativeAttention(PackedAttention):
    """Every sequence and head of a forward pass in one call of the native kernel (bf16 products, fp32 bias and
    softmax; see ``native_kernels.py``): the CPU mode of ``dtype="bfloat16"`` and ``"int8"`` where it runs.

    q, k and v stay in the model's dtype (bf16, or fp32 around int8 linear layers); the kernel rounds them to
    bf16 for the products. Head sizes it is not built for go to :class:`ExactLengthAttention`.
    """

    HEAD_SIZES: ClassVar[tuple[int, ...]] = (32, 64)

    def __init__(self, lengths: Sequence[int], slopes: torch.Tensor) -> None:
        super().__init__(lengths, slopes)
        self._lengths = torch.tensor(self.lengths, dtype=torch.int64)

    @functools.cached_property
    def _fallback(self) -> ExactLengthAttention:
        """The pass's exact-length attention, built once if a head size needs it (its bias serves every layer)."""
        return ExactLengthAttention(self.lengths, self.slopes)

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool) -> torch.Tensor:
        if q.shape[-1] not in self.HEAD_SIZES:
            return self._fallback(q, k, v, cls_only)
        return torch.ops.jina_local_rerank_cpu.alibi_attention(q, k, v, self._lengths, self.slopes, cls_only)

    def cls_context(self, x: torch.Tensor, q: torch.Tensor, key: nn.Module, value: nn.Module) -> torch.Tensor:
        """Without any key or value row: per head, ``q . k_j = u . x_j`` plus a term the same for every key (the
        softmax drops it) with ``u = W_k^T q``, and the context is ``W_v (sum_j p_j x_j) + b_v`` (the weights add up
        to 1). The native ``cls_attention`` takes the weighted sums in fp32 (``native/cls_attention.cpp``); the
        projections of ``u`` and of the sums are one small product per sequence. The last layer's key and value
        projections were 4% of the 1 x 100 workload's time."""
        heads, d = q.shape[1:]
        if heads % 4 or x.shape[1] % 16:
            return super().cls_context(x, q, key, value)
        key_weight, _ = float_weight(key)  # the key bias adds the same to every score of a head
        value_weight, value_bias = float_weight(value)
        u = torch.bmm(q.float().transpose(0, 1), key_weight.view(heads, d, -1))  # [heads, sequences, H]
        sums = torch.ops.jina_local_rerank_cpu.cls_attention(x, u, self._lengths, self.slopes, d**-0.5)
        value_weight = value_weight.view(heads, d, -1).transpose(1, 2)
        if value_bias is None:
            context = torch.bmm(sums, value_weight)
        else:
            context = torch.baddbmm(value_bias.view(heads, 1, d), sums, value_weight)
        return context.transpose(0, 1).to(q.dtype)


def default_attention(device: torch.device, dtype: torch.dtype = torch.float32) -> type[PackedAttention]:
    """The attention mode for ``device`` and the weights' ``dtype`` (``torch.qint8`` for int8): on CPUs the native
    kernel for bf16 and int8 where it runs, else exact-length; flex on recent CUDA GPUs, padded elsewhere."""
    if device.type == "cpu":
        if dtype in (torch.bfloat16, torch.qint8) and native_kernels_problem() is None:
            return NativeAttention
        return ExactLengthAttention
    return FlexAttention if flex_available(device) else PaddedAttention


def _tile_documents(document: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Per ``FLEX_BLOCK`` tile of ``document`` ids: the lowest and highest id (negative ids ignored), and whether
    the tile holds one id throughout. An empty tile gets an empty range (lowest > highest)."""
    tiles = document.view(-1, FLEX_BLOCK)
    real = tiles >= 0
    lowest = torch.where(real, tiles, torch.iinfo(tiles.dtype).max).amin(-1)
    highest = torch.where(real, tiles, -1).amax(-1)
    return lowest, highest, real.all(-1) & (lowest == highest)


def _ordered_tiles(dense: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``[query tiles, key tiles]`` booleans as BlockMask's ``(num_blocks [1, 1, q], indices [1, 1, q, k])``."""
    dense = dense.to(torch.int32)
    indices = dense.argsort(dim=-1, descending=True, stable=True).to(torch.int32)
    return dense.sum(-1, dtype=torch.int32)[None, None], indices[None, None]


def document_block_mask(
    query_document: torch.Tensor, key_document: torch.Tensor, mask_mod: Callable[..., torch.Tensor]
) -> BlockMask:
    """The BlockMask of ``query_document[i] == key_document[j]``, built from tile ranges, never ``[L, L]``.

    Both id vectors (lengths multiples of ``FLEX_BLOCK``) hold packed documents: each id's tokens contiguous, ids
    increasing; negative ids (padding) match nothing. So a tile is needed iff its query and key id ranges overlap,
    and full (``mask_mod`` true throughout, so the kernel skips it) iff both hold one and the same id.
    """
    q_low, q_high, q_whole = _tile_documents(query_document)
    k_low, k_high, k_whole = _tile_documents(key_document)
    touching = (q_low[:, None] <= k_high[None, :]) & (k_low[None, :] <= q_high[:, None])
    full = q_whole[:, None] & k_whole[None, :] & (q_low[:, None] == k_low[None, :])
    return BlockMask.from_kv_blocks(
        *_ordered_tiles(touching & ~full),
        *_ordered_tiles(full),
        BLOCK_SIZE=FLEX_BLOCK,
        mask_mod=mask_mod,
        seq_lengths=(len(query_document), len(key_document)),
    )


def _document_mask(query_document: torch.Tensor, key_document: torch.Tensor) -> Callable[..., torch.Tensor]:
    def mask_mod(batch, head, q_idx, kv_idx):  # noqa: ANN001, ANN202 (flex_attention's signature)
        return query_document[q_idx] == key_document[kv_idx]

    return mask_mod


def _alibi_score(
    slopes: torch.Tensor, query_position: torch.Tensor, key_position: torch.Tensor
) -> Callable[..., torch.Tensor]:
    def score_mod(score, batch, head, q_idx, kv_idx):  # noqa: ANN001, ANN202 (flex_attention's signature)
        # ``score`` is fp32 inside the kernel, whatever the dtype of q and k.
        return score - slopes[head] * (query_position[q_idx] - key_position[kv_idx]).abs()

    return score_mod


_compiled_flex: Callable[..., torch.Tensor] | None = None
_compiled_shapes: set[tuple] = set()
_compile_lock = threading.Lock()


def _run_compiled_flex(key: tuple, *args: torch.Tensor, **kwargs: object) -> torch.Tensor:
    """``torch.compile(flex_attention)(*args, **kwargs)``; the first call per ``key`` (shape, dtype, device)
    compiles, one thread at a time."""
    global _compiled_flex
    if key in _compiled_shapes:
        return _compiled_flex(*args, **kwargs)
    with _compile_lock:
        if _compiled_flex is None:
            import torch._dynamo

            torch._dynamo.config.cache_size_limit = max(torch._dynamo.config.cache_size_limit, FLEX_MAX_BUCKETS)
            _compiled_flex = torch.compile(flex_attention, dynamic=False)
        out = _compiled_flex(*args, **kwargs)
        _compiled_shapes.add(key)
        return out


class FlexAttention(PackedAttention):
    """Every sequence in one fused ``flex_attention`` call per layer, q/k/v in the model's dtype: the GPU mode.

    The packed tokens are padded to ``flex_bucket(tokens)`` (compiled kernels are specialised per bucket, so each
    bucket compiles once; see :meth:`warm_up_batches`). A document mask keeps each sequence to itself: its
    BlockMask (:func:`document_block_mask`) skips tiles between sequences and padding. The ALiBi bias
    ``-slope[h] * |pos_q - pos_k|`` is a ``score_mod`` the kernel computes in fp32 on its fp32 scores, so no
    bias or score tensor ever exists in memory (``[heads, L, L]`` at no length); the mode holds O(tokens) ids
    and positions plus the ``(tokens / 128)^2`` tile tables. With ``cls_only`` the same kernel shape serves each
    sequence's ``<s>`` query (query rows beyond the sequences match nothing and cost nothing).

    The kernel is compiled where ``compiled`` says (default: on CUDA); elsewhere torch's eager reference runs the
    same masks and scores, materialising the scores (CPU tests).
    """

    packed_budget = True
    compiled: ClassVar[bool | None] = None

    def __init__(self, lengths: Sequence[int], slopes: torch.Tensor) -> None:
        if flex_attention is None:
            raise RuntimeError(
                f"FlexAttention needs torch >= 2.5 (torch.nn.attention.flex_attention), not {torch.__version__}"
            )
        super().__init__(lengths, slopes)
        device = slopes.device
        tokens = sum(self.lengths)
        self.bucket = flex_bucket(tokens)
        padding = self.bucket - tokens
        sequences = torch.arange(len(self.lengths), device=device, dtype=torch.int32)
        document = torch.repeat_interleave(sequences, torch.tensor(self.lengths, device=device), output_size=tokens)
        position = torch.arange(tokens, device=device, dtype=torch.int32) - self.cls_rows.to(torch.int32)[document]
        # Padding queries (id -1) and padding keys (id -2) match nothing. Every tensor the masks read is its own
        # (none shared between queries and keys), so both calls meet one compiled kernel per bucket.
        key_document = F.pad(document, (0, padding), value=-2)
        key_position = F.pad(position, (0, padding))
        self._masks = {
            False: self._mask_and_score(
                F.pad(document, (0, padding), value=-1), key_position.clone(), key_document, key_position
            ),
            True: self._mask_and_score(
                F.pad(sequences, (0, self.bucket - len(self.lengths)), value=-1),
                torch.zeros_like(key_position),
                key_document,
                key_position,
            ),
        }
        self._compiled = device.type == "cuda" if self.compiled is None else self.compiled

    def _mask_and_score(
        self,
        query_document: torch.Tensor,
        query_position: torch.Tensor,
        key_document: torch.Tensor,
        key_position: torch.Tensor,
    ) -> tuple[BlockMask, Callable[..., torch.Tensor]]:
        mask = document_block_mask(query_document, key_document, _document_mask(query_document, key_document))
        return mask, _alibi_score(self.slopes, query_position, key_position)

    def _pad(self, t: torch.Tensor) -> torch.Tensor:
        """``[rows, heads, d]`` -> ``[1, heads, bucket, d]``, zero rows after ``rows``."""
        return F.pad(t, (0, 0, 0, 0, 0, self.bucket - len(t))).transpose(0, 1)[None]

    def __call__(self, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, cls_only: bool) -> torch.Tensor:
        block_mask, score_mod = self._masks[cls_only]
        args = [self._pad(t) for t in (q, k, v)]
        if self._compiled:
            key = (self.bucket, *q.shape[1:], q.dtype, q.device)
            context = _run_compiled_flex(key, *args, score_mod=score_mod, block_mask=block_mask)
        else:
            # The kernel's q k^T accumulates and stays in fp32; the eager reference would round it to q's dtype.
            args[0], args[1] = args[0].float(), args[1].float()
            context = flex_attention(*args, score_mod=score_mod, block_mask=block_mask).to(q.dtype)
        return context[0].transpose(0, 1)[: len(q)]

    @classmethod
    def warm_up_batches(cls, max_batch_tokens: int, max_length: int) -> list[list[int]]:
        """One pass per bucket up to ``flex_bucket(max_batch_tokens)``, each filling its bucket exactly."""
        batches = []
        bucket = FLEX_MIN_TOKENS
        while bucket <= flex_bucket(max_batch_tokens):
            count = -(-bucket // max_length)
            batches.append([bucket // count + (i < bucket % count) for i in range(count)])
            bucket *= 2
        return batches
