"""Documents longer than the window: ``long_document="truncate"`` versus ``"chunk"`` on a 128-token checkpoint.

The documents are made of words that are one token each, so a window's token ids decode to a text that
tokenizes back to exactly those ids: each window can then be scored on its own through the public API and
compared with the chunked score.
"""

from __future__ import annotations

import io
import json
import math
import random
import re
import tracemalloc
from pathlib import Path

import pytest

from jina_local_rerank import Reranker
from jina_local_rerank.cli import main
from jina_local_rerank.engine.tokenization import MAX_CHUNK_WINDOWS

WINDOW = 128  # conftest's small_window_checkpoint_dir
SPECIAL_TOKENS = 4  # <s> query </s></s> document </s>
QUERY = "what does the function return"
WORDS = "the class statement defines a new object and module namespace function returns list of values method".split()
HEAD = " ".join(WORDS[i % len(WORDS)] for i in range(150))  # longer than the window on its own


@pytest.fixture(scope="module")
def truncating(small_window_checkpoint_dir: Path) -> Reranker:
    return Reranker(small_window_checkpoint_dir, device="cpu")


@pytest.fixture(scope="module")
def chunking(small_window_checkpoint_dir: Path) -> Reranker:
    return Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk")


def token_ids(reranker: Reranker, text: str) -> list[int]:
    return reranker.engine.tokenizer.tokenize([text])[0]


def room(reranker: Reranker, query: str = QUERY) -> int:
    """Document tokens that fit in one window next to ``query``."""
    return WINDOW - SPECIAL_TOKENS - len(token_ids(reranker, query))


def expected_windows(length: int, room: int, stride: int) -> int:
    return 1 if length <= room else math.ceil((length - room) / stride) + 1


def window_texts(reranker: Reranker, document: str, stride: int) -> list[str]:
    """The text of each window, cut at token offsets 0, stride, 2*stride, ... and one ending at the last token."""
    ids = token_ids(reranker, document)
    size = room(reranker)
    starts = list(range(0, len(ids) - size, stride)) + [len(ids) - size]
    decode = reranker.engine.tokenizer.tokenizer.decode
    texts = [decode(ids[start : start + size]) for start in starts]
    for start, text in zip(starts, texts):  # the premise of scoring windows as plain texts
        assert token_ids(reranker, text) == ids[start : start + size]
    return texts


def test_words_are_single_tokens(truncating: Reranker) -> None:
    assert len(token_ids(truncating, HEAD)) == 150 > room(truncating)


def test_truncate_ignores_text_beyond_the_window(truncating: Reranker) -> None:
    first, second = HEAD + " the list of values", HEAD + " a module namespace"
    result = truncating.score(QUERY, [first, second, "a short one"])
    assert result.logits[0] == pytest.approx(result.logits[1], abs=1e-6)  # rows of one batch agree to float noise
    assert result.truncated == [True, True, False]
    assert result.windows == [1, 1, 1]


def test_chunk_sees_text_beyond_the_window(chunking: Reranker) -> None:
    first, second = HEAD + " the list of values", HEAD + " a module namespace"
    result = chunking.score(QUERY, [first, second])
    assert abs(result.logits[0] - result.logits[1]) > 1e-4
    assert result.truncated == [False, False]
    size, stride = room(chunking), room(chunking) // 2
    lengths = [len(token_ids(chunking, document)) for document in (first, second)]
    assert result.windows == [expected_windows(length, size, stride) for length in lengths]
    assert min(result.windows) > 1


@pytest.mark.parametrize("stride", [None, 16, 37, 1000])
def test_chunked_score_is_the_max_of_its_windows_scored_alone(
    small_window_checkpoint_dir: Path, truncating: Reranker, stride: int | None
) -> None:
    chunking = Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_stride=stride)
    document = HEAD + " " + " ".join(reversed(WORDS)) * 3
    effective = min(stride or room(chunking) // 2, room(chunking))  # a stride beyond the window is capped to it
    texts = window_texts(truncating, document, effective)

    result = chunking.score(QUERY, [document])
    alone = truncating.score(QUERY, texts)

    length = len(token_ids(chunking, document))
    assert result.windows == [len(texts)] == [expected_windows(length, room(chunking), effective)]
    assert alone.truncated == [False] * len(texts)
    assert result.logits[0] == pytest.approx(max(alone.logits), abs=1e-5)
    assert result.num_tokens == alone.num_tokens  # the same sequences, nothing more


def test_mean_top2_averages_the_two_best_windows(small_window_checkpoint_dir: Path, truncating: Reranker) -> None:
    chunking = Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_aggregation="mean_top2")
    document = HEAD + " " + " ".join(reversed(WORDS)) * 3
    alone = truncating.score(QUERY, window_texts(truncating, document, room(chunking) // 2)).logits
    best = sorted(alone, reverse=True)[:2]
    assert chunking.score(QUERY, [document]).logits[0] == pytest.approx(sum(best) / 2, abs=1e-5)


def test_truncate_keeps_exactly_the_first_window(truncating: Reranker) -> None:
    document = HEAD + " the list of values"
    first_window = window_texts(truncating, document, room(truncating) // 2)[0]
    together = truncating.score(QUERY, [document, first_window])
    assert together.truncated == [True, False]
    assert together.logits[0] == pytest.approx(together.logits[1], abs=1e-6)
    assert together.num_tokens == 2 * WINDOW


def test_short_documents_are_scored_once(truncating: Reranker, chunking: Reranker) -> None:
    documents = ["the function returns a list", "", "a module namespace", " ".join(WORDS)]
    truncated, chunked = truncating.score(QUERY, documents), chunking.score(QUERY, documents)
    assert chunked.windows == [1, 1, 1, 1]
    assert chunked.truncated == truncated.truncated == [False] * 4
    assert chunked.logits == pytest.approx(truncated.logits, abs=1e-6)
    assert chunked.num_tokens == truncated.num_tokens


def test_windows_fit_the_batch_budget(small_window_checkpoint_dir: Path) -> None:
    budget = 2 * WINDOW
    chunking = Reranker(
        small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_stride=20, max_batch_tokens=budget
    )
    rng = random.Random(3)  # aperiodic texts: no two windows are the same sequence (the engine scores those once)
    documents = [" ".join(rng.choices(WORDS, k=length)) for length in (300, 150, 5, 170)]
    batches: list[list[int]] = []  # the sequence lengths of each forward pass
    handle = chunking.engine.model.register_forward_pre_hook(lambda _, args: batches.append(args[1].lengths))
    try:
        result = chunking.score(QUERY, documents)
    finally:
        handle.remove()
    assert max(len(lengths) * max(lengths) for lengths in batches) <= budget
    assert sum(len(lengths) for lengths in batches) == sum(result.windows)
    assert result.windows[2] == 1 and min(result.windows[0], result.windows[1], result.windows[3]) > 1


def test_score_pairs_windows_follow_each_query(chunking: Reranker) -> None:
    short_query, long_query = "list", "what does the function return when the class defines a method"
    result = chunking.score_pairs([[short_query, HEAD], [long_query, HEAD]])
    stride_short, stride_long = room(chunking, short_query) // 2, room(chunking, long_query) // 2
    assert result.windows == [
        expected_windows(150, room(chunking, short_query), stride_short),
        expected_windows(150, room(chunking, long_query), stride_long),
    ]


def test_invalid_long_document_settings(small_window_checkpoint_dir: Path) -> None:
    with pytest.raises(ValueError, match="long_document"):
        Reranker(small_window_checkpoint_dir, device="cpu", long_document="split")
    with pytest.raises(ValueError, match="chunk_aggregation"):
        Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_aggregation="mean")
    with pytest.raises(ValueError, match="chunk_stride"):
        Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_stride=0)


@pytest.mark.parametrize("mode", ["truncate", "chunk"])
def test_rerank_command_reports_truncation_and_windows(
    small_window_checkpoint_dir: Path, truncating: Reranker, chunking: Reranker, mode: str
) -> None:
    documents = [HEAD + " the list of values", "a short one"]
    stdout = io.StringIO()
    argv = ["rerank", "--query", QUERY, "--model", str(small_window_checkpoint_dir), "--device", "cpu", "--quiet"]
    status = main([*argv, "--long-document", mode, *documents], stdout=stdout)
    assert status == 0
    output = json.loads(stdout.getvalue())
    expected = (truncating if mode == "truncate" else chunking).score(QUERY, documents)
    by_index = {entry["index"]: entry for entry in output["results"]}
    assert [by_index[i]["truncated"] for i in range(2)] == expected.truncated
    assert [by_index[i]["windows"] for i in range(2)] == expected.windows
    assert output["truncated_documents"] == expected.num_truncated
    assert output["chunked_documents"] == expected.num_chunked
    length = len(token_ids(chunking, documents[0]))
    chunked_windows = expected_windows(length, room(chunking), room(chunking) // 2)
    assert expected.windows[0] == (1 if mode == "truncate" else chunked_windows) and chunked_windows > 1


def test_too_many_windows_is_a_clear_error_that_says_what_to_change(small_window_checkpoint_dir: Path) -> None:
    stride_one = Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_stride=1)
    rng = random.Random(5)
    document = " ".join(rng.choices(WORDS, k=600))
    length, size = len(token_ids(stride_one, document)), room(stride_one)
    needed = expected_windows(length, size, 1)
    assert needed > MAX_CHUNK_WINDOWS
    with pytest.raises(ValueError) as info:
        stride_one.score(QUERY, ["short", "also short", document])
    message = str(info.value)
    assert f"document at index 2 ({length} tokens) needs {needed} windows" in message
    assert f"more than the {MAX_CHUNK_WINDOWS} allowed" in message and "long_document='truncate'" in message
    smallest = int(re.search(r"raise chunk_stride to at least (\d+)", message)[1])
    assert expected_windows(length, size, smallest) <= MAX_CHUNK_WINDOWS < expected_windows(length, size, smallest - 1)
    fitting = Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_stride=smallest)
    assert fitting.score(QUERY, [document]).windows == [expected_windows(length, size, smallest)]


def test_a_huge_document_at_stride_one_fails_before_building_windows(checkpoint_dir: Path) -> None:
    stride_one = Reranker(checkpoint_dir, device="cpu", long_document="chunk", chunk_stride=1)
    document = " ".join(WORDS[i % len(WORDS)] for i in range(100_000))  # 600 kB, 100,000 tokens
    size = stride_one.max_length - SPECIAL_TOKENS - len(token_ids(stride_one, QUERY))
    smallest = math.ceil((100_000 - size) / (MAX_CHUNK_WINDOWS - 1))
    tracemalloc.start()
    try:
        with pytest.raises(ValueError, match=f"needs 91819 windows .* raise chunk_stride to at least {smallest},"):
            stride_one.score(QUERY, [document])
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert len(document) > 600_000 and size == 8182
    assert peak < 64 * 2**20  # the windows alone would be 91,819 x 8,192 tokens


def test_a_document_longer_than_any_stride_allows_says_to_split_it(small_window_checkpoint_dir: Path) -> None:
    widest = Reranker(small_window_checkpoint_dir, device="cpu", long_document="chunk", chunk_stride=10_000)
    document = " ".join(WORDS[i % len(WORDS)] for i in range(MAX_CHUNK_WINDOWS * WINDOW))
    with pytest.raises(ValueError, match=r"split the document \(even chunk_stride \d+, a whole window, is not"):
        widest.score(QUERY, [document])
