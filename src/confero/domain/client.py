"""Client: one signaling connection as the domain sees it, and the one owner of what it holds.

A Client owns its legs (the publications and plays it started, by stream id) and knows the
rooms it joined (an index the Room writes when the client joins or leaves) and its 1-1 calls
(kept by PeerCalls). Each command is one method that makes the decision and returns a frozen
value or raises; the transport only translates. Events for the client go to its `sink`.
Closing the connection is leaving: every leg ends, calls and rooms are left.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Protocol, TypeVar

from confero.domain import events
from confero.domain.access import Access
from confero.domain.calls import PeerCalls
from confero.domain.ids import check_stream_id, new_stream_id
from confero.domain.results import DebugInfo, JoinResult, StreamInfo, StreamSummary, SubscriberInfo
from confero.domain.room import Member, RoomPlayback
from confero.domain.rooms import Rooms
from confero.domain.stream import Leg, Playback, Player, Publication
from confero.domain.streams import Streams
from confero.errors import AlreadyPlaying, AlreadyPublishing, InUse, NoPeer, NoRoomGiven, NotFound, OutOfOrder
from confero.media.types import MediaError
from confero.store import StreamRecord

logger = logging.getLogger(__name__)

TRACK_PREFIXES = ("ARDAMSv", "ARDAMSa")  # see stream.track_id


class Sink(Protocol):
    """Where a client's events go (the transport's session)."""

    def deliver(self, event: events.Event) -> None:
        """Queue `event` for the client; never blocks, never raises."""

    async def probe(self, wait: float) -> bool:
        """Whether the connection answers a liveness probe within `wait` seconds."""
        ...


T = TypeVar("T")

#: The largest page a WebSocket list command answers (Ant Media's).
MAX_PAGE = 50


def page(items: list[T], offset: int, size: int) -> list[T]:
    """`size` items from `offset` (negative counts as 0), at most MAX_PAGE."""
    offset = max(offset, 0)
    return items[offset : offset + min(max(size, 0), MAX_PAGE)]


class Client:
    """One connection's publications, plays, rooms and calls."""

    def __init__(
        self,
        client_id: str,
        remote: str,
        sink: Sink,
        *,
        streams: Streams,
        rooms: Rooms,
        calls: PeerCalls,
        access: Access,
        on_closed: Callable[[Client], None] | None = None,
    ) -> None:
        self._client_id = client_id
        self.remote = remote
        self.sink = sink
        self.streams = streams
        self.rooms = rooms
        self.calls = calls
        self.access = access
        self.legs: dict[str, Leg] = {}
        self.memberships: dict[str, str] = {}  # room id -> the stream id this client joined it with
        self._on_closed = on_closed
        self.closed = False
        self.last_heard = time.monotonic()  # when the connection last sent anything (heard())

    @property
    def client_id(self) -> str:
        return self._client_id

    def heard(self) -> None:
        """The connection sent something (the transport calls this per message)."""
        self.last_heard = time.monotonic()

    def silent_for(self) -> float:
        """Seconds since the connection last sent anything."""
        return time.monotonic() - self.last_heard

    async def probe(self, wait: float) -> bool:
        """Whether the connection answers a liveness probe (a WebSocket ping) within `wait` seconds."""
        if self.closed:
            return False
        return await self.sink.probe(wait)

    # -- what the domain tells this client -------------------------------------------------------

    def deliver(self, event: events.Event) -> None:
        self.sink.deliver(event)

    def active_sessions(self) -> int:
        """What this connection keeps running: its publishes and plays, the rooms it joined with
        a stream id it neither publishes nor plays, and its 1-1 calls."""
        rooms = sum(1 for stream_id in self.memberships.values() if stream_id not in self.legs)
        return len(self.legs) + rooms + len(self.calls.of(self.client_id))

    def leg_closed(self, leg: Leg) -> None:
        if self.legs.get(leg.stream_id) is leg:
            del self.legs[leg.stream_id]

    def joined_room(self, room_id: str, stream_id: str) -> None:
        self.memberships[room_id] = stream_id

    def left_room(self, room_id: str, stream_id: str) -> None:
        if self.memberships.get(room_id) == stream_id:
            del self.memberships[room_id]

    def room_of(self, stream_id: str) -> str:
        """The room this client joined with `stream_id`, if any (the legacy conference publish)."""
        return next((room for room, sid in self.memberships.items() if sid == stream_id), "")

    # -- publish and play ------------------------------------------------------------------------

    def _refuse_if_in_use(self, stream_id: str) -> None:
        """One connection publishes or plays an id at most once at a time."""
        leg = self.legs.get(stream_id)
        if isinstance(leg, Publication):
            raise AlreadyPublishing(f"{stream_id} is already in use on this connection")
        if leg is not None:
            raise AlreadyPlaying(f"{stream_id} is already in use on this connection")

    async def publish(
        self,
        stream_id: str,
        *,
        name: str = "",
        room: str = "",
        metadata: str = "",
        role: str = "",
        token: str | None = None,
    ) -> None:
        """Publish `stream_id`; `room` is the multitrack flow's main track, else the room joined with it."""
        self._refuse_if_in_use(stream_id)
        room = room or self.room_of(stream_id)
        publication = await self.streams.publish(
            self, self.remote, stream_id, name=name, room=room, metadata=metadata, role=role, token=token
        )
        self.legs[stream_id] = publication

    async def play(
        self,
        stream_id: str,
        *,
        room: str = "",
        track_list: list[str] | None = None,
        own_stream_id: str = "",
        token: str | None = None,
        subscriber_id: str = "",
        subscriber_name: str = "",
    ) -> None:
        self._refuse_if_in_use(stream_id)
        leg = await self.streams.play(
            self,
            stream_id,
            room=room,
            track_list=track_list,
            own_stream_id=own_stream_id or self.memberships.get(stream_id, ""),
            token=token,
        )
        leg.subscriber_id, leg.subscriber_name = subscriber_id, subscriber_name
        if not leg.closed:
            self.legs[stream_id] = leg

    async def configure(self, stream_id: str, type_: str, sdp: str) -> None:
        """The client's offer (to publish) or answer (to play); a failure ends the leg."""
        if type_ not in ("offer", "answer") or not sdp:
            raise OutOfOrder("takeConfiguration needs type offer/answer and an sdp")
        leg = self.legs.get(stream_id)
        if type_ == "offer" and isinstance(leg, Publication):
            step = leg.accept_offer(sdp)
        elif type_ == "answer" and isinstance(leg, Player):
            step = leg.accept_answer(sdp)
        else:
            raise OutOfOrder(f"no {'publish' if type_ == 'offer' else 'play'} of {stream_id} on this connection")
        try:
            await step
        except (MediaError, OutOfOrder):
            self.legs.pop(stream_id, None)
            await leg.end("error")
            raise

    async def add_candidate(self, stream_id: str, candidate: str, mid: str | None, index: int | None) -> None:
        leg = self.legs.get(stream_id)
        if leg is None:
            raise NoPeer(f"no publish or play of {stream_id}")
        await leg.add_candidate(candidate, mid, index)

    async def stop(self, stream_id: str) -> None:
        leg = self.legs.pop(stream_id, None)
        if leg is None:
            logger.debug("stop for %s, which this connection does not have", stream_id)
            return
        await leg.end("stop")

    def stream_info(self, stream_id: str) -> StreamInfo:
        return self.streams.info(stream_id)

    # -- rooms -----------------------------------------------------------------------------------

    async def join_room(
        self, room_id: str, stream_id: str = "", *, name: str = "", metadata: str = "", role: str = "", mode: str = ""
    ) -> JoinResult:
        self.streams.refuse_if_stopping()
        if room_id in self.memberships:
            await self._leave_room(room_id, self.memberships[room_id])
        room = await self.rooms.open(room_id)
        stream_id = stream_id or new_stream_id()
        check_stream_id(stream_id)
        existing = room.members.get(stream_id)
        if existing is not None and existing.client.client_id != self.client_id:
            raise InUse(f"{stream_id} is already a member of {room_id}")
        live = self.streams.live.get(stream_id)
        if live is not None and live.publication is not None and live.publication.client.client_id != self.client_id:
            raise InUse(f"stream {stream_id} is already publishing")
        room.join(Member(self, stream_id, name=name, metadata=metadata, role=role, mode=mode))
        return JoinResult(room.room_id, stream_id, room.summaries(exclude=stream_id))

    async def leave_room(self, room_id: str, stream_id: str = "") -> str:
        """Leave `room_id`; returns the stream id this client was a member with."""
        if not room_id:
            raise NoRoomGiven("no room given")
        stream_id = self.memberships.get(room_id, "") or stream_id
        await self._leave_room(room_id, stream_id)
        return stream_id

    async def _leave_room(self, room_id: str, stream_id: str = "") -> None:
        room = self.rooms.get(room_id)
        self.memberships.pop(room_id, None)
        if room is None:
            return
        mine = [m.stream_id for m in room.members.values() if m.client.client_id == self.client_id]
        for sid in [stream_id] if stream_id else mine:
            member = room.members.get(sid)
            if member is not None and member.client.client_id == self.client_id:
                await room.leave(sid)
        for playback in [p for p in room.playbacks if p.client.client_id == self.client_id]:
            await playback.close("leave")

    def room_info(self, room_id: str, exclude: str = "") -> tuple[StreamSummary, ...]:
        if not room_id:
            raise NoRoomGiven("no room given")
        return self.rooms.summaries(room_id, exclude)

    def _room_play(self, stream_id: str) -> RoomPlayback:
        leg = self.legs.get(stream_id)
        if not isinstance(leg, RoomPlayback):
            raise NotFound(f"no room play of {stream_id} on this connection")
        return leg

    # -- video slots of a room play (the player's commands name the room, or its own stream) --

    def _slot_play(self, stream_id: str) -> RoomPlayback:
        """The room play `stream_id` names: the room's, or this connection's only room play
        (the SDK sends the publish stream id, or the pinned stream's)."""
        leg = self.legs.get(stream_id)
        if isinstance(leg, RoomPlayback):
            return leg
        plays = [leg for leg in self.legs.values() if isinstance(leg, RoomPlayback)]
        if len(plays) != 1:
            raise NotFound(f"no room play for {stream_id} on this connection")
        return plays[0]

    def set_max_video_tracks(self, stream_id: str, count: int) -> None:
        self._slot_play(stream_id).set_max_video_tracks(count)

    def video_track_assignments(self, stream_id: str) -> None:
        """The room play's assignments, sent on its data channel (as Ant Media answers)."""
        self._slot_play(stream_id).send_assignments()

    def assign_video_track(self, stream_id: str, label: str, enabled: bool) -> None:
        """Pin `stream_id` to the slot `label` (enabled), or unpin it."""
        self._slot_play(stream_id).assign_video_track(label, stream_id, enabled)

    def update_video_track_assignments(self, stream_id: str, offset: int, size: int) -> None:
        self._slot_play(stream_id).set_page(offset, size)

    def enable_track(self, stream_id: str, track: str, enabled: bool) -> None:
        label = track
        for prefix in TRACK_PREFIXES:
            if label.startswith(prefix):
                label = label[len(prefix) :]
        if not self._room_play(stream_id).set_enabled(label, enabled):
            raise NotFound(f"no track {track} in this play")

    def track_list(self, stream_id: str) -> list[str]:
        leg = self.legs.get(stream_id)
        if isinstance(leg, RoomPlayback):
            return leg.track_ids()
        return [s.stream_id for s in self.rooms.summaries(stream_id)]

    # -- signal: per-player track switches, subscribers, debug info ------------------------------

    def toggle_track(self, stream_id: str, track: str, kind: str, enabled: bool) -> None:
        """Stop or resume sending this client `kind` of `track` on its play of `stream_id`
        (`track` is the stream id itself for a single play, a member for a room play)."""
        leg = self.legs.get(stream_id)
        if not isinstance(leg, Player):
            raise NotFound(f"no play of {stream_id} on this connection")
        label = track or stream_id
        for prefix in TRACK_PREFIXES:
            if label.startswith(prefix):
                label = label[len(prefix) :]
        if isinstance(leg, Playback) and label != stream_id:
            raise NotFound(f"no track {track} in the play of {stream_id}")
        if isinstance(leg, RoomPlayback) and label == stream_id:  # the room itself: every member
            labels = leg.subscriber.labels() if leg.subscriber is not None else set()
            if not any([leg.set_track_enabled(lab, enabled, kind) for lab in sorted(labels)]):
                raise NotFound(f"no {kind} in the play of {stream_id}")
            return
        if not leg.set_track_enabled(label, enabled, kind):
            raise NotFound(f"no {kind} track {track} in the play of {stream_id}")

    def subscribers(self, stream_id: str) -> list[SubscriberInfo]:
        """The current players of a live stream or room (none for anything else)."""
        stream = self.streams.live.get(stream_id)
        if stream is not None:
            return stream.subscribers()
        room = self.rooms.get(stream_id)
        if room is None:
            return []
        return sorted((p.subscriber_info() for p in room.playbacks), key=lambda s: s.subscriber_id)

    def subscribers_page(self, stream_id: str, offset: int, size: int) -> list[SubscriberInfo]:
        """getSubscribers: a page of the current players (at most 50)."""
        return page(self.subscribers(stream_id), offset, size)

    def debug_info(self, stream_id: str) -> DebugInfo:
        """A live stream's publisher and players, or a room's member streams and room plays."""
        stream = self.streams.live.get(stream_id)
        if stream is not None:
            return DebugInfo(stream_id, "stream", stream.info(), tuple(stream.leg_stats()))
        room = self.rooms.get(stream_id)
        if room is None:
            return DebugInfo(stream_id, "none")
        legs = [leg for s in room.live_streams() for leg in s.leg_stats()]
        legs += sorted((p.leg_stats() for p in room.playbacks), key=lambda leg: leg.client_id)
        return DebugInfo(stream_id, "room", None, tuple(legs))

    # -- Broadcast objects (rooms are main tracks) ----------------------------------------------

    async def broadcast_object(self, stream_id: str) -> tuple[StreamRecord, int]:
        """getBroadcastObject: a stream's record, or a room's with its live member streams; viewers."""
        record = await self.streams.broadcast(stream_id, live_only=True)
        if record is None:
            raise NotFound(f"stream {stream_id} does not exist")
        return record, self.streams.viewer_count(stream_id)

    async def subtracks(self, room_id: str, offset: int, size: int, role: str = "") -> list[StreamRecord]:
        """getSubtracks: a page of a room's member streams (at most 50)."""
        return page(await self.streams.subtracks(room_id, role=role), offset, size)

    def viewer_count(self, stream_id: str) -> int:
        return self.streams.viewer_count(stream_id)

    async def subtracks_count(self, room_id: str, role: str = "", status: str = "") -> int:
        return len(await self.streams.subtracks(room_id, role=role, status=status))

    async def update_metadata(self, stream_id: str, metadata: str) -> None:
        await self.streams.update_metadata(stream_id, metadata)

    # -- 1-1 calls -------------------------------------------------------------------------------

    async def join_call(self, call_id: str, token: str | None = None) -> None:
        check_stream_id(call_id)
        self.streams.refuse_if_stopping()
        grant = await self.access.authorize_call(token, call_id)
        await self.access.consume(grant)
        self.calls.join(self, call_id)

    def leave_call(self, call_id: str) -> None:
        if not self.calls.leave(self, call_id):
            raise NoPeer(f"not in call {call_id}")

    def relays(self, stream_id: str) -> bool:
        """Whether a command for `stream_id` goes to this client's 1-1 partner rather than to a leg."""
        return stream_id not in self.legs and self.calls.member_of(self.client_id, stream_id)

    def relay(self, call_id: str, frame: str) -> None:
        """Pass a command's frame unchanged to the partner in 1-1 call `call_id`."""
        self.calls.relay(self, call_id, frame)

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self) -> None:
        """Idempotent: end every leg, leave every call and room."""
        if self.closed:
            return
        self.closed = True
        legs = list(self.legs.values())
        self.legs.clear()
        await asyncio.gather(*(leg.end("disconnect") for leg in legs), return_exceptions=True)
        self.calls.leave_all(self)
        for room_id, stream_id in list(self.memberships.items()):
            try:
                await self._leave_room(room_id, stream_id)
            except Exception:
                logger.exception("%s: leaving room %s failed", self.remote, room_id)
        self.memberships.clear()
        if self._on_closed is not None:
            self._on_closed(self)

    def dump(self) -> dict[str, object]:
        return {
            "client_id": self.client_id,
            "remote": self.remote,
            "legs": sorted(self.legs),
            "rooms": dict(self.memberships),
            "calls": sorted(self.calls.of(self.client_id)),
            "closed": self.closed,
        }
