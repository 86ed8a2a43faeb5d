"""Exception types: one per kind of failure, so callers can catch exactly what they expect."""

from __future__ import annotations


class JinaLocalRerankError(Exception):
    """Base class of every error raised by jina-local-rerank on purpose."""


class ModelNotFoundError(JinaLocalRerankError, FileNotFoundError):
    """The model could not be found: no such local directory, or a Hub id that is not cached while offline."""


class CheckpointError(JinaLocalRerankError, ValueError):
    """A checkpoint file is missing, unreadable, malformed or does not match the model's configuration.

    The message names the file and the key or, for weight problems, the tensor.
    """


class UnsupportedModelError(CheckpointError):
    """The checkpoint is not a JinaBERT cross-encoder (wrong architecture, position embedding or feed-forward)."""


class TrainingDivergedError(JinaLocalRerankError, ArithmeticError):
    """A training step's loss or gradients are not finite; the message names the step, the rows and the cause.
    Raised before the step changes the weights, so nothing non-finite is ever written."""


class MissingExtraError(JinaLocalRerankError, ModuleNotFoundError):
    """An optional feature's packages are not installed; the message names the extra and the pip command."""
