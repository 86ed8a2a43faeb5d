"""``jina-local-rerank train`` and ``distill``: fine-tune a reranker on your data, or distill a teacher into a
smaller student, from the command line (the :class:`~jina_local_rerank.training.Trainer` underneath).

The engine flags (``--model``, ``--device``, ``--dtype``, ``--max-length``, ``--max-batch-tokens``...) are the
options of the model being trained; in ``distill`` the teacher is scored with the same ones. Nothing heavy is
imported until a command runs.
"""

from __future__ import annotations

import argparse
from typing import TextIO

from ..cli.arguments import add_progress_argument
from ..flags import non_negative_float, positive_int
from ..options import DEFAULT_MAX_BATCH_TOKENS, OPTION_NAMES, add_option_arguments, options_from_args
from .config import (
    DEFAULT_BATCH_TOKENS,
    DEFAULT_LEARNING_RATE,
    DEFAULT_NEGATIVES,
    DEFAULT_STEP_TOKENS,
    DEFAULT_TRAINING_MAX_LENGTH,
    DISTILLATION_LEARNING_RATE,
    LOSS_NAMES,
    SEEDS,
)

CHUNKING_OPTIONS = ("long_document", "chunk_stride", "chunk_aggregation")


def _margin(text: str) -> float | None:
    return None if text.lower() == "none" else non_negative_float(text)


def _share(limit: float):
    def share(text: str) -> float:
        value = non_negative_float(text)
        if value > limit:
            raise argparse.ArgumentTypeError(f"must be at most {limit:g}, got {text}")
        return value

    return share


def _seed(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
    if value not in SEEDS:
        raise argparse.ArgumentTypeError(f"must be from -2**63 to 2**64-1, got {text}")
    return value


def _layer_list(text: str) -> list[int]:
    try:
        return [int(part) for part in text.split(",") if part.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"expected comma-separated layer indices such as 0,2,3,5, got {text!r}"
        ) from None


def _add_training_arguments(
    parser: argparse.ArgumentParser, *, learning_rate: float, loss: str, model_help: str
) -> None:

    data = parser.add_argument_group("data")
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
    data.add_argument(
        "--eval-fraction",
        type=_share(0.5),
        default=0.0,
        help="without --eval, hold out this share of the training queries (default: 0, no evaluation)",
    )
    data.add_argument(
        "--negatives",
        type=positive_int,
        default=DEFAULT_NEGATIVES,
        help=f"documents per query besides the positive; BM25-mined where the data has fewer "
        f"(default: {DEFAULT_NEGATIVES})",
    )
    data.add_argument(
        "--mining-margin",
        type=_margin,
        default=0.0,
        help="skip mined candidates scored above the positive by more than this fraction of its "
        "BM25 score; 'none' keeps them (judged-relevant documents are always skipped; default: 0)",
    )
    data.add_argument(
        "--teacher-column",
        default=None,
        help="the data's column of teacher logits (default: scores, or score on labelled pairs)",
    )
    run = parser.add_argument_group("training")
    run.add_argument("--output", required=True, metavar="DIR", help="checkpoint folder to write (with a model card)")
    run.add_argument("--epochs", type=positive_int, default=1, help="passes over the training queries (default: 1)")
    run.add_argument(
        "--learning-rate",
        type=float,
        default=learning_rate,
        help=f"AdamW peak learning rate (default: {learning_rate:g})",
    )
    run.add_argument("--loss", choices=LOSS_NAMES, default=loss, help=f"training objective (default: {loss})")
    run.add_argument("--seed", type=_seed, default=42, help="data order and lists (default: 42)")
    run.add_argument(
        "--step-tokens",
        type=positive_int,
        default=DEFAULT_STEP_TOKENS,
        help=f"tokens per optimizer step, packed without padding, run as forward passes of at most "
        f"--batch-tokens each (default: {DEFAULT_STEP_TOKENS})",
    )
    run.add_argument(
        "--batch-tokens",
        type=positive_int,
        default=DEFAULT_BATCH_TOKENS,
        help=f"tokens per forward pass of training, which sets its memory: activations are held for "
        f"the backward pass (default: {DEFAULT_BATCH_TOKENS}; a list over it runs in chunks of its "
        f"pairs, a longer pair alone)",
    )
    run.add_argument("--warmup-ratio", type=_share(1.0), default=0.1, help="share of steps warming up (default: 0.1)")
    run.add_argument("--weight-decay", type=non_negative_float, default=0.01, help="AdamW weight decay (default: 0.01)")
    run.add_argument(
        "--max-grad-norm",
        type=non_negative_float,
        default=1.0,
        help="gradient clipping norm, 0 for none (default: 1.0)",
    )
    run.add_argument("--temperature", type=float, default=1.0, help="softmax temperature of the kl loss (default: 1)")
    run.add_argument(
        "--activation-checkpointing",
        action="store_true",
        help="recompute activations in the backward pass: less memory for long documents",
    )
    run.add_argument(
        "--eval-every", type=positive_int, default=None, help="steps between evaluations (default: at each epoch's end)"
    )
    run.add_argument(
        "--eval-top-k",
        type=positive_int,
        default=100,
        help="BM25 candidates per query of a BEIR evaluation set (default: 100)",
    )
    run.add_argument("--eval-max-queries", type=positive_int, default=None, help="evaluate at most N queries")
    run.add_argument(
        "--save-every",
        type=positive_int,
        default=500,
        help="steps between saves of the resumable state (default: 500; also at each evaluation)",
    )
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
            "max_length": f"training window in tokens: pairs are truncated to it (default: {DEFAULT_TRAINING_MAX_LENGTH}; "
            "at most the model's window, 8192)",
            "max_batch_tokens": f"tokens per scoring pass of the evaluation (and of the teacher in distill); training's "
            f"own passes are --batch-tokens (default: {DEFAULT_MAX_BATCH_TOKENS})",
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
        learning_rate=DEFAULT_LEARNING_RATE,
        loss="softmax",
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
        learning_rate=DISTILLATION_LEARNING_RATE,
        loss="margin-mse",
        model_help="the student's starting checkpoint (Hub id or local directory), trained to "
        "match the teacher; instead of --student-layers/--keep-layers, which build "
        "the student from the teacher's layers",
    )
    distill.set_defaults(handler=_run_distill)


def _config(args: argparse.Namespace):  # -> TrainingConfig
    """The run's settings from the flags: one flag per ``TrainingConfig`` field (``--progress`` for show_progress)."""
    from dataclasses import fields

    from .config import TrainingConfig

    values = {
        field.name: getattr(args, field.name) for field in fields(TrainingConfig) if field.name != "show_progress"
    }
    return TrainingConfig(**values, show_progress=args.progress)


def _run_train(args: argparse.Namespace, stdin: TextIO, stdout: TextIO) -> None:
    from .trainer import Trainer

    options = options_from_args(args)
    options = options.with_default_model()
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
    from .trainer import Trainer

    options = options_from_args(args)
    student_layers = args.keep_layers if args.keep_layers is not None else args.student_layers
    if args.teacher is None and args.teacher_column is None:
        raise ValueError(
            "distill needs --teacher (a checkpoint to score with) or --teacher-column (scores in the data)"
        )
    if args.teacher is None and options.model is None:
        raise ValueError("with --teacher-column and no --teacher, give the student to train with --model")
    if options.model is not None and student_layers is not None:
        raise ValueError(
            "give --model (the student) or --student-layers/--keep-layers (a student made of the "
            "teacher's layers), not both"
        )
    if options.model is None and student_layers is None:
        raise ValueError("give --student-layers N (or --keep-layers) to build the student, or --model to train one")
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


def _print_result(result, stdout: TextIO) -> None:  # result: TrainingResult
    stdout.write(
        f"wrote {result.output}: {result.steps} steps, {result.tokens:,} tokens in {result.seconds:.1f} s "
        f"({result.tokens / max(result.seconds, 1e-9):,.0f} tokens/s)\n"
    )
    if result.after:
        stdout.write(f"{'metric':<14}{'before':>10}{'after':>10}{'change':>10}\n")
        for metric, after in result.after.items():
            before = result.before.get(metric, float("nan"))
            stdout.write(f"{metric:<14}{before:>10.4f}{after:>10.4f}{after - before:>+10.4f}\n")
