"""The rerank server: real uvicorn processes over loopback, compared with the engine's own scores."""

from __future__ import annotations

import asyncio
import json
import random
import signal
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import Server, start_server

from jina_local_rerank import Reranker
from jina_local_rerank.ranking import best_first
from jina_local_rerank.server.batcher import MicroBatcher
from jina_local_rerank.server.merging import cut_slices, merge_sequences, split_logits
from jina_local_rerank.server.schemas import JinaRerankRequest, jina_response
from jina_local_rerank.server.settings import ServerSettings, default_served_names

API_KEY = "test-key"
MAX_LENGTH = 512
MAX_DOCUMENTS = 50
MAX_REQUEST_BYTES = 200_000
MAX_DOCUMENT_CHARS = 20_000
SCORE_TOLERANCE = 1e-5
WORDS = (
    "python function returns value list dictionary module import class object the a of to and in "
    "is that for it with as was on be by this are or from at which an not but have has were had llama "
    "camelid andes wool pack animal guanaco paris france capital river city museum"
).split()


def random_text(rng: random.Random, words: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(words))


@pytest.fixture(scope="module")
def server(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """One server for the module: API key from the environment, small limits, a 512-token window."""
    log = tmp_path_factory.mktemp("server") / "server.log"
    running = start_server(
        checkpoint_dir,
        log,
        "--max-length",
        str(MAX_LENGTH),
        "--max-documents",
        str(MAX_DOCUMENTS),
        "--max-request-bytes",
        str(MAX_REQUEST_BYTES),
        "--max-document-chars",
        str(MAX_DOCUMENT_CHARS),
        "--log-level",
        "warning",
        env={"JINA_LOCAL_RERANK_API_KEY": API_KEY},
    )
    yield running
    assert running.stop() == -signal.SIGTERM, running.log.read_text()


@pytest.fixture(scope="module")
def engine_reranker(checkpoint_dir: Path) -> Reranker:
    """The scores the module server must give: same checkpoint, same window."""
    return Reranker(checkpoint_dir, device="cpu", max_length=MAX_LENGTH)


@pytest.fixture
def client(server: Server) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {API_KEY}"}, timeout=60) as http:
        yield http


def assert_matches_engine(results: list[dict[str, Any]], expected_scores: list[float], score_key: str) -> None:
    """Every result carries the engine's score for its index, and results come best first."""
    for entry in results:
        assert entry[score_key] == pytest.approx(expected_scores[entry["index"]], abs=SCORE_TOLERANCE)
    got = [entry[score_key] for entry in results]
    assert all(a >= b - SCORE_TOLERANCE for a, b in zip(got, got[1:])), got


def health(server: Server) -> dict[str, Any]:
    return httpx.get(f"{server.url}/health", timeout=30).json()


# --- Jina-shaped API -------------------------------------------------------------------------------------------


def test_jina_request_exactly_as_jina_documents_it(server: Server, engine_reranker: Reranker) -> None:
    query = "Organic skincare products for sensitive skin"
    documents = [
        "Organic skincare for sensitive skin with aloe vera and chamomile.",
        "New makeup trends focus on bold colors and innovative techniques.",
        "Bio-Hautpflege für empfindliche Haut mit Aloe Vera und Kamille.",
        "Cuidado de la piel orgánico para piel sensible con aloe vera y manzanilla.",
    ]
    response = httpx.post(
        f"{server.url}/v1/rerank",
        headers={"Content-Type": "application/json", "Authorization": f"Bearer {API_KEY}"},
        json={"model": "jina-reranker-test", "query": query, "documents": documents, "top_n": 3},
        timeout=60,
    )
    assert response.status_code == 200, response.text
    body = response.json()
    expected = engine_reranker.score(query, documents)
    assert set(body) == {"model", "usage", "results"}
    assert body["model"] == "jina-reranker-test"
    assert body["usage"] == {"total_tokens": expected.num_tokens, "prompt_tokens": expected.num_tokens}
    assert [entry["index"] for entry in body["results"]] == best_first(expected.logits)[:3]
    assert_matches_engine(body["results"], expected.scores, "relevance_score")
    for entry in body["results"]:
        assert entry["document"] == {"text": documents[entry["index"]]}


def test_jina_documents_as_objects_and_strings_without_documents_in_response(
    client: httpx.Client, engine_reranker: Reranker
) -> None:
    documents = ["a llama is a camelid", {"text": "paris is the capital of france"}, "python returns a value"]
    texts = [doc if isinstance(doc, str) else doc["text"] for doc in documents]
    response = client.post(
        "/v1/rerank", json={"query": "what is a llama", "documents": documents, "return_documents": False}
    )
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    assert len(results) == 3
    assert all(set(entry) == {"index", "relevance_score"} for entry in results)
    assert_matches_engine(results, engine_reranker.score("what is a llama", texts).scores, "relevance_score")


def test_jina_top_n_larger_than_documents_and_empty_documents(client: httpx.Client) -> None:
    response = client.post("/v1/rerank", json={"query": "q", "documents": ["a", "b"], "top_n": 10})
    assert response.status_code == 200
    assert sorted(entry["index"] for entry in response.json()["results"]) == [0, 1]
    response = client.post("/v1/rerank", json={"query": "q", "documents": []})
    assert response.status_code == 200
    assert response.json()["results"] == []
    assert response.json()["usage"]["total_tokens"] == 0


def test_served_model_names_never_show_the_models_path(client: httpx.Client, checkpoint_dir: Path) -> None:
    # A local directory is served under its name only; a Hub id under its last component and the id.
    assert default_served_names(str(checkpoint_dir)) == ("jina-reranker-test",)
    assert default_served_names("jinaai/jina-reranker-v1-tiny-en") == (
        "jina-reranker-v1-tiny-en",
        "jinaai/jina-reranker-v1-tiny-en",
    )
    models = client.get("/v1/models")
    assert [card["id"] for card in models.json()["data"]] == ["jina-reranker-test"]
    response = client.post("/v1/rerank", json={"model": "jina-reranker-test", "query": "q", "documents": ["a"]})
    assert response.status_code == 200 and response.json()["model"] == "jina-reranker-test"
    without_model = client.post("/v1/rerank", json={"query": "q", "documents": ["a"]})
    assert without_model.json()["model"] == "jina-reranker-test"
    for name in ("jina-reranker-v2-base-multilingual", str(checkpoint_dir)):
        wrong = client.post("/v1/rerank", json={"model": name, "query": "q", "documents": ["a"]})
        assert wrong.status_code == 404
        assert "not served here" in wrong.json()["detail"] and "'jina-reranker-test'" in wrong.json()["detail"]
        assert name not in wrong.text  # neither the input echoed nor a path shown
    assert str(checkpoint_dir.parent) not in models.text + client.get("/info").text


# --- TEI-shaped API --------------------------------------------------------------------------------------------


def test_tei_round_trip(client: httpx.Client, engine_reranker: Reranker) -> None:
    query = "what is a llama"
    texts = ["a llama is a camelid of the andes", "paris is a city", "python module import"]
    expected = engine_reranker.score(query, texts)
    plain = client.post("/rerank", json={"query": query, "texts": texts})
    assert plain.status_code == 200, plain.text
    assert [entry["index"] for entry in plain.json()] == best_first(expected.logits)
    assert all(set(entry) == {"index", "score"} for entry in plain.json())
    assert_matches_engine(plain.json(), expected.scores, "score")
    raw = client.post("/rerank", json={"query": query, "texts": texts, "raw_scores": True, "return_text": True})
    assert raw.status_code == 200
    assert_matches_engine(raw.json(), expected.logits, "score")
    assert [entry["text"] for entry in raw.json()] == [texts[entry["index"]] for entry in raw.json()]


def test_tei_truncation_as_tei_does_it(server: Server, client: httpx.Client, engine_reranker: Reranker) -> None:
    """``truncate`` absent or null: the server's --auto-truncate (on); false: 413 before any scoring."""
    texts = ["short text", random_text(random.Random(3), 1500)]
    expected = engine_reranker.score("query", texts)
    assert expected.truncated == [False, True]
    tokens_before = health(server)["batching"]["tokens"]
    refused = client.post("/rerank", json={"query": "query", "texts": texts, "truncate": False})
    assert refused.status_code == 413
    assert refused.json()["error_type"] == "validation"
    assert "[1]" in refused.json()["error"] and "truncate" in refused.json()["error"]
    assert health(server)["batching"]["tokens"] == tokens_before, "the refused request was scored"
    for extra in ({}, {"truncate": None}, {"truncate": True}, {"truncation_direction": "Right"}):
        allowed = client.post("/rerank", json={"query": "query", "texts": texts, **extra})
        assert allowed.status_code == 200, (extra, allowed.text)
        assert_matches_engine(allowed.json(), expected.scores, "score")
    # Left truncation keeps the end of the long text: the scores of the text's last window.
    left = client.post("/rerank", json={"query": "query", "texts": texts, "truncation_direction": "left"})
    encoded = engine_reranker.encode("query", texts, truncation_side="left")
    tail = engine_reranker.result_from_logits(encoded, engine_reranker.engine.logits(encoded.input_ids, 16384))
    assert_matches_engine(left.json(), tail.scores, "score")
    assert tail.scores[1] != pytest.approx(expected.scores[1], abs=1e-4)


def test_tei_empty_texts_and_batch_size_get_teis_errors(client: httpx.Client) -> None:
    empty = client.post("/rerank", json={"query": "q", "texts": []})
    assert empty.status_code == 400
    assert empty.json() == {"error": "`texts` cannot be empty", "error_type": "empty"}
    too_many = client.post("/rerank", json={"query": "q", "texts": ["a"] * 33})
    assert too_many.status_code == 413 and too_many.json()["error_type"] == "validation"
    assert "33 texts" in too_many.json()["error"] and "32" in too_many.json()["error"]
    wrong = client.post("/rerank", json={"query": "q", "texts": ["a"], "truncation_direction": "up"})
    assert wrong.status_code == 422 and set(wrong.json()) == {"error", "error_type"}


# --- auth ------------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "headers",
    [{}, {"Authorization": "Bearer wrong-key"}, {"Authorization": f"Basic {API_KEY}"}, {"Authorization": "Bearer"}],
    ids=["missing", "wrong", "not-bearer", "empty"],
)
@pytest.mark.parametrize(
    "method, path, body",
    [
        ("POST", "/v1/rerank", {"query": "q", "documents": ["a"]}),
        ("POST", "/rerank", {"query": "q", "texts": ["a"]}),
        ("POST", "/v2/rerank", {"model": "jina-reranker-test", "query": "q", "documents": ["a"]}),
        ("GET", "/v1/models", None),
        ("GET", "/info", None),
    ],
    ids=["jina", "tei", "cohere-v2", "models", "tei-info"],
)
def test_requests_without_the_right_token_get_401(
    server: Server, headers: dict[str, str], method: str, path: str, body: Any
) -> None:
    response = httpx.request(method, f"{server.url}{path}", headers=headers, json=body, timeout=30)
    assert response.status_code == 401
    assert response.headers["www-authenticate"] == "Bearer"
    body = response.json()
    assert "API key" in (body["error"] if path in ("/rerank", "/info") else body["detail"])


# Bodies that, with the key, each get their own 4xx (validation, size, JSON, count): without it, only 401.
UNAUTHORIZED_BODIES = {
    "not-json": b'{"query": ',
    "wrong-types": b'{"query": 1, "documents": "a", "top_n": "x"}',
    "empty-query": b'{"query": " ", "documents": ["a"]}',
    "too-many-documents": json.dumps({"query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}).encode(),
    "over-the-body-limit": b'{"query": "q", "documents": ["' + b"a" * MAX_REQUEST_BYTES + b'"]}',
    "nested": b"[" * 100_000,
    "unknown-model": b'{"model": "gpt-4", "query": "q", "documents": ["a"]}',
}


@pytest.mark.parametrize("headers", [{}, {"Authorization": "Bearer wrong-key"}], ids=["missing", "wrong"])
@pytest.mark.parametrize("body", list(UNAUTHORIZED_BODIES.values()), ids=list(UNAUTHORIZED_BODIES))
@pytest.mark.parametrize("path", ["/v1/rerank", "/v2/rerank", "/rerank"])
def test_without_a_valid_key_every_keyed_route_answers_401_before_looking_at_the_body(
    server: Server, headers: dict[str, str], body: bytes, path: str
) -> None:
    response = httpx.post(
        f"{server.url}{path}", content=body, headers={**headers, "Content-Type": "application/json"}, timeout=30
    )
    assert response.status_code == 401, response.text
    answer = response.json()
    message = answer["error"] if path == "/rerank" else answer["detail"]
    assert message in ("missing API key: send 'Authorization: Bearer <key>'", "invalid API key")
    assert set(answer) == ({"error", "error_type"} if path == "/rerank" else {"detail"})


def test_without_a_valid_key_a_wrong_method_on_a_keyed_route_gets_401(server: Server) -> None:
    assert httpx.get(f"{server.url}/v1/rerank", timeout=30).status_code == 401
    assert httpx.delete(f"{server.url}/info", timeout=30).status_code == 401


def test_health_and_docs_need_no_token(server: Server) -> None:
    body = health(server)
    assert body["status"] == "ok" and body["model"] == "jina-reranker-test"
    assert body["max_length"] == MAX_LENGTH and body["batching"]["enabled"] is True
    schema = httpx.get(f"{server.url}/openapi.json", timeout=30).json()
    assert {"/v1/rerank", "/rerank", "/health", "/v1/models"} <= set(schema["paths"])
    assert "JinaRerankRequest" in schema["components"]["schemas"]


# --- limits ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "body, status, message",
    [
        ({"query": "q", "documents": ["a"] * (MAX_DOCUMENTS + 1)}, 413, f"{MAX_DOCUMENTS + 1} documents"),
        ({"query": "q", "documents": ["a", "b" * (MAX_DOCUMENT_CHARS + 1)]}, 413, "documents[1]"),
        ({"query": "q" * (MAX_DOCUMENT_CHARS + 1), "documents": ["a"]}, 413, "query has"),
        ({"query": "", "documents": ["a"]}, 422, "query must not be empty"),
        ({"query": "  \n", "documents": ["a"]}, 422, "query must not be empty"),
    ],
    ids=["too-many-documents", "document-too-long", "query-too-long", "empty-query", "blank-query"],
)
def test_limits_are_clear_errors(client: httpx.Client, body: dict[str, Any], status: int, message: str) -> None:
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == status
    assert message in response.json()["detail"]


def test_tei_limits_name_texts(client: httpx.Client) -> None:
    response = client.post("/rerank", json={"query": "q", "texts": ["a", "b" * (MAX_DOCUMENT_CHARS + 1)]})
    assert response.status_code == 413
    assert "texts[1]" in response.json()["error"]


def test_request_body_over_the_byte_limit_gets_413(client: httpx.Client) -> None:
    documents = ["x" * 10_000] * 21  # about 210 kB of JSON, each document and the count within their limits
    declared = client.post("/v1/rerank", json={"query": "q", "documents": documents})
    assert declared.status_code == 413
    assert str(MAX_REQUEST_BYTES) in declared.json()["detail"]

    def chunked() -> Iterator[bytes]:  # no Content-Length: counted as it arrives
        yield b'{"query": "q", "documents": ["'
        for _ in range(30):
            yield b"x" * 10_000
        yield b'"]}'

    streamed = client.post("/v1/rerank", content=chunked(), headers={"Content-Type": "application/json"})
    assert streamed.status_code == 413
    assert client.post("/v1/rerank", json={"query": "q", "documents": ["x" * 10_000] * 5}).status_code == 200


@pytest.mark.parametrize(
    "body, location",
    [
        ({"query": 3, "documents": ["a"]}, ["body", "query"]),
        ({"query": "q", "documents": "a"}, ["body", "documents"]),
        ({"query": "q", "documents": ["a", 7]}, ["body", "documents", 1, "str"]),
        ({"query": "q", "documents": [{"content": "a"}]}, ["body", "documents", 0, "TextDocument", "text"]),
        ({"query": "q", "documents": ["a"], "top_n": "2"}, ["body", "top_n"]),
        ({"query": "q", "documents": ["a"], "top_n": 0}, ["body", "top_n"]),
        ({"query": "q", "documents": ["a"], "return_documents": "yes"}, ["body", "return_documents"]),
        ({"query": "q", "documents": ["a"], "model": 1}, ["body", "model"]),
        ({"documents": ["a"]}, ["body", "query"]),
    ],
    ids=[
        "query-int",
        "documents-str",
        "document-int",
        "document-without-text",
        "top-n-str",
        "top-n-zero",
        "return-documents-str",
        "model-int",
        "no-query",
    ],
)
def test_wrong_types_get_422_naming_the_field(client: httpx.Client, body: dict[str, Any], location: list) -> None:
    response = client.post("/v1/rerank", json=body)
    assert response.status_code == 422
    assert location in [error["loc"] for error in response.json()["detail"]]


def test_invalid_json_gets_422(client: httpx.Client) -> None:
    response = client.post("/v1/rerank", content=b"{not json", headers={"Content-Type": "application/json"})
    assert response.status_code == 422
    assert "not valid JSON" in response.json()["detail"]


# --- third-party client ----------------------------------------------------------------------------------------


def test_llama_index_jina_rerank_client_pointed_at_the_server(server: Server, engine_reranker: Reranker) -> None:
    jinaai_rerank = pytest.importorskip("llama_index.postprocessor.jinaai_rerank")
    from llama_index.core.schema import NodeWithScore, TextNode

    texts = ["a llama lives in the andes", "paris is in france", "a guanaco is a camelid", "import a module"]
    nodes = [NodeWithScore(node=TextNode(text=text), score=0.0) for text in texts]
    rerank = jinaai_rerank.JinaRerank(base_url=f"{server.url}/v1", api_key=API_KEY, model="jina-reranker-test", top_n=2)
    ranked = rerank.postprocess_nodes(nodes, query_str="camelid animals")
    expected = engine_reranker.score("camelid animals", texts)
    assert [node.node.get_content() for node in ranked] == [texts[i] for i in best_first(expected.logits)[:2]]
    for node in ranked:
        assert node.score == pytest.approx(expected.scores[texts.index(node.node.get_content())], abs=SCORE_TOLERANCE)


# --- micro-batching --------------------------------------------------------------------------------------------


def load_requests(count: int, seed: int) -> list[tuple[str, list[str]]]:
    rng = random.Random(seed)
    return [
        (random_text(rng, rng.randint(2, 6)), [random_text(rng, rng.randint(3, 30)) for _ in range(rng.randint(1, 6))])
        for _ in range(count)
    ]


# Bad requests mixed into the load: (body, status). None of them may cost a 5xx or a connection.
BAD_REQUESTS = [
    (b'{"query": "q", "documents": ["a"], "top_n": NaN}', 422),
    (b'{"query": "q", "documents": ["a\\ud800"]}', 422),
    (b'{"query": "q", "documents": [1, 2]}', 422),
    (b'{"query": "", "documents": ["a"]}', 422),
    (b'{"query": "q", "documents": ["a"], "top_n": 1e400}', 422),
    (b"{not json", 422),
    (b'{"model": "other", "query": "q", "documents": ["a"]}', 404),
]


async def run_clients(
    server: Server, requests: list[tuple[str, list[str]]], total: int, clients: int, bad_every: int = 0
) -> tuple[list[tuple[int, httpx.Response]], list[tuple[int, httpx.Response]], list[Exception]]:
    """``clients`` concurrent connections sending ``total`` requests, cycling through ``requests``; with
    ``bad_every``, every such request is one of :data:`BAD_REQUESTS` instead. Returns the good answers, the bad
    ones and the transport errors (connection resets)."""
    next_request = iter(range(total))
    good: list[tuple[int, httpx.Response]] = []
    bad: list[tuple[int, httpx.Response]] = []
    errors: list[Exception] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    headers = {"Authorization": f"Bearer {API_KEY}", "Content-Type": "application/json"}
    async with httpx.AsyncClient(base_url=server.url, headers=headers, limits=limits, timeout=60) as http:

        async def worker() -> None:
            for number in next_request:
                try:
                    if bad_every and number % bad_every == bad_every - 1:
                        which = number // bad_every % len(BAD_REQUESTS)
                        bad.append((which, await http.post("/v1/rerank", content=BAD_REQUESTS[which][0])))
                    else:
                        query, documents = requests[number % len(requests)]
                        response = await http.post("/v1/rerank", json={"query": query, "documents": documents})
                        good.append((number % len(requests), response))
                except httpx.TransportError as exc:
                    errors.append(exc)

        await asyncio.gather(*(worker() for _ in range(clients)))
    return good, bad, errors


def check_answers(answers: list[tuple[int, httpx.Response]], expected: list[Any]) -> None:
    for which, response in answers:
        assert response.status_code == 200, response.text
        results = response.json()["results"]
        assert len(results) == len(expected[which].scores)
        assert_matches_engine(results, expected[which].scores, "relevance_score")
        assert response.json()["usage"]["total_tokens"] == expected[which].num_tokens


async def test_concurrent_requests_are_counted_and_answered(server: Server, engine_reranker: Reranker) -> None:
    requests = load_requests(16, seed=5)
    expected = [engine_reranker.score(query, documents) for query, documents in requests]
    before = health(server)["batching"]
    answers, _, errors = await run_clients(server, requests, total=len(requests), clients=len(requests))
    after = health(server)["batching"]
    assert not errors
    check_answers(answers, expected)
    assert after["requests"] - before["requests"] == len(requests)
    assert after["pairs"] - before["pairs"] == sum(len(documents) for _, documents in requests)
    # How HTTP arrivals fall into batches is timing; merging itself is asserted in-process below.
    assert 1 <= after["batches"] - before["batches"] <= len(requests)
    assert after["in_flight"] == 0


@pytest.mark.parametrize("total", [640, pytest.param(2000, marks=pytest.mark.slow)])
async def test_load_32_clients_good_and_bad_requests(server: Server, engine_reranker: Reranker, total: int) -> None:
    """32 clients, one request in 8 a bad one: no 5xx, no connection reset, every good answer the engine's."""
    requests = load_requests(64, seed=7)
    expected = [engine_reranker.score(query, documents) for query, documents in requests]
    before = health(server)["batching"]
    started = time.perf_counter()
    good, bad, errors = await asyncio.wait_for(
        run_clients(server, requests, total=total, clients=32, bad_every=8), timeout=300
    )
    elapsed = time.perf_counter() - started
    after = health(server)["batching"]
    assert errors == []
    assert len(good) == total * 7 // 8 and len(bad) == total // 8
    check_answers(good, expected)
    for which, response in bad:
        assert response.status_code == BAD_REQUESTS[which][1], response.text
    requests_done = after["requests"] - before["requests"]
    batches = after["batches"] - before["batches"]
    assert requests_done == len(good)
    assert "Traceback" not in server.log.read_text()
    print(
        f"\n{total} requests from 32 clients in {elapsed:.1f} s ({total / elapsed:.0f} requests/s), "
        f"{batches} scoring calls ({requests_done / batches:.1f} requests per call)"
    )


def encode_all(reranker: Reranker, requests: list[tuple[str, list[str]]]) -> list[Any]:
    return [reranker.encode(query, documents) for query, documents in requests]


async def test_micro_batcher_merges_within_the_token_budget(reranker: Reranker) -> None:
    requests = load_requests(12, seed=11)
    merging = MicroBatcher(reranker, max_wait_ms=0)
    await merging.start()
    try:
        # Queued in one step of the event loop: they are all waiting when the batcher looks, whatever the timing.
        results = await asyncio.gather(*(merging.score(encoded) for encoded in encode_all(reranker, requests)))
    finally:
        await merging.stop()
    for (query, documents), result in zip(requests, results):
        direct = reranker.score(query, documents)
        assert result.scores == pytest.approx(direct.scores, abs=SCORE_TOLERANCE)
        assert result.token_counts == direct.token_counts and result.num_tokens == direct.num_tokens
    assert [call.requests for call in merging.counters.calls] == [tuple(range(12))]
    assert merging.counters.requests == 12 and merging.counters.batches == 1

    # A budget smaller than any request: every request is its own batch, never split.
    one_each = MicroBatcher(reranker, max_wait_ms=0, max_batch_tokens=1)
    await one_each.start()
    try:
        await asyncio.gather(*(one_each.score(encoded) for encoded in encode_all(reranker, requests)))
    finally:
        await one_each.stop()
    assert [call.requests for call in one_each.counters.calls] == [(index,) for index in range(12)]


async def test_micro_batcher_scores_batches_concurrently_when_asked(reranker: Reranker) -> None:
    requests = load_requests(8, seed=12)
    two_at_a_time = MicroBatcher(reranker, max_wait_ms=0, max_batch_tokens=1, max_concurrent_batches=2)
    await two_at_a_time.start()
    try:
        results = await asyncio.gather(*(two_at_a_time.score(encoded) for encoded in encode_all(reranker, requests)))
    finally:
        await two_at_a_time.stop()
    for (query, documents), result in zip(requests, results):
        assert result.scores == pytest.approx(reranker.score(query, documents).scores, abs=SCORE_TOLERANCE)
    assert two_at_a_time.counters.batches == 8


async def test_large_requests_are_scored_in_round_robin_slices(reranker: Reranker) -> None:
    rng = random.Random(21)
    large = [("llama", [random_text(rng, 40) for _ in range(12)]) for _ in range(2)]
    encoded = encode_all(reranker, large)
    slice_tokens = 3 * max(len(ids) for ids in encoded[0].input_ids)
    batcher = MicroBatcher(reranker, max_wait_ms=0, slice_tokens=slice_tokens)
    await batcher.start()
    try:
        results = await asyncio.gather(*(batcher.score(request) for request in encoded))
    finally:
        await batcher.stop()
    for (query, documents), result in zip(large, results):
        assert result.scores == pytest.approx(reranker.score(query, documents).scores, abs=SCORE_TOLERANCE)
    calls = list(batcher.counters.calls)
    assert all(call.lane == "slice" and call.tokens <= slice_tokens for call in calls)
    order = [call.requests[0] for call in calls]
    assert len(order) >= 8 and order[:6] == [0, 1, 0, 1, 0, 1]  # taken in turns, not one request to the end
    assert sum(call.sequences for call in calls) == 24


class GatedBatcher(MicroBatcher):
    """A MicroBatcher whose slices wait for ``gate`` before scoring (the merged lane runs freely)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()
        self.slices_started = threading.Event()

    def _logits(self, sequences: Any) -> list[float]:
        if sum(len(ids) for ids in sequences) > self.slice_tokens // 2:
            self.slices_started.set()
            assert self.gate.wait(timeout=120), "the gate was never opened"
        return super()._logits(sequences)


async def test_small_requests_are_answered_while_a_large_one_is_scored(reranker: Reranker) -> None:
    """A small request queued behind a large one is answered while the large one's slice is still running."""
    rng = random.Random(22)
    large_docs = [random_text(rng, 200) for _ in range(6)]
    large = reranker.encode("llama", large_docs)
    batcher = GatedBatcher(reranker, max_wait_ms=0, slice_tokens=max(len(ids) for ids in large.input_ids))
    await batcher.start()
    try:
        large_task = asyncio.ensure_future(batcher.score(large))
        assert await asyncio.to_thread(batcher.slices_started.wait, 60)
        small = await asyncio.wait_for(batcher.score(reranker.encode("llama", ["a small request"])), timeout=60)
        assert not large_task.done()  # the large request's first slice is still held at the gate
        batcher.gate.set()
        large_result = await asyncio.wait_for(large_task, timeout=120)
    finally:
        batcher.gate.set()
        await batcher.stop()
    assert small.scores == pytest.approx(reranker.score("llama", ["a small request"]).scores, abs=SCORE_TOLERANCE)
    assert large_result.scores == pytest.approx(reranker.score("llama", large_docs).scores, abs=SCORE_TOLERANCE)
    lanes = [(call.lane, call.requests) for call in batcher.counters.calls]
    assert lanes[0] == ("merged", (1,)) and lanes[1:] == [("slice", (0,))] * 6


async def test_micro_batcher_survives_a_cancelled_request(reranker: Reranker) -> None:
    batcher = MicroBatcher(reranker, max_wait_ms=20)
    await batcher.start()
    try:
        gone = asyncio.ensure_future(batcher.score(reranker.encode("query", ["first document"])))
        kept = asyncio.ensure_future(batcher.score(reranker.encode("query", ["second document", "third"])))
        await asyncio.sleep(0)
        gone.cancel()
        result = await kept
    finally:
        await batcher.stop()
    assert result.scores == pytest.approx(reranker.score("query", ["second document", "third"]).scores, abs=1e-5)
    assert batcher.counters.requests == 1
    assert [call.requests for call in batcher.counters.calls] == [(1,)]


def test_merging_splits_what_it_merged_and_cuts_bounded_slices() -> None:
    parts = [[[1, 2], [3]], [], [[4, 5, 6]]]
    merged, sizes = merge_sequences(parts)
    assert merged == [[1, 2], [3], [4, 5, 6]] and sizes == [2, 0, 1]
    assert split_logits([0.1, 0.2, 0.3], sizes) == [[0.1, 0.2], [], [0.3]]
    with pytest.raises(ValueError, match="cannot be split"):
        split_logits([0.1], sizes)
    assert cut_slices([3, 3, 3, 10, 1], 6) == [range(0, 2), range(2, 3), range(3, 4), range(4, 5)]
    assert cut_slices([], 6) == []


def test_jina_response_without_a_framework(reranker: Reranker) -> None:
    request = JinaRerankRequest(query="llama", documents=["a", {"text": "b"}, "c"], top_n=2, return_documents=False)
    result = reranker.score("llama", ["a", "b", "c"])
    response = jina_response(request, result, "some-model").model_dump(exclude_none=True)
    assert response["model"] == "some-model"
    assert response["usage"]["total_tokens"] == result.num_tokens
    assert [entry["index"] for entry in response["results"]] == best_first(result.logits)[:2]
    assert all("document" not in entry for entry in response["results"])


def test_server_settings_refuse_bad_values() -> None:
    with pytest.raises(ValueError, match="served_model_names"):
        ServerSettings(served_model_names=())
    with pytest.raises(ValueError, match="max_documents"):
        ServerSettings(served_model_names=("m",), max_documents=0)
    with pytest.raises(ValueError, match="batch_concurrency"):
        ServerSettings(served_model_names=("m",), batch_concurrency=0)
    for key in ("", "clé", "two words", "tab\t"):
        with pytest.raises(ValueError, match="api_key"):
            ServerSettings(served_model_names=("m",), api_key=key)
    for wait in (float("inf"), float("nan"), -1.0, 1e9):
        with pytest.raises(ValueError, match="batch_wait_ms"):
            ServerSettings(served_model_names=("m",), batch_wait_ms=wait)
    with pytest.raises(ValueError, match="request_read_timeout_s"):
        ServerSettings(served_model_names=("m",), request_read_timeout_s=0)
    with pytest.raises(ValueError, match="max_request_tokens"):
        ServerSettings(served_model_names=("m",), max_request_tokens=0)
    assert "secret" not in repr(ServerSettings(served_model_names=("m",), api_key="secret"))


# --- graceful shutdown -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "sig, window, extra_args, reranker_options",
    [
        (signal.SIGTERM, 1024, ["--batch-concurrency", "2"], {}),
        # ~1.3k-token documents in 512-token windows 500 tokens apart: 3 windows each.
        (
            signal.SIGINT,
            512,
            ["--no-batching", "--long-document", "chunk", "--chunk-stride", "500"],
            {"long_document": "chunk", "chunk_stride": 500},
        ),
    ],
    ids=["SIGTERM-batching", "SIGINT-no-batching-chunked"],
)
def test_shutdown_lets_requests_in_flight_finish(
    checkpoint_dir: Path,
    tmp_path: Path,
    sig: int,
    window: int,
    extra_args: list[str],
    reranker_options: dict[str, Any],
) -> None:
    running = start_server(
        checkpoint_dir,
        tmp_path / "server.log",
        "--max-length",
        str(window),
        "--api-key",
        "flag-key",
        "--served-model-name",
        "alpha",
        "--served-model-name",
        "beta",
        *extra_args,
    )
    headers = {"Authorization": "Bearer flag-key"}
    try:
        models = httpx.get(f"{running.url}/v1/models", headers=headers, timeout=30).json()
        assert [card["id"] for card in models["data"]] == ["alpha", "beta"]
        assert health(running)["batching"]["enabled"] is (sig == signal.SIGTERM)
        rng = random.Random(13)
        # ~1.3k tokens each, over the window: a request slow enough (~100 windows) to be seen in flight
        documents = [random_text(rng, 900) for _ in range(32)]
        answer: dict[str, httpx.Response] = {}

        def slow_request() -> None:
            answer["response"] = httpx.post(
                f"{running.url}/v1/rerank",
                headers=headers,
                json={"model": "beta", "query": "llama", "documents": documents},
                timeout=300,
            )

        sender = threading.Thread(target=slow_request)
        sender.start()
        deadline = time.monotonic() + 60
        while health(running)["batching"]["in_flight"] == 0:
            assert "response" not in answer, "the request finished before it was seen in flight; make it slower"
            assert time.monotonic() < deadline, "the request never reached the model"
            time.sleep(0.01)
        running.process.send_signal(sig)
        assert "response" not in answer, "the request finished before the signal; make it slower"
        sender.join(timeout=300)
        # SIGTERM ends the process by the signal once uvicorn is done (it re-raises it); SIGINT exits with 0.
        assert running.process.wait(timeout=60) == (-sig if sig == signal.SIGTERM else 0), running.log.read_text()
    finally:
        running.stop()
    response = answer["response"]
    assert response.status_code == 200, response.text
    expected = Reranker(checkpoint_dir, device="cpu", max_length=window, **reranker_options).score("llama", documents)
    assert response.json()["model"] == "beta"
    assert_matches_engine(response.json()["results"], expected.scores, "relevance_score")
    log = running.log.read_text()
    assert "Shutting down" in log and "Finished server process" in log and "Traceback" not in log


def test_no_character_cap_by_default_and_an_operator_cap_is_checked_at_start():
    assert ServerSettings(served_model_names=("m",)).max_document_chars is None
    ServerSettings(served_model_names=("m",)).check_request("q", ["x" * 10_000_000])  # the body limit bounds it
    with pytest.raises(ValueError, match="max_document_chars must be an integer >= 1"):
        ServerSettings(served_model_names=("m",), max_document_chars=0)
