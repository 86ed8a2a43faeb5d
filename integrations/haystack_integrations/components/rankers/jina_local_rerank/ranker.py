"""``JinaLocalRanker``: a Haystack component that reranks Documents with a local Jina reranker v1."""

import asyncio
import os
from dataclasses import replace
from typing import Any, Optional

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret, deserialize_secrets_inplace

from jina_local_rerank import Reranker
from jina_local_rerank.reranker import check_query, check_top, best_first

# Annotations use Optional rather than ``X | None``: older haystack-ai 2.x releases only understand typing.Union in
# socket type checks.


def _check_threshold(value: Any) -> Optional[float]:
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"score_threshold must be a number or None, got {type(value).__name__}")
    return float(value)


def _check_documents(documents: Any) -> list[Document]:
    if not isinstance(documents, (list, tuple)):
        raise TypeError(f"documents must be a list of haystack Documents, got {type(documents).__name__}")
    for index, doc in enumerate(documents):
        if not isinstance(doc, Document):
            raise TypeError(f"documents[{index}] must be a haystack Document, got {type(doc).__name__}")
    return list(documents)


def _unique_by_id(documents: list[Document]) -> list[Document]:
    """One Document per ``id``: the one with the highest incoming score (None counts lowest, the first wins ties).

    The same rule as Haystack's own rankers; theirs is a private helper, so it is restated here.
    """
    best: dict[str, Document] = {}
    for doc in documents:
        kept = best.get(doc.id)
        if kept is None or (doc.score is not None and (kept.score is None or doc.score > kept.score)):
            best[doc.id] = doc
    return list(best.values())


@component
class JinaLocalRanker:
    """Reranks Documents by their relevance to a query with a Jina reranker v1 running locally in PyTorch.

    Usage:
    ```python
    from haystack_integrations.components.rankers.jina_local_rerank import JinaLocalRanker

    pipe.add_component("ranker", JinaLocalRanker(top_k=3))
    pipe.connect("retriever.documents", "ranker.documents")
    ```

    The weights are loaded by :meth:`warm_up` (or the first run) and shared process-wide with every other ranker,
    reranker or server of the same model, revision, device and dtype.
    """

    def __init__(
        self,
        model: Optional[str] = None,
        *,
        revision: Optional[str] = None,
        device: Optional[ComponentDevice] = None,
        token: Optional[Secret] = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        top_k: Optional[int] = 10,
        score_threshold: Optional[float] = None,
        scale_score: bool = True,
        meta_fields_to_embed: Optional[list[str]] = None,
        embedding_separator: str = "\n",
        query_prefix: str = "",
        document_prefix: str = "",
        max_length: Optional[int] = None,
        max_batch_tokens: Optional[int] = None,
        long_document: str = "truncate",
        chunk_stride: Optional[int] = None,
        chunk_aggregation: str = "max",
        dtype: str = "auto",
    ) -> None:
        """Store the settings; nothing is loaded until :meth:`warm_up`.

        :param model: Hugging Face Hub id or local directory; None means ``$JINA_LOCAL_RERANK_MODEL``, else
            ``jinaai/jina-reranker-v1-tiny-en``.
        :param revision: Hub revision (branch, tag or commit) of ``model``.
        :param device: where to run; None picks CUDA, then MPS, then CPU. Device maps are not supported.
        :param token: Hugging Face token for private or gated Hub models (unused for local directories).
        :param top_k: at most this many Documents are returned; None returns all of them.
        :param score_threshold: Documents scoring below this are dropped (on the scale ``scale_score`` selects).
        :param scale_score: True: scores are sigmoid probabilities in 0..1; False: raw logits.
        :param meta_fields_to_embed: meta fields whose values are prepended to the content before scoring.
        :param embedding_separator: joins those meta values and the content.
        :param query_prefix: prepended to the query before scoring.
        :param document_prefix: prepended to every document text before scoring.
        :param max_length: pair window in tokens (default: the model's, 8192 for the v1 family).
        :param max_batch_tokens: padded tokens per forward pass, which bounds memory (default: the engine's 16384).
        :param long_document: ``"truncate"`` documents that overflow the window, or ``"chunk"`` them into
            overlapping windows.
        :param chunk_stride: tokens between chunk starts (default: half a window).
        :param chunk_aggregation: how chunk logits combine: ``"max"`` or ``"mean_top2"``.
        :param dtype: ``"auto"`` (bf16/fp16 on CUDA, fp32 elsewhere), ``"float32"``, ``"bfloat16"`` or ``"float16"``.
        """
        if device is not None and not isinstance(device, ComponentDevice):
            raise TypeError(f"device must be a haystack ComponentDevice or None, got {type(device).__name__}")
        if token is not None and not isinstance(token, Secret):
            raise TypeError(
                "token must be a haystack Secret (for example Secret.from_env_var('HF_TOKEN')) or None, "
                f"got {type(token).__name__}"
            )
        # Resolved now so that a device map fails at construction, not at the first run.
        self._torch_device = device.to_torch_str() if device is not None else "auto"
        self.model = None if model is None else os.fspath(model)
        self.revision = revision
        self.device = device
        self.token = token
        self.top_k = check_top(top_k, "top_k")
        self.score_threshold = _check_threshold(score_threshold)
        self.scale_score = scale_score
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator
        self.query_prefix = query_prefix
        self.document_prefix = document_prefix
        self.max_length = max_length
        self.max_batch_tokens = max_batch_tokens
        self.long_document = long_document
        self.chunk_stride = chunk_stride
        self.chunk_aggregation = chunk_aggregation
        self.dtype = dtype
        self._reranker: Optional[Reranker] = None

    def warm_up(self) -> None:
        """Load the model, or take it from the process-wide cache; later calls do nothing."""
        if self._reranker is not None:
            return
        budget = {} if self.max_batch_tokens is None else {"max_batch_tokens": self.max_batch_tokens}
        self._reranker = Reranker(
            self.model,
            revision=self.revision,
            device=self._torch_device,
            dtype=self.dtype,
            max_length=self.max_length,
            long_document=self.long_document,
            chunk_stride=self.chunk_stride,
            chunk_aggregation=self.chunk_aggregation,
            token=self.token.resolve_value() if self.token is not None else None,
            **budget,
        )

    async def warm_up_async(self) -> None:
        """:meth:`warm_up` in a worker thread, so loading weights does not block the event loop."""
        await asyncio.to_thread(self.warm_up)

    @component.output_types(documents=list[Document])
    def run(
        self,
        *,
        query: str,
        documents: list[Document],
        top_k: Optional[int] = None,
        score_threshold: Optional[float] = None,
        scale_score: Optional[bool] = None,
    ) -> dict[str, list[Document]]:
        """Rerank ``documents`` by relevance to ``query``, best first.

        Duplicates (same ``Document.id``) are scored once, keeping the copy with the highest incoming score. The
        returned Documents are copies carrying the new ``score``; the inputs are left untouched.

        :param query: the query text.
        :param documents: the Documents to rerank.
        :param top_k: overrides the ``top_k`` given at construction (must be >= 1).
        :param score_threshold: overrides the construction ``score_threshold``.
        :param scale_score: overrides the construction ``scale_score``.
        :returns: ``{"documents": [...]}``, best first, at most ``top_k``, none below ``score_threshold``.
        :raises TypeError: ``query`` is not a string, or ``documents`` is not a list of Documents.
        :raises ValueError: ``top_k`` < 1.
        """
        query = check_query(query)
        documents = _unique_by_id(_check_documents(documents))
        top_k = self.top_k if top_k is None else check_top(top_k, "top_k")
        score_threshold = self.score_threshold if score_threshold is None else _check_threshold(score_threshold)
        scale_score = self.scale_score if scale_score is None else scale_score
        if not documents:
            return {"documents": []}
        self.warm_up()
        assert self._reranker is not None
        result = self._reranker.score(
            self.query_prefix + query, [self._document_text(doc) for doc in documents], raw=not scale_score
        )
        ranked = [
            replace(documents[index], score=float(result.scores[index]))
            for index in best_first(result.logits)
            if score_threshold is None or result.scores[index] >= score_threshold
        ]
        return {"documents": ranked[:top_k]}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        *,
        query: str,
        documents: list[Document],
        top_k: Optional[int] = None,
        score_threshold: Optional[float] = None,
        scale_score: Optional[bool] = None,
    ) -> dict[str, list[Document]]:
        """:meth:`run` in a worker thread, so scoring does not block the event loop."""
        return await asyncio.to_thread(
            self.run,
            query=query,
            documents=documents,
            top_k=top_k,
            score_threshold=score_threshold,
            scale_score=scale_score,
        )

    def _document_text(self, doc: Document) -> str:
        """The text scored for ``doc``: prefix, then the non-empty embedded meta values and the content."""
        meta_values = [str(doc.meta[key]) for key in self.meta_fields_to_embed if doc.meta.get(key)]
        return self.document_prefix + self.embedding_separator.join([*meta_values, doc.content or ""])

    def to_dict(self) -> dict[str, Any]:
        """Serialize the settings; an environment-variable token is stored by name, a plain token refuses."""
        return default_to_dict(
            self,
            model=self.model,
            revision=self.revision,
            device=self.device.to_dict() if self.device is not None else None,
            token=self.token.to_dict() if self.token is not None else None,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            scale_score=self.scale_score,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            query_prefix=self.query_prefix,
            document_prefix=self.document_prefix,
            max_length=self.max_length,
            max_batch_tokens=self.max_batch_tokens,
            long_document=self.long_document,
            chunk_stride=self.chunk_stride,
            chunk_aggregation=self.chunk_aggregation,
            dtype=self.dtype,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JinaLocalRanker":
        """Rebuild a ranker from :meth:`to_dict` output; ``data`` is not modified."""
        init_parameters = dict(data.get("init_parameters", {}))
        if init_parameters.get("device") is not None:
            init_parameters["device"] = ComponentDevice.from_dict(init_parameters["device"])
        deserialize_secrets_inplace(init_parameters, keys=["token"])
        return default_from_dict(cls, {**data, "init_parameters": init_parameters})
