"""What a rerank server accepts: served model names, the API key, hosts, request limits, batching and timeouts.

Framework-free, so every server (FastAPI here, a Ray Serve deployment) applies the same rules and messages. Every
limit lives here: its default, its check at start-up (:class:`ServerSettings` refuses values that could never
work) and its check on a request (the ``check_*`` methods raise :class:`RequestRejected` with the HTTP status).
Messages never repeat what the client sent (a body can be megabytes): they name the field, the index and the limit.
"""

from __future__ import annotations

import hmac
import math
import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePath
from typing import Any

from ..engine.tokenization import EncodedPairs
from ..errors import RequestRejected

API_KEY_ENV_VAR = "JINA_LOCAL_RERANK_API_KEY"
DEFAULT_MAX_DOCUMENTS = 1000
DEFAULT_MAX_CLIENT_BATCH_SIZE = 32  # TEI's default for its /rerank 'texts'
DEFAULT_MAX_REQUEST_BYTES = 8 * 1024 * 1024
# No cap on a document's characters by default: a document of any length up to the body limit is scored
# truncated (or chunked), and only the window's worth of its text is tokenized. Operators may set one.
DEFAULT_MAX_DOCUMENT_CHARS: int | None = None
DEFAULT_MAX_REQUEST_TOKENS = 65_536
DEFAULT_MAX_QUEUED_REQUESTS = 512  # TEI's default max_concurrent_requests
DEFAULT_BATCH_WAIT_MS = 2.0
MAX_BATCH_WAIT_MS = 1000.0
DEFAULT_CONCURRENT_BATCHES = 1
# A request of more tokens than this is scored in slices of at most this many tokens (whole sequences).
DEFAULT_BATCH_SLICE_TOKENS = 4096
DEFAULT_REQUEST_READ_TIMEOUT_S = 30.0
MAX_REQUEST_READ_TIMEOUT_S = 3600.0
RETRY_AFTER_S = 1
MAX_REPORTED_ERRORS = 10
# Host names a server without an API key answers for (a page on another site that rebinds its DNS name to
# 127.0.0.1 sends its own name in Host, so it is refused).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
# TEI's error_type for each status (its ErrorType enum, lowercased as TEI serializes it).
TEI_ERROR_TYPES = {
    400: "empty",
    413: "validation",
    422: "validation",
    424: "backend",
    429: "overloaded",
    503: "unhealthy",
}


def default_served_names(model: str | os.PathLike[str]) -> tuple[str, ...]:
    """The names a model is served under: a Hub id's last component, then the id (``jinaai/x`` -> ``x``,
    ``jinaai/x``); a local directory's name only, so no response ever shows a filesystem path.

    The short name comes first because responses report it, as Jina's hosted API names its models.
    """
    name = os.fspath(model)
    last = PurePath(name.rstrip("/\\")).name
    if Path(name).expanduser().is_dir() or os.path.isabs(name):
        return (last or "model",)
    return (last, name) if last and last != name else (name,)


def check_api_key_value(key: str, source: str) -> str:
    """``key`` if it can be sent as a bearer token (visible ASCII, not empty), else ``ValueError`` naming ``source``."""
    if not key:
        raise ValueError(f"{source} is empty; pass a key, or leave it unset for no authentication")
    if not all(33 <= ord(char) <= 126 for char in key):
        raise ValueError(
            f"{source} must be visible ASCII characters without spaces (HTTP headers carry nothing else, so any "
            "other key could never match)"
        )
    return key


def lone_surrogate_path(value: Any) -> str | None:
    """Where the first string with a lone surrogate (not encodable as UTF-8) is in parsed JSON, e.g.
    ``documents[3]`` or ``documents[0].text``; None if there is none. Iterative, so any nesting depth is fine."""
    stack: list[tuple[Any, str]] = [(value, "body")]
    while stack:
        item, path = stack.pop()
        if isinstance(item, str):
            if not item.isascii() and not _is_utf8_encodable(item):
                return path
        elif isinstance(item, list):
            stack.extend((entry, f"{path}[{index}]") for index, entry in reversed(list(enumerate(item))))
        elif isinstance(item, dict):
            for key in item:
                if not key.isascii() and not _is_utf8_encodable(key):
                    return f"a key of {path}"
            stack.extend(
                (entry, key if path == "body" else f"{path}.{key}") for key, entry in reversed(list(item.items()))
            )
    return None


def _is_utf8_encodable(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def validation_errors(errors: Sequence[dict[str, Any]], limit: int = MAX_REPORTED_ERRORS) -> list[dict[str, Any]]:
    """Validation errors as reported: ``type``, ``loc`` and ``msg`` of at most ``limit`` of them (never the input
    they were about), then one entry counting the rest."""
    reported = []
    for error in errors[:limit]:
        message = str(error.get("msg", ""))
        reason = (error.get("ctx") or {}).get("error")
        if error.get("type") == "json_invalid" and isinstance(reason, str):
            message = f"{message}: {reason}"
        reported.append({"type": error.get("type"), "loc": list(error.get("loc", ())), "msg": message[:500]})
    if len(errors) > limit:
        reported.append(
            {"type": "too_many_errors", "loc": ["body"], "msg": f"{len(errors) - limit} more errors not reported"}
        )
    return reported


def describe_errors(errors: Sequence[dict[str, Any]]) -> str:
    """One line for validation errors (TEI's ``error`` field): the first few as ``loc: msg``."""
    parts = []
    for error in errors:
        where = ".".join(str(part) for part in error["loc"] if part != "body") or "body"
        parts.append(error["msg"] if error["type"] == "too_many_errors" else f"{where}: {error['msg']}")
    return "; ".join(parts)


@dataclass(frozen=True)
class ServerSettings:
    """How a server treats requests.

        ``served_model_names``: the names a request's ``model`` may take (the first is reported when a request names
        none). ``api_key``: the bearer token every scoring request must carry (None: no auth). ``allowed_hosts``:
        the ``Host`` names answered when there is no API key (default: this machine's names; ``"*"``: any).

        Limits: ``max_documents`` per request (``max_client_batch_size`` for TEI's ``texts``), ``max_request_bytes``
        of request body, ``max_document_chars`` characters per document and for the query (None, the default: no cap
    beyond the body's; long documents are truncated or chunked as the model's window needs), ``max_request_tokens``
        tokens of all of a request's sequences (counted by the tokenizer before any scoring),
        ``max_queued_requests`` requests admitted at once (more get 429). ``auto_truncate``: what TEI's ``truncate``
        means when a request leaves it out. ``request_read_timeout_s``: seconds a client has to send a whole request
        (headers and body) once it connects or starts one.

        Batching: merge concurrent requests into shared scoring calls, waiting at most ``batch_wait_ms``
        milliseconds for more requests to join a batch, with at most ``batch_concurrency`` batches scored at a time;
        a request over ``batch_slice_tokens`` tokens (default 4096) is scored that many tokens at a time,
        beside the merged batches, so it never holds up small requests.
    """

    served_model_names: tuple[str, ...]
    api_key: str | None = field(default=None, repr=False)
    allowed_hosts: tuple[str, ...] = ()
    max_documents: int = DEFAULT_MAX_DOCUMENTS
    max_client_batch_size: int = DEFAULT_MAX_CLIENT_BATCH_SIZE
    max_request_bytes: int = DEFAULT_MAX_REQUEST_BYTES
    max_document_chars: int | None = DEFAULT_MAX_DOCUMENT_CHARS
    max_request_tokens: int = DEFAULT_MAX_REQUEST_TOKENS
    max_queued_requests: int = DEFAULT_MAX_QUEUED_REQUESTS
    auto_truncate: bool = True
    request_read_timeout_s: float = DEFAULT_REQUEST_READ_TIMEOUT_S
    batching: bool = True
    batch_wait_ms: float = DEFAULT_BATCH_WAIT_MS
    batch_concurrency: int = DEFAULT_CONCURRENT_BATCHES
    batch_slice_tokens: int = DEFAULT_BATCH_SLICE_TOKENS

    def __post_init__(self) -> None:
        if isinstance(self.served_model_names, str) or not self.served_model_names:
            raise ValueError("served_model_names must be a non-empty sequence of names")
        object.__setattr__(self, "served_model_names", tuple(self.served_model_names))
        if isinstance(self.allowed_hosts, str):
            raise ValueError("allowed_hosts must be a sequence of host names, not one string")
        object.__setattr__(self, "allowed_hosts", tuple(host.lower() for host in self.allowed_hosts))
        names = (
            "max_documents",
            "max_client_batch_size",
            "max_request_bytes",
            "max_request_tokens",
            "max_queued_requests",
            "batch_concurrency",
            "batch_slice_tokens",
        )
        for name in names:
            _check_count(getattr(self, name), name)
        if self.max_document_chars is not None:
            _check_count(self.max_document_chars, "max_document_chars")
        _check_number(self.batch_wait_ms, "batch_wait_ms", 0.0, MAX_BATCH_WAIT_MS)
        _check_number(self.request_read_timeout_s, "request_read_timeout_s", 0.0, MAX_REQUEST_READ_TIMEOUT_S)
        if not self.request_read_timeout_s > 0:
            raise ValueError(f"request_read_timeout_s must be > 0, got {self.request_read_timeout_s}")
        if self.api_key is not None:
            check_api_key_value(self.api_key, "api_key")

    # --- who may ask ---------------------------------------------------------------------------------------

    def check_host(self, host_header: str | None) -> None:
        """Raise 400 unless auth is on, any host is allowed, or ``host_header`` names an allowed host."""
        if self.api_key is not None or ANY_HOST in self.allowed_hosts:
            return
        host = _host_name(host_header or "")
        if host not in LOCAL_HOSTS and host not in self.allowed_hosts:
            raise RequestRejected(
                400,
                "the Host header names a host this server does not answer for without an API key; start it with "
                "--allowed-host NAME (or an API key) to serve requests addressed to another name",
            )

    @property
    def keyed(self) -> bool:
        """Whether requests must carry the API key."""
        return self.api_key is not None

    def check_authorization(self, header: str | None) -> None:
        """:meth:`check_api_key` on an ``Authorization`` header's value (None if absent): ``Bearer <key>``."""
        scheme, _, token = (header or "").partition(" ")
        self.check_api_key(token.strip() if scheme.lower() == "bearer" and token.strip() else None)

    def check_api_key(self, token: str | None) -> None:
        """Raise 401 unless auth is off or ``token`` (the bearer token, None if absent) is the key."""
        if self.api_key is None:
            return
        challenge = {"WWW-Authenticate": "Bearer"}
        if token is None:
            raise RequestRejected(401, "missing API key: send 'Authorization: Bearer <key>'", challenge)
        if not hmac.compare_digest(token.encode("utf-8", "replace"), self.api_key.encode()):
            raise RequestRejected(401, "invalid API key", challenge)

    def check_capacity(self, in_flight: int) -> None:
        """Raise 429 (with ``Retry-After``) when ``in_flight`` admitted requests already fill the queue."""
        if in_flight >= self.max_queued_requests:
            raise RequestRejected(
                429,
                f"the server is at its limit of {self.max_queued_requests} requests in flight; retry shortly",
                {"Retry-After": str(RETRY_AFTER_S)},
            )

    def resolve_model(self, requested: str | None) -> str:
        """The model name to report for a request asking for ``requested``; 404 for a name not served."""
        if requested is None:
            return self.served_model_names[0]
        if requested not in self.served_model_names:
            served = ", ".join(repr(name) for name in self.served_model_names)
            raise RequestRejected(404, f"the requested model is not served here; served models: {served}")
        return requested

    # --- what they send ------------------------------------------------------------------------------------

    def check_body(self, body: Any, field_name: str, max_documents: int) -> None:
        """Checks on a parsed JSON body before its validation: 413 for more than ``max_documents`` entries in
        ``field_name`` (so a huge list is refused without validating each entry), 422 for a lone surrogate."""
        if isinstance(body, dict):
            entries = body.get(field_name)
            if isinstance(entries, list):
                self.check_document_count(len(entries), field_name, max_documents)
        where = lone_surrogate_path(body)
        if where is not None:
            raise RequestRejected(
                422, f"{where} is not valid Unicode text: it holds a lone surrogate (U+D800 to U+DFFF)"
            )

    def check_document_count(self, count: int, field_name: str, limit: int) -> None:
        """Raise 413 for ``count`` documents over ``limit``."""
        if count > limit:
            raise RequestRejected(413, f"request has {count} {field_name}, over the limit of {limit}")

    def check_request(
        self, query: str, documents: Sequence[str], field_name: str = "documents", max_documents: int | None = None
    ) -> None:
        """Raise 422 for an empty query, 413 for too many documents or a query/document over the character limit
        (when the settings set one).

        ``field_name`` is the request field that holds the documents, for the messages; ``max_documents``
        replaces the setting of that name (TEI's ``max_client_batch_size``).
        """
        if not query.strip():
            raise RequestRejected(422, "query must not be empty")
        self.check_document_count(len(documents), field_name, max_documents or self.max_documents)
        if self.max_document_chars is None:
            return
        if len(query) > self.max_document_chars:
            raise RequestRejected(
                413, f"query has {len(query)} characters, over the limit of {self.max_document_chars}"
            )
        for index, doc in enumerate(documents):
            if len(doc) > self.max_document_chars:
                raise RequestRejected(
                    413,
                    f"{field_name}[{index}] has {len(doc)} characters, over the limit of {self.max_document_chars}",
                )

    def check_encoding(
        self, encoded: EncodedPairs, max_length: int, field_name: str = "documents", truncation: bool = True
    ) -> None:
        """Checks on a request's token sequences, before any scoring: 413 over ``max_request_tokens``, and 413
        for documents longer than the ``max_length``-token window when ``truncation`` is not allowed."""
        tokens = sum(len(ids) for ids in encoded.input_ids)
        if tokens > self.max_request_tokens:
            raise RequestRejected(
                413,
                f"request is {tokens} tokens long, over the limit of {self.max_request_tokens} tokens per request; "
                "send fewer or shorter documents",
            )
        if not truncation and any(encoded.document_truncated):
            over = [index for index, cut in enumerate(encoded.document_truncated) if cut]
            shown = ", ".join(map(str, over[:MAX_REPORTED_ERRORS])) + (
                ", ..." if len(over) > MAX_REPORTED_ERRORS else ""
            )
            raise RequestRejected(
                413,
                f"{field_name} [{shown}] are longer than the model's window of {max_length} tokens; "
                "send truncate=true to score them truncated",
            )


def _host_name(header: str) -> str:
    """The host of a ``Host`` header value, lowercased, without its port (``[::1]:8080`` -> ``::1``)."""
    header = header.strip().lower()
    if header.startswith("["):
        return header[1:].split("]", 1)[0]
    return header.rsplit(":", 1)[0] if header.count(":") == 1 else header


def _check_count(value: Any, name: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be an integer >= 1, got {value!r}")


def _check_number(value: Any, name: str, low: float, high: float) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        raise ValueError(f"{name} must be a finite number, got {value!r}")
    if not low <= value <= high:
        raise ValueError(f"{name} must be between {low:g} and {high:g}, got {value:g}")
