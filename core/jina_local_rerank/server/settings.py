"""What a rerank server accepts: served model names, the API key, hosts, request limits, batching and timeouts.

Framework-free, so every server (FastAPI here, a Ray Serve deployment) applies the same rules and messages. Every
setting lives here: its default, its flag and help (``serve``'s flags are built from the fields), its check at
start-up (:class:`ServerSettings` refuses values that could never work) and its check on a request (the
``check_*`` methods raise :class:`RequestRejected` with the HTTP status). Messages never repeat what the client
sent (a body can be megabytes): they name the field, the index and the limit.
"""

from __future__ import annotations

import argparse
import hmac
import os
from collections.abc import Sequence
from dataclasses import MISSING, dataclass
from pathlib import Path, PurePath
from typing import Any

from ..engine.tokenization import EncodedPairs
from ..errors import RequestRejected
from ..flags import number, positive_int, setting
from ..validation import check_number, check_positive_int
from .merging import encoded_tokens

API_KEY_ENV_VAR = "JINA_LOCAL_RERANK_API_KEY"
# Defaults the micro-batcher shares with the settings.
DEFAULT_BATCH_WAIT_MS = 2.0
DEFAULT_CONCURRENT_BATCHES = 1
DEFAULT_BATCH_SLICE_TOKENS = 4096
MAX_BATCH_WAIT_MS = 1000.0
MAX_REQUEST_READ_TIMEOUT_S = 3600.0
RETRY_AFTER_S = 1
# At most this many validation errors, or indices of over-long documents, are listed in one answer.
MAX_REPORTED_ERRORS = 10
# Host names a server without an API key answers for (a page on another site that rebinds its DNS name to
# 127.0.0.1 sends its own name in Host, so it is refused).
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1")
ANY_HOST = "*"
# The help sections of ``serve`` the settings are listed under.
HTTP_SECTION = "HTTP"
LIMITS_SECTION = "limits (each answered with a 4xx JSON error)"
BATCHING_SECTION = "batching"


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


@dataclass(frozen=True)
class ServerSettings:
    """How a server treats requests: who may ask (served model names, the API key, allowed hosts), the limits
    on what they send, and how requests are batched.

    Each field's help says what it means (``jina-local-rerank serve --help`` lists them as flags). Sizes are in
    documents, characters, bytes or tokens as the name says; ``request_read_timeout_s`` is in seconds and
    ``batch_wait_ms`` in milliseconds. ``api_key`` None means no authentication. Invalid values raise
    ``ValueError`` naming the field.
    """

    served_model_names: tuple[str, ...] = setting(
        MISSING,
        "a name requests may pass as 'model'; repeatable (default: the model's name, and a Hub id as given)",
        flag="--served-model-name",
        group=HTTP_SECTION,
        action="append",
        metavar="NAME",
    )
    api_key: str | None = setting(
        None,
        f"require 'Authorization: Bearer KEY', KEY visible ASCII (default: ${API_KEY_ENV_VAR}; unset: no auth)",
        group=HTTP_SECTION,
        secret=True,
    )
    allowed_hosts: tuple[str, ...] = setting(
        (),
        f"a Host name served without an API key besides {', '.join(LOCAL_HOSTS[:-1])} and {LOCAL_HOSTS[-1]}; "
        f"repeatable; '{ANY_HOST}' for any",
        flag="--allowed-host",
        group=HTTP_SECTION,
        action="append",
        metavar="NAME",
    )
    request_read_timeout_s: float = setting(
        30.0,
        "close a connection whose request (headers and body) has not arrived whole within this many seconds",
        flag="--request-read-timeout",
        group=HTTP_SECTION,
        type=number(0.0, MAX_REQUEST_READ_TIMEOUT_S, open_low=True),
        metavar="SECONDS",
    )
    max_documents: int = setting(
        1000, "documents per Jina or Cohere request; 413 over it", group=LIMITS_SECTION, type=positive_int
    )
    max_client_batch_size: int = setting(
        32,
        "texts per TEI /rerank request, as TEI's --max-client-batch-size; 413 over it",
        group=LIMITS_SECTION,
        type=positive_int,
    )
    max_request_bytes: int = setting(
        8 * 1024 * 1024, "request body bytes; 413 over it", group=LIMITS_SECTION, type=positive_int
    )
    max_document_chars: int | None = setting(
        None,
        "characters per document and query, 413 over it (default: no cap besides --max-request-bytes; long "
        "documents are scored truncated, tokenizing only the window's worth of text)",
        group=LIMITS_SECTION,
        type=positive_int,
    )
    max_request_tokens: int = setting(
        65_536,
        "tokens of all of a request's sequences, counted before scoring; 413 over it",
        group=LIMITS_SECTION,
        type=positive_int,
    )
    max_queued_requests: int = setting(
        512,  # TEI's default max_concurrent_requests
        "scoring requests in flight at once; 429 with Retry-After over it",
        group=LIMITS_SECTION,
        type=positive_int,
    )
    auto_truncate: bool = setting(
        True,
        "what TEI's 'truncate' means when absent or null (default: on, as TEI)",
        group=LIMITS_SECTION,
        action=argparse.BooleanOptionalAction,
    )
    batch_wait_ms: float = setting(
        DEFAULT_BATCH_WAIT_MS,
        f"how long a batch waits for more requests, in milliseconds, 0 to {MAX_BATCH_WAIT_MS:g}",
        group=BATCHING_SECTION,
        type=number(0.0, MAX_BATCH_WAIT_MS),
    )
    batch_concurrency: int = setting(
        DEFAULT_CONCURRENT_BATCHES,
        "merged batches scored at the same time, each in its own thread",
        group=BATCHING_SECTION,
        type=positive_int,
    )
    batch_slice_tokens: int = setting(
        DEFAULT_BATCH_SLICE_TOKENS,
        "a request of more tokens is scored this many at a time beside the merged batches, so it never holds up "
        "small ones",
        group=BATCHING_SECTION,
        type=positive_int,
    )
    batching: bool = setting(
        True,
        "score each request on its own (no merging)",
        flag="--no-batching",
        group=BATCHING_SECTION,
        action="store_false",
    )

    def __post_init__(self) -> None:
        if isinstance(self.served_model_names, str) or not self.served_model_names:
            raise ValueError("served_model_names must be a non-empty sequence of names")
        object.__setattr__(self, "served_model_names", tuple(self.served_model_names))
        if isinstance(self.allowed_hosts, str):
            raise ValueError("allowed_hosts must be a sequence of host names, not one string")
        object.__setattr__(self, "allowed_hosts", tuple(host.lower() for host in self.allowed_hosts))
        counts = [
            "max_documents",
            "max_client_batch_size",
            "max_request_bytes",
            "max_request_tokens",
            "max_queued_requests",
            "batch_concurrency",
            "batch_slice_tokens",
        ]
        if self.max_document_chars is not None:
            counts.append("max_document_chars")
        for name in counts:
            value = getattr(self, name)
            try:
                check_positive_int(value, name)
            except (TypeError, ValueError):
                # Settings refuse any bad value with ValueError; this one message says both rules at once.
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}") from None
        try:
            check_number(self.batch_wait_ms, "batch_wait_ms", high=MAX_BATCH_WAIT_MS)
            check_number(
                self.request_read_timeout_s, "request_read_timeout_s", high=MAX_REQUEST_READ_TIMEOUT_S, open_low=True
            )
        except TypeError as exc:  # a number that is not finite: a bad setting like any other
            raise ValueError(str(exc)) from None
        if self.api_key is not None:
            check_api_key_value(self.api_key, "api_key")

    # --- who may ask ---------------------------------------------------------------------------------------

    def check_host(self, host_header: str | None) -> None:
        """Raise 400 unless auth is on, any host is allowed, or ``host_header`` names an allowed host."""
        if self.keyed or ANY_HOST in self.allowed_hosts:
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

    def has_capacity(self, in_flight: int) -> bool:
        """Whether another request may be admitted beside ``in_flight`` admitted ones."""
        return in_flight < self.max_queued_requests

    def check_capacity(self, in_flight: int) -> None:
        """Raise 429 (with ``Retry-After``) when ``in_flight`` admitted requests already fill the queue."""
        if not self.has_capacity(in_flight):
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
        tokens = encoded_tokens(encoded)
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
