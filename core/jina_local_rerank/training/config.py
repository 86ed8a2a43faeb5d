"""The settings of a training run: one frozen, validated object, with defaults for fine-tuning a pretrained
checkpoint (one epoch of AdamW at a small learning rate, warmup then linear decay, lists of one positive and
seven hard negatives, 16k tokens per step). Lengths and budgets are in tokens.

The engine settings (model, device, dtype, lengths, forward-pass budget) are the
:class:`~jina_local_rerank.options.RerankerOptions` of the model being trained; these are the rest.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, replace
from typing import TYPE_CHECKING, Any

from ..validation import check_choice, check_optional_positive_int, check_positive_int

if TYPE_CHECKING:
    from ..progress import Progress

# The objectives of losses.py, by name (kept here so that the command line's parser imports no torch).
LOSS_NAMES = ("softmax", "bce", "lambda", "margin-mse", "kl")
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


def _check_number(value: Any, name: str, *, low: float = 0.0, high: float = math.inf, open_low: bool = False) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise TypeError(f"{name} must be a finite number, got {value!r}")
    if value < low or value > high or (open_low and value == low):
        bound = f"> {low}" if open_low else f">= {low}"
        raise ValueError(f"{name} must be {bound}" + (f" and <= {high}" if high < math.inf else "") + f", got {value}")
    return float(value)


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
    """

    epochs: int = 1
    learning_rate: float = DEFAULT_LEARNING_RATE
    weight_decay: float = 0.01
    warmup_ratio: float = 0.1
    max_grad_norm: float = 1.0
    loss: str = "softmax"
    temperature: float = 1.0
    negatives: int = DEFAULT_NEGATIVES
    mining_margin: float | None = DEFAULT_MARGIN
    step_tokens: int = DEFAULT_STEP_TOKENS
    batch_tokens: int = DEFAULT_BATCH_TOKENS
    seed: int = 42
    eval_every: int | None = None
    eval_top_k: int = 100
    eval_max_queries: int | None = None
    eval_fraction: float = 0.0
    save_every: int | None = 500
    activation_checkpointing: bool = False
    teacher_column: str | None = None
    show_progress: Progress = "auto"

    def __post_init__(self) -> None:
        check_positive_int(self.epochs, "epochs")
        _check_number(self.learning_rate, "learning_rate", open_low=True)
        _check_number(self.weight_decay, "weight_decay")
        _check_number(self.warmup_ratio, "warmup_ratio", high=1.0)
        _check_number(self.max_grad_norm, "max_grad_norm")
        check_choice(self.loss, LOSS_NAMES, "loss")
        _check_number(self.temperature, "temperature", open_low=True)
        check_positive_int(self.negatives, "negatives")
        if self.mining_margin is not None:
            _check_number(self.mining_margin, "mining_margin")
        check_positive_int(self.step_tokens, "step_tokens")
        check_positive_int(self.batch_tokens, "batch_tokens")
        if isinstance(self.seed, bool) or not isinstance(self.seed, int):
            raise TypeError(f"seed must be an integer, got {type(self.seed).__name__}")
        if self.seed not in SEEDS:
            raise ValueError(f"seed must be from -2**63 to 2**64-1, got {self.seed}")
        for name in ("eval_every", "eval_max_queries", "save_every"):
            check_optional_positive_int(getattr(self, name), name)
        check_positive_int(self.eval_top_k, "eval_top_k")
        _check_number(self.eval_fraction, "eval_fraction", high=0.5)
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
