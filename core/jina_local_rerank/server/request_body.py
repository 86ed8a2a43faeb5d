"""Rerank request bodies parsed strictly and checked before FastAPI validates them: :class:`CheckedBodyRoute`."""

from __future__ import annotations

import email.message
import json
from collections.abc import Awaitable, Callable
from typing import Any

from fastapi import Request
from fastapi.responses import Response
from fastapi.routing import APIRoute

from ..errors import RequestRejected
from .settings import ServerSettings


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON (numbers must be finite)")


def _finite_float(text: str) -> float:
    value = float(text)
    if value in (float("inf"), float("-inf")):
        raise ValueError("a number in the body is out of the range of a double")
    return value


def parse_json_strictly(body: bytes) -> Any:
    """The JSON value of ``body``, refusing what Python's parser allows beyond JSON (NaN, Infinity, numbers out of
    range); 422 for anything that is not valid JSON, without repeating it."""
    try:
        return json.loads(body, parse_constant=_refuse_constant, parse_float=_finite_float)
    except json.JSONDecodeError as exc:
        raise RequestRejected(422, f"the body is not valid JSON: {exc.msg} at character {exc.pos}") from None
    except UnicodeDecodeError:
        raise RequestRejected(422, "the body is not valid JSON: it is not UTF-8 text") from None
    except RecursionError:
        raise RequestRejected(422, "the body is not valid JSON we accept: it is nested too deeply") from None
    except ValueError as exc:  # our refusals above, and integers of more digits than Python converts
        raise RequestRejected(422, f"the body is not valid JSON we accept: {exc}") from None


def _is_json(content_type: str | None) -> bool:
    """Whether FastAPI parses a body of ``content_type`` as JSON (absent, ``application/json``, ``+json``)."""
    if not content_type:
        return True
    message = email.message.Message()
    message["content-type"] = content_type
    subtype = message.get_content_subtype()
    return message.get_content_maintype() == "application" and (subtype == "json" or subtype.endswith("+json"))


class _ParsedBodyRequest(Request):
    """A request whose JSON body was already parsed (strictly) by :class:`CheckedBodyRoute`."""

    parsed: Any

    async def json(self) -> Any:
        return self.parsed


class CheckedBodyRoute(APIRoute):
    """A route whose JSON body is parsed strictly and checked by the settings (:meth:`ServerSettings.check_body`)
    before it is validated: at most :meth:`documents_limit` entries in its ``documents_field`` (Jina's and
    Cohere's ``documents``, at most ``max_documents``; a subclass names another field and limit)."""

    documents_field = "documents"

    @staticmethod
    def documents_limit(settings: ServerSettings) -> int:
        """How many entries the documents field may hold."""
        return settings.max_documents

    def get_route_handler(self) -> Callable[[Request], Awaitable[Response]]:
        handler = super().get_route_handler()
        if self.body_field is None:  # no body to check
            return handler

        async def checked(request: Request) -> Response:
            body = await request.body()
            if body and _is_json(request.headers.get("content-type")):
                parsed = parse_json_strictly(body)
                settings: ServerSettings = request.app.state.settings
                settings.check_body(parsed, self.documents_field, self.documents_limit(settings))
                request = _ParsedBodyRequest(request.scope, request.receive)
                request._body = body
                request.parsed = parsed
            return await handler(request)

        return checked
