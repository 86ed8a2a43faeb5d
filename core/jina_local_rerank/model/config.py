"""The JinaBERT configuration: the fields of a checkpoint's ``config.json`` the model reads, checked for the reranker
family (reading the file is :func:`~jina_local_rerank.checkpoint.files.read_config`)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from ..errors import CheckpointError, UnsupportedModelError

SUPPORTED_ARCHITECTURES = frozenset({"JinaBertModel", "JinaBertForSequenceClassification", "JinaBertForReranking"})
FAMILY_SETTINGS = {"position_embedding_type": "alibi", "feed_forward_type": "geglu"}
# The integer keys the model reads, with their defaults (None: required).
INTEGER_FIELDS: dict[str, int | None] = {
    "vocab_size": None,
    "hidden_size": None,
    "num_hidden_layers": None,
    "num_attention_heads": None,
    "intermediate_size": None,
    "type_vocab_size": 2,
    "max_position_embeddings": 8192,
}


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

    def layer_flops(self, length: int) -> float:
        """One layer's FLOPs per token of a ``length``-token sequence: q, k, v and output (4 h^2 multiply-adds), the
        GEGLU feed-forward (3 h i) and attention (2 h x ``length``: scores and context)."""
        h, i = self.hidden_size, self.intermediate_size
        return 2 * (4 * h * h + 3 * h * i) + 4 * h * length

    @classmethod
    def from_dict(cls, raw: dict[str, Any], source: str = "config.json") -> JinaBertConfig:
        """Check a parsed ``config.json`` (``source`` names it in errors) and keep the fields the model uses.

        Every key the model reads is checked for its type and range; a problem raises ``CheckpointError``
        (``UnsupportedModelError`` for another architecture) naming ``source`` and the key.
        """
        architectures = raw.get("architectures")
        if architectures is None:
            architectures = []
        if not isinstance(architectures, list) or not all(isinstance(name, str) for name in architectures):
            raise CheckpointError(
                f"{source}: architectures must be a list of strings, got {shown_value(architectures)}"
            )
        if not SUPPORTED_ARCHITECTURES.intersection(architectures):
            raise UnsupportedModelError(
                f"{source}: architectures {shown_value(architectures)} is not a JinaBERT model "
                f"(expected one of {sorted(SUPPORTED_ARCHITECTURES)})"
            )
        for key, expected in FAMILY_SETTINGS.items():
            if raw.get(key) != expected:
                raise UnsupportedModelError(
                    f"{source}: {key} is {shown_value(raw.get(key))}, but the Jina reranker v1 family uses {expected!r}"
                )
        id2label = raw.get("id2label")
        if id2label is not None:
            if not isinstance(id2label, dict):
                raise CheckpointError(f"{source}: id2label must be an object, got {shown_value(id2label)}")
            if len(id2label) != 1:
                raise UnsupportedModelError(
                    f"{source}: id2label has {len(id2label)} labels; a reranker has exactly one logit"
                )
        sizes = {key: _positive_integer(raw, key, default, source) for key, default in INTEGER_FIELDS.items()}
        if sizes["hidden_size"] % sizes["num_attention_heads"]:
            raise CheckpointError(
                f"{source}: hidden_size {sizes['hidden_size']} is not divisible by "
                f"num_attention_heads {sizes['num_attention_heads']}"
            )
        eps = raw.get("layer_norm_eps", 1e-12)
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not math.isfinite(eps) or eps <= 0:
            raise CheckpointError(f"{source}: layer_norm_eps must be a finite number > 0, got {shown_value(eps)}")
        return cls(**sizes, layer_norm_eps=float(eps))


def _positive_integer(raw: dict[str, Any], key: str, default: int | None, source: str) -> int:
    if key not in raw and default is None:
        raise CheckpointError(f"{source}: {key} is missing")
    value = raw.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise CheckpointError(f"{source}: {key} must be an integer >= 1, got {shown_value(value)}")
    return value


def shown_value(value: Any) -> str:
    """``value`` for an error message: the repr of a short scalar, else its JSON type (never a deep repr)."""
    if isinstance(value, str):
        return repr(value) if len(value) <= 80 else f"a string of {len(value)} characters"
    if value is None or isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, list) and len(value) <= 8 and all(isinstance(item, str) and len(item) <= 80 for item in value):
        return repr(value)
    return {dict: "an object", list: "a list"}.get(type(value), f"a {type(value).__name__}")
