"""Rooms: the live rooms of one application, their windows, and the REST operations on rooms.

A live Room is in memory while it has members or players. Its record is authoritative in memory
while it is live and is written behind to the store.

A room is also a main-track Broadcast (Ant Media's model): one id namespace holds streams and
rooms. A room exists once it has a record, made in one of three ways:

* over the deprecated conference-rooms REST: the window given (default one hour);
* when a stream record created over REST is used as a main track (a join, a publish with
  `mainTrack`, a subtrack added over REST): its `plannedStartDate`/`plannedEndDate` are the
  window (0: no bound);
* by a join or a publish with `mainTrack` of an unknown id (unless `acceptOnlyRoomsInDataStore`):
  a *zombi* room with no window, whose record is removed when it empties (Ant Media's zombi
  main track, which is removed when it finishes).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterator, Mapping

from confero.domain import events, observer
from confero.domain.context import Context
from confero.domain.ids import check_stream_id, new_stream_id
from confero.domain.results import StreamSummary
from confero.domain.room import DEFAULT_DURATION, Room
from confero.errors import BadRequest, IdTaken, NoRoomGiven, NotFound, RoomNotActive, UnknownRoom
from confero.store import RoomRecord

logger = logging.getLogger(__name__)


class Rooms(Mapping[str, Room]):
    """The live rooms of one application, and its room records."""

    def __init__(self, ctx: Context) -> None:
        self.ctx = ctx
        self.live: dict[str, Room] = {}

    # -- the live rooms, as a read-only mapping -----------------------------------------------

    def __getitem__(self, key: str) -> Room:
        return self.live[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.live)

    def __len__(self) -> int:
        return len(self.live)

    async def exists(self, room_id: str) -> bool:
        return room_id in self.live or await self.ctx.store.get_room(self.ctx.app, room_id) is not None

    async def open(self, room_id: str, *, create: bool = True) -> Room:
        """The live Room, loaded from the store or made (see the module docstring); it must be open.

        `create=False` opens only a room that has a record (or a stream record to make one from).
        """
        if not room_id:
            raise NoRoomGiven("no room given")
        check_stream_id(room_id)
        room = self.live.get(room_id)
        if room is None:
            record = await self.ensure_record(room_id)
            if record is None:
                if not create:
                    raise NotFound(f"room {room_id} does not exist")
                if self.ctx.settings().acceptOnlyRoomsInDataStore:
                    raise UnknownRoom(f"room {room_id} is not registered")
                record = RoomRecord(room_id=room_id, start_date=int(time.time()), end_date=0, zombi=True)
                await self.ctx.store.save_room(self.ctx.app, record)
                self.ctx.observers.emit(observer.RoomCreated(self.ctx.app, room_id))
            room = self.live.get(room_id)  # another join may have loaded it meanwhile
            if room is None:
                room = Room(self.ctx, record, on_closed=self._closed)
                self.live[room_id] = room
        if not room.is_open():
            await room.maybe_idle()
            raise RoomNotActive(f"room {room_id} is not active")
        return room

    async def ensure_record(self, room_id: str) -> RoomRecord | None:
        """The room's record; a stream record created over REST becomes a room's record on first use."""
        record = await self.record(room_id)
        if record is not None:
            return record
        main = await self.ctx.store.get_stream(self.ctx.app, room_id)
        if main is None or main.zombi:
            return None
        record = await self.record(room_id)  # made meanwhile by another request?
        if record is None:
            record = RoomRecord(room_id=room_id, start_date=main.planned_start_date, end_date=main.planned_end_date)
            await self.ctx.store.save_room(self.ctx.app, record)  # queued before any later read
            self.ctx.observers.emit(observer.RoomCreated(self.ctx.app, room_id))
        return record

    def _closed(self, room: Room, reason: str) -> None:
        if self.live.get(room.room_id) is room:
            del self.live[room.room_id]
        if room.record.zombi:
            # Queued now, behind the room's last writes (the store keeps call order).
            self.ctx.tasks.spawn(self.ctx.store.delete_room(self.ctx.app, room.room_id))
        self.ctx.observers.emit(observer.RoomEnded(self.ctx.app, room.room_id, reason))

    def summaries(self, room_id: str, exclude: str = "") -> tuple[StreamSummary, ...]:
        room = self.live.get(room_id)
        return room.summaries(exclude) if room is not None else ()

    # -- REST ------------------------------------------------------------------------------------

    async def create(self, record: RoomRecord) -> RoomRecord:
        now = int(time.time())
        if record.room_id:
            check_stream_id(record.room_id)
            if await self.exists(record.room_id) or await self.ctx.store.get_stream(self.ctx.app, record.room_id):
                raise IdTaken("Stream id is already being used. Please change stream id or keep it empty")
        else:
            record.room_id = new_stream_id()
        record.start_date = record.start_date or now
        record.end_date = record.end_date or record.start_date + DEFAULT_DURATION
        if record.end_date <= record.start_date:
            raise BadRequest("endDate must be after startDate")
        await self.ctx.store.save_room(self.ctx.app, record)
        self.ctx.observers.emit(observer.RoomCreated(self.ctx.app, record.room_id))
        return record

    async def record(self, room_id: str) -> RoomRecord | None:
        room = self.live.get(room_id)
        return room.record if room is not None else await self.ctx.store.get_room(self.ctx.app, room_id)

    async def records(self, offset: int, size: int) -> list[RoomRecord]:
        return await self.ctx.store.list_rooms(self.ctx.app, offset, min(size, 50))

    async def update(self, room_id: str, start_date: int, end_date: int, mode: str) -> RoomRecord:
        record = await self.record(room_id)
        if record is None:
            raise NotFound(f"room {room_id} does not exist")
        # Check before changing: a live room's record is the one in memory.
        start_date, end_date = start_date or record.start_date, end_date or record.end_date
        if end_date <= start_date:
            raise BadRequest("endDate must be after startDate")
        record.start_date, record.end_date = start_date, end_date
        record.mode = mode or record.mode
        record.zombi = False  # a room given a window over REST is kept when it empties
        await self.ctx.store.save_room(self.ctx.app, record)
        room = self.live.get(room_id)
        if room is not None:
            room.record = record
            room.arm_expiry()
        return record

    async def delete(self, room_id: str) -> bool:
        room = self.live.get(room_id)
        if room is not None:
            await room.close("deleted")
        return await self.ctx.store.delete_room(self.ctx.app, room_id) or room is not None

    async def set_stream(self, room_id: str, stream_id: str, present: bool) -> bool:
        """REST add/remove of a stream id in a room's stream list; removing a live member stops it."""
        if not room_id or not stream_id:
            raise BadRequest("Room id or stream id is empty")
        record = await self.record(room_id)
        if record is None:
            return False
        if present and stream_id not in record.room_stream_list:
            record.room_stream_list.append(stream_id)
        elif not present:
            if stream_id in record.room_stream_list:
                record.room_stream_list.remove(stream_id)
            room = self.live.get(room_id)
            member = room.members.get(stream_id) if room is not None else None
            if room is not None and member is not None:
                await room.leave(stream_id, "removed")
                member.client.deliver(events.LeftRoom(room_id, stream_id))
        await self.ctx.store.save_room(self.ctx.app, record)
        return True

    async def close(self, reason: str = "shutdown") -> None:
        for room in list(self.live.values()):
            try:
                await room.close(reason)
            except Exception:
                logger.exception("room %s: closing failed", room.room_id)

    def dump(self) -> list[dict[str, object]]:
        return [r.dump() for r in self.live.values()]
