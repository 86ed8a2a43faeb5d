#!/usr/bin/env bash
# Set up .venv (torch 2.13.0 + jina-local-rerank with every extra) and rerank the seed example.
# The model is $JINA_LOCAL_RERANK_MODEL (a local directory or Hub id), else jinaai/jina-reranker-v1-tiny-en.
# torch comes from the default index (on Linux PyPI's is the CUDA build) or from $TORCH_INDEX_URL, e.g.
# TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu for the CPU build.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip
.venv/bin/python -m pip install -q torch==2.13.0 ${TORCH_INDEX_URL:+--index-url "$TORCH_INDEX_URL"}
.venv/bin/python -m pip install -q -e ".[all,dev]"
.venv/bin/jina-local-rerank rerank --pretty --top-n 3 \
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
