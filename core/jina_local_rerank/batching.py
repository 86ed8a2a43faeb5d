"""Grouping token sequences into batches under a token budget."""

from __future__ import annotations

from typing import Sequence


def pack_batches(lengths: Sequence[int], max_batch_tokens: int) -> list[list[int]]:
    """Group sequence indices into batches, longest first, so that rows x longest <= ``max_batch_tokens``.

    Sorting by length keeps padding small; the caller restores input order from the returned indices.
    """
    order = sorted(range(len(lengths)), key=lambda i: -lengths[i])
    batches: list[list[int]] = []
    for index in order:
        if batches and (len(batches[-1]) + 1) * lengths[batches[-1][0]] <= max_batch_tokens:
            batches[-1].append(index)
        else:
            batches.append([index])
    return batches
