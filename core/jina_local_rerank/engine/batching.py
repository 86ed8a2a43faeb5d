"""Grouping token sequences into batches under a token budget."""

from __future__ import annotations

from collections.abc import Callable, Sequence


def pack_batches(
    lengths: Sequence[int], max_batch_tokens: int, packed: bool = False, max_batch_size: int | None = None
) -> list[list[int]]:
    """Group sequence indices into batches, longest first, within ``max_batch_tokens`` tokens per batch (and at
    most ``max_batch_size`` sequences, if given).

    A batch's tokens are rows x longest (its padded size), or with ``packed`` the sum of its lengths. A sequence
    longer than the budget gets a batch of its own. Sorting by length keeps padding small; the caller restores
    input order from the returned indices.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    total = 0
    for index in order:
        length = lengths[index]
        if batches and (max_batch_size is None or len(batches[-1]) < max_batch_size):
            size = total + length if packed else (len(batches[-1]) + 1) * lengths[batches[-1][0]]
            if size <= max_batch_tokens:
                batches[-1].append(index)
                total += length
                continue
        batches.append([index])
        total = length
    return batches


def balanced_batches(lengths: Sequence[int], parts: int, work: Callable[[int], float]) -> list[list[int]]:
    """Sequence indices, longest first, cut into at most ``parts`` consecutive batches of about equal ``work`` (of a
    sequence, from its length), for workers that take batches side by side: equal batches leave no worker idle
    while another finishes a larger one.

    Each cut falls where the running total is nearest its share (a sequence goes to the batch its middle falls in),
    so a batch's work is within a sequence's of ``total / parts``.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    costs = [work(lengths[i]) for i in order]
    total = sum(costs)
    bounds, done, next_index = [0], 0.0, 0
    for part in range(1, parts):
        while next_index < len(order) and done + costs[next_index] / 2 <= total * part / parts:
            done += costs[next_index]
            next_index += 1
        bounds.append(next_index)
    bounds.append(len(order))
    return [order[start:end] for start, end in zip(bounds, bounds[1:]) if end > start]
