"""Streams: the live streams of one application, publish and play admission, and stream records.

The registry of live streams is authoritative. Admission is decided with no `await` between the
check and the claim: a publish checks that the id is free and takes it in the same step, and
gives it back if anything after that refuses it (the room's window, the record, the token).
A live stream's record lives in memory and is written behind to the store.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator, Mapping
from typing import TypeVar

from confero.domain import observer
from confero.domain.access import Access
from confero.domain.context import Context
from confero.domain.ids import check_stream_id, new_stream_id
from confero.domain.results import StreamInfo
from confero.domain.room import Member, RoomClient, RoomPlayback
from confero.domain.rooms import Rooms
from confero.domain.stream import Playback, Publication, Stream
from confero.errors import BadRequest, IdTaken, InUse, NotFound, ShuttingDown, UnregisteredStream
from confero.store import StreamRecord, TokenRecord, now_ms

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
        token: str | None = None,
    ) -> Publication:
        """Admit `client` as the publisher of `stream_id`; the client's offer follows.

        With `room`, the stream is a member stream of that room (its window must be open).
        """
        try:
            check_stream_id(stream_id)
            grant = await self.access.authorize("publish", token, stream_id, room)
            if self.closed:
                raise ShuttingDown("the server is shutting down")
            if stream_id in self.live:
                raise InUse(f"stream {stream_id} is already publishing")
            # The claim: no await since the check above.
            record = StreamRecord(stream_id=stream_id, name=name or stream_id, zombi=True, date=now_ms())
            stream = Stream(
                self.ctx,
                stream_id,
                record,
                room=room,
                name=name,
                metadata=metadata,
                on_started=self._started,
                on_ended=self._ended,
            )
            stream.publication = Publication(stream, client)
            self.live[stream_id] = stream
        except Exception as exc:
            self.ctx.observers.emit(observer.PublishRefused(self.ctx.app, stream_id, type(exc).__name__, room))
            raise
        try:
            if room:
                live_room = await self.rooms.open(room)
                if stream_id not in live_room.members:
                    live_room.join(Member(client, stream_id, name=name, metadata=metadata))
                live_room.add_stream(stream)
            stored = await self.ctx.store.get_stream(self.ctx.app, stream_id)
            if stored is None and self.ctx.settings().acceptOnlyStreamsInDataStore:
                raise UnregisteredStream("stream is not registered")
            await self.access.consume(grant)
        except BaseException as exc:
            self._release(stream)
            self.ctx.observers.emit(observer.PublishRefused(self.ctx.app, stream_id, type(exc).__name__, room))
            raise
        if stored is not None:
            stream.record = stored  # a record left live by a crash is simply taken over
        record = stream.record
        record.status = "preparing"
        record.remote_ip = remote
        record.update_time = now_ms()
        await self.ctx.store.save_stream(self.ctx.app, record)
        return stream.publication

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
        await self.access.consume(grant)
        return await self._offer(stream.add_player(client))

    async def _play_room(
        self, client: RoomClient, room_id: str, track_list: list[str], own_stream_id: str, grant: TokenRecord | None
    ) -> RoomPlayback:
        live_room = await self.rooms.open(room_id, create=False)
        await self.access.consume(grant)
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

    async def create(self, record: StreamRecord) -> StreamRecord:
        if record.stream_id:
            check_stream_id(record.stream_id)
            if record.stream_id in self.live or await self.ctx.store.get_stream(self.ctx.app, record.stream_id):
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

    async def records(self, offset: int, size: int) -> list[StreamRecord]:
        records = await self.ctx.store.list_streams(self.ctx.app, offset, min(size, 50))
        return [self.live[r.stream_id].record if r.stream_id in self.live else r for r in records]

    async def save(self, record: StreamRecord) -> None:
        record.update_time = now_ms()
        await self.ctx.store.save_stream(self.ctx.app, record)

    async def delete(self, stream_id: str) -> bool:
        """Delete a stream's record; a live stream is stopped first (its clients are told)."""
        stopped = await self.stop(stream_id)
        deleted = await self.ctx.store.delete_stream(self.ctx.app, stream_id)
        return stopped or deleted

    def viewer_count(self, stream_id: str) -> int:
        stream = self.live.get(stream_id)
        return len(stream.playbacks) if stream else 0

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


__all__ = ["Streams"]
