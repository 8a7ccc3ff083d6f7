"""Streams: the live streams of one application, publish and play admission, and stream records.

The registry of live streams is authoritative. Admission is decided with no `await` between the
check and the claim: a publish checks that the id is free and takes it in the same step, and
gives it back if anything after that refuses it (the room's window, the record, the token).
A live stream's record lives in memory and is written behind to the store.
"""

from __future__ import annotations

import dataclasses
import logging
import time
from collections.abc import Iterator, Mapping
from typing import TypeVar

from confero.domain import observer
from confero.domain.access import Access
from confero.domain.context import Context
from confero.domain.ids import check_stream_id, new_stream_id
from confero.domain.results import StreamInfo
from confero.domain.room import Member, RoomClient, RoomPlayback
from confero.domain.rooms import Rooms
from confero.domain.stream import OWNER_ALIVE, PROBE_TIMEOUT, Playback, Publication, Stream
from confero.errors import (
    BadRequest,
    IdTaken,
    InUse,
    NotFound,
    ShuttingDown,
    StreamNotActive,
    SubtrackLimitReached,
    UnregisteredStream,
    ViewerLimitReached,
)
from confero.store import LIVE_STATUSES, StreamRecord, TokenRecord, now_ms

logger = logging.getLogger(__name__)

P = TypeVar("P", Playback, RoomPlayback)


class Streams(Mapping[str, Stream]):
    """Live streams and stream records of one application."""

    def __init__(self, ctx: Context, access: Access, rooms: Rooms) -> None:
        self.ctx = ctx
        self.access = access
        self.rooms = rooms
        self.live: dict[str, Stream] = {}
        self.closed = False

    def refuse_if_stopping(self) -> None:
        """No new publish, play, room membership or call once the server is stopping (draining)."""
        if self.closed:
            raise ShuttingDown("the server is shutting down")

    # -- publish ---------------------------------------------------------------------------------

    async def publish(
        self,
        client: RoomClient,
        remote: str,
        stream_id: str,
        *,
        name: str = "",
        room: str = "",
        metadata: str = "",
        role: str = "",
        token: str | None = None,
    ) -> Publication:
        """Admit `client` as the publisher of `stream_id`; the client's offer follows.

        With `room`, the stream is a member stream of that room (its window must be open, and
        its `subtracksLimit` not reached). `metadata` and `role` are kept on the record.
        """
        try:
            check_stream_id(stream_id)
            existing = self.live.get(stream_id)
            if existing is not None and not self.closed and await self._lost(existing, room=room, token=token):
                return self._take_over(existing, client, token=token)
            grant = await self.access.authorize("publish", token, stream_id, room)
            self.refuse_if_stopping()
            if stream_id in self.live:
                raise InUse(f"stream {stream_id} is already publishing")
            # The claim: no await since the check above.
            record = StreamRecord(
                stream_id=stream_id,
                name=name or stream_id,
                zombi=True,
                date=now_ms(),
                meta_data=metadata,
                role=role,
                main_track_stream_id=room,
            )
            stream = Stream(
                self.ctx,
                stream_id,
                record,
                room=room,
                name=name,
                metadata=metadata,
                on_started=self._started,
                on_ended=self._ended,
                on_restored=self._restored,
            )
            stream.publication = Publication(stream, client, token=token)
            self.live[stream_id] = stream
        except Exception as exc:
            self.ctx.observers.emit(observer.PublishRefused(self.ctx.app, stream_id, type(exc).__name__, room))
            raise
        try:
            if room:
                limit = await self._limit(room, "subtracks_limit")
                live_room = await self.rooms.open(room)
                # No await from here to add_stream: the count and the claim are one step.
                if 0 <= limit <= len([s for s in live_room.streams.values() if s is not stream]):
                    raise SubtrackLimitReached(f"room {room} has {limit} streams, its limit")
                if stream_id not in live_room.members:
                    live_room.join(Member(client, stream_id, name=name, metadata=metadata, role=role))
                live_room.add_stream(stream)
            stored = await self.ctx.store.get_stream(self.ctx.app, stream_id)
            if stored is None and self.ctx.settings().acceptOnlyStreamsInDataStore:
                raise UnregisteredStream("stream is not registered")
            if stored is not None:
                check_planned(stored)
            await self.access.consume(grant)
        except BaseException as exc:
            self._release(stream)
            self.ctx.observers.emit(observer.PublishRefused(self.ctx.app, stream_id, type(exc).__name__, room))
            raise
        if stored is not None:
            stream.record = stored  # a record left live by a crash is simply taken over
            stored.meta_data = metadata or stored.meta_data
            stored.role = role or stored.role
            stored.main_track_stream_id = room or stored.main_track_stream_id
        record = stream.record
        record.status = "preparing"
        record.remote_ip = remote
        record.update_time = now_ms()
        await self.ctx.store.save_stream(self.ctx.app, record)
        return stream.publication

    async def _lost(self, stream: Stream, *, room: str, token: str | None) -> bool:
        """A publish of a live id may take it over: its publisher started and is gone, in the
        same room, and with token control the same token or JWT as the original's. Gone: it
        stopped after its media was lost (the SDK's reconnect), or no media came in for
        OWNER_ALIVE seconds and its connection does not answer a probe within PROBE_TIMEOUT.
        Otherwise the usual checks refuse it (the token's, then InUse). When this returns
        True, `stream` is still live and nothing was awaited since the last check."""
        verdict = self._may_take_over(stream, room=room, token=token)
        if verdict is None:
            publication = stream.publication
            assert publication is not None
            if await publication.client.probe(PROBE_TIMEOUT):
                return False
            # Re-checked after the probe: the stream may have ended or changed hands meanwhile.
            verdict = self.live.get(stream.stream_id) is stream and self._may_take_over(
                stream, room=room, token=token
            ) in (None, True)
        return verdict

    def _may_take_over(self, stream: Stream, *, room: str, token: str | None) -> bool | None:
        """True: take it over; False: refuse (the usual checks); None: probe its client first."""
        old = stream.publication
        if stream.closed or old is None or not old.started:
            return False
        orphaned = stream.orphaned is not None  # stopped after its media was lost (the SDK's reconnect)
        if not orphaned and (old.closed or old.replaced):
            return False
        if room != stream.room:
            return False
        if self.access.controlled("publish") and token != old.token:
            return False
        if orphaned:
            return True
        return False if old.media_alive(OWNER_ALIVE) else None

    def _take_over(self, stream: Stream, client: RoomClient, *, token: str | None) -> Publication:
        """The stream's publisher lost its connection and comes back (the SDK's reconnect): the
        new publication replaces it on the same Stream, its players kept. No await: one step."""
        old = stream.publication
        assert old is not None
        publication = Publication(stream, client, token=token, restoring=True)
        stream.replace_publication(publication)
        logger.info("stream %s: publisher replaced (its connection was lost)", stream.stream_id)
        if not old.closed:
            self.ctx.tasks.spawn(old.close("replaced"))
        return publication

    def _restored(self, stream: Stream) -> None:
        live_room = self.rooms.get(stream.room) if stream.room else None
        if live_room is not None and not stream.closed:
            self.ctx.tasks.spawn(live_room.refresh_playbacks())

    # -- the live streams, as a read-only mapping -----------------------------------------------

    def __getitem__(self, key: str) -> Stream:
        return self.live[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self.live)

    def __len__(self) -> int:
        return len(self.live)

    def _release(self, stream: Stream) -> None:
        """Give back a claimed id whose publish was refused after the claim."""
        stream.closed = True
        if self.live.get(stream.stream_id) is stream:
            del self.live[stream.stream_id]
        live_room = self.rooms.get(stream.room) if stream.room else None
        if live_room is not None:
            live_room.remove_stream(stream)

    def _started(self, stream: Stream) -> None:
        record = stream.record
        record.status = "broadcasting"
        record.start_time = record.update_time = now_ms()
        record.absolute_start_time_ms = record.start_time
        record.main_track_stream_id = stream.room
        self.ctx.observers.emit(observer.StreamStarted(self.ctx.app, stream.stream_id, stream.room))
        self.ctx.tasks.spawn(self._announce(stream))

    async def _announce(self, stream: Stream) -> None:
        await self.ctx.store.save_stream(self.ctx.app, stream.record)
        live_room = self.rooms.get(stream.room) if stream.room else None
        if live_room is not None and not stream.closed:
            await live_room.stream_started(stream)

    async def _ended(self, stream: Stream, reason: str) -> None:
        if self.live.get(stream.stream_id) is stream:
            del self.live[stream.stream_id]
        live_room = self.rooms.get(stream.room) if stream.room else None
        if live_room is not None:
            await live_room.stream_ended(stream)
        if stream.started_at:  # only a stream that started can end; a refused or abandoned publish did not
            self.ctx.observers.emit(observer.StreamEnded(self.ctx.app, stream.stream_id, stream.room, reason))
        record = stream.record
        if record.zombi:
            await self.ctx.store.delete_stream(self.ctx.app, stream.stream_id)
            return
        record.status = "finished"
        record.update_time = now_ms()
        if record.start_time:
            record.duration = record.update_time - record.start_time
        record.webrtc_viewer_count = 0
        await self.ctx.store.save_stream(self.ctx.app, record)

    # -- play ------------------------------------------------------------------------------------

    def live_stream(self, stream_id: str) -> Stream:
        check_stream_id(stream_id)
        stream = self.live.get(stream_id)
        if stream is None or not stream.started or stream.publication is None or stream.publication.publisher is None:
            raise NotFound(f"stream {stream_id} is not streaming")
        return stream

    def info(self, stream_id: str) -> StreamInfo:
        return self.live_stream(stream_id).info()

    async def play(
        self,
        client: RoomClient,
        stream_id: str,
        *,
        room: str = "",
        track_list: list[str] | None = None,
        own_stream_id: str = "",
        token: str | None = None,
    ) -> Playback | RoomPlayback:
        """Play one stream, or a whole room on one peer connection when `stream_id` is a room."""
        try:
            return await self._play(client, stream_id, room, track_list or [], own_stream_id, token)
        except Exception as exc:
            self.ctx.observers.emit(observer.PlayRefused(self.ctx.app, stream_id, type(exc).__name__))
            raise

    async def _play(
        self,
        client: RoomClient,
        stream_id: str,
        room: str,
        track_list: list[str],
        own_stream_id: str,
        token: str | None,
    ) -> Playback | RoomPlayback:
        check_stream_id(stream_id)
        self.refuse_if_stopping()
        stream = self.live.get(stream_id)
        if (stream is None or not stream.started) and (
            room == stream_id
            or self.rooms.get(stream_id) is not None
            or (not room and await self.rooms.exists(stream_id))
        ):
            grant = await self.access.authorize("play", token, stream_id, stream_id)
            return await self._play_room(client, stream_id, track_list, own_stream_id, grant)
        grant = await self.access.authorize("play", token, stream_id, stream.room if stream is not None else "")
        stream = self.live_stream(stream_id)
        if room and stream.room != room:
            # A member's media never reaches a room it has not joined.
            raise NotFound(f"stream {stream_id} is not streaming in room {room}")
        check_viewers(stream_id, stream.record.webrtc_viewer_limit, len(stream.playbacks))
        await self.access.consume(grant)
        stream = self.live_stream(stream_id)
        check_viewers(stream_id, stream.record.webrtc_viewer_limit, len(stream.playbacks))
        return await self._offer(stream.add_player(client))

    async def _play_room(
        self, client: RoomClient, room_id: str, track_list: list[str], own_stream_id: str, grant: TokenRecord | None
    ) -> RoomPlayback:
        limit = await self._limit(room_id, "webrtc_viewer_limit")
        live_room = await self.rooms.open(room_id, create=False)
        check_viewers(room_id, limit, len(live_room.playbacks))
        await self.access.consume(grant)
        check_viewers(room_id, limit, len(live_room.playbacks))
        excluded = {t[1:] for t in track_list if t.startswith("!")}
        excluded |= {m.stream_id for m in live_room.members.values() if m.client.client_id == client.client_id}
        if own_stream_id:
            excluded.add(own_stream_id)
        return await self._offer(live_room.add_player(client, excluded))

    @staticmethod
    async def _offer(playback: P) -> P:
        """Make the play's first offer; a play whose offer fails is closed."""
        try:
            await playback.offer()
        except BaseException:
            await playback.close("error")
            raise
        return playback

    # -- data ------------------------------------------------------------------------------------

    def send_data(self, stream_id: str, data: str | bytes) -> int:
        """REST: a message to everyone on the stream's data channels (publisher and players)."""
        stream = self.live.get(stream_id)
        live_room = self.rooms.get(stream_id)
        if stream is None and live_room is None:
            raise NotFound(f"stream {stream_id} is not streaming")
        limit = self.ctx.settings().dataChannelMessageLimit
        size = len(data.encode() if isinstance(data, str) else data)  # bytes, as on the channel
        if size > limit:
            raise BadRequest(f"the message has {size} bytes; the limit is {limit}")
        if stream is not None:
            return stream.deliver_data(data)
        assert live_room is not None
        return live_room.deliver_data(data)

    # -- records (REST) --------------------------------------------------------------------------

    async def stop(self, stream_id: str) -> bool:
        """Stop a live stream from outside (REST delete): players and publisher are told."""
        stream = self.live.get(stream_id)
        if stream is None:
            return False
        await stream.close("deleted")
        return True

    async def stop_broadcast(self, stream_id: str) -> bool:
        """REST stop: a live stream, or every live stream of a room (its subtracks), stops."""
        stopped = await self.stop(stream_id)
        live_room = self.rooms.get(stream_id)
        for stream in live_room.live_streams() if live_room is not None else []:
            stopped = await self.stop(stream.stream_id) or stopped
        return stopped

    async def create(self, record: StreamRecord) -> StreamRecord:
        if record.stream_id:
            check_stream_id(record.stream_id)
            if (
                record.stream_id in self.live
                or await self.ctx.store.get_stream(self.ctx.app, record.stream_id)
                or await self.rooms.exists(record.stream_id)
            ):
                raise IdTaken("Stream id is already being used. Please change stream id or keep it empty")
        else:
            record.stream_id = new_stream_id()
        record.status = "created"
        record.date = now_ms()
        record.zombi = False
        await self.ctx.store.save_stream(self.ctx.app, record)
        return record

    async def record(self, stream_id: str) -> StreamRecord | None:
        """A live stream's record is the one in memory; others come from the store."""
        stream = self.live.get(stream_id)
        if stream is not None:
            return stream.record
        return await self.ctx.store.get_stream(self.ctx.app, stream_id)

    async def records(
        self, offset: int, size: int, *, search: str = "", sort_by: str = "", order: str = "asc"
    ) -> list[StreamRecord]:
        records = await self.ctx.store.list_streams(
            self.ctx.app, offset, min(size, 50), search=search, sort_by=sort_by, order=order
        )
        return [self.live[r.stream_id].record if r.stream_id in self.live else r for r in records]

    async def count(self, search: str = "") -> int:
        return await self.ctx.store.count_streams(self.ctx.app, search)

    async def save(self, record: StreamRecord) -> None:
        record.update_time = now_ms()
        await self.ctx.store.save_stream(self.ctx.app, record)

    async def delete(self, stream_id: str) -> bool:
        """Delete a stream's record; a live stream is stopped first (its clients are told)."""
        stopped = await self.stop(stream_id)
        deleted = await self.ctx.store.delete_stream(self.ctx.app, stream_id)
        room_deleted = await self.rooms.delete(stream_id)  # a room is a Broadcast too
        return stopped or deleted or room_deleted

    def viewer_count(self, stream_id: str) -> int:
        """WebRTC players of a stream, or of a room (its room plays)."""
        stream = self.live.get(stream_id)
        if stream is not None:
            return len(stream.playbacks)
        live_room = self.rooms.get(stream_id)
        return len(live_room.playbacks) if live_room is not None else 0

    def total_viewers(self) -> int:
        return sum(len(s.playbacks) for s in self.live.values()) + sum(len(r.playbacks) for r in self.rooms.values())

    def players(self, stream_id: str) -> list[str]:
        """The client ids playing a stream (or a room), in a stable order."""
        stream = self.live.get(stream_id)
        live_room = self.rooms.get(stream_id)
        legs = list(stream.playbacks) if stream is not None else list(live_room.playbacks) if live_room else []
        return sorted(p.client.client_id for p in legs)

    async def _limit(self, stream_id: str, attribute: str) -> int:
        """A limit stored on a Broadcast (-1: none)."""
        record = await self.record(stream_id)
        return int(getattr(record, attribute)) if record is not None else -1

    # -- rooms as main-track Broadcasts ------------------------------------------------------------

    async def broadcast(self, stream_id: str, *, live_only: bool = False) -> StreamRecord | None:
        """The Broadcast of an id: a stream's record, or a room's as a main track.

        A room's `sub_track_stream_ids` are its stored stream list (REST), or only its live member
        streams (`live_only`, what the WebSocket's `broadcastObject` carries). The result is a copy.
        """
        record = await self.record(stream_id)
        room_record = await self.rooms.record(stream_id)
        if room_record is None:
            return dataclasses.replace(record) if record is not None else None
        live_room = self.rooms.get(stream_id)
        live_ids = [s.stream_id for s in live_room.live_streams()] if live_room is not None else []
        if record is not None:
            view = dataclasses.replace(record)
        else:
            view = StreamRecord(
                stream_id=stream_id,
                name=stream_id,
                date=room_record.start_date * 1000,
                planned_start_date=room_record.start_date,
                planned_end_date=room_record.end_date,
                zombi=room_record.zombi,
            )
        view.sub_track_stream_ids = live_ids if live_only else list(room_record.room_stream_list)
        if live_ids and view.status not in LIVE_STATUSES:
            view.status = "broadcasting"
        return view

    async def subtracks(self, room_id: str, *, role: str = "", status: str = "") -> list[StreamRecord]:
        """The member streams of a room: the live ones (oldest first), then the others it lists."""
        live_room = self.rooms.get(room_id)
        room_record = await self.rooms.record(room_id)
        ids = [s.stream_id for s in live_room.live_streams()] if live_room is not None else []
        ids += [i for i in (room_record.room_stream_list if room_record else []) if i not in ids]
        out = []
        for stream_id in ids:
            record = await self.record(stream_id)
            if record is None or (role and record.role != role) or (status and record.status != status):
                continue
            out.append(dataclasses.replace(record))
        return out

    async def add_subtrack(self, room_id: str, stream_id: str) -> None:
        """REST: `stream_id` becomes a member stream of main track `room_id`."""
        if not room_id or not stream_id:
            raise BadRequest("Room id or stream id is empty")
        if await self.rooms.ensure_record(room_id) is None:
            raise NotFound(f"There is no stream with id:{room_id} as mainTrack")
        limit = await self._limit(room_id, "subtracks_limit")
        live_room = self.rooms.get(room_id)
        active = len(live_room.live_streams()) if live_room is not None else 0
        if 0 <= limit <= active:
            raise SubtrackLimitReached(f"Subtrack limit is reached for the main track:{room_id}")
        sub = await self.record(stream_id)
        if sub is not None:
            sub.main_track_stream_id = room_id
            await self.save(sub)
        await self.rooms.set_stream(room_id, stream_id, present=True)

    async def remove_subtrack(self, room_id: str, stream_id: str) -> None:
        if not room_id or not stream_id:
            raise BadRequest("Room id or stream id is empty")
        if not await self.rooms.set_stream(room_id, stream_id, present=False):
            raise NotFound(f"Subtrack({stream_id}) is not removed from mainTrack:{room_id}")
        sub = await self.record(stream_id)
        if sub is not None and sub.main_track_stream_id == room_id:
            sub.main_track_stream_id = ""
            await self.save(sub)

    async def update_metadata(self, stream_id: str, metadata: str) -> None:
        """A stream's `metaData` (a live member's, as its room sees it, too)."""
        stream = self.live.get(stream_id)
        record = stream.record if stream is not None else await self.ctx.store.get_stream(self.ctx.app, stream_id)
        if record is None:
            raise NotFound(f"stream {stream_id} does not exist")
        record.meta_data = metadata
        if stream is not None:
            stream.metadata = metadata
            live_room = self.rooms.get(stream.room) if stream.room else None
            member = live_room.members.get(stream_id) if live_room is not None else None
            if member is not None:
                member.metadata = metadata
        await self.save(record)

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self, reason: str = "shutdown") -> None:
        self.closed = True
        for stream in list(self.live.values()):
            try:
                await stream.close(reason)
            except Exception:
                logger.exception("stream %s: closing failed", stream.stream_id)

    def dump(self) -> list[dict[str, object]]:
        return [s.dump() for s in self.live.values()]


def check_planned(record: StreamRecord, now: float | None = None) -> None:
    """A stream with planned dates publishes only between them (0: no bound)."""
    now = time.time() if now is None else now
    if record.planned_start_date and now < record.planned_start_date:
        raise StreamNotActive(f"stream {record.stream_id} starts at {record.planned_start_date}")
    if record.planned_end_date and now > record.planned_end_date:
        raise StreamNotActive(f"stream {record.stream_id} ended at {record.planned_end_date}")


def check_viewers(stream_id: str, limit: int, viewers: int) -> None:
    if 0 <= limit <= viewers:
        raise ViewerLimitReached(f"{stream_id} has {viewers} viewers, its limit")


__all__ = ["Streams", "check_planned", "check_viewers"]
