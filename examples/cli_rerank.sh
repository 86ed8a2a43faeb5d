#!/usr/bin/env bash
# The command line end to end: documents as arguments, a JSON request file, and JSON lines on standard input.
#
#   bash examples/cli_rerank.sh --model /path/to/jina-reranker-v1-tiny-en
#
# Without --model the model is $JINA_LOCAL_RERANK_MODEL, else jinaai/jina-reranker-v1-tiny-en from the Hugging
# Face Hub. Needs `jina-local-rerank` on the PATH (activate the virtual environment first). Prints a "# ..."
# title line before each of the three calls, then the call's JSON response (the second call shows its request
# file first).
set -euo pipefail

model_args=()
if [[ $# -eq 2 && $1 == --model ]]; then
  model_args=(--model "$2")
elif [[ $# -ne 0 ]]; then
  echo "usage: $0 [--model PATH_OR_HUB_ID]" >&2
  exit 2
fi

query="Organic skincare products for sensitive skin"
workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT

echo "# 1. documents as arguments"
jina-local-rerank rerank "${model_args[@]}" --no-progress --query "$query" \
  "Organic cotton baby clothes for sensitive skin" \
  "Natural organic skincare range for sensitive skin" \
  "Yoga mats made from recycled materials"

echo "# 2. a request file in the Jina API's shape; the best 2, by index only"
cat >"$workdir/request.json" <<'JSON'
{"query": "Organic skincare products for sensitive skin", "documents": ["Eco-friendly kitchenware for modern homes", {"text": "Sensitive skin-friendly facial cleansers and toners"}, "All-natural pet food for dogs with allergies"]}
JSON
cat "$workdir/request.json"
jina-local-rerank rerank "${model_args[@]}" --no-progress --input "$workdir/request.json" --top-n 2 --no-documents

echo "# 3. JSON lines on standard input; raw logits instead of 0..1 scores"
printf '%s\n' \
  '{"text": "Organic food wraps and storage solutions"}' \
  '"Tech gadgets for smart homes: 2024 edition"' \
  '{"text": "Biodegradable cleaning supplies for eco-conscious consumers"}' |
  jina-local-rerank rerank "${model_args[@]}" --no-progress --query "$query" --raw
