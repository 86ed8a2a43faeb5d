"""What a rerank server accepts: served model names, the API key, request limits and batching.

Framework-free, so every server (FastAPI here, a Ray Serve deployment) applies the same rules and messages.
"""

from __future__ import annotations

import hmac
import os
from dataclasses import dataclass, field
from pathlib import PurePath
from typing import Sequence

API_KEY_ENV_VAR = "JINA_LOCAL_RERANK_API_KEY"
DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
DEFAULT_MAX_DOCUMENT_CHARS = 100_000
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_CONCURRENT_BATCHES = 1


class RequestRejected(Exception):
    """A request the server refuses: ``status_code`` is the HTTP status, the message says which rule it broke."""

    def __init__(self, status_code: int, detail: str) -> None:
        super().__init__(detail)
        self.status_code = status_code
        self.detail = detail


def default_served_names(model: str | os.PathLike[str]) -> tuple[str, ...]:
    """The model's last path component, then the id as given (``jinaai/x`` -> ``x``, ``jinaai/x``).

    The short name comes first because responses report it, as Jina's hosted API names its models.
    """
    name = os.fspath(model)
    last = PurePath(name.rstrip("/\\")).name
    return (last, name) if last and last != name else (name,)


@dataclass(frozen=True)
class ServerSettings:
    """How a server treats requests.

    ``served_model_names``: the names a request's ``model`` may take (the first is reported when a request names
    none). ``api_key``: the bearer token every scoring request must carry (None: no auth). Limits:
    ``max_documents`` per request, ``max_request_bytes`` of request body, ``max_document_chars`` characters per
    document and for the query. ``batching``: merge concurrent requests into shared scoring calls, waiting at
    most ``batch_wait_ms`` milliseconds for more requests to join a batch, with at most ``batch_concurrency``
    batches scored at a time.
    """

    served_model_names: tuple[str, ...]
    api_key: str | None = field(default=None, repr=False)
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_document_chars: int = DEFAULT_MAX_DOCUMENT_CHARS
    batching: bool = True
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    batch_concurrency: int = DEFAULT_CONCURRENT_BATCHES

    def __post_init__(self) -> None:
        if isinstance(self.served_model_names, str) or not self.served_model_names:
            raise ValueError("served_model_names must be a non-empty sequence of names")
        object.__setattr__(self, "served_model_names", tuple(self.served_model_names))
        for name in ("max_documents", "max_request_bytes", "max_document_chars", "batch_concurrency"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        if self.batch_wait_ms < 0:
            raise ValueError(f"batch_wait_ms must be >= 0, got {self.batch_wait_ms}")
        if self.api_key == "":
            raise ValueError("api_key must not be empty; pass None for no authentication")

    def check_api_key(self, token: str | None) -> None:
        """Raise 401 unless auth is off or ``token`` (the bearer token, None if absent) is the key."""
        if self.api_key is None:
            return
        if token is None:
            raise RequestRejected(401, "missing API key: send 'Authorization: Bearer <key>'")
        if not hmac.compare_digest(token.encode(), self.api_key.encode()):
            raise RequestRejected(401, "invalid API key")

    def resolve_model(self, requested: str | None) -> str:
        """The model name to report for a request asking for ``requested``; 404 for a name not served."""
        if requested is None:
            return self.served_model_names[0]
        if requested not in self.served_model_names:
            served = ", ".join(repr(name) for name in self.served_model_names)
            raise RequestRejected(404, f"model {requested!r} is not served here; served models: {served}")
        return requested

    def check_request(self, query: str, documents: Sequence[str], field_name: str = "documents") -> None:
        """Raise 422 for an empty query, 413 for too many documents or a query/document over the character limit.

        ``field_name`` is the request field that holds the documents, for the messages.
        """
        if not query.strip():
            raise RequestRejected(422, "query must not be empty")
        if len(query) > self.max_document_chars:
            raise RequestRejected(
                413, f"query has {len(query)} characters, over the limit of {self.max_document_chars}"
            )
        if len(documents) > self.max_documents:
            raise RequestRejected(
                413, f"request has {len(documents)} {field_name}, over the limit of {self.max_documents}"
            )
        for index, doc in enumerate(documents):
            if len(doc) > self.max_document_chars:
                raise RequestRejected(
                    413,
                    f"{field_name}[{index}] has {len(doc)} characters, over the limit of {self.max_document_chars}",
                )
