"""The settings of a training run: one frozen, validated object, with defaults for fine-tuning a pretrained
checkpoint (one epoch of AdamW at a small learning rate, warmup then linear decay, lists of one positive and
seven hard negatives, 16k tokens per step). Lengths and budgets are in tokens.

Each setting's flag, default and help are declared once, on its field (:func:`~jina_local_rerank.flags.setting`):
``train`` and ``distill`` build their flags from them. The engine settings (model, device, dtype, lengths,
forward-pass budget) are the :class:`~jina_local_rerank.options.RerankerOptions` of the model being trained; these
are the rest. No torch: ``--help`` stays fast.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from ..flags import NO_FLAG, checked_int, none_or, number, positive_int, setting
from ..validation import check_choice, check_number, check_optional_positive_int, check_positive_int

if TYPE_CHECKING:
    from ..progress import Progress

# The objectives of losses.py, by name (kept here so that the command line's parser imports no torch).
LOSS_NAMES = ("softmax", "bce", "lambda", "margin-mse", "kl")
DEFAULT_LOSS = "softmax"
DISTILLATION_LOSS = "margin-mse"
DEFAULT_MARGIN = 0.0
DEFAULT_LEARNING_RATE = 2e-5
DISTILLATION_LEARNING_RATE = 5e-5
DEFAULT_NEGATIVES = 7
DEFAULT_STEP_TOKENS = 16384
# Tokens per forward pass of training. Their activations are held for the backward pass (about 40 KB per token and
# layer in fp32: 0.6 GB for tiny at this budget), so the budget, not the step, sets the memory a run needs; the
# passes of a step add up their gradients (benchmarks/training.py --defaults measures both).
DEFAULT_BATCH_TOKENS = 4096
# Training pairs are truncated to this window unless max_length says otherwise: the usual cross-encoder window,
# affordable per step; long-document fine-tuning raises it (with activation_checkpointing).
DEFAULT_TRAINING_MAX_LENGTH = 512
# The seeds torch's generators take.
SEEDS = range(-(2**63), 2**64)
# The help sections of ``train --help`` and ``distill --help``.
DATA = "data"
TRAINING = "training"
# The range of every number setting (check_number's low, high and open_low): the object and its flag check it.
_RANGES: dict[str, dict[str, Any]] = {
    "learning_rate": {"open_low": True},
    "weight_decay": {},
    "warmup_ratio": {"high": 1.0},
    "max_grad_norm": {},
    "temperature": {"open_low": True},
    "mining_margin": {},
    "eval_fraction": {"high": 0.5},
}


def check_seed(value: Any, name: str = "seed") -> int:
    """``value`` if it is an integer torch's generators take (from -2**63 to 2**64-1), else raise naming ``name``."""
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be an integer, got {type(value).__name__}")
    if value not in SEEDS:
        raise ValueError(f"{name} must be from -2**63 to 2**64-1, got {value}")
    return value


@dataclass(frozen=True)
class TrainingConfig:
    """How a :class:`~jina_local_rerank.training.Trainer` trains.

    - ``epochs``: passes over the training queries (each pass draws every query's list anew).
    - ``learning_rate``: AdamW's peak rate, reached after ``warmup_ratio`` of the steps, then decayed linearly;
      ``weight_decay`` applies to weight matrices (not biases and norms); ``max_grad_norm`` clips (0: off).
    - ``loss``: ``softmax``, ``bce``, ``lambda``, ``margin-mse`` or ``kl`` (see
      :mod:`~jina_local_rerank.training.losses`); ``temperature`` is ``kl``'s.
    - ``negatives``: documents per query besides the positive; mined with BM25 where the data has fewer, skipping
      likely false negatives (``mining_margin``, None: judged-relevant documents only).
    - ``step_tokens``: tokens per optimizer step, packed without padding; ``batch_tokens``: tokens per forward
      pass within a step (gradient accumulation), which sets the memory of training: activations are held for
      the backward pass. The options' ``max_batch_tokens`` is the evaluation's scoring pass.
    - ``seed``: the data order, the lists and the initialisation of anything random.
    - ``eval_every``: steps between evaluations (None: at the end of each epoch); the best checkpoint by NDCG@10
      (or Spearman with the teacher, without judgments) is the output. ``eval_top_k`` BM25 candidates per query
      for a BEIR evaluation set, ``eval_max_queries`` caps its queries, ``eval_fraction`` holds out that share
      of the training queries when no evaluation set is given.
    - ``save_every``: steps between saves of the resumable state (also saved at each evaluation and on Ctrl-C).
    - ``activation_checkpointing``: recompute each layer's activations in the backward pass (long documents:
      memory for speed).
    - ``teacher_column``: the data's column of teacher logits (default ``scores``, or ``score`` on pairs).
    - ``show_progress``: the progress bars on stderr (``"auto"``: once the work runs a few seconds).
    """

    epochs: int = setting(1, "passes over the training queries", group=TRAINING, type=positive_int)
    learning_rate: float = setting(
        DEFAULT_LEARNING_RATE, "AdamW peak learning rate", group=TRAINING, type=number(**_RANGES["learning_rate"])
    )
    weight_decay: float = setting(0.01, "AdamW weight decay", group=TRAINING, type=number(**_RANGES["weight_decay"]))
    warmup_ratio: float = setting(
        0.1, "share of steps warming up", group=TRAINING, type=number(**_RANGES["warmup_ratio"])
    )
    max_grad_norm: float = setting(
        1.0,
        "gradient clipping norm, 0 for none (default: 1.0)",
        group=TRAINING,
        type=number(**_RANGES["max_grad_norm"]),
    )
    loss: str = setting(DEFAULT_LOSS, "training objective", group=TRAINING, choices=LOSS_NAMES)
    temperature: float = setting(
        1.0, "softmax temperature of the kl loss", group=TRAINING, type=number(**_RANGES["temperature"])
    )
    negatives: int = setting(
        DEFAULT_NEGATIVES,
        "documents per query besides the positive; BM25-mined where the data has fewer",
        group=DATA,
        type=positive_int,
    )
    mining_margin: float | None = setting(
        DEFAULT_MARGIN,
        "skip mined candidates scored above the positive by more than this fraction of its BM25 score; 'none' "
        "keeps them (judged-relevant documents are always skipped; default: 0)",
        group=DATA,
        type=none_or(number(**_RANGES["mining_margin"])),
    )
    step_tokens: int = setting(
        DEFAULT_STEP_TOKENS,
        "tokens per optimizer step, packed without padding, run as forward passes of at most --batch-tokens each",
        group=TRAINING,
        type=positive_int,
    )
    batch_tokens: int = setting(
        DEFAULT_BATCH_TOKENS,
        f"tokens per forward pass of training, which sets its memory: activations are held for the backward pass "
        f"(default: {DEFAULT_BATCH_TOKENS}; a list over it runs in chunks of its pairs, a longer pair alone)",
        group=TRAINING,
        type=positive_int,
    )
    seed: int = setting(42, "data order and lists", group=TRAINING, type=checked_int(check_seed))
    eval_every: int | None = setting(
        None, "steps between evaluations (default: at each epoch's end)", group=TRAINING, type=positive_int
    )
    eval_top_k: int = setting(
        100, "BM25 candidates per query of a BEIR evaluation set", group=TRAINING, type=positive_int
    )
    eval_max_queries: int | None = setting(None, "evaluate at most N queries", group=TRAINING, type=positive_int)
    eval_fraction: float = setting(
        0.0,
        "without --eval, hold out this share of the training queries (default: 0, no evaluation)",
        group=DATA,
        type=number(**_RANGES["eval_fraction"]),
    )
    save_every: int | None = setting(
        500,
        "steps between saves of the resumable state (default: 500; also at each evaluation)",
        group=TRAINING,
        type=positive_int,
    )
    activation_checkpointing: bool = setting(
        False,
        "recompute activations in the backward pass: less memory for long documents",
        group=TRAINING,
        action="store_true",
    )
    teacher_column: str | None = setting(
        None, "the data's column of teacher logits (default: scores, or score on labelled pairs)", group=DATA
    )
    # The command line's --progress/--no-progress (cli/arguments.py), shared with the other commands.
    show_progress: Progress = setting(
        "auto", "the progress bars: 'auto' (once the work runs a few seconds), 'always' or 'never'", flag=NO_FLAG
    )

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs")
        for name, bounds in _RANGES.items():
            if not (name == "mining_margin" and self.mining_margin is None):
                check_number(getattr(self, name), name, **bounds)
        check_choice(self.loss, LOSS_NAMES, "loss")
        check_positive_int(self.negatives, "negatives")
        check_positive_int(self.step_tokens, "step_tokens")
        check_positive_int(self.batch_tokens, "batch_tokens")
        check_seed(self.seed)
        for name in ("eval_every", "eval_max_queries", "save_every"):
            check_optional_positive_int(getattr(self, name), name)
        check_positive_int(self.eval_top_k, "eval_top_k")
        if not isinstance(self.activation_checkpointing, bool):
            raise TypeError("activation_checkpointing must be True or False")
        if self.teacher_column is not None and (not isinstance(self.teacher_column, str) or not self.teacher_column):
            raise ValueError(f"teacher_column must be a non-empty string or None, got {self.teacher_column!r}")

    def replace(self, **changes: Any) -> TrainingConfig:
        """A copy with ``changes`` applied (and checked)."""
        return replace(self, **changes)

    def to_dict(self) -> dict[str, Any]:
        """Every setting by name (JSON values)."""
        return asdict(self)

    def run_settings(self) -> dict[str, Any]:
        """The settings that decide what a run computes, by name: all but ``show_progress``."""
        return {name: value for name, value in self.to_dict().items() if name != "show_progress"}
