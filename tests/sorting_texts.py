"""Random texts about sorting lists, and a query for them: documents the int8/bf16 tests score."""

from __future__ import annotations

import random

QUERY = "how do I sort a list"
WORDS = "sort list sorted key reverse stable order values function returns new object method class".split()


def documents(count: int, seed: int, scale: int = 1) -> list[str]:
    """``count`` texts of 3 to ``60 * scale`` words drawn from ``WORDS``."""
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 60 * scale))) for _ in range(count)]
