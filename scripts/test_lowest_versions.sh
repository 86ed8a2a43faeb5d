#!/usr/bin/env bash
# Run the adapter tests against the lowest framework versions pyproject.toml declares.
# Builds .venv-lowest afresh: torch 2.13.0, then the package with its llama-index, langchain and haystack extras,
# each requirement pinned to its ">=" bound in pyproject.toml (pins generated from it, so a bound lives in one
# place); checks that the three adapters import with the extras alone; then adds the adapter tests' packages from
# the dev extra, pinned alike, and runs the three adapter test files and those frameworks' examples. Packages
# pyproject.toml does not name resolve to their newest compatible release. Needs Python 3.11+ (tomllib).
# Extra arguments go to pytest. TORCH_INDEX_URL picks the torch build, as in scripts/quickstart.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv-lowest
EXTRAS=(llama-index langchain haystack)
TEST_PACKAGES=(pytest pytest-asyncio llama-index-postprocessor-jinaai-rerank)

python3 -m venv --clear "$VENV"
"$VENV/bin/python" -m pip install -q --upgrade pip
"$VENV/bin/python" -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}

# One "name==lower bound" line per requirement of the extras above and of the dev extra.
"$VENV/bin/python" - "${EXTRAS[@]}" dev >"$VENV/constraints.txt" <<'EOF'
import re
import sys
import tomllib

with open("pyproject.toml", "rb") as file:
    extras = tomllib.load(file)["project"]["optional-dependencies"]
for extra in sys.argv[1:]:
    for requirement in extras[extra]:
        # A lower bound is pinned; a pin (the linter, whose output must not change under CI) is kept.
        match = re.fullmatch(r"([A-Za-z0-9_.-]+)(\[[^\]]*\])?(?:>=|==)([^,;\s]+)", requirement.replace(" ", ""))
        if match is None:
            sys.exit(f"pyproject.toml: extra {extra!r}: {requirement!r} has no plain '>=' lower bound or '==' pin")
        print(f"{match[1]}=={match[3]}")
EOF
install() { "$VENV/bin/python" -m pip install -q -c "$VENV/constraints.txt" "$@"; }

install -e ".[$(IFS=,; echo "${EXTRAS[*]}")]"
"$VENV/bin/python" -c "
import haystack_integrations.components.rankers.jina_local_rerank
import langchain_jina_local_rerank
import llama_index.postprocessor.jina_local_rerank
"
install "${TEST_PACKAGES[@]}"
"$VENV/bin/python" -m pip check
echo "lowest versions under test:"
"$VENV/bin/python" -m pip list --format=freeze 2>/dev/null | grep -iFf <(cut -d= -f1 "$VENV/constraints.txt" | sed 's/$/==/')

examples=tests/test_examples.py::test_example_runs_and_prints_the_engines_ranking
"$VENV/bin/python" -m pytest -q -p no:cacheprovider "$@" \
  tests/test_llama_index.py tests/test_langchain.py tests/test_haystack.py \
  "$examples[llama_index_query_engine.py]" "$examples[langchain_retriever.py]" "$examples[haystack_pipeline.py]"
