"""Benchmark inputs: deterministic text from Python's own documentation, sized like the issue's workloads."""

from __future__ import annotations

import random
import re
import sys
from pathlib import Path

# W3 is the model card's example, as examples/quickstart.py runs it.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "examples"))
import quickstart  # noqa: E402

SEED_QUERY: str = quickstart.QUERY
SEED_DOCUMENTS: list[str] = quickstart.DOCUMENTS


def _words() -> list[str]:
    from pydoc_data.topics import topics

    return re.findall(r"\S+", " ".join(topics[key] for key in sorted(topics)))


def passages(count: int, min_words: int, max_words: int, seed: int) -> list[str]:
    """``count`` passages of ``min_words``..``max_words`` consecutive words from the Python docs."""
    words = _words()
    rng = random.Random(seed)
    result = []
    for _ in range(count):
        length = rng.randint(min_words, max_words)
        start = rng.randrange(len(words) - length)
        result.append(" ".join(words[start : start + length]))
    return result


def queries(count: int, seed: int) -> list[str]:
    """Short questions made of doc words (8-14 words)."""
    return [passage + "?" for passage in passages(count, 8, 14, seed)]


def w1() -> tuple[str, list[str]]:
    """1 query x 100 passages of 24-360 words."""
    return queries(1, seed=1)[0], passages(100, 24, 360, seed=2)


def w2(tokens_per_word: float, tokens: int = 4700, count: int = 4) -> tuple[str, list[str]]:
    """1 query x ``count`` documents of about ``tokens`` tokens (4 of 4,700)."""
    words = round(tokens / tokens_per_word)
    return queries(1, seed=3)[0], passages(count, words, words, seed=4)


def many_queries(num_queries: int, per_query: int) -> list[list[str]]:
    """``num_queries`` x ``per_query`` (query, passage) pairs, passages of 24-360 words."""
    qs = queries(num_queries, seed=5)
    docs = passages(num_queries * per_query, 24, 360, seed=6)
    return [[qs[i // per_query], doc] for i, doc in enumerate(docs)]
