"""FastAPI dependencies of the routes: :func:`authorize`, the API key of the keyed routes."""

from __future__ import annotations

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

bearer = HTTPBearer(auto_error=False, description="The server's API key, if it was started with one.")


async def authorize(request: Request, credentials: HTTPAuthorizationCredentials | None = Depends(bearer)) -> None:
    """401 unless the request carries the settings' API key (when they have one).

    The routes that depend on it are the keyed ones: ``create_app`` also guards them with
    :class:`~jina_local_rerank.server.middleware.ApiKeyGate`, which refuses before the body is read, and the
    OpenAPI description shows them with the bearer scheme."""
    request.app.state.settings.check_api_key(None if credentials is None else credentials.credentials)
