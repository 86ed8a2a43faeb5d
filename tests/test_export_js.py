"""The model card's transformers.js code runs an export in every runtime a user reaches for, with the engine's scores.

``@xenova/transformers`` 2.17 (the card's package), ``@huggingface/transformers`` 3.x and 4.x, each in Node.js and
in headless Chromium (Debian's ``chromium`` driven by ``puppeteer-core``, the page ``examples/browser/index.html``
served by ``examples/browser/serve.py`` from 127.0.0.1). The code run in Node.js is ``docs/export.md``'s JavaScript
example as written there, with only the package, the model folder and the load options substituted; the page runs
the same ``rank()``.

All packages come from the npm registry in one install (3.x and 4.x under npm aliases), kept in the pytest cache
(``--ignore-scripts``: the CPU binaries are in npm packages; the scripts would only download CUDA binaries and
libvips from GitHub). One small export (``checkpoint_dir``) serves every test. Where Node.js, the packages or
Chromium cannot be had, the tests skip with the reason, except under ``CI=true``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest
from transformers_js import (
    BROWSER_EXAMPLE,
    BROWSER_SCRIPT,
    CHROMIUM,
    NODE_MAJOR,
    PACKAGE_JSON,
    PACKAGES,
    RUNTIMES,
    card_code,
    documented_card_code,
    rank_function,
)

from jina_local_rerank import Reranker

ATOL = 1e-4
EMPTY_DOCUMENT_AS_NO_PAIR = {"hf-4.3.2"}

NODE_SCRIPT = """\
import {{ readFileSync }} from "node:fs";
{card}

const results = [];
for (const [query, documents] of JSON.parse(readFileSync(process.argv[2], "utf8"))) {{
  results.push(await rank(query, documents));
}}
console.log(JSON.stringify(results));
"""


def unavailable(reason: str) -> None:
    """Skip for ``reason``; under ``CI=true``, which must run it, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the transformers.js tests")
    pytest.skip(reason)


def npm_errors(output: str) -> str:
    lines = [line.removeprefix("npm error").strip() for line in output.splitlines() if line.startswith("npm error")]
    return "; ".join(line for line in lines[:3] if line) or output.strip()[-300:]


@pytest.fixture(scope="session")
def node_modules(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose node_modules holds every runtime and puppeteer-core: one npm install, kept in the pytest cache."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable(f"Node.js {NODE_MAJOR}+ and npm are needed on PATH to run transformers.js")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR:
        unavailable(f"Node.js {version} is too old for transformers.js 3+ (needs {NODE_MAJOR}+)")
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("transformers-js")) if cache is not None else tmp_path_factory.mktemp("transformers-js")
    key = re.sub(r"[^A-Za-z0-9.]+", "-", "+".join(PACKAGES))
    folder = root / key
    if not (folder / "node_modules" / ".package-lock.json").is_file():
        # Installed beside the cache entry and renamed into place, so an interrupted install is never reused.
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        (staging / "package.json").write_text(json.dumps(PACKAGE_JSON) + "\n")
        completed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", "--ignore-scripts", *PACKAGES],
            cwd=staging,
            capture_output=True,
            text=True,
            timeout=900,
        )
        if completed.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            unavailable(f"npm install {' '.join(PACKAGES)} failed: {npm_errors(completed.stderr)}")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


@pytest.fixture(scope="session")
def export(checkpoint_dir: Path, onnx_export) -> Path:
    return onnx_export(checkpoint_dir)


@pytest.fixture(scope="session")
def engine(checkpoint_dir: Path):
    return Reranker(checkpoint_dir, device="cpu", dtype="float32").engine


def js_rankings(engine) -> list[tuple[str, list[str]]]:
    """Short and empty documents, and one past the 8,192-token window (truncated by both tokenizers)."""
    words = "organic skincare sensitive skin aloe vera chamomile makeup trends colors techniques yoga".split()
    long_document = " ".join(words[i % len(words)] + str(i % 97) for i in range(6000))
    assert len(engine.tokenizer.tokenize([long_document])[0]) > 8192
    return [
        (
            "Organic skincare products for sensitive skin",
            [
                "Organic skincare for sensitive skin with aloe vera and chamomile.",
                "New makeup trends focus on bold colors and innovative techniques",
                "Bio-Hautpflege für empfindliche Haut mit Aloe Vera und Kamille",
                "针对敏感肌专门设计的天然有机护肤产品",
                "",
            ],
        ),
        ("yoga", ["Yoga mats made from recycled materials", long_document, "x"]),
    ]


def as_transformers_js_encodes(tokenizer, query: str, documents: list[str], runtime: str) -> list[list[int]]:
    """The token sequences ``runtime``'s tokenizer gives for (query, document) pairs: the engine's pair encoding,
    except that 4.x encodes an empty document as no pair (``<s> query </s>``, where the engine, 2.x, 3.x and
    transformers' batched tokenizer give ``<s> query </s></s></s>``)."""
    (query_ids,) = tokenizer.tokenize([query])
    pairs = tokenizer.encode_pairs([query], [(0, d) for d in documents], max_length=8192, max_query_length=8187)
    if runtime not in EMPTY_DOCUMENT_AS_NO_PAIR:
        return pairs.input_ids
    single = [tokenizer.cls_id, *query_ids, tokenizer.sep_id]
    return [single if document == "" else ids for document, ids in zip(documents, pairs.input_ids)]


def sigmoid(logits: list[float]) -> list[float]:
    return [1 / (1 + math.exp(-logit)) for logit in logits]


def run_node(node_modules: Path, runtime: str, export: Path, options: str, queries: list, tmp_path: Path) -> list:
    package = RUNTIMES[runtime][0]
    script = node_modules / f"rank-{runtime}.mjs"  # beside node_modules, where Node.js resolves the packages
    code = card_code(package, export.parent, export.name, options)
    script.write_text(NODE_SCRIPT.format(card=code), encoding="utf-8")
    rankings_file = tmp_path / "rankings.json"
    rankings_file.write_text(json.dumps(queries), encoding="utf-8")
    completed = subprocess.run(["node", str(script), str(rankings_file)], capture_output=True, text=True, timeout=600)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


def assert_engine_scores(engine, runtime: str, queries: list, results: list) -> None:
    """Each ranking in the engine's order, every sigmoid score within ``ATOL`` of the engine's."""
    assert len(results) == len(queries)
    for (query, documents), ranked in zip(queries, results):
        sequences = as_transformers_js_encodes(engine.tokenizer, query, documents, runtime)
        expected = sigmoid(engine.logits(sequences, 1 << 20))
        assert sorted(r["corpus_id"] for r in ranked) == list(range(len(documents)))
        assert [r["corpus_id"] for r in ranked] == sorted(range(len(documents)), key=lambda i: -expected[i])
        error = max(abs(r["score"] - expected[r["corpus_id"]]) for r in ranked)
        assert error < ATOL, f"{query[:40]!r}: max |score error| {error:.2e}"


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_card_code_in_node_gives_the_engines_scores(runtime, node_modules, export, engine, tmp_path):
    """fp32 (``model.onnx``): the engine's order and sigmoid scores within 1e-4, a 20k-token document included."""
    queries = js_rankings(engine)
    results = run_node(node_modules, runtime, export, RUNTIMES[runtime][2], queries, tmp_path)
    assert_engine_scores(engine, runtime, queries, results)


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_card_code_in_node_loads_the_int8_graph(runtime, node_modules, export, engine, tmp_path):
    """int8 (``{ quantized: true }`` in 2.x, ``dtype: 'q8'`` later) runs ``model_quantized.onnx``: its scores are
    closer to onnxruntime's for that file in Python than to the fp32 graph's (short rankings only)."""
    queries = int8_queries(engine)
    rankings = run_node(node_modules, runtime, export, RUNTIMES[runtime][3], queries, tmp_path)
    assert_int8_graph_scores(export, runtime, queries, rankings)


def int8_queries(engine) -> list[tuple[str, list[str]]]:
    """The rankings the int8 checks score (short documents only)."""
    return [(query, documents) for query, documents in js_rankings(engine) if query != "yoga"]


def assert_int8_graph_scores(export: Path, runtime: str, queries: list, rankings: list) -> None:
    """``rankings`` (what the card's ``rank()`` returned for ``queries``) come from ``model_quantized.onnx``: closer
    to onnxruntime's scores for that file in Python than to the fp32 graph's."""
    from jina_local_rerank.export import OnnxReranker

    int8, fp32 = OnnxReranker(export, "model_quantized.onnx"), OnnxReranker(export)
    int8_error, fp32_change = 0.0, 0.0
    for (query, documents), ranked in zip(queries, rankings, strict=True):
        sequences = as_transformers_js_encodes(int8.tokenizer, query, documents, runtime)
        quantized, unquantized = (sigmoid(scorer.sequence_logits(sequences)) for scorer in (int8, fp32))
        int8_error = max(int8_error, *(abs(r["score"] - quantized[r["corpus_id"]]) for r in ranked))
        fp32_change = max(fp32_change, *(abs(r["score"] - unquantized[r["corpus_id"]]) for r in ranked))
    # Not to 1e-4: onnxruntime's int8 kernels round differently from release to release and with its graph fusions.
    assert fp32_change > 10 * ATOL
    assert int8_error < fp32_change / 3


def test_browser_page_runs_the_documented_rank_function():
    """``examples/browser/index.html`` holds the card's ``rank()`` exactly as ``docs/export.md`` shows it."""
    page = (BROWSER_EXAMPLE / "index.html").read_text(encoding="utf-8")
    assert rank_function(page) == rank_function(documented_card_code())


@pytest.fixture(scope="session")
def chromium() -> str:
    if not os.access(CHROMIUM, os.X_OK):
        unavailable(f"no {CHROMIUM} (Debian: apt-get install chromium) to run transformers.js in a browser")
    return CHROMIUM


def run_browser(
    example: Path, package: Path, export: Path, queries: list, node_modules: Path, chromium: str, tmp_path: Path
) -> dict:
    """``example``'s serve.py serving its page with ``export`` and ``package``, driven in headless Chromium: the
    page's example results, ``rank()`` on ``queries``, the .onnx files it fetched and any 4xx/5xx paths."""
    server = subprocess.Popen(
        [
            sys.executable,
            str(example / "serve.py"),
            "--model",
            str(export),
            "--transformers",
            str(package),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        assert url.startswith("http://127.0.0.1:"), server.stderr.read()
        driver = node_modules / "drive-browser.mjs"
        driver.write_text(BROWSER_SCRIPT, encoding="utf-8")
        rankings_file = tmp_path / "rankings.json"
        rankings_file.write_text(json.dumps(queries), encoding="utf-8")
        profile = tmp_path / "chromium-profile"
        completed = subprocess.run(
            ["node", str(driver), url, str(rankings_file), str(profile), chromium],
            capture_output=True,
            text=True,
            timeout=600,
        )
    finally:
        server.terminate()
        server.wait(timeout=10)
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.mark.slow
@pytest.mark.parametrize("runtime", RUNTIMES)
def test_browser_example_gives_the_engines_scores(runtime, node_modules, chromium, export, engine, tmp_path):
    """The browser example, served by its one command, in headless Chromium: it loads ``model.onnx`` (fp32) and
    nothing from outside 127.0.0.1, shows the example's ranking, and ``rank()`` gives the engine's scores."""
    package = node_modules / "node_modules" / RUNTIMES[runtime][0]
    queries = js_rankings(engine)
    outcome = run_browser(BROWSER_EXAMPLE, package, export, queries, node_modules, chromium, tmp_path)
    assert outcome["models"] == ["/models/reranker/onnx/model.onnx"]
    assert outcome["missing"] == []
    assert len(outcome["example"]) == 3 and all(0 < r["score"] < 1 for r in outcome["example"])
    assert_engine_scores(engine, runtime, queries, outcome["results"])


@pytest.mark.slow
@pytest.mark.parametrize(
    ("runtime", "loads"),
    [("xenova-2.17.2", "model.onnx"), ("hf-3.8.1", "model_quantized.onnx"), ("hf-4.3.2", "model_quantized.onnx")],
)
def test_cards_quantized_false_is_fp32_in_browsers_only_before_3x(
    runtime, loads, node_modules, chromium, export, engine, tmp_path
):
    """The card's own ``{ quantized: false }`` (without ``dtype``, which docs/export.md says to add): 2.17 loads
    ``model.onnx`` and gives the engine's scores; 3.x and 4.x ignore the option and, in a browser, load
    ``model_quantized.onnx``, whose scores follow onnxruntime's int8 graph in Python."""
    example = tmp_path / "browser"
    shutil.copytree(BROWSER_EXAMPLE, example)
    page = (example / "index.html").read_text(encoding="utf-8")
    page, count = re.subn(r"\{ quantized: false, dtype: 'fp32' \}", "{ quantized: false }", page)
    assert count == 1
    (example / "index.html").write_text(page, encoding="utf-8")
    package = node_modules / "node_modules" / RUNTIMES[runtime][0]
    queries = int8_queries(engine)
    outcome = run_browser(example, package, export, queries, node_modules, chromium, tmp_path)
    assert outcome["models"] == [f"/models/reranker/onnx/{loads}"]
    if loads == "model.onnx":
        assert_engine_scores(engine, runtime, queries, outcome["results"])
    else:
        assert_int8_graph_scores(export, runtime, queries, outcome["results"])
