"""``Trainer``: fine-tuning and distillation of a JinaBERT reranker; :meth:`Trainer.fit` is the whole run.

``fit`` reads top to bottom like nanoGPT's ``train.py``: the starting checkpoint (for distillation, a student built
from its teacher), the data (read, hard negatives mined, teacher-scored), the steps of every epoch, AdamW with
warmup and linear decay, then the loop: packed forward passes (bf16 autocast on CUDA) whose gradients add up to
one step, clipping, the optimizer step, periodic evaluation keeping the best checkpoint as the output, and saves
of the resumable state. The output folder holds only the checkpoint and its model card; what resuming needs
(weights in fp32, optimizer, schedule, step, random states) and the log live in ``<output>.training/``.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import math
import os
import random
import shutil
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.hub import public_model_name
from ..checkpoint.loading import load_checkpoint
from ..checkpoint.writer import source_config, write_checkpoint
from ..engine.devices import resolve_device
from ..engine.scoring_engine import EngineKey, ScoringEngine
from ..engine.tokenization import SPECIAL_TOKENS_PER_PAIR, PairTokenizer
from ..errors import DatasetError, FileProblem, TrainingDivergedError
from ..files.user_files import atomic_output, check_output_folder, write_text_atomically
from ..options import DEFAULT_MAX_QUERY_LENGTH, TEXT_AFFIXES, RerankerOptions
from ..progress import progress_bar
from .batches import collate, encode_groups, micro_batches, plan_epoch
from .config import DEFAULT_TRAINING_MAX_LENGTH, TrainingConfig
from .data import QueryGroup, TrainingData, load_training_data
from .evaluator import RerankingEvaluator
from .losses import LABELS, BinaryCrossEntropyLoss, ListLoss, make_loss
from .mining import mine_hard_negatives
from .model_card import RunDescription, model_card
from .modeling import enable_activation_checkpointing, forward_backward, trainable_model
from .student import build_student, default_layers
from .teacher import TeacherScorer

STATE_FILE = "state.pt"
LOG_FILE = "log.jsonl"
RUN_FILE = "run.json"
STUDENT_FOLDER = "student-init"
# Written into every state folder a run makes: only such a folder (or an empty or missing one) is written or
# replaced, never a user's folder or a checkpoint.
STATE_MARKER = ".jina-local-rerank-training"
STATE_FORMAT = 1


@dataclass(frozen=True)
class StepReport:
    """One optimizer step: ``step`` of ``total_steps`` (1-based), its mean loss per list, learning rate, tokens."""

    step: int
    total_steps: int
    epoch: int
    loss: float
    learning_rate: float
    tokens: int
    tokens_per_second: float


@dataclass(frozen=True)
class TrainingResult:
    """What :meth:`Trainer.fit` did: the output folder, steps and tokens, and the evaluation before and after.

    ``after`` evaluates the saved checkpoint (bf16, reloaded), ``best`` the live weights at ``best_step``.
    """

    output: Path
    steps: int
    total_steps: int
    tokens: int
    seconds: float
    data: dict[str, Any]
    before: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    after: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None


def _options(value: str | os.PathLike[str] | RerankerOptions | None, base: RerankerOptions) -> RerankerOptions:
    if isinstance(value, RerankerOptions):
        return value
    return base.replace(model=None if value is None else os.fspath(value))


def _lr_factor(step: int, *, warmup: int, total: int) -> float:
    """Linear warmup over ``warmup`` steps, then linear decay to the last step (never 0: no step is wasted)."""
    return min((step + 1) / (warmup + 1), (total - step) / max(1, total - warmup))


def _autocast_dtype(dtype: str, device: torch.device) -> torch.dtype | None:
    """The compute dtype of training: weights stay fp32; bf16 autocast on CUDA ("auto"), or as asked."""
    if dtype == "auto":
        return torch.bfloat16 if device.type == "cuda" else None
    if dtype == "float32":
        return None
    if dtype == "bfloat16":
        return torch.bfloat16
    raise ValueError(
        f"training computes in float32 or bfloat16 (weights stay float32), not {dtype}: use auto, float32 or "
        "bfloat16 (int8 is for scoring the trained checkpoint; float16 would need loss scaling)"
    )


def _fingerprint(groups: Sequence[QueryGroup]) -> str:
    digest = hashlib.sha256()
    for group in groups:
        digest.update(json.dumps([group.query, group.documents, group.labels, group.teacher]).encode())
    return digest.hexdigest()


@contextlib.contextmanager
def _stop_after_step() -> Iterator[dict[str, bool]]:
    """Ctrl-C (or SIGTERM) during the loop asks for a stop at the end of the current step (so the state saved is a
    whole step); a second one stops at once. Outside the main thread, Python delivers no signals: nothing changes."""
    request = {"stop": False}
    if threading.current_thread() is not threading.main_thread():
        yield request
        return

    def handler(signum: int, frame: Any) -> None:
        if request["stop"]:
            raise KeyboardInterrupt
        request["stop"] = True
        print("\ninterrupted: saving after this step (Ctrl-C again to stop now, unsaved)", file=sys.stderr)

    previous = {number: signal.signal(number, handler) for number in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield request
    finally:
        for number, old in previous.items():
            signal.signal(number, signal.SIG_DFL if old is None else old)


class Trainer:
    """A training run: fine-tune ``model`` on ``train`` (or distill ``teacher`` into it) and write ``output``.

    - ``model``: the starting checkpoint, a Hub id or directory, or the
      :class:`~jina_local_rerank.options.RerankerOptions` of the run (device, dtype, ``max_length``...; the model
      field is the checkpoint). With ``teacher`` and ``student_layers`` and no ``model``, the student is the
      teacher with ``student_layers`` of its layers (a count, evenly spaced, or the indices to keep).
    - ``train``: a JSON Lines file, a BEIR-layout folder, or :class:`~jina_local_rerank.training.TrainingData`.
    - ``eval``: held-out data (a JSON Lines file or a BEIR folder, its ``test`` split) evaluated before training,
      every ``config.eval_every`` steps and at each epoch's end; the best checkpoint is the output.
    - ``teacher``: a checkpoint whose logits the losses ``margin-mse``/``kl`` learn (scored through the engine
      with the run's options, cached in ``teacher_cache_dir``); without one they read the data's column.
    - ``output``: the checkpoint folder written, in the starting checkpoint's format, with a model card;
      ``state_dir`` (default ``<output>.training``) holds what ``resume`` needs and the log. An existing
      output or state is replaced only with ``overwrite``.
    """

    def __init__(
        self,
        model: str | os.PathLike[str] | RerankerOptions | None = None,
        *,
        train: str | os.PathLike[str] | TrainingData,
        output: str | os.PathLike[str],
        eval: str | os.PathLike[str] | TrainingData | RerankingEvaluator | None = None,
        teacher: str | os.PathLike[str] | RerankerOptions | None = None,
        student_layers: int | Sequence[int] | None = None,
        config: TrainingConfig | None = None,
        state_dir: str | os.PathLike[str] | None = None,
        teacher_cache_dir: str | os.PathLike[str] | None = None,
        resume: bool = False,
        overwrite: bool = False,
    ) -> None:
        self.config = config or TrainingConfig()
        if not isinstance(self.config, TrainingConfig):
            raise TypeError(f"config must be a TrainingConfig, got {type(self.config).__name__}")
        self.options = _options(model, RerankerOptions())
        if self.options.long_document != "truncate":
            raise ValueError("training truncates documents to max_length; long_document='chunk' is for scoring")
        affixes = [name for name in TEXT_AFFIXES if getattr(self.options, name)]
        if affixes:
            raise ValueError(
                f"{', '.join(affixes)}: training reads the data's texts as they are; put the text in "
                "the data itself (these options are for scoring)"
            )
        self.teacher = None if teacher is None else _options(teacher, self.options)
        if student_layers is not None and (self.teacher is None or self.options.model is not None):
            raise ValueError("student_layers builds the student from the teacher: give a teacher and no model")
        if self.options.model is None and student_layers is None:
            raise ValueError("give the model to train (or a teacher and student_layers to distill into a new one)")
        self.student_layers = student_layers
        self.layers_kept: list[int] | None = None  # the teacher layers a new student keeps, once chosen
        self.train_source = train
        self.eval_source = eval
        self.output = Path(output).expanduser()
        self.state_dir = (
            Path(state_dir) if state_dir is not None else self.output.with_name(self.output.name + ".training")
        )
        self.teacher_cache_dir = teacher_cache_dir
        self.resume = resume
        self.overwrite = overwrite
        self._check_folders()

    def _check_folders(self) -> None:
        state = self.state_dir / STATE_FILE
        inputs = [
            Path(model).expanduser()
            for model in (self.options.model, self.teacher and self.teacher.model)
            if model is not None and Path(model).expanduser().is_dir()
        ]
        state_dir, output = self.state_dir.resolve(), self.output.resolve()
        if state_dir == output or output in state_dir.parents or state_dir in output.parents:
            raise FileProblem(
                f"state folder {self.state_dir} and output {self.output} overlap; give the state a "
                "folder of its own (--state-dir)"
            )
        check_output_folder(
            self.state_dir,
            overwrite=True,
            keep=inputs,
            marker=None if self.resume else STATE_MARKER,
            what="state folder",
        )
        if self.resume:
            if not state.is_file():
                raise FileProblem(f"no saved run to resume: {state} does not exist")
            return
        occupied = self.output.exists() and (not self.output.is_dir() or any(self.output.iterdir()))
        if occupied and not (self.output / "config.json").is_file():
            raise FileProblem(f"output {self.output} exists and is not a checkpoint folder; choose another")
        if self.overwrite:
            return
        if state.is_file():
            raise FileProblem(f"{state} holds an unfinished run; pass resume to continue it or overwrite to start over")
        if occupied:
            raise FileProblem(f"output {self.output} exists; pass overwrite to replace it")

    # --- the run ------------------------------------------------------------------------------------------------

    def fit(self, on_step: Callable[[StepReport], None] | None = None) -> TrainingResult:
        """Train, evaluate and write the output; ``on_step`` is called after every optimizer step.

        Ctrl-C stops after the current step with the state saved (``KeyboardInterrupt`` is raised after the
        save): run again with ``resume`` to continue where it stopped, to the same result. The run seeds its own
        random generators: the process's ``random`` and torch states are as they were afterwards. A run that fails
        before saving any state removes the state folder it created.
        """
        created = not self.state_dir.exists()
        python_random = random.getstate()
        cuda = [torch.cuda.current_device()] if torch.cuda.is_available() else []
        try:
            with torch.random.fork_rng(devices=cuda):
                return self._run(on_step)
        except BaseException:
            if created and not (self.state_dir / STATE_FILE).exists():
                shutil.rmtree(self.state_dir, ignore_errors=True)
            raise
        finally:
            random.setstate(python_random)

    def _run(self, on_step: Callable[[StepReport], None] | None) -> TrainingResult:
        cfg, options = self.config, self.options
        random.seed(cfg.seed)
        torch.manual_seed(cfg.seed)
        device = resolve_device(options.device)
        autocast = _autocast_dtype(options.dtype, device)
        if self.overwrite and not self.resume:  # what an earlier run left, and nothing else of the folder
            for name in (STATE_FILE, LOG_FILE, RUN_FILE):
                (self.state_dir / name).unlink(missing_ok=True)
            shutil.rmtree(self.state_dir / STUDENT_FOLDER, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / STATE_MARKER).touch()

        # The starting checkpoint: the model, or a student made of its teacher's layers.
        directory = self._starting_checkpoint()
        if self.output.resolve() == directory.resolve():
            raise FileProblem(f"output {self.output} is the starting checkpoint; choose another folder")
        if self.teacher is not None:  # replacing the output must never delete the teacher
            check_output_folder(self.output, overwrite=True, keep=[self._teacher_dir()], what="output")
        raw_config = source_config(directory)
        model = trainable_model(directory, device)
        if cfg.activation_checkpointing:
            enable_activation_checkpointing(model)
        tokenizer = PairTokenizer.from_directory(directory, model.config.vocab_size)
        max_length, max_query_length = self._lengths(model.config.max_position_embeddings)
        engine = ScoringEngine(
            EngineKey(f"training:{self.output}", None, str(device), "float32"),
            directory,
            model,
            tokenizer,
            torch.float32,
        )

        def evaluate(scoring: ScoringEngine, description: str) -> dict[str, float]:
            assert evaluator is not None
            return evaluator(
                scoring,
                max_length=max_length,
                max_query_length=max_query_length,
                max_batch_tokens=max(options.max_batch_tokens, max_length),
                show_progress=cfg.show_progress,
                description=description,
            )

        # The data: read, mined, teacher-scored, checked for the loss; then every epoch's steps.
        loss = make_loss(cfg.loss, temperature=cfg.temperature)
        train, evaluator = self._data(loss, max_length, max_query_length)
        encoded, truncated = encode_groups(
            train.groups,
            tokenizer,
            max_length=max_length,
            max_query_length=max_query_length,
            show_progress=cfg.show_progress,
        )
        data_summary = {**train.summary(), "documents truncated to max_length": truncated}
        plan = [
            (epoch, step)
            for epoch in range(cfg.epochs)
            for step in plan_epoch(
                encoded, negatives=cfg.negatives, step_tokens=cfg.step_tokens, seed=cfg.seed, epoch=epoch
            )
        ]
        total_steps = len(plan)
        epoch_ends = {i + 1 for i in range(total_steps) if i + 1 == total_steps or plan[i + 1][0] != plan[i][0]}
        fingerprint = _fingerprint(train.groups)

        # AdamW (no decay on biases and norms), linear warmup then linear decay.
        matrices = [p for p in model.parameters() if p.ndim >= 2]
        vectors = [p for p in model.parameters() if p.ndim < 2]
        groups = [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
        try:  # the fused kernel: 7x faster than the loop of tensor operations on a CPU (and faster on GPUs)
            optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
        except RuntimeError:  # a device without the fused kernel
            optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
        warmup = round(cfg.warmup_ratio * total_steps)
        scheduler = torch.optim.lr_scheduler.LambdaLR(
            optimizer, functools.partial(_lr_factor, warmup=warmup, total=total_steps)
        )

        run: dict[str, Any] = {
            "step": 0,
            "tokens": 0,
            "seconds": 0.0,
            "before": {},
            "best": {},
            "best_step": None,
            "history": [],
        }
        if self.resume:
            run = self._restore(model, optimizer, scheduler, fingerprint)
        else:
            self._write_run_file(directory, data_summary, total_steps)
            if evaluator is not None:
                run["before"] = run["best"] = evaluate(engine, "evaluating the starting model")
                run["best_step"] = 0
                run["history"].append({"step": 0, "eval": run["before"]})
                self._write_output(model, raw_config, directory, self._card(run, data_summary, evaluator, total_steps))

        def save_state() -> None:
            self._save_state(model, optimizer, scheduler, run, fingerprint)

        progress = progress_bar("training", "step", cfg.show_progress, total=total_steps, initial=run["step"])
        with progress, _stop_after_step() as request:
            for index in range(run["step"], total_steps):
                epoch, lists = plan[index]
                started = time.perf_counter()
                step_loss, step_tokens = 0.0, 0
                for micro in micro_batches(encoded, lists, cfg.batch_tokens):
                    batch = collate(encoded, micro, loss.needs, device)
                    # The step's mean over lists, pass by pass.
                    losses = forward_backward(
                        model, batch, loss, weight=1 / len(lists), batch_tokens=cfg.batch_tokens, autocast=autocast
                    )
                    _require_finite(losses, "loss", index + 1, micro, train.groups)
                    step_loss += losses.sum().item()
                    step_tokens += batch.num_tokens
                norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf)
                _require_finite(norm, "gradient norm", index + 1, lists, train.groups)
                learning_rate = optimizer.param_groups[0]["lr"]
                optimizer.step()
                scheduler.step()
                optimizer.zero_grad(set_to_none=True)

                seconds = time.perf_counter() - started
                run["step"], run["tokens"], run["seconds"] = (
                    index + 1,
                    run["tokens"] + step_tokens,
                    run["seconds"] + seconds,
                )
                report = StepReport(
                    index + 1,
                    total_steps,
                    epoch,
                    step_loss / len(lists),
                    learning_rate,
                    step_tokens,
                    step_tokens / seconds,
                )
                run["history"].append(
                    {
                        "step": report.step,
                        "loss": report.loss,
                        "lr": learning_rate,
                        "tokens": step_tokens,
                        "seconds": seconds,
                    }
                )
                progress.set_postfix(loss=f"{report.loss:.4f}", tok_s=f"{run['tokens'] / run['seconds']:.0f}")
                progress.update(1)

                due = cfg.eval_every is not None and report.step % cfg.eval_every == 0
                if evaluator is not None and (due or report.step in epoch_ends):
                    metrics = evaluate(engine, f"evaluating step {report.step}")
                    run["history"].append({"step": report.step, "eval": metrics})
                    if metrics[evaluator.metric] > run["best"][evaluator.metric]:
                        run["best"], run["best_step"] = metrics, report.step
                        self._write_output(
                            model, raw_config, directory, self._card(run, data_summary, evaluator, total_steps)
                        )
                    save_state()
                elif cfg.save_every is not None and report.step % cfg.save_every == 0:
                    save_state()
                if on_step is not None:
                    on_step(report)
                if request["stop"]:
                    save_state()
                    print(
                        f"saved the run at step {report.step} of {total_steps} in {self.state_dir}; "
                        "continue it with resume",
                        file=sys.stderr,
                    )
                    raise KeyboardInterrupt

        # The output: the best checkpoint (or the last, without evaluation), evaluated as saved.
        if evaluator is None:
            self._write_output(model, raw_config, directory, self._card(run, data_summary, None, total_steps))
        else:
            saved = load_checkpoint(self.output, torch.float32, device)
            run["after"] = evaluate(
                ScoringEngine(engine.key, self.output, saved, tokenizer, torch.float32),
                "evaluating the saved checkpoint",
            )
            write_text_atomically(
                self.output / "README.md", self._card(run, data_summary, evaluator, total_steps), "model card"
            )
        self._write_log(run)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)  # finished: nothing to resume
        return TrainingResult(
            self.output,
            run["step"],
            total_steps,
            run["tokens"],
            run["seconds"],
            data_summary,
            run["before"],
            run["best"],
            run.get("after", {}),
            run["best_step"],
        )

    # --- the pieces ---------------------------------------------------------------------------------------------

    def _starting_checkpoint(self) -> Path:
        options = self.options
        if self.options.model is not None:
            return options.checkpoint_dir()
        assert self.teacher is not None and self.student_layers is not None
        teacher_dir = self._teacher_dir()
        if isinstance(self.student_layers, int):
            self.layers_kept = default_layers(source_config(teacher_dir)["num_hidden_layers"], self.student_layers)
        else:
            self.layers_kept = list(self.student_layers)
        folder = self.state_dir / STUDENT_FOLDER
        if not (self.resume and folder.is_dir()):
            build_student(teacher_dir, folder, layers=self.layers_kept)
        return folder

    def _teacher_dir(self) -> Path:
        assert self.teacher is not None
        return self.teacher.checkpoint_dir()

    def _lengths(self, window: int) -> tuple[int, int]:
        max_length = self.options.max_length or min(DEFAULT_TRAINING_MAX_LENGTH, window)
        if max_length > window:
            raise ValueError(f"max_length {max_length} exceeds the model's window of {window} tokens")
        max_query_length = self.options.max_query_length or min(DEFAULT_MAX_QUERY_LENGTH, max_length // 2)
        if max_query_length > max_length - SPECIAL_TOKENS_PER_PAIR - 1:
            raise ValueError(f"max_query_length {max_query_length} leaves no room for documents in {max_length}")
        return max_length, max_query_length

    def _data(
        self, loss: ListLoss, max_length: int, max_query_length: int
    ) -> tuple[TrainingData, RerankingEvaluator | None]:
        """The training data ready for ``loss``, and the evaluator (held-out queries), both teacher-scored."""
        cfg = self.config
        train = self._read(self.train_source)
        evaluator = None
        if isinstance(self.eval_source, RerankingEvaluator):
            evaluator = self.eval_source
        elif self.eval_source is not None:
            evaluator = self._evaluator(self.eval_source)
        elif cfg.eval_fraction > 0:
            train, held_out = _hold_out(train, cfg.eval_fraction, cfg.seed)
            evaluator = RerankingEvaluator.from_groups(held_out, f"{len(held_out)} held-out training queries")
        if self.teacher is not None:
            scorer = TeacherScorer(
                self.teacher.replace(max_length=max_length, max_query_length=max_query_length), self.teacher_cache_dir
            )
            groups, _ = scorer.score_groups(train.groups, show_progress=cfg.show_progress)
            train = train.with_groups(groups)
            if evaluator is not None:
                pairs = [(query.query, doc) for query in evaluator.queries for doc in query.documents]
                logits, _ = scorer.score_pairs(pairs, show_progress=cfg.show_progress)
                teacher, start = [], 0
                for query in evaluator.queries:
                    teacher.append(tuple(logits[start : start + len(query.documents)]))
                    start += len(query.documents)
                evaluator = evaluator.with_teacher(teacher)
        if evaluator is not None and not evaluator.judged and any(q.teacher is None for q in evaluator.queries):
            raise DatasetError(
                f"evaluation set {evaluator.name}: no relevance labels and no teacher scores to "
                "evaluate against (give labelled data, or a teacher)"
            )
        return _usable(train, loss), evaluator

    def _read(self, source: str | os.PathLike[str] | TrainingData) -> TrainingData:
        """Read ``source`` (without the data's teacher scores when a teacher model scores) and mine negatives."""
        cfg = self.config
        data = (
            source
            if isinstance(source, TrainingData)
            else load_training_data(source, teacher_column=cfg.teacher_column)
        )
        if self.teacher is not None:
            data = data.with_groups([QueryGroup(g.query, g.documents, g.labels, None, g.where) for g in data.groups])
        return mine_hard_negatives(
            data, cfg.negatives, margin=cfg.mining_margin, seed=cfg.seed, show_progress=cfg.show_progress
        )

    def _evaluator(self, source: str | os.PathLike[str] | TrainingData) -> RerankingEvaluator:
        cfg = self.config
        if not isinstance(source, TrainingData) and Path(source).is_dir():
            train = None if isinstance(self.train_source, TrainingData) else Path(self.train_source)
            if train is not None and train.is_dir() and train.resolve() == Path(source).resolve():
                if not (train / "qrels" / "train.tsv").is_file():
                    raise DatasetError(
                        f"{source} is the training data (its test split, having no train split) "
                        "and the evaluation set: hold out other queries"
                    )
            return RerankingEvaluator.from_beir(
                source, top_k=cfg.eval_top_k, max_queries=cfg.eval_max_queries, show_progress=cfg.show_progress
            )
        data = self._read(source)
        groups = [g for g in data.groups if g.labels is None or any(label > 0 for label in g.labels)]
        return RerankingEvaluator.from_groups(groups[: cfg.eval_max_queries], data.source)

    def _card(
        self, run: dict[str, Any], data: dict[str, Any], evaluator: RerankingEvaluator | None, total_steps: int
    ) -> str:
        settings = {**self.config.to_dict(), **{k: v for k, v in self.options.to_dict().items() if k != "model"}}
        settings.pop("show_progress")
        return model_card(
            RunDescription(
                name=self.output.name,
                base_model=public_model_name(self.options.model or (self.teacher.model if self.teacher else "")),
                command="distill" if self.teacher is not None else "train",
                teacher=None if self.teacher is None else public_model_name(self.teacher.model),
                student_layers=self.layers_kept,
                data=data,
                settings=settings,
                steps=run["step"],
                total_steps=total_steps,
                tokens=run["tokens"],
                seconds=run["seconds"],
                evaluation=None if evaluator is None else f"{evaluator.name}, {len(evaluator.queries)} queries",
                metric=None if evaluator is None else evaluator.metric,
                before=run["before"],
                after=run.get("after") or run["best"],
                best_step=run["best_step"],
                history=[(entry["step"], entry["eval"]) for entry in run["history"] if "eval" in entry],
            )
        )

    def _write_output(self, model: torch.nn.Module, raw_config: dict, directory: Path, card: str) -> None:
        write_checkpoint(self.output, raw_config, model.state_dict(), directory, {"README.md": card})

    def _write_run_file(self, directory: Path, data: dict[str, Any], total_steps: int) -> None:
        run = {
            "model": str(directory),
            "teacher": None if self.teacher is None else self.teacher.model,
            "options": self.options.to_dict(),
            "config": self.config.to_dict(),
            "data": data,
            "total_steps": total_steps,
        }
        write_text_atomically(self.state_dir / RUN_FILE, json.dumps(run, indent=2, default=str) + "\n", "run file")

    def _write_log(self, run: dict[str, Any]) -> None:
        text = "".join(json.dumps(entry) + "\n" for entry in run["history"])
        write_text_atomically(self.state_dir / LOG_FILE, text, "training log")

    def _save_state(
        self,
        model: torch.nn.Module,
        optimizer: torch.optim.Optimizer,
        scheduler: Any,
        run: dict[str, Any],
        fingerprint: str,
    ) -> None:
        state = {
            "format": STATE_FORMAT,
            "config": self._resumable_config(),
            "data": fingerprint,
            "run": {key: value for key, value in run.items() if key != "history"},
            "model": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "scheduler": scheduler.state_dict(),
            "python_random": random.getstate(),
            "torch_random": torch.get_rng_state(),
        }
        with atomic_output(self.state_dir / STATE_FILE, "training state") as temporary:
            torch.save(state, temporary)
        self._write_log(run)

    def _resumable_config(self) -> dict[str, Any]:
        settings = {**self.config.to_dict(), **self.options.to_dict()}
        for name in ("show_progress", "device", "cache_dir"):  # where it runs, not what it computes
            settings.pop(name)
        settings["teacher"] = None if self.teacher is None else self.teacher.model
        settings["student_layers"] = (
            self.student_layers if isinstance(self.student_layers, (int, type(None))) else list(self.student_layers)
        )
        return settings

    def _restore(
        self, model: torch.nn.Module, optimizer: torch.optim.Optimizer, scheduler: Any, fingerprint: str
    ) -> dict[str, Any]:
        path = self.state_dir / STATE_FILE
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle's, zipfile's and its own errors for a damaged file
            raise FileProblem(
                f"{path}: cannot read the saved training state ({type(exc).__name__}); overwrite to start over"
            ) from None
        if not isinstance(state, dict):
            raise FileProblem(f"{path}: not a training state this version can resume")
        if state.get("format") != STATE_FORMAT:
            raise FileProblem(f"{path}: not a training state this version can resume")
        saved, now = state["config"], self._resumable_config()
        changed = [name for name in now if saved.get(name) != now[name]]
        if changed:
            name = changed[0]
            raise ValueError(
                f"cannot resume {path}: {name} was {saved.get(name)!r}, now {now[name]!r} "
                "(resume with the same settings, or overwrite to start over)"
            )
        if state["data"] != fingerprint:
            raise ValueError(f"cannot resume {path}: the training data changed since the run was saved")
        model.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        scheduler.load_state_dict(state["scheduler"])
        random.setstate(state["python_random"])
        torch.set_rng_state(state["torch_random"])
        run = dict(state["run"])
        log = self.state_dir / LOG_FILE
        history = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []
        run["history"] = [entry for entry in history if entry["step"] <= run["step"]]
        return run


def _require_finite(
    values: torch.Tensor, what: str, step: int, lists: Sequence[Any], groups: Sequence[QueryGroup]
) -> None:
    """Stop the run before a step whose ``what`` (the loss, the gradient norm) is not finite changes the weights."""
    flat = values.detach().float().flatten()
    finite = torch.isfinite(flat)
    if bool(finite.all()):
        return
    rows = ", ".join(groups[item.group].where for item in lists[:5]) + (", ..." if len(lists) > 5 else "")
    cause = (
        "labels or teacher scores the loss cannot hold, or logits that overflowed"
        if what == "loss"
        else "a learning rate too high for these weights, or an overflow in the backward pass (try --dtype float32)"
    )
    raise TrainingDivergedError(
        f"step {step}: the {what} is not finite ({flat[~finite][0].item()}) "
        f"for the lists of {rows}: {cause}; stopped before changing the weights, nothing non-finite was written"
    )


def _hold_out(data: TrainingData, fraction: float, seed: int) -> tuple[TrainingData, list[QueryGroup]]:
    """Set aside ``fraction`` of the queries (all groups of a held-out query) for evaluation."""
    queries = sorted({group.query for group in data.groups})
    held = set(random.Random(f"hold-out:{seed}").sample(queries, max(1, round(fraction * len(queries)))))
    kept = [group for group in data.groups if group.query not in held]
    held_out = [
        group
        for group in data.groups
        if group.query in held and (group.labels is None or any(label > 0 for label in group.labels))
    ]
    return data.with_groups(kept, {"queries held out for evaluation": len(data.groups) - len(kept)}), held_out


def _usable(data: TrainingData, loss: ListLoss) -> TrainingData:
    """The groups ``loss`` can learn from; a group missing what it needs is an error naming its row, groups that
    cannot contribute (nothing relevant, a single document) are set aside and counted."""
    kept, skipped = [], {}
    for group in data.groups:
        if loss.needs == LABELS:
            if group.labels is None:
                raise DatasetError(
                    f"{group.where}: loss {loss.name!r} needs relevance labels (a triplet, 'label' or "
                    "'labels'); lists without labels need a teacher and a distillation loss"
                )
            if isinstance(loss, BinaryCrossEntropyLoss) and any(not 0 <= label <= 1 for label in group.labels):
                bad = next(label for label in group.labels if not 0 <= label <= 1)
                raise DatasetError(
                    f"{group.where}: loss 'bce' needs labels in 0..1, got {bad:g} (graded labels: use "
                    "'lambda' or 'softmax')"
                )
            if not any(label > 0 for label in group.labels):
                skipped["queries without a relevant document"] = (
                    skipped.get("queries without a relevant document", 0) + 1
                )
                continue
        elif group.teacher is None:
            raise DatasetError(
                f"{group.where}: loss {loss.name!r} needs teacher scores: give a teacher model or a "
                "column of teacher logits ('scores', or 'score' on labelled pairs)"
            )
        if len(group.documents) < 2 and not isinstance(loss, BinaryCrossEntropyLoss):
            skipped["queries with a single document"] = skipped.get("queries with a single document", 0) + 1
            continue
        kept.append(group)
    if not kept:
        reasons = {**data.skipped, **skipped}
        why = ", ".join(f"{n} {r}" for r, n in reasons.items()) or "the data holds no query"
        raise DatasetError(f"{data.source}: no query left to train on ({why})")
    return data.with_groups(kept, skipped)
