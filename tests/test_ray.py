"""Scale-out on Ray: Serve replicas and the Ray Data batch job on a local 2-CPU Ray cluster, against the engine.

Marked ``ray``: run with ``pytest -m ray tests/test_ray.py`` (the ``ray`` extra installed).
"""

from __future__ import annotations

import asyncio
import io
import json
import random
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

pytest.importorskip("ray.serve")
pytest.importorskip("ray.data")

import pyarrow as pa
import pyarrow.parquet as pq
import ray
from ray import serve

from jina_local_rerank import Reranker
from jina_local_rerank.cli import main
from jina_local_rerank.options import RerankerOptions
from jina_local_rerank.ranking import best_first
from jina_local_rerank.ray import PairColumns, build_app, score_pairs_file
from jina_local_rerank.ray.serve import ServeBatchScorer, _Request
from jina_local_rerank.server.merging import encoded_tokens
from jina_local_rerank.server.settings import ServerSettings

pytestmark = pytest.mark.ray

TOLERANCE = 1e-5  # merged or differently sized batches pad differently: float32 noise, not different scores
HTTP_TIMEOUT = httpx.Timeout(60.0)
WORDS = "llama camel alpaca river mountain paris france tea coffee rain snow wool desert andes lake city".split()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[None]:
    ray.init(num_cpus=2, include_dashboard=False, _node_ip_address="127.0.0.1")
    yield
    serve.shutdown()
    ray.shutdown()


@pytest.fixture(scope="module")
def engine(checkpoint_dir: Path) -> Reranker:
    return Reranker(checkpoint_dir, device="cpu")


def write_pairs(path: Path, rows: int, seed: int = 0) -> list[dict[str, Any]]:
    """``rows`` pairs with an ``id`` column and documents of varied lengths; JSONL or Parquet by suffix."""
    rng = random.Random(seed)
    records = [
        {
            "id": index,
            "query": " ".join(rng.choices(WORDS, k=rng.randint(1, 4))),
            "document": " ".join(rng.choices(WORDS, k=rng.randint(1, 60))),
        }
        for index in range(rows)
    ]
    if path.suffix == ".parquet":
        pq.write_table(pa.Table.from_pylist(records), path, row_group_size=250)
    else:
        path.write_text("".join(json.dumps(record) + "\n" for record in records), encoding="utf-8")
    return records


def read_rows(path: Path) -> list[dict[str, Any]]:
    if path.suffix == ".parquet":
        return pq.read_table(path).to_pylist()
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines()]


def assert_scored(rows: list[dict[str, Any]], records: list[dict[str, Any]], engine: Reranker) -> None:
    """``rows`` are ``records`` in the same order, each with the engine's score of its pair."""
    assert [{key: row[key] for key in ("id", "query", "document")} for row in rows] == records
    expected = engine.score_pairs([[record["query"], record["document"]] for record in records]).scores
    assert [row["score"] for row in rows] == pytest.approx(expected, abs=TOLERANCE)


# Ray Data batch scoring (runs first: the Serve tests below hold a replica's CPU while their app is up).


def test_batch_job_scores_3000_pairs_like_the_engine_in_row_order(
    ray_cluster: None, checkpoint_dir: Path, engine: Reranker, tmp_path: Path
) -> None:
    records = write_pairs(tmp_path / "pairs.jsonl", 3000)
    rows = score_pairs_file(
        tmp_path / "pairs.jsonl",
        tmp_path / "scored.jsonl",
        options=RerankerOptions(model=checkpoint_dir, device="cpu"),
        num_actors=2,  # 2 actors x 1 CPU hold the whole cluster: reads must still get to run
        batch_size=200,
    )
    assert rows == 3000
    assert_scored(read_rows(tmp_path / "scored.jsonl"), records, engine)


def test_batch_job_names_a_missing_column_before_scoring(
    ray_cluster: None, checkpoint_dir: Path, tmp_path: Path
) -> None:
    write_pairs(tmp_path / "pairs.jsonl", 10)
    with pytest.raises(ValueError, match=r"no document column 'passage'.*\['id', 'query', 'document'\]"):
        score_pairs_file(
            tmp_path / "pairs.jsonl",
            tmp_path / "scored.jsonl",
            options=RerankerOptions(model=checkpoint_dir),
            columns=PairColumns(document="passage"),
        )


def test_batch_job_names_a_null_document(ray_cluster: None, checkpoint_dir: Path, tmp_path: Path) -> None:
    rows = [{"query": "q", "document": "d"}, {"query": "q", "document": None}]
    (tmp_path / "pairs.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows), encoding="utf-8")
    with pytest.raises(ValueError, match=r"null values in the input: 'document' in 1 row\(s\)"):
        score_pairs_file(
            tmp_path / "pairs.jsonl", tmp_path / "scored.jsonl", options=RerankerOptions(model=checkpoint_dir)
        )


def run_cli(argv: list[str]) -> tuple[int, dict[str, Any] | None]:
    stdout = io.StringIO()
    status = main(argv, stdin=io.StringIO(), stdout=stdout)
    return status, json.loads(stdout.getvalue()) if status == 0 else None


def test_score_pairs_cli_with_and_without_ray_agree(
    ray_cluster: None, checkpoint_dir: Path, engine: Reranker, tmp_path: Path
) -> None:
    records = write_pairs(tmp_path / "pairs.parquet", 400, seed=1)
    common = ["--model", str(checkpoint_dir), "--device", "cpu", "--batch-size", "128"]
    status, summary = run_cli(["score-pairs", str(tmp_path / "pairs.parquet"), str(tmp_path / "local.jsonl"), *common])
    assert status == 0 and summary is not None
    assert summary["rows"] == 400 and summary["ray"] is False
    status, summary = run_cli(
        ["score-pairs", str(tmp_path / "pairs.parquet"), str(tmp_path / "ray.parquet"), *common, "--ray"]
    )
    assert status == 0 and summary is not None
    assert summary["rows"] == 400 and summary["ray"] is True
    local, on_ray = read_rows(tmp_path / "local.jsonl"), read_rows(tmp_path / "ray.parquet")
    assert_scored(local, records, engine)
    assert_scored(on_ray, records, engine)
    assert pq.read_schema(tmp_path / "ray.parquet").field("score").type == pa.float64()


def test_score_pairs_cli_bad_input_is_a_clear_error(
    checkpoint_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    write_pairs(tmp_path / "pairs.jsonl", 5)
    argv = ["score-pairs", str(tmp_path / "pairs.jsonl"), str(tmp_path / "out.jsonl"), "--model", str(checkpoint_dir)]
    assert run_cli([*argv, "--score-column", "query"])[0] == 2
    assert "must differ" in capsys.readouterr().err
    assert run_cli([*argv[:2], str(tmp_path / "out.csv"), *argv[3:]])[0] == 2
    assert "cannot tell the format of" in capsys.readouterr().err


# Ray Serve


@pytest.fixture(scope="module")
def serve_port(ray_cluster: None) -> int:
    """Serve's HTTP proxy, started once on a free loopback port."""
    port = free_port()
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    return port


class ServeApp:
    def __init__(self, port: int, route_prefix: str) -> None:
        self.url = f"http://127.0.0.1:{port}{route_prefix}"

    def stats(self) -> dict[str, Any]:
        response = httpx.get(f"{self.url}/stats", timeout=HTTP_TIMEOUT)
        response.raise_for_status()
        return response.json()


def assert_jina_answer(body: dict[str, Any], query: str, documents: list[str], engine: Reranker) -> None:
    expected = engine.score(query, documents)
    assert [result["index"] for result in body["results"]] == best_first(expected.logits)
    scores = [result["relevance_score"] for result in body["results"]]
    assert scores == pytest.approx([expected.scores[i] for i in best_first(expected.logits)], abs=TOLERANCE)
    assert body["usage"]["total_tokens"] == expected.num_tokens


SERVE_PREFIX = "/rerank-test"


@pytest.fixture(scope="class")
def app(serve_port: int, checkpoint_dir: Path) -> Iterator[ServeApp]:
    """One Serve app (1 replica of 1 CPU) for the tests of a class, deleted after them."""
    settings = ServerSettings(served_model_names=("jina-reranker-test",), batch_wait_ms=20)
    application = build_app(RerankerOptions(model=checkpoint_dir, device="cpu"), settings=settings)
    serve.run(application, name="rerank-test", route_prefix=SERVE_PREFIX)
    yield ServeApp(serve_port, SERVE_PREFIX)
    serve.delete("rerank-test")


class TestServe:
    def test_jina_request_gets_the_engine_scores(self, app: ServeApp, engine: Reranker) -> None:
        documents = ["A llama is a camelid.", "Paris is in France.", "Alpacas give wool.", "Tea or coffee?"]
        body = {
            "model": "jina-reranker-test",
            "query": "Which animals live in the Andes?",
            "documents": [documents[0], {"text": documents[1]}, *documents[2:]],
        }
        response = httpx.post(f"{app.url}/v1/rerank", json=body, timeout=HTTP_TIMEOUT)
        assert response.status_code == 200, response.text
        answer = response.json()
        assert answer["model"] == "jina-reranker-test"
        assert_jina_answer(answer, body["query"], documents, engine)
        assert all(documents[r["index"]] == r["document"]["text"] for r in answer["results"])

        cut = httpx.post(
            f"{app.url}/v1/rerank", json={**body, "top_n": 2, "return_documents": False}, timeout=HTTP_TIMEOUT
        ).json()
        assert [r["index"] for r in cut["results"]] == [r["index"] for r in answer["results"][:2]]
        assert all("document" not in r for r in cut["results"])

    def test_bad_requests_get_the_servers_errors(self, app: ServeApp) -> None:
        wrong_model = httpx.post(
            f"{app.url}/v1/rerank", json={"model": "other", "query": "q", "documents": ["d"]}, timeout=HTTP_TIMEOUT
        )
        assert wrong_model.status_code == 404 and "not served here" in wrong_model.json()["detail"]
        wrong_type = httpx.post(f"{app.url}/v1/rerank", json={"query": "q", "documents": [3]}, timeout=HTTP_TIMEOUT)
        assert wrong_type.status_code == 422

    async def test_concurrent_requests_get_their_own_scores(self, app: ServeApp, engine: Reranker) -> None:
        before = app.stats()
        requests = [
            (f"query {i} {WORDS[i]}", [f"{WORDS[j]} document {i}" for j in range(i % 5 + 1)]) for i in range(16)
        ]
        async with httpx.AsyncClient(timeout=HTTP_TIMEOUT) as client:
            responses = await asyncio.gather(
                *(client.post(f"{app.url}/v1/rerank", json={"query": q, "documents": d}) for q, d in requests)
            )
        for (query, documents), response in zip(requests, responses):
            assert response.status_code == 200, response.text
            assert_jina_answer(response.json(), query, documents, engine)
        after = app.stats()
        new_batches = after["batch_sizes"][len(before["batch_sizes"]) :]
        # How the proxy's arrivals fall into batches is timing; what they add up to is not.
        assert sum(new_batches) == 16 == after["requests"] - before["requests"]

    def test_v2_tei_and_operations_routes(self, app: ServeApp, engine: Reranker) -> None:
        documents = ["A llama is a camelid.", "Paris is in France."]
        cohere = httpx.post(
            f"{app.url}/v2/rerank",
            json={"model": "jina-reranker-test", "query": "llama", "documents": documents},
            timeout=HTTP_TIMEOUT,
        )
        assert cohere.status_code == 200, cohere.text
        expected = engine.score("llama", documents)
        assert [r["index"] for r in cohere.json()["results"]] == best_first(expected.logits)
        tei = httpx.post(f"{app.url}/rerank", json={"query": "llama", "texts": []}, timeout=HTTP_TIMEOUT)
        assert tei.status_code == 400 and tei.json()["error_type"] == "empty"
        assert httpx.get(f"{app.url}/info", timeout=HTTP_TIMEOUT).json()["model_id"] == "jina-reranker-test"
        assert httpx.get(f"{app.url}/ready", timeout=HTTP_TIMEOUT).status_code == 200
        assert "jina_local_rerank_requests_total" in httpx.get(f"{app.url}/metrics", timeout=HTTP_TIMEOUT).text
        assert cohere.headers["x-request-id"]

    def test_killed_replica_is_replaced_without_hanging(self, app: ServeApp, engine: Reranker) -> None:
        victim = app.stats()["replica"]
        ray.kill(ray.get_actor(victim, namespace="serve"), no_restart=True)
        query, documents = "llama wool", ["Alpacas give wool.", "Paris is in France."]
        deadline = time.monotonic() + 120
        while True:
            started = time.monotonic()
            try:
                response = httpx.post(
                    f"{app.url}/v1/rerank", json={"query": query, "documents": documents}, timeout=HTTP_TIMEOUT
                )
            except httpx.TransportError:
                response = None
            assert time.monotonic() - started < HTTP_TIMEOUT.read + 5  # a bounded answer, never a hang
            if response is not None and response.status_code == 200:
                assert_jina_answer(response.json(), query, documents, engine)
                break
            if response is not None:  # a clear error while the replacement starts
                assert response.status_code >= 500, response.text
            assert time.monotonic() < deadline, "no replica answered within 120 s of the kill"
            time.sleep(1)
        assert app.stats()["replica"] != victim


async def test_serve_batch_scorer_merges_and_splits_with_the_servers_functions(engine: Reranker) -> None:
    """The body ``@serve.batch`` runs for a batch (called directly: the decorator needs a replica): one scoring
    call for the requests given, each request's logits split back, counted as the single-machine server counts."""
    requests = [(f"query {i}", [f"{WORDS[j]} document {i}" for j in range(i % 4 + 1)]) for i in range(16)]
    scorer = ServeBatchScorer(engine, batching=True, max_batch_tokens=engine.max_batch_tokens, batch_wait_s=0.0)
    encoded = [engine.encode(query, docs) for query, docs in requests]
    batch = [_Request(index, request, encoded_tokens(request)) for index, request in enumerate(encoded)]
    logits = await ServeBatchScorer._merged.__wrapped__(scorer, batch)
    for (query, documents), request, part in zip(requests, encoded, logits):
        result = engine.result_from_logits(request, part)
        assert result.scores == pytest.approx(engine.score(query, documents).scores, abs=TOLERANCE)
    assert [call.requests for call in scorer.counters.calls] == [tuple(range(16))]
    assert scorer.counters.tokens == sum(encoded_tokens(request) for request in encoded)


def test_serve_command_with_ray_deploys_and_stops(
    serve_port: int, checkpoint_dir: Path, engine: Reranker, tmp_path: Path
) -> None:
    """``jina-local-rerank serve --ray`` joins the running cluster, serves, and deletes its app on SIGTERM."""
    command = [
        sys.executable,
        "-m",
        "jina_local_rerank.cli",
        "serve",
        "--ray",
        "--address",
        ray.get_runtime_context().gcs_address,
        "--port",
        str(serve_port),
        "--model",
        str(checkpoint_dir),
        "--device",
        "cpu",
        "--num-cpus-per-replica",
        "0.5",
        "--served-model-name",
        "cli",
    ]
    log = tmp_path / "serve.log"
    with open(log, "w") as stderr:
        process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=stderr)
    try:
        deadline = time.monotonic() + 120
        while True:
            assert process.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "serve --ray did not deploy within 120 s"
            status = serve.status().applications.get("jina-local-rerank")
            if status is not None and status.status == "RUNNING":
                break
            time.sleep(1)
        response = httpx.post(
            f"http://127.0.0.1:{serve_port}/v1/rerank",
            json={"query": "llama", "documents": ["alpaca wool", "paris"]},
            timeout=HTTP_TIMEOUT,
        )
        assert response.status_code == 200, response.text
        assert response.json()["model"] == "cli"
        assert_jina_answer(response.json(), "llama", ["alpaca wool", "paris"], engine)
    finally:
        process.send_signal(signal.SIGTERM)
        assert process.wait(timeout=60) == 0, log.read_text()
    assert "jina-local-rerank" not in serve.status().applications
