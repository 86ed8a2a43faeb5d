"""CPU workers: batches scored side by side by single-threaded threads, with the caller's thread settings intact."""

from __future__ import annotations

import json
import os
import select
import signal
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch
from native_checks import require_native_kernels

from jina_local_rerank import Reranker
from jina_local_rerank.engine.batching import balanced_batches

QUERY = "how do I sort a list in python"
# About 6,000 tokens in 60 pairs of different lengths: several worker batches on two threads.
MANY_DOCS = [("sorted returns a new list " * (4 + n % 40)).strip() for n in range(60)]


@pytest.fixture
def two_threads() -> Iterator[None]:
    before = torch.get_num_threads()
    torch.set_num_threads(2)
    yield
    torch.set_num_threads(before)


def threads_seen(reranker: Reranker, monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, int]]:
    """Record, for each forward pass, the thread that runs it and that thread's torch thread count."""
    seen: list[tuple[str, int]] = []
    forward = reranker.engine.model.forward

    def recording_forward(*args, **kwargs):
        seen.append((threading.current_thread().name, torch.get_num_threads()))
        return forward(*args, **kwargs)

    monkeypatch.setattr(reranker.engine.model, "forward", recording_forward)
    return seen


def thread_count_of_a_new_thread() -> int:
    counts: list[int] = []
    thread = threading.Thread(target=lambda: counts.append(torch.get_num_threads()))
    thread.start()
    thread.join()
    return counts[0]


def test_many_batches_run_on_single_threaded_workers(checkpoint_dir: Path, two_threads, monkeypatch):
    reranker = Reranker(checkpoint_dir, device="cpu")
    seen = threads_seen(reranker, monkeypatch)
    parallel = reranker.score(QUERY, MANY_DOCS, raw=True).logits
    assert len(seen) >= 2
    assert all(name.startswith("jina-local-rerank-cpu") and count == 1 for name, count in seen)
    # The caller and threads started later keep two threads.
    assert torch.get_num_threads() == 2
    assert thread_count_of_a_new_thread() == 2

    seen.clear()
    torch.set_num_threads(1)
    serial = reranker.score(QUERY, MANY_DOCS, raw=True).logits
    assert {name for name, _ in seen} == {threading.current_thread().name}
    assert parallel == pytest.approx(serial, abs=1e-5)


@pytest.mark.parametrize("dtype", ["bfloat16", "int8"])
def test_the_native_kernels_leave_the_workers_single_threaded(head32_checkpoint: Path, two_threads, monkeypatch, dtype):
    # OpenMP thread counts are per thread: a kernel that reset a worker's count to the process-wide one would have
    # every worker use every core from its second batch on.
    require_native_kernels()
    reranker = Reranker(head32_checkpoint, device="cpu", dtype=dtype)
    seen = threads_seen(reranker, monkeypatch)
    for _ in range(2):
        reranker.score(QUERY, MANY_DOCS)
    workers = [count for name, count in seen if name.startswith("jina-local-rerank-cpu")]
    assert len(workers) >= 4 and set(workers) == {1}


def batches_seen(reranker: Reranker, monkeypatch: pytest.MonkeyPatch) -> list[list[int]]:
    """Record the sequence lengths of each batch the engine scores."""
    seen: list[list[int]] = []
    forward = reranker.engine._forward

    def recording_forward(sequences):
        seen.append([len(sequence) for sequence in sequences])
        return forward(sequences)

    monkeypatch.setattr(reranker.engine, "_forward", recording_forward)
    return seen


def test_balanced_batches_cut_the_longest_first_order_into_equal_work():
    lengths = [300, 12, 511, 87, 87, 250, 3, 640, 120, 45, 300, 9, 77, 402, 150, 33]

    def work(length: int) -> float:
        return length * (1 + length / 100)

    batches = balanced_batches(lengths, 4, work)
    assert len(batches) == 4
    flat = [i for batch in batches for i in batch]
    assert sorted(flat) == list(range(len(lengths)))
    assert [lengths[i] for i in flat] == sorted(lengths, reverse=True)
    share = sum(map(work, lengths)) / 4
    for batch in batches:
        # Each cut is within half a sequence of its share: a batch is within a sequence of it.
        assert abs(sum(work(lengths[i]) for i in batch) - share) <= max(work(lengths[i]) for i in batch)
    # More parts than sequences: one each, nothing empty.
    assert balanced_batches([5, 9, 2], 8, work) == [[1], [0], [2]]


def test_worker_batches_come_in_a_multiple_of_the_workers_and_of_equal_work(
    checkpoint_dir: Path, two_threads, monkeypatch
):
    reranker = Reranker(checkpoint_dir, device="cpu")
    config = reranker.engine.model.config
    seen = batches_seen(reranker, monkeypatch)
    parallel = reranker.score(QUERY, MANY_DOCS, raw=True).logits
    assert len(seen) >= 4 and len(seen) % 2 == 0

    def work(lengths: list[int]) -> float:
        return sum(length * config.layer_flops(length) for length in lengths)

    share = sum(map(work, seen)) / len(seen)
    largest = max(work([length]) for batch in seen for length in batch)
    assert all(abs(work(batch) - share) <= largest for batch in seen)
    torch.set_num_threads(1)
    assert parallel == pytest.approx(reranker.score(QUERY, MANY_DOCS, raw=True).logits, abs=1e-5)


def test_a_balanced_batch_is_split_within_the_callers_token_budget(checkpoint_dir: Path, two_threads, monkeypatch):
    # Long and short documents: a batch of equal work holding a long one among short ones would pad every short one
    # to the long one's length, past max_batch_tokens.
    documents = [("sorted returns a new list " * 190).strip()] * 2 + MANY_DOCS[:40]
    reranker = Reranker(checkpoint_dir, device="cpu", max_length=1024, max_batch_tokens=1024)
    seen = batches_seen(reranker, monkeypatch)
    parallel = reranker.score(QUERY, documents, raw=True).logits
    assert len(seen) >= 2
    assert all(len(batch) * max(batch) <= 1024 for batch in seen)
    torch.set_num_threads(1)
    assert parallel == pytest.approx(reranker.score(QUERY, documents, raw=True).logits, abs=1e-5)


def test_a_single_batch_runs_in_the_calling_thread(checkpoint_dir: Path, two_threads, monkeypatch):
    reranker = Reranker(checkpoint_dir, device="cpu")
    seen = threads_seen(reranker, monkeypatch)
    reranker.score(QUERY, MANY_DOCS[:3])
    assert seen == [(threading.current_thread().name, 2)]


def test_a_forked_child_scores_with_its_own_workers(checkpoint_dir: Path, two_threads):
    """A child forked after the workers started (gunicorn, multiprocessing) does not wait on its parent's threads."""
    reranker = Reranker(checkpoint_dir, device="cpu")
    expected = reranker.score(QUERY, MANY_DOCS, raw=True).logits
    read_end, write_end = os.pipe()
    child = os.fork()
    if child == 0:
        try:
            os.write(write_end, json.dumps(reranker.score(QUERY, MANY_DOCS, raw=True).logits).encode())
        finally:
            os._exit(0)
    os.close(write_end)
    received = b""
    with os.fdopen(read_end, "rb") as pipe:
        while select.select([pipe], [], [], 60)[0]:
            chunk = pipe.read1(1 << 16)
            if not chunk:
                break
            received += chunk
        else:
            os.kill(child, signal.SIGKILL)
    os.waitpid(child, 0)
    assert received, "the forked child did not finish scoring within 60 s"
    assert json.loads(received) == pytest.approx(expected, abs=1e-5)
