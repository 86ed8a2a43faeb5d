"""The JinaBERT configuration, read from a checkpoint's ``config.json`` and checked for the reranker family."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from .errors import CheckpointError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = frozenset(
    {"JinaBertModel", "JinaBertForSequenceClassification", "JinaBertForReranking"}
)


@dataclass(frozen=True)
class JinaBertConfig:
    """Shape and numerics of a JinaBERT cross-encoder (see ``shared/spec/jinabert.md``)."""

    vocab_size: int
    hidden_size: int
    num_hidden_layers: int
    num_attention_heads: int
    intermediate_size: int
    type_vocab_size: int = 2
    layer_norm_eps: float = 1e-12
    max_position_embeddings: int = 8192

    @property
    def head_dim(self) -> int:
        """Width of one attention head: ``hidden_size // num_attention_heads``."""
        return self.hidden_size // self.num_attention_heads

    @classmethod
    def from_json_file(cls, path: Path) -> "JinaBertConfig":
        """Read ``config.json``; raise ``UnsupportedModelError`` if it is not a JinaBERT reranker."""
        try:
            raw = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise CheckpointError(f"{path}: config.json is missing from the checkpoint") from None
        except (OSError, ValueError) as exc:
            raise CheckpointError(f"{path}: cannot read config.json ({exc})") from None
        if not isinstance(raw, dict):
            raise CheckpointError(f"{path}: config.json must hold a JSON object")
        return cls.from_dict(raw, source=str(path))

    @classmethod
    def from_dict(cls, raw: dict, source: str = "config.json") -> "JinaBertConfig":
        """Check a parsed ``config.json`` (``source`` names it in errors) and keep the fields the model uses."""
        architectures = raw.get("architectures") or []
        if not SUPPORTED_ARCHITECTURES.intersection(architectures):
            raise UnsupportedModelError(
                f"{source}: architectures {architectures!r} is not a JinaBERT model "
                f"(expected one of {sorted(SUPPORTED_ARCHITECTURES)})"
            )
        expectations = {
            "position_embedding_type": "alibi",
            "feed_forward_type": "geglu",
        }
        for key, expected in expectations.items():
            if raw.get(key) != expected:
                raise UnsupportedModelError(
                    f"{source}: {key} is {raw.get(key)!r}, but the Jina reranker v1 family uses {expected!r}"
                )
        num_labels = len(raw["id2label"]) if isinstance(raw.get("id2label"), dict) else 1
        if num_labels != 1:
            raise UnsupportedModelError(
                f"{source}: id2label has {num_labels} labels; a reranker has exactly one logit"
            )
        fields = (
            "vocab_size",
            "hidden_size",
            "num_hidden_layers",
            "num_attention_heads",
            "intermediate_size",
        )
        missing = [key for key in fields if not isinstance(raw.get(key), int) or raw[key] < 1]
        if missing:
            raise CheckpointError(f"{source}: missing or invalid integer field(s) {missing}")
        if raw["hidden_size"] % raw["num_attention_heads"]:
            raise CheckpointError(
                f"{source}: hidden_size {raw['hidden_size']} is not divisible by "
                f"num_attention_heads {raw['num_attention_heads']}"
            )
        return cls(
            **{key: raw[key] for key in fields},
            type_vocab_size=int(raw.get("type_vocab_size", 2)),
            layer_norm_eps=float(raw.get("layer_norm_eps", 1e-12)),
            max_position_embeddings=int(raw.get("max_position_embeddings", 8192)),
        )
