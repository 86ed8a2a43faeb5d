"""Writing JinaBERT reranker checkpoints in the published on-disk format.

The published repositories hold ``config.json`` (the original implementation's keys, with its ``auto_map``),
``model.safetensors`` with every tensor in bf16 under the original names and ``{"format": "pt"}`` metadata, and
the RoBERTa tokenizer files. Folders written here have exactly that format, so they load in this engine, in the
original remote code, in TEI and in llama.cpp's converter. Tensor names and shapes come from
:func:`~jina_local_rerank.checkpoint.format.expected_shapes`, the one source the loader checks against.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch

from ..errors import CheckpointError
from ..files.user_files import atomic_directory
from ..model.config import JinaBertConfig
from .files import read_config
from .format import SAFETENSORS_FILE, TOKENIZER_FILES, expected_shapes

SAFETENSORS_METADATA = {"format": "pt"}
WEIGHTS_DTYPE = torch.bfloat16
# The published config's pointers at the original remote code (which this project never runs).
AUTO_MAP = {
    "AutoConfig": "configuration_bert.JinaBertConfig",
    "AutoModel": "modeling_bert.JinaBertModel",
    "AutoModelForMaskedLM": "modeling_bert.JinaBertForMaskedLM",
    "AutoModelForQuestionAnswering": "modeling_bert.JinaBertForQuestionAnswering",
    "AutoModelForSequenceClassification": "modeling_bert.JinaBertForSequenceClassification",
    "AutoModelForTokenClassification": "modeling_bert.JinaBertForTokenClassification",
}


def config_json(config: JinaBertConfig) -> dict[str, Any]:
    """The ``config.json`` of a new checkpoint of ``config``'s shape: the published file's keys and values."""
    return {
        "_name_or_path": "jinaai/jina-bert-implementation",
        "architectures": ["JinaBertModel"],
        "attention_probs_dropout_prob": 0.1,
        "attn_implementation": "torch",
        "auto_map": dict(AUTO_MAP),
        "classifier_dropout": None,
        "emb_pooler": "mean",
        "feed_forward_type": "geglu",
        "gradient_checkpointing": False,
        "hidden_act": "gelu",
        "hidden_dropout_prob": 0.1,
        "hidden_size": config.hidden_size,
        "initializer_range": 0.02,
        "intermediate_size": config.intermediate_size,
        "layer_norm_eps": config.layer_norm_eps,
        "max_position_embeddings": config.max_position_embeddings,
        "model_type": "bert",
        "num_attention_heads": config.num_attention_heads,
        "num_hidden_layers": config.num_hidden_layers,
        "pad_token_id": 0,
        "position_embedding_type": "alibi",
        "torch_dtype": "float16",
        "transformers_version": "4.30.2",
        "type_vocab_size": config.type_vocab_size,
        "use_cache": True,
        "vocab_size": config.vocab_size,
    }


def source_config(directory: Path) -> dict[str, Any]:
    """The raw ``config.json`` of the checkpoint in ``directory`` (checked to be a JinaBERT reranker's), every key
    kept, for writing a checkpoint derived from it in the same format."""
    path = directory / "config.json"
    read_config(path)  # the loader's checks and messages
    return json.loads(path.read_text(encoding="utf-8"))


def save_weights(path: Path, tensors: Mapping[str, torch.Tensor], config: JinaBertConfig) -> None:
    """Write ``tensors`` to ``path`` as bf16 safetensors, in ``expected_shapes`` order, after checking each one.

    Exactly the tensors a checkpoint of ``config`` holds, with their shapes and finite values; anything else is a
    ``CheckpointError`` (never a silently different format, nor weights that cannot score).
    """
    from safetensors.torch import save_file

    expected = expected_shapes(config)
    if set(tensors) != set(expected):
        extra, missing = sorted(set(tensors) - set(expected)), sorted(set(expected) - set(tensors))
        raise CheckpointError(f"{path}: tensors do not match the format (missing {missing}, unexpected {extra})")
    ready = {}
    for name, shape in expected.items():
        tensor = tensors[name]
        if tuple(tensor.shape) != shape:
            raise CheckpointError(f"{path}: tensor {name!r} has shape {list(tensor.shape)}, expected {list(shape)}")
        if tensor.is_floating_point() and not bool(torch.isfinite(tensor).all()):
            raise CheckpointError(
                f"{path}: tensor {name!r} holds NaN or infinite values; a checkpoint is never written with them"
            )
        ready[name] = tensor.detach().to(device="cpu", dtype=WEIGHTS_DTYPE).contiguous()
    save_file(ready, os.fspath(path), metadata=SAFETENSORS_METADATA)


def write_checkpoint(
    output: str | os.PathLike[str],
    raw_config: Mapping[str, Any],
    tensors: Mapping[str, torch.Tensor],
    tokenizer_from: Path,
    extra_files: Mapping[str, str] | None = None,
) -> Path:
    """Write a complete checkpoint folder to ``output`` through a temporary folder renamed on success.

    ``raw_config`` is written as ``config.json`` (keep the source checkpoint's keys), ``tensors`` as bf16
    ``model.safetensors``, the tokenizer files of ``tokenizer_from`` are copied byte for byte, and
    ``extra_files`` (name -> text, e.g. a ``README.md`` model card) are added. An existing ``output`` is replaced
    as a whole; the caller checks that it may be.
    """
    config = JinaBertConfig.from_dict(dict(raw_config), source=f"{output}/config.json")
    output = Path(output)
    with atomic_directory(output, "checkpoint folder") as folder:
        (folder / "config.json").write_text(json.dumps(dict(raw_config), indent=2) + "\n", encoding="utf-8")
        save_weights(folder / SAFETENSORS_FILE, tensors, config)
        for name in TOKENIZER_FILES:
            if (tokenizer_from / name).is_file():
                shutil.copyfile(tokenizer_from / name, folder / name)
        for name, text in (extra_files or {}).items():
            (folder / name).write_text(text, encoding="utf-8")
    return output
