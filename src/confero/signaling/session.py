"""SignalingSession: one WebSocket client, one reader loop, one writer task.

Commands are handled in order by the reader loop; messages to the client (replies and domain
events) go through one queue and one writer, so writes never interleave. Closing the socket
is leaving: every publish and play of the session is stopped.
"""

from __future__ import annotations

import asyncio
import logging
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

from confero.domain import events
from confero.domain.stream import Playback, Publication, RoomPlayback
from confero.signaling import handlers
from confero.signaling import messages as m

if TYPE_CHECKING:
    from confero.domain.application import Application

logger = logging.getLogger(__name__)

MAX_QUEUE = 1000


class SignalingSession:
    """Implements the domain's Listener for one WebSocket."""

    def __init__(self, ws: web.WebSocketResponse, app: Application, remote: str) -> None:
        self.ws = ws
        self.app = app
        self._remote = remote
        self.owned: dict[str, Publication | Playback | RoomPlayback] = {}
        self.rooms: dict[str, str] = {}  # room id -> the stream id this client joined it with
        self.calls: set[str] = set()  # 1-1 calls joined
        self.frame = ""  # the text of the command being handled (relayed as is in 1-1 calls)
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self.closed = False

    @property
    def remote(self) -> str:
        return self._remote

    def room_of(self, stream_id: str) -> str:
        """The room this client joined with `stream_id`, if any (legacy conference publish)."""
        return next((room for room, sid in self.rooms.items() if sid == stream_id), "")

    # -- Listener ------------------------------------------------------------------------

    def deliver(self, event: events.Event) -> None:
        if isinstance(event, (events.PublishFinished, events.PlayFinished)):
            owned = self.owned.get(event.stream_id)
            if owned is not None and owned.closed:
                del self.owned[event.stream_id]
        elif isinstance(event, events.PeerLeft):
            self.calls.discard(event.stream_id)
        elif isinstance(event, events.LeftRoom):
            if self.rooms.get(event.room) == event.stream_id:
                del self.rooms[event.room]
        self.send(handlers.event_message(event))

    def send(self, message: m.Message | m.Raw) -> None:
        if self.closed and self._writer is None:
            return
        if self._out.qsize() >= MAX_QUEUE:
            logger.warning("%s: client is not reading; closing", self.remote)
            asyncio.get_running_loop().create_task(self.ws.close())
            return
        self._out.put_nowait(m.encode(message))

    # -- loops ---------------------------------------------------------------------------

    async def run(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self.handle(msg.data)
                elif msg.type == WSMsgType.BINARY:
                    self.send(m.Error(definition="invalid_json", information="binary frames are not commands"))
                else:
                    break
        finally:
            await self.close()

    async def handle(self, text: str) -> None:
        try:
            name, command = m.decode(text)
        except m.DecodeFailure as exc:
            logger.info("%s: bad message: %s", self.remote, exc.information)
            self.send(handlers.error_message(exc))
            return
        self.frame = text if isinstance(text, str) else text.decode()
        await handlers.dispatch(self, name, command)

    async def _write_loop(self) -> None:
        while True:
            text = await self._out.get()
            if text is None:
                return
            try:
                await self.ws.send_str(text)
            except (ConnectionError, RuntimeError):
                # The socket is gone; keep draining so producers never block.
                continue

    async def close(self) -> None:
        """Idempotent: stop everything this client published or played, then the socket."""
        if self.closed:
            return
        self.closed = True
        owned = list(self.owned.values())
        self.owned.clear()
        await asyncio.gather(*(o.close("disconnect") for o in owned), return_exceptions=True)
        for call in list(self.calls):
            self.app.leave_call(self, call, told=False)
        self.calls.clear()
        rooms = list(self.rooms.items())
        self.rooms.clear()
        for room, stream_id in rooms:
            try:
                await self.app.leave_room(self, room, stream_id)
            except Exception:
                logger.exception("%s: leaving room %s failed", self.remote, room)
        self._out.put_nowait(None)
        if self._writer is not None:
            await self._writer
            self._writer = None
        await self.ws.close()

    def dump(self) -> dict[str, Any]:
        return {
            "remote": self.remote,
            "owned": sorted(self.owned),
            "rooms": dict(self.rooms),
            "calls": sorted(self.calls),
            "closed": self.closed,
        }
