"""Scoring an exported folder with onnxruntime from Python (no torch): the engine's tokenization, padded batches.

Used to check and measure exports against the engine (tests, ``benchmarks/export_onnx.py``, the int8 agreement);
it is also the shortest way to run an export where torch is not installed.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..checkpoint.files import read_config
from ..engine.batching import pack_batches
from ..engine.tokenization import PairTokenizer
from ..install_hints import extra_imports
from ..options import DEFAULT_MAX_QUERY_LENGTH
from .layout import MODEL_FILE, ONNX_FOLDER

# Padded tokens per onnxruntime call: its attention's work grows with rows x longest^2, so long documents go one at
# a time.
DEFAULT_MAX_BATCH_TOKENS = 8192


class OnnxReranker:
    """Raw logits for (query, document) pairs from ``directory/onnx/<file>`` (``model.onnx`` or
    ``model_quantized.onnx``), tokenized as the engine tokenizes (queries capped at 512 tokens, the pair at the
    model's window), right-padded, longest first, in calls of at most ``max_batch_tokens`` padded tokens."""

    def __init__(
        self,
        directory: str | os.PathLike[str],
        file: str = MODEL_FILE,
        *,
        threads: int | None = None,
        max_batch_tokens: int = DEFAULT_MAX_BATCH_TOKENS,
    ) -> None:
        with extra_imports("scoring an ONNX export", "export"):
            import onnxruntime

        self.directory = Path(directory)
        config = read_config(self.directory / "config.json")
        self.tokenizer = PairTokenizer.from_directory(self.directory, config.vocab_size)
        self.max_length = config.max_position_embeddings
        self.max_batch_tokens = max_batch_tokens
        settings = onnxruntime.SessionOptions()
        if threads is not None:
            settings.intra_op_num_threads = threads
        # Idle threads sleep rather than spin between calls: spinning takes the cores from whatever runs next
        # (tokenization, the engine, the rest of the application).
        settings.add_session_config_entry("session.intra_op.allow_spinning", "0")
        # Memory patterns are planned per input shape, and nearly every call has a new one: they only accumulate
        # (W2 of benchmarks/export_onnx.py: 13 GB peak with them, 6 GB without, at the same speed).
        settings.enable_mem_pattern = False
        self.session = onnxruntime.InferenceSession(
            str(self.directory / ONNX_FOLDER / file), settings, providers=["CPUExecutionProvider"]
        )

    def sequence_logits(self, sequences: Sequence[Sequence[int]]) -> list[float]:
        """Raw logits of token sequences (special tokens included), in input order."""
        import numpy as np

        logits = [0.0] * len(sequences)
        for batch in pack_batches([len(s) for s in sequences], self.max_batch_tokens):
            longest = len(sequences[batch[0]])
            input_ids = np.full((len(batch), longest), self.tokenizer.pad_id, dtype=np.int64)
            attention_mask = np.zeros((len(batch), longest), dtype=np.int64)
            for row, index in enumerate(batch):
                input_ids[row, : len(sequences[index])] = sequences[index]
                attention_mask[row, : len(sequences[index])] = 1
            (output,) = self.session.run(None, {"input_ids": input_ids, "attention_mask": attention_mask})
            for row, index in enumerate(batch):
                logits[index] = float(output[row, 0])
        return logits

    def logits(self, query: str, documents: Sequence[str]) -> list[float]:
        """Raw logits of ``query`` against each document, in input order."""
        encoded = self.tokenizer.encode_pairs(
            [query],
            [(0, document) for document in documents],
            max_length=self.max_length,
            max_query_length=min(DEFAULT_MAX_QUERY_LENGTH, self.max_length // 2),  # the engine's default
        )
        return self.sequence_logits(encoded.input_ids)
