"""The exported folder's layout and the graph's interface: what transformers.js and onnxruntime callers look for.

``DIR/config.json`` and the tokenizer files beside ``DIR/onnx/model.onnx`` (and ``model_quantized.onnx``, the
file transformers.js loads for ``dtype: "q8"``) is the layout of the published models' repositories, which
transformers.js also reads from a local folder. A leaf module: no torch, no onnx.
"""

from __future__ import annotations

ONNX_FOLDER = "onnx"
MODEL_FILE = "model.onnx"
QUANTIZED_MODEL_FILE = "model_quantized.onnx"
# int64 [batch_size, sequence_length]; no token_type_ids: the model has one token type, and transformers.js and
# fastembed feed only the inputs a graph declares.
INPUT_NAMES = ("input_ids", "attention_mask")
OUTPUT_NAME = "logits"  # fp32 [batch_size, 1], raw (sigmoid gives the relevance score)
# The options an export reads; every other option decides how the engine scores, which a graph does not hold.
EXPORT_OPTIONS = ("model", "revision", "cache_dir", "token")
# How attention is laid out in the graph: in blocks of query rows inside a Loop (bounded memory), or all at once.
ATTENTION_LAYOUTS = ("blocked", "whole")
