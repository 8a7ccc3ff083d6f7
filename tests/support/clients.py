"""`Clients`: everything one test opens against a server, closed at the end whatever happens.

Tests register what they open (sockets, publishers, players, 1-1 peers, or anything with an
`async close()`) instead of hand-writing `try/finally` blocks with one `close()` per object.
Things are closed in the reverse order of registration (an `AsyncExitStack`), so a peer is
always closed before the socket it runs on; a failing close does not stop the others.
"""

from __future__ import annotations

from contextlib import AsyncExitStack
from typing import Any, Protocol, TypeVar

from tests.support.amsclient import AmsSocket, PeerClient, Player, Publisher

APP = "WebRTCAppEE"


class Closable(Protocol):
    async def close(self) -> None: ...


C = TypeVar("C", bound=Closable)


class Clients:
    """The clients of one test against the server on `port` (see the `clients` fixture)."""

    def __init__(self, port: int) -> None:
        self.port = port
        self._stack = AsyncExitStack()

    def closing(self, thing: C) -> C:
        """Close `thing` (anything with `async close()`) at the end; returns it."""
        self._stack.push_async_callback(thing.close)
        return thing

    async def socket(self, app: str = APP, **kwargs: Any) -> AmsSocket:
        """A connected WebSocket to `app` (keyword arguments go to `AmsSocket`)."""
        return self.closing(await AmsSocket.connect(self.port, app, **kwargs))

    def publisher(self, sock: AmsSocket, stream_id: str, **kwargs: Any) -> Publisher:
        """A `Publisher` on `sock`, not started yet."""
        return self.closing(Publisher(sock, stream_id, **kwargs))

    def player(self, sock: AmsSocket, stream_id: str, **kwargs: Any) -> Player:
        """A `Player` on `sock`, not started yet."""
        return self.closing(Player(sock, stream_id, **kwargs))

    def peer(self, sock: AmsSocket, call_id: str, **kwargs: Any) -> PeerClient:
        """A 1-1 call `PeerClient` on `sock`, not joined yet."""
        return self.closing(PeerClient(sock, call_id, **kwargs))

    async def aclose(self) -> None:
        """Close everything registered, last first (idempotent)."""
        await self._stack.aclose()

    async def __aenter__(self) -> Clients:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
