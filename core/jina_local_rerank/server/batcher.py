"""Scoring requests from an asyncio server without blocking its event loop.

:class:`MicroBatcher` merges requests that arrive together into one ``Reranker.score_pairs`` call, so 32
concurrent clients cost a few forward passes instead of 32; :class:`DirectScorer` makes one ``Reranker.score``
call per request (the ``--no-batching`` baseline). Both run the model in a worker thread.
"""

from __future__ import annotations

import asyncio
from collections import deque
from dataclasses import dataclass
from typing import Protocol, Sequence

from ..reranker import Reranker, ScoreResult
from ..tokenization import SPECIAL_TOKENS_PER_PAIR
from .settings import DEFAULT_BATCH_WAIT_MS, DEFAULT_CONCURRENT_BATCHES

# Byte-level BPE averages about 4 characters per token on English text. Used only to size batches before
# tokenizing (which happens in the worker thread); the engine still packs forwards by exact token counts.
CHARS_PER_TOKEN = 4


@dataclass
class BatchCounters:
    """Counts since start: ``requests`` scored, in ``batches`` scoring calls, of ``pairs`` (query, document)
    pairs; ``in_flight`` requests are waiting for or being scored now."""

    requests: int = 0
    batches: int = 0
    pairs: int = 0
    in_flight: int = 0


class Scorer(Protocol):
    """What the app scores through: :class:`MicroBatcher`, :class:`DirectScorer`, or the Ray Serve deployment's."""

    batching: bool
    counters: BatchCounters

    async def start(self) -> None:
        """Start background work (called from the app's lifespan)."""

    async def stop(self) -> None:
        """Finish what is in flight and stop."""

    async def score(self, query: str, documents: Sequence[str]) -> ScoreResult:
        """Scores of ``documents`` for ``query``, in input order."""


class DirectScorer:
    """One ``Reranker.score`` call per request, each in a worker thread (calls may overlap)."""

    batching = False

    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker
        self.counters = BatchCounters()

    async def start(self) -> None:
        """Nothing to start; present so both scorers are used alike."""

    async def stop(self) -> None:
        """Nothing to stop; present so both scorers are used alike."""

    async def score(self, query: str, documents: Sequence[str]) -> ScoreResult:
        """Scores of ``documents`` for ``query`` in input order (sigmoid ``scores``, raw ``logits``)."""
        self.counters.in_flight += 1
        try:
            result = await asyncio.to_thread(self.reranker.score, query, documents)
        finally:
            self.counters.in_flight -= 1
        self.counters.requests += 1
        self.counters.batches += 1
        self.counters.pairs += len(documents)
        return result


@dataclass
class _Pending:
    query: str
    documents: list[str]
    estimated_tokens: int
    future: asyncio.Future[ScoreResult]


class MicroBatcher:
    """Merges concurrent requests into shared ``Reranker.score_pairs`` calls, each run in a worker thread.

    A batch starts with the oldest waiting request and takes the requests queued behind it, waiting at most
    ``max_wait_ms`` milliseconds after its start for more, until their estimated tokens would pass
    ``max_batch_tokens`` (default: the reranker's ``max_batch_tokens``, so a full batch is about one forward
    pass). At most ``max_concurrent_batches`` batches are scored at a time; requests that arrive meanwhile
    queue for the next one, so under load batches fill without waiting. A request is never split across
    batches; each gets its own slice of the merged result. Call :meth:`start` and :meth:`stop` from the event
    loop that calls :meth:`score`.
    """

    batching = True

    def __init__(
        self,
        reranker: Reranker,
        *,
        max_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        max_batch_tokens: int | None = None,
        max_concurrent_batches: int = DEFAULT_CONCURRENT_BATCHES,
    ) -> None:
        if max_wait_ms < 0:
            raise ValueError(f"max_wait_ms must be >= 0, got {max_wait_ms}")
        if max_batch_tokens is not None and max_batch_tokens < 1:
            raise ValueError(f"max_batch_tokens must be >= 1, got {max_batch_tokens}")
        if max_concurrent_batches < 1:
            raise ValueError(f"max_concurrent_batches must be >= 1, got {max_concurrent_batches}")
        self.reranker = reranker
        self.max_concurrent_batches = max_concurrent_batches
        self.max_wait_s = max_wait_ms / 1000
        self.max_batch_tokens = max_batch_tokens or reranker.max_batch_tokens
        self.counters = BatchCounters()
        self._queue: deque[_Pending] = deque()
        self._scoring: dict[asyncio.Task[None], list[_Pending]] = {}
        self._arrived = asyncio.Event()
        self._worker: asyncio.Task[None] | None = None

    async def start(self) -> None:
        """Start the batching task."""
        if self._worker is None:
            self._worker = asyncio.create_task(self._run(), name="jina-local-rerank-batcher")

    async def stop(self) -> None:
        """Stop the batching task; requests still waiting fail with ``RuntimeError``."""
        if self._worker is not None:
            self._worker.cancel()
            try:
                await self._worker
            except asyncio.CancelledError:
                pass
            self._worker = None
        stranded = [pending for batch in self._scoring.values() for pending in batch] + list(self._queue)
        scoring = list(self._scoring)
        for task in scoring:
            task.cancel()
        await asyncio.gather(*scoring, return_exceptions=True)
        for pending in stranded:
            if not pending.future.done():
                pending.future.set_exception(RuntimeError("the server is shutting down"))
        self._queue.clear()

    async def score(self, query: str, documents: Sequence[str]) -> ScoreResult:
        """Scores of ``documents`` for ``query`` in input order (sigmoid ``scores``, raw ``logits``)."""
        if self._worker is None:
            raise RuntimeError("MicroBatcher.start() must be called before score()")
        documents = list(documents)
        future: asyncio.Future[ScoreResult] = asyncio.get_running_loop().create_future()
        self._queue.append(_Pending(query, documents, estimate_tokens(self.reranker, query, documents), future))
        self._arrived.set()
        self.counters.in_flight += 1
        try:
            # A cancelled caller (client gone) cancels the future; the batcher then skips or discards it.
            return await future
        finally:
            self.counters.in_flight -= 1

    async def _run(self) -> None:
        slots = asyncio.Semaphore(self.max_concurrent_batches)

        def finished(task: asyncio.Task[None]) -> None:
            self._scoring.pop(task, None)
            slots.release()

        while True:
            # Gather only once a slot is free: requests arriving while every slot is busy join the next batch.
            await slots.acquire()
            batch = await self._next_batch()
            if not batch:
                slots.release()
                continue
            task = asyncio.create_task(self._score_batch(batch))
            self._scoring[task] = batch
            task.add_done_callback(finished)

    async def _next_batch(self) -> list[_Pending]:
        """Wait for a request, then gather requests up to the token budget or the wait limit; may be empty."""
        while not self._queue:
            self._arrived.clear()
            await self._arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        batch: list[_Pending] = []
        tokens = 0
        while True:
            while self._queue and (not batch or tokens + self._queue[0].estimated_tokens <= self.max_batch_tokens):
                pending = self._queue.popleft()
                if not pending.future.done():
                    batch.append(pending)
                    tokens += pending.estimated_tokens
            remaining = deadline - loop.time()
            if self._queue or remaining <= 0:
                return batch
            self._arrived.clear()
            try:
                await asyncio.wait_for(self._arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return batch

    async def _score_batch(self, batch: list[_Pending]) -> None:
        pairs = [(pending.query, doc) for pending in batch for doc in pending.documents]
        try:
            result = await asyncio.to_thread(self.reranker.score_pairs, pairs)
        except Exception as exc:
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(exc)
            return
        self.counters.requests += len(batch)
        self.counters.batches += 1
        self.counters.pairs += len(pairs)
        start = 0
        for pending in batch:
            stop = start + len(pending.documents)
            if not pending.future.done():
                pending.future.set_result(slice_result(result, start, stop))
            start = stop


def estimate_tokens(reranker: Reranker, query: str, documents: Sequence[str]) -> int:
    """Tokens a request will cost ``reranker``, estimated from characters before tokenizing (to size batches)."""
    query_tokens = len(query) // CHARS_PER_TOKEN + SPECIAL_TOKENS_PER_PAIR
    chunking = reranker.long_document == "chunk"
    window = reranker.max_length
    return sum(
        tokens if chunking else min(tokens, window)
        for tokens in (query_tokens + len(doc) // CHARS_PER_TOKEN for doc in documents)
    )


def slice_result(result: ScoreResult, start: int, stop: int) -> ScoreResult:
    """The part of a merged result that belongs to pairs ``start:stop``."""
    token_counts = result.token_counts[start:stop]
    return ScoreResult(
        result.scores[start:stop],
        result.logits[start:stop],
        result.truncated[start:stop],
        result.windows[start:stop],
        sum(token_counts),
        token_counts,
    )
