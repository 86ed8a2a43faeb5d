"""``jina-local-rerank train`` and ``distill``: fine-tune a reranker on your data, or distill a teacher into a
smaller student, from the command line (the :class:`~jina_local_rerank.training.Trainer` underneath).

The engine flags (``--model``, ``--device``, ``--dtype``, ``--max-length``, ``--max-batch-tokens``...) are the
options of the model being trained; in ``distill`` the teacher is scored with the same ones. Nothing heavy is
imported until a command runs.
"""

from __future__ import annotations

import argparse
from typing import TYPE_CHECKING, TextIO

from ..cli.arguments import add_progress_argument
from ..flags import add_field_arguments, positive_int, values_from_args
from ..options import DEFAULT_MAX_BATCH_TOKENS, OPTION_NAMES, add_option_arguments, options_from_args
from .config import (
    DATA,
    DEFAULT_TRAINING_MAX_LENGTH,
    DISTILLATION_LEARNING_RATE,
    DISTILLATION_LOSS,
    TRAINING,
    TrainingConfig,
)

if TYPE_CHECKING:
    from .trainer import TrainingResult

CHUNKING_OPTIONS = ("long_document", "chunk_stride", "chunk_aggregation")
# How the distill command's messages name the models of the run (see trainer.check_run_models).
DISTILL_FLAGS = {"model": "--model", "teacher": "--teacher", "student_layers": "--student-layers N/--keep-layers"}


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer indices such as 0,2,3,5, got {text!r}"
        ) from None


def _add_training_arguments(
    parser: argparse.ArgumentParser, *, model_help: str, defaults: dict[str, object] | None = None
) -> None:
    """The flags of ``train`` and ``distill``: the data and the output, one per ``TrainingConfig`` field (with
    ``defaults`` where the command has its own), the state folder, and the engine options of the model trained."""
    data = parser.add_argument_group(DATA)
    data.add_argument(
        "--train",
        required=True,
        metavar="PATH",
        help="JSON Lines file (triplets, labelled pairs or lists) or BEIR-layout folder (its train split, else test)",
    )
    data.add_argument(
        "--eval",
        metavar="PATH",
        default=None,
        help="held-out data: a JSON Lines file, or a BEIR-layout folder (its test split, BM25 candidates)",
    )
    run = parser.add_argument_group(TRAINING)
    run.add_argument("--output", required=True, metavar="DIR", help="checkpoint folder to write (with a model card)")
    add_field_arguments(parser, TrainingConfig, defaults=defaults, sections={DATA: data, TRAINING: run})
    run.add_argument(
        "--state-dir", default=None, help="where the resumable state and log go (default: OUTPUT.training)"
    )
    run.add_argument("--resume", action="store_true", help="continue the run saved in the state folder")
    run.add_argument("--overwrite", action="store_true", help="replace an existing output and state")
    add_progress_argument(parser)
    # Training truncates pairs to the window: the long-document options (chunking) have no flags here.
    add_option_arguments(
        parser,
        only=[name for name in OPTION_NAMES if name not in CHUNKING_OPTIONS],
        help={
            "model": model_help,
            "max_length": "training window in tokens: pairs are truncated to it "
            f"(default: {DEFAULT_TRAINING_MAX_LENGTH}; at most the model's window, 8192)",
            "max_batch_tokens": "tokens per scoring pass of the evaluation (and of the teacher in distill); "
            f"training's own passes are --batch-tokens (default: {DEFAULT_MAX_BATCH_TOKENS})",
        },
    )


def register(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``train`` and ``distill`` to the CLI's subcommands."""
    train = commands.add_parser(
        "train",
        help="fine-tune a reranker on your own data (JSONL or BEIR), keeping the best checkpoint",
        description="Fine-tune --model on --train and write --output: a checkpoint in the model's own format "
        "with a model card. With --eval (or --eval-fraction) the run is evaluated before training and at each "
        "epoch's end, and the best checkpoint is kept. Ctrl-C saves the run; --resume continues it.",
    )
    _add_training_arguments(
        train,
        model_help="the checkpoint to fine-tune: Hub id or local directory (default: "
        "$JINA_LOCAL_RERANK_MODEL, else jinaai/jina-reranker-v1-tiny-en)",
    )
    train.set_defaults(handler=_run_train)

    distill = commands.add_parser(
        "distill",
        help="distill a teacher reranker into a smaller student (layers of the teacher, or --model)",
        description="Score every training list with --teacher (cached on disk) and train a student to match: "
        "the teacher with --student-layers of its layers, or --model. Teacher logits may come from the data "
        "instead (--teacher-column, with --model). Same data and options as train.",
    )
    teacher = distill.add_argument_group("teacher and student")
    teacher.add_argument("--teacher", default=None, help="the teacher checkpoint (Hub id or directory)")
    layers = teacher.add_mutually_exclusive_group()
    layers.add_argument(
        "--student-layers",
        type=positive_int,
        default=None,
        help="a student of this many teacher layers, evenly spaced (first and last kept)",
    )
    layers.add_argument(
        "--keep-layers", type=_layer_list, default=None, help="the teacher layers the student keeps, e.g. 0,2,3,5"
    )
    teacher.add_argument(
        "--teacher-cache",
        default=None,
        help="folder of cached teacher scores (default: ~/.cache/jina-local-rerank/teacher-scores)",
    )
    _add_training_arguments(
        distill,
        model_help="the student's starting checkpoint (Hub id or local directory), trained to "
        "match the teacher; instead of --student-layers/--keep-layers, which build "
        "the student from the teacher's layers",
        defaults={"learning_rate": DISTILLATION_LEARNING_RATE, "loss": DISTILLATION_LOSS},
    )
    distill.set_defaults(handler=_run_distill)


def _config(args: argparse.Namespace) -> TrainingConfig:
    """The run's settings from the flags (``--progress`` for ``show_progress``)."""
    return TrainingConfig(**values_from_args(TrainingConfig, args), show_progress=args.progress)


def _run_train(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    from .trainer import Trainer

    options = options_from_args(args).with_default_model()
    trainer = Trainer(
        options,
        train=args.train,
        eval=args.eval,
        output=args.output,
        config=_config(args),
        state_dir=args.state_dir,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    _print_result(trainer.fit(), stdout)


def _run_distill(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    from .trainer import Trainer, check_run_models

    options = options_from_args(args)
    student_layers = args.keep_layers if args.keep_layers is not None else args.student_layers
    if args.teacher is None and args.teacher_column is None:
        raise ValueError(
            "distill needs --teacher (a checkpoint to score with) or --teacher-column (scores in the data)"
        )
    check_run_models(options.model, args.teacher, student_layers, DISTILL_FLAGS)
    teacher = None if args.teacher is None else options.replace(model=args.teacher)
    trainer = Trainer(
        options,
        train=args.train,
        eval=args.eval,
        output=args.output,
        teacher=teacher,
        student_layers=student_layers,
        config=_config(args),
        state_dir=args.state_dir,
        teacher_cache_dir=args.teacher_cache,
        resume=args.resume,
        overwrite=args.overwrite,
    )
    _print_result(trainer.fit(), stdout)


def _print_result(result: TrainingResult, stdout: TextIO) -> None:
    stdout.write(
        f"wrote {result.output}: {result.steps} steps, {result.tokens:,} tokens in {result.seconds:.1f} s "
        f"({result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s)\n"
    )
    if result.after:
        stdout.write(f"{'metric':<14}{'before':>10}{'after':>10}{'change':>10}\n")
        for metric, after in result.after.items():
            before = result.before.get(metric, float("nan"))
            stdout.write(f"{metric:<14}{before:>10.4f}{after:>10.4f}{after - before:>+10.4f}\n")
