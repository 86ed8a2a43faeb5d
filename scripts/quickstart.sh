#!/usr/bin/env bash
# Set up .venv (torch 2.13.0 + jina-local-rerank with every extra) and rerank the seed example.
# The model is $JINA_LOCAL_RERANK_MODEL (a local directory or Hub id), else jinaai/jina-reranker-v1-tiny-en.
# torch comes from the default index (on Linux PyPI's is the CUDA build) or from $TORCH_INDEX_URL, e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU build.
# What the run needs (Python 3.10+, the package index, the model) is checked first, before minutes of installing;
# each step says what it does, and pip shows its progress.
set -euo pipefail
cd "$(dirname "$0")/.."
step() { printf '\n==> %s\n' "$*" >&2; }
fail() { printf 'quickstart: %s\n' "$*" >&2; exit 1; }

step "1/4 checking Python, the package index and the model"
python3 -c 'import sys; sys.exit(sys.version_info < (3, 10))' || fail "needs Python 3.10 or later; python3 is $(python3 -V 2>&1)"
index="${PIP_INDEX_URL:-https://pypi.org/simple}"
reachable() { python3 -c 'import sys, urllib.request; urllib.request.urlopen(sys.argv[1], timeout=15)' "$1" 2>/dev/null; }
reachable "${index%/}/pip/" || fail "cannot reach the package index ${index} (set PIP_INDEX_URL to a reachable one)"
if [[ -n "${TORCH_INDEX_URL:-}" ]]; then
  reachable "${TORCH_INDEX_URL%/}/torch/" || fail "cannot reach TORCH_INDEX_URL ${TORCH_INDEX_URL}"
fi
model="${JINA_LOCAL_RERANK_MODEL:-jinaai/jina-reranker-v1-tiny-en}"
if [[ -d "$model" ]]; then
  echo "model: the local checkpoint $model" >&2
else
  cache="${HF_HUB_CACHE:-${HF_HOME:-$HOME/.cache/huggingface}/hub}/models--${model//\//--}"
  if [[ -d "$cache/snapshots" ]]; then
    echo "model: $model, in the Hugging Face cache" >&2
  elif reachable "https://huggingface.co/api/models/$model"; then
    echo "model: $model, downloaded from the Hugging Face Hub on first use (about 66 MB for tiny)" >&2
  else
    fail "the model $model is not in the Hugging Face cache ($cache) and huggingface.co cannot be reached: set \
JINA_LOCAL_RERANK_MODEL=/path/to/checkpoint (see docs/offline.md)"
  fi
fi

step "2/4 creating .venv and upgrading pip"
python3 -m venv .venv
.venv/bin/python -m pip install --upgrade pip
step "3/4 installing torch 2.13.0${TORCH_INDEX_URL:+ from $TORCH_INDEX_URL} (the largest download), then the package with every extra"
.venv/bin/python -m pip install torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -e ".[all,dev]"
step "4/4 reranking the example with $model"
.venv/bin/jina-local-rerank rerank --pretty --top-n 3 --progress \
  --query "Organic skincare products for sensitive skin" \
  "Eco-friendly kitchenware for modern homes" \
  "Biodegradable cleaning supplies for eco-conscious consumers" \
  "Organic cotton baby clothes for sensitive skin" \
  "Natural organic skincare range for sensitive skin" \
  "Tech gadgets for smart homes: 2024 edition" \
  "Sustainable gardening tools and compost solutions" \
  "Sensitive skin-friendly facial cleansers and toners" \
  "Organic food wraps and storage solutions" \
  "All-natural pet food for dogs with allergies" \
  "Yoga mats made from recycled materials"
