"""Ray Serve deployment: the rerank server's HTTP API on replicas that each hold one :class:`Reranker`.

Every replica serves the same app as ``jina-local-rerank serve`` (Jina ``POST /v1/rerank``, TEI
``POST /rerank``, ``GET /v1/models``, ``GET /health``; same auth, limits and errors), built by
:func:`~jina_local_rerank.server.app.create_app`, plus ``GET /stats`` with the replica's recent batch sizes.
Concurrent requests to a replica are merged by ``@serve.batch`` into one ``Reranker.score_pairs`` call under a
token budget.
"""

from __future__ import annotations

import asyncio
import os
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

import ray
from fastapi import FastAPI
from pydantic import BaseModel, Field
from ray import serve

from ..checkpoint import default_model
from ..options import DEFAULT_MAX_BATCH_TOKENS, RerankerOptions
from ..reranker import Reranker, ScoreResult
from ..server.app import create_app
from ..server.batcher import BatchCounters, estimate_tokens, slice_result
from ..server.settings import ServerSettings, default_served_names
from . import DEFAULT_MAX_ONGOING_REQUESTS

DEPLOYMENT_NAME = "JinaReranker"
BATCH_HISTORY = 1000


@dataclass(frozen=True)
class _Request:
    query: str
    documents: list[str]
    size: int  # estimated tokens, capped at the batch budget so an oversized request is scored alone


def _batch_size(requests: list[_Request]) -> int:
    return sum(request.size for request in requests)


class ServeBatchScorer:
    """The server's scorer interface (``score``, ``counters``) on ``@serve.batch``.

    Requests waiting together are merged, up to ``max_batch_tokens`` estimated tokens (a request over it alone
    is scored alone) and ``batch_wait_s`` seconds after the first, into one ``score_pairs`` call in a worker
    thread; requests arriving meanwhile queue for the next call. ``batch_sizes`` holds how many requests each of
    the last calls merged. Use one instance per process: ``@serve.batch`` keeps one queue per decorated method.
    """

    def __init__(self, reranker: Reranker, *, batching: bool, max_batch_tokens: int, batch_wait_s: float) -> None:
        self.reranker = reranker
        self.batching = batching
        self.counters = BatchCounters()
        self.batch_sizes: deque[int] = deque(maxlen=BATCH_HISTORY)
        # With batching off every request costs the whole budget of 1, so each call holds one request.
        self.max_batch_tokens = max_batch_tokens if batching else 1
        self._merged.set_max_batch_size(self.max_batch_tokens)
        self._merged.set_batch_wait_timeout_s(batch_wait_s if batching else 0.0)

    async def start(self) -> None:
        """Nothing to start: ``@serve.batch`` runs its own task."""

    async def stop(self) -> None:
        """Nothing to stop: the replica's event loop ends with it."""

    async def score(self, query: str, documents: Sequence[str]) -> ScoreResult:
        """Scores of ``documents`` for ``query`` in input order (sigmoid ``scores``, raw ``logits``)."""
        documents = list(documents)
        size = min(max(estimate_tokens(self.reranker, query, documents), 1), self.max_batch_tokens)
        self.counters.in_flight += 1
        try:
            return await self._merged(_Request(query, documents, size))
        finally:
            self.counters.in_flight -= 1

    @serve.batch(max_batch_size=DEFAULT_MAX_BATCH_TOKENS, batch_size_fn=_batch_size)
    async def _merged(self, requests: list[_Request]) -> list[ScoreResult]:
        pairs = [(request.query, doc) for request in requests for doc in request.documents]
        result = await asyncio.to_thread(self.reranker.score_pairs, pairs)
        self.counters.requests += len(requests)
        self.counters.batches += 1
        self.counters.pairs += len(pairs)
        self.batch_sizes.append(len(requests))
        results, start = [], 0
        for request in requests:
            results.append(slice_result(result, start, start + len(request.documents)))
            start += len(request.documents)
        return results


class ReplicaStats(BaseModel):
    """Response of ``GET /stats``: batching on the replica that answered."""

    replica: str = Field(description="The replica's Ray actor name (namespace 'serve').")
    batch_sizes: list[int] = Field(description=f"Requests merged into each of the last {BATCH_HISTORY} scoring calls.")
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
            batch_sizes=list(self.scorer.batch_sizes),
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
    options = options.replace(model=options.model or default_model())
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
