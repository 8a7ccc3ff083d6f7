"""Room: a conference room, its members, the streams published in it, and its room plays.

A member is a client that joined with one stream id (the id it publishes with). Members hear
`streamJoined` / `streamLeaved` when another member's stream starts or ends; room plays (the
multitrack flow's single peer connection) are renegotiated at the same moments. A room lives in
memory while it has members or players; its record (window, stream list) lives in the store.
Closing runs downwards: members leave (their streams and plays end), room plays close, then the
owner is told.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

from confero.domain import events, observer
from confero.domain.context import Context
from confero.domain.media import TrackInfo
from confero.domain.results import StreamSummary
from confero.domain.slots import SlotPolicy
from confero.domain.stream import Party, Player, Stream, track_id, video_first
from confero.errors import NotFound
from confero.store import RoomRecord

logger = logging.getLogger(__name__)

DEFAULT_DURATION = 3600
LEVEL_INTERVAL = 0.5  # seconds between audio-level samples (AUDIO_TRACK_ASSIGNMENT, slot policy)
SLOT_LABEL = "videoTrack"  # a video slot's label: videoTrack0, videoTrack1, ... (Ant Media's)


class RoomClient(Party, Protocol):
    """A client as a room sees it: it keeps an index of the rooms it is a member of."""

    def joined_room(self, room_id: str, stream_id: str) -> None: ...

    def left_room(self, room_id: str, stream_id: str) -> None: ...


@dataclass
class Member:
    """One participant: the client, the stream id it publishes with, and how it introduced itself."""

    client: RoomClient
    stream_id: str
    name: str = ""
    metadata: str = ""
    role: str = ""
    mode: str = ""
    joined_at: float = field(default_factory=time.time)


RoomClosedHook = Callable[["Room", str], None]


class Room:
    """Membership, streams and notifications of one conference room."""

    def __init__(self, ctx: Context, record: RoomRecord, *, on_closed: RoomClosedHook) -> None:
        self.ctx = ctx
        self.room_id = record.room_id
        self.record = record
        self.members: dict[str, Member] = {}
        self.streams: dict[str, Stream] = {}  # streams published in this room, live or preparing
        self.playbacks: set[RoomPlayback] = set()
        self._expiry: asyncio.TimerHandle | None = None
        self._level_timer: asyncio.TimerHandle | None = None
        self._on_closed = on_closed
        self.closing = False
        self.closed = False
        self.arm_expiry()

    # -- window ---------------------------------------------------------------------------------

    def is_open(self, now: float | None = None) -> bool:
        """Inside the window; an `end_date` of 0 is no end."""
        now = time.time() if now is None else now
        return self.record.start_date <= now and (not self.record.end_date or now < self.record.end_date)

    def arm_expiry(self) -> None:
        """(Re)arm the timer that removes members when the window ends (none without an end)."""
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if not self.record.end_date:
            return
        delay = max(0.0, self.record.end_date - time.time())
        self._expiry = asyncio.get_running_loop().call_later(delay, self._expired)

    def _expired(self) -> None:
        self._expiry = None
        if not self.closing:
            logger.info("room %s: window ended", self.room_id)
            self.ctx.tasks.spawn(self.close("expired"))

    # -- streams ---------------------------------------------------------------------------------

    def add_stream(self, stream: Stream) -> None:
        """A stream will publish in this room (it is live once its publication connects)."""
        self.streams[stream.stream_id] = stream
        stream.room_data = self.deliver_data

    def remove_stream(self, stream: Stream) -> None:
        """`stream` no longer publishes in this room (it ended, or its publish was refused)."""
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]

    def live_streams(self) -> list[Stream]:
        """Streams of this room that are being published, oldest first."""
        return sorted((s for s in self.streams.values() if s.started), key=lambda s: s.started_at)

    def summaries(self, exclude: str = "") -> tuple[StreamSummary, ...]:
        out = []
        for stream in self.live_streams():
            if stream.stream_id == exclude:
                continue
            member = self.members.get(stream.stream_id)
            out.append(
                StreamSummary(
                    stream.stream_id,
                    (member.name if member else "") or stream.name,
                    member.metadata if member else stream.metadata,
                )
            )
        return tuple(out)

    async def stream_started(self, stream: Stream) -> None:
        for member in list(self.members.values()):
            if member.stream_id != stream.stream_id:
                member.client.deliver(events.StreamJoined(stream.stream_id, self.room_id))
        for playback in list(self.playbacks):
            playback.client.deliver(events.SubtrackAdded(self.room_id, stream.stream_id))
        if stream.stream_id not in self.record.room_stream_list:
            self.record.room_stream_list.append(stream.stream_id)
            await self._persist()
        await self.refresh_playbacks()

    async def stream_ended(self, stream: Stream) -> None:
        self.remove_stream(stream)
        for member in list(self.members.values()):
            if member.stream_id != stream.stream_id:
                member.client.deliver(events.StreamLeft(stream.stream_id, self.room_id))
        for playback in list(self.playbacks):
            playback.client.deliver(events.SubtrackRemoved(self.room_id, stream.stream_id))
        if stream.stream_id in self.record.room_stream_list:
            self.record.room_stream_list.remove(stream.stream_id)
            await self._persist()
        await self.refresh_playbacks()

    async def refresh_playbacks(self) -> None:
        await asyncio.gather(*(p.refresh() for p in list(self.playbacks)), return_exceptions=True)

    def deliver_data(self, data: str | bytes, exclude_client: str = "") -> int:
        """Send `data` on every room play of this room, except those of `exclude_client`."""
        return sum(1 for p in list(self.playbacks) if p.client.client_id != exclude_client and p.send_data(data))

    async def _persist(self) -> None:
        if self.closing and self.record.zombi:
            return  # its record is removed once it has closed
        await self.ctx.store.save_room(self.ctx.app, self.record)

    # -- membership ------------------------------------------------------------------------------

    def join(self, member: Member) -> None:
        self.members[member.stream_id] = member
        member.client.joined_room(self.room_id, member.stream_id)
        self.ctx.observers.emit(
            observer.MemberJoined(self.ctx.app, self.room_id, member.stream_id, member.client.client_id)
        )

    def add_player(self, client: RoomClient, excluded: set[str]) -> RoomPlayback:
        playback = RoomPlayback(self, client, excluded)
        self.playbacks.add(playback)
        self._arm_levels()
        return playback

    # -- who is talking --------------------------------------------------------------------------

    def _arm_levels(self) -> None:
        if self._level_timer is None and self.playbacks and not self.closing:
            loop = asyncio.get_running_loop()
            self._level_timer = loop.call_later(LEVEL_INTERVAL, self._level_tick)

    def _level_tick(self) -> None:
        """Sample every member stream's audio level once, hand them to the room plays."""
        self._level_timer = None
        if self.closing or not self.playbacks:
            return
        levels = self.levels()
        for playback in list(self.playbacks):
            playback.levels_sampled(levels)
        self._arm_levels()

    def levels(self) -> dict[str, int]:
        """stream id -> the loudest level of its audio since the last sample (0 loudest .. 127)."""
        out: dict[str, int] = {}
        for stream in self.live_streams():
            publisher = stream.publication.publisher if stream.publication is not None else None
            if publisher is not None:
                sampled = [t.level for t in publisher.levels()]
                if sampled:
                    out[stream.stream_id] = min(sampled)
        return out

    async def leave(self, stream_id: str, reason: str = "leave") -> Member | None:
        """Remove a member: its stream in this room and its plays of this room's streams end."""
        member = self.members.pop(stream_id, None)
        if member is None:
            return None
        member.client.left_room(self.room_id, stream_id)
        client_id = member.client.client_id
        stream = self.streams.get(stream_id)
        if stream is not None and stream.publication is not None and stream.publication.client.client_id == client_id:
            await stream.close(reason)
        for playback in [p for p in self.playbacks if p.client.client_id == client_id]:
            await playback.close(reason)
        for other in self.live_streams():
            for play in [p for p in other.playbacks if p.client.client_id == client_id]:
                await play.close(reason)
        self.ctx.observers.emit(observer.MemberLeft(self.ctx.app, self.room_id, stream_id, client_id, reason))
        await self.maybe_idle()
        return member

    async def maybe_idle(self) -> None:
        if not self.closing and not self.members and not self.playbacks:
            await self.close("idle")

    # -- lifecycle -------------------------------------------------------------------------------

    async def close(self, reason: str = "closed") -> None:
        """Idempotent: every member is told and removed, room plays end, the owner is told."""
        if self.closing:
            return
        self.closing = True
        if self._expiry is not None:
            self._expiry.cancel()
            self._expiry = None
        if self._level_timer is not None:
            self._level_timer.cancel()
            self._level_timer = None
        for member in list(self.members.values()):
            if reason == "expired":
                member.client.deliver(events.RoomWindowEnded(member.stream_id, self.room_id))
            await self.leave(member.stream_id, reason)
            member.client.deliver(events.LeftRoom(self.room_id, member.stream_id))
        for playback in list(self.playbacks):
            await playback.close(reason)
        self.closed = True
        self._on_closed(self, reason)

    def dump(self) -> dict[str, object]:
        return {
            "room_id": self.room_id,
            "members": sorted(self.members),
            "streams": sorted(self.streams),
            "playbacks": len(self.playbacks),
            "window": [self.record.start_date, self.record.end_date],
        }


class RoomPlayback(Player):
    """One client playing a whole room on one peer connection (the multitrack flow).

    Its subscriber carries every live member stream except the excluded ones (the client's
    own). When streams start or end in the room it renegotiates: new m-lines for newcomers,
    inactive ones for those who left, and a fresh `idMapping` each time.

    Video: with no limit (`maxVideoTrackCount` -1) every member has its own video m-line,
    labelled with its stream id. With a limit N there are at most N video m-lines, the slots
    `videoTrack0`..: `SlotPolicy` decides who each carries (loudest speakers, pins, a page),
    and a change switches the slot's source without renegotiating. Audio: every member.
    On the data channel it writes VIDEO_TRACK_ASSIGNMENT_LIST (label -> stream) when that
    changes (after the player's answer when the change needed an offer), TRACK_LIST_UPDATED
    when members come and go, AUDIO_TRACK_ASSIGNMENT every tick.
    """

    room_play = True

    def __init__(self, room: Room, client: RoomClient, excluded: set[str]) -> None:
        super().__init__(room.ctx, client, room.room_id)
        self.room = room
        self.excluded = excluded
        self.offers = 0
        self._lock = asyncio.Lock()
        self._dirty = False
        self.limit = room.ctx.settings().maxVideoTrackCount
        self.policy = SlotPolicy(max(self.limit, 0))
        self._carried: dict[str, list[str]] = {}  # label -> media track ids it carries
        self._members: tuple[str, ...] = ()
        self._sent_assignments: tuple[events.VideoAssignment, ...] | None = None

    def wanted(self) -> dict[str, Stream]:
        return {s.stream_id: s for s in self.room.live_streams() if s.stream_id not in self.excluded and s.tracks()}

    def track_ids(self) -> list[str]:
        return list(self.wanted())

    async def offer(self) -> None:
        self._create_subscriber(f"{self.stream_id}/room-play")
        await self._negotiate()

    async def refresh(self) -> None:
        await self._negotiate()

    # -- the plan: which tracks each label carries ------------------------------------------------

    @property
    def limited(self) -> bool:
        return self.limit >= 0

    def _plan(self, wanted: dict[str, Stream]) -> dict[str, list[TrackInfo]]:
        if not self.limited:
            return {sid: video_first(stream.tracks()) for sid, stream in wanted.items()}
        videos = {sid: [t for t in s.tracks() if t.kind == "video"][:1] for sid, s in wanted.items()}
        self.policy.update([sid for sid, v in videos.items() if v])
        plan: dict[str, list[TrackInfo]] = {}
        for i, occupant in enumerate(self.policy.slots):
            if occupant is not None:
                plan[f"{SLOT_LABEL}{i}"] = videos[occupant]
        for sid, stream in wanted.items():
            audio = [t for t in stream.tracks() if t.kind == "audio"]
            if audio:
                plan[sid] = audio
        return plan

    def _msid_track(self, track: TrackInfo, label: str) -> str:
        return track_id(track.kind, label)

    async def _negotiate(self) -> None:
        async with self._lock:
            subscriber = self.subscriber
            if self.closed or subscriber is None or subscriber.closed:
                return
            if subscriber.negotiating:
                self._dirty = True
                return
            wanted = self.wanted()
            plan = self._plan(wanted)
            removed = [
                label
                for label in self._carried
                if label not in plan and not (self.limited and self._slot_index(label) in range(self.policy.size))
            ]
            added: list[str] = []
            for label, tracks in plan.items():
                ids = [t.track_id for t in tracks]
                carried = self._carried.get(label)
                if carried == ids:
                    continue
                if carried is not None and self._slot_index(label) is not None and len(ids) == 1:
                    subscriber.switch_source(label, ids[0])  # a slot changes source: no renegotiation
                    self._carried[label] = ids
                    continue
                if (
                    carried is not None
                    and len(ids) == len(carried)
                    and all([subscriber.switch_source(label, i) for i in ids])
                ):
                    self._carried[label] = ids  # a replacement publisher of the member: same m-lines
                    continue
                if carried is not None:
                    subscriber.remove_source(label)
                added.append(label)
            for label in removed:
                subscriber.remove_source(label)
                del self._carried[label]
            for label in added:
                for track in plan[label]:
                    subscriber.add_source(
                        track.track_id,
                        label,
                        msid_stream=self.room.room_id,  # one MediaStream for the whole room
                        msid_track=self._msid_track(track, label),
                    )
                self._carried[label] = [t.track_id for t in plan[label]]
            members = tuple(wanted)
            membership_changed = members != self._members
            self._members = members
            offered = not self.offers or bool(removed or added)
            if offered:
                sdp = await subscriber.offer(data_channel=self._data_channel())
                self.offers += 1
                self.client.deliver(self._offer_event(sdp))
                if self.offers == 1:
                    self._send_candidates()
            if membership_changed and self.offers > 1:
                self._send(events.TrackListUpdated(self.stream_id))
            if not offered:
                self.send_assignments(only_changed=True)
            # else: once the player has answered (accept_answer). A list sent with the offer
            # reaches the page while it applies the offer: Circle adds the new label's tile from
            # ontrack and, handling the list before it re-renders, writes back its previous
            # tiles, so the newcomer's tile is lost for good.

    @staticmethod
    def _slot_index(label: str) -> int | None:
        if label.startswith(SLOT_LABEL) and label[len(SLOT_LABEL) :].isdigit():
            return int(label[len(SLOT_LABEL) :])
        return None

    # -- slots and levels -----------------------------------------------------------------------

    def assignments(self) -> tuple[events.VideoAssignment, ...]:
        """Label -> stream of each video m-line (every member's own with no limit)."""
        if not self.limited:
            return tuple(events.VideoAssignment(sid, sid) for sid in self._carried if sid in self._members)
        pinned = set(self.policy.pins)
        return tuple(
            events.VideoAssignment(f"{SLOT_LABEL}{i}", occupant or "", i in pinned)
            for i, occupant in enumerate(self.policy.slots)
            if f"{SLOT_LABEL}{i}" in self._carried
        )

    def send_assignments(self, *, only_changed: bool = False) -> None:
        current = self.assignments()
        if only_changed and current == self._sent_assignments:
            return
        self._sent_assignments = current
        self._send(events.VideoAssignments(self.stream_id, current))

    def levels_sampled(self, levels: dict[str, int]) -> None:
        """The room's level tick: tell who is talking, and let the loudest take the slots."""
        heard = tuple((sid, levels[sid]) for sid in self._members if sid in levels)
        if heard:
            self._send(events.AudioLevels(self.stream_id, heard))
        if self.limited and self.policy.update(self._video_members(), levels):
            self.ctx.tasks.spawn(self._negotiate())

    def _video_members(self) -> list[str]:
        return [sid for sid, s in self.wanted().items() if any(t.kind == "video" for t in s.tracks())]

    def set_max_video_tracks(self, count: int) -> None:
        """The player's own limit (setMaxVideoTrackCountCommand); -1: no limit."""
        count = max(count, -1)
        if count == self.limit:
            return
        if self.limited != (count >= 0):
            # one labelling to the other: every m-line is offered anew
            self._carried_reset()
        self.limit = count
        self.policy.resize(max(count, 0))
        self.ctx.tasks.spawn(self._negotiate())

    def _carried_reset(self) -> None:
        subscriber = self.subscriber
        for label in list(self._carried):
            if subscriber is not None:
                subscriber.remove_source(label)
            del self._carried[label]

    def assign_video_track(self, label: str, stream_id: str, enabled: bool) -> None:
        """Pin `stream_id` to the slot `label` (assignVideoTrackCommand), or unpin it."""
        if not self.limited:
            return  # every member has its own m-line already
        index = self._slot_index(label)
        if enabled:
            if index is None or stream_id not in self.wanted():
                raise NotFound(f"no video slot {label} or no stream {stream_id} in this room play")
            self.policy.pin(index, stream_id)
        else:
            self.policy.unpin(stream_id)
        self.ctx.tasks.spawn(self._negotiate())

    def set_page(self, offset: int, size: int) -> None:
        """updateVideoTrackAssignmentsCommand: the slots carry members[offset:offset+size]."""
        self.policy.set_page(offset, size)
        self.ctx.tasks.spawn(self._negotiate())

    def _send(self, event: events.DataEvent) -> None:
        encode = self.ctx.encode_data
        if encode is not None and self.ctx.settings().dataChannelEnabled:
            self.send_data(encode(event))

    # -- the rest of a play ---------------------------------------------------------------------

    async def accept_answer(self, sdp: str) -> None:
        await super().accept_answer(sdp)
        if self._dirty:
            self._dirty = False
            await self._negotiate()
        else:
            # The player has every m-line of the offer: the list now names only labels it has.
            self.send_assignments(only_changed=True)

    def set_enabled(self, stream_id: str, enabled: bool) -> bool:
        return self.subscriber is not None and self.subscriber.set_enabled(stream_id, enabled)

    def relay(self, data: str | bytes) -> None:
        # Sent on the room connection: the other members' room connections hear it.
        self.room.deliver_data(data, self.client.client_id)

    def _detach(self) -> None:
        self.room.playbacks.discard(self)

    async def _after_close(self, reason: str) -> None:
        await super()._after_close(reason)
        await self.room.maybe_idle()

    def dump(self) -> dict[str, object]:
        return {
            "stream_id": self.stream_id,
            "limit": self.limit,
            "carried": dict(self._carried),
            "slots": self.policy.dump(),
            "offers": self.offers,
        }


__all__ = ["DEFAULT_DURATION", "Member", "Room", "RoomClient", "RoomPlayback"]
