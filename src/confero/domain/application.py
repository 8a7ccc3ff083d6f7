"""Application: one Ant Media application namespace (WebRTCAppEE, LiveApp, ...).

A thin façade over the parts that each do one job:

* `streams` (`Streams`): live streams, publish and play admission, stream records;
* `rooms` (`Rooms`): live rooms, their windows, room records;
* `access` (`Access`): tokens, JWT and the REST address filter;
* `calls` (`PeerCalls`): 1-1 calls;
* `clients`: one `Client` per signaling connection, the owner of what that connection holds.

They share a `Context` (name, settings, store, media plane, observers, tasks) rather than a
pointer to the Application. `observers` hears what happens in the application (`observer.py`).
"""

from __future__ import annotations

import itertools
import logging
from collections.abc import Callable
from typing import Any

from confero.domain import events
from confero.domain.access import Access
from confero.domain.calls import PeerCalls
from confero.domain.client import Client, Sink
from confero.domain.context import Context
from confero.domain.media import MediaPlane
from confero.domain.observer import Observers
from confero.domain.rooms import Rooms
from confero.domain.streams import Streams
from confero.errors import BadRequest
from confero.settings import AppSettings, Settings, SettingsError
from confero.store import Store

logger = logging.getLogger(__name__)

_client_ids = itertools.count(1)


class Application:
    """Streams, rooms, calls, access rules and clients of one application."""

    def __init__(
        self,
        name: str,
        settings: Settings,
        store: Store,
        media: MediaPlane,
        *,
        encode_data: Callable[[events.DataEvent], str] | None = None,
    ) -> None:
        self.name = name
        self._settings = settings
        self.ctx = Context(
            app=name,
            settings=lambda: settings.app(name),
            store=store,
            media=media,
            publish_timeout=lambda: settings.publish_timeout,
            encode_data=encode_data,
        )
        self.access = Access(name, self.ctx.settings, store)
        self.rooms = Rooms(self.ctx)
        self.streams = Streams(self.ctx, self.access, self.rooms)
        self.calls = PeerCalls()
        self.clients: dict[str, Client] = {}
        self.closed = False

    @property
    def app_settings(self) -> AppSettings:
        return self._settings.app(self.name)

    @property
    def observers(self) -> Observers:
        return self.ctx.observers

    @property
    def store(self) -> Store:
        return self.ctx.store

    # -- clients ---------------------------------------------------------------------------------

    def connect(self, sink: Sink, remote: str) -> Client:
        """A new signaling connection: its Client lives until `Client.close()`."""
        client_id = f"{self.name}-{next(_client_ids)}"
        client = Client(
            client_id,
            remote,
            sink,
            streams=self.streams,
            rooms=self.rooms,
            calls=self.calls,
            access=self.access,
            on_closed=self._client_closed,
        )
        self.clients[client_id] = client
        if self.stopping_now:  # connected while the server began to stop: told as the others were
            client.deliver(events.ServerWillStop())
        return client

    def _client_closed(self, client: Client) -> None:
        if self.clients.get(client.client_id) is client:
            del self.clients[client.client_id]

    # -- settings --------------------------------------------------------------------------------

    def settings_view(self) -> dict[str, Any]:
        return self.app_settings.to_dict()

    def update_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Change settings at run time; new publish/play requests see them at once."""
        try:
            self.app_settings.update(values, where=self.name)
        except SettingsError as exc:
            raise BadRequest(str(exc)) from None
        return self.settings_view()

    # -- REST helpers that span parts ------------------------------------------------------------

    async def validate_token(self, token_id: str, stream_id: str, type_: str, room_id: str) -> bool:
        """REST validate-token: a room token admits the room and the streams published in it."""
        stream = self.streams.live.get(stream_id)
        in_room = room_id and (stream_id == room_id or (stream is not None and stream.room == room_id))
        return await self.access.validate_token(token_id, stream_id, type_, room_id if in_room else "")

    async def send_data(self, stream_id: str, data: str | bytes) -> int:
        return self.streams.send_data(stream_id, data)

    # -- lifecycle -------------------------------------------------------------------------------

    @property
    def stopping_now(self) -> bool:
        """Whether `stopping()` was called: nothing new is taken any more."""
        return self.streams.closed

    def active_sessions(self) -> int:
        """The publishes, plays, room memberships and 1-1 calls its clients keep running."""
        return sum(client.active_sessions() for client in self.clients.values())

    def stopping(self) -> None:
        """The server will stop: new publishes, plays, room joins and calls are refused, and every
        connected client is told (`ServerWillStop`) once, before any of its streams ends; what
        runs goes on until `close()`. Idempotent."""
        if self.streams.closed:
            return
        self.streams.closed = True
        for client in list(self.clients.values()):
            client.deliver(events.ServerWillStop())

    async def close(self) -> None:
        """Idempotent, downwards: clients are told the server stops, then clients, streams
        (players and publishers are told), rooms, tasks."""
        if self.closed:
            return
        self.closed = True
        self.stopping()
        for client in list(self.clients.values()):
            try:
                await client.close()
            except Exception:
                logger.exception("%s: closing client %s failed", self.name, client.client_id)
        await self.streams.close("shutdown")
        await self.rooms.close("shutdown")
        await self.ctx.tasks.close()

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "clients": [c.dump() for c in self.clients.values()],
            "streams": self.streams.dump(),
            "rooms": self.rooms.dump(),
            "calls": self.calls.dump(),
            "tasks": len(self.ctx.tasks),
            "observers": len(self.ctx.observers),
        }


__all__ = ["Application"]
