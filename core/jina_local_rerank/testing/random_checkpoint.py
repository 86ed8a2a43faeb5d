"""Writing random-weight JinaBERT checkpoints in the real on-disk format, for tests, examples and benchmarks.

The folder gets ``config.json`` (the real file's keys), bf16 ``model.safetensors`` and RoBERTa-style byte-level
BPE tokenizer files trained on Python's own documentation, so nothing comes from the network. Scores from such
a checkpoint are meaningless; its shapes, numerics and files are those of the real models.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch

from ..checkpoint.format import SAFETENSORS_FILE, expected_shapes
from ..checkpoint.writer import config_json, save_weights
from ..model.config import JinaBertConfig

SPECIAL_TOKENS = ["<s>", "<pad>", "</s>", "<unk>", "<mask>"]


@dataclass(frozen=True)
class CheckpointShape:
    """Model shape of a random checkpoint; ``vocab_size`` None means the tokenizer's size rounded up to 64."""

    num_hidden_layers: int = 2
    hidden_size: int = 64
    num_attention_heads: int = 4
    intermediate_size: int = 128
    vocab_size: int | None = None
    max_position_embeddings: int = 8192


TINY_SHAPE = CheckpointShape(4, 384, 12, 1536, vocab_size=61056)
TURBO_SHAPE = CheckpointShape(6, 384, 12, 1536, vocab_size=61056)


def _training_corpus() -> list[str]:
    from pydoc_data.topics import topics

    return list(topics.values())


def write_tokenizer(directory: Path, vocab_size: int = 2000) -> int:
    """Train a byte-level BPE tokenizer and write the RoBERTa file set; returns the vocabulary size."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors, trainers

    tokenizer = Tokenizer(models.BPE())
    tokenizer.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size,
        special_tokens=SPECIAL_TOKENS,
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(_training_corpus(), trainer=trainer)
    tokenizer.post_processor = processors.RobertaProcessing(
        ("</s>", tokenizer.token_to_id("</s>")), ("<s>", tokenizer.token_to_id("<s>")), add_prefix_space=False
    )
    tokenizer.save(str(directory / "tokenizer.json"))
    tokenizer.model.save(str(directory))  # vocab.json and merges.txt
    special_tokens = {
        "bos_token": "<s>",
        "cls_token": "<s>",
        "eos_token": "</s>",
        "mask_token": "<mask>",
        "pad_token": "<pad>",
        "sep_token": "</s>",
        "unk_token": "<unk>",
    }
    (directory / "special_tokens_map.json").write_text(json.dumps(special_tokens, indent=2))
    tokenizer_config = {
        "tokenizer_class": "RobertaTokenizer",
        "model_max_length": 8192,
        "add_prefix_space": False,
        **special_tokens,
    }
    (directory / "tokenizer_config.json").write_text(json.dumps(tokenizer_config, indent=2))
    return tokenizer.get_vocab_size()


def write_random_checkpoint(
    directory: str | Path, shape: CheckpointShape = CheckpointShape(), *, seed: int = 0, tokenizer_vocab: int = 2000
) -> Path:
    """Write a random-weight JinaBERT reranker checkpoint to ``directory`` (created if needed) and return it.

    Weights are drawn with a fixed ``seed`` at scales that make every component move the logit, then stored as
    bf16 like the published checkpoints.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    real_vocab = write_tokenizer(directory, tokenizer_vocab)
    vocab_size = shape.vocab_size or -(-real_vocab // 64) * 64
    config = JinaBertConfig(
        vocab_size=vocab_size,
        hidden_size=shape.hidden_size,
        num_hidden_layers=shape.num_hidden_layers,
        num_attention_heads=shape.num_attention_heads,
        intermediate_size=shape.intermediate_size,
        max_position_embeddings=shape.max_position_embeddings,
    )
    (directory / "config.json").write_text(json.dumps(config_json(config), indent=2))
    generator = torch.Generator().manual_seed(seed)
    tensors = {}
    for key, tensor_shape in expected_shapes(config).items():
        noise = torch.randn(tensor_shape, generator=generator)
        if "LayerNorm" in key or "layernorm" in key:
            tensor = 1 + 0.1 * noise if key.endswith("weight") else 0.1 * noise
        elif "embeddings" in key:
            tensor = 0.2 * noise
        elif key.endswith("bias"):
            tensor = 0.1 * noise
        else:
            gain = 1.2 if ".query." in key or ".key." in key else 1.0
            tensor = gain * noise / tensor_shape[1] ** 0.5
        tensors[key] = tensor
    save_weights(directory / SAFETENSORS_FILE, tensors, config)
    return directory
