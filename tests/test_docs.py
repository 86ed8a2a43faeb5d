"""The documentation site builds strictly, and what the docs and the README show matches the code.

``mkdocs build --strict`` fails on a broken link or anchor, a page missing from the nav and an API reference
entry that names something that no longer exists. The other tests read the code blocks of the README and every
page: Python blocks must parse and import only names our packages have, ``jina-local-rerank`` command lines must
be accepted by the real argument parser, and ``examples/`` files named must exist.
"""

from __future__ import annotations

import ast
import importlib
import importlib.util
import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

from jina_local_rerank.cli import build_parser

REPO_ROOT = Path(__file__).resolve().parents[1]
PAGES = [REPO_ROOT / "README.md", *sorted((REPO_ROOT / "docs").glob("*.md"))]
OUR_PACKAGES = (
    "jina_local_rerank",
    "llama_index.postprocessor.jina_local_rerank",
    "langchain_jina_local_rerank",
    "haystack_integrations.components.rankers.jina_local_rerank",
)
# A fenced block, possibly indented (inside a list item or a content tab): its language and its body.
FENCE = re.compile(r"^(?P<indent>[ \t]*)```(?P<lang>[\w+-]*)[^\n]*\n(?P<body>.*?)^(?P=indent)```[ \t]*$", re.M | re.S)


def code_blocks(page: Path, languages: set[str]) -> list[tuple[int, str]]:
    """``(line number, dedented code)`` of each fenced block of ``page`` in one of ``languages``."""
    text = page.read_text(encoding="utf-8")
    blocks = []
    for match in FENCE.finditer(text):
        if match["lang"] in languages:
            indent = len(match["indent"])
            body = "".join(line[indent:] for line in match["body"].splitlines(keepends=True))
            blocks.append((text.count("\n", 0, match.start()) + 1, body))
    return blocks


def where(page: Path, line: int) -> str:
    return f"{page.relative_to(REPO_ROOT)}:{line}"


def test_site_builds_strictly(tmp_path: Path):
    needed = ("mkdocs", "material", "mkdocstrings_handlers.python")
    missing = [name for name in needed if importlib.util.find_spec(name) is None]
    if missing:
        reason = f"{', '.join(missing)} not installed: pip install mkdocs-material 'mkdocstrings[python]'"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{reason}; CI must build the docs")
        pytest.skip(reason)
    site = tmp_path / "site"
    completed = subprocess.run(
        [
            sys.executable,
            "-m",
            "mkdocs",
            "build",
            "--strict",
            "--config-file",
            str(REPO_ROOT / "mkdocs.yml"),
            "--site-dir",
            str(site),
        ],
        capture_output=True,
        text=True,
        env={**os.environ, "NO_MKDOCS_2_WARNING": "1"},
        timeout=600,
    )
    assert completed.returncode == 0, completed.stderr[-6000:]
    api = (site / "api" / "index.html").read_text(encoding="utf-8")
    for anchor in (
        "jina_local_rerank.Reranker",
        "jina_local_rerank.ScoreResult",
        "llama_index.postprocessor.jina_local_rerank.JinaLocalRerank",
        "langchain_jina_local_rerank.JinaLocalRerank",
        "haystack_integrations.components.rankers.jina_local_rerank.JinaLocalRanker",
    ):
        assert f'id="{anchor}"' in api, f"the API reference lost {anchor}"
    assert ":class:`" not in api and ":meth:`" not in api  # Sphinx roles are rendered as code


def test_python_blocks_parse_and_import_only_what_our_packages_have():
    problems = []
    for page in PAGES:
        for line, code in code_blocks(page, {"python", "py"}):
            try:
                tree = ast.parse(code)
            except SyntaxError as exc:
                problems.append(f"{where(page, line + (exc.lineno or 0))}: not valid Python ({exc.msg})")
                continue
            for node in ast.walk(tree):
                if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith(OUR_PACKAGES):
                    module = importlib.import_module(node.module)
                    problems += [
                        f"{where(page, line + node.lineno)}: {node.module} has no {alias.name}"
                        for alias in node.names
                        if not hasattr(module, alias.name)
                        and importlib.util.find_spec(f"{node.module}.{alias.name}") is None
                    ]
                elif isinstance(node, ast.Import):
                    for alias in node.names:
                        if alias.name.startswith(OUR_PACKAGES) and importlib.util.find_spec(alias.name) is None:
                            problems.append(f"{where(page, line + node.lineno)}: no module {alias.name}")
    assert problems == []


def command_lines(code: str) -> list[str]:
    """Commands of a shell block: continuation lines joined, comments dropped, split at pipes, ``&&``, ``;``, ``&``."""
    joined = re.sub(r"\\\n\s*", " ", code)
    commands = []
    for line in joined.splitlines():
        line = re.sub(r"(^|\s)#.*$", "", line).strip()
        commands += [part.strip() for part in re.split(r"\|\||&&|\||;|&", line) if part.strip()]
    return commands


def test_documented_commands_are_accepted_by_the_cli():
    problems = []
    checked = 0
    for page in PAGES:
        for line, code in code_blocks(page, {"bash", "sh", "shell", "console"}):
            for command in command_lines(code):
                try:
                    words = shlex.split(command.removeprefix("$ "))
                except ValueError:
                    continue  # a command whose quotes span a pipe, not one of ours
                words = words[words.index("jina-local-rerank") :] if "jina-local-rerank" in words else words
                if words[:1] == ["jina-local-rerank"] and len(words) > 1 and words[1] not in ("-h", "--help"):
                    checked += 1
                    try:
                        build_parser().parse_args(words[1:])
                    except SystemExit:
                        problems.append(f"{where(page, line)}: the CLI rejects `{command}`")
                runs_a_file = words[:1] in (["python"], ["bash"]) and len(words) > 1
                in_repo = runs_a_file and words[1].startswith(("examples/", "scripts/"))
                if in_repo and not (REPO_ROOT / words[1]).is_file():
                    problems.append(f"{where(page, line)}: {words[1]} does not exist")
    assert problems == []
    assert checked > 0


def test_one_repository_url_everywhere_and_no_placeholder():
    """The docs site links the repository its pages' paths (examples/, scripts/) live in: mkdocs.yml's repo_url is
    pyproject.toml's Repository URL, and every page naming a repository URL names that one."""
    import tomllib

    url = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["urls"]["Repository"]
    assert re.search(rf"^repo_url: {re.escape(url)}$", (REPO_ROOT / "mkdocs.yml").read_text(encoding="utf-8"), re.M)
    named = set()
    for page in PAGES:
        text = page.read_text(encoding="utf-8")
        assert "OWNER" not in text, f"{page.name} holds a placeholder"
        named |= set(re.findall(r"https://github\.com/[\w.-]+/jina-local-rerank", text))
    assert named == {url}


def test_the_readme_langchain_snippet_imports_only_what_the_extra_installs():
    """Every module the README's Python blocks import from outside our packages is installed by the extras those
    snippets name (the LangChain snippet's langchain_classic comes with the langchain extra)."""
    import tomllib

    extras = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]
    langchain = {re.split(r"[<>=\[]", requirement)[0].replace("-", "_") for requirement in extras["langchain"]}
    for line, code in code_blocks(REPO_ROOT / "README.md", {"python"}):
        for node in ast.walk(ast.parse(code)):
            if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("langchain"):
                top = node.module.split(".")[0]
                assert top == "langchain_jina_local_rerank" or top in langchain, f"README.md:{line}: {top}"
