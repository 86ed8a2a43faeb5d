"""The published checkpoint format: its file names, every tensor's name and shape, and the check of a weights file.

``expected_shapes`` is the one source the loader and the checkpoint writer share.
"""

from __future__ import annotations

import re
from pathlib import Path

from ..errors import CheckpointError
from ..model.config import JinaBertConfig

SAFETENSORS_FILE = "model.safetensors"
PYTORCH_BIN_FILE = "pytorch_model.bin"
TOKENIZER_FILES = (
    "tokenizer.json",
    "tokenizer_config.json",
    "special_tokens_map.json",
    "vocab.json",
    "merges.txt",
)
# Tensor dtypes a checkpoint may store, as safetensors names them and as torch does.
SAFETENSORS_FLOAT_DTYPES = {"F16": "float16", "BF16": "bfloat16", "F32": "float32", "F64": "float64"}
FLOAT_DTYPES = frozenset(SAFETENSORS_FLOAT_DTYPES.values())
_LAYER_NAME = re.compile(r"bert\.encoder\.layer\.(\d{1,9})\.")

# What a weights file holds, read before its data: tensor name -> (shape, dtype name).
Header = dict[str, tuple[tuple[int, ...], str]]


def expected_shapes(config: JinaBertConfig) -> dict[str, tuple[int, ...]]:
    """Every tensor a checkpoint of ``config`` holds, by name, with its shape."""
    h, i = config.hidden_size, config.intermediate_size
    shapes: dict[str, tuple[int, ...]] = {
        "bert.embeddings.word_embeddings.weight": (config.vocab_size, h),
        "bert.embeddings.token_type_embeddings.weight": (config.type_vocab_size, h),
        "bert.embeddings.LayerNorm.weight": (h,),
        "bert.embeddings.LayerNorm.bias": (h,),
        "bert.pooler.dense.weight": (h, h),
        "bert.pooler.dense.bias": (h,),
        "classifier.weight": (1, h),
        "classifier.bias": (1,),
    }
    for n in range(config.num_hidden_layers):
        p = f"bert.encoder.layer.{n}."
        for name in ("query", "key", "value"):
            shapes[f"{p}attention.self.{name}.weight"] = (h, h)
            shapes[f"{p}attention.self.{name}.bias"] = (h,)
        shapes[f"{p}attention.output.dense.weight"] = (h, h)
        shapes[f"{p}attention.output.dense.bias"] = (h,)
        shapes[f"{p}attention.output.LayerNorm.weight"] = (h,)
        shapes[f"{p}attention.output.LayerNorm.bias"] = (h,)
        shapes[f"{p}mlp.gated_layers.weight"] = (2 * i, h)
        shapes[f"{p}mlp.wo.weight"] = (h, i)
        shapes[f"{p}mlp.wo.bias"] = (h,)
        shapes[f"{p}mlp.layernorm.weight"] = (h,)
        shapes[f"{p}mlp.layernorm.bias"] = (h,)
    return shapes


def check_tensors(path: Path, config: JinaBertConfig, config_path: Path, header: Header) -> None:
    """Raise ``CheckpointError`` unless ``header`` (of the weights file ``path``) holds exactly the tensors of
    ``config`` (read from ``config_path``), with their shapes and floating-point dtypes."""
    # Layers first: expected_shapes() grows with num_hidden_layers, which must not exceed what the file holds.
    layers = {int(match[1]) for name in header if (match := _LAYER_NAME.match(name))}
    if len(layers) != config.num_hidden_layers:
        raise CheckpointError(
            f"{config_path}: num_hidden_layers is {config.num_hidden_layers}, but {path} holds "
            f"{len(layers)} layers (bert.encoder.layer.N)"
        )
    expected = expected_shapes(config)
    missing = [key for key in expected if key not in header]
    if missing:
        more = f" and {len(missing) - 1} more" if len(missing) > 1 else ""
        raise CheckpointError(f"{path}: missing tensor {missing[0]!r}{more}")
    unexpected = sorted(set(header) - set(expected))
    if unexpected:
        more = f" and {len(unexpected) - 1} more" if len(unexpected) > 1 else ""
        raise CheckpointError(f"{path}: unexpected tensor {unexpected[0]!r}{more} (not part of a JinaBERT reranker)")
    for key, shape in expected.items():
        stored_shape, dtype = header[key]
        if stored_shape != shape:
            raise CheckpointError(
                f"{path}: tensor {key!r} has shape {list(stored_shape)}, config.json implies {list(shape)}"
            )
        if dtype not in FLOAT_DTYPES:
            raise CheckpointError(
                f"{path}: tensor {key!r} has dtype {dtype}, expected one of {', '.join(sorted(FLOAT_DTYPES))}"
            )
