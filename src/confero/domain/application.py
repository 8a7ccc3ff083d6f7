"""Application: one Ant Media application namespace (WebRTCAppEE, LiveApp, ...).

The façade that signaling and REST call: publish, play, stop and stream records. It owns the
live Streams of its namespace and writes their records to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confero.domain import events
from confero.domain.events import Listener
from confero.domain.ids import check_stream_id, new_stream_id
from confero.domain.room import DEFAULT_DURATION, Member, Room
from confero.domain.stream import Playback, Publication, RoomPlayback, Stream
from confero.errors import BadRequest, Conflict, ConferoError, NotFound
from confero.store import RoomRecord
from confero.media import Router
from confero.settings import AppSettings, Settings
from confero.store import Store, StreamRecord

logger = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class Application:
    """Streams, players and records of one application."""

    def __init__(self, name: str, settings: Settings, store: Store, router: Router) -> None:
        self.name = name
        self.settings = settings
        self.store = store
        self.router = router
        self.streams: dict[str, Stream] = {}
        self.rooms: dict[str, Room] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    @property
    def app_settings(self) -> AppSettings:
        return self.settings.app(self.name)

    def track_task(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task alive until done, and cancellable on close()."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: background task failed", self.name, exc_info=task.exception())

    # -- publish ---------------------------------------------------------------------------

    async def publish(
        self, listener: Listener, stream_id: str, *, name: str = "", room: str = "", metadata: str = ""
    ) -> Publication:
        """Reserve `stream_id` for `listener`; the client's offer follows.

        With `room`, the stream is a member stream of that room (its window must be open).
        """
        check_stream_id(stream_id)
        if self.closed:
            raise ConferoError("the server is shutting down", definition="server_will_stop")
        if stream_id in self.streams:
            raise Conflict(f"stream {stream_id} is already publishing", definition="streamIdInUse")
        if room:
            live_room = await self.open_room(room)
            if stream_id not in live_room.members:
                live_room.join(Member(listener, stream_id, name=name, metadata=metadata))
        record = await self.store.get_stream(self.name, stream_id)
        if record is not None and record.status in ("broadcasting", "preparing"):
            # A record left live by a crash: nobody is publishing it in this process.
            record.status = "finished"
        if record is None and self.app_settings.acceptOnlyStreamsInDataStore:
            raise BadRequest("stream is not registered", definition="not_allowed_unregistered_streams")
        stream = Stream(
            self, stream_id, room=room, zombi=record is None or record.zombi, name=name, metadata=metadata
        )
        stream.publication = Publication(stream, listener)
        self.streams[stream_id] = stream
        if record is None:
            record = StreamRecord(stream_id=stream_id, name=name or stream_id, zombi=True, date=now_ms())
        record.status = "preparing"
        record.remote_ip = listener.remote
        record.update_time = now_ms()
        await self.store.save_stream(self.name, record)
        return stream.publication

    async def stream_started(self, stream: Stream) -> None:
        record = await self.store.get_stream(self.name, stream.stream_id)
        if record is None or stream.closed:
            return
        record.status = "broadcasting"
        record.start_time = record.update_time = now_ms()
        record.absolute_start_time_ms = record.start_time
        record.main_track_stream_id = stream.room
        await self.store.save_stream(self.name, record)
        room = self.rooms.get(stream.room) if stream.room else None
        if room is not None:
            await room.stream_started(stream)

    async def stream_finished(self, stream: Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        room = self.rooms.get(stream.room) if stream.room else None
        if room is not None:
            await room.stream_finished(stream)
        record = await self.store.get_stream(self.name, stream.stream_id)
        if record is None:
            return
        if record.zombi:
            await self.store.delete_stream(self.name, stream.stream_id)
            return
        record.status = "finished"
        record.update_time = now_ms()
        if record.start_time:
            record.duration = record.update_time - record.start_time
        record.webrtc_viewer_count = 0
        await self.store.save_stream(self.name, record)

    # -- play ------------------------------------------------------------------------------

    def live_stream(self, stream_id: str) -> Stream:
        check_stream_id(stream_id)
        stream = self.streams.get(stream_id)
        publication = stream.publication if stream else None
        if stream is None or publication is None or not publication.started or publication.publisher is None:
            raise NotFound(f"stream {stream_id} is not streaming", definition="no_stream_exist")
        return stream

    async def play(
        self,
        listener: Listener,
        stream_id: str,
        *,
        room: str = "",
        track_list: list[str] | None = None,
        own_stream_id: str = "",
    ) -> Playback | RoomPlayback:
        """Play one stream, or a whole room on one peer connection when `stream_id` is a room."""
        check_stream_id(stream_id)
        stream = self.streams.get(stream_id)
        if (stream is None or stream.publication is None or not stream.publication.started) and (
            room == stream_id or stream_id in self.rooms or (not room and await self.room_exists(stream_id))
        ):
            return await self.play_room(listener, stream_id, track_list or [], own_stream_id)
        stream = self.live_stream(stream_id)
        if room and stream.room != room:
            # A member's media never reaches a room it has not joined.
            raise NotFound(f"stream {stream_id} is not streaming in room {room}", definition="no_stream_exist")
        playback = Playback(stream, listener)
        stream.playbacks.add(playback)
        try:
            await playback.offer()
        except BaseException:
            await playback.close("error")
            raise
        return playback

    async def play_room(
        self, listener: Listener, room_id: str, track_list: list[str], own_stream_id: str
    ) -> RoomPlayback:
        room = await self.open_room(room_id, create=False)
        excluded = {t[1:] for t in track_list if t.startswith("!")}
        for member in room.members.values():
            if member.listener is listener:
                excluded.add(member.stream_id)
        if own_stream_id:
            excluded.add(own_stream_id)
        playback = RoomPlayback(room, listener, excluded)
        room.playbacks.add(playback)
        try:
            await playback.offer()
        except BaseException:
            await playback.close("error")
            raise
        return playback

    # -- rooms -----------------------------------------------------------------------------

    async def room_exists(self, room_id: str) -> bool:
        return room_id in self.rooms or await self.store.get_room(self.name, room_id) is not None

    async def open_room(self, room_id: str, *, create: bool = True) -> Room:
        """The live Room, loaded from the store or created with the default window; its window must be open."""
        if not room_id:
            raise BadRequest("no room given", definition="no_room_specified")
        check_stream_id(room_id)
        room = self.rooms.get(room_id)
        if room is None:
            record = await self.store.get_room(self.name, room_id)
            if record is None:
                if not create:
                    raise NotFound(f"room {room_id} does not exist", definition="no_stream_exist")
                now = int(time.time())
                record = RoomRecord(room_id=room_id, start_date=now, end_date=now + DEFAULT_DURATION)
                await self.store.save_room(self.name, record)
            room = self.rooms.get(room_id)  # another join may have loaded it meanwhile
            if room is None:
                room = Room(self, record)
                self.rooms[room_id] = room
        if not room.is_open():
            await self.room_maybe_idle(room)
            raise ConferoError(f"room {room_id} is not active", definition="room_not_active_or_expired", status=403)
        return room

    async def join_room(
        self,
        listener: Listener,
        room_id: str,
        stream_id: str = "",
        *,
        name: str = "",
        metadata: str = "",
        role: str = "",
        mode: str = "",
    ) -> tuple[Room, Member]:
        room = await self.open_room(room_id)
        stream_id = stream_id or new_stream_id()
        check_stream_id(stream_id)
        existing = room.members.get(stream_id)
        if existing is not None and existing.listener is not listener:
            raise Conflict(f"{stream_id} is already a member of {room_id}", definition="streamIdInUse")
        live = self.streams.get(stream_id)
        if live is not None and live.publication is not None and live.publication.listener is not listener:
            raise Conflict(f"stream {stream_id} is already publishing", definition="streamIdInUse")
        member = Member(listener, stream_id, name=name, metadata=metadata, role=role, mode=mode)
        room.join(member)
        return room, member

    async def leave_room(self, listener: Listener, room_id: str, stream_id: str = "") -> bool:
        room = self.rooms.get(room_id)
        if room is None:
            return False
        ids = [stream_id] if stream_id else [m.stream_id for m in room.members.values() if m.listener is listener]
        left = False
        for sid in ids:
            member = room.members.get(sid)
            if member is not None and member.listener is listener:
                await room.leave(sid)
                left = True
        for playback in [p for p in room.playbacks if p.listener is listener]:
            await playback.close("leave")
            left = True
        return left

    def room_streams(self, room_id: str, exclude: str = "") -> list[dict[str, str]]:
        room = self.rooms.get(room_id)
        return room.stream_details(exclude) if room is not None else []

    async def room_maybe_idle(self, room: Room) -> None:
        if not room.closed and not room.members and not room.playbacks:
            await room.close("idle")

    def room_closed(self, room: Room) -> None:
        if self.rooms.get(room.room_id) is room:
            del self.rooms[room.room_id]

    # -- REST rooms ------------------------------------------------------------------------

    async def create_room(self, record: RoomRecord) -> RoomRecord:
        now = int(time.time())
        if record.room_id:
            check_stream_id(record.room_id)
            if await self.room_exists(record.room_id) or await self.store.get_stream(self.name, record.room_id):
                raise Conflict(
                    "Stream id is already being used. Please change stream id or keep it empty", status=400
                )
        else:
            record.room_id = new_stream_id()
        record.start_date = record.start_date or now
        record.end_date = record.end_date or record.start_date + DEFAULT_DURATION
        if record.end_date <= record.start_date:
            raise BadRequest("endDate must be after startDate")
        await self.store.save_room(self.name, record)
        return record

    async def room_record(self, room_id: str) -> RoomRecord | None:
        room = self.rooms.get(room_id)
        return room.record if room is not None else await self.store.get_room(self.name, room_id)

    async def room_records(self, offset: int, size: int) -> list[RoomRecord]:
        return await self.store.list_rooms(self.name, offset, min(size, 50))

    async def update_room(self, room_id: str, start_date: int, end_date: int, mode: str) -> RoomRecord:
        record = await self.room_record(room_id)
        if record is None:
            raise NotFound(f"room {room_id} does not exist")
        record.start_date = start_date or record.start_date
        record.end_date = end_date or record.end_date
        if record.end_date <= record.start_date:
            raise BadRequest("endDate must be after startDate")
        record.mode = mode or record.mode
        await self.store.save_room(self.name, record)
        room = self.rooms.get(room_id)
        if room is not None:
            room.record = record
            room.arm_expiry()
        return record

    async def delete_room(self, room_id: str) -> bool:
        room = self.rooms.get(room_id)
        if room is not None:
            await room.close("deleted")
        return await self.store.delete_room(self.name, room_id) or room is not None

    async def set_room_stream(self, room_id: str, stream_id: str, present: bool) -> bool:
        """REST add/remove of a stream id in a room's stream list; removing a live member stops it."""
        if not room_id or not stream_id:
            raise BadRequest("Room id or stream id is empty")
        record = await self.room_record(room_id)
        if record is None:
            return False
        if present and stream_id not in record.room_stream_list:
            record.room_stream_list.append(stream_id)
        elif not present:
            if stream_id in record.room_stream_list:
                record.room_stream_list.remove(stream_id)
            room = self.rooms.get(room_id)
            if room is not None and stream_id in room.members:
                await room.leave(stream_id, "removed")
        await self.store.save_room(self.name, record)
        return True

    # -- REST ------------------------------------------------------------------------------

    async def stop_stream(self, stream_id: str) -> bool:
        """Stop a live stream from outside (REST delete): players and publisher are told."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return False
        await stream.close("deleted")
        return True

    async def create_stream(self, record: StreamRecord) -> StreamRecord:
        if record.stream_id:
            check_stream_id(record.stream_id)
            if await self.store.get_stream(self.name, record.stream_id) is not None or record.stream_id in self.streams:
                raise Conflict("Stream id is already being used. Please change stream id or keep it empty", status=400)
        else:
            record.stream_id = new_stream_id()
        record.status = "created"
        record.date = now_ms()
        record.zombi = False
        await self.store.save_stream(self.name, record)
        return record

    async def stream_record(self, stream_id: str) -> StreamRecord | None:
        return await self.store.get_stream(self.name, stream_id)

    async def stream_records(self, offset: int, size: int) -> list[StreamRecord]:
        return await self.store.list_streams(self.name, offset, min(size, 50))

    async def save_stream_record(self, record: StreamRecord) -> None:
        record.update_time = now_ms()
        await self.store.save_stream(self.name, record)

    async def delete_stream(self, stream_id: str) -> bool:
        """Delete a stream's record; a live stream is stopped first (its clients are told)."""
        stopped = await self.stop_stream(stream_id)
        deleted = await self.store.delete_stream(self.name, stream_id)
        return stopped or deleted

    def viewer_count(self, stream_id: str) -> int:
        stream = self.streams.get(stream_id)
        return len(stream.playbacks) if stream else 0

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Idempotent: end every stream (players and publishers are told), then tasks."""
        if self.closed:
            return
        self.closed = True
        await asyncio.gather(*(s.close("shutdown") for s in list(self.streams.values())), return_exceptions=True)
        await asyncio.gather(*(r.close("shutdown") for r in list(self.rooms.values())), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "streams": [s.dump() for s in self.streams.values()],
            "rooms": [r.dump() for r in self.rooms.values()],
            "tasks": len(self._tasks),
        }


__all__ = ["Application", "events"]
