"""transformers.js runs an export: the model card's ``rank()`` flow in Node.js, scores equal to the engine's.

``@huggingface/transformers`` (with onnxruntime-node) is installed from the npm registry into the pytest cache
once per version (``ONNXRUNTIME_NODE_INSTALL=skip``: its CPU binaries are in the npm package; only the CUDA ones
would come from elsewhere). The ``rank()`` function the script runs is the one ``docs/export.md`` shows. Where
Node.js or the packages cannot be had, the test skips with the reason, except under ``CI=true``.
"""

from __future__ import annotations

import json
import math
import os
import re
import shutil
import subprocess
import tempfile
from pathlib import Path

import pytest

from jina_local_rerank import Reranker

REPO_ROOT = Path(__file__).resolve().parents[1]
TRANSFORMERS_JS = "4.3.2"
NODE_MAJOR = 20  # transformers.js 4 and its sharp dependency need Node.js 20 or later
ATOL = 1e-4
SCRIPT = """\
import {{ readFileSync }} from "node:fs";
import {{ env, AutoTokenizer, AutoModelForSequenceClassification }} from "@huggingface/transformers";

const [modelRoot, model_id, dtype, rankingsFile] = process.argv.slice(2);
env.allowRemoteModels = false;
env.localModelPath = modelRoot;
const tokenizer = await AutoTokenizer.from_pretrained(model_id);
const model = await AutoModelForSequenceClassification.from_pretrained(model_id, {{ dtype }});

{rank}

const results = [];
for (const [query, documents] of JSON.parse(readFileSync(rankingsFile, "utf8"))) {{
  results.push(await rank(query, documents));
}}
console.log(JSON.stringify(results));
"""


def unavailable(reason: str) -> None:
    """Skip for ``reason`` (no Node.js, or npm cannot install); under ``CI=true``, which must run it, fail."""
    if os.environ.get("CI") == "true":
        pytest.fail(f"{reason}; CI must run the transformers.js test")
    pytest.skip(reason)


def documented_rank_function() -> str:
    """The ``async function rank(...)`` of docs/export.md's JavaScript example, as written there."""
    text = (REPO_ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    match = re.search(r"^async function rank\(.*?^}$", text, re.M | re.S)
    assert match, "docs/export.md shows no rank() function"
    return match.group(0)


def npm_errors(output: str) -> str:
    lines = [line.removeprefix("npm error").strip() for line in output.splitlines() if line.startswith("npm error")]
    return "; ".join(line for line in lines[:3] if line) or output.strip()[-300:]


@pytest.fixture(scope="session")
def transformers_js(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder whose node_modules holds @huggingface/transformers, installed once and kept in the pytest cache."""
    node, npm = shutil.which("node"), shutil.which("npm")
    if node is None or npm is None:
        unavailable(f"Node.js {NODE_MAJOR}+ and npm are needed on PATH to run transformers.js")
    version = subprocess.run([node, "--version"], capture_output=True, text=True).stdout.strip()
    if int(version.lstrip("v").split(".")[0]) < NODE_MAJOR:
        unavailable(f"Node.js {version} is too old for transformers.js {TRANSFORMERS_JS} (needs {NODE_MAJOR}+)")
    cache = getattr(request.config, "cache", None)
    root = Path(cache.mkdir("transformers-js")) if cache is not None else tmp_path_factory.mktemp("transformers-js")
    folder = root / TRANSFORMERS_JS
    if not (folder / "node_modules" / "@huggingface" / "transformers" / "package.json").is_file():
        # Installed beside the cache entry and renamed into place, so an interrupted install is never reused.
        staging = Path(tempfile.mkdtemp(prefix=".partial-", dir=root))
        (staging / "package.json").write_text('{"private": true}\n')
        completed = subprocess.run(
            [npm, "install", "--no-audit", "--no-fund", f"@huggingface/transformers@{TRANSFORMERS_JS}"],
            cwd=staging,
            env={**os.environ, "ONNXRUNTIME_NODE_INSTALL": "skip"},
            capture_output=True,
            text=True,
            timeout=900,
        )
        if completed.returncode != 0:
            shutil.rmtree(staging, ignore_errors=True)
            unavailable(f"npm install @huggingface/transformers@{TRANSFORMERS_JS} failed: {npm_errors(completed.stderr)}")
        shutil.rmtree(folder, ignore_errors=True)
        staging.rename(folder)
    return folder


def rankings(golden: dict) -> list[tuple[str, list[str]]]:
    """Every golden case's pairs grouped by query: (query, documents) rankings, documents in case order."""
    grouped: dict[str, list[str]] = {}
    for case in golden["cases"]:
        for query, document in case["pairs"]:
            if document is not None:
                grouped.setdefault(query, []).append(document)
    return list(grouped.items())


def run_rank(transformers_js: Path, export: Path, dtype: str, queries: list, tmp_path: Path) -> list[list[dict]]:
    script = transformers_js / "rank.mjs"  # beside node_modules, where Node.js resolves the package
    script.write_text(SCRIPT.format(rank=documented_rank_function()), encoding="utf-8")
    rankings_file = tmp_path / "rankings.json"
    rankings_file.write_text(json.dumps(queries), encoding="utf-8")
    completed = subprocess.run(
        ["node", str(script), f"{export.parent}/", export.name, dtype, str(rankings_file)],
        capture_output=True, text=True, timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(completed.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def golden(parity_dir: Path) -> dict:
    return json.loads((parity_dir / "golden.json").read_text())


def as_transformers_js_encodes(tokenizer, query: str, documents: list[str]) -> list[list[int]]:
    """The token sequences transformers.js's tokenizer gives for (query, document) pairs: the engine's pair encoding,
    except that an empty document counts as no pair (``<s> query </s>``, where the engine and transformers' batched
    tokenizer give ``<s> query </s></s></s>``)."""
    (query_ids,) = tokenizer.tokenize([query])
    pairs = tokenizer.encode_pairs([query], [(0, d) for d in documents], max_length=8192, max_query_length=8187)
    single = [tokenizer.cls_id, *query_ids, tokenizer.sep_id]
    return [single if document == "" else ids for document, ids in zip(documents, pairs.input_ids)]


def sigmoid(logits: list[float]) -> list[float]:
    return [1 / (1 + math.exp(-logit)) for logit in logits]


@pytest.mark.slow
def test_transformers_js_rank_gives_the_engines_scores(transformers_js, parity_dir, golden, onnx_export, tmp_path):
    """fp32 (``model.onnx``): every golden ranking, the engine's order and sigmoid scores within 1e-4."""
    export = onnx_export(parity_dir / "tiny")
    queries = rankings(golden)
    engine = Reranker(parity_dir / "tiny", device="cpu", dtype="float32").engine
    results = run_rank(transformers_js, export, "fp32", queries, tmp_path)
    assert len(results) == len(queries)
    for (query, documents), ranked in zip(queries, results):
        expected = engine.logits(as_transformers_js_encodes(engine.tokenizer, query, documents), 1 << 20)
        assert [r["corpus_id"] for r in ranked] == sorted(range(len(documents)), key=lambda i: -expected[i])
        error = max(abs(r["score"] - sigmoid(expected)[r["corpus_id"]]) for r in ranked)
        assert error < ATOL, f"{query[:40]!r}: max |score error| {error:.2e}"


@pytest.mark.slow
def test_transformers_js_q8_loads_the_int8_graph(transformers_js, parity_dir, golden, onnx_export, tmp_path):
    """``dtype: "q8"`` runs ``model_quantized.onnx``: its scores are those onnxruntime gives for that file in Python,
    far closer to them than to the fp32 graph's (the short rankings: the long ones are the fp32 test's)."""
    from jina_local_rerank.export import OnnxReranker

    export = onnx_export(parity_dir / "tiny")
    queries = [(query, documents) for query, documents in rankings(golden) if len(" ".join(documents)) < 4000]
    int8, fp32 = OnnxReranker(export, "model_quantized.onnx"), OnnxReranker(export)
    int8_error, fp32_change = 0.0, 0.0
    for (query, documents), ranked in zip(queries, run_rank(transformers_js, export, "q8", queries, tmp_path)):
        sequences = as_transformers_js_encodes(int8.tokenizer, query, documents)
        quantized, unquantized = (sigmoid(scorer.sequence_logits(sequences)) for scorer in (int8, fp32))
        int8_error = max(int8_error, *(abs(r["score"] - quantized[r["corpus_id"]]) for r in ranked))
        fp32_change = max(fp32_change, *(abs(r["score"] - unquantized[r["corpus_id"]]) for r in ranked))
    # Not to 1e-4: onnxruntime's int8 kernels round differently from release to release and with its graph
    # fusions (onnxruntime-node 1.30 here, 1.32 in Python: 0.012 apart in score, against 0.08 from fp32).
    assert fp32_change > 10 * ATOL
    assert int8_error < fp32_change / 3
