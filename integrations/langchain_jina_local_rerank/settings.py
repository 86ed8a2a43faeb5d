"""Engine settings shared by the LangChain compressor and cross-encoder, and the :class:`Reranker` they build."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, model_validator

from jina_local_rerank import Reranker
from jina_local_rerank.reranker import DEFAULT_MAX_BATCH_TOKENS

# Strict so that True or "3" is refused instead of silently becoming a count.
PositiveCount = Annotated[int, Field(strict=True, ge=1)]


class RerankerSettings(BaseModel):
    """Which model to load and how to score with it; lengths are in tokens (see :class:`Reranker`)."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    model: str | Path | None = None
    """Hub id or local directory; None: ``$JINA_LOCAL_RERANK_MODEL``, else ``jinaai/jina-reranker-v1-tiny-en``."""
    revision: str | None = None
    """Hub revision (branch, tag or commit) of ``model``."""
    device: str = "auto"
    """``"auto"`` (cuda, then mps, then cpu), ``"cpu"``, ``"cuda"``, ``"cuda:N"`` or ``"mps"``."""
    dtype: str = "auto"
    """``"auto"`` (bf16/fp16 on CUDA, fp32 elsewhere), ``"float32"``, ``"bfloat16"`` or ``"float16"``."""
    max_length: PositiveCount | None = None
    """Pair window in tokens; None: the model's (8192)."""
    max_query_length: PositiveCount | None = None
    """Query cap in tokens; None: ``min(512, max_length // 2)``."""
    max_batch_tokens: PositiveCount = DEFAULT_MAX_BATCH_TOKENS
    """Padded tokens per forward pass (bounds memory)."""
    long_document: Literal["truncate", "chunk"] = "truncate"
    """What to do with a document longer than the window: cut it, or score it as overlapping windows."""
    chunk_stride: PositiveCount | None = None
    """Tokens between chunk windows; None: half a window."""
    chunk_aggregation: Literal["max", "mean_top2"] = "max"
    """How chunk logits combine into one: the best, or the mean of the best two."""
    raw_scores: bool = False
    """Report raw logits instead of sigmoid probabilities in 0..1."""

    _reranker: Reranker | None = PrivateAttr(default=None)

    @model_validator(mode="after")
    def _forget_reranker(self) -> RerankerSettings:
        # Runs on construction and on every assignment: the next call rebuilds the Reranker from current settings.
        self._reranker = None
        return self

    @property
    def reranker(self) -> Reranker:
        """The :class:`Reranker` for these settings, built on first use on the process-wide shared engine."""
        if self._reranker is None:
            self._reranker = Reranker(
                self.model,
                revision=self.revision,
                device=self.device,
                dtype=self.dtype,
                max_length=self.max_length,
                max_query_length=self.max_query_length,
                max_batch_tokens=self.max_batch_tokens,
                long_document=self.long_document,
                chunk_stride=self.chunk_stride,
                chunk_aggregation=self.chunk_aggregation,
            )
        return self._reranker
