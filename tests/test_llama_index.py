"""JinaLocalRerank in real LlamaIndex pipelines: VectorStoreIndex, RetrieverQueryEngine, MockLLM, real handlers."""

from __future__ import annotations

import asyncio
import copy
import hashlib
import math
import pickle
import re
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.base.embeddings.base import BaseEmbedding
from llama_index.core.bridge.pydantic import Field, ValidationError
from llama_index.core.callbacks import CallbackManager, CBEventType, EventPayload, LlamaDebugHandler
from llama_index.core.instrumentation import get_dispatcher
from llama_index.core.instrumentation.event_handlers import BaseEventHandler
from llama_index.core.instrumentation.events import BaseEvent
from llama_index.core.instrumentation.events.rerank import ReRankEndEvent, ReRankStartEvent
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, NodeWithScore, QueryBundle, TextNode

from jina_local_rerank import ModelNotFoundError, Reranker
from llama_index.postprocessor.jina_local_rerank import JinaLocalRerank

REPO_ROOT = Path(__file__).resolve().parents[1]
RETRIEVE_K = 6
WORD = re.compile(r"[a-z0-9]+")

CORPUS = {
    "sourdough": ("Baking", "Feed a sourdough starter flour and water every day to keep the starter alive."),
    "starter-fridge": ("Baking", "A sourdough starter in the fridge needs feeding once a week."),
    "crust": ("Baking", "Steam in the oven gives bread a crisp crust."),
    "tomatoes": ("Gardening", "Water tomato plants deeply twice a week and feed them compost."),
    "roses": ("Gardening", "Prune roses in early spring above an outward facing bud."),
    "lists": ("Programming", "Python lists keep insertion order and grow when items are appended."),
    "dicts": ("Programming", "Python dictionaries map keys to values and keep insertion order."),
    "chain": ("Cycling", "Oil a bicycle chain every few hundred kilometres to keep it from rusting."),
}
QUERIES = [
    "how often should I feed a sourdough starter",
    "do python dictionaries keep insertion order",
    "when should roses and tomato plants be watered or pruned",
]


class HashingEmbedding(BaseEmbedding):
    """Offline embedding: a hashed bag of words, L2-normalised, so shared words make texts similar."""

    dimensions: int = 256

    def _embed(self, text: str) -> list[float]:
        vector = [0.0] * self.dimensions
        for word in WORD.findall(text.lower()):
            bucket = int.from_bytes(hashlib.blake2b(word.encode(), digest_size=4).digest(), "little")
            vector[bucket % self.dimensions] += 1.0
        norm = math.sqrt(sum(value * value for value in vector)) or 1.0
        return [value / norm for value in vector]

    def _get_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    async def _aget_query_embedding(self, query: str) -> list[float]:
        return self._embed(query)

    def _get_text_embedding(self, text: str) -> list[float]:
        return self._embed(text)


class RerankEventLog(BaseEventHandler):
    """Keeps the ReRankStartEvent/ReRankEndEvent the dispatcher sends."""

    events: list[BaseEvent] = Field(default_factory=list)

    def handle(self, event: BaseEvent, **kwargs: Any) -> None:
        if isinstance(event, (ReRankStartEvent, ReRankEndEvent)):
            self.events.append(event)


@pytest.fixture
def rerank_events() -> list[BaseEvent]:
    handler = RerankEventLog()
    root = get_dispatcher()
    root.add_event_handler(handler)
    yield handler.events
    root.event_handlers.remove(handler)


@pytest.fixture
def debug_handler() -> LlamaDebugHandler:
    return LlamaDebugHandler(print_trace_on_end=False)


@pytest.fixture(scope="module")
def index() -> VectorStoreIndex:
    nodes = [TextNode(id_=node_id, text=text, metadata={"topic": topic}) for node_id, (topic, text) in CORPUS.items()]
    return VectorStoreIndex(nodes, embed_model=HashingEmbedding())


def make(checkpoint_dir: Path, **fields: Any) -> JinaLocalRerank:
    return JinaLocalRerank(model=str(checkpoint_dir), device="cpu", **fields)


def retrieve(index: VectorStoreIndex, query: str) -> list[NodeWithScore]:
    return index.as_retriever(similarity_top_k=RETRIEVE_K).retrieve(query)


def expected(
    reranker: Reranker,
    query: str,
    nodes: list[NodeWithScore],
    top_n: int | None,
    *,
    mode: MetadataMode = MetadataMode.EMBED,
    raw: bool = False,
) -> list[tuple[str, float]]:
    """(node id, score) best first by the engine's own logits, ties in input order, cut to ``top_n``."""
    result = reranker.score(query, [n.node.get_content(metadata_mode=mode) for n in nodes], raw=raw)
    order = sorted(range(len(nodes)), key=lambda i: (-result.logits[i], i))[:top_n]
    return [(nodes[i].node.node_id, result.scores[i]) for i in order]


def ids_scores(nodes: list[NodeWithScore]) -> list[tuple[str, float]]:
    return [(n.node.node_id, n.score) for n in nodes]


def assert_ranked(actual: list[NodeWithScore], wanted: list[tuple[str, float]]) -> None:
    assert [node_id for node_id, _ in ids_scores(actual)] == [node_id for node_id, _ in wanted]
    assert [score for _, score in ids_scores(actual)] == pytest.approx([score for _, score in wanted], abs=1e-6)
    assert all(type(n.score) is float for n in actual)


def sample_nodes() -> list[NodeWithScore]:
    texts = ["apples are red", "the sky is blue on a clear day", "python is a programming language", "blue whales"]
    return [
        NodeWithScore(node=TextNode(id_=f"n{i}", text=text, metadata={"source": f"s{i}", "tags": ["t"]}), score=i / 10)
        for i, text in enumerate(texts)
    ]


# --- pipelines -------------------------------------------------------------------------------------------------


def test_query_engine_reranks_and_cuts_retrieved_nodes_as_engine_scores(index, checkpoint_dir, reranker):
    query = QUERIES[0]
    retrieved = retrieve(index, query)
    assert len(retrieved) == RETRIEVE_K
    assert retrieved[0].node.node_id in {"sourdough", "starter-fridge"}  # the test embedding retrieves by meaning

    engine = index.as_query_engine(
        similarity_top_k=RETRIEVE_K, llm=MockLLM(), node_postprocessors=[make(checkpoint_dir, top_n=3)]
    )
    response = engine.query(query)

    assert_ranked(response.source_nodes, expected(reranker, query, retrieved, 3))
    assert isinstance(response.response, str)


async def test_retriever_query_engine_aquery_matches_engine_scores(index, checkpoint_dir, reranker):
    query = QUERIES[1]
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=RETRIEVE_K), llm=MockLLM(), node_postprocessors=[make(checkpoint_dir)]
    )
    response = await engine.aquery(query)
    assert_ranked(response.source_nodes, expected(reranker, query, retrieve(index, query), 3))


async def test_concurrent_aqueries_each_get_their_own_ranking(index, checkpoint_dir, reranker, rerank_events):
    postprocessor = make(checkpoint_dir, top_n=2)
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=RETRIEVE_K), llm=MockLLM(), node_postprocessors=[postprocessor]
    )
    responses = await asyncio.gather(*(engine.aquery(query) for query in QUERIES))

    for query, response in zip(QUERIES, responses):
        assert_ranked(response.source_nodes, expected(reranker, query, retrieve(index, query), 2))
    starts = [e for e in rerank_events if isinstance(e, ReRankStartEvent)]
    ends = [e for e in rerank_events if isinstance(e, ReRankEndEvent)]
    assert sorted(e.query.query_str for e in starts) == sorted(QUERIES)
    assert len(ends) == len(QUERIES)
    assert sorted(e.span_id for e in starts) == sorted(e.span_id for e in ends)


async def test_async_scoring_leaves_the_event_loop_free(checkpoint_dir):
    postprocessor = make(checkpoint_dir, top_n=None)
    nodes = [NodeWithScore(node=TextNode(text=f"passage {i} " + "word " * 50)) for i in range(4)]
    task = asyncio.create_task(postprocessor.apostprocess_nodes(nodes, query_str="which passage"))
    await asyncio.sleep(0)  # let the task run up to its first suspension
    ticks = 0
    while not task.done():  # a blocking implementation would already be done here
        ticks += 1
        await asyncio.sleep(0.001)
    assert ticks >= 1
    assert len(await task) == 4


# --- observability ---------------------------------------------------------------------------------------------


def test_instrumentation_and_callback_events_describe_the_rerank(index, checkpoint_dir, rerank_events, debug_handler):
    query = QUERIES[0]
    engine = RetrieverQueryEngine.from_args(
        index.as_retriever(similarity_top_k=RETRIEVE_K),
        llm=MockLLM(),
        node_postprocessors=[make(checkpoint_dir, top_n=3)],
        callback_manager=CallbackManager([debug_handler]),  # the engine hands it to its postprocessors
    )
    response = engine.query(query)
    returned_ids = [n.node.node_id for n in response.source_nodes]
    retrieved_ids = [n.node.node_id for n in retrieve(index, query)]

    start, end = rerank_events
    assert isinstance(start, ReRankStartEvent) and isinstance(end, ReRankEndEvent)
    assert start.span_id == end.span_id
    assert start.query.query_str == query
    assert [n.node.node_id for n in start.nodes] == retrieved_ids
    assert (start.top_n, start.model_name) == (3, str(checkpoint_dir))
    assert [n.node.node_id for n in end.nodes] == returned_ids

    [(cb_start, cb_end)] = debug_handler.get_event_pairs(CBEventType.RERANKING)
    assert cb_start.payload[EventPayload.QUERY_STR] == query
    assert cb_start.payload[EventPayload.MODEL_NAME] == str(checkpoint_dir)
    assert cb_start.payload[EventPayload.TOP_K] == 3
    assert [n.node.node_id for n in cb_start.payload[EventPayload.NODES]] == retrieved_ids
    assert [n.node.node_id for n in cb_end.payload[EventPayload.NODES]] == returned_ids


def test_top_n_none_reports_all_nodes_in_start_event(checkpoint_dir, rerank_events):
    nodes = sample_nodes()
    assert len(make(checkpoint_dir, top_n=None).postprocess_nodes(nodes, query_str="sky")) == len(nodes)
    assert rerank_events[0].top_n == len(nodes)


def test_failed_load_still_pairs_events_and_names_the_model(tmp_path, rerank_events, debug_handler):
    missing = tmp_path / "no-such-model"
    postprocessor = JinaLocalRerank(model=str(missing), callback_manager=CallbackManager([debug_handler]))
    with pytest.raises(ModelNotFoundError, match="no-such-model"):
        postprocessor.postprocess_nodes(sample_nodes(), query_str="sky")
    assert [type(e) for e in rerank_events] == [ReRankStartEvent, ReRankEndEvent]
    assert rerank_events[1].nodes == []
    [(_, cb_end)] = debug_handler.get_event_pairs(CBEventType.RERANKING)
    assert isinstance(cb_end.payload[EventPayload.EXCEPTION], ModelNotFoundError)


# --- ranking options -------------------------------------------------------------------------------------------


def test_top_n_none_returns_every_node_best_first(checkpoint_dir, reranker):
    nodes = sample_nodes()
    result = make(checkpoint_dir, top_n=None).postprocess_nodes(nodes, query_str="what colour is the sky")
    assert_ranked(result, expected(reranker, "what colour is the sky", nodes, None))


@pytest.mark.parametrize("threshold", [float("nan"), float("-inf")])
def test_non_finite_score_threshold_is_refused(checkpoint_dir, threshold):
    with pytest.raises(ValidationError, match="score_threshold must be a finite number"):
        make(checkpoint_dir, score_threshold=threshold)


def test_score_threshold_drops_nodes_below_it(checkpoint_dir, reranker):
    nodes, query = sample_nodes(), "what colour is the sky"
    everything = expected(reranker, query, nodes, None)
    threshold = everything[1][1]  # keeps the best two (unless scores tie)
    wanted = [(node_id, score) for node_id, score in everything if score >= threshold]
    assert 0 < len(wanted) < len(nodes)
    result = make(checkpoint_dir, top_n=None, score_threshold=threshold).postprocess_nodes(nodes, query_str=query)
    assert_ranked(result, wanted)


def test_raw_scores_are_the_logits(checkpoint_dir, reranker):
    nodes, query = sample_nodes(), "blue"
    result = make(checkpoint_dir, top_n=2, raw_scores=True).postprocess_nodes(nodes, query_str=query)
    assert_ranked(result, expected(reranker, query, nodes, 2, raw=True))


def test_metadata_mode_selects_the_scored_text(checkpoint_dir, reranker):
    nodes, query = sample_nodes(), "python"
    with_metadata = expected(reranker, query, nodes, None, mode=MetadataMode.EMBED)
    without = expected(reranker, query, nodes, None, mode=MetadataMode.NONE)
    assert with_metadata != without  # the metadata really changes the scores
    default = make(checkpoint_dir, top_n=None).postprocess_nodes(nodes, query_str=query)
    plain = make(checkpoint_dir, top_n=None, metadata_mode=MetadataMode.NONE).postprocess_nodes(nodes, query_str=query)
    assert_ranked(default, with_metadata)
    assert_ranked(plain, without)


def test_long_document_settings_reach_the_engine(small_window_checkpoint_dir):
    settings = dict(max_length=64, long_document="chunk", chunk_stride=16, chunk_aggregation="mean_top2")
    reference = Reranker(small_window_checkpoint_dir, device="cpu", **settings)
    nodes = [NodeWithScore(node=TextNode(id_=f"long{i}", text=f"topic {i} " + "filler text " * 60)) for i in range(3)]
    result = make(small_window_checkpoint_dir, top_n=None, **settings).postprocess_nodes(nodes, query_str="topic 1")
    assert max(reference.score("topic 1", [n.node.get_content("embed") for n in nodes]).windows) > 1
    assert_ranked(result, expected(reference, "topic 1", nodes, None))


# --- copies, never mutation ------------------------------------------------------------------------------------


def test_returns_copies_and_leaves_the_callers_nodes_untouched(checkpoint_dir):
    nodes = sample_nodes()
    before = [(n.score, n.node.model_dump()) for n in nodes]
    originals = {n.node.node_id: n for n in nodes}

    result = make(checkpoint_dir, top_n=None, keep_retrieval_score=True).postprocess_nodes(nodes, query_str="sky")

    assert [(n.score, n.node.model_dump()) for n in nodes] == before
    for scored in result:
        original = originals[scored.node.node_id]
        assert scored is not original and scored.node is not original.node
        assert scored.node.metadata["retrieval_score"] == original.score
        assert "retrieval_score" not in scored.node.get_content(MetadataMode.LLM)
        assert "retrieval_score" not in scored.node.get_content(MetadataMode.EMBED)
        scored.node.metadata["tags"].append("changed downstream")
    assert [(n.score, n.node.model_dump()) for n in nodes] == before


def test_without_keep_retrieval_score_metadata_is_an_equal_copy(checkpoint_dir):
    nodes = sample_nodes()
    result = make(checkpoint_dir, top_n=None).postprocess_nodes(nodes, query_str="sky")
    originals = {n.node.node_id: n.node for n in nodes}
    assert all(n.node.model_dump() == originals[n.node.node_id].model_dump() for n in result)


# --- bad input -------------------------------------------------------------------------------------------------


def test_missing_query_raises_value_error_before_any_event(checkpoint_dir, rerank_events, debug_handler):
    postprocessor = make(checkpoint_dir, callback_manager=CallbackManager([debug_handler]))
    with pytest.raises(ValueError, match="needs the query"):
        postprocessor.postprocess_nodes(sample_nodes())
    assert rerank_events == [] and debug_handler.get_event_pairs(CBEventType.RERANKING) == []


async def test_missing_query_raises_in_async_too(checkpoint_dir, rerank_events):
    with pytest.raises(ValueError, match="needs the query"):
        await make(checkpoint_dir).apostprocess_nodes(sample_nodes())
    assert rerank_events == []


async def test_empty_nodes_return_empty_without_events(checkpoint_dir, rerank_events, debug_handler):
    postprocessor = make(checkpoint_dir, callback_manager=CallbackManager([debug_handler]))
    assert postprocessor.postprocess_nodes([], query_str="anything") == []
    assert await postprocessor.apostprocess_nodes([], query_str="anything") == []
    assert rerank_events == [] and debug_handler.get_event_pairs(CBEventType.RERANKING) == []


def test_plain_string_as_query_bundle_is_a_clear_type_error(checkpoint_dir):
    with pytest.raises(TypeError, match="query_bundle must be a QueryBundle, got str"):
        make(checkpoint_dir).postprocess_nodes(sample_nodes(), "sky")


def test_node_that_is_not_node_with_score_is_named_by_index(checkpoint_dir, rerank_events):
    nodes: list[Any] = sample_nodes()
    nodes[2] = nodes[2].node
    with pytest.raises(TypeError, match=r"nodes\[2\] must be a NodeWithScore, got TextNode"):
        make(checkpoint_dir).postprocess_nodes(nodes, query_str="sky")
    assert rerank_events == []


def test_non_string_query_is_rejected_by_the_engine(checkpoint_dir):
    with pytest.raises(TypeError, match="query must be a string, got int"):
        make(checkpoint_dir).postprocess_nodes(sample_nodes(), QueryBundle(query_str=42))  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("top_n", 0),
        ("top_n", True),
        ("max_batch_tokens", 0),
        ("max_length", 2.5),
        ("chunk_stride", -1),
        ("long_document", "split"),
        ("chunk_aggregation", "sum"),
        ("metadata_mode", "everything"),
    ],
)
def test_invalid_fields_are_rejected_with_the_field_name(field, value):
    with pytest.raises(ValidationError, match=field):
        JinaLocalRerank(**{field: value})


def test_invalid_assignment_is_rejected(checkpoint_dir):
    postprocessor = make(checkpoint_dir)
    with pytest.raises(ValidationError, match="top_n"):
        postprocessor.top_n = 0


def test_max_length_beyond_the_window_is_reported_on_first_use(small_window_checkpoint_dir):
    postprocessor = make(small_window_checkpoint_dir, max_length=4096)
    with pytest.raises(ValueError, match="exceeds the model's window of 128 tokens"):
        postprocessor.postprocess_nodes(sample_nodes(), query_str="sky")


# --- serialisation and model sharing ---------------------------------------------------------------------------

NON_DEFAULTS = dict(
    revision="main",
    top_n=5,
    score_threshold=0.25,
    dtype="float32",
    max_length=2048,
    max_query_length=128,
    max_batch_tokens=8192,
    max_batch_size=16,
    query_prefix="Represent this query: ",
    query_suffix=" ?",
    document_prefix="passage: ",
    document_suffix=" .",
    long_document="chunk",
    chunk_stride=512,
    chunk_aggregation="mean_top2",
    cache_dir="/tmp/hf-cache",
    metadata_mode=MetadataMode.LLM,
    keep_retrieval_score=True,
    raw_scores=True,
)


def test_every_field_is_set_by_the_non_default_values_below():
    # token is a secret: never serialized (see the test below), so not round-tripped either.
    fields = set(JinaLocalRerank.model_fields) - {"callback_manager", "model", "device", "token"}
    assert fields == set(NON_DEFAULTS)
    defaults = JinaLocalRerank()
    assert all(getattr(defaults, name) != value for name, value in NON_DEFAULTS.items())


def test_to_dict_and_json_round_trip_every_field(checkpoint_dir):
    postprocessor = make(checkpoint_dir, **NON_DEFAULTS)
    data = postprocessor.to_dict()
    assert data["class_name"] == "JinaLocalRerank"
    for restored in (JinaLocalRerank.from_dict(data), JinaLocalRerank.from_json(postprocessor.to_json())):
        assert restored.model_dump() == postprocessor.model_dump()


def test_the_hub_token_is_never_serialized(checkpoint_dir):
    postprocessor = make(checkpoint_dir, token="hf_secret_value")
    assert postprocessor.engine_options().token == "hf_secret_value"
    assert "hf_secret_value" not in postprocessor.to_json() + repr(postprocessor) + str(postprocessor.to_dict())


def test_from_dict_reattaches_to_the_loaded_engine(checkpoint_dir, reranker):
    postprocessor = make(checkpoint_dir)
    restored = JinaLocalRerank.from_dict(postprocessor.to_dict())
    assert restored.reranker.engine is postprocessor.reranker.engine is reranker.engine


def test_pickle_round_trip_keeps_fields_and_shares_the_model(checkpoint_dir, reranker):
    postprocessor = make(checkpoint_dir, **{**NON_DEFAULTS, "revision": None, "max_length": None})
    postprocessor.postprocess_nodes(sample_nodes(), query_str="sky")  # loaded before pickling
    blob = pickle.dumps(postprocessor)
    assert len(blob) < 20_000  # the configuration only, not the weights
    restored = pickle.loads(blob)
    assert restored.model_dump() == postprocessor.model_dump()
    assert restored.reranker.engine is reranker.engine


def test_deepcopy_shares_the_model(checkpoint_dir, reranker):
    postprocessor = make(checkpoint_dir)
    postprocessor.postprocess_nodes(sample_nodes(), query_str="sky")
    assert copy.deepcopy(postprocessor).reranker.engine is reranker.engine


def test_postprocessors_on_one_model_share_one_engine(checkpoint_dir, reranker):
    first = make(checkpoint_dir, top_n=1, max_length=256)
    second = make(checkpoint_dir, top_n=None, long_document="chunk")
    assert first.reranker is not second.reranker  # their own settings ...
    assert first.reranker.engine is second.reranker.engine is reranker.engine  # ... one copy of the weights


def test_changing_a_field_rebuilds_the_reranker_on_the_same_engine(checkpoint_dir, reranker):
    postprocessor = make(checkpoint_dir)
    assert postprocessor.reranker.max_length == 8192
    postprocessor.max_length = 256
    assert postprocessor.reranker.max_length == 256
    assert postprocessor.reranker.engine is reranker.engine


def test_path_model_and_torch_device_are_stored_as_strings(checkpoint_dir):
    import torch

    postprocessor = JinaLocalRerank(model=checkpoint_dir, device=torch.device("cpu"), dtype=torch.float32)
    assert (postprocessor.model, postprocessor.device, postprocessor.dtype) == (str(checkpoint_dir), "cpu", "float32")


def test_query_and_text_instructions_are_put_before_the_texts_like_the_tei_postprocessor(checkpoint_dir):
    postprocessor = make(
        checkpoint_dir,
        top_n=None,
        metadata_mode=MetadataMode.NONE,
        query_instruction="Represent this query: ",
        text_instruction="passage: ",
    )
    assert (postprocessor.query_prefix, postprocessor.document_prefix) == ("Represent this query: ", "passage: ")
    nodes = sample_nodes()
    got = postprocessor.postprocess_nodes(nodes, query_str="sky")
    engine = Reranker(checkpoint_dir, device="cpu")
    texts = [scored.node.get_content(metadata_mode=MetadataMode.NONE) for scored in nodes]
    expected = engine.score("Represent this query: sky", [f"passage: {text}" for text in texts]).scores
    assert {scored.node.node_id: scored.score for scored in got} == {
        node.node.node_id: pytest.approx(score, abs=1e-6) for node, score in zip(nodes, expected)
    }
    with pytest.raises(ValidationError, match="give query_prefix or query_instruction"):
        make(checkpoint_dir, query_prefix="a", query_instruction="b")
