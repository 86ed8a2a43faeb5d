"""Scoring requests from an asyncio server without blocking its event loop.

Requests come encoded (:meth:`Reranker.encode <jina_local_rerank.Reranker.encode>`: the server tokenizes once and
checks its limits on the encoding). :class:`MicroBatcher` merges small requests that arrive together into one
scoring call, so 32 concurrent clients cost a few forward passes instead of 32, and scores a large request a
bounded slice at a time beside them, so it never holds the small ones up. :class:`DirectScorer` makes one call
per request (the ``--no-batching`` baseline). Both run the model in worker threads.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from ..engine.tokenization import EncodedPairs
from ..reranker import Reranker, ScoreResult
from ..validation import check_number, check_optional_positive_int, check_positive_int
from .merging import (
    BatchCounters,
    ScoringCall,
    cut_slices,
    encoded_tokens,
    merge_sequences,
    sequence_tokens,
    split_logits,
)
from .settings import DEFAULT_BATCH_SLICE_TOKENS, DEFAULT_BATCH_WAIT_MS, DEFAULT_CONCURRENT_BATCHES


class Scorer(Protocol):
    """What the app scores through: :class:`MicroBatcher`, :class:`DirectScorer`, or the Ray Serve deployment's.

    ``counters.in_flight`` is kept by the app (requests admitted and not answered); the scorer counts the rest.
    """

    batching: bool
    counters: BatchCounters

    async def start(self) -> None:
        """Start background work (called from the app's lifespan)."""

    async def stop(self) -> None:
        """Finish what is in flight and stop."""

    async def score(self, encoded: EncodedPairs) -> ScoreResult:
        """Scores (sigmoid) of the pairs of ``encoded``, in input order."""


def sequence_logits(reranker: Reranker, sequences: Sequence[Sequence[int]]) -> list[float]:
    """Raw logits of token sequences, in forward passes of at most the reranker's ``max_batch_tokens``."""
    return reranker.engine.logits(sequences, reranker.max_batch_tokens, max_batch_size=reranker.max_batch_size)


class DirectScorer:
    """One scoring call per request, each in a worker thread (calls may overlap)."""

    batching = False

    def __init__(self, reranker: Reranker) -> None:
        self.reranker = reranker
        self.counters = BatchCounters()
        self._ids = itertools.count()

    async def start(self) -> None:
        """Nothing to start; present so both scorers are used alike."""

    async def stop(self) -> None:
        """Nothing to stop; present so both scorers are used alike."""

    async def score(self, encoded: EncodedPairs) -> ScoreResult:
        """Scores (sigmoid) of the pairs of ``encoded``, in input order."""
        logits = await asyncio.to_thread(sequence_logits, self.reranker, encoded.input_ids)
        self.counters.record_call(
            ScoringCall("direct", (next(self._ids),), len(encoded.input_ids), encoded_tokens(encoded))
        )
        self.counters.record_answered(len(encoded.windows))
        return self.reranker.result_from_logits(encoded, logits)


@dataclass(eq=False)
class _Job:
    id: int
    encoded: EncodedPairs
    tokens: int
    slices: list[range]
    future: asyncio.Future[list[float]]
    logits: list[float] = field(default_factory=list)
    scored_slices: int = 0


class MicroBatcher:
    """Merges concurrent small requests into shared scoring calls; scores large ones in slices beside them.

    A request of at most ``slice_tokens`` tokens is small. A merged batch starts with the oldest waiting small
    request and takes those queued behind it, waiting at most ``max_wait_ms`` milliseconds after its start for
    more, until their tokens would pass ``max_batch_tokens`` (default: the reranker's, so a full batch is about
    one forward pass). At most ``max_concurrent_batches`` merged batches are scored at a time; requests that
    arrive meanwhile queue for the next one, so under load batches fill without waiting.

    A large request is cut into slices of whole sequences of at most ``slice_tokens`` tokens each; one slice
    at a time is scored, taken round-robin from the large requests waiting (so two large requests share the
    time), in its own thread beside the merged batches. Every request gets exactly the scores it gets alone.
    ``counters.calls`` records each scoring call (its lane and request ids). Call :meth:`start` and :meth:`stop`
    from the event loop that calls :meth:`score`.
    """

    batching = True

    def __init__(
        self,
        reranker: Reranker,
        *,
        max_wait_ms: float = DEFAULT_BATCH_WAIT_MS,
        max_batch_tokens: int | None = None,
        max_concurrent_batches: int = DEFAULT_CONCURRENT_BATCHES,
        slice_tokens: int = DEFAULT_BATCH_SLICE_TOKENS,
    ) -> None:
        check_number(max_wait_ms, "max_wait_ms")
        check_optional_positive_int(max_batch_tokens, "max_batch_tokens")
        check_positive_int(max_concurrent_batches, "max_concurrent_batches")
        check_positive_int(slice_tokens, "slice_tokens")
        self.reranker = reranker
        self.max_concurrent_batches = max_concurrent_batches
        self.max_wait_s = max_wait_ms / 1000
        self.max_batch_tokens = max_batch_tokens or reranker.max_batch_tokens
        self.slice_tokens = slice_tokens
        self.counters = BatchCounters()
        self._ids = itertools.count()
        self._small: deque[_Job] = deque()
        self._large: deque[_Job] = deque()
        self._small_arrived = asyncio.Event()
        self._large_arrived = asyncio.Event()
        self._scoring: dict[asyncio.Task[None], list[_Job]] = {}
        self._workers: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Start the batching tasks."""
        if not self._workers:
            self._workers = [
                asyncio.create_task(self._run_merged(), name="jina-local-rerank-batcher"),
                asyncio.create_task(self._run_slices(), name="jina-local-rerank-slices"),
            ]

    async def stop(self) -> None:
        """Stop the batching tasks; requests still waiting fail with ``RuntimeError``."""
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        self._workers = []
        stranded = [job for batch in self._scoring.values() for job in batch] + [*self._small, *self._large]
        scoring = list(self._scoring)
        for task in scoring:
            task.cancel()
        await asyncio.gather(*scoring, return_exceptions=True)
        for job in stranded:
            if not job.future.done():
                job.future.set_exception(RuntimeError("the server is shutting down"))
        self._small.clear()
        self._large.clear()

    async def score(self, encoded: EncodedPairs) -> ScoreResult:
        """Scores (sigmoid) of the pairs of ``encoded``, in input order."""
        if not self._workers:
            raise RuntimeError("MicroBatcher.start() must be called before score()")
        lengths = [len(ids) for ids in encoded.input_ids]
        if lengths:
            job = _Job(
                next(self._ids),
                encoded,
                sum(lengths),
                cut_slices(lengths, self.slice_tokens),
                asyncio.get_running_loop().create_future(),
            )
            if job.tokens > self.slice_tokens:
                job.logits = [0.0] * len(lengths)
                self._large.append(job)
                self._large_arrived.set()
            else:
                self._small.append(job)
                self._small_arrived.set()
            # A cancelled caller (client gone) cancels the future; the batcher then skips or discards it.
            logits = await job.future
        else:
            logits = []
        self.counters.record_answered(len(encoded.windows))
        return self.reranker.result_from_logits(encoded, logits)

    def _logits(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """One scoring call (in a worker thread): both lanes score through it."""
        return sequence_logits(self.reranker, sequences)

    # --- merged batches of small requests ------------------------------------------------------------------

    async def _run_merged(self) -> None:
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
            task = asyncio.create_task(self._score_merged(batch))
            self._scoring[task] = batch
            task.add_done_callback(finished)

    async def _next_batch(self) -> list[_Job]:
        """Wait for a request, then gather requests up to the token budget or the wait limit; may be empty."""
        while not self._small:
            self._small_arrived.clear()
            await self._small_arrived.wait()
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.max_wait_s
        batch: list[_Job] = []
        tokens = 0
        while True:
            while self._small and (not batch or tokens + self._small[0].tokens <= self.max_batch_tokens):
                job = self._small.popleft()
                if not job.future.done():
                    batch.append(job)
                    tokens += job.tokens
            remaining = deadline - loop.time()
            if self._small or remaining <= 0:
                return batch
            self._small_arrived.clear()
            try:
                await asyncio.wait_for(self._small_arrived.wait(), remaining)
            except asyncio.TimeoutError:
                return batch

    async def _score_merged(self, batch: list[_Job]) -> None:
        sequences, sizes = merge_sequences([job.encoded.input_ids for job in batch])
        try:
            logits = await asyncio.to_thread(self._logits, sequences)
        except Exception as exc:
            for job in batch:
                if not job.future.done():
                    job.future.set_exception(exc)
            return
        self.counters.record_call(
            ScoringCall("merged", tuple(job.id for job in batch), len(sequences), sum(job.tokens for job in batch))
        )
        for job, part in zip(batch, split_logits(logits, sizes)):
            if not job.future.done():
                job.future.set_result(part)

    # --- slices of large requests, round-robin -------------------------------------------------------------

    async def _run_slices(self) -> None:
        while True:
            while not self._large:
                self._large_arrived.clear()
                await self._large_arrived.wait()
            job = self._large.popleft()
            if job.future.done():
                continue
            piece = job.slices[job.scored_slices]
            sequences = job.encoded.input_ids[piece.start : piece.stop]
            task = asyncio.create_task(asyncio.to_thread(self._logits, sequences))
            self._scoring[task] = [job]
            try:
                logits = await task
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                if not job.future.done():
                    job.future.set_exception(exc)
                continue
            finally:
                self._scoring.pop(task, None)
            self.counters.record_call(ScoringCall("slice", (job.id,), len(sequences), sequence_tokens(sequences)))
            job.logits[piece.start : piece.stop] = logits
            job.scored_slices += 1
            if job.future.done():
                continue
            if job.scored_slices == len(job.slices):
                job.future.set_result(job.logits)
            else:
                self._large.append(job)  # behind the other large requests: round-robin
