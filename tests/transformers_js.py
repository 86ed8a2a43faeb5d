"""Running the model card's transformers.js code: the runtimes, their npm install, the documented code, and the
headless-Chromium driver, shared by ``tests/test_export_js.py`` and ``benchmarks/export_runtimes.py``."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import NamedTuple

REPO_ROOT = Path(__file__).resolve().parents[1]
BROWSER_EXAMPLE = REPO_ROOT / "examples" / "browser"
CHROMIUM = "/usr/bin/chromium"
NODE_MAJOR = 20  # transformers.js 3+ and its sharp dependency need Node.js 20 or later


class JsRuntime(NamedTuple):
    """One transformers.js release in the shared install."""

    package: str  # the import name in the shared install
    spec: str  # the npm spec that installs it (3.x and 4.x under npm aliases)
    fp32: str  # the load options of model.onnx
    int8: str  # the load options of model_quantized.onnx

    @property
    def label(self) -> str:
        """The package and its version, as a reader knows it (``@huggingface/transformers 3.8.1``)."""
        name, version = self.spec.split("npm:")[-1].rsplit("@", 1)
        return f"{name} {version}"


RUNTIMES = {
    "xenova-2.17.2": JsRuntime(
        "@xenova/transformers", "@xenova/transformers@2.17.2", "{ quantized: false }", "{ quantized: true }"
    ),
    "hf-3.8.1": JsRuntime(
        "transformers3", "transformers3@npm:@huggingface/transformers@3.8.1", "{ dtype: 'fp32' }", "{ dtype: 'q8' }"
    ),
    "hf-4.3.2": JsRuntime(
        "transformers4", "transformers4@npm:@huggingface/transformers@4.3.2", "{ dtype: 'fp32' }", "{ dtype: 'q8' }"
    ),
}
PACKAGES = [runtime.spec for runtime in RUNTIMES.values()] + ["puppeteer-core@24.43.1"]
# 2.17 pins sharp 0.32, whose install script downloads libvips from GitHub; 0.33 ships it in npm packages.
PACKAGE_JSON = {"private": True, "overrides": {"@xenova/transformers": {"sharp": "0.33.5"}}}

# Drives the browser example's page in headless Chromium: argv is the page's URL, a JSON file of [query,
# documents] rankings, a profile folder and the Chromium binary; prints {results, example, models, missing,
# loadSeconds, seconds} as one JSON line.
BROWSER_SCRIPT = """\
import { readFileSync } from "node:fs";
import puppeteer from "puppeteer-core";

const [url, rankingsFile, userDataDir, executablePath] = process.argv.slice(2);
const browser = await puppeteer.launch({
  executablePath,
  headless: true,
  userDataDir,
  protocolTimeout: 1800000,  // rank() on long documents takes minutes in WebAssembly (puppeteer's default: 180 s)
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--no-first-run", "--disable-sync"],
});
try {
  const page = await browser.newPage();
  const errors = [], models = [], missing = [];
  page.on("pageerror", (error) => errors.push(String(error)));
  page.on("requestfailed", (request) => errors.push(`request failed: ${request.url()}`));
  page.on("request", (request) => {
    if (request.url().endsWith(".onnx")) models.push(new URL(request.url()).pathname);
  });
  page.on("response", (response) => {
    if (response.status() >= 400) missing.push(new URL(response.url()).pathname);
  });
  await page.goto(url);
  const started = Date.now();
  while (!(await page.evaluate(() => typeof window.rank === "function")) && errors.length === 0) {
    if (Date.now() - started > 300000) throw new Error("the page did not define rank() within 300 s");
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  if (errors.length) throw new Error(`the page failed: ${errors.join("; ")}`);
  const loadSeconds = (Date.now() - started) / 1000;  // the model, the tokenizer and the page's example call
  const rankings = JSON.parse(readFileSync(rankingsFile, "utf8"));
  const results = await page.evaluate(async (rankings) => {
    const out = [];
    for (const [query, documents] of rankings) out.push(await window.rank(query, documents));
    return out;
  }, rankings);
  const seconds = (Date.now() - started) / 1000 - loadSeconds;
  const example = JSON.parse(await page.$eval("#results", (element) => element.textContent));
  console.log(JSON.stringify({ results, example, models, missing, loadSeconds, seconds }));
} finally {
  await browser.close();
}
"""


def documented_card_code() -> str:
    """``docs/export.md``'s JavaScript example (the model card's code with the local-model settings)."""
    text = (REPO_ROOT / "docs" / "export.md").read_text(encoding="utf-8")
    blocks = [block for block in re.findall(r"^```js\n(.*?)^```$", text, re.M | re.S) if "async function rank" in block]
    assert len(blocks) == 1, "docs/export.md shows no single JavaScript rank() example"
    return blocks[0]


def rank_function(code: str) -> str:
    """The ``async function rank(...) {...}`` of ``code``."""
    match = re.search(r"^async function rank\(.*?^}$", code, re.M | re.S)
    assert match, "no rank() function"
    return match.group(0)


def card_code(package: str, model_root: Path, model_id: str, options: str) -> str:
    """The documented example up to its ``rank()`` for ``package``, the exported folder and the load options."""
    code = documented_card_code()
    code = code[: code.index("// Example usage:")]
    substitutions = [
        (r"from '@xenova/transformers';", f"from '{package}';"),
        (r"env\.localModelPath = '[^']*';", f"env.localModelPath = {json.dumps(str(model_root) + '/')};"),
        (r"const model_id = '[^']*';", f"const model_id = {json.dumps(model_id)};"),
        (r"\{ quantized: false \}", options),
    ]
    for pattern, replacement in substitutions:
        # A function, so that the replacement is taken literally (no backslash escapes or group references).
        code, count = re.subn(pattern, lambda _, text=replacement: text, code)
        assert count == 1, f"docs/export.md's example has no single {pattern!r}"
    return code
