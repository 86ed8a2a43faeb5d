"""Ray Serve deployment: the rerank server's HTTP API on replicas that each hold one :class:`Reranker`.

Every replica serves the same app as ``jina-local-rerank serve`` (every route, the same auth, limits and
errors), built by :func:`~jina_local_rerank.server.app.create_app`, plus ``GET /stats`` with the replica's
recent batch sizes. Concurrent requests to a replica are merged by ``@serve.batch`` into one scoring call under a
token budget, with the same merge and split functions (:mod:`jina_local_rerank.server.merging`) as the server's own
micro-batcher.
"""

from __future__ import annotations

import asyncio
import itertools
from dataclasses import dataclass
from typing import Any

import ray
from fastapi import FastAPI
from pydantic import BaseModel, Field
from ray import serve

from ..engine.tokenization import EncodedPairs
from ..options import DEFAULT_MAX_BATCH_TOKENS, RerankerOptions
from ..reranker import Reranker, ScoreResult
from ..server.app import create_app
from ..server.batcher import sequence_logits
from ..server.merging import CALL_HISTORY, BatchCounters, ScoringCall, encoded_tokens, merge_sequences, split_logits
from ..server.settings import ServerSettings, default_served_names
from . import DEFAULT_MAX_ONGOING_REQUESTS

DEPLOYMENT_NAME = "JinaReranker"


@dataclass(frozen=True)
class _Request:
    id: int
    encoded: EncodedPairs
    size: int  # tokens, capped at the batch budget so an oversized request is scored alone


def _batch_size(requests: list[_Request]) -> int:
    return sum(request.size for request in requests)


class ServeBatchScorer:
    """The server's scorer interface (``score``, ``counters``) on ``@serve.batch``.

    Requests waiting together are merged, up to ``max_batch_tokens`` tokens (a request over it is scored
    alone) and ``batch_wait_s`` seconds after the first, into one scoring call in a worker thread; requests
    arriving meanwhile queue for the next call. ``counters.calls`` records the last calls. Use one instance per
    process: ``@serve.batch`` keeps one queue per decorated method.
    """

    def __init__(self, reranker: Reranker, *, batching: bool, max_batch_tokens: int, batch_wait_s: float) -> None:
        self.reranker = reranker
        self.batching = batching
        self.counters = BatchCounters()
        self._ids = itertools.count()
        # With batching off every request costs the whole budget of 1, so each call holds one request.
        self.max_batch_tokens = max_batch_tokens if batching else 1
        self._merged.set_max_batch_size(self.max_batch_tokens)
        self._merged.set_batch_wait_timeout_s(batch_wait_s if batching else 0.0)

    async def start(self) -> None:
        """Nothing to start: ``@serve.batch`` runs its own task."""

    async def stop(self) -> None:
        """Nothing to stop: the replica's event loop ends with it."""

    async def score(self, encoded: EncodedPairs) -> ScoreResult:
        """Scores (sigmoid) of the pairs of ``encoded``, in input order."""
        logits: list[float] = []
        if encoded.input_ids:
            size = min(max(encoded_tokens(encoded), 1), self.max_batch_tokens)
            logits = await self._merged(_Request(next(self._ids), encoded, size))
        self.counters.record_answered(len(encoded.windows))
        return self.reranker.result_from_logits(encoded, logits)

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_TOKENS, batch_size_fn=_batch_size)
    async def _merged(self, requests: list[_Request]) -> list[list[float]]:
        sequences, sizes = merge_sequences([request.encoded.input_ids for request in requests])
        logits = await asyncio.to_thread(sequence_logits, self.reranker, sequences)
        tokens = sum(encoded_tokens(request.encoded) for request in requests)
        self.counters.record_call(ScoringCall("merged", tuple(r.id for r in requests), len(sequences), tokens))
        return split_logits(logits, sizes)


class ReplicaStats(BaseModel):
    """Response of ``GET /stats``: batching on the replica that answered."""

    replica: str = Field(description="The replica's Ray actor name (namespace 'serve').")
    batch_sizes: list[int] = Field(description=f"Requests merged into each of the last {CALL_HISTORY} scoring calls.")
    requests: int
    batches: int
    pairs: int


@serve.deployment(name=DEPLOYMENT_NAME)
@serve.ingress()
class RerankDeployment:
    """One replica: loads ``Reranker(options)`` and serves it under ``settings``."""

    def __init__(self, options: RerankerOptions, settings: ServerSettings) -> None:
        self.reranker = Reranker(options)
        self.settings = settings
        self.scorer = ServeBatchScorer(
            self.reranker,
            batching=settings.batching,
            max_batch_tokens=self.reranker.max_batch_tokens,
            batch_wait_s=settings.batch_wait_ms / 1000,
        )

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self.reranker, self.settings, scorer=self.scorer)
        app.add_api_route("/stats", self.stats, methods=["GET"], response_model=ReplicaStats, tags=["info"])
        return app

    async def stats(self) -> ReplicaStats:
        """This replica's batching counters and the sizes of its recent batches."""
        counters = self.scorer.counters
        return ReplicaStats(
            replica=ray.get_runtime_context().get_actor_name() or "",
            batch_sizes=[len(call.requests) for call in counters.calls],
            requests=counters.requests,
            batches=counters.batches,
            pairs=counters.pairs,
        )


def build_app(
    options: RerankerOptions = RerankerOptions(),
    *,
    settings: ServerSettings | None = None,
    num_replicas: int | None = None,
    ray_actor_options: dict[str, Any] | None = None,
    autoscaling_config: dict[str, Any] | None = None,
    max_ongoing_requests: int = DEFAULT_MAX_ONGOING_REQUESTS,
) -> serve.Application:
    """The Serve application: pass it to ``serve.run``.

    ``options``: the replicas' ``Reranker`` options (``model``: a Hub id or a directory present on every node,
    default ``$JINA_LOCAL_RERANK_MODEL`` here, else the tiny model; device, dtype, max_length, max_batch_tokens,
    which is also the merged batch's token budget, ...). ``settings``: served names, API key,
    limits and batching (``batch_wait_ms`` is ``@serve.batch``'s wait); default: the model's names, no auth.
    Replicas: ``num_replicas`` (default 1) or ``autoscaling_config`` (Serve's, e.g. ``{"min_replicas": 1,
    "max_replicas": 4}``), each with ``ray_actor_options`` (default ``{"num_cpus": 1}``; ``{"num_gpus": 1}`` for
    a GPU each) and at most ``max_ongoing_requests`` requests in flight.
    """
    if num_replicas is not None and autoscaling_config is not None:
        raise ValueError("pass num_replicas or autoscaling_config, not both")
    # Resolved here, so every replica loads the same model whatever its environment says.
    options = options.with_default_model()
    settings = settings or ServerSettings(served_model_names=default_served_names(options.model))
    replicas: dict[str, Any] = (
        {"autoscaling_config": autoscaling_config} if autoscaling_config else {"num_replicas": num_replicas or 1}
    )
    deployment = RerankDeployment.options(
        ray_actor_options=ray_actor_options or {"num_cpus": 1},
        max_ongoing_requests=max_ongoing_requests,
        **replicas,
    )
    return deployment.bind(options, settings)
