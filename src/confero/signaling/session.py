"""SignalingSession: one WebSocket, one reader loop, one writer task. Transport only.

Commands are handled in order by the reader loop against the connection's domain `Client`;
messages to the client (replies and domain events) go through one queue and one writer, so
writes never interleave. Closing the socket closes the Client: every publish and play ends.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import WSMsgType, web

from confero.auth.turn import TurnServers
from confero.domain import events
from confero.domain.application import Application
from confero.signaling import handlers, wire
from confero.signaling import messages as m

logger = logging.getLogger(__name__)

MAX_QUEUE = 1000


class SignalingSession:
    """The domain's Sink for one WebSocket."""

    def __init__(
        self, ws: web.WebSocketResponse, app: Application, remote: str, turn: TurnServers | None = None
    ) -> None:
        self.ws = ws
        self.turn = turn
        self.app = app
        self.remote = remote
        self.client = app.connect(self, remote)
        self._out: asyncio.Queue[str | None] = asyncio.Queue()
        self._writer: asyncio.Task[None] | None = None
        self._kick: asyncio.Task[bool] | None = None
        self._pongs: list[asyncio.Future[None]] = []  # probes waiting for the client's pong
        self.closed = False

    # -- Sink ------------------------------------------------------------------------------------

    def deliver(self, event: events.Event) -> None:
        self.send(wire.event_message(event))

    def send(self, message: m.Message | m.Raw) -> None:
        if self.closed and self._writer is None:
            return
        if self._out.qsize() >= MAX_QUEUE:
            if self._kick is None:
                logger.warning("%s: client is not reading; closing", self.remote)
                self._kick = asyncio.get_running_loop().create_task(self.ws.close())
            return
        self._out.put_nowait(m.encode(message))

    async def probe(self, wait: float) -> bool:
        """Ping the client; True when its pong (or anything else) comes back within `wait` seconds.
        Browsers and the SDKs' WebSocket libraries answer pings on their own."""
        if self.closed or self.ws.closed:
            return False
        pong: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._pongs.append(pong)
        try:
            await self.ws.ping()
            await asyncio.wait_for(asyncio.shield(pong), wait)
            return True
        except (TimeoutError, ConnectionError, RuntimeError):
            return False
        finally:
            if pong in self._pongs:
                self._pongs.remove(pong)
            pong.cancel()

    # -- loops -----------------------------------------------------------------------------------

    async def run(self) -> None:
        self._writer = asyncio.get_running_loop().create_task(self._write_loop())
        try:
            async for msg in self.ws:
                if msg.type == WSMsgType.TEXT:
                    await self.handle(msg.data)
                elif msg.type == WSMsgType.PING:
                    self._heard()
                    await self.ws.pong(msg.data)
                elif msg.type == WSMsgType.PONG:
                    self._heard()
                elif msg.type == WSMsgType.BINARY:
                    self.send(m.Error(definition="invalid_json", information="binary frames are not commands"))
                else:
                    break
        finally:
            await self.close()

    def _heard(self) -> None:
        """The client sent something: it is alive (answers the probes waiting for it)."""
        self.client.heard()
        if self._pongs:
            pongs, self._pongs = self._pongs, []
            for pong in pongs:
                if not pong.done():
                    pong.set_result(None)

    async def handle(self, text: str) -> None:
        self._heard()
        try:
            name, command = m.decode(text)
        except m.DecodeFailure as exc:
            logger.info("%s: bad message: %s", self.remote, exc.information)
            self.send(wire.error_message(exc))
            return
        await handlers.dispatch(self.client, self.app.app_settings, self.send, name, command, text, self.turn)

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
        """Idempotent: the Client ends what it started (and is told), then the socket closes."""
        if self.closed:
            return
        self.closed = True
        pongs, self._pongs = self._pongs, []
        for pong in pongs:
            if not pong.done():
                pong.set_exception(ConnectionError("the socket closed"))
        try:
            await self.client.close()
        except Exception:
            logger.exception("%s: closing the client failed", self.remote)
        self._out.put_nowait(None)
        if self._writer is not None:
            await self._writer
            self._writer = None
        if self._kick is not None:
            await self._kick
            self._kick = None
        await self.ws.close()

    def dump(self) -> dict[str, object]:
        return {**self.client.dump(), "closed": self.closed}
