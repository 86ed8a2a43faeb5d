"""``Trainer``: fine-tuning and distillation of a JinaBERT reranker; :meth:`Trainer.fit` is the whole run.

A run reads like nanoGPT's ``train.py``, one screen per stage. :meth:`Trainer._prepare`: the starting checkpoint
(for distillation, a student built from its teacher), the data (read, hard negatives mined, teacher-scored), the
steps of every epoch, AdamW with warmup and linear decay. :meth:`Trainer._train`, the loop: packed forward passes
(bf16 autocast on CUDA) whose gradients add up to one step, clipping, the optimizer step, periodic evaluation
keeping the best checkpoint as the output, and saves of the resumable state. :meth:`Trainer._finish`: the output
evaluated as saved. :class:`RunState` is where the run stands. The output folder holds only the checkpoint and its
model card; what resuming needs (weights in fp32, optimizer, schedule, step, random states) and the log live in
``<output>.training/``.
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
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch

from ..checkpoint.hub import public_model_name
from ..checkpoint.loading import load_checkpoint
from ..checkpoint.writer import source_config, write_checkpoint
from ..engine.devices import resolve_device
from ..engine.scoring_engine import EngineKey, ScoringEngine
from ..engine.tokenization import PairTokenizer
from ..errors import DatasetError, FileProblem, TrainingDivergedError
from ..files.user_files import atomic_output, check_output_folder, write_text_atomically
from ..options import TEXT_AFFIXES, RerankerOptions, logit_options, pair_lengths
from ..progress import Progress, progress_bar
from .batches import EncodedGroup, TrainingList, collate, encode_groups, micro_batches, plan_epoch
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


# The RunState fields a state file holds, under the names every release has written (the log file holds the history).
_SAVED_FIELDS = ("step", "tokens", "seconds", "before", "best", "best_step")


@dataclass
class RunState:
    """Where a run stands: the steps done, the tokens and seconds they took, the evaluation before training, the
    best one and its step, the evaluation of the saved output (at the end), and the log's entries (one per step,
    one per evaluation). The state file holds all but the log and ``after``; the log file holds the log."""

    step: int = 0
    tokens: int = 0
    seconds: float = 0.0
    before: dict[str, float] = field(default_factory=dict)
    best: dict[str, float] = field(default_factory=dict)
    best_step: int | None = None
    after: dict[str, float] = field(default_factory=dict)
    history: list[dict[str, Any]] = field(default_factory=list)

    def saved(self) -> dict[str, Any]:
        """What the state file holds of it, under the keys every release has written."""
        return {name: getattr(self, name) for name in _SAVED_FIELDS}

    @classmethod
    def from_saved(cls, saved: Mapping[str, Any], history: list[dict[str, Any]]) -> RunState:
        """The state :meth:`saved` wrote, with the log's entries up to its step."""
        step = saved["step"]
        return cls(
            **{name: saved[name] for name in _SAVED_FIELDS},
            history=[entry for entry in history if entry["step"] <= step],
        )

    def record_step(
        self, epoch: int, loss: float, learning_rate: float, tokens: int, seconds: float, total_steps: int
    ) -> StepReport:
        """Count the next step done (its mean loss per list, learning rate, tokens and seconds) and log it."""
        self.step += 1
        self.tokens += tokens
        self.seconds += seconds
        self.history.append(
            {"step": self.step, "loss": loss, "lr": learning_rate, "tokens": tokens, "seconds": seconds}
        )
        return StepReport(self.step, total_steps, epoch, loss, learning_rate, tokens, tokens / seconds)


@dataclass
class _Run:
    """What a run prepares before its first step and holds to its end; lengths are in tokens."""

    directory: Path  # the starting checkpoint, whose format and files the output copies
    raw_config: dict[str, Any]  # its config.json
    device: torch.device
    engine: ScoringEngine  # the model being trained, for evaluation
    autocast: torch.dtype | None  # the compute dtype of training
    max_length: int
    max_query_length: int
    eval_batch_tokens: int
    show_progress: Progress
    loss: ListLoss
    train: TrainingData
    evaluator: RerankingEvaluator | None
    encoded: list[EncodedGroup]
    data_summary: dict[str, Any]
    fingerprint: str  # of the training data, which a resumed run must find unchanged
    plan: list[tuple[int, list[TrainingList]]]  # every step's epoch and lists
    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler

    @property
    def total_steps(self) -> int:
        return len(self.plan)

    @functools.cached_property
    def epoch_ends(self) -> set[int]:
        """The steps (1-based) that end an epoch."""
        plan = self.plan
        return {i + 1 for i in range(len(plan)) if i + 1 == len(plan) or plan[i + 1][0] != plan[i][0]}

    def evaluate(self, engine: ScoringEngine, description: str) -> dict[str, float]:
        """The evaluator's metrics of ``engine`` at the run's lengths."""
        assert self.evaluator is not None
        return self.evaluator(
            engine,
            max_length=self.max_length,
            max_query_length=self.max_query_length,
            max_batch_tokens=self.eval_batch_tokens,
            show_progress=self.show_progress,
            description=description,
        )


# How the Trainer's messages name the models of a run; a command passes its flags instead.
MODEL_ARGUMENTS = {"model": "model", "teacher": "teacher", "student_layers": "student_layers"}


def check_run_models(
    model: str | None,
    teacher: str | RerankerOptions | None,
    student_layers: int | Sequence[int] | None,
    names: Mapping[str, str] = MODEL_ARGUMENTS,
) -> None:
    """The models given make a run: a model to train (distilling ``teacher`` into it, if given), or a teacher and
    the ``student_layers`` of it that make a new student. Else ``ValueError``, naming the arguments by ``names``."""
    if student_layers is not None:
        if model is not None:
            raise ValueError(
                f"give {names['model']} (the student) or {names['student_layers']} (a student made of the "
                "teacher's layers), not both"
            )
        if teacher is None:
            raise ValueError(
                f"{names['student_layers']} builds the student from the teacher's layers: give {names['teacher']}"
            )
    elif model is None and teacher is not None:
        raise ValueError(
            f"give {names['student_layers']} to build the student from the teacher's layers, or {names['model']} "
            "to train one"
        )
    elif model is None:
        raise ValueError(
            f"give {names['model']}, the model to train (or {names['teacher']} and {names['student_layers']} to "
            "distill into a new one)"
        )


def _options(value: str | os.PathLike[str] | RerankerOptions | None, base: RerankerOptions) -> RerankerOptions:
    if isinstance(value, RerankerOptions):
        return value
    return base.replace(model=None if value is None else os.fspath(value))


def _adamw(
    model: torch.nn.Module, cfg: TrainingConfig, total_steps: int
) -> tuple[torch.optim.Optimizer, torch.optim.lr_scheduler.LambdaLR]:
    """AdamW (no decay on biases and norms) with linear warmup then linear decay over ``total_steps``."""
    matrices = [p for p in model.parameters() if p.ndim >= 2]
    vectors = [p for p in model.parameters() if p.ndim < 2]
    groups = [{"params": matrices, "weight_decay": cfg.weight_decay}, {"params": vectors, "weight_decay": 0.0}]
    try:  # the fused kernel: 7x faster than the loop of tensor operations on a CPU (and faster on GPUs)
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate, fused=True)
    except RuntimeError:  # a device without the fused kernel
        optimizer = torch.optim.AdamW(groups, lr=cfg.learning_rate)
    warmup = round(cfg.warmup_ratio * total_steps)
    schedule = functools.partial(_lr_factor, warmup=warmup, total=total_steps)
    return optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, schedule)


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
        check_run_models(self.options.model, self.teacher, student_layers)
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
        random.seed(self.config.seed)
        torch.manual_seed(self.config.seed)
        run = self._prepare()
        state = self._restore(run) if self.resume else self._start(run)
        self._train(run, state, on_step)
        self._finish(run, state)
        return TrainingResult(
            self.output,
            state.step,
            run.total_steps,
            state.tokens,
            state.seconds,
            run.data_summary,
            state.before,
            state.best,
            state.after,
            state.best_step,
        )

    def _prepare(self) -> _Run:
        """The state folder, the starting model, the data tokenized, every step planned and the optimizer."""
        cfg = self.config
        device = resolve_device(self.options.device)
        autocast = _autocast_dtype(self.options.dtype, device)
        self._prepare_state_folder()
        directory, model = self._starting_model(device)
        tokenizer = PairTokenizer.from_directory(directory, model.config.vocab_size)
        max_length, max_query_length = pair_lengths(
            self.options, model.config.max_position_embeddings, DEFAULT_TRAINING_MAX_LENGTH
        )
        engine_key = EngineKey(f"training:{self.output}", None, str(device), "float32")
        engine = ScoringEngine(engine_key, directory, model, tokenizer, torch.float32)
        loss = make_loss(cfg.loss, temperature=cfg.temperature)
        train, evaluator = self._data(loss, max_length, max_query_length)
        encoded, truncated = encode_groups(
            train.groups,
            tokenizer,
            max_length=max_length,
            max_query_length=max_query_length,
            show_progress=cfg.show_progress,
        )
        plan = [
            (epoch, lists)
            for epoch in range(cfg.epochs)
            for lists in plan_epoch(
                encoded, negatives=cfg.negatives, step_tokens=cfg.step_tokens, seed=cfg.seed, epoch=epoch
            )
        ]
        optimizer, scheduler = _adamw(model, cfg, len(plan))
        return _Run(
            directory=directory,
            raw_config=source_config(directory),
            device=device,
            engine=engine,
            autocast=autocast,
            max_length=max_length,
            max_query_length=max_query_length,
            eval_batch_tokens=max(self.options.max_batch_tokens, max_length),
            show_progress=cfg.show_progress,
            loss=loss,
            train=train,
            evaluator=evaluator,
            encoded=encoded,
            data_summary={**train.summary(), "documents truncated to max_length": truncated},
            fingerprint=_fingerprint(train.groups),
            plan=plan,
            optimizer=optimizer,
            scheduler=scheduler,
        )

    def _prepare_state_folder(self) -> None:
        if self.overwrite and not self.resume:  # what an earlier run left, and nothing else of the folder
            for name in (STATE_FILE, LOG_FILE, RUN_FILE):
                (self.state_dir / name).unlink(missing_ok=True)
            shutil.rmtree(self.state_dir / STUDENT_FOLDER, ignore_errors=True)
        self.state_dir.mkdir(parents=True, exist_ok=True)
        (self.state_dir / STATE_MARKER).touch()

    def _starting_model(self, device: torch.device) -> tuple[Path, torch.nn.Module]:
        """The starting checkpoint's folder (the model, or a student made of its teacher's layers) and its model,
        trainable on ``device``."""
        directory = self._starting_checkpoint()
        if self.output.resolve() == directory.resolve():
            raise FileProblem(f"output {self.output} is the starting checkpoint; choose another folder")
        if self.teacher is not None:  # replacing the output must never delete the teacher
            check_output_folder(self.output, overwrite=True, keep=[self._teacher_dir()], what="output")
        model = trainable_model(directory, device)
        if self.config.activation_checkpointing:
            enable_activation_checkpointing(model)
        return directory, model

    def _start(self, run: _Run) -> RunState:
        """A new run: the run file written, and the starting model evaluated (and written as the output so far)."""
        state = RunState()
        self._write_run_file(run)
        if run.evaluator is not None:
            state.before = state.best = run.evaluate(run.engine, "evaluating the starting model")
            state.best_step = 0
            state.history.append({"step": 0, "eval": state.before})
            self._write_output(run, state)
        return state

    def _train(self, run: _Run, state: RunState, on_step: Callable[[StepReport], None] | None) -> None:
        """The steps from ``state.step`` on, each followed by its evaluation or save when one is due; Ctrl-C saves
        after the step and raises ``KeyboardInterrupt``."""
        progress = progress_bar(
            "training", "step", self.config.show_progress, total=run.total_steps, initial=state.step
        )
        with progress, _stop_after_step() as request:
            for index in range(state.step, run.total_steps):
                epoch, lists = run.plan[index]
                started = time.perf_counter()
                loss, tokens, learning_rate = self._optimizer_step(run, index + 1, lists)
                report = state.record_step(
                    epoch, loss, learning_rate, tokens, time.perf_counter() - started, run.total_steps
                )
                progress.set_postfix(loss=f"{report.loss:.4f}", tok_s=f"{state.tokens / state.seconds:.0f}")
                progress.update(1)
                self._evaluate_or_save(run, state, report.step)
                if on_step is not None:
                    on_step(report)
                if request["stop"]:
                    self._save_state(run, state)
                    print(
                        f"saved the run at step {report.step} of {run.total_steps} in {self.state_dir}; "
                        "continue it with resume",
                        file=sys.stderr,
                    )
                    raise KeyboardInterrupt

    def _optimizer_step(self, run: _Run, step: int, lists: list[TrainingList]) -> tuple[float, int, float]:
        """One optimizer step over ``lists``: forward and backward passes of at most ``batch_tokens`` tokens whose
        gradients add up, clipping, AdamW and the schedule. Returns the mean loss per list, the tokens and the
        learning rate of the step."""
        cfg, model = self.config, run.engine.model
        step_loss, step_tokens = 0.0, 0
        for micro in micro_batches(run.encoded, lists, cfg.batch_tokens):
            batch = collate(run.encoded, micro, run.loss.needs, run.device)
            # The step's mean over lists, pass by pass.
            losses = forward_backward(
                model, batch, run.loss, weight=1 / len(lists), batch_tokens=cfg.batch_tokens, autocast=run.autocast
            )
            _require_finite(losses, "loss", step, micro, run.train.groups)
            step_loss += losses.sum().item()
            step_tokens += batch.num_tokens
        norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.max_grad_norm or math.inf)
        _require_finite(norm, "gradient norm", step, lists, run.train.groups)
        learning_rate = run.optimizer.param_groups[0]["lr"]
        run.optimizer.step()
        run.scheduler.step()
        run.optimizer.zero_grad(set_to_none=True)
        return step_loss / len(lists), step_tokens, learning_rate

    def _evaluate_or_save(self, run: _Run, state: RunState, step: int) -> None:
        """After ``step``: evaluate where due (writing the output on a new best) and save the state, or save it
        where only a save is due."""
        cfg, evaluator = self.config, run.evaluator
        due = cfg.eval_every is not None and step % cfg.eval_every == 0
        if evaluator is not None and (due or step in run.epoch_ends):
            metrics = run.evaluate(run.engine, f"evaluating step {step}")
            state.history.append({"step": step, "eval": metrics})
            if metrics[evaluator.metric] > state.best[evaluator.metric]:
                state.best, state.best_step = metrics, step
                self._write_output(run, state)
            self._save_state(run, state)
        elif cfg.save_every is not None and step % cfg.save_every == 0:
            self._save_state(run, state)

    def _finish(self, run: _Run, state: RunState) -> None:
        """The output: the best checkpoint (or the last, without evaluation), evaluated as saved; the log; no state
        left to resume."""
        if run.evaluator is None:
            self._write_output(run, state)
        else:
            saved = load_checkpoint(self.output, torch.float32, run.device)
            engine = ScoringEngine(run.engine.key, self.output, saved, run.engine.tokenizer, torch.float32)
            state.after = run.evaluate(engine, "evaluating the saved checkpoint")
            write_text_atomically(self.output / "README.md", self._card(run, state), "model card")
        self._write_log(state)
        (self.state_dir / STATE_FILE).unlink(missing_ok=True)

    # --- the pieces ---------------------------------------------------------------------------------------------

    def _starting_checkpoint(self) -> Path:
        if self.options.model is not None:
            return self.options.checkpoint_dir()
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
                lists = [(query.query, query.documents) for query in evaluator.queries]
                teacher, _ = scorer.score_lists(lists, show_progress=cfg.show_progress)
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
            data = data.with_groups([replace(group, teacher=None) for group in data.groups])
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
        groups = [group for group in data.groups if group.evaluable]
        return RerankingEvaluator.from_groups(groups[: cfg.eval_max_queries], data.source)

    def _card(self, run: _Run, state: RunState) -> str:
        options = {name: value for name, value in self.options.to_dict().items() if name != "model"}
        evaluator = run.evaluator
        return model_card(
            RunDescription(
                name=self.output.name,
                base_model=public_model_name(self.options.model or (self.teacher.model if self.teacher else "")),
                command="distill" if self.teacher is not None else "train",
                teacher=None if self.teacher is None else public_model_name(self.teacher.model),
                student_layers=self.layers_kept,
                data=run.data_summary,
                settings={**self.config.run_settings(), **options},
                steps=state.step,
                total_steps=run.total_steps,
                tokens=state.tokens,
                seconds=state.seconds,
                evaluation=None if evaluator is None else f"{evaluator.name}, {len(evaluator.queries)} queries",
                metric=None if evaluator is None else evaluator.metric,
                before=state.before,
                after=state.after or state.best,
                best_step=state.best_step,
                history=[(entry["step"], entry["eval"]) for entry in state.history if "eval" in entry],
            )
        )

    def _write_output(self, run: _Run, state: RunState) -> None:
        files = {"README.md": self._card(run, state)}
        write_checkpoint(self.output, run.raw_config, run.engine.model.state_dict(), run.directory, files)

    def _write_run_file(self, run: _Run) -> None:
        description = {
            "model": str(run.directory),
            "teacher": None if self.teacher is None else self.teacher.model,
            "options": self.options.to_dict(),
            "config": self.config.to_dict(),
            "data": run.data_summary,
            "total_steps": run.total_steps,
        }
        text = json.dumps(description, indent=2, default=str) + "\n"
        write_text_atomically(self.state_dir / RUN_FILE, text, "run file")

    def _write_log(self, state: RunState) -> None:
        text = "".join(json.dumps(entry) + "\n" for entry in state.history)
        write_text_atomically(self.state_dir / LOG_FILE, text, "training log")

    def _save_state(self, run: _Run, state: RunState) -> None:
        saved = {
            "format": STATE_FORMAT,
            "config": self._resumable_config(),
            "data": run.fingerprint,
            "run": state.saved(),
            "model": run.engine.model.state_dict(),
            "optimizer": run.optimizer.state_dict(),
            "scheduler": run.scheduler.state_dict(),
            "python_random": random.getstate(),
            "torch_random": torch.get_rng_state(),
        }
        with atomic_output(self.state_dir / STATE_FILE, "training state") as temporary:
            torch.save(saved, temporary)
        self._write_log(state)

    def _resumable_config(self) -> dict[str, Any]:
        """What must not change between a run and its resumption: everything that decides what it computes."""
        settings = {**self.config.run_settings(), **logit_options(self.options)}
        settings["teacher"] = None if self.teacher is None else self.teacher.model
        settings["student_layers"] = (
            self.student_layers if isinstance(self.student_layers, (int, type(None))) else list(self.student_layers)
        )
        return settings

    def _restore(self, run: _Run) -> RunState:
        """The saved run: its weights, optimizer, schedule and random states put back, and where it stood."""
        path = self.state_dir / STATE_FILE
        try:
            saved = torch.load(path, map_location="cpu", weights_only=True)
        except Exception as exc:  # torch raises pickle's, zipfile's and its own errors for a damaged file
            raise FileProblem(
                f"{path}: cannot read the saved training state ({type(exc).__name__}); overwrite to start over"
            ) from None
        if not isinstance(saved, dict) or saved.get("format") != STATE_FORMAT:
            raise FileProblem(f"{path}: not a training state this version can resume")
        then, now = saved["config"], self._resumable_config()
        changed = [name for name in now if then.get(name) != now[name]]
        if changed:
            name = changed[0]
            raise ValueError(
                f"cannot resume {path}: {name} was {then.get(name)!r}, now {now[name]!r} "
                "(resume with the same settings, or overwrite to start over)"
            )
        if saved["data"] != run.fingerprint:
            raise ValueError(f"cannot resume {path}: the training data changed since the run was saved")
        run.engine.model.load_state_dict(saved["model"])
        run.optimizer.load_state_dict(saved["optimizer"])
        run.scheduler.load_state_dict(saved["scheduler"])
        random.setstate(saved["python_random"])
        torch.set_rng_state(saved["torch_random"])
        log = self.state_dir / LOG_FILE
        history = [json.loads(line) for line in log.read_text(encoding="utf-8").splitlines()] if log.is_file() else []
        return RunState.from_saved(saved["run"], history)


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
    held_out = [group for group in data.groups if group.query in held and group.evaluable]
    return data.with_groups(kept, {"queries held out for evaluation": len(data.groups) - len(kept)}), held_out


def _usable(data: TrainingData, loss: ListLoss) -> TrainingData:
    """The groups ``loss`` can learn from; a group missing what it needs is an error naming its row, groups that
    cannot contribute (nothing relevant, a single document) are set aside and counted."""
    kept: list[QueryGroup] = []
    skipped: Counter = Counter()
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
                skipped["queries without a relevant document"] += 1
                continue
        elif group.teacher is None:
            raise DatasetError(
                f"{group.where}: loss {loss.name!r} needs teacher scores: give a teacher model or a "
                "column of teacher logits ('scores', or 'score' on labelled pairs)"
            )
        if len(group.documents) < 2 and not isinstance(loss, BinaryCrossEntropyLoss):
            skipped["queries with a single document"] += 1
            continue
        kept.append(group)
    if not kept:
        reasons = {**data.skipped, **skipped}
        why = ", ".join(f"{n} {r}" for r, n in reasons.items()) or "the data holds no query"
        raise DatasetError(f"{data.source}: no query left to train on ({why})")
    return data.with_groups(kept, skipped)
