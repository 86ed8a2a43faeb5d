"""The rerank clients people already have, pointed at a real ``jina-local-rerank serve`` over loopback.

Cohere's SDK (v1 ``Client`` and v2 ``ClientV2``), litellm (``cohere/``, ``huggingface/`` i.e. TEI, and
``jina_ai/``), the ``tei-client`` package and huggingface_hub's ``InferenceClient.get_endpoint_info``: each must
get the engine's own scores. Each test skips where its client is not installed (CI installs them all). Nothing
leaves 127.0.0.1: the clients are given the server's URL, and litellm is told to use its bundled model list.
"""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import pytest
from server_process import Server, start_server

from jina_local_rerank import Reranker
from jina_local_rerank.ranking import best_first

# litellm fetches its model list from the internet at import unless told not to.
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

API_KEY = "client-key"
MAX_LENGTH = 512
MODEL = "jina-reranker-test"
TOLERANCE = 1e-5
QUERY = "which animals live in the andes"
DOCUMENTS = [
    "A llama is a camelid of the Andes.",
    "Paris is the capital of France.",
    "Guanacos graze on high plateaus.",
    "Python functions return values.",
]


@pytest.fixture(scope="module")
def server(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    running = start_server(
        checkpoint_dir,
        tmp_path_factory.mktemp("clients") / "server.log",
        "--max-length",
        str(MAX_LENGTH),
        "--api-key",
        API_KEY,
        "--log-level",
        "warning",
    )
    yield running
    running.stop()
    assert "Traceback" not in running.log.read_text()


@pytest.fixture(scope="module")
def engine(checkpoint_dir: Path) -> Reranker:
    return Reranker(checkpoint_dir, device="cpu", max_length=MAX_LENGTH)


def expected_ranking(
    engine: Reranker, documents: list[str] = DOCUMENTS, top_n: int | None = None
) -> list[tuple[int, float]]:
    result = engine.score(QUERY, documents)
    return [(index, result.scores[index]) for index in best_first(result.logits)[:top_n]]


def assert_ranking(got: list[tuple[int, float]], expected: list[tuple[int, float]]) -> None:
    assert [index for index, _ in got] == [index for index, _ in expected]
    assert [score for _, score in got] == pytest.approx([score for _, score in expected], abs=TOLERANCE)


def test_cohere_client_v2(server: Server, engine: Reranker) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.ClientV2(api_key=API_KEY, base_url=server.url)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCUMENTS, top_n=3)
    assert_ranking([(r.index, r.relevance_score) for r in response.results], expected_ranking(engine, top_n=3))
    assert response.meta.billed_units.search_units == 1 and response.meta.api_version.version == "2"
    assert response.id

    # max_tokens_per_doc cuts each document to that many tokens before scoring.
    cut = client.rerank(model=MODEL, query=QUERY, documents=DOCUMENTS, max_tokens_per_doc=3)
    encoded = engine.encode(QUERY, DOCUMENTS, max_document_length=3)
    short = engine.result_from_logits(encoded, engine.engine.logits(encoded.input_ids, engine.max_batch_tokens))
    assert [(r.index, r.relevance_score) for r in cut.results] == [
        (index, pytest.approx(short.scores[index], abs=TOLERANCE)) for index in best_first(short.logits)
    ]
    with pytest.raises(cohere.core.ApiError) as refused:
        client.rerank(model="rerank-v3.5", query=QUERY, documents=DOCUMENTS)
    assert refused.value.status_code == 404


def test_cohere_client_v1(server: Server, engine: Reranker) -> None:
    cohere = pytest.importorskip("cohere")
    client = cohere.Client(api_key=API_KEY, base_url=server.url)
    response = client.rerank(model=MODEL, query=QUERY, documents=DOCUMENTS, top_n=2, return_documents=True)
    assert_ranking([(r.index, r.relevance_score) for r in response.results], expected_ranking(engine, top_n=2))
    assert all(r.document.text == DOCUMENTS[r.index] for r in response.results)


@pytest.fixture(scope="module")
def litellm():  # type: ignore[no-untyped-def]
    module = pytest.importorskip("litellm")  # a slow import: once per module
    module.telemetry = False
    return module


@pytest.mark.parametrize("provider", ["cohere", "huggingface", "jina_ai"])
def test_litellm_rerank(server: Server, engine: Reranker, litellm, provider: str) -> None:  # type: ignore[no-untyped-def]
    documents = DOCUMENTS
    if provider == "huggingface":  # TEI truncates by default: a text over the window is no error
        documents = [*DOCUMENTS, " ".join(random.Random(5).choices(DOCUMENTS, k=200))]
    response = litellm.rerank(
        model=f"{provider}/{MODEL}", query=QUERY, documents=documents, top_n=3, api_base=server.url, api_key=API_KEY
    )
    got = [(r["index"], r["relevance_score"]) for r in response.results]
    assert_ranking(got[:3], expected_ranking(engine, documents, top_n=3))


def test_tei_client(server: Server, engine: Reranker) -> None:
    tei_client = pytest.importorskip("tei_client")
    client = tei_client.HttpClient(server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60)
    info = client.info()
    assert info.server_model_type == tei_client.ModelType.Reranker
    assert info.server_model_id == MODEL and info.max_input_length == MAX_LENGTH
    assert client.health()
    ranks = client.rerank(QUERY, DOCUMENTS, return_text=True).ranks
    assert_ranking([(r.index, r.score) for r in ranks], expected_ranking(engine))
    assert all(r.text == DOCUMENTS[r.index] for r in ranks)


def test_huggingface_hub_get_endpoint_info(server: Server, monkeypatch: pytest.MonkeyPatch) -> None:
    hub = pytest.importorskip("huggingface_hub")
    # The tests run with the Hub offline; this client only calls our loopback URL.
    from huggingface_hub import constants
    from huggingface_hub import utils as hub_utils

    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    # huggingface_hub before 1.0 keeps one HTTP session per thread, made offline-only if an earlier test used the Hub
    # offline (later versions check offline mode on each request and have no reset_sessions).
    reset_sessions = getattr(hub_utils, "reset_sessions", lambda: None)
    reset_sessions()
    try:
        info = hub.InferenceClient(model=server.url, provider="hf-inference", token=API_KEY).get_endpoint_info()
    finally:
        reset_sessions()  # the next test gets an offline session again
    assert info["model_id"] == MODEL
    assert info["max_input_length"] == MAX_LENGTH and info["auto_truncate"] is True
    assert "reranker" in info["model_type"]
