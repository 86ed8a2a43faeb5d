"""The app's ASGI middlewares, outermost first: :class:`RequestLog` (request ids, access log, metrics, no 500
that closes a connection), :class:`HostGate` (the ``Host`` check), :class:`ApiKeyGate` (401 before the body is
read) and :class:`RequestBodyLimit` (413 before the app reads the body)."""

from __future__ import annotations

import logging
import re
import time
import uuid
from collections.abc import Sequence

from fastapi import Request
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from ..errors import RequestRejected
from .error_responses import error_response, rejection_response, route_path
from .metrics import ServerMetrics
from .settings import ServerSettings

access_logger = logging.getLogger("jina_local_rerank.access")
error_logger = logging.getLogger("jina_local_rerank.server")

# Routes that answer whatever the Host: probes and scrapers address a server by its IP; they hold no API.
PROBE_ROUTES = ("/health", "/ready", "/metrics")
REQUEST_ID_HEADER = "x-request-id"
REQUEST_ID_SCOPE_KEY = "jina_local_rerank.request_id"
# A client's own request id is kept when it is this safe to log and echo; otherwise a new one is made.
CLIENT_REQUEST_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def request_id(request: Request) -> str:
    """The id of ``request`` (also its ``X-Request-ID`` response header and access-log field)."""
    return request.scope.get(REQUEST_ID_SCOPE_KEY, "")


def _header(scope: Scope, name: bytes) -> str | None:
    value = dict(scope["headers"]).get(name)
    return None if value is None else value.decode("latin-1")


class RequestLog:
    """Outermost middleware: ids every request, writes its access-log line and counts it in the metrics.

    Every response carries ``X-Request-ID`` (the client's own if it sent a safe one). An exception that escapes
    the app is logged with its traceback and answered with a JSON 500 (when nothing was sent yet), so the
    keep-alive connection stays usable for the client's next request. ``routes``: the paths the metrics name;
    any other counts as ``other``.
    """

    def __init__(self, app: ASGIApp, metrics: ServerMetrics, routes: Sequence[str]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = frozenset(routes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        given = _header(scope, REQUEST_ID_HEADER.encode()) or ""
        rid = given if CLIENT_REQUEST_ID.fullmatch(given) else uuid.uuid4().hex
        scope[REQUEST_ID_SCOPE_KEY] = rid
        path = route_path(scope)
        status = 500
        started_response = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started_response
            if message["type"] == "http.response.start":
                started_response = True
                status = message["status"]
                message["headers"] = [*message.get("headers", []), (REQUEST_ID_HEADER.encode(), rid.encode())]
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        except Exception:
            error_logger.exception("request %s (%s %s) failed", rid, scope["method"], path)
            if not started_response:
                await error_response(scope, 500, "internal error")(scope, receive, send_with_id)
        finally:
            seconds = time.perf_counter() - started
            self.metrics.observe(path if path in self.routes else "other", status, seconds)
            client = "{}:{}".format(*scope["client"]) if scope.get("client") else "-"
            access_logger.info(
                '%s - "%s %s" %d %.1fms request_id=%s', client, scope["method"], path, status, 1000 * seconds, rid
            )


class HostGate:
    """ASGI middleware answering 400 to a request whose ``Host`` the settings do not answer for (see
    :meth:`ServerSettings.check_host`), before anything else runs; the probe routes answer whatever the Host."""

    def __init__(self, app: ASGIApp, settings: ServerSettings) -> None:
        self.app = app
        self.settings = settings

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and route_path(scope) not in PROBE_ROUTES:
            try:
                self.settings.check_host(_header(scope, b"host") or "")
            except RequestRejected as exc:
                await rejection_response(scope, exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class ApiKeyGate:
    """ASGI middleware answering 401 to a request for one of ``paths`` without the settings' API key, before its
    body is read, parsed or checked: a caller without the key learns nothing else about the server."""

    def __init__(self, app: ASGIApp, settings: ServerSettings, paths: Sequence[str]) -> None:
        self.app = app
        self.settings = settings
        self.paths = frozenset(paths)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and self.settings.keyed and route_path(scope) in self.paths:
            try:
                self.settings.check_authorization(_header(scope, b"authorization"))
            except RequestRejected as exc:
                await rejection_response(scope, exc)(scope, receive, send)
                return
        await self.app(scope, receive, send)


class RequestBodyLimit:
    """ASGI middleware answering 413 to a request whose body is over ``max_bytes``, before the app reads it.

    A declared ``Content-Length`` over the limit is refused without reading; a chunked body is counted as it
    arrives and refused as soon as it passes the limit, so memory stays bounded either way.
    """

    def __init__(self, app: ASGIApp, max_bytes: int) -> None:
        self.app = app
        self.max_bytes = max_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = dict(scope["headers"]).get(b"content-length")  # bytes: only ASCII digits are a length
        if declared is not None and declared.isdigit() and int(declared) > self.max_bytes:
            await self._refuse(scope, receive, send)
            return
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return  # the client went away (or was timed out) before sending its whole body
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_bytes:
                await self._refuse(scope, receive, send)
                return
            chunks.append(chunk)
            if not message.get("more_body", False):
                break
        body = b"".join(chunks)
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        await self.app(scope, replay, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        detail = f"request body is over the limit of {self.max_bytes} bytes"
        await error_response(scope, 413, detail)(scope, receive, send)
