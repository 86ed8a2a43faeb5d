"""``JinaLocalRanker`` in real Haystack pipelines: order, cuts, overrides, dedupe, async, serialization, sharing."""

from __future__ import annotations

import asyncio
import copy
import uuid
from pathlib import Path

import haystack
import pytest
from haystack import Document, Pipeline
from haystack.components.retrievers.in_memory import InMemoryBM25Retriever
from haystack.document_stores.in_memory import InMemoryDocumentStore
from haystack.utils import ComponentDevice, DeviceMap, Secret

from haystack_integrations.components.rankers.jina_local_rerank import JinaLocalRanker
from jina_local_rerank import Reranker, cached_engines

REPO_ROOT = Path(__file__).resolve().parents[1]
# Haystack 3 folds AsyncPipeline into Pipeline.run_async; 2.x has a separate class.
AsyncPipeline = getattr(haystack, "AsyncPipeline", Pipeline)
CPU = ComponentDevice.from_str("cpu")
QUERY = "how do I open a file for reading"
TEXTS = [
    "Use open(path) to read a file; the default mode is 'r'.",
    "A file opened for writing is truncated first.",
    "Lists are mutable sequences of objects.",
    "The with statement closes the file when the block ends.",
    "Dictionaries map hashable keys to values.",
    "Read a whole file at once with file.read().",
]


def expected_ranking(reranker: Reranker, query: str, texts: list[str], *, raw: bool = False) -> list[tuple[int, float]]:
    """(index into ``texts``, score) best first, straight from the engine's own scores."""
    result = reranker.score(query, texts, raw=raw)
    order = sorted(range(len(texts)), key=lambda i: -result.logits[i])
    return [(i, result.scores[i]) for i in order]


def ranked(result: dict[str, list[Document]]) -> list[tuple[str, float]]:
    return [(doc.id, doc.score) for doc in result["documents"]]


@pytest.fixture
def documents() -> list[Document]:
    return [Document(content=text, meta={"n": i}) for i, text in enumerate(TEXTS)]


@pytest.fixture
def store(documents: list[Document]) -> InMemoryDocumentStore:
    # A unique index: in-memory stores with the same index share their documents process-wide.
    store = InMemoryDocumentStore(index=f"haystack-test-{uuid.uuid4().hex}")
    store.write_documents(documents)
    return store


def make_pipeline(store: InMemoryDocumentStore, ranker: JinaLocalRanker, cls: type = Pipeline) -> Pipeline:
    pipeline = cls()
    pipeline.add_component("retriever", InMemoryBM25Retriever(document_store=store, top_k=5))
    pipeline.add_component("ranker", ranker)
    pipeline.connect("retriever.documents", "ranker.documents")
    return pipeline


def pipeline_inputs(query: str = QUERY) -> dict:
    return {"retriever": {"query": query}, "ranker": {"query": query}}


def test_pipeline_reranks_retrieved_documents_best_first(store, checkpoint_dir, reranker):
    retrieved = InMemoryBM25Retriever(document_store=store, top_k=5).run(query=QUERY)["documents"]
    ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=3)

    result = make_pipeline(store, ranker).run(pipeline_inputs())["ranker"]

    expected = expected_ranking(reranker, QUERY, [doc.content for doc in retrieved])[:3]
    assert [doc_id for doc_id, _ in ranked(result)] == [retrieved[i].id for i, _ in expected]
    assert [score for _, score in ranked(result)] == pytest.approx([score for _, score in expected], rel=1e-6)
    assert all(type(doc.score) is float for doc in result["documents"])
    # The copies keep each retrieved Document's content and meta.
    by_id = {doc.id: doc for doc in retrieved}
    for doc in result["documents"]:
        assert (doc.content, doc.meta) == (by_id[doc.id].content, by_id[doc.id].meta)


async def test_async_pipeline_matches_sync_pipeline(store, checkpoint_dir):
    sync_result = make_pipeline(store, JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=4)).run(pipeline_inputs())
    async_pipeline = make_pipeline(store, JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=4), AsyncPipeline)

    async_result = await async_pipeline.run_async(pipeline_inputs())

    assert len(async_result["ranker"]["documents"]) == 4
    assert ranked(async_result["ranker"]) == ranked(sync_result["ranker"])


async def test_run_async_does_not_block_the_loop_and_matches_run(checkpoint_dir, documents, reranker):
    ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=None)
    many = [Document(content=f"{text} ({i})") for i in range(40) for text in TEXTS]

    task = asyncio.create_task(ranker.run_async(query=QUERY, documents=many))
    ticks = 0
    while not task.done():
        await asyncio.sleep(0)
        ticks += 1
    # A coroutine that scored inline would finish in the loop's first step.
    assert ticks > 1
    expected = expected_ranking(reranker, QUERY, [doc.content for doc in many])
    assert [doc.id for doc in task.result()["documents"]] == [many[i].id for i, _ in expected]

    sync = ranker.run(query=QUERY, documents=documents, top_k=2, score_threshold=0.0, scale_score=False)
    result = await ranker.run_async(query=QUERY, documents=documents, top_k=2, score_threshold=0.0, scale_score=False)
    assert ranked(result) == ranked(sync)


def test_yaml_round_trip_runs_again_with_equal_results(store, checkpoint_dir):
    ranker = JinaLocalRanker(
        str(checkpoint_dir), device=CPU, top_k=3, meta_fields_to_embed=["n"], query_prefix="q: ", document_prefix="d: "
    )
    pipeline = make_pipeline(store, ranker)
    first = pipeline.run(pipeline_inputs())["ranker"]

    yaml_text = pipeline.dumps()
    loaded = Pipeline.loads(yaml_text)
    again = loaded.run(pipeline_inputs())["ranker"]

    assert "haystack_integrations.components.rankers.jina_local_rerank.ranker.JinaLocalRanker" in yaml_text
    loaded_ranker = loaded.get_component("ranker")
    assert loaded_ranker is not ranker
    assert loaded_ranker.to_dict() == ranker.to_dict()
    assert len(again["documents"]) == 3
    assert ranked(again) == ranked(first)


def test_to_dict_from_dict_round_trips_every_parameter(checkpoint_dir):
    ranker = JinaLocalRanker(
        str(checkpoint_dir),
        revision="main",
        device=CPU,
        token=Secret.from_env_var("MY_HF_TOKEN"),
        top_k=7,
        score_threshold=0.25,
        scale_score=False,
        meta_fields_to_embed=["title"],
        embedding_separator=" | ",
        query_prefix="query: ",
        query_suffix=" ?",
        document_prefix="passage: ",
        document_suffix=" .",
        batch_size=8,
        max_length=1024,
        max_batch_tokens=4096,
        long_document="chunk",
        chunk_stride=256,
        chunk_aggregation="mean_top2",
        dtype="float32",
    )
    data = ranker.to_dict()
    untouched = copy.deepcopy(data)

    restored = JinaLocalRanker.from_dict(data)

    assert data == untouched
    assert restored.to_dict() == data
    assert restored.device == CPU
    assert restored.token == Secret.from_env_var("MY_HF_TOKEN")
    assert data["init_parameters"]["device"] == {"type": "single", "device": "cpu"}
    assert data["init_parameters"]["chunk_aggregation"] == "mean_top2"
    defaults = JinaLocalRanker.from_dict(JinaLocalRanker().to_dict())
    assert (defaults.model, defaults.device, defaults.top_k, defaults.scale_score) == (None, None, 10, True)


def test_token_is_never_serialized_in_clear(store, checkpoint_dir, monkeypatch):
    secret_value = "hf_not_a_real_token_1234567890"
    monkeypatch.setenv("HF_TOKEN", secret_value)
    ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU)

    yaml_text = make_pipeline(store, ranker).dumps()

    assert ranker.to_dict()["init_parameters"]["token"] == {
        "type": "env_var",
        "env_vars": ["HF_API_TOKEN", "HF_TOKEN"],
        "strict": False,
    }
    assert secret_value not in yaml_text
    assert Pipeline.loads(yaml_text).get_component("ranker").token.resolve_value() == secret_value

    plain = JinaLocalRanker(str(checkpoint_dir), device=CPU, token=Secret.from_token(secret_value))
    with pytest.raises(ValueError, match="Cannot serialize token-based secret"):
        plain.to_dict()
    with pytest.raises(ValueError, match="Cannot serialize token-based secret"):
        make_pipeline(store, plain).dumps()


def test_duplicates_are_scored_once_keeping_the_highest_incoming_score(checkpoint_dir, reranker):
    documents = [
        Document(id="a", content=TEXTS[0], score=0.1),
        Document(id="b", content=TEXTS[1]),
        Document(id="a", content=TEXTS[3], score=0.9),  # same id, higher score: this copy is kept
        Document(id="c", content=TEXTS[5], score=0.5),
        Document(id="a", content=TEXTS[2], score=0.2),
        Document(id="b", content=TEXTS[4], score=0.3),  # a score beats no score
        Document(id="c", content=TEXTS[2], score=0.5),  # a tie keeps the first
    ]
    kept = [documents[2], documents[5], documents[3]]
    ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU)

    result = ranker.run(query=QUERY, documents=documents)

    expected = expected_ranking(reranker, QUERY, [doc.content for doc in kept])
    assert [(doc.id, doc.content) for doc in result["documents"]] == [
        (kept[i].id, kept[i].content) for i, _ in expected
    ]
    assert [doc.score for doc in result["documents"]] == pytest.approx([s for _, s in expected], rel=1e-6)


def test_score_threshold_cuts_on_the_selected_scale(checkpoint_dir, documents, reranker):
    probabilities = expected_ranking(reranker, QUERY, TEXTS)
    logits = expected_ranking(reranker, QUERY, TEXTS, raw=True)
    middle = probabilities[len(TEXTS) // 2][1]
    ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU, score_threshold=middle)

    kept = ranker.run(query=QUERY, documents=documents)["documents"]
    assert [doc.id for doc in kept] == [documents[i].id for i, s in probabilities if s >= middle]
    assert 0 < len(kept) < len(TEXTS)

    # Raw logits, thresholded at 0.0: falsy, yet it must replace the construction threshold.
    above_zero = [documents[i].id for i, s in logits if s >= 0.0]
    assert above_zero, "precondition: the test checkpoint gives some positive logits"
    strict = JinaLocalRanker(str(checkpoint_dir), device=CPU, scale_score=False, score_threshold=logits[0][1] + 1)
    assert strict.run(query=QUERY, documents=documents)["documents"] == []
    overridden = strict.run(query=QUERY, documents=documents, score_threshold=0.0)["documents"]
    assert [doc.id for doc in overridden] == above_zero


def test_run_time_overrides_replace_construction_values(checkpoint_dir, documents, reranker):
    probabilities = expected_ranking(reranker, QUERY, TEXTS)
    logits = expected_ranking(reranker, QUERY, TEXTS, raw=True)
    ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=2)

    assert len(ranker.run(query=QUERY, documents=documents)["documents"]) == 2
    assert len(ranker.run(query=QUERY, documents=documents, top_k=5)["documents"]) == 5
    assert len(ranker.run(query=QUERY, documents=documents, top_k=1)["documents"]) == 1
    raw = ranker.run(query=QUERY, documents=documents, top_k=6, scale_score=False)["documents"]
    assert [(doc.id, doc.score) for doc in raw] == [(documents[i].id, pytest.approx(s, rel=1e-6)) for i, s in logits]

    raw_ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=None, scale_score=False)
    scaled = raw_ranker.run(query=QUERY, documents=documents, scale_score=True)["documents"]
    assert [(d.id, d.score) for d in scaled] == [
        (documents[i].id, pytest.approx(s, rel=1e-6)) for i, s in probabilities
    ]
    assert len(raw_ranker.run(query=QUERY, documents=documents)["documents"]) == len(TEXTS)


def test_meta_fields_and_prefixes_shape_the_scored_text(checkpoint_dir, reranker):
    documents = [
        Document(content=TEXTS[0], meta={"title": "Reading files", "n": 3}),
        Document(content=TEXTS[2], meta={"title": "Lists"}),
        Document(content=TEXTS[3], meta={"title": ""}),  # empty values are left out, as Haystack's rankers do
        Document(content=None, meta={"title": "No content"}),
    ]
    ranker = JinaLocalRanker(
        str(checkpoint_dir),
        device=CPU,
        meta_fields_to_embed=["title", "n"],
        embedding_separator=" | ",
        query_prefix="q: ",
        document_prefix="d: ",
    )
    texts = [
        "d: Reading files | 3 | " + TEXTS[0],
        "d: Lists | " + TEXTS[2],
        "d: " + TEXTS[3],
        "d: No content | ",
    ]

    result = ranker.run(query=QUERY, documents=documents)

    expected = expected_ranking(reranker, "q: " + QUERY, texts)
    assert [doc.id for doc in result["documents"]] == [documents[i].id for i, _ in expected]
    assert [doc.score for doc in result["documents"]] == pytest.approx([s for _, s in expected], rel=1e-6)


def test_engine_settings_reach_the_reranker(small_window_checkpoint_dir):
    long_text = " ".join(TEXTS * 6)
    documents = [Document(content=long_text), Document(content=TEXTS[0])]
    settings = {"long_document": "chunk", "chunk_stride": 32, "chunk_aggregation": "mean_top2", "max_length": 96}
    engine_reranker = Reranker(small_window_checkpoint_dir, device="cpu", max_batch_tokens=512, **settings)
    ranker = JinaLocalRanker(str(small_window_checkpoint_dir), device=CPU, max_batch_tokens=512, **settings)
    truncating = JinaLocalRanker(str(small_window_checkpoint_dir), device=CPU, max_length=96)

    result = ranker.run(query=QUERY, documents=documents)

    assert engine_reranker.score(QUERY, [long_text]).windows[0] > 1, "precondition: the long text is chunked"
    expected = expected_ranking(engine_reranker, QUERY, [doc.content for doc in documents])
    assert [doc.id for doc in result["documents"]] == [documents[i].id for i, _ in expected]
    assert [doc.score for doc in result["documents"]] == pytest.approx([s for _, s in expected], rel=1e-6)
    chunked_score = next(doc.score for doc in result["documents"] if doc.content == long_text)
    truncated_score = next(
        doc.score for doc in truncating.run(query=QUERY, documents=documents)["documents"] if doc.content == long_text
    )
    assert chunked_score != truncated_score
    with pytest.raises(ValueError, match="max_length 4096 exceeds the model's window of 128"):
        JinaLocalRanker(str(small_window_checkpoint_dir), device=CPU, max_length=4096).warm_up()


def test_two_rankers_share_one_engine_and_warm_up_is_idempotent(checkpoint_dir, reranker, documents):
    first = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=1)
    second = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=5, long_document="chunk")
    engines_before = cached_engines()

    first.warm_up()
    second.run(query=QUERY, documents=documents)  # warms itself up
    loaded = first.reranker
    first.warm_up()

    assert first.reranker is loaded
    assert first.reranker.engine is second.reranker.engine is reranker.engine
    assert cached_engines() == engines_before


def test_empty_documents_return_an_empty_list_without_loading_a_model(tmp_path):
    ranker = JinaLocalRanker(str(tmp_path / "no-such-model"))

    assert ranker.run(query=QUERY, documents=[]) == {"documents": []}


def test_inputs_are_not_mutated(checkpoint_dir):
    documents = [Document(content=text, meta={"n": i}, score=float(i)) for i, text in enumerate(TEXTS)]
    documents.append(Document(id=documents[0].id, content="dup", score=-1.0))
    snapshot = copy.deepcopy(documents)
    ids = [id(doc) for doc in documents]

    result = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=3).run(query=QUERY, documents=documents)

    assert documents == snapshot
    assert [id(doc) for doc in documents] == ids
    assert all(out is not doc for out in result["documents"] for doc in documents)


def test_outputs_share_nothing_mutable_with_the_inputs(checkpoint_dir):
    documents = [
        Document(content=text, meta={"n": i, "tags": ["t"], "source": {"page": i}}, embedding=[0.5, float(i)])
        for i, text in enumerate(TEXTS)
    ]
    snapshot = copy.deepcopy(documents)

    result = JinaLocalRanker(str(checkpoint_dir), device=CPU, top_k=None).run(query=QUERY, documents=documents)
    for out in result["documents"]:
        out.meta["n"] = -1
        out.meta["tags"].append("edited")
        out.meta["source"]["page"] = -1
        out.embedding.append(9.0)

    assert documents == snapshot


@pytest.mark.parametrize("threshold", [float("nan"), float("inf"), float("-inf")])
def test_non_finite_score_threshold_is_refused(checkpoint_dir, threshold):
    with pytest.raises(ValueError, match="score_threshold must be a finite number"):
        JinaLocalRanker(str(checkpoint_dir), device=CPU, score_threshold=threshold)
    ranker = JinaLocalRanker(str(checkpoint_dir), device=CPU)
    with pytest.raises(ValueError, match="score_threshold must be a finite number"):
        ranker.run(query=QUERY, documents=[Document(content="a")], score_threshold=threshold)


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"query": 42, "documents": []}, TypeError, "query must be a string, got int"),
        ({"query": QUERY, "documents": "text"}, TypeError, "documents must be a list of haystack Documents, got str"),
        ({"query": QUERY, "documents": [Document(content="a"), "b"]}, TypeError, r"documents\[1\] must be a haystack"),
        ({"query": QUERY, "documents": [Document(content="a")], "top_k": 0}, ValueError, "top_k must be >= 1, got 0"),
        ({"query": QUERY, "documents": [Document(content="a")], "top_k": -3}, ValueError, "top_k must be >= 1"),
        ({"query": QUERY, "documents": [Document(content="a")], "top_k": 2.5}, TypeError, "top_k must be an integer"),
        ({"query": QUERY, "documents": [], "score_threshold": "0.5"}, TypeError, "score_threshold must be a number"),
    ],
)
def test_bad_run_input_is_a_clear_error(checkpoint_dir, kwargs, error, message):
    with pytest.raises(error, match=message):
        JinaLocalRanker(str(checkpoint_dir), device=CPU).run(**kwargs)


def test_bad_run_input_fails_the_pipeline_naming_the_problem(store, checkpoint_dir):
    pipeline = make_pipeline(store, JinaLocalRanker(str(checkpoint_dir), device=CPU))
    with pytest.raises(Exception, match="top_k must be >= 1, got 0"):
        pipeline.run({"retriever": {"query": QUERY}, "ranker": {"query": QUERY, "top_k": 0}})


@pytest.mark.parametrize(
    ("kwargs", "error", "message"),
    [
        ({"top_k": 0}, ValueError, "top_k must be >= 1, got 0"),
        ({"score_threshold": True}, TypeError, "score_threshold must be a number or None, got bool"),
        ({"device": "cpu"}, TypeError, "device must be a haystack ComponentDevice or None, got str"),
        ({"token": "hf_plain_string"}, TypeError, "token must be a haystack Secret"),
    ],
)
def test_bad_construction_arguments_are_clear_errors(kwargs, error, message):
    with pytest.raises(error, match=message):
        JinaLocalRanker(**kwargs)


def test_device_maps_are_refused():
    device_map = ComponentDevice.from_multiple(DeviceMap.from_hf({"layer": "cpu"}))
    with pytest.raises(ValueError, match="single device"):
        JinaLocalRanker(device=device_map)


def test_sentence_transformers_ranker_arguments_that_mean_something_here_are_accepted(checkpoint_dir):
    # SentenceTransformersSimilarityRanker's query_suffix, document_suffix and batch_size: the texts scored are
    # prefix + text + suffix, and batch_size caps the documents of a forward pass.
    ranker = JinaLocalRanker(
        str(checkpoint_dir),
        device=CPU,
        top_k=None,
        query_prefix="q: ",
        query_suffix=" ?",
        document_prefix="d: ",
        document_suffix=" !",
        batch_size=2,
    )
    documents = [Document(content=text) for text in TEXTS]
    got = ranker.run(query=QUERY, documents=documents)["documents"]
    engine = Reranker(checkpoint_dir, device="cpu")
    expected = expected_ranking(engine, f"q: {QUERY} ?", [f"d: {text} !" for text in TEXTS])
    assert [(TEXTS.index(doc.content), doc.score) for doc in got] == [
        (i, pytest.approx(s, abs=1e-6)) for i, s in expected
    ]
    assert ranker.reranker.max_batch_size == 2
    assert ranker.to_dict()["init_parameters"]["batch_size"] == 2


@pytest.mark.parametrize(
    "argument, value, instead",
    [
        ("backend", "onnx", "export onnx"),
        ("model_kwargs", {"torch_dtype": "float16"}, "dtype"),
        ("tokenizer_kwargs", {"model_max_length": 512}, "max_length"),
        ("trust_remote_code", True, "no remote code"),
    ],
)
def test_sentence_transformers_ranker_arguments_without_meaning_here_are_refused_naming_what_to_use(
    argument, value, instead
):
    with pytest.raises(TypeError, match=f"{argument} does not apply to JinaLocalRanker: .*{instead}"):
        JinaLocalRanker(**{argument: value})
