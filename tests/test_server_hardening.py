"""Nothing a client sends can hurt the server: a catalog of bad inputs, stalled connections, foreign Host names,
overload, and the operations routes (metrics, request ids, readiness), against real uvicorn over loopback."""

from __future__ import annotations

import contextlib
import http.client
import io
import json
import math
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from server_process import Server, free_port, start_server

from jina_local_rerank import Reranker
from jina_local_rerank.cli import main
from jina_local_rerank.server.batcher import MicroBatcher
from jina_local_rerank.server.settings import ServerSettings

MAX_LENGTH = 512
MAX_DOCUMENTS = 50
MAX_REQUEST_TOKENS = 3000
READ_TIMEOUT_S = 1.0
CLOSE_BOUND_S = 10.0  # the server must close a stalled connection well within this (its timeout: 1 s)
ALLOWED_HOST = "rerank.internal"


@pytest.fixture(scope="module")
def server(checkpoint_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """No API key (so the Host check applies), small limits, a 1 s request-read timeout, the access log on."""
    log = tmp_path_factory.mktemp("hardening") / "server.log"
    running = start_server(
        checkpoint_dir,
        log,
        "--max-length",
        str(MAX_LENGTH),
        "--max-documents",
        str(MAX_DOCUMENTS),
        "--max-request-tokens",
        str(MAX_REQUEST_TOKENS),
        "--request-read-timeout",
        str(READ_TIMEOUT_S),
        "--allowed-host",
        ALLOWED_HOST,
        "--log-level",
        "info",
    )
    yield running
    running.stop()
    assert "Traceback" not in running.log.read_text()


@pytest.fixture(scope="module")
def port(server: Server) -> int:
    return int(server.url.rsplit(":", 1)[1])


def tokens_scored(server: Server) -> int:
    return httpx.get(f"{server.url}/health", timeout=30).json()["batching"]["tokens"]


GOOD = json.dumps({"query": "llama", "documents": ["a llama is a camelid", "paris"]}).encode()
# Seven documents cut to the 512-token window: about 3,570 tokens, over the budget of 3,000.
OVER_BUDGET = ["llama " * 3000] * 7

# (route, body, status, a fragment the answer must name). Bodies are raw bytes: what a careless client sends.
CATALOG = {
    "top-n-nan": ("/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": NaN}', 422, "NaN"),
    "top-n-infinity": ("/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": Infinity}', 422, "Infinity"),
    "top-n-minus-infinity": ("/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": -Infinity}', 422, "Infinity"),
    "top-n-1e400": ("/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": 1e400}', 422, "out of the range"),
    "top-n-float": ("/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": 2.5}', 422, "top_n"),
    "huge-integer": ("/v1/rerank", b'{"query": "q", "documents": ["a"], "top_n": ' + b"9" * 5000 + b"}", 422, "JSON"),
    "lone-surrogate-document": ("/v1/rerank", b'{"query": "q", "documents": ["ok", "a\\ud800"]}', 422, "documents[1]"),
    "lone-surrogate-query": ("/v1/rerank", b'{"query": "\\udfff", "documents": ["a"]}', 422, "query"),
    "lone-surrogate-object": (
        "/v1/rerank",
        b'{"query": "q", "documents": [{"text": "\\ud83d"}]}',
        422,
        "documents[0].text",
    ),
    "lone-surrogate-key": ("/v1/rerank", b'{"query": "q", "documents": ["a"], "\\ud800": 1}', 422, "key"),
    "not-utf8": ("/v1/rerank", b'{"query": "\xff\xfe", "documents": ["a"]}', 422, "not valid JSON"),
    "deeply-nested": ("/v1/rerank", b"[" * 100_000, 422, "nested too deeply"),
    "nested-just-parsable": ("/v1/rerank", b"[" * 900 + b"]" * 900, 422, "body"),
    "nested-in-a-document": (
        "/v1/rerank",
        b'{"query": "q", "documents": ' + b"[" * 900 + b"]" * 900 + b"}",
        422,
        "documents",
    ),
    "truncated-json": ("/v1/rerank", b'{"query": "q", "documents": ["a"', 422, "not valid JSON"),
    "body-is-a-list": ("/v1/rerank", b'["q", "a"]', 422, "body"),
    "empty-body": ("/v1/rerank", b"", 422, "missing"),
    "documents-null": ("/v1/rerank", b'{"query": "q", "documents": null}', 422, "documents"),
    "500k-integers": (
        "/v1/rerank",
        json.dumps({"query": "q", "documents": list(range(500_000))}).encode(),
        413,
        "500000 documents",
    ),
    "many-wrong-entries": (
        "/v1/rerank",
        json.dumps({"query": "q", "documents": list(range(MAX_DOCUMENTS))}).encode(),
        422,
        "documents",
    ),
    "over-token-budget": (
        "/v1/rerank",
        json.dumps({"query": "q", "documents": OVER_BUDGET}).encode(),
        413,
        f"limit of {MAX_REQUEST_TOKENS} tokens",
    ),
    "unknown-model": ("/v1/rerank", b'{"model": "gpt-4", "query": "q", "documents": ["a"]}', 404, "not served here"),
    "cohere-max-tokens-zero": (
        "/v2/rerank",
        b'{"query": "q", "documents": ["a"], "max_tokens_per_doc": 0}',
        422,
        "max_tokens_per_doc",
    ),
    "cohere-nan": ("/v2/rerank", b'{"query": "q", "documents": ["a"], "top_n": NaN}', 422, "NaN"),
    "tei-surrogate": ("/rerank", b'{"query": "q", "texts": ["\\ud800"]}', 422, "texts[0]"),
    "tei-bad-direction": (
        "/rerank",
        b'{"query": "q", "texts": ["a"], "truncation_direction": "up"}',
        422,
        "truncation_direction",
    ),
    "tei-raw-scores-string": ("/rerank", b'{"query": "q", "texts": ["a"], "raw_scores": "yes"}', 422, "raw_scores"),
    "tei-empty": ("/rerank", b'{"query": "q", "texts": []}', 400, "cannot be empty"),
    "tei-over-token-budget": ("/rerank", json.dumps({"query": "q", "texts": OVER_BUDGET}).encode(), 413, "tokens"),
}


@pytest.mark.parametrize("route, body, status, fragment", list(CATALOG.values()), ids=list(CATALOG))
def test_bad_input_gets_a_clear_4xx_and_the_connection_keeps_serving(
    server: Server, port: int, route: str, body: bytes, status: int, fragment: str
) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        before = tokens_scored(server)
        connection.request("POST", route, body=body, headers={"Content-Type": "application/json"})
        sock = connection.sock
        answer = connection.getresponse()
        text = answer.read().decode()
        assert answer.status == status, text
        assert fragment in text, text
        assert len(text) < 4096, f"an error body of {len(text)} characters"
        assert "Traceback" not in text and answer.getheader("connection") != "close"
        if status != 404:
            assert tokens_scored(server) == before, "a refused request was scored"
        # The next good request rides on the same keep-alive connection.
        connection.request("POST", "/v1/rerank", body=GOOD, headers={"Content-Type": "application/json"})
        assert connection.sock is sock, "the server closed the connection"
        good = connection.getresponse()
        assert good.status == 200, good.read()
        assert len(json.loads(good.read())["results"]) == 2
    finally:
        connection.close()


def rss_bytes(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmRSS")


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's memory")
def test_a_huge_list_of_wrong_entries_neither_echoes_nor_grows_the_server(server: Server) -> None:
    body = json.dumps({"query": "q", "documents": list(range(500_000))}).encode()  # 3.4 MB, 500k entries
    before = rss_bytes(server.process.pid)
    for _ in range(3):
        response = httpx.post(
            f"{server.url}/v1/rerank", content=body, headers={"Content-Type": "application/json"}, timeout=60
        )
        assert response.status_code == 413 and len(response.content) < 200
    assert rss_bytes(server.process.pid) - before < 150 * 1024 * 1024


def test_validation_errors_are_capped_and_never_echo_the_input(server: Server) -> None:
    """Each entry of a list of wrong entries is an error, but only the first few are reported, without input."""
    body = {"query": "q", "documents": ["ok"], "top_n": "secret-input-value", "return_documents": "also-secret"}
    response = httpx.post(f"{server.url}/v1/rerank", json=body, timeout=30)
    assert response.status_code == 422
    assert "secret" not in response.text
    assert {tuple(error["loc"]) for error in response.json()["detail"]} == {
        ("body", "top_n"),
        ("body", "return_documents"),
    }


# A megabyte of text: no character cap by default, so it is scored truncated to the window on every route.
MEGABYTE_DOCUMENT = " ".join(f"llama{i % 97} wool, andes; camelid." for i in range(34_000))


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="needs /proc to read the server's memory")
@pytest.mark.parametrize("direction", ["right", "left"])
def test_a_megabyte_document_is_scored_truncated_on_every_route(
    server: Server, checkpoint_dir: Path, direction: str
) -> None:
    assert len(MEGABYTE_DOCUMENT) > 1_000_000
    engine = Reranker(checkpoint_dir, device="cpu", max_length=MAX_LENGTH)
    kept = MEGABYTE_DOCUMENT[-20_000:] if direction == "left" else MEGABYTE_DOCUMENT[:20_000]
    encoded = engine.encode("llama", ["short", kept], truncation_side=direction)
    expected = engine.result_from_logits(encoded, engine.engine.logits(encoded.input_ids, 4096), raw=True).logits
    requests = [
        (
            "/rerank",
            {
                "query": "llama",
                "texts": ["short", MEGABYTE_DOCUMENT],
                "truncate": True,
                "raw_scores": True,
                "truncation_direction": direction,
            },
        ),
    ]
    if direction == "right":
        requests += [
            ("/v1/rerank", {"query": "llama", "documents": ["short", MEGABYTE_DOCUMENT], "return_documents": False}),
            ("/v2/rerank", {"query": "llama", "documents": ["short", {"text": MEGABYTE_DOCUMENT}]}),
        ]
    before = rss_bytes(server.process.pid)
    for route, body in requests * 3:
        response = httpx.post(f"{server.url}{route}", json=body, timeout=120)
        assert response.status_code == 200, response.text[:300]
        answer = response.json()
        results = answer if route == "/rerank" else answer["results"]
        by_index = {entry["index"]: entry["score" if route == "/rerank" else "relevance_score"] for entry in results}
        if route == "/rerank":
            assert by_index[1] == pytest.approx(expected[1], abs=1e-5)
        else:
            assert by_index[1] == pytest.approx(1 / (1 + math.exp(-expected[1])), abs=1e-5)
            tokens = (
                answer["usage"]["total_tokens"] if route == "/v1/rerank" else answer["meta"]["tokens"]["input_tokens"]
            )
            assert tokens <= 2 * MAX_LENGTH  # the window's worth, not the megabyte's
    assert rss_bytes(server.process.pid) - before < 200 * 1024 * 1024


def test_a_megabyte_document_with_truncate_false_gets_413_naming_the_window(server: Server) -> None:
    body = {"query": "llama", "texts": ["short", MEGABYTE_DOCUMENT], "truncate": False}
    response = httpx.post(f"{server.url}/rerank", json=body, timeout=120)
    assert response.status_code == 413
    assert f"longer than the model's window of {MAX_LENGTH} tokens" in response.json()["error"]


def read_until_closed(sock: socket.socket) -> tuple[bytes, float]:
    """What the server sends until it closes the connection, and how long that took (socket timeout: the bound)."""
    started = time.monotonic()
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data, time.monotonic() - started
        data += chunk


@pytest.mark.parametrize(
    "sent",
    [
        b"",
        b"POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n",
        b'POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\nContent-Length: 500\r\n\r\n{"query": ',
        # A whole request, then part of the next on the same keep-alive connection.
        b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\nGET /health HTTP/1.1\r\nHo",
    ],
    ids=["nothing", "partial-headers", "partial-body", "partial-second-request"],
)
def test_stalled_connections_are_closed(server: Server, port: int, sent: bytes) -> None:
    with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_BOUND_S) as sock:
        sock.sendall(sent)
        try:
            data, elapsed = read_until_closed(sock)
        except TimeoutError:
            pytest.fail(f"the server kept a stalled connection open for {CLOSE_BOUND_S} s")
    assert elapsed < CLOSE_BOUND_S
    assert data.count(b"HTTP/1.1 200") == sent.count(b"GET /health HTTP/1.1\r\nHost: localhost\r\n\r\n")


@pytest.mark.parametrize(
    "host, status",
    [
        ("localhost", 200),
        ("127.0.0.1", 200),
        ("[::1]", 200),
        ("LOCALHOST", 200),
        (ALLOWED_HOST, 200),
        ("attacker.example", 400),
        ("localhost.attacker.example", 400),
        ("", 400),
    ],
)
def test_without_an_api_key_only_local_and_allowed_host_names_are_served(port: int, host: str, status: int) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
    try:
        connection.putrequest("GET", "/v1/models", skip_host=True)
        connection.putheader("Host", f"{host}:{port}" if host else "")
        connection.endheaders()
        answer = connection.getresponse()
        text = answer.read().decode()
    finally:
        connection.close()
    assert answer.status == status, text
    if status == 400:
        assert "--allowed-host" in text and "attacker" not in text


def test_probes_answer_whatever_the_host(port: int) -> None:
    """Load balancers and orchestrators probe a server by its IP address: /health, /ready, /metrics answer."""
    for path in ("/health", "/ready", "/metrics"):
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=30)
        try:
            connection.request("GET", path, headers={"Host": "10.1.2.3:8080"})
            assert connection.getresponse().status == 200, path
        finally:
            connection.close()


def test_request_ids_on_every_response_and_in_the_access_log(server: Server) -> None:
    mine = httpx.get(f"{server.url}/v1/models", headers={"X-Request-ID": "trace-42.a"}, timeout=30)
    assert mine.headers["x-request-id"] == "trace-42.a"
    unsafe = httpx.get(f"{server.url}/v1/models", headers={"X-Request-ID": "<script>"}, timeout=30)
    assert unsafe.headers["x-request-id"] != "<script>" and len(unsafe.headers["x-request-id"]) == 32
    failed = httpx.post(
        f"{server.url}/v1/rerank", content=b"{", headers={"Content-Type": "application/json"}, timeout=30
    )
    assert failed.status_code == 422 and len(failed.headers["x-request-id"]) == 32
    deadline = time.monotonic() + 30
    while True:
        log = server.log.read_text()
        if f"request_id={failed.headers['x-request-id']}" in log:
            break
        assert time.monotonic() < deadline, log[-2000:]
        time.sleep(0.1)
    assert '"GET /v1/models" 200' in log and "request_id=trace-42.a" in log


def test_metrics_in_prometheus_format(server: Server) -> None:
    httpx.post(f"{server.url}/v1/rerank", content=GOOD, headers={"Content-Type": "application/json"}, timeout=30)
    httpx.post(f"{server.url}/v1/rerank", content=b"{", headers={"Content-Type": "application/json"}, timeout=30)
    response = httpx.get(f"{server.url}/metrics", timeout=30)
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
    lines = response.text.splitlines()
    values = {line.rsplit(" ", 1)[0]: float(line.rsplit(" ", 1)[1]) for line in lines if not line.startswith("#")}
    assert values['jina_local_rerank_requests_total{route="/v1/rerank",status="200"}'] >= 1
    assert values['jina_local_rerank_requests_total{route="/v1/rerank",status="422"}'] >= 1
    assert values['jina_local_rerank_request_duration_seconds_bucket{route="/v1/rerank",le="+Inf"}'] >= 2
    assert values["jina_local_rerank_requests_in_flight"] == 0
    assert (
        values['jina_local_rerank_batch_requests_bucket{le="+Inf"}'] == values["jina_local_rerank_scoring_calls_total"]
    )
    assert values["jina_local_rerank_scored_tokens_total"] >= 1
    assert "# TYPE jina_local_rerank_request_duration_seconds histogram" in lines


# --- start-up refusals -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--api-key", ""], "--api-key is empty"),
        (["--api-key", "clé-secrète"], "visible ASCII"),
        (["--api-key", "two words"], "visible ASCII"),
    ],
    ids=["empty-key", "non-ascii-key", "key-with-space"],
)
def test_serve_refuses_keys_that_can_never_match(
    checkpoint_dir: Path, flags: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    status = main(["serve", "--model", str(checkpoint_dir), *flags], stdin=io.StringIO(), stdout=io.StringIO())
    assert status == 2
    assert message in capsys.readouterr().err


def test_serve_refuses_an_empty_key_in_the_environment(
    checkpoint_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("JINA_LOCAL_RERANK_API_KEY", "")
    assert main(["serve", "--model", str(checkpoint_dir)], stdin=io.StringIO(), stdout=io.StringIO()) == 2
    assert "$JINA_LOCAL_RERANK_API_KEY is empty" in capsys.readouterr().err


@pytest.mark.parametrize(
    "flags, message",
    [
        (["--port", "99999"], "1 to 65535"),
        (["--port", "0"], ">= 1"),
        (["--batch-wait-ms", "inf"], "--batch-wait-ms"),
        (["--batch-wait-ms", "nan"], "--batch-wait-ms"),
        (["--batch-wait-ms", "1e9"], "--batch-wait-ms"),
        (["--request-read-timeout", "0"], "--request-read-timeout"),
    ],
    ids=["port-99999", "port-0", "wait-inf", "wait-nan", "wait-absurd", "read-timeout-zero"],
)
def test_serve_refuses_impossible_numbers(flags: list[str], message: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["serve", *flags], stdin=io.StringIO(), stdout=io.StringIO())
    assert exit_info.value.code == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


# --- overload and readiness, in-process so the scorer can be held --------------------------------------------


class HeldBatcher(MicroBatcher):
    """Scores nothing until ``gate`` opens."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.gate = threading.Event()

    def _logits(self, sequences: Any) -> list[float]:
        assert self.gate.wait(timeout=120), "the gate was never opened"
        return super()._logits(sequences)


@contextlib.contextmanager
def uvicorn_in_a_thread(app: Any, **config: Any) -> Iterator[str]:
    """``app`` on a real uvicorn on a free loopback port, in a thread of this process; yields its URL."""
    import uvicorn

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", **config))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "uvicorn did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=60)


@pytest.fixture
def held_server(reranker: Reranker) -> Iterator[tuple[str, HeldBatcher]]:
    """The app with 2 requests admitted at most and a scorer held shut."""
    from jina_local_rerank.server.app import create_app

    settings = ServerSettings(served_model_names=("held",), max_queued_requests=2)
    scorer = HeldBatcher(reranker, max_wait_ms=0)
    with uvicorn_in_a_thread(create_app(reranker, settings, scorer=scorer)) as url:
        try:
            yield url, scorer
        finally:
            scorer.gate.set()  # before uvicorn stops: it waits for the requests in flight


@pytest.mark.parametrize("parser", ["httptools", "h11"])
def test_the_read_deadline_works_with_either_http_parser(reranker: Reranker, parser: str) -> None:
    """uvicorn uses httptools where installed, else h11: both protocols close a stalled connection, and serve."""
    if parser == "httptools":
        pytest.importorskip("httptools")
    from jina_local_rerank.server import connections
    from jina_local_rerank.server.app import create_app

    protocol = (
        connections.deadline_protocol(READ_TIMEOUT_S)
        if parser == "httptools"
        else connections._h11_protocol(READ_TIMEOUT_S)
    )
    app = create_app(reranker, ServerSettings(served_model_names=("m",)))
    with uvicorn_in_a_thread(app, http=protocol) as url:
        port = int(url.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=CLOSE_BOUND_S) as sock:
            sock.sendall(b"POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\nContent-Length: 90\r\n\r\n{")
            data, elapsed = read_until_closed(sock)
        assert data == b"" and elapsed < CLOSE_BOUND_S
        with httpx.Client(base_url=url, timeout=30) as client:  # whole requests, on one kept-alive connection
            for _ in range(3):
                assert client.post("/v1/rerank", json={"query": "q", "documents": ["a"]}).status_code == 200


def test_overload_gets_429_with_retry_after_and_readiness_drops(held_server: tuple[str, HeldBatcher]) -> None:
    url, scorer = held_server
    assert httpx.get(f"{url}/ready", timeout=30).status_code == 200
    answers: list[httpx.Response] = []

    def send() -> None:
        answers.append(httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a", "b"]}, timeout=120))

    senders = [threading.Thread(target=send) for _ in range(2)]
    for sender in senders:
        sender.start()
    deadline = time.monotonic() + 60
    while scorer.counters.in_flight < 2:
        assert time.monotonic() < deadline, "the requests were never admitted"
        time.sleep(0.01)
    refused = httpx.post(f"{url}/v1/rerank", json={"query": "q", "documents": ["a"]}, timeout=30)
    assert refused.status_code == 429 and refused.headers["retry-after"] == "1"
    assert "limit of 2 requests" in refused.json()["detail"]
    tei_refused = httpx.post(f"{url}/rerank", json={"query": "q", "texts": ["a"]}, timeout=30)
    assert tei_refused.status_code == 429 and tei_refused.json()["error_type"] == "overloaded"
    not_ready = httpx.get(f"{url}/ready", timeout=30)
    assert not_ready.status_code == 503 and not_ready.json()["in_flight"] == 2
    assert httpx.get(f"{url}/health", timeout=30).status_code == 200  # alive, though not ready
    scorer.gate.set()
    for sender in senders:
        sender.join(timeout=120)
    assert [answer.status_code for answer in answers] == [200, 200]
    assert httpx.get(f"{url}/ready", timeout=30).json() == {"ready": True, "in_flight": 0, "max_queued_requests": 2}


def random_json(rng: random.Random, depth: int = 0) -> Any:
    """A random JSON value: strings (some with lone surrogates), numbers of every size, lists, objects, nulls."""
    kind = rng.randrange(9 if depth < 3 else 6)
    if kind == 0:
        return None
    if kind == 1:
        return rng.choice([True, False])
    if kind == 2:
        return rng.choice([0, -1, 1, 2, 10**30, -(10**30), rng.randint(-5, 50)])
    if kind == 3:
        return rng.choice([0.5, -0.0, 1e308, -1e-308, rng.random()])
    if kind in (4, 5):
        return rng.choice(["", " ", "q", "llama", "a\ud800", "\udfffb", "x" * rng.randint(0, 300), "\u00e9\u4e2d"])
    if kind in (6, 7):
        return [random_json(rng, depth + 1) for _ in range(rng.randint(0, 5))]
    keys = [
        "query",
        "documents",
        "texts",
        "top_n",
        "model",
        "return_documents",
        "truncate",
        "raw_scores",
        "truncation_direction",
        "max_tokens_per_doc",
        "return_text",
        "text",
        "\ud800",
    ]
    return {rng.choice(keys): random_json(rng, depth + 1) for _ in range(rng.randint(0, 4))}


def test_random_bodies_never_get_a_5xx_or_lose_the_connection(port: int) -> None:
    """200 random bodies (seeded), shaped like each route's and not: every answer is below 500, on one connection."""
    rng = random.Random(15)
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
    try:
        connection.request("GET", "/health")
        connection.getresponse().read()
        sock = connection.sock
        statuses = []
        for _ in range(200):
            route = rng.choice(["/v1/rerank", "/v2/rerank", "/rerank"])
            body: Any = random_json(rng)
            if rng.random() < 0.6:  # mostly the route's own fields, with random values
                field = "texts" if route == "/rerank" else "documents"
                body = {
                    "query": random_json(rng),
                    field: [random_json(rng) for _ in range(rng.randint(0, 4))],
                    **(body if isinstance(body, dict) else {}),
                }
            payload = json.dumps(body).encode()  # ASCII: lone surrogates travel as \ud800 escapes
            connection.request("POST", route, body=payload, headers={"Content-Type": "application/json"})
            answer = connection.getresponse()
            text = answer.read()
            assert answer.status < 500, (route, payload[:300], text[:300])
            assert connection.sock is sock, (route, payload[:300])
            statuses.append(answer.status)
    finally:
        connection.close()
    assert {200, 400, 422} <= set(statuses)  # the bodies reached the model, TEI's empty check and validation
