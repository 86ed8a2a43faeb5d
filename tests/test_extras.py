"""Optional features without their extra: one error type, one wording, the pip command that fits the installation.

A package is made absent in a fresh interpreter by a finder placed first on ``sys.meta_path`` that answers for it
as Python does for an uninstalled package: ``ModuleNotFoundError("No module named 'x'", name='x')``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from jina_local_rerank.errors import JinaLocalRerankError, MissingExtraError
from jina_local_rerank.install_hints import install_command, pip_command

REPO_ROOT = Path(__file__).resolve().parents[1]


def test_the_pip_command_fits_each_way_of_installing():
    checkout = Path("/src/jina-local-rerank")
    assert pip_command("eval", checkout, None) == 'pip install -e "/src/jina-local-rerank[eval]"'
    assert pip_command("eval", None, None) == 'pip install "jina-local-rerank[eval]"'
    wheel = {"url": "file:///tmp/dist/jina_local_rerank-0.1.0-py3-none-any.whl", "archive_info": {}}
    assert (
        pip_command("server", None, wheel) == 'pip install "/tmp/dist/jina_local_rerank-0.1.0-py3-none-any.whl[server]"'
    )
    git = {
        "url": "https://github.com/jina-local-rerank/jina-local-rerank",
        "vcs_info": {"vcs": "git", "commit_id": "a"},
    }
    assert pip_command("ray", None, git) == (
        'pip install "jina-local-rerank[ray] @ git+https://github.com/jina-local-rerank/jina-local-rerank"'
    )
    folder = {"url": "file:///home/me/jina%20local", "dir_info": {}}
    assert pip_command("export", None, folder) == 'pip install "/home/me/jina local[export]"'


def test_in_a_checkout_the_command_names_the_checkout():
    assert install_command("eval") == f'pip install -e "{REPO_ROOT}[eval]"'
    assert issubclass(MissingExtraError, JinaLocalRerankError) and issubclass(MissingExtraError, ModuleNotFoundError)


def without(modules: list[str], code: str) -> subprocess.CompletedProcess:
    """``code`` run in a fresh interpreter where ``modules`` are not installed."""
    block = (
        "class Absent:\n"
        "    @staticmethod\n"
        "    def find_spec(name, path=None, target=None):\n"
        f"        if name in {modules!r}:\n"
        "            raise ModuleNotFoundError(f'No module named {name!r}', name=name)\n"
        "sys.meta_path.insert(0, Absent)\n"
    )
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "CUDA_VISIBLE_DEVICES": ""}
    return subprocess.run(
        [sys.executable, "-c", f"import sys\n{block}{code}"], capture_output=True, text=True, env=env, timeout=300
    )


def cli_without(modules: list[str], *argv: str) -> subprocess.CompletedProcess:
    return without(modules, f"from jina_local_rerank.cli import main\nsys.exit(main({list(argv)!r}))")


def hint(extra: str) -> str:
    return f"install the '{extra}' extra: pip install -e \"{REPO_ROOT}[{extra}]\""


def test_every_command_without_its_extra_says_the_same_one_line_and_exits_1(tmp_path: Path, checkpoint_dir: Path):
    dataset = tmp_path / "beir"
    (dataset / "qrels").mkdir(parents=True)
    train = tmp_path / "train.jsonl"
    train.write_text(
        json.dumps({"query": "q", "positive": "p", "negatives": ["n"]})
        + "\n"
        + json.dumps({"query": "r", "positive": "s", "negatives": ["t"]})
        + "\n",
        encoding="utf-8",
    )
    cases = [
        (["bm25s"], ["eval", str(dataset)], "eval without --run (its BM25 first stage) needs bm25s", "eval"),
        (
            ["bm25s"],
            [
                "train",
                "--model",
                str(checkpoint_dir),
                "--device",
                "cpu",
                "--train",
                str(train),
                "--output",
                str(tmp_path / "out"),
                "--max-length",
                "32",
            ],
            "BM25 (the eval first stage and hard-negative mining) needs bm25s",
            "eval",
        ),
        (["uvicorn"], ["serve"], "serve needs uvicorn", "server"),
        (["onnx"], ["export", "onnx", "--output", str(tmp_path / "onnx")], "ONNX export needs onnx", "export"),
    ]
    for modules, argv, needs, extra in cases:
        completed = cli_without(modules, *argv)
        assert (completed.returncode, completed.stderr) == (1, f"jina-local-rerank: error: {needs}: {hint(extra)}\n"), (
            argv
        )
        assert completed.stdout == ""
    assert not (tmp_path / "out").exists() and not (tmp_path / "onnx").exists()


@pytest.mark.parametrize(
    ("module", "framework", "extra", "feature"),
    [
        ("langchain_jina_local_rerank", "langchain_core", "langchain", "the LangChain adapter"),
        ("llama_index.postprocessor.jina_local_rerank", "llama_index.core", "llama-index", "the LlamaIndex adapter"),
        ("haystack_integrations.components.rankers.jina_local_rerank", "haystack", "haystack", "the Haystack adapter"),
    ],
)
def test_an_adapter_without_its_framework_names_the_extra(module: str, framework: str, extra: str, feature: str):
    completed = without(
        [framework],
        f"""
from jina_local_rerank.errors import MissingExtraError
try:
    import {module}
except MissingExtraError as exc:
    print(exc)
""",
    )
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout == f"{feature} needs {framework}: {hint(extra)}\n"
