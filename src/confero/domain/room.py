"""Room: a conference room, its members, its validity window and its room-wide players.

A member is a client that joined with one stream id (the id it publishes with). Members hear
`streamJoined` / `streamLeaved` when another member's stream starts or ends; room players
(the multitrack flow's single peer connection) are renegotiated at the same moments. A room
lives in memory while it has members or players; its record (window, stream list) lives in
the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from confero.domain import events
from confero.domain.events import Listener
from confero.domain.records import RoomRecord

if TYPE_CHECKING:
    from confero.domain.application import Application
    from confero.domain.stream import RoomPlayback, Stream

logger = logging.getLogger(__name__)

DEFAULT_DURATION = 3600


@dataclass
class Member:
    """One participant: the client, the stream id it publishes with, and how it introduced itself."""

    listener: Listener
    stream_id: str
    name: str = ""
    metadata: str = ""
    role: str = ""
    mode: str = ""
    joined_at: float = field(default_factory=time.time)


class Room:
    """Membership and notifications of one conference room."""

    def __init__(self, app: Application, record: RoomRecord) -> None:
        self.app = app
        self.room_id = record.room_id
        self.record = record
        self.members: dict[str, Member] = {}
        self.playbacks: set[RoomPlayback] = set()
        self._expiry: asyncio.TimerHandle | None = None
        self.closed = False
        self.arm_expiry()

    # -- window ----------------------------------------------------------------------------

    def is_open(self, now: float | None = None) -> bool:
        now = time.time() if now is None else now
        return self.record.start_date <= now < self.record.end_date

    def arm_expiry(self) -> None:
        """(Re)arm the timer that removes members when the window ends."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        delay = max(0.0, self.record.end_date - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if self.closed:
            return
        logger.info("room %s: window ended", self.room_id)
        task = asyncio.get_running_loop().create_task(self.close("room_not_active_or_expired"))
        self.app.track_task(task)

    # -- membership ------------------------------------------------------------------------

    def live_streams(self) -> list[Stream]:
        """Streams of this room that are being published (started), oldest first."""
        out = []
        for stream in self.app.streams.values():
            publication = stream.publication
            if stream.room == self.room_id and publication is not None and publication.started and not stream.closed:
                out.append(stream)
        return sorted(out, key=lambda s: s.started_at)

    def stream_details(self, exclude: str = "") -> list[dict[str, str]]:
        details = []
        for stream in self.live_streams():
            if stream.stream_id == exclude:
                continue
            member = self.members.get(stream.stream_id)
            details.append(
                {
                    "stream_id": stream.stream_id,
                    "stream_name": (member.name if member else "") or stream.name,
                    "meta_data": member.metadata if member else stream.metadata,
                }
            )
        return details

    def join(self, member: Member) -> None:
        self.members[member.stream_id] = member

    async def leave(self, stream_id: str, reason: str = "leave") -> Member | None:
        """Remove a member: its stream and its plays in this room stop."""
        member = self.members.pop(stream_id, None)
        if member is None:
            return None
        stream = self.app.streams.get(stream_id)
        if stream is not None and stream.room == self.room_id and stream.publication is not None:
            if stream.publication.listener is member.listener:
                await stream.publication.close(reason)
        for playback in [p for p in self.playbacks if p.listener is member.listener]:
            await playback.close(reason)
        for other in self.live_streams():
            for playback in [p for p in other.playbacks if p.listener is member.listener]:
                await playback.close(reason)
        await self.app.room_maybe_idle(self)
        return member

    # -- events from streams ---------------------------------------------------------------

    async def stream_started(self, stream: Stream) -> None:
        for member in list(self.members.values()):
            if member.stream_id != stream.stream_id:
                member.listener.deliver(events.StreamJoined(stream.stream_id, self.room_id))
        if stream.stream_id not in self.record.room_stream_list:
            self.record.room_stream_list.append(stream.stream_id)
            await self.app.store.save_room(self.app.name, self.record)
        await self.refresh_playbacks()

    async def stream_finished(self, stream: Stream) -> None:
        for member in list(self.members.values()):
            if member.stream_id != stream.stream_id:
                member.listener.deliver(events.StreamLeft(stream.stream_id, self.room_id))
        if stream.stream_id in self.record.room_stream_list:
            self.record.room_stream_list.remove(stream.stream_id)
            await self.app.store.save_room(self.app.name, self.record)
        await self.refresh_playbacks()

    def deliver_data(self, data: str | bytes, *, exclude_listener: Listener | None = None) -> int:
        """Send `data` on every room play of this room, except those of `exclude_listener`."""
        return sum(1 for p in list(self.playbacks) if p.listener is not exclude_listener and p.send_data(data))

    async def refresh_playbacks(self) -> None:
        await asyncio.gather(*(p.refresh() for p in list(self.playbacks)), return_exceptions=True)

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self, reason: str = "closed") -> None:
        """Idempotent: every member is told and removed, room players end, the room leaves memory."""
        if self.closed:
            return
        self.closed = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        for member in list(self.members.values()):
            if reason == "room_not_active_or_expired":
                member.listener.deliver(
                    events.Failure(member.stream_id, reason, f"room {self.room_id} is not active", room=self.room_id)
                )
            await self.leave(member.stream_id, reason)
            member.listener.deliver(events.LeftRoom(self.room_id, member.stream_id))
        for playback in list(self.playbacks):
            await playback.close(reason)
        self.app.room_closed(self)

    def dump(self) -> dict[str, Any]:
        return {
            "room_id": self.room_id,
            "members": sorted(self.members),
            "playbacks": len(self.playbacks),
            "window": [self.record.start_date, self.record.end_date],
        }
