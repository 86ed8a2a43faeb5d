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


class FileProblem(JinaLocalRerankError, ValueError):
    """An input file cannot be read, or an output file cannot be written; the message names the file."""


class DatasetError(JinaLocalRerankError, ValueError):
    """A dataset, run, training or pairs file is missing or malformed; the message names the file and the line
    (in a pairs file, the column or the row)."""


class InputError(JinaLocalRerankError, ValueError):
    """The ``rerank`` command's input could not be read as a query and documents; the message says where."""


class RequestRejected(JinaLocalRerankError):
    """A request the server refuses: ``status_code`` is the HTTP status, the message says which rule it broke;
    ``headers`` go with the answer (``Retry-After`` on a 429, ``WWW-Authenticate`` on a 401). No built-in type
    covers every status it stands for (400 to 503), so it derives from the family's base alone."""

    def __init__(self, status_code: int, detail: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail
        self.headers = headers
