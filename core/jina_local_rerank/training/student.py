"""A smaller student initialised from its teacher by layer selection, as the Jina reranker v1 models were made.

The student keeps the teacher's embeddings, pooler and classifier and a subset of its encoder layers (by default
evenly spaced with the first and the last kept: the first reads the embeddings, the last feeds the pooler), so it
starts close to the teacher instead of from noise. Its folder is a checkpoint in the teacher's format with
``num_hidden_layers`` changed.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path

import torch

from ..checkpoint.hub import resolve_model_dir
from ..checkpoint.loading import load_checkpoint
from ..checkpoint.writer import source_config, write_checkpoint

_LAYER_KEY = re.compile(r"^bert\.encoder\.layer\.(\d+)\.(.+)$")


def default_layers(teacher_layers: int, student_layers: int) -> list[int]:
    """Evenly spaced teacher layers, first and last included: 12 -> 4 keeps 0, 4, 7, 11; 6 -> 4 keeps 0, 2, 3, 5."""
    if not 1 <= student_layers <= teacher_layers:
        raise ValueError(f"a student needs 1 to {teacher_layers} layers (the teacher's), got {student_layers}")
    if student_layers == 1:
        return [0]
    return [round(i * (teacher_layers - 1) / (student_layers - 1)) for i in range(student_layers)]


def check_layers(layers: Sequence[int], teacher_layers: int) -> list[int]:
    """``layers`` if they are distinct teacher layer indices in increasing order, else ``ValueError``."""
    layers = list(layers)
    if not layers or any(isinstance(i, bool) or not isinstance(i, int) for i in layers):
        raise ValueError(f"layers must be a non-empty list of layer indices, got {layers!r}")
    if any(not 0 <= i < teacher_layers for i in layers):
        raise ValueError(f"layers must lie in 0..{teacher_layers - 1} (the teacher has {teacher_layers}), got {layers}")
    if layers != sorted(set(layers)):
        raise ValueError(f"layers must be distinct and increasing, got {layers}")
    return layers


def build_student(
    teacher: str | os.PathLike[str],
    output: str | os.PathLike[str],
    *,
    num_layers: int | None = None,
    layers: Sequence[int] | None = None,
) -> Path:
    """Write a student checkpoint to ``output``: the teacher with only ``layers`` (default: ``num_layers`` evenly
    spaced, see :func:`default_layers`) of its encoder layers. Returns ``output``."""
    directory = resolve_model_dir(teacher)
    raw_config = source_config(directory)
    teacher_layers = raw_config["num_hidden_layers"]
    if layers is None:
        if num_layers is None:
            raise ValueError("give the student's num_layers or the teacher layers to keep")
        layers = default_layers(teacher_layers, num_layers)
    layers = check_layers(layers, teacher_layers)
    if num_layers is not None and num_layers != len(layers):
        raise ValueError(f"num_layers {num_layers} does not match the {len(layers)} layers {layers}")
    state = load_checkpoint(directory, torch.float32, torch.device("cpu")).state_dict()
    renumber = {old: new for new, old in enumerate(layers)}
    tensors = {}
    for name, tensor in state.items():
        match = _LAYER_KEY.match(name)
        if match is None:
            tensors[name] = tensor
        elif int(match[1]) in renumber:
            tensors[f"bert.encoder.layer.{renumber[int(match[1])]}.{match[2]}"] = tensor
    config = {**raw_config, "num_hidden_layers": len(layers)}
    return write_checkpoint(output, config, tensors, directory)
