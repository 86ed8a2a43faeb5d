"""The export in every runtime the model card's JavaScript reaches: score difference from the engine, load time, peak
memory; and the graph's memory on one 8,192-token pair and on the card's 10-document call with a 20,000-token one.

    python benchmarks/export_runtimes.py --node-modules .pytest_cache/d/transformers-js/<install>

``--node-modules``: a folder whose ``node_modules`` holds ``@xenova/transformers`` 2.17, ``transformers3`` and
``transformers4`` (npm aliases of ``@huggingface/transformers`` 3.x, 4.x) and ``puppeteer-core``, as
``tests/test_export_js.py`` installs them. A random checkpoint of the full tiny shape is exported once (fp32, int8).

Workloads: "10 docs" is the card's example query with 10 product descriptions; "8k pair" one pair of 8,192 tokens;
"20k call" the card's single call on 10 documents, one of 20,000 tokens (truncated to 8,192, padded batch
[10, 8192]). Each runtime runs in a fresh process (Python: onnxruntime; Node.js: the card's code; browser: the
browser example in headless Chromium): load time (model + tokenizer; in Chromium also the page's own example call),
the workload's call time, the largest |score - engine score| (sigmoid), and the process's peak memory (VmHWM; in
the browser the sum over Chromium's processes at the end, as a bound).
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(Path(__file__).parent), str(REPO_ROOT / "tests")]
import workloads  # noqa: E402
from transformers_js import BROWSER_SCRIPT, CHROMIUM, RUNTIMES, card_code  # noqa: E402

from jina_local_rerank import Reranker  # noqa: E402
from jina_local_rerank.export import export_onnx  # noqa: E402
from jina_local_rerank.testing.random_checkpoint import TINY_SHAPE, write_random_checkpoint  # noqa: E402

PYTHON_PROCESS = """
import json, sys, time
import numpy as np
from jina_local_rerank.export import OnnxReranker
folder, file, rankings = sys.argv[1], sys.argv[2], json.loads(open(sys.argv[3]).read())
start = time.perf_counter()
scorer = OnnxReranker(folder, file, max_batch_tokens=1 << 30)  # one call per ranking, as the card's code
load = time.perf_counter() - start
start = time.perf_counter()
scores = [[1 / (1 + np.exp(-x)) for x in scorer.logits(query, documents)] for query, documents in rankings]
seconds = time.perf_counter() - start
peak = next(int(line.split()[1]) for line in open("/proc/self/status") if line.startswith("VmHWM")) / 1024
print(json.dumps({"load": load, "seconds": seconds, "scores": scores, "peak_mb": peak}))
"""

NODE_PROCESS = r"""
import { readFileSync } from "node:fs";
const peakMb = () => Number(readFileSync("/proc/self/status", "utf8").match(/VmHWM:\s+(\d+)/)[1]) / 1024;
const started = performance.now();
CARD
const load = (performance.now() - started) / 1000;
const scoring = performance.now();
const scores = [];
for (const [query, documents] of JSON.parse(readFileSync(process.argv[2], "utf8"))) {
  const ranked = await rank(query, documents);
  scores.push(documents.map((_, i) => ranked.find((r) => r.corpus_id === i).score));
}
const seconds = (performance.now() - scoring) / 1000;
console.log(JSON.stringify({ load, seconds, scores, peak_mb: peakMb() }));
"""


def peak_of_tree(pid: int) -> float:
    """The sum of VmHWM (MB) over ``pid`` and its descendants."""
    children = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout.split()
    try:
        own = next(int(line.split()[1]) for line in open(f"/proc/{pid}/status") if line.startswith("VmHWM")) / 1024
    except (OSError, StopIteration):
        own = 0.0
    return own + sum(peak_of_tree(int(child)) for child in children)


def sigmoid(x: float) -> float:
    return 1 / (1 + math.exp(-x))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--node-modules", type=Path, required=True)
    parser.add_argument("--where", default="python,node,browser", help="which of python, node, browser to run")
    parser.add_argument("--workloads", default="10 docs,8k pair,20k call")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="jlr-export-runtimes-") as directory:
        workdir = Path(directory)
        checkpoint = write_random_checkpoint(workdir / "tiny", TINY_SHAPE, tokenizer_vocab=8000)
        export = export_onnx(checkpoint, workdir / "models" / "tiny", quantize="int8").directory
        engine = Reranker(checkpoint, device="cpu", dtype="float32")
        tokenizer = engine.engine.tokenizer
        words = " ".join(workloads.passages(400, 300, 360, seed=5))
        tokens_per_word = len(tokenizer.tokenize([words])[0]) / len(words.split())

        def document(tokens: int) -> str:
            return " ".join(words.split()[: int(tokens / tokens_per_word)])

        query = workloads.SEED_QUERY
        rankings = {
            "10 docs": (query, list(workloads.SEED_DOCUMENTS)),
            "8k pair": (query, [document(8200)]),
            "20k call": (query, [*workloads.SEED_DOCUMENTS[:9], document(20000)]),
        }
        selected = [name for name in args.workloads.split(",") if name]
        expected = {name: [sigmoid(x) for x in engine.score(*rankings[name], raw=True).logits] for name in selected}
        size_mb = export.joinpath("onnx/model.onnx").stat().st_size >> 20
        print(f"model: full tiny shape, random weights; onnx/model.onnx {size_mb} MB")
        print(
            "\n| runtime | where | dtype | workload | max abs score diff vs engine fp32 | load s | call s | peak MB |"
        )
        print("|---|---|---|---|---:|---:|---:|---:|")

        def report(runtime: str, where: str, dtype: str, name: str, result: dict) -> None:
            diff = max(abs(a - b) for a, b in zip(result["scores"][0], expected[name]))
            print(
                f"| {runtime} | {where} | {dtype} | {name} | {diff:.1e} | {result['load']:.2f} | "
                f"{result['seconds']:.2f} | {result['peak_mb']:,.0f} |",
                flush=True,
            )

        for name in selected:
            file = workdir / f"{name}.json"
            file.write_text(json.dumps([rankings[name]]))
            for dtype, model_file in (("fp32", "model.onnx"), ("int8", "model_quantized.onnx")):
                if "python" not in args.where or (name == "20k call" and dtype == "int8"):
                    continue
                out = subprocess.run(
                    [sys.executable, "-c", PYTHON_PROCESS, str(export), model_file, str(file)],
                    capture_output=True,
                    text=True,
                )
                if out.returncode:
                    print(
                        f"| onnxruntime (Python) | - | {dtype} | {name} | failed: {out.stderr.strip()[-200:]} | | | |"
                    )
                    continue
                report("onnxruntime 1.32 (Python)", "-", dtype, name, json.loads(out.stdout))
            for js in RUNTIMES.values():
                runtime, package = js.label, js.package
                for dtype, options in (("fp32", js.fp32), ("q8", js.int8)):
                    if "node" not in args.where or (name != "10 docs" and dtype == "q8"):
                        continue
                    script = args.node_modules / "bench-runtime.mjs"
                    code = card_code(package, export.parent, export.name, options)
                    script.write_text(NODE_PROCESS.replace("CARD", code))
                    out = subprocess.run(["node", str(script), str(file)], capture_output=True, text=True)
                    if out.returncode:
                        error = out.stderr.strip().splitlines()[-1][:200] if out.stderr.strip() else out.returncode
                        print(f"| {runtime} | Node.js | {dtype} | {name} | failed: {error} | | | |")
                        continue
                    report(runtime, "Node.js", dtype, name, json.loads(out.stdout.strip().splitlines()[-1]))
                if "browser" in args.where:
                    browser(args, runtime, package, export, file, name, report)


def browser(args, runtime, package, export, file, name, report) -> None:  # noqa: ANN001
    """The browser example with ``package`` in headless Chromium, as tests/test_export_js.py drives it."""
    server = subprocess.Popen(
        [
            sys.executable,
            str(REPO_ROOT / "examples/browser/serve.py"),
            "--model",
            str(export),
            "--transformers",
            str(args.node_modules / "node_modules" / package),
            "--port",
            "0",
        ],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        url = server.stdout.readline().strip()
        driver = args.node_modules / "bench-browser.mjs"
        driver.write_text(BROWSER_SCRIPT)
        with tempfile.TemporaryDirectory() as profile:
            process = subprocess.Popen(
                ["node", str(driver), url, str(file), profile, CHROMIUM],
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                text=True,
            )
            peak = 0.0
            while process.poll() is None:
                peak = max(peak, peak_of_tree(process.pid))
                time.sleep(0.5)
            stdout, stderr = process.communicate()
        if process.returncode:
            error = next((line for line in stderr.splitlines() if "Error" in line), stderr.strip()[-200:])
            print(f"| {runtime} | Chromium | fp32 | {name} | failed: {error[:300]} | | | |", flush=True)
            return
        outcome = json.loads(stdout.strip().splitlines()[-1])
        ranked = outcome["results"][0]
        scores = [next(r["score"] for r in ranked if r["corpus_id"] == i) for i in range(len(ranked))]
        report(
            runtime,
            "Chromium",
            "fp32",
            name,
            {"scores": [scores], "load": outcome["loadSeconds"], "seconds": outcome["seconds"], "peak_mb": peak},
        )
    finally:
        server.terminate()
        server.wait()


if __name__ == "__main__":
    main()
