"""Export a checkpoint to ONNX in the folder layout transformers.js and onnxruntime callers load.

``DIR/config.json`` and the tokenizer files are copied (``tokenizer.json`` with its BPE merges as ``"a b"``
strings, which every transformers.js release reads: :mod:`~jina_local_rerank.export.tokenizer_file`);
``DIR/onnx/model.onnx`` takes ``input_ids`` and ``attention_mask`` (int64 ``[batch_size, sequence_length]``, any
size, up to the model's 8,192-token window) and returns fp32 ``logits [batch_size, 1]``; with ``quantize="int8"``,
``DIR/onnx/model_quantized.onnx`` is the same graph with onnxruntime's dynamic int8 quantization (what
transformers.js loads for ``dtype: "q8"``).

The graph is traced from the project's own model (:mod:`~jina_local_rerank.export.padded_batch`) with
``torch.export`` and written by torch's ONNX exporter; the ALiBi bias is computed from the attention mask inside
the graph, per block of query rows (:mod:`~jina_local_rerank.export.blocked_attention`), so no table of the
8,192-token window is stored and no ``[batch, heads, length, length]`` tensor is ever held. The folder is written
beside its destination and renamed into place only when complete.
"""

from __future__ import annotations

import contextlib
import logging
import shutil
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import torch

from ..checkpoint.format import TOKENIZER_FILES
from ..checkpoint.loading import load_checkpoint
from ..errors import CheckpointError
from ..files.user_files import atomic_directory, check_output_folder
from ..install_hints import extra_imports
from ..model.jinabert import JinaBertForReranking
from ..options import RerankerOptions, logit_options
from ..validation import check_choice
from .blocked_attention import expand_attention, translation_table
from .layout import ATTENTION_LAYOUTS, INPUT_NAMES, MODEL_FILE, ONNX_FOLDER, OUTPUT_NAME, QUANTIZED_MODEL_FILE
from .padded_batch import PaddedBatchReranker
from .tokenizer_file import write_portable_tokenizer

if TYPE_CHECKING:
    import os

    import onnx

QUANTIZATIONS = ("int8",)
# The oldest onnxruntime transformers.js loads graphs with (onnxruntime-web/node 1.14, in @xenova/transformers 2.17)
# reads IR version 8 and opset 18 at most; the graph uses nothing newer, so it is written with those.
OPSET = 18
IR_VERSION = 8


@dataclass(frozen=True)
class OnnxExport:
    """What :func:`export_onnx` wrote: the folder, its graphs, and every file in it."""

    directory: Path
    model: Path
    quantized_model: Path | None
    files: tuple[Path, ...]


def _export_options(options_or_model: RerankerOptions | str | os.PathLike[str]) -> RerankerOptions:
    """The options to export with; a scoring option set away from its default is a ``ValueError`` naming it."""
    options = options_or_model if isinstance(options_or_model, RerankerOptions) else RerankerOptions(options_or_model)
    defaults = RerankerOptions()
    if options.dtype not in ("auto", "float32"):
        raise ValueError(
            f"dtype {options.dtype!r}: the exported graph is float32; quantize='int8' (--quantize int8) adds "
            f"the int8 graph"
        )
    if options.device not in ("auto", "cpu"):
        raise ValueError(
            f"device {options.device!r}: export runs on the CPU (the graph runs wherever onnxruntime does)"
        )
    # The graph holds the checkpoint and nothing of how the engine scores: every option that changes the logits
    # (but the dtype, checked above) must keep its default.
    changed = [
        name
        for name, value in logit_options(options, checkpoint_name=False).items()
        if name != "dtype" and value != getattr(defaults, name)
    ]
    if changed:
        raise ValueError(
            f"{', '.join(changed)}: scoring options do not apply to an export (the graph scores the tokens it is "
            f"given, up to the model's window; apply such limits when tokenizing)"
        )
    return options


def _linear_as_matmul(input, weight, bias=None):  # type: ignore[no-untyped-def]
    """``aten.linear`` as ``MatMul(x, W^T) (+ b)`` rather than the exporter's ``Gemm`` for 2-D inputs: onnxruntime's
    dynamic quantization rewrites ``MatMul`` with a constant weight and leaves ``Gemm`` in fp32."""
    from onnxscript import opset18 as op

    product = op.MatMul(input, op.Transpose(weight, perm=[1, 0]))
    return product if bias is None else op.Add(product, bias)


@contextlib.contextmanager
def _quiet_exporters() -> Iterator[None]:
    """Silence the exporters' progress lines, warnings and log records (the caller reports what happened)."""
    names = ("torch.onnx", "torch.export", "torch._dynamo", "torch.__trace", "onnxscript", "root")
    loggers = [logging.getLogger(None if name == "root" else name) for name in names]
    levels = [logger.level for logger in loggers]
    try:
        for logger in loggers:
            logger.setLevel(logging.ERROR)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        for logger, level in zip(loggers, levels):
            logger.setLevel(level)


def onnx_graph(model: JinaBertForReranking, opset: int = OPSET, attention: str = "blocked") -> onnx.ModelProto:
    """``model`` (fp32, CPU) as an ONNX graph over padded batches, batch and sequence axes dynamic; ``attention``
    as :func:`~jina_local_rerank.export.blocked_attention.expand_attention` lays it out."""
    import onnxscript.optimizer

    graph = PaddedBatchReranker(model).eval()
    # Example inputs of at least 2 on each axis (export specializes sizes 0 and 1), with padding in one row.
    input_ids = torch.tensor([[0, 5, 6, 2, 2, 7, 2, 1], [0, 9, 2, 2, 8, 8, 8, 2]])
    attention_mask = torch.tensor([[1, 1, 1, 1, 1, 1, 1, 0], [1, 1, 1, 1, 1, 1, 1, 1]])
    axes = {0: torch.export.Dim("batch"), 1: torch.export.Dim("sequence", max=model.config.max_position_embeddings)}
    with _quiet_exporters(), torch.no_grad():
        # Strict (TorchDynamo) tracing keeps the model's len(...) of token rows symbolic.
        program = torch.export.export(
            graph, (input_ids, attention_mask), dynamic_shapes={name: axes for name in INPUT_NAMES}, strict=True
        )
        exported = torch.onnx.export(
            program,
            input_names=list(INPUT_NAMES),
            output_names=[OUTPUT_NAME],
            opset_version=opset,
            optimize=False,
            verbose=False,
            custom_translation_table={torch.ops.aten.linear.default: _linear_as_matmul, **translation_table()},
        )
        shape = exported.model.graph.inputs[0].shape
        exported.rename_axes({shape[0]: "batch_size", shape[1]: "sequence_length"})
        # Fold the weights' transposes and the feed-forward's halves into constants (same bytes as the weights).
        largest = max(parameter.numel() for parameter in model.parameters())
        onnxscript.optimizer.optimize(exported.model, input_size_limit=largest, output_size_limit=largest)
    proto = exported.model_proto
    expand_attention(proto, attention)
    proto.ir_version = IR_VERSION
    proto.doc_string = (
        "JinaBERT reranker (jina-local-rerank): input_ids, attention_mask [batch_size, sequence_length] "
        "-> raw logits [batch_size, 1]; sigmoid(logit) is the relevance score"
    )
    return proto


def quantize_int8(model_path: Path, output_path: Path) -> None:
    """onnxruntime's dynamic int8 quantization of ``model_path``: every linear layer's weights int8 per output channel
    in a 7-bit range (CPUs without VNNI saturate 8-bit products), activations quantized per call (uint8); the
    embedding table stored as uint8."""
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with _quiet_exporters():
        quantize_dynamic(model_path, output_path, per_channel=True, reduce_range=True, weight_type=QuantType.QInt8)


def _checkpoint_files(directory: Path) -> list[Path]:
    """``config.json`` and the tokenizer files present in ``directory`` (``tokenizer.json`` is required)."""
    if not (directory / "tokenizer.json").is_file():
        raise CheckpointError(f"{directory}: tokenizer.json is missing from the checkpoint (an export needs it)")
    return [directory / name for name in ("config.json", *TOKENIZER_FILES) if (directory / name).is_file()]


def export_onnx(
    options_or_model: RerankerOptions | str | os.PathLike[str],
    output_dir: str | os.PathLike[str],
    *,
    quantize: str | None = None,
    attention: str = "blocked",
    overwrite: bool = False,
) -> OnnxExport:
    """Write ``output_dir`` with ``onnx/model.onnx`` (and ``onnx/model_quantized.onnx`` with ``quantize="int8"``),
    ``config.json`` and the tokenizer files: a folder transformers.js and onnxruntime load as they load the
    published models.

    ``options_or_model`` is a Hub id, a checkpoint folder or :class:`~jina_local_rerank.RerankerOptions` (its model,
    revision, cache_dir and token; scoring options do not apply to a graph and are refused). An existing non-empty
    ``output_dir`` is refused unless ``overwrite``, which replaces it once the new folder is complete, and only if it
    is a checkpoint or export folder (it holds ``config.json``); an output inside the checkpoint's folder is refused.

    ``attention="blocked"`` (default) computes attention in blocks of query rows inside an ONNX ``Loop``, so memory
    stays bounded at any length (8k tokens in transformers.js); ``"whole"`` writes it for all rows at once, the
    pattern graph optimizers and quantizers recognise (OpenVINO and its NNCF int8 quantization need it), with
    memory growing as batch x heads x length squared.
    """
    if quantize is not None and quantize not in QUANTIZATIONS:
        raise ValueError(f"quantize must be one of {', '.join(QUANTIZATIONS)} or None, got {quantize!r}")
    check_choice(attention, ATTENTION_LAYOUTS, "attention")
    options = _export_options(options_or_model)
    with extra_imports("ONNX export", "export"):
        import onnx
        import onnxruntime  # noqa: F401
        import onnxscript  # noqa: F401
    # Checked before a download, and again once the checkpoint's folder is known.
    check_output_folder(output_dir, overwrite=overwrite, marker="config.json", what="export folder")
    directory = options.checkpoint_dir()
    sources = _checkpoint_files(directory)
    output = check_output_folder(
        output_dir, overwrite=overwrite, keep=[directory], marker="config.json", what="export folder"
    )
    with atomic_directory(output, "export folder") as staging:
        model = load_checkpoint(directory, torch.float32, torch.device("cpu"))
        (staging / ONNX_FOLDER).mkdir()
        onnx.save(onnx_graph(model, attention=attention), staging / ONNX_FOLDER / MODEL_FILE)
        if quantize == "int8":
            quantize_int8(staging / ONNX_FOLDER / MODEL_FILE, staging / ONNX_FOLDER / QUANTIZED_MODEL_FILE)
        for source in sources:
            if source.name == "tokenizer.json":
                write_portable_tokenizer(source, staging / source.name)
            else:
                shutil.copyfile(source, staging / source.name)
    written = tuple(sorted(path for path in output.rglob("*") if path.is_file()))
    quantized = output / ONNX_FOLDER / QUANTIZED_MODEL_FILE if quantize else None
    return OnnxExport(output, output / ONNX_FOLDER / MODEL_FILE, quantized, written)
