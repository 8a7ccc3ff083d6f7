"""Application: one Ant Media application namespace (WebRTCAppEE, LiveApp, ...).

The façade that signaling and REST call: publish, play, stop and stream records. It owns the
live Streams of its namespace and writes their records to the store.
"""

from __future__ import annotations

import asyncio
import ipaddress
import logging
import time
from typing import Any

from confero.auth import jwt, tokens
from confero.domain import events
from confero.domain.events import Listener
from confero.domain.ids import check_stream_id, new_stream_id
from confero.domain.p2p import PeerCalls
from confero.domain.room import DEFAULT_DURATION, Member, Room
from confero.domain.stream import Playback, Publication, RoomPlayback, Stream
from confero.errors import BadRequest, ConferoError, Conflict, Forbidden, NotFound, Unauthorized
from confero.media import Router
from confero.settings import AppSettings, Settings, SettingsError
from confero.store import RoomRecord, Store, StreamRecord, TokenRecord

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
        self.calls = PeerCalls()
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
        self,
        listener: Listener,
        stream_id: str,
        *,
        name: str = "",
        room: str = "",
        metadata: str = "",
        token: str | None = None,
    ) -> Publication:
        """Reserve `stream_id` for `listener`; the client's offer follows.

        With `room`, the stream is a member stream of that room (its window must be open).
        """
        check_stream_id(stream_id)
        grant = await self.authorize("publish", token, stream_id, room)
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
        # Check again with no await in between: another publish may have taken the id meanwhile.
        if stream_id in self.streams:
            raise Conflict(f"stream {stream_id} is already publishing", definition="streamIdInUse")
        stream = Stream(self, stream_id, room=room, zombi=record is None or record.zombi, name=name, metadata=metadata)
        stream.publication = Publication(stream, listener)
        self.streams[stream_id] = stream
        try:
            await self.consume(grant)
        except Unauthorized:
            del self.streams[stream_id]
            raise
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
        token: str | None = None,
    ) -> Playback | RoomPlayback:
        """Play one stream, or a whole room on one peer connection when `stream_id` is a room."""
        check_stream_id(stream_id)
        stream = self.streams.get(stream_id)
        if (stream is None or stream.publication is None or not stream.publication.started) and (
            room == stream_id or stream_id in self.rooms or (not room and await self.room_exists(stream_id))
        ):
            grant = await self.authorize("play", token, stream_id, stream_id)
            return await self.play_room(listener, stream_id, track_list or [], own_stream_id, grant)
        grant = await self.authorize("play", token, stream_id, stream.room if stream is not None else "")
        stream = self.live_stream(stream_id)
        if room and stream.room != room:
            # A member's media never reaches a room it has not joined.
            raise NotFound(f"stream {stream_id} is not streaming in room {room}", definition="no_stream_exist")
        await self.consume(grant)
        playback = Playback(stream, listener)
        stream.playbacks.add(playback)
        try:
            await playback.offer()
        except BaseException:
            await playback.close("error")
            raise
        return playback

    async def play_room(
        self,
        listener: Listener,
        room_id: str,
        track_list: list[str],
        own_stream_id: str,
        grant: TokenRecord | None = None,
    ) -> RoomPlayback:
        room = await self.open_room(room_id, create=False)
        await self.consume(grant)
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

    # -- 1-1 calls and data ----------------------------------------------------------------

    async def join_call(self, listener: Listener, call_id: str, token: str | None = None) -> None:
        """Join a 1-1 call. With token control on, a publish or play token for the call id is needed."""
        check_stream_id(call_id)
        s = self.app_settings
        controlled = {
            "publish": s.publishTokenControlEnabled or s.publishJwtControlEnabled,
            "play": s.playTokenControlEnabled or s.playJwtControlEnabled,
        }
        if any(controlled.values()):
            grant = None
            errors = []
            # Only a controlled type can admit: an uncontrolled one would let anyone in.
            for type_ in [t for t, on in controlled.items() if on]:
                try:
                    grant = await self.authorize(type_, token, call_id, "")
                    break
                except Unauthorized as exc:
                    errors.append(exc)
            else:
                raise errors[0]
            await self.consume(grant)
        self.calls.join(listener, call_id)

    def leave_call(self, listener: Listener, call_id: str, *, told: bool = True) -> bool:
        return self.calls.leave(listener, call_id, told=told)

    async def send_stream_data(self, stream_id: str, data: str | bytes) -> int:
        """REST: a message to everyone on the stream's data channels (publisher and players)."""
        stream = self.streams.get(stream_id)
        room = self.rooms.get(stream_id)
        if stream is None and room is None:
            raise NotFound(f"stream {stream_id} is not streaming", definition="no_stream_exist")
        limit = self.app_settings.dataChannelMessageLimit
        size = len(data.encode() if isinstance(data, str) else data)  # bytes, as on the channel
        if size > limit:
            raise BadRequest(f"the message has {size} bytes; the limit is {limit}")
        if stream is not None:
            return stream.deliver_data(data)
        assert room is not None
        return room.deliver_data(data)

    # -- security --------------------------------------------------------------------------

    async def authorize(self, type_: str, token: str | None, stream_id: str, stream_room: str) -> TokenRecord | None:
        """Check a publish/play token when the application asks for one.

        Returns the stored one-time token to consume once the request is accepted (a refused
        request must not use it up), or None when there is nothing to consume.
        """
        s = self.app_settings
        token_on = s.publishTokenControlEnabled if type_ == "publish" else s.playTokenControlEnabled
        jwt_on = s.publishJwtControlEnabled if type_ == "publish" else s.playJwtControlEnabled
        if not token_on and not jwt_on:
            return None
        reasons: list[str] = []
        if token:
            if jwt_on:
                ok, why = jwt.check_stream_token(
                    s.jwtStreamSecretKey, token, type_=type_, stream_id=stream_id, stream_room=stream_room
                )
                if ok:
                    return None
                reasons.append(why)
            if token_on:
                record = await self.store.get_token(self.name, token)
                decision = tokens.check(record, type_=type_, stream_id=stream_id, stream_room=stream_room)
                if decision.allowed:
                    return record if decision.consume else None
                reasons.append(decision.reason)
        raise Unauthorized(
            f"{type_} of {stream_id} refused: {'; '.join(reasons) or 'a token is required'}",
            definition="unauthorized_access",
        )

    async def consume(self, grant: TokenRecord | None) -> None:
        """Use up a one-time token; a second use racing this one loses."""
        if grant is not None and not await self.store.consume_token(self.name, grant.token_id):
            raise Unauthorized("the token was already used", definition="unauthorized_access")

    @staticmethod
    def _check_token_request(stream_id: str, type_: str, expire_date: int) -> None:
        if type_ and type_ not in tokens.TYPES:
            raise BadRequest("Invalid token type. Supported types are 'play' and 'publish'")
        if not stream_id or not type_ or expire_date <= 0:
            raise BadRequest("Define Stream ID, Token Type and Expire Date (unix time)")
        check_stream_id(stream_id)

    async def issue_token(self, stream_id: str, type_: str, expire_date: int, room_id: str = "") -> TokenRecord:
        self._check_token_request(stream_id, type_, expire_date)
        record = TokenRecord(
            token_id=tokens.new_token_id(), stream_id=stream_id, expire_date=expire_date, type=type_, room_id=room_id
        )
        await self.store.save_token(self.name, record)
        return record

    def issue_jwt(self, stream_id: str, type_: str, expire_date: int, room_id: str = "") -> TokenRecord:
        self._check_token_request(stream_id, type_, expire_date)
        secret = self.app_settings.jwtStreamSecretKey
        if len(secret) < jwt.MIN_SECRET:
            raise BadRequest("jwtStreamSecretKey must be set to at least 32 characters")
        token = jwt.issue_stream_token(secret, stream_id, type_, expire_date, room_id)
        return TokenRecord(token_id=token, stream_id=stream_id, expire_date=expire_date, type=type_, room_id=room_id)

    async def validate_token(self, token_id: str, stream_id: str, type_: str, room_id: str) -> bool:
        """REST validate-token: the same rules as a publish/play; a room-less token is used up."""
        record = await self.store.get_token(self.name, token_id)
        stream = self.streams.get(stream_id)
        stream_room = room_id if room_id and (stream_id == room_id or (stream and stream.room == room_id)) else ""
        decision = tokens.check(record, type_=type_, stream_id=stream_id, stream_room=stream_room)
        if decision.allowed and decision.consume and record is not None:
            return await self.store.consume_token(self.name, record.token_id)
        return decision.allowed

    async def revoke_tokens(self, stream_id: str) -> int:
        return await self.store.delete_tokens_for_stream(self.name, stream_id)

    async def list_tokens(self, stream_id: str, offset: int, size: int) -> list[TokenRecord]:
        return await self.store.list_tokens(self.name, stream_id, offset, min(size, 50))

    def check_rest_access(self, remote: str, authorization: str) -> None:
        """REST protection: the allowed networks (default loopback), then the application JWT."""
        s = self.app_settings
        if s.ipFilterEnabled:
            try:
                address = ipaddress.ip_address(remote.split("%")[0])
            except ValueError:
                raise Forbidden("Not allowed IP") from None
            if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
                address = address.ipv4_mapped
            networks = [ipaddress.ip_network(c, strict=False) for c in s.allowed_networks_text()]
            if not any(address.version == n.version and address in n for n in networks):
                raise Forbidden("Not allowed IP")
        if s.jwtControlEnabled:
            if not authorization:
                raise Unauthorized("Invalid App JWT Token: the Authorization header is missing")
            if not jwt.check_bearer(s.jwtSecretKey, authorization):
                raise Forbidden("Invalid App JWT Token")

    def settings_view(self) -> dict[str, Any]:
        return self.app_settings.to_dict()

    def update_settings(self, values: dict[str, Any]) -> dict[str, Any]:
        """Change settings at run time; new publish/play requests see them at once."""
        try:
            self.app_settings.update(values, where=self.name)
        except SettingsError as exc:
            raise BadRequest(str(exc)) from None
        return self.settings_view()

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
                raise Conflict("Stream id is already being used. Please change stream id or keep it empty", status=400)
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
        # Check before changing: a live room's record is the one in memory.
        start_date, end_date = start_date or record.start_date, end_date or record.end_date
        if end_date <= start_date:
            raise BadRequest("endDate must be after startDate")
        record.start_date, record.end_date = start_date, end_date
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
            member = room.members.get(stream_id) if room is not None else None
            if room is not None and member is not None:
                await room.leave(stream_id, "removed")
                member.listener.deliver(events.LeftRoom(room_id, stream_id))
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
            "calls": self.calls.dump(),
            "tasks": len(self._tasks),
        }


__all__ = ["Application", "events"]
