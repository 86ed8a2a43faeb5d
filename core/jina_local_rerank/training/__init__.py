"""Fine-tuning and distillation of JinaBERT rerankers on your own data.

``Trainer(model, train=..., output=...).fit()`` fine-tunes a checkpoint; with a ``teacher`` it distills. The
output folder is a checkpoint in the input's format with a model card. The names below are imported on first
use, so ``import jina_local_rerank.training`` loads neither torch nor the data stack.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..lazy import lazy_exports

if TYPE_CHECKING:
    from ..testing.docstring_task import train_docstring_reranker
    from .config import TrainingConfig
    from .data import QueryGroup, TrainingData, load_training_data
    from .evaluator import EvalQuery, RerankingEvaluator
    from .losses import (
        BinaryCrossEntropyLoss,
        KLDivergenceLoss,
        LambdaLoss,
        MarginMSELoss,
        SoftmaxCrossEntropyLoss,
    )
    from .mining import mine_hard_negatives
    from .student import build_student, default_layers
    from .teacher import TeacherScorer
    from .trainer import StepReport, Trainer, TrainingResult

_EXPORTS = {
    "BinaryCrossEntropyLoss": ".losses",
    "EvalQuery": ".evaluator",
    "KLDivergenceLoss": ".losses",
    "LambdaLoss": ".losses",
    "MarginMSELoss": ".losses",
    "QueryGroup": ".data",
    "RerankingEvaluator": ".evaluator",
    "SoftmaxCrossEntropyLoss": ".losses",
    "StepReport": ".trainer",
    "TeacherScorer": ".teacher",
    "Trainer": ".trainer",
    "TrainingConfig": ".config",
    "TrainingData": ".data",
    "TrainingResult": ".trainer",
    "build_student": ".student",
    "default_layers": ".student",
    "load_training_data": ".data",
    "mine_hard_negatives": ".mining",
    "train_docstring_reranker": "..testing.docstring_task",
}

__all__ = sorted(_EXPORTS)

__getattr__, __dir__ = lazy_exports(__name__, _EXPORTS)
