"""uvicorn HTTP protocols that close a connection whose request does not arrive in time.

uvicorn times out idle keep-alive connections only after a response; a client that connects and sends nothing,
or part of its headers or body, holds the connection (and a file descriptor) forever. These protocols give every
request ``read_timeout`` seconds from the connection's opening (the first request) or its first byte (the next
ones on a keep-alive connection) to arrive whole; then the connection is closed. The time the app takes to answer
is not limited. :func:`deadline_protocol` picks the httptools parser where installed (as uvicorn's ``auto``
does), else h11.
"""

from __future__ import annotations

import asyncio
import logging
from typing import Any

logger = logging.getLogger("uvicorn.error")


class _ReadDeadline:
    """Mixin for a uvicorn HTTP protocol: the request-read timer (``loop``, ``transport`` and ``client`` come
    from the protocol)."""

    read_timeout: float
    loop: asyncio.AbstractEventLoop
    transport: asyncio.Transport
    client: Any
    _deadline: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)  # type: ignore[misc]
        self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        self._disarm()
        super().connection_lost(exc)  # type: ignore[misc]

    def _arm(self) -> None:
        if self._deadline is None:
            self._deadline = self.loop.call_later(self.read_timeout, self._expired)

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _expired(self) -> None:
        self._deadline = None
        if not self.transport.is_closing():
            logger.info("%s - closing the connection: no whole request within %g s", self._peer(), self.read_timeout)
            self.transport.close()

    def _peer(self) -> str:
        return "{}:{}".format(*self.client) if self.client else "client"


def deadline_protocol(read_timeout: float) -> type[asyncio.Protocol]:
    """A uvicorn ``http`` protocol class that closes connections whose request takes over ``read_timeout`` s."""
    try:
        import httptools  # noqa: F401
    except ImportError:
        return _h11_protocol(read_timeout)
    from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

    class HttpToolsWithDeadline(_ReadDeadline, HttpToolsProtocol):
        def on_message_begin(self) -> None:
            super().on_message_begin()
            self._arm()

        def on_message_complete(self) -> None:
            super().on_message_complete()
            self._disarm()

    HttpToolsWithDeadline.read_timeout = read_timeout
    return HttpToolsWithDeadline


def _h11_protocol(read_timeout: float) -> type[asyncio.Protocol]:
    import h11
    from uvicorn.protocols.http.h11_impl import H11Protocol

    class H11WithDeadline(_ReadDeadline, H11Protocol):
        def data_received(self, data: bytes) -> None:
            self._arm()
            super().data_received(data)
            # h11 reports the client's side DONE once the whole request (headers and body) is in.
            if self.conn.their_state in (h11.DONE, h11.MUST_CLOSE, h11.CLOSED, h11.ERROR):
                self._disarm()

    H11WithDeadline.read_timeout = read_timeout
    return H11WithDeadline
