"""Throw hostile inputs at every server route and every CLI command over loopback; count crashes, wrong results
and hangs, and score a 1 MB document through each route (time and server memory).

    python scripts/hostile_inputs.py [--model DIR] [--skip-cli]

Without ``--model`` a small random checkpoint is built (nothing is downloaded). Two servers run: one with an API
key, one without (the Host check applies). A **crash** is a 5xx, a traceback in an answer, the server's log or a
command's stderr, a dropped connection or a dead server, or a command's error that is not one line with status 1
or 2; a **wrong result** is any other status than expected, or scores that differ from the engine's own; a
**hang** is no answer within the case's time limit. Every case is bounded in time, so the run is too. Exits 1 if
any count is not 0.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

REPO = Path(__file__).resolve().parents[1]
KEY = "hostile-test-key"
MAX_LENGTH = 512
REQUEST_TIMEOUT_S = 60.0
CLI_TIMEOUT_S = 180.0
MEGABYTE_DOCUMENT = " ".join(f"llama{i % 97} wool, andes; camelid." for i in range(34_000))


def environment() -> dict[str, str]:
    path = os.pathsep.join([str(REPO / "core"), str(REPO / "integrations"), os.environ.get("PYTHONPATH", "")])
    return {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": "", "PYTHONPATH": path}


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@dataclass
class Tally:
    cases: int = 0
    crashes: list[str] = field(default_factory=list)
    wrong: list[str] = field(default_factory=list)
    hangs: list[str] = field(default_factory=list)
    by_group: Counter = field(default_factory=Counter)

    def record(self, group: str, name: str, problem: str | None, kind: str = "wrong") -> None:
        self.cases += 1
        self.by_group[group] += 1
        if problem is not None:
            {"crash": self.crashes, "wrong": self.wrong, "hang": self.hangs}[kind].append(f"{group}/{name}: {problem}")


class Server:
    def __init__(self, model: Path, log: Path, *flags: str, max_length: int | None = MAX_LENGTH) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        command = [
            sys.executable,
            "-m",
            "jina_local_rerank.cli",
            "serve",
            "--model",
            str(model),
            "--device",
            "cpu",
            "--port",
            str(self.port),
            "--request-read-timeout",
            "2",
            *flags,
        ]
        if max_length is not None:
            command += ["--max-length", str(max_length)]
        with log.open("wb") as sink:
            self.process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=environment())
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SystemExit(f"server exited: {log.read_text()}")
            try:
                if httpx.get(f"{self.url}/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                time.sleep(0.2)
        raise SystemExit("server did not start")

    def rss_mib(self) -> float:
        for line in Path(f"/proc/{self.process.pid}/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.wait(timeout=60)


# --- server cases ----------------------------------------------------------------------------------------------------


def bodies(route: str) -> dict[str, tuple[bytes, set[int]]]:
    """Hostile bodies for ``route`` and the statuses each may get (without any auth problem)."""
    docs = "texts" if route == "/rerank" else "documents"

    def body(**fields: Any) -> bytes:
        return json.dumps({"query": "llama", docs: ["a llama", "paris"], **fields}).encode()

    raw = {
        "empty": (b"", {422}),
        "not-json": (b"{not json", {422}),
        "truncated": (b'{"query": "q", "%s": ["a"' % docs.encode(), {422}),
        "nan": (b'{"query": "q", "%s": ["a"], "top_n": NaN}' % docs.encode(), {422}),
        "infinity": (b'{"query": "q", "%s": ["a"], "top_n": Infinity}' % docs.encode(), {422}),
        "1e400": (b'{"query": "q", "%s": ["a"], "top_n": 1e400}' % docs.encode(), {422}),
        "5000-digit-int": (b'{"query": "q", "%s": ["a"], "top_n": %s}' % (docs.encode(), b"9" * 5000), {422}),
        "310-digit-int": (b'{"query": "q", "%s": ["a"], "top_n": %s}' % (docs.encode(), b"9" * 310), {200, 422}),
        "nested-100000": (b"[" * 100_000, {422}),
        "nested-in-field": (b'{"query": "q", "%s": %s%s}' % (docs.encode(), b"[" * 5000, b"]" * 5000), {422}),
        "not-utf8": (b'{"query": "\xff\xfe", "%s": ["a"]}' % docs.encode(), {422}),
        "lone-surrogate": (b'{"query": "q", "%s": ["a\\ud800"]}' % docs.encode(), {422}),
        "surrogate-key": (b'{"query": "q", "%s": ["a"], "\\udfff": 1}' % docs.encode(), {422}),
        "list-body": (b'["q", "a"]', {422}),
        "string-body": (b'"q"', {422}),
        "null-body": (b"null", {422}),
        "documents-null": (b'{"query": "q", "%s": null}' % docs.encode(), {422}),
        "documents-dict": (b'{"query": "q", "%s": {"a": 1}}' % docs.encode(), {422}),
        "documents-ints": (b'{"query": "q", "%s": [1, 2, 3]}' % docs.encode(), {422}),
        "query-missing": (b'{"%s": ["a"]}' % docs.encode(), {422}),
        "query-int": (b'{"query": 5, "%s": ["a"]}' % docs.encode(), {422}),
        "query-blank": (b'{"query": "  \\n ", "%s": ["a"]}' % docs.encode(), {422}),
        "query-nul": (b'{"query": "\\u0000", "%s": ["a"]}' % docs.encode(), {200}),
        "no-documents": (body(**{docs: []}), {400} if route == "/rerank" else {200}),
        "empty-string-document": (body(**{docs: ["", " ", "a"]}), {200}),
        "10000-documents": (body(**{docs: ["a"] * 10_000}), {413}),
        "200k-integers": (json.dumps({"query": "q", docs: list(range(200_000))}).encode(), {413}),
        "unicode-mix": (body(**{docs: ["\u202eevil", "😀" * 5000, "中文，标点。" * 2000, "\x00\x01\x1f"]}), {200}),
        "duplicates": (body(**{docs: ["same"] * 20}), {200}),
        "megabyte-document": (body(**{docs: ["short", MEGABYTE_DOCUMENT]}), {200}),
        "megabyte-query": (json.dumps({"query": MEGABYTE_DOCUMENT, docs: ["a"]}).encode(), {200}),
        "9-megabyte-body": (body(**{docs: ["x" * (9 * 2**20)]}), {413}),
        "unbroken-word-2mb": (body(**{docs: ["a" * (2 * 2**20)]}), {200}),
        "over-token-budget": (body(**{docs: ["llama " * 3000] * 30}), {413}),
        "unknown-fields": (body(extra={"deep": [1, 2, {"x": None}]}), {200}),
    }
    if route == "/rerank":
        raw.update(
            {
                "truncate-false-long": (body(**{docs: ["llama " * 3000]}, truncate=False), {413}),
                "truncate-false-megabyte": (body(**{docs: [MEGABYTE_DOCUMENT]}, truncate=False), {413}),
                "direction-left": (body(**{docs: [MEGABYTE_DOCUMENT]}, truncation_direction="left"), {200}),
                "direction-bad": (body(truncation_direction="up"), {422}),
                "raw-scores-string": (body(raw_scores="yes"), {422}),
                "truncate-null": (body(truncate=None), {200}),
            }
        )
    else:
        raw.update(
            {
                "top-n-zero": (body(top_n=0), {422}),
                "top-n-negative": (body(top_n=-1), {422}),
                "top-n-huge": (body(top_n=10**18), {200}),
                "top-n-float": (body(top_n=1.5), {422}),
                "top-n-bool": (body(top_n=True), {422}),
                "return-documents-string": (body(return_documents="yes"), {422}),
                "unknown-model": (body(model="gpt-4"), {404}),
                "model-int": (body(model=5), {422}),
                "object-documents": (body(**{docs: [{"text": "a"}, {"text": 5}]}), {422}),
                "object-without-text": (body(**{docs: [{"body": "a"}]}), {422}),
            }
        )
    if route == "/v2/rerank":
        raw.update(
            {
                "max-tokens-zero": (body(max_tokens_per_doc=0), {422}),
                "max-tokens-one": (body(max_tokens_per_doc=1), {200}),
                "max-tokens-huge": (body(max_tokens_per_doc=10**12), {200}),
            }
        )
    return raw


def check_answer(response: httpx.Response, expected: set[int]) -> tuple[str | None, str]:
    text = response.text
    if response.status_code >= 500 or "Traceback" in text:
        return f"status {response.status_code}: {text[:200]}", "crash"
    if response.status_code not in expected:
        return f"status {response.status_code}, expected {sorted(expected)}: {text[:200]}", "wrong"
    if len(text) > 64_000 and response.status_code >= 400:
        return f"an error of {len(text)} characters", "wrong"
    return None, "wrong"


def server_cases(tally: Tally, open_server: Server, keyed: Server, engine: Any) -> None:
    routes = ("/v1/rerank", "/v2/rerank", "/rerank")
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for route in routes:
            for name, (payload, expected) in bodies(route).items():
                for server, headers, label in (
                    (open_server, {}, "open"),
                    (keyed, {"Authorization": f"Bearer {KEY}"}, "keyed"),
                ):
                    try:
                        response = client.post(
                            f"{server.url}{route}",
                            content=payload,
                            headers={"Content-Type": "application/json", **headers},
                        )
                    except httpx.TimeoutException:
                        tally.record("server", f"{label}{route}/{name}", "no answer", "hang")
                        continue
                    except httpx.TransportError as exc:
                        tally.record("server", f"{label}{route}/{name}", f"connection: {exc}", "crash")
                        continue
                    problem, kind = check_answer(response, expected)
                    tally.record(f"server {label}", f"{route}/{name}", problem, kind)
                # Without the key, or with a wrong one: 401 and nothing else, whatever the body.
                for headers, label in (
                    ({}, "no-key"),
                    ({"Authorization": "Bearer nope"}, "wrong-key"),
                    ({"Authorization": f"Basic {KEY}"}, "basic"),
                ):
                    try:
                        response = client.post(
                            f"{keyed.url}{route}",
                            content=payload,
                            headers={"Content-Type": "application/json", **headers},
                        )
                        problem, kind = check_answer(response, {401})
                        if problem is None and "API key" not in response.text:
                            problem = f"a 401 that does not say why: {response.text[:200]}"
                    except httpx.TimeoutException:
                        problem, kind = "no answer", "hang"
                    tally.record("auth", f"{label}{route}/{name}", problem, kind)
        # Scores of odd but valid requests equal the engine's own.
        for route, documents in (
            ("/v1/rerank", ["a llama", "😀" * 500, "", "中文，标点。" * 300, MEGABYTE_DOCUMENT]),
            ("/rerank", ["a llama", MEGABYTE_DOCUMENT, "paris"]),
        ):
            field_name = "texts" if route == "/rerank" else "documents"
            body = {"query": "llama", field_name: documents}
            response = client.post(f"{open_server.url}{route}", json=body)
            answer = response.json()
            results = answer if route == "/rerank" else answer["results"]
            key = "score" if route == "/rerank" else "relevance_score"
            got = {entry["index"]: entry[key] for entry in results}
            expected_scores = engine.score("llama", documents).scores
            bad = [i for i, score in enumerate(expected_scores) if not math.isclose(got[i], score, abs_tol=1e-5)]
            tally.record("scores", route, f"documents {bad} differ from the engine" if bad else None)
        # Methods, paths, Host headers, connections that stall or lie about their length.
        for method, path, expected in (
            ("GET", "/v1/rerank", {405}),
            ("DELETE", "/rerank", {405}),
            ("GET", "/../../etc/passwd", {404}),
            ("GET", "/nothing", {404}),
            ("OPTIONS", "/v2/rerank", {405}),
            ("GET", "/health", {200}),
            ("GET", "/metrics", {200}),
            ("GET", "/info", {200}),
        ):
            problem, kind = check_answer(client.request(method, f"{open_server.url}{path}"), expected)
            tally.record("server open", f"{method} {path}", problem, kind)
            problem, kind = check_answer(
                client.request(method, f"{keyed.url}{path}"),
                expected if path in ("/health", "/metrics", "/nothing", "/../../etc/passwd") else {401},
            )
            tally.record("auth", f"{method} {path}", problem, kind)
        for host, expected in (("attacker.example", {400}), ("localhost", {200}), ("", {400})):
            response = client.get(f"{open_server.url}/v1/models", headers={"Host": host})
            problem, kind = check_answer(response, expected)
            tally.record("server open", f"host {host or 'empty'}", problem, kind)
    for name, raw in (
        ("content-length-lies", b"POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\nContent-Length: 500\r\n\r\n{"),
        ("headers-never-end", b"POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\nX-a: b\r\n"),
        (
            "chunked-forever",
            b"POST /v1/rerank HTTP/1.1\r\nHost: localhost\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n",
        ),
        ("garbage", b"\x00\x01\x02 GARBAGE \xff\r\n\r\n"),
    ):
        with socket.create_connection(("127.0.0.1", open_server.port), timeout=20) as sock:
            sock.sendall(raw)
            started = time.monotonic()
            try:
                while sock.recv(65536):
                    pass
                problem = None if time.monotonic() - started < 20 else "held open"
            except TimeoutError:
                problem = "the server kept the connection open"
        tally.record("connections", name, problem, "hang" if problem else "wrong")
    for server, label in ((open_server, "open"), (keyed, "keyed")):
        alive = server.process.poll() is None
        tally.record("server", f"{label} alive", None if alive else "the server died", "crash")


def megabyte_through_each_route(open_server: Server) -> list[tuple[str, float, float, float]]:
    """(route, median seconds of 3 requests, server RSS growth and RSS after, in MiB) for a 1 MB document."""
    rows = []
    requests = [
        ("/v1/rerank", {"query": "llama", "documents": ["short", MEGABYTE_DOCUMENT]}),
        ("/v2/rerank", {"query": "llama", "documents": ["short", MEGABYTE_DOCUMENT]}),
        ("/rerank", {"query": "llama", "texts": ["short", MEGABYTE_DOCUMENT], "truncate": True}),
        ("/rerank (left)", {"query": "llama", "texts": ["short", MEGABYTE_DOCUMENT], "truncation_direction": "left"}),
    ]
    with httpx.Client(timeout=REQUEST_TIMEOUT_S) as client:
        for route, body in requests:
            before = open_server.rss_mib()
            times = []
            for _ in range(3):
                started = time.perf_counter()
                response = client.post(f"{open_server.url}{route.split()[0]}", json=body)
                times.append(time.perf_counter() - started)
                assert response.status_code == 200, response.text[:200]
            rows.append((route, sorted(times)[1], open_server.rss_mib() - before, open_server.rss_mib()))
    return rows


# --- CLI cases -------------------------------------------------------------------------------------------------------


def cli_cases(tally: Tally, model: Path, work: Path) -> None:
    def jsonl(name: str, lines: list[str]) -> str:
        path = work / name
        path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")
        return str(path)

    dataset = work / "beir"
    (dataset / "qrels").mkdir(parents=True)
    (dataset / "corpus.jsonl").write_text('{"_id": "d1", "text": "a llama"}\n{"_id": "d2", "text": "paris"}\n')
    (dataset / "queries.jsonl").write_text('{"_id": "q1", "text": "llama"}\n')
    (dataset / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n")
    broken = work / "beir-broken"
    (broken / "qrels").mkdir(parents=True)
    (broken / "corpus.jsonl").write_text('{"_id": "d1", "text": ' + "[" * 100_000 + "\n")
    (broken / "queries.jsonl").write_text('{"_id": "q1", "text": "llama"}\n')
    (broken / "qrels" / "test.tsv").write_text("q1\td1\t1\n")
    good = [
        json.dumps({"query": f"q{i} files", "positive": f"open file {i}", "negatives": [f"other {i}"]})
        for i in range(4)
    ]
    fifo = work / "input.fifo"
    os.mkfifo(fifo)
    m = ["--model", str(model), "--device", "cpu"]
    train = ["train", *m, "--max-length", "64", "--negatives", "1", "--quiet"]
    cases: list[tuple[str, list[str], set[int], bytes | None]] = [
        ("rerank /dev/zero", ["rerank", *m, "-q", "q", "--input", "/dev/zero"], {2}, None),
        ("rerank stdin zeros", ["rerank", *m, "-q", "q"], {0, 2}, b"\0" * 2**20),
        ("rerank nested", ["rerank", *m, "-q", "q"], {2}, b"[" * 100_000),
        ("rerank huge int", ["rerank", *m, "-q", "q"], {2}, b"[" + b"9" * 5000 + b"]"),
        ("rerank NaN doc", ["rerank", *m, "-q", "q"], {2}, b"[NaN]"),
        ("rerank not utf8", ["rerank", *m, "-q", "q"], {2}, b"\xff\xfe"),
        (
            "rerank megabyte",
            ["rerank", *m, "-q", "llama", "--no-documents"],
            {0},
            json.dumps([MEGABYTE_DOCUMENT]).encode(),
        ),
        ("rerank directory", ["rerank", *m, "-q", "q", "--input", str(work)], {2}, None),
        ("rerank fifo", ["rerank", *m, "-q", "q", "--input", str(fifo)], {0}, None),
        ("rerank top-n 0", ["rerank", *m, "-q", "q", "--top-n", "0", "a"], {2}, None),
        ("rerank max-length huge", ["rerank", *m, "-q", "q", "--max-length", str(10**30), "a"], {2}, None),
        (
            "score-pairs /dev/zero",
            ["score-pairs", *m, "/dev/zero", str(work / "o.jsonl"), "--input-format", "jsonl"],
            {1, 2},
            None,
        ),
        (
            "score-pairs same file",
            ["score-pairs", *m, jsonl("p.jsonl", ['{"query": "q", "document": "d"}']), str(work / "p.jsonl")],
            {2},
            None,
        ),
        (
            "score-pairs nested",
            ["score-pairs", *m, jsonl("n.jsonl", ["[" * 100_000]), str(work / "n-out.jsonl")],
            {2},
            None,
        ),
        (
            "train label 1e39",
            [
                *train,
                "--train",
                jsonl("a.jsonl", [*good, '{"query": "q", "document": "d", "label": 1e39}']),
                "--output",
                str(work / "o1"),
            ],
            {2},
            None,
        ),
        (
            "train 5000 digits",
            [
                *train,
                "--train",
                jsonl("b.jsonl", [*good, '{"query": "q", "document": "d", "label": ' + "1" * 5000 + "}"]),
                "--output",
                str(work / "o2"),
            ],
            {2},
            None,
        ),
        (
            "train 310 digits",
            [
                *train,
                "--train",
                jsonl("c.jsonl", [*good, '{"query": "q", "document": "d", "label": ' + "1" * 310 + "}"]),
                "--output",
                str(work / "o3"),
            ],
            {2},
            None,
        ),
        (
            "train nested",
            [*train, "--train", jsonl("d.jsonl", [*good, "[" * 100_000]), "--output", str(work / "o4")],
            {2},
            None,
        ),
        ("train /dev/zero", [*train, "--train", "/dev/zero", "--output", str(work / "o5")], {2}, None),
        (
            "train seed 2**70",
            [*train, "--train", jsonl("e.jsonl", good), "--seed", str(2**70), "--output", str(work / "o6")],
            {2},
            None,
        ),
        (
            "train state-dir is model",
            [
                *train,
                "--train",
                jsonl("f.jsonl", good),
                "--state-dir",
                str(model),
                "--overwrite",
                "--output",
                str(work / "o7"),
            ],
            {2},
            None,
        ),
        (
            "distill NaN scores",
            [
                "distill",
                *m,
                "--max-length",
                "64",
                "--negatives",
                "1",
                "--quiet",
                "--teacher-column",
                "scores",
                "--train",
                jsonl("g.jsonl", [*good[:2], '{"query": "q", "documents": ["a", "b"], "scores": [NaN, 1]}']),
                "--output",
                str(work / "o8"),
            ],
            {2},
            None,
        ),
        (
            "train output is a file",
            [*train, "--train", jsonl("h.jsonl", good), "--output", str(work / "h.jsonl")],
            {2},
            None,
        ),
        ("eval missing dataset", ["eval", *m, str(work / "none")], {1, 2}, None),
        ("eval run file /dev/zero", ["eval", *m, str(dataset), "--run", "/dev/zero"], {1, 2}, None),
        ("eval small dataset", ["eval", *m, str(dataset), "--bm25"], {0}, None),
        ("eval corpus nested", ["eval", *m, str(broken), "--bm25"], {2}, None),
        ("export output in model", ["export", "onnx", "--model", str(model), "--output", str(model / "x")], {2}, None),
        (
            "export scoring option",
            ["export", "onnx", "--model", str(model), "--max-length", "64", "--output", str(work / "ex")],
            {2},
            None,
        ),
        ("serve bad key", ["serve", *m, "--api-key", "two words"], {2}, None),
        ("serve bad port", ["serve", *m, "--port", "70000"], {2}, None),
    ]
    for name, args, expected, stdin in cases:
        writer = None
        if "fifo" in name:
            writer = subprocess.Popen(["sh", "-c", f"printf '%s' '[\"a llama\", \"paris\"]' > {fifo}"])
        started = time.monotonic()
        try:
            completed = subprocess.run(
                [sys.executable, "-m", "jina_local_rerank.cli", *args],
                input=stdin,
                capture_output=True,
                env=environment(),
                timeout=CLI_TIMEOUT_S,
            )
        except subprocess.TimeoutExpired:
            tally.record("cli", name, f"no end within {CLI_TIMEOUT_S:g} s", "hang")
            continue
        finally:
            if writer is not None:
                writer.wait(timeout=10)
        err = completed.stderr.decode("utf-8", "replace")
        last = err.strip().splitlines()[-1] if err.strip() else ""
        # One line, or argparse's usage block ending in its one error line.
        one_line = err.count("\n") == 1 or (err.startswith("usage: ") and ": error: argument " in last)
        if "Traceback" in err or completed.returncode not in (0, 1, 2):
            tally.record("cli", name, f"status {completed.returncode}: {err[-300:]}", "crash")
        elif completed.returncode != 0 and not (one_line and last.startswith("jina-local-rerank")):
            tally.record("cli", name, f"not a one-line error: {err[-300:]}", "crash")
        elif completed.returncode not in expected:
            tally.record("cli", name, f"status {completed.returncode}, expected {sorted(expected)}: {err[-200:]}")
        else:
            tally.record("cli", name, None)
        print(
            f"  cli {name}: {completed.returncode} in {time.monotonic() - started:.1f} s "
            f"{err.strip().splitlines()[-1][:110] if err.strip() else ''}",
            file=sys.stderr,
        )


def timed(work: Any) -> float:
    started = time.perf_counter()
    work()
    return time.perf_counter() - started


def full_window(model: Path) -> int:
    return json.loads((model / "config.json").read_text())["max_position_embeddings"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, default=None, help="checkpoint folder (default: a random one)")
    parser.add_argument("--skip-cli", action="store_true", help="only the server routes")
    args = parser.parse_args()
    sys.path[:0] = [str(REPO / "core"), str(REPO / "integrations")]
    from jina_local_rerank import Reranker
    from jina_local_rerank.testing.random_checkpoint import write_random_checkpoint

    with tempfile.TemporaryDirectory(prefix="hostile-") as temporary:
        work = Path(temporary)
        model = args.model or write_random_checkpoint(work / "model", seed=1)
        engine = Reranker(model, device="cpu", max_length=MAX_LENGTH)
        open_server = Server(model, work / "open.log", "--max-request-tokens", "8192")
        keyed = Server(model, work / "keyed.log", "--api-key", KEY, "--max-request-tokens", "8192")
        tally = Tally()
        try:
            started = time.monotonic()
            server_cases(tally, open_server, keyed, engine)
            server_seconds = time.monotonic() - started
            megabyte = [(MAX_LENGTH, *row) for row in megabyte_through_each_route(open_server)]
        finally:
            open_server.stop()
            keyed.stop()
        full = Server(model, work / "full.log", max_length=None)  # the model's own window (8192 for the v1 models)
        try:
            window = full_window(model)
            megabyte += [(window, *row) for row in megabyte_through_each_route(full)]
        finally:
            full.stop()
        tokenizer = engine.engine.tokenizer
        whole = min(timed(lambda: tokenizer.tokenize([MEGABYTE_DOCUMENT])) for _ in range(3))
        bounded = min(timed(lambda: tokenizer.tokenize_ends([MEGABYTE_DOCUMENT], [window], "right")) for _ in range(3))
        for server, label in ((open_server, "open"), (keyed, "keyed")):
            log = server.log.read_text(errors="replace")
            tally.record("server", f"{label} log", "a traceback in the log" if "Traceback" in log else None, "crash")
        if not args.skip_cli:
            (work / "cli").mkdir()
            cli_cases(tally, model, work / "cli")
    print(f"{'group':<16}{'cases':>8}")
    for group, count in sorted(tally.by_group.items()):
        print(f"{group:<16}{count:>8}")
    print(
        f"\n{tally.cases} cases: {len(tally.crashes)} crashes, {len(tally.wrong)} wrong results, "
        f"{len(tally.hangs)} hangs (server cases took {server_seconds:.0f} s)"
    )
    for problem in tally.crashes + tally.wrong + tally.hangs:
        print(f"  {problem}")
    print(f"\n1 MB document ({len(MEGABYTE_DOCUMENT):,} characters) beside a short one, 3 requests each:")
    print(f"{'window':>7}  {'route':<18}{'median s':>10}{'RSS growth MiB':>16}{'RSS MiB':>10}")
    for window, route, seconds, growth, rss in megabyte:
        print(f"{window:>7}  {route:<18}{seconds:>10.3f}{growth:>16.1f}{rss:>10.0f}")
    print(
        f"\ntokenizing the 1 MB document whole: {whole * 1000:.0f} ms; the first {window} tokens only: "
        f"{bounded * 1000:.1f} ms ({whole / bounded:.0f}x less work; best of 3)"
    )
    return 1 if tally.crashes or tally.wrong or tally.hangs else 0


if __name__ == "__main__":
    raise SystemExit(main())
