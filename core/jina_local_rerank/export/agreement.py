"""int8 against fp32 in onnxruntime: how the export's quantized graph ranks compared with its fp32 graph."""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

from ..errors import FileProblem
from ..evaluation.agreement import RankingAgreement, ranking_agreement
from .layout import MODEL_FILE, ONNX_FOLDER, QUANTIZED_MODEL_FILE
from .runtime import OnnxReranker


def int8_agreement(
    directory: str | os.PathLike[str],
    rankings: Sequence[tuple[str, Sequence[str]]],
    *,
    threads: int | None = None,
) -> RankingAgreement:
    """How ``directory/onnx/model_quantized.onnx`` ranks each (query, documents) of ``rankings`` compared with
    ``model.onnx`` of the same export (onnxruntime, CPU)."""
    missing = [
        file for file in (MODEL_FILE, QUANTIZED_MODEL_FILE) if not (Path(directory) / ONNX_FOLDER / file).is_file()
    ]
    if missing:
        raise FileProblem(f"{Path(directory) / ONNX_FOLDER}: no {missing[0]} (export with quantize='int8')")
    # One session at a time: each keeps the memory of its largest call.
    logits = [
        [scorer.logits(query, documents) for query, documents in rankings]
        for scorer in (OnnxReranker(directory, file, threads=threads) for file in (MODEL_FILE, QUANTIZED_MODEL_FILE))
    ]
    return ranking_agreement(*logits)
