"""Every file in ``examples/`` runs end to end, as a user would run it, and prints what the engine says.

Each example runs as a subprocess against the small local checkpoint (``--model``), offline, and its output is
checked against ``Reranker.score`` on the same checkpoint. The test is parametrized by the files that exist, so
an example added without a case in ``CASES`` fails here instead of rotting unseen.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import ModuleType

import pytest

from jina_local_rerank import Reranker
from jina_local_rerank.ranking import best_first

REPO_ROOT = Path(__file__).resolve().parents[1]
EXAMPLES_DIR = REPO_ROOT / "examples"
BIN_DIR = Path(sys.executable).parent  # where the package's console script was installed
RUN_TIMEOUT_S = 300


def example_names() -> list[str]:
    """Every file at the top of ``examples/`` (folders there may hold data)."""
    return sorted(p.name for p in EXAMPLES_DIR.iterdir() if p.is_file() and not p.name.startswith("."))


def example_env() -> dict[str, str]:
    """The environment an example runs in: offline, on the CPU, the console script on the PATH, no default model."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "PATH": f"{BIN_DIR}{os.pathsep}{os.environ.get('PATH', '')}"}
    # Expectations are computed on the CPU in float32: keep "auto" there too. Without the default model variable,
    # an example that ignores --model fails (offline) instead of passing on the default.
    env["CUDA_VISIBLE_DEVICES"] = ""
    env.pop("JINA_LOCAL_RERANK_MODEL", None)
    return env


def run_example(name: str, *args: str, cwd: Path) -> list[str]:
    """Run ``examples/name`` with ``args``; assert it succeeds and return its standard output's lines."""
    path = EXAMPLES_DIR / name
    interpreter = ["bash"] if path.suffix == ".sh" else [sys.executable]
    completed = subprocess.run(
        [*interpreter, str(path), *args],
        capture_output=True,
        text=True,
        env=example_env(),
        cwd=cwd,
        timeout=RUN_TIMEOUT_S,
    )
    assert completed.returncode == 0, f"examples/{name} exited with {completed.returncode}:\n{completed.stderr[-4000:]}"
    return completed.stdout.splitlines()


def load_example(name: str) -> ModuleType:
    """Import ``examples/name`` as a module (its ``main`` does not run) to read its data."""
    spec = importlib.util.spec_from_file_location(f"example_{Path(name).stem}", EXAMPLES_DIR / name)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def engine_ranking(reranker: Reranker, query: str, texts: list[str], *, raw: bool = False) -> list[tuple[int, float]]:
    """``(index into texts, score)`` best first, straight from the engine."""
    result = reranker.score(query, texts, raw=raw)
    return [(index, result.scores[index]) for index in best_first(result.logits)]


def printed(decimals: int) -> float:
    """Tolerance for a score printed with ``decimals`` decimals."""
    return 0.6 * 10.0**-decimals


# --- cases: one per example file ----------------------------------------------------------------------------------

Case = Callable[[Path, Reranker, Path], None]
CASES: dict[str, Case] = {}
CASE_MARKS: dict[str, tuple[pytest.MarkDecorator, ...]] = {}


def case(name: str, *marks: pytest.MarkDecorator) -> Callable[[Case], Case]:
    """Register ``check`` as the test of ``examples/name``; ``marks`` go on its test (e.g. ``pytest.mark.ray``)."""

    def register(check: Case) -> Case:
        CASES[name] = check
        CASE_MARKS[name] = marks
        return check

    return register


@case("quickstart.py")
def check_quickstart(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    lines = run_example("quickstart.py", "--model", str(checkpoint_dir), cwd=tmp_path)
    example = load_example("quickstart.py")
    ranking = engine_ranking(reranker, example.QUERY, example.DOCUMENTS)

    assert len(lines) == 5 and lines[0] == f"query: {example.QUERY}"
    top = [re.fullmatch(r"(\d+)\. (\d\.\d{4})  (.+)", line) for line in lines[1:4]]
    assert all(top), lines[1:4]
    best = [(rank, example.DOCUMENTS[i]) for rank, (i, _) in enumerate(ranking[:3], 1)]
    assert [(int(m[1]), m[3]) for m in top] == best
    assert [float(m[2]) for m in top] == pytest.approx([score for _, score in ranking[:3]], abs=printed(4))
    assert lines[4] == "order: " + " ".join(str(index) for index, _ in ranking)


@case("cli_rerank.sh")
def check_cli_rerank(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    lines = run_example("cli_rerank.sh", "--model", str(checkpoint_dir), cwd=tmp_path)
    query = re.search(r'^query="(.+)"$', (EXAMPLES_DIR / "cli_rerank.sh").read_text(), re.MULTILINE)[1]
    titles = [i for i, line in enumerate(lines) if line.startswith("# ")]
    assert len(titles) == 3 and titles[0] == 0, lines
    arguments, request_file, stdin = (
        [json.loads(line) for line in lines[start + 1 : end]] for start, end in zip(titles, [*titles[1:], len(lines)])
    )
    for (response,) in (arguments, stdin):
        assert response["model"] == str(checkpoint_dir)

    # 1. documents as arguments: all of them come back, best first, with their texts and sigmoid scores.
    (response,) = arguments
    texts = [entry["document"]["text"] for entry in sorted(response["results"], key=lambda e: e["index"])]
    assert len(texts) == 3
    ranking = engine_ranking(reranker, query, texts)
    assert [(e["index"], e["relevance_score"]) for e in response["results"]] == [
        (i, pytest.approx(score, abs=1e-6)) for i, score in ranking
    ]
    assert response["usage"]["total_tokens"] == reranker.score(query, texts).num_tokens
    assert all(entry["truncated"] is False and entry["windows"] == 1 for entry in response["results"])

    # 2. the request file is echoed, then the best two of its documents come back by index only.
    request, response = request_file
    documents = [d if isinstance(d, str) else d["text"] for d in request["documents"]]
    ranking = engine_ranking(reranker, request["query"], documents)[:2]
    assert [(e["index"], e["relevance_score"]) for e in response["results"]] == [
        (i, pytest.approx(score, abs=1e-6)) for i, score in ranking
    ]
    assert all("document" not in entry for entry in response["results"])

    # 3. JSON lines on stdin, raw logits.
    (response,) = stdin
    texts = [entry["document"]["text"] for entry in sorted(response["results"], key=lambda e: e["index"])]
    ranking = engine_ranking(reranker, query, texts, raw=True)
    assert [(e["index"], e["relevance_score"]) for e in response["results"]] == [
        (i, pytest.approx(logit, abs=1e-5)) for i, logit in ranking
    ]


@case("llama_index_query_engine.py")
def check_llama_index(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    from llama_index.core.schema import MetadataMode

    lines = run_example("llama_index_query_engine.py", "--model", str(checkpoint_dir), cwd=tmp_path)
    example = load_example("llama_index_query_engine.py")
    nodes = example.build_nodes()
    texts = [node.get_content(metadata_mode=MetadataMode.EMBED) for node in nodes]
    ranking = engine_ranking(reranker, example.QUERY, texts)[:3]

    assert lines[0] == f"query: {example.QUERY}"
    kept = [re.fullmatch(r"(\d+)\. (\S+) (\d\.\d{4})", line) for line in lines[1:]]
    assert all(kept) and len(kept) == 3, lines
    assert [(int(m[1]), m[2]) for m in kept] == [(rank, nodes[i].node_id) for rank, (i, _) in enumerate(ranking, 1)]
    assert [float(m[3]) for m in kept] == pytest.approx([score for _, score in ranking], abs=printed(4))


@case("langchain_retriever.py")
def check_langchain(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    lines = run_example("langchain_retriever.py", "--model", str(checkpoint_dir), cwd=tmp_path)
    corpus = load_example("langchain_retriever.py").CORPUS
    query = lines[0].removeprefix("query: ")
    candidates = lines[1].removeprefix("candidates: ").split()
    assert lines[0].startswith("query: ") and lines[1].startswith("candidates: ")
    assert len(candidates) > 3 and set(candidates) <= set(corpus)
    ranking = engine_ranking(reranker, query, [corpus[doc_id] for doc_id in candidates])[:3]

    kept = [re.fullmatch(r"(\d\.\d{6})  (\S+)  (.+)", line) for line in lines[2:]]
    assert all(kept) and len(kept) == 3, lines
    assert [(m[2], m[3]) for m in kept] == [(candidates[i], corpus[candidates[i]]) for i, _ in ranking]
    assert [float(m[1]) for m in kept] == pytest.approx([score for _, score in ranking], abs=printed(6))


@case("haystack_pipeline.py")
def check_haystack(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    lines = run_example("haystack_pipeline.py", "--model", str(checkpoint_dir), cwd=tmp_path)
    example = load_example("haystack_pipeline.py")
    query = lines[0].removeprefix("query: ")
    assert lines[0].startswith("query: ")
    # The example's own first stage, run in-process (the ranker is built but never warmed up here).
    retriever = example.build_pipeline(str(checkpoint_dir), "cpu", 3).get_component("retriever")
    candidates = [doc.content for doc in retriever.run(query=query)["documents"]]
    ranking = engine_ranking(reranker, query, candidates)[:3]

    kept = [re.fullmatch(r"(\d+)\. (\d\.\d{4})  (.+)", line) for line in lines[1:]]
    assert all(kept) and len(kept) == 3, lines
    assert [(int(m[1]), m[3]) for m in kept] == [(rank, candidates[i]) for rank, (i, _) in enumerate(ranking, 1)]
    assert [float(m[2]) for m in kept] == pytest.approx([score for _, score in ranking], abs=printed(4))


@case("evaluate_beir.py")
def check_evaluate_beir(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    from jina_local_rerank.evaluation import bm25_first_stage, load_beir, select_queries

    top_k = 4
    lines = run_example("evaluate_beir.py", "--model", str(checkpoint_dir), "--top-k", str(top_k), cwd=tmp_path)
    example = load_example("evaluate_beir.py")
    # The example's dataset and first stage, in-process; the reranked order must be the engine's.
    dataset = load_beir(example.write_dataset(tmp_path / "dataset"), split="test")
    query_ids, _ = select_queries(dataset)
    first_stage = bm25_first_stage(dataset, query_ids, top_k)
    expected = []
    for query_id in query_ids:
        candidates = first_stage.rankings[query_id][:top_k]
        result = reranker.score(dataset.queries[query_id], [dataset.corpus[d].full_text for d in candidates])
        expected.append(f"{query_id} reranked: {' > '.join(candidates[i] for i in best_first(result.logits))}")

    assert [line for line in lines if " reranked: " in line] == expected
    assert any("NDCG@10" in line for line in lines), lines


@case("fine_tune.py")
def check_fine_tune(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    from jina_local_rerank.evaluation import ndcg_at

    output = tmp_path / "my-reranker"
    lines = run_example(
        "fine_tune.py", "--model", str(checkpoint_dir), "--device", "cpu", "--output", str(output), cwd=tmp_path
    )
    example = load_example("fine_tune.py")
    trained = Reranker(output, device="cpu", max_length=128)  # the folder it wrote, as any model

    summary = re.fullmatch(r"trained (\d+) steps on (\d+) queries, (\d+) tokens", lines[0])
    assert summary and int(summary[1]) >= 1 and int(summary[2]) == len(example.TRAIN), lines
    metrics = re.fullmatch(r"ndcg@10 before (\d\.\d{4}) after (\d\.\d{4})", lines[1])
    assert metrics, lines
    ndcg = []
    for query, judged in example.HELD_OUT:
        logits = trained.score(query, list(judged)).logits
        qrels = {str(i): grade for i, grade in enumerate(judged.values()) if grade > 0}
        ndcg.append(ndcg_at([str(i) for i in best_first(logits)], qrels))
    assert float(metrics[2]) == pytest.approx(sum(ndcg) / len(ndcg), abs=printed(4))  # "after" is the saved model
    assert f"| ndcg@10 | {metrics[1]} | {metrics[2]} |" in (output / "README.md").read_text()

    assert lines[2] == f"query: {example.QUERY}"
    ranked = [re.fullmatch(r"(\d+)\. (\d\.\d{4})  (.+)", line) for line in lines[3:]]
    assert all(ranked) and len(ranked) == len(example.DOCUMENTS), lines
    expected = engine_ranking(trained, example.QUERY, example.DOCUMENTS)
    assert [m[3] for m in ranked] == [example.DOCUMENTS[i] for i, _ in expected]
    assert [float(m[2]) for m in ranked] == pytest.approx([score for _, score in expected], abs=printed(4))


@contextmanager
def running_server(checkpoint_dir: Path, log: Path) -> Iterator[str]:
    """``jina-local-rerank serve`` on a free loopback port, as a user starts it; yields its base URL."""
    import httpx

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    env = example_env()
    script = shutil.which("jina-local-rerank", path=env["PATH"])
    assert script, "the jina-local-rerank console script is not installed"
    command = [script, "serve", "--model", str(checkpoint_dir), "--port", str(port), "--log-level", "warning"]
    url = f"http://127.0.0.1:{port}"
    with log.open("wb") as sink:
        process = subprocess.Popen(command, stdout=sink, stderr=subprocess.STDOUT, env=env)
    try:
        deadline = time.monotonic() + RUN_TIMEOUT_S
        while True:
            assert process.poll() is None, f"the server exited with {process.returncode}:\n{log.read_text()}"
            assert time.monotonic() < deadline, f"the server did not answer /health:\n{log.read_text()}"
            try:
                if httpx.get(f"{url}/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                time.sleep(0.2)
        yield url
    finally:
        process.terminate()
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@case("server_client.py")
def check_server_client(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    from jina_local_rerank.server.settings import default_served_names

    with running_server(checkpoint_dir, tmp_path / "server.log") as url:
        lines = run_example("server_client.py", "--url", url, cwd=tmp_path)
    example = load_example("server_client.py")
    result = reranker.score(example.QUERY, example.DOCUMENTS)
    ranking = engine_ranking(reranker, example.QUERY, example.DOCUMENTS)[:3]

    assert lines[0] == f"model {default_served_names(str(checkpoint_dir))[0]}, {result.num_tokens} tokens"
    kept = [re.fullmatch(r"(\d+)\. \[(\d+)\] (\d\.\d{4})  (.+)", line) for line in lines[1:]]
    assert all(kept) and len(kept) == 3, lines
    assert [(int(m[1]), int(m[2]), m[4]) for m in kept] == [
        (rank, i, example.DOCUMENTS[i]) for rank, (i, _) in enumerate(ranking, 1)
    ]
    assert [float(m[3]) for m in kept] == pytest.approx([score for _, score in ranking], abs=printed(4))


@case("ray_batch_scoring.py", pytest.mark.ray)
def check_ray_batch_scoring(checkpoint_dir: Path, reranker: Reranker, tmp_path: Path) -> None:
    workdir = tmp_path / "work"
    workdir.mkdir()
    lines = run_example("ray_batch_scoring.py", "--model", str(checkpoint_dir), "--workdir", str(workdir), cwd=tmp_path)
    example = load_example("ray_batch_scoring.py")
    pairs = [(query, document) for query in example.QUERIES for document in example.DOCUMENTS]

    # The scored file: the input rows in their order, each with the engine's score.
    rows = [json.loads(line) for line in (workdir / "scored.jsonl").read_text(encoding="utf-8").splitlines()]
    assert [(row["query"], row["document"]) for row in rows] == pairs
    assert [row["score"] for row in rows] == pytest.approx(reranker.score_pairs(pairs).scores, abs=1e-6)

    assert lines[0] == f"scored {len(pairs)} pairs into scored.jsonl"
    expected = []
    for query in example.QUERIES:
        best, score = engine_ranking(reranker, query, example.DOCUMENTS)[0]
        expected.append((query, example.DOCUMENTS[best], score))
    best_lines = [re.fullmatch(r"(.+) -> (.+) \((\d\.\d{4})\)", line) for line in lines[1:]]
    assert all(best_lines) and len(best_lines) == len(expected), lines
    assert [(m[1], m[2]) for m in best_lines] == [(query, document) for query, document, _ in expected]
    assert [float(m[3]) for m in best_lines] == pytest.approx([score for *_, score in expected], abs=printed(4))


# --- the tests -----------------------------------------------------------------------------------------------------


@pytest.mark.slow  # each example is a fresh interpreter that imports torch and its framework
@pytest.mark.parametrize("name", [pytest.param(name, marks=CASE_MARKS.get(name, ())) for name in example_names()])
def test_example_runs_and_prints_the_engines_ranking(
    name: str, checkpoint_dir: Path, reranker: Reranker, tmp_path: Path
):
    check = CASES.get(name)
    if check is None:
        pytest.fail(f"examples/{name} has no case in tests/test_examples.py: add one that runs it and checks it")
    check(checkpoint_dir, reranker, tmp_path)


def test_every_case_names_an_existing_example():
    assert sorted(set(CASES) - set(example_names())) == []
