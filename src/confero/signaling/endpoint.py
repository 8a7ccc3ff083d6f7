"""The WebSocket routes: `/{App}/websocket` (Ant Media's protocol, a `SignalingSession`) and
`/{App}/websocket/application` (Circle's application socket, a `CircleSession`). An unknown
application is a 404, and while the server is stopping (draining) a new socket is a 503 with a
JSON body; otherwise the session runs until the socket closes."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Mapping
from typing import Protocol, TypeVar

from aiohttp import web

from confero.auth.turn import TurnServers
from confero.domain.application import Application
from confero.signaling.circle import CircleSession
from confero.signaling.session import SignalingSession

logger = logging.getLogger(__name__)

MAX_MESSAGE = 1 << 20

S = TypeVar("S", bound="Session")


class Session(Protocol):
    async def run(self) -> None: ...


def _socket_route(
    applications: Mapping[str, Application],
    sessions: set[S],
    make: Callable[[web.WebSocketResponse, Application, str], S],
    *,
    autoping: bool = True,
    heartbeat: float = 0.0,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    """One application's socket: 404 for an unknown application, 503 while it is stopping, else a
    session until it closes.

    `heartbeat` (seconds, 0: off): after that long without anything from the client the server
    pings it, and closes the socket when nothing comes back within half of it (a client whose
    network is gone, its TCP connection still open). `autoping=False`: the session answers
    pings itself (and sees the pongs)."""

    async def handler(request: web.Request) -> web.StreamResponse:
        app = applications.get(request.match_info["app"])
        if app is None:
            raise web.HTTPNotFound(text=f"no application {request.match_info['app']!r}")
        if app.stopping_now:  # draining: calls that run go on, no new connection is taken
            return web.json_response(
                {"success": False, "message": "the server is shutting down", "definition": "server_will_stop"},
                status=503,
            )
        ws = web.WebSocketResponse(max_msg_size=MAX_MESSAGE, autoping=autoping, heartbeat=heartbeat or None)
        await ws.prepare(request)
        session = make(ws, app, request.remote or "?")
        sessions.add(session)
        try:
            await session.run()
        finally:
            sessions.discard(session)
        return ws

    return handler


def websocket_handler(
    applications: Mapping[str, Application],
    sessions: set[SignalingSession],
    turn: TurnServers | None = None,
    *,
    heartbeat: float = 0.0,
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    return _socket_route(
        applications,
        sessions,
        lambda ws, app, remote: SignalingSession(ws, app, remote, turn),
        autoping=False,
        heartbeat=heartbeat,
    )


def circle_handler(
    applications: Mapping[str, Application], sessions: set[CircleSession], *, heartbeat: float = 0.0
) -> Callable[[web.Request], Awaitable[web.StreamResponse]]:
    return _socket_route(applications, sessions, CircleSession, heartbeat=heartbeat)
