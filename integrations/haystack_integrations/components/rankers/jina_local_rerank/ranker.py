"""``JinaLocalRanker``: a Haystack component that reranks Documents with a local Jina reranker v1."""

import asyncio
import copy
import os
from dataclasses import replace
from typing import Any

from haystack import Document, component, default_from_dict, default_to_dict
from haystack.utils import ComponentDevice, Secret, deserialize_secrets_inplace

from jina_local_rerank import Reranker, RerankerOptions, reranker_for
from jina_local_rerank.ranking import ranked_indices
from jina_local_rerank.validation import check_optional_positive_int, check_text, check_threshold

# SentenceTransformersSimilarityRanker arguments that have no meaning for this engine, and what to use instead.
REFUSED_ARGUMENTS = {
    "backend": "this ranker runs the model in PyTorch itself; for ONNX, export it (jina-local-rerank export onnx)",
    "model_kwargs": "pass engine options by name instead (dtype, max_length, revision, cache_dir...)",
    "tokenizer_kwargs": "the checkpoint's own tokenizer is used; set max_length or max_query_length instead",
    "config_kwargs": "the checkpoint's config.json is read as it is",
    "trust_remote_code": "no remote code is ever run: the JinaBERT model is implemented here",
}

# Annotations use Optional rather than ``X | None``: older haystack-ai 2.x releases only understand typing.Union in
# socket type checks.


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
        model: str | None = None,
        *,
        device: ComponentDevice | None = None,
        token: Secret | None = Secret.from_env_var(["HF_API_TOKEN", "HF_TOKEN"], strict=False),
        top_k: int | None = 10,
        score_threshold: float | None = None,
        scale_score: bool = True,
        meta_fields_to_embed: list[str] | None = None,
        embedding_separator: str = "\n",
        query_prefix: str = "",
        query_suffix: str = "",
        document_prefix: str = "",
        document_suffix: str = "",
        batch_size: int | None = None,
        **options: Any,
    ) -> None:
        """Store the settings; nothing is loaded until :meth:`warm_up`.

        :param model: Hugging Face Hub id or local directory; None means ``$JINA_LOCAL_RERANK_MODEL``, else
            ``jinaai/jina-reranker-v1-tiny-en``.
        :param device: where to run; None picks CUDA, then MPS, then CPU. Device maps are not supported.
        :param token: Hugging Face token for private or gated Hub models (unused for local directories).
        :param top_k: at most this many Documents are returned; None returns all of them.
        :param score_threshold: Documents scoring below this are dropped (on the scale ``scale_score`` selects).
        :param scale_score: True: scores are sigmoid probabilities in 0..1; False: raw logits.
        :param meta_fields_to_embed: meta fields whose values are prepended to the content before scoring.
        :param embedding_separator: joins those meta values and the content.
        :param query_prefix: put before the query before scoring (an instruction some models want).
        :param query_suffix: put after the query before scoring.
        :param document_prefix: put before every document text (after the embedded meta) before scoring.
        :param document_suffix: put after every document text before scoring.
        :param batch_size: at most this many documents per forward pass (the engine's ``max_batch_size``); the
            engine also bounds each pass by ``max_batch_tokens``, whatever the documents' lengths.
        :param options: the other engine options of :class:`~jina_local_rerank.options.RerankerOptions`
            (``revision``, ``dtype``, ``max_length``, ``max_query_length``, ``max_batch_tokens``, ``long_document``,
            ``chunk_stride``, ``chunk_aggregation``, ``cache_dir``; lengths in tokens).
        """
        if device is not None and not isinstance(device, ComponentDevice):
            raise TypeError(f"device must be a haystack ComponentDevice or None, got {type(device).__name__}")
        if token is not None and not isinstance(token, Secret):
            raise TypeError(
                "token must be a haystack Secret (for example Secret.from_env_var('HF_TOKEN')) or None, "
                f"got {type(token).__name__}"
            )
        for name in ("device", "token"):
            if name in options:
                raise TypeError(f"{name} is given as a haystack {'ComponentDevice' if name == 'device' else 'Secret'}")
        for name, instead in REFUSED_ARGUMENTS.items():
            if name in options:
                raise TypeError(f"{name} does not apply to JinaLocalRanker: {instead}")
        if "max_batch_size" in options:
            raise TypeError("give the batch size as batch_size")
        self.model = None if model is None else os.fspath(model)
        self.device = device
        self.token = token
        # Checked now, so that a bad option or a device map fails at construction, not at the first run.
        torch_device = device.to_torch_str() if device is not None else "auto"
        self.options = RerankerOptions.from_dict(
            {
                **options,
                "model": self.model,
                "device": torch_device,
                "query_prefix": query_prefix,
                "query_suffix": query_suffix,
                "document_prefix": document_prefix,
                "document_suffix": document_suffix,
                "max_batch_size": batch_size,
            }
        )
        self.top_k = check_optional_positive_int(top_k, "top_k")
        self.score_threshold = check_threshold(score_threshold)
        self.scale_score = scale_score
        self.meta_fields_to_embed = meta_fields_to_embed or []
        self.embedding_separator = embedding_separator

    @property
    def reranker(self) -> Reranker:
        """The process-wide ``Reranker`` for this ranker's options (the weights load on first use)."""
        token = self.token.resolve_value() if self.token is not None else None
        return reranker_for(self.options.replace(token=token))

    def warm_up(self) -> None:
        """Load the model (or take it from the process-wide cache) and pay its first-use costs (CUDA kernels)."""
        self.reranker.warm_up()

    async def warm_up_async(self) -> None:
        """:meth:`warm_up` in a worker thread, so loading weights does not block the event loop."""
        await asyncio.to_thread(self.warm_up)

    @component.output_types(documents=list[Document])
    def run(
        self,
        *,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        scale_score: bool | None = None,
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
        query = check_text(query, "query")
        documents = _unique_by_id(_check_documents(documents))
        top_k = self.top_k if top_k is None else check_optional_positive_int(top_k, "top_k")
        score_threshold = self.score_threshold if score_threshold is None else check_threshold(score_threshold)
        scale_score = self.scale_score if scale_score is None else scale_score
        if not documents:
            return {"documents": []}
        result = self.reranker.score(query, [self._document_text(doc) for doc in documents], raw=not scale_score)
        order = ranked_indices(
            result.logits, result.scores, top_n=top_k, score_threshold=score_threshold, top_name="top_k"
        )
        return {"documents": [self._scored_copy(documents[index], result.scores[index]) for index in order]}

    @component.output_types(documents=list[Document])
    async def run_async(
        self,
        *,
        query: str,
        documents: list[Document],
        top_k: int | None = None,
        score_threshold: float | None = None,
        scale_score: bool | None = None,
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

    @staticmethod
    def _scored_copy(doc: Document, score: float) -> Document:
        """A deep copy of ``doc`` (its ``meta`` and embedding are the caller's no more) with the new score."""
        return replace(copy.deepcopy(doc), score=float(score))

    def _document_text(self, doc: Document) -> str:
        """The text scored for ``doc``: the non-empty embedded meta values and the content (the engine adds the
        document prefix and suffix)."""
        meta_values = [str(doc.meta[key]) for key in self.meta_fields_to_embed if doc.meta.get(key)]
        return self.embedding_separator.join([*meta_values, doc.content or ""])

    def to_dict(self) -> dict[str, Any]:
        """Serialize the settings; an environment-variable token is stored by name, a plain token refuses."""
        options = {
            name: value
            for name, value in self.options.to_dict().items()
            if name not in ("model", "device", "max_batch_size")
        }
        return default_to_dict(
            self,
            model=self.model,
            device=self.device.to_dict() if self.device is not None else None,
            token=self.token.to_dict() if self.token is not None else None,
            top_k=self.top_k,
            score_threshold=self.score_threshold,
            scale_score=self.scale_score,
            meta_fields_to_embed=self.meta_fields_to_embed,
            embedding_separator=self.embedding_separator,
            batch_size=self.options.max_batch_size,
            **options,
        )

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> "JinaLocalRanker":
        """Rebuild a ranker from :meth:`to_dict` output; ``data`` is not modified."""
        init_parameters = dict(data.get("init_parameters", {}))
        if init_parameters.get("device") is not None:
            init_parameters["device"] = ComponentDevice.from_dict(init_parameters["device"])
        deserialize_secrets_inplace(init_parameters, keys=["token"])
        return default_from_dict(cls, {**data, "init_parameters": init_parameters})
