"""``JinaLocalRerank``: a LlamaIndex node postprocessor that reranks nodes with the local Jina reranker."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

from llama_index.core.bridge.pydantic import Field, field_validator, model_validator
from llama_index.core.callbacks import CBEventType, EventPayload
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.postprocessor.types import BaseNodePostprocessor
from llama_index.core.schema import BaseNode, MetadataMode, NodeWithScore, QueryBundle

from jina_local_rerank import Reranker, ScoreResult, reranker_for
from jina_local_rerank.checkpoint.hub import default_model
from jina_local_rerank.pydantic_options import RerankerOptionFields, apply_aliases
from jina_local_rerank.ranking import ranked_indices
from jina_local_rerank.validation import check_threshold

dispatcher = get_dispatcher(__name__)

RETRIEVAL_SCORE_KEY = "retrieval_score"


class JinaLocalRerank(RerankerOptionFields, BaseNodePostprocessor):
    """Rerank retrieved nodes with a Jina reranker v1 cross-encoder run locally in PyTorch.

    Scores ``node.get_content(metadata_mode=metadata_mode)`` against the query and returns new
    :class:`NodeWithScore` objects (holding copies of the nodes) best first, at most ``top_n`` of them and only
    those scoring at least ``score_threshold``. The model loads on first use and is shared by every
    postprocessor (and ``Reranker``) on the same model, revision, device and dtype in the process.

    Instructions go around the texts with the engine options ``query_prefix``/``query_suffix`` and
    ``document_prefix``/``document_suffix``; ``query_instruction`` and ``text_instruction``, as the TEI rerank
    postprocessor's users write them, are accepted for the two prefixes.
    """

    top_n: int | None = Field(default=3, strict=True, ge=1, description="Number of nodes to return; None returns all.")
    score_threshold: float | None = Field(
        default=None, description="Drop nodes scoring below this (same scale as the returned scores)."
    )
    metadata_mode: MetadataMode = Field(
        default=MetadataMode.EMBED, description="Which metadata goes into the scored text of each node."
    )
    keep_retrieval_score: bool = Field(
        default=False, description='Store the incoming score as metadata["retrieval_score"] on the returned copy.'
    )
    raw_scores: bool = Field(default=False, description="Return logits instead of sigmoid scores in 0..1.")

    @model_validator(mode="before")
    @classmethod
    def _instructions(cls, data: Any) -> Any:
        return apply_aliases(data, {"query_instruction": "query_prefix", "text_instruction": "document_prefix"})

    @field_validator("score_threshold")
    @classmethod
    def _finite_threshold(cls, value: float | None) -> float | None:
        return check_threshold(value)

    @classmethod
    def class_name(cls) -> str:
        """The name LlamaIndex serializes this postprocessor under."""
        return "JinaLocalRerank"

    @property
    def reranker(self) -> Reranker:
        """The process-wide ``Reranker`` for this postprocessor's options (the model loads on first use)."""
        return reranker_for(self.engine_options())

    def _postprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._inputs(nodes, query_bundle)
        if not texts:
            return []
        with self._reranking(nodes, query_bundle) as ranked:
            ranked.extend(self._ranked(nodes, self._score(query, texts)))
        return ranked

    @dispatcher.span  # the base class wraps only the sync method in a span; trace the async one alike
    async def _apostprocess_nodes(
        self, nodes: list[NodeWithScore], query_bundle: QueryBundle | None = None
    ) -> list[NodeWithScore]:
        query, texts = self._inputs(nodes, query_bundle)
        if not texts:
            return []
        with self._reranking(nodes, query_bundle) as ranked:
            # Loading and the forward passes block; a worker thread keeps the event loop serving meanwhile.
            result = await asyncio.to_thread(self._score, query, texts)
            ranked.extend(self._ranked(nodes, result))
        return ranked

    def _inputs(self, nodes: Any, query_bundle: Any) -> tuple[str, list[str]]:
        """The query string and each node's text as scored; raises before any event is sent."""
        if query_bundle is None:
            raise ValueError("JinaLocalRerank needs the query: pass query_bundle, or query_str to postprocess_nodes")
        if not isinstance(query_bundle, QueryBundle):
            raise TypeError(
                f"query_bundle must be a QueryBundle, got {type(query_bundle).__name__} "
                "(pass a plain string as query_str=...)"
            )
        if isinstance(nodes, (str, bytes)) or not isinstance(nodes, Sequence):
            raise TypeError(f"nodes must be a list of NodeWithScore, got {type(nodes).__name__}")
        texts = []
        for index, node in enumerate(nodes):
            if not isinstance(node, NodeWithScore):
                raise TypeError(f"nodes[{index}] must be a NodeWithScore, got {type(node).__name__}")
            texts.append(node.node.get_content(metadata_mode=self.metadata_mode))
        return query_bundle.query_str, texts

    def _score(self, query: str, texts: list[str]) -> ScoreResult:
        return self.reranker.score(query, texts, raw=self.raw_scores)

    @contextmanager
    def _reranking(self, nodes: list[NodeWithScore], query_bundle: QueryBundle) -> Iterator[list[NodeWithScore]]:
        """Bracket one rerank in ``ReRankStartEvent``/``ReRankEndEvent`` and the ``RERANKING`` callback event.

        The body appends the reranked nodes to the yielded list. The end event is sent even when scoring fails
        (with no nodes), so every start has its end; the callback event then carries the exception.
        """
        top_n = len(nodes) if self.top_n is None else self.top_n
        model_name = self.model if self.model is not None else default_model()
        ranked: list[NodeWithScore] = []
        dispatcher.event(ReRankStartEvent(query=query_bundle, nodes=nodes, top_n=top_n, model_name=model_name))
        try:
            with self.callback_manager.event(
                CBEventType.RERANKING,
                payload={
                    EventPayload.NODES: nodes,
                    EventPayload.MODEL_NAME: model_name,
                    EventPayload.QUERY_STR: query_bundle.query_str,
                    EventPayload.TOP_K: top_n,
                },
            ) as event:
                yield ranked
                event.on_end(payload={EventPayload.NODES: ranked})
        finally:
            dispatcher.event(ReRankEndEvent(nodes=ranked))

    def _ranked(self, nodes: list[NodeWithScore], result: ScoreResult) -> list[NodeWithScore]:
        """New ``NodeWithScore`` objects best first (ordered by logit: sigmoid saturates), cut to ``top_n`` and
        ``score_threshold``."""
        order = ranked_indices(result.logits, result.scores, top_n=self.top_n, score_threshold=self.score_threshold)
        return [NodeWithScore(node=self._node_copy(nodes[index]), score=result.scores[index]) for index in order]

    def _node_copy(self, scored: NodeWithScore) -> BaseNode:
        """A deep copy of the node, so later stages editing it never reach the caller's node or its metadata."""
        node = scored.node.model_copy(deep=True)
        if self.keep_retrieval_score:
            node.metadata[RETRIEVAL_SCORE_KEY] = scored.score
            # Bookkeeping, not content: keep it out of the text later stages embed, rerank or show the LLM.
            for excluded in (node.excluded_embed_metadata_keys, node.excluded_llm_metadata_keys):
                if RETRIEVAL_SCORE_KEY not in excluded:
                    excluded.append(RETRIEVAL_SCORE_KEY)
        return node
