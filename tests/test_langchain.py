"""LangChain adapter: JinaLocalRerank in a real ContextualCompressionRetriever, JinaLocalCrossEncoder in the stock
CrossEncoderReranker, tracing through real callback managers. Expectations come from the engine's own scores."""

from __future__ import annotations

import asyncio
import copy
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_classic.retrievers.document_compressors import CrossEncoderReranker
from langchain_core.callbacks import BaseCallbackHandler
from langchain_core.documents import Document
from langchain_core.embeddings import DeterministicFakeEmbedding
from langchain_core.vectorstores import InMemoryVectorStore
from pydantic import ValidationError

from jina_local_rerank import Reranker
from jina_local_rerank.ranking import best_first
from langchain_jina_local_rerank import JinaLocalCrossEncoder, JinaLocalRerank

REPO_ROOT = Path(__file__).resolve().parents[1]
QUERY = "how does a garbage collector free memory"
TEXTS = [
    "Rust manages memory through ownership and borrowing.",
    "CPython frees memory by reference counting plus a cycle collector.",
    "Go has a concurrent mark-and-sweep garbage collector.",
    "Green tea is steeped at a lower temperature than black tea.",
    "Sourdough bread rises with wild yeast.",
    "In C, memory from malloc must be released with free.",
    "The JVM ships several garbage collectors such as G1 and ZGC.",
    "Swift uses automatic reference counting.",
]


def make_documents() -> list[Document]:
    return [
        Document(id=f"doc-{i}", page_content=text, metadata={"source": f"s{i}", "tags": ["t"]})
        for i, text in enumerate(TEXTS)
    ]


def expected_order(reranker: Reranker, query: str, texts: list[str]) -> tuple[list[int], list[float]]:
    result = reranker.score(query, texts)
    return best_first(result.logits), result.scores


@pytest.fixture
def compressor(checkpoint_dir: Path) -> JinaLocalRerank:
    return JinaLocalRerank(model=checkpoint_dir, device="cpu", top_n=3)


@pytest.fixture
def vector_retriever() -> Any:
    store = InMemoryVectorStore(DeterministicFakeEmbedding(size=32))
    store.add_documents(make_documents())
    return store.as_retriever(search_kwargs={"k": 6})


class RunRecorder(BaseCallbackHandler):
    """Records chain and retriever runs as (event, run_id, parent_run_id, name or payload)."""

    def __init__(self) -> None:
        self.events: list[tuple[str, UUID, UUID | None, Any]] = []

    def on_chain_start(
        self, serialized: Any, inputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.events.append(("chain_start", run_id, parent_run_id, kwargs.get("name")))

    def on_chain_end(self, outputs: Any, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any) -> None:
        self.events.append(("chain_end", run_id, parent_run_id, outputs))

    def on_chain_error(
        self, error: BaseException, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.events.append(("chain_error", run_id, parent_run_id, error))

    def on_retriever_start(
        self, serialized: Any, query: str, *, run_id: UUID, parent_run_id: UUID | None = None, **kwargs: Any
    ) -> None:
        self.events.append(("retriever_start", run_id, parent_run_id, kwargs.get("name")))

    def runs(self, event: str, name: str | None = None) -> list[tuple[str, UUID, UUID | None, Any]]:
        return [e for e in self.events if e[0] == event and (name is None or e[3] == name)]


def assert_reranked(result: list[Document], candidates: list[Document], reranker: Reranker, top_n: int) -> None:
    order, scores = expected_order(reranker, QUERY, [doc.page_content for doc in candidates])
    assert [doc.id for doc in result] == [candidates[i].id for i in order[:top_n]]
    for doc, index in zip(result, order):
        assert doc.metadata["relevance_score"] == pytest.approx(scores[index], abs=1e-6)
        assert {k: v for k, v in doc.metadata.items() if k != "relevance_score"} == candidates[index].metadata


def test_retriever_invoke_reranks_vector_store_results(compressor, vector_retriever, reranker):
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=vector_retriever)
    candidates = vector_retriever.invoke(QUERY)
    assert len(candidates) == 6
    assert_reranked(retriever.invoke(QUERY), candidates, reranker, top_n=3)


async def test_retriever_ainvoke_reranks_vector_store_results(compressor, vector_retriever, reranker):
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=vector_retriever)
    candidates = await vector_retriever.ainvoke(QUERY)
    assert_reranked(await retriever.ainvoke(QUERY), candidates, reranker, top_n=3)


async def test_acompress_documents_scores_off_the_event_loop(compressor):
    # A blocking implementation finishes within the first yield (ticks == 1); a worker thread lets the loop run.
    task = asyncio.create_task(compressor.acompress_documents(make_documents(), QUERY))
    ticks = 0
    while not task.done():
        await asyncio.sleep(0)
        ticks += 1
    assert len(await task) == 3
    assert ticks > 1


def test_stock_cross_encoder_reranker_with_local_cross_encoder(checkpoint_dir, vector_retriever, reranker):
    cross_encoder = JinaLocalCrossEncoder(model=checkpoint_dir, device="cpu")
    retriever = ContextualCompressionRetriever(
        base_compressor=CrossEncoderReranker(model=cross_encoder, top_n=3), base_retriever=vector_retriever
    )
    candidates = vector_retriever.invoke(QUERY)
    scores = reranker.score(QUERY, [doc.page_content for doc in candidates]).scores
    result = retriever.invoke(QUERY)
    assert [doc.id for doc in result] == [candidates[i].id for i in best_first(scores)[:3]]


def test_cross_encoder_scores_pairs_like_the_engine(checkpoint_dir, reranker):
    pairs = [(QUERY, TEXTS[0]), ("tea temperature", TEXTS[3]), (QUERY, TEXTS[2])]
    expected = reranker.score_pairs(pairs)
    assert JinaLocalCrossEncoder(model=checkpoint_dir, device="cpu").score(pairs) == pytest.approx(expected.scores)
    raw = JinaLocalCrossEncoder(model=checkpoint_dir, device="cpu", raw_scores=True).score(pairs)
    assert raw == pytest.approx(expected.logits)
    assert JinaLocalCrossEncoder(model=checkpoint_dir, device="cpu").score([]) == []


@pytest.mark.parametrize("use_async", [False, True], ids=["invoke", "ainvoke"])
async def test_scoring_is_a_named_child_run_of_the_retriever(compressor, vector_retriever, use_async):
    retriever = ContextualCompressionRetriever(base_compressor=compressor, base_retriever=vector_retriever)
    recorder = RunRecorder()
    config = {"callbacks": [recorder]}
    result = await retriever.ainvoke(QUERY, config=config) if use_async else retriever.invoke(QUERY, config=config)

    [(_, outer_id, outer_parent, _)] = recorder.runs("retriever_start", "ContextualCompressionRetriever")
    assert outer_parent is None
    [(_, run_id, parent_id, _)] = recorder.runs("chain_start", "JinaLocalRerank")
    assert parent_id == outer_id
    [(_, _, _, outputs)] = [e for e in recorder.runs("chain_end") if e[1] == run_id]
    assert outputs == {"documents": result}


def test_failed_scoring_is_reported_to_callbacks(compressor):
    recorder = RunRecorder()
    with pytest.raises(TypeError):
        compressor.compress_documents([Document(page_content="ok"), "not a document"], QUERY, callbacks=[recorder])
    [(_, run_id, parent_id, _)] = recorder.runs("chain_start", "JinaLocalRerank")
    assert parent_id is None
    [(_, error_run_id, _, error)] = recorder.runs("chain_error")
    assert error_run_id == run_id and isinstance(error, TypeError)


def test_copies_keep_ids_and_metadata_and_inputs_are_untouched(checkpoint_dir, reranker):
    documents = make_documents()
    documents[2].metadata["relevance_score"] = -1.0  # an older score: replaced in the copy only
    snapshot = copy.deepcopy(documents)
    compressor = JinaLocalRerank(model=checkpoint_dir, device="cpu", top_n=None)
    result = compressor.compress_documents(documents, QUERY)

    assert documents == snapshot
    order, scores = expected_order(reranker, QUERY, TEXTS)
    assert [doc.id for doc in result] == [f"doc-{i}" for i in order]
    for doc, index in zip(result, order):
        assert doc is not documents[index]
        assert doc.page_content == documents[index].page_content
        assert doc.metadata == {**snapshot[index].metadata, "relevance_score": pytest.approx(scores[index])}
        assert doc.metadata["tags"] == ["t"]
    for doc in result:  # nested metadata is the copy's own
        doc.metadata["tags"].append("edited")
    assert documents == snapshot


@pytest.mark.parametrize("threshold", [float("nan"), float("inf")])
def test_non_finite_score_threshold_is_refused(checkpoint_dir, threshold):
    with pytest.raises(ValidationError, match="score_threshold must be a finite number"):
        JinaLocalRerank(model=checkpoint_dir, device="cpu", score_threshold=threshold)


def test_custom_score_key_and_raw_scores(checkpoint_dir, reranker):
    compressor = JinaLocalRerank(model=checkpoint_dir, device="cpu", top_n=2, score_key="rerank", raw_scores=True)
    result = compressor.compress_documents(make_documents(), QUERY)
    logits = reranker.score(QUERY, TEXTS).logits
    order = best_first(logits)
    assert [doc.metadata["rerank"] for doc in result] == pytest.approx([logits[i] for i in order[:2]])
    assert all("relevance_score" not in doc.metadata for doc in result)


def test_score_threshold_keeps_only_documents_at_or_above_it(checkpoint_dir, reranker):
    order, scores = expected_order(reranker, QUERY, TEXTS)
    threshold = scores[order[4]]
    compressor = JinaLocalRerank(model=checkpoint_dir, device="cpu", top_n=None, score_threshold=threshold)
    assert [doc.id for doc in compressor.compress_documents(make_documents(), QUERY)] == [f"doc-{i}" for i in order[:5]]
    compressor.top_n = 2
    assert len(compressor.compress_documents(make_documents(), QUERY)) == 2


def test_ties_keep_retrieval_order(checkpoint_dir):
    # Twins in one padded batch may differ in the last float bit; a batch budget of one full window scores each
    # twin alone, so their logits tie exactly.
    compressor = JinaLocalRerank(model=checkpoint_dir, device="cpu", max_length=64, max_batch_tokens=64)
    text = " ".join(TEXTS)  # longer than the window: both twins are cut to exactly 64 tokens
    twins = [Document(id="first", page_content=text), Document(id="second", page_content=text)]
    scores = [doc.metadata["relevance_score"] for doc in compressor.compress_documents(twins, QUERY)]
    assert scores[0] == scores[1]
    assert [doc.id for doc in compressor.compress_documents(twins, QUERY)] == ["first", "second"]
    assert [doc.id for doc in compressor.compress_documents(twins[::-1], QUERY)] == ["second", "first"]


def test_metadata_fields_to_embed_are_scored_before_the_text(checkpoint_dir, reranker):
    documents = [
        Document(page_content=TEXTS[0], metadata={"title": "Rust", "year": 2015}),
        Document(page_content=TEXTS[2], metadata={"title": "Go"}),
        Document(page_content=TEXTS[3]),
    ]
    scored_texts = [f"title: Rust\nyear: 2015\n{TEXTS[0]}", f"title: Go\n{TEXTS[2]}", TEXTS[3]]
    compressor = JinaLocalRerank(
        model=checkpoint_dir, device="cpu", top_n=None, metadata_fields_to_embed=["title", "year"]
    )
    result = compressor.compress_documents(documents, QUERY)
    order, scores = expected_order(reranker, QUERY, scored_texts)
    assert [doc.page_content for doc in result] == [documents[i].page_content for i in order]
    assert [doc.metadata["relevance_score"] for doc in result] == pytest.approx([scores[i] for i in order])
    plain = reranker.score(QUERY, [doc.page_content for doc in documents]).scores
    assert scores[0] != pytest.approx(plain[0])  # the metadata really reached the model


def test_chunking_settings_reach_the_engine(small_window_checkpoint_dir):
    long_text = " ".join(TEXTS * 6)
    documents = [Document(page_content=long_text), Document(page_content=TEXTS[1])]
    settings = {"device": "cpu", "long_document": "chunk", "chunk_stride": 32, "chunk_aggregation": "mean_top2"}
    compressor = JinaLocalRerank(model=small_window_checkpoint_dir, top_n=None, raw_scores=True, **settings)
    result = compressor.compress_documents(documents, QUERY)
    expected = Reranker(small_window_checkpoint_dir, **settings).score(QUERY, [long_text, TEXTS[1]])
    assert expected.windows[0] > 1
    assert sorted(doc.metadata["relevance_score"] for doc in result) == pytest.approx(sorted(expected.logits))


async def test_empty_list_returns_empty(compressor):
    assert compressor.compress_documents([], QUERY) == []
    assert await compressor.acompress_documents([], QUERY) == []


def test_bad_documents_and_query_are_named(compressor):
    with pytest.raises(TypeError, match=r"documents\[1\] must be a Document, got str"):
        compressor.compress_documents([Document(page_content="a"), "b"], QUERY)
    with pytest.raises(TypeError, match="documents must be a sequence of Document, got str"):
        compressor.compress_documents("just text", QUERY)
    with pytest.raises(TypeError, match="documents must be a sequence of Document, got Document"):
        compressor.compress_documents(Document(page_content="a"), QUERY)
    with pytest.raises(TypeError, match="query must be a string, got int"):
        compressor.compress_documents([Document(page_content="a")], 42)


async def test_bad_input_raises_from_async_too(compressor):
    with pytest.raises(TypeError, match=r"documents\[0\] must be a Document, got dict"):
        await compressor.acompress_documents([{"page_content": "a"}], QUERY)


@pytest.mark.parametrize(
    ("settings", "field"),
    [
        ({"top_n": 0}, "top_n"),
        ({"top_n": True}, "top_n"),
        ({"max_length": -5}, "max_length"),
        ({"long_document": "split"}, "long_document"),
        ({"chunk_aggregation": "sum"}, "chunk_aggregation"),
        ({"topn": 3}, "topn"),
    ],
)
def test_bad_settings_are_refused_at_construction(settings, field):
    with pytest.raises(ValidationError, match=field):
        JinaLocalRerank(**settings)


def test_bad_assignment_is_refused(compressor):
    with pytest.raises(ValidationError, match="top_n"):
        compressor.top_n = 0
    assert compressor.top_n == 3


def test_instances_share_the_process_wide_engine(checkpoint_dir, reranker):
    first = JinaLocalRerank(model=checkpoint_dir, device="cpu")
    second = JinaLocalRerank(model=str(checkpoint_dir), device="cpu", top_n=1, max_length=512)
    cross_encoder = JinaLocalCrossEncoder(model=checkpoint_dir, device="cpu")
    assert first.reranker.engine is second.reranker.engine is cross_encoder.reranker.engine is reranker.engine
    assert first.reranker is first.reranker
    first.max_length = 256  # a new setting takes effect on the next call, on the same engine
    assert first.reranker.max_length == 256
    assert first.reranker.engine is reranker.engine


def test_cross_encoder_takes_model_name_as_huggingface_cross_encoder_does(checkpoint_dir, reranker):
    cross_encoder = JinaLocalCrossEncoder(model_name=str(checkpoint_dir), device="cpu")
    assert cross_encoder.model == cross_encoder.model_name == str(checkpoint_dir)
    pairs = [("llama", "a llama is a camelid"), ("llama", "paris is in france")]
    assert cross_encoder.score(pairs) == pytest.approx(reranker.score_pairs(pairs).scores, abs=1e-6)
    with pytest.raises(ValidationError, match="give model or model_name"):
        JinaLocalCrossEncoder(model=str(checkpoint_dir), model_name=str(checkpoint_dir))
