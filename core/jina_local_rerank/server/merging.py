"""Merging several requests' token sequences into one scoring call and splitting the logits back.

Framework-free: the server's micro-batcher and the Ray Serve scorer both merge and split with these functions and
count with one :class:`BatchCounters`. Lengths are in tokens; sequences are encoded pairs, special tokens included
(:meth:`Reranker.encode <jina_local_rerank.Reranker.encode>`).
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Sequence
from dataclasses import dataclass, field

from ..engine.tokenization import EncodedPairs

# How many recent scoring calls the counters remember (GET /stats, tests).
CALL_HISTORY = 1000


def sequence_tokens(sequences: Sequence[Sequence[int]]) -> int:
    """Tokens of all of ``sequences``: what scoring them costs (the budgets and counters are in these)."""
    return sum(len(ids) for ids in sequences)


def encoded_tokens(encoded: EncodedPairs) -> int:
    """Tokens of every sequence of ``encoded``: what scoring it costs."""
    return sequence_tokens(encoded.input_ids)


def cut_slices(lengths: Sequence[int], max_tokens: int) -> list[range]:
    """Consecutive ranges of sequence indices of at most ``max_tokens`` tokens each (a longer sequence is a slice
    of its own), so one request's work can be scored a bounded piece at a time."""
    slices: list[range] = []
    start, tokens = 0, 0
    for index, length in enumerate(lengths):
        if index > start and tokens + length > max_tokens:
            slices.append(range(start, index))
            start, tokens = index, 0
        tokens += length
    if start < len(lengths):
        slices.append(range(start, len(lengths)))
    return slices


def merge_sequences(parts: Sequence[Sequence[Sequence[int]]]) -> tuple[list[Sequence[int]], list[int]]:
    """The sequences of every part in one list, and how many each part gave (for :func:`split_logits`)."""
    merged = [sequence for part in parts for sequence in part]
    return merged, [len(part) for part in parts]


def split_logits(logits: Sequence[float], sizes: Sequence[int]) -> list[list[float]]:
    """The logits of a merged call cut back into each part's, in the order :func:`merge_sequences` merged them."""
    if sum(sizes) != len(logits):
        raise ValueError(f"{len(logits)} logits cannot be split into parts of {sum(sizes)} sequences")
    parts, start = [], 0
    for size in sizes:
        parts.append(list(logits[start : start + size]))
        start += size
    return parts


@dataclass(frozen=True)
class ScoringCall:
    """One scoring call: its ``lane`` (``"merged"`` requests, a ``"slice"`` of a large one, or ``"direct"``),
    the ids of the requests it served, and its ``sequences`` and ``tokens``."""

    lane: str
    requests: tuple[int, ...]
    sequences: int
    tokens: int


@dataclass
class BatchCounters:
    """Counts since start: ``requests`` answered, in ``batches`` scoring calls, of ``pairs`` (query, document)
    pairs and ``tokens`` scored; ``in_flight`` requests are admitted and not answered yet. ``calls`` holds the
    last :data:`CALL_HISTORY` scoring calls, oldest first; ``batch_sizes`` counts calls by how many requests
    they served."""

    requests: int = 0
    batches: int = 0
    pairs: int = 0
    tokens: int = 0
    in_flight: int = 0
    calls: deque[ScoringCall] = field(default_factory=lambda: deque(maxlen=CALL_HISTORY))
    batch_sizes: Counter[int] = field(default_factory=Counter)

    def record_call(self, call: ScoringCall) -> None:
        """Count one scoring call."""
        self.batches += 1
        self.tokens += call.tokens
        self.calls.append(call)
        self.batch_sizes[len(call.requests)] += 1

    def record_answered(self, pairs: int) -> None:
        """Count one request whose scores are complete."""
        self.requests += 1
        self.pairs += pairs
