"""``jina-local-rerank export FORMAT``: write a checkpoint for another runtime (``export onnx`` for now)."""

from __future__ import annotations

import argparse
import json
import time
from typing import TextIO

from ..options import add_option_arguments, options_from_args
from .layout import ATTENTION_LAYOUTS, EXPORT_OPTIONS, MODEL_FILE, ONNX_FOLDER, QUANTIZED_MODEL_FILE


def register(commands: argparse._SubParsersAction) -> None:
    """Add ``export`` (with one subcommand per format) to the CLI's subcommands."""
    export = commands.add_parser(
        "export",
        help="write the model for another runtime (ONNX for onnxruntime and transformers.js)",
        description="Write the model in another runtime's format, beside its config and tokenizer files.",
    )
    formats = export.add_subparsers(dest="format", required=True, metavar="FORMAT")
    onnx = formats.add_parser(
        "onnx",
        help="ONNX graph for onnxruntime and transformers.js",
        description=f"Write OUTPUT/{ONNX_FOLDER}/{MODEL_FILE} (input_ids, attention_mask [batch, sequence] -> "
        f"logits [batch, 1]; fp32) beside config.json and the tokenizer files: the folder layout transformers.js "
        f"and onnxruntime callers load. The folder appears only once complete. Prints a JSON summary. The graph "
        f"scores the tokens it is given up to the model's window, on whatever device onnxruntime runs: limits such "
        f"as a maximum length apply when tokenizing, so the scoring options have no flags here.",
    )
    onnx.add_argument("--output", required=True, metavar="DIR", help="folder to write (created if missing)")
    onnx.add_argument(
        "--quantize",
        choices=("int8",),
        default=None,
        help=f"also write {ONNX_FOLDER}/{QUANTIZED_MODEL_FILE}, dynamically quantized to int8 (transformers.js: "
        f"dtype 'q8')",
    )
    onnx.add_argument(
        "--attention",
        choices=ATTENTION_LAYOUTS,
        default="blocked",
        help="blocked: in blocks of query rows inside an ONNX Loop, bounded memory at any length (transformers.js); "
        "whole: all rows at once, the pattern OpenVINO and its NNCF int8 quantization need, memory growing with the "
        "square of the length (default: blocked)",
    )
    onnx.add_argument(
        "--overwrite",
        action="store_true",
        help="replace OUTPUT if it is an earlier export or a checkpoint (holds config.json), once the export is done",
    )
    add_option_arguments(onnx, "model", only=EXPORT_OPTIONS)
    onnx.set_defaults(handler=run_export_onnx)


def run_export_onnx(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    """Export the model and print ``{"output", "files", "seconds"}``."""
    from .onnx import export_onnx

    started = time.perf_counter()
    result = export_onnx(
        options_from_args(args),
        args.output,
        quantize=args.quantize,
        attention=args.attention,
        overwrite=args.overwrite,
    )
    files = [str(path.relative_to(result.directory)) for path in result.files]
    json.dump(
        {"output": str(result.directory), "files": files, "seconds": round(time.perf_counter() - started, 1)}, stdout
    )
    stdout.write("\n")
