"""Stream (Ant Media's broadcast), its Publication and its Playbacks.

A Stream exists while someone publishes it. It owns its Publication (the publisher's peer) and
its Playbacks (one player's peer each). Closing runs downwards: `Stream.close()` closes every
Playback (each player hears `play_finished`), tells its owner it ended (registry, room, record),
then closes the Publication (the publisher hears `publish_finished`). A child that ends on its
own (its peer failed, its client stopped) tells its owner through the callback it was given.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Protocol

from confero.domain import events, observer
from confero.domain.context import Context
from confero.domain.media import MediaPeer, MediaPublisher, MediaSubscriber, TrackInfo
from confero.domain.results import LegStats, StreamInfo, SubscriberInfo
from confero.errors import NotFound, OutOfOrder
from confero.media.types import MediaError
from confero.store import StreamRecord

logger = logging.getLogger(__name__)


#: A publisher whose media came in within this many seconds is alive: a publish of its id is
#: refused. Past that, its connection is probed (PROBE_TIMEOUT). The media plane samples media
#: on a quarter-second tick.
OWNER_ALIVE = 1.0
#: Seconds a live publisher's connection has to answer a probe before a re-publish of its id
#: (its media stopped) takes the stream over.
PROBE_TIMEOUT = 0.5
#: The official SDK reconnects a publisher whose ICE failed with `stop` and, 500 ms later, the
#: same `publish`: a stop of a publication whose media was lost keeps its Stream (and players)
#: this long for that publish.
RESTORE_GRACE = 2.0


def track_id(kind: str, stream_id: str) -> str:
    """The track id Ant Media's SDK expects in idMapping: ARDAMSv<id> / ARDAMSa<id>."""
    return f"ARDAMS{'v' if kind == 'video' else 'a'}{stream_id}"


def video_first(tracks: list[TrackInfo]) -> list[TrackInfo]:
    """A stream's tracks in the order Ant Media offers them: video, then audio."""
    return sorted(tracks, key=lambda t: t.kind != "video")


class Party(Protocol):
    """The client a leg belongs to, as the leg sees it."""

    @property
    def client_id(self) -> str: ...

    def deliver(self, event: events.Event) -> None: ...

    def leg_closed(self, leg: Leg) -> None: ...

    def silent_for(self) -> float:
        """Seconds since the client's connection last sent anything."""
        ...

    async def probe(self, wait: float) -> bool:
        """Whether the client's connection answers a liveness probe within `wait` seconds."""
        ...


class Leg:
    """One client's peer connection for one publish or play: a connect deadline, data, close()."""

    kind = ""

    def __init__(self, ctx: Context, client: Party, stream_id: str) -> None:
        self.ctx = ctx
        self.client = client
        self.stream_id = stream_id
        self.peer: MediaPeer | None = None
        self.closed = False
        self.lost = False  # its media peer ended on its own (the network, not the client)
        self.started = False
        self._deadline: asyncio.TimerHandle | None = None

    # -- the peer's callbacks -----------------------------------------------------------------

    def _arm_deadline(self) -> None:
        self._deadline = asyncio.get_running_loop().call_later(self.ctx.publish_timeout(), self._timed_out)

    def _timed_out(self) -> None:
        self._deadline = None
        if self.peer is not None and not self.peer.connected and not self.closed:
            logger.info("%s %s: not connected in time", self.kind, self.stream_id)
            self.client.deliver(events.ConnectTimeout(self.stream_id))
            self._on_timed_out()
            self.end_soon("timeout")

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _connected(self) -> None:
        self._disarm()
        if self.closed or self.started:
            return
        self.started = True
        self._on_started()

    def _on_started(self) -> None:
        """The peer connected for the first time (subclasses)."""

    def _on_timed_out(self) -> None:
        """The peer did not connect in time; the leg ends next (subclasses)."""

    def _peer_closed(self, reason: str) -> None:
        """The media peer ended on its own (ICE failure, DTLS close, consent expiry, no media)."""
        if not self.closed:
            self.lost = True
            self.end_soon(reason)

    def _data(self, data: str | bytes) -> None:
        """A data-channel message from this client: checked, then relayed."""
        if self.closed:
            return
        limit = self.ctx.settings().dataChannelMessageLimit
        size = len(data.encode() if isinstance(data, str) else data)
        if size > limit:
            self.client.deliver(events.DataTooLarge(self.stream_id, size, limit))
            return
        self.relay(data)

    def relay(self, data: str | bytes) -> None:
        """Who hears this client's data (subclasses)."""

    def _send_candidates(self) -> None:
        assert self.peer is not None
        for c in self.peer.local_candidates():
            self.client.deliver(events.Candidate(self.stream_id, c.index, c.mid, c.candidate))

    # -- commands from the client ---------------------------------------------------------------

    async def add_candidate(self, candidate: str, mid: str | None, index: int | None) -> None:
        if self.peer is not None:
            await self.peer.add_candidate(candidate, mid, index)

    async def accept_offer(self, sdp: str) -> None:
        raise OutOfOrder(f"no publish of {self.stream_id} on this connection")

    async def accept_answer(self, sdp: str) -> None:
        raise OutOfOrder(f"no play of {self.stream_id} on this connection")

    def send_data(self, data: str | bytes) -> bool:
        return self.peer is not None and not self.closed and self.peer.send_data(data)

    # -- ending ---------------------------------------------------------------------------------

    async def end(self, reason: str) -> None:
        """The client (or its peer) is done with this leg: end what it stands for."""
        await self.close(reason)

    def end_soon(self, reason: str) -> None:
        if not self.closed:
            self.ctx.tasks.spawn(self.end(reason))

    async def close(self, reason: str = "stop") -> None:
        """Idempotent: the peer closes, the client is told, the owners drop this leg."""
        if self.closed:
            return
        self.closed = True
        self._disarm()
        self._detach()
        if self.peer is not None:
            await self.peer.close(reason)
        self.client.deliver(self._finished_event())
        self.client.leg_closed(self)
        await self._after_close(reason)

    def _detach(self) -> None:
        """Leave the owner's maps (subclasses)."""

    def _finished_event(self) -> events.Event:
        raise NotImplementedError

    async def _after_close(self, reason: str) -> None:
        """What the owner does once this leg is gone (subclasses)."""


class Publication(Leg):
    """One client publishing one stream."""

    kind = "publish"

    def __init__(self, stream: Stream, client: Party, *, token: str | None = None, restoring: bool = False) -> None:
        super().__init__(stream.ctx, client, stream.stream_id)
        self.stream = stream
        self.publisher: MediaPublisher | None = None
        self.token = token  # what admitted it: a replacement must present the same
        self.restoring = restoring  # it replaces a lost publication of the same stream
        self.replaced = False  # a replacement took the stream over: ending this one leaves it be

    def media_alive(self, window: float) -> bool:
        """Its media came in within `window` seconds (or it is still connecting: its own
        deadline decides). When not, a re-publish of its id probes its client's connection."""
        if self.closed:
            return False
        publisher = self.publisher
        if publisher is None or publisher.closed or not self.started:
            return True
        return publisher.idle_seconds() < window

    async def accept_offer(self, sdp: str) -> None:
        if self.publisher is not None:
            raise OutOfOrder("this publish already has an offer")
        self.publisher = self.ctx.media.create_publisher(
            self.stream_id, on_connected=self._connected, on_closed=self._peer_closed, on_data=self._data
        )
        self.peer = self.publisher
        self._arm_deadline()
        answer = await self.publisher.answer(sdp)
        self.client.deliver(events.Answer(self.stream_id, answer))
        self._send_candidates()

    def tracks(self) -> list[TrackInfo]:
        return self.publisher.tracks() if self.publisher is not None else []

    def relay(self, data: str | bytes) -> None:
        # The publisher's messages reach its players and, in a room, every other member's room play.
        self.stream.deliver_data(data, exclude=self)

    def _on_timed_out(self) -> None:
        self.ctx.observers.emit(observer.PublishTimedOut(self.ctx.app, self.stream_id, self.stream.room))

    def leg_stats(self) -> LegStats:
        stats = self.publisher.stats() if self.publisher is not None else []
        return LegStats(self.client.client_id, "publish", self.started and not self.closed, tuple(stats))

    def _on_started(self) -> None:
        if self.restoring:
            self.stream.publication_restored()
        else:
            self.stream.publication_started()
        # The SDK knows no session_restored (2.16.2): a restored session starts like any other.
        self.client.deliver(events.PublishStarted(self.stream_id, self.stream.room))

    async def end(self, reason: str) -> None:
        # A stream lives as long as its publication: ending one ends the other, unless a
        # replacement took the stream over.
        if self.replaced:
            await self.close(reason)
            return
        publisher = self.publisher
        if reason == "stop" and self.started and publisher is not None and publisher.idle_seconds() > OWNER_ALIVE:
            self.stream.orphan(RESTORE_GRACE)  # the SDK's reconnect: its publish follows
            await self.close(reason)
            return
        await self.stream.close(reason)

    def _finished_event(self) -> events.Event:
        return events.PublishFinished(self.stream_id, lost=self.lost)


class Player(Leg):
    """What Playback and RoomPlayback share: a subscriber peer, play_started and play_finished."""

    kind = "play"
    room_play = False

    def __init__(self, ctx: Context, client: Party, stream_id: str) -> None:
        super().__init__(ctx, client, stream_id)
        self.subscriber: MediaSubscriber | None = None
        self.subscriber_id = ""  # as the play command named its player (TOTP fields), if it did
        self.subscriber_name = ""

    def set_track_enabled(self, label: str, enabled: bool, kind: str | None = None) -> bool:
        """Pause or resume what this play forwards of source `label` (one kind, or all)."""
        return self.subscriber is not None and self.subscriber.set_enabled(label, enabled, kind)

    def subscriber_info(self) -> SubscriberInfo:
        return SubscriberInfo(
            subscriber_id=self.subscriber_id or self.client.client_id,
            stream_id=self.stream_id,
            name=self.subscriber_name,
            connected=self.started and not self.closed,
        )

    def leg_stats(self) -> LegStats:
        stats = self.subscriber.stats() if self.subscriber is not None else []
        direction = "room play" if self.room_play else "play"
        return LegStats(self.client.client_id, direction, self.started and not self.closed, tuple(stats))

    def _create_subscriber(self, name: str) -> MediaSubscriber:
        self.subscriber = self.ctx.media.create_subscriber(
            name, on_connected=self._connected, on_closed=self._peer_closed, on_data=self._data
        )
        self.peer = self.subscriber
        self._arm_deadline()
        return self.subscriber

    def _data_channel(self) -> str | None:
        return self.stream_id if self.ctx.settings().dataChannelEnabled else None

    def _offer_event(self, sdp: str) -> events.Offer:
        assert self.subscriber is not None
        mapping = {s.mid: track_id(s.kind, s.label) for s in self.subscriber.slots()}
        return events.Offer(self.stream_id, sdp, mapping)

    async def accept_answer(self, sdp: str) -> None:
        if self.subscriber is None:
            raise OutOfOrder("no offer was made for this play")
        await self.subscriber.accept_answer(sdp)

    def _on_started(self) -> None:
        self.client.deliver(events.PlayStarted(self.stream_id))
        self.ctx.observers.emit(
            observer.PlayStarted(self.ctx.app, self.stream_id, self.client.client_id, self.room_play)
        )

    def _finished_event(self) -> events.Event:
        return events.PlayFinished(self.stream_id, lost=self.lost)

    async def _after_close(self, reason: str) -> None:
        self.ctx.observers.emit(
            observer.PlayEnded(self.ctx.app, self.stream_id, self.client.client_id, self.room_play, reason)
        )


class Playback(Player):
    """One client playing one stream."""

    def __init__(self, stream: Stream, client: Party) -> None:
        super().__init__(stream.ctx, client, stream.stream_id)
        self.stream = stream

    async def offer(self) -> None:
        tracks = self.stream.tracks()
        if not tracks and self._data_channel() is None:
            # A data-only stream (the SDK's onlyDataChannel) is played on its data channel alone.
            raise NotFound("the stream has no media and data channels are disabled")
        subscriber = self._create_subscriber(f"{self.stream_id}/play")
        for track in video_first(tracks):
            sid = self.stream_id
            subscriber.add_source(track.track_id, sid, msid_stream=sid, msid_track=track_id(track.kind, sid))
        sdp = await subscriber.offer(data_channel=self._data_channel())
        self.client.deliver(self._offer_event(sdp))
        self._send_candidates()

    def relay(self, data: str | bytes) -> None:
        # A player's message goes to the publisher and the other players (distribution "all").
        self.stream.deliver_data(data, exclude=self, rooms=False)

    def _detach(self) -> None:
        self.stream.playbacks.discard(self)

    def switch_to(self, tracks: list[TrackInfo]) -> None:
        """Carry a replacement publication's tracks on the same m-lines (no renegotiation)."""
        subscriber = self.subscriber
        if subscriber is None or subscriber.closed:
            return
        for track in tracks:
            try:
                subscriber.switch_source(self.stream_id, track.track_id)
            except MediaError as exc:
                logger.info("play %s: no switch to %s: %s", self.stream_id, track.track_id, exc)


#: What a Stream's owner does when it starts and when it ends.
StreamStartedHook = Callable[["Stream"], None]
StreamEndedHook = Callable[["Stream", str], Awaitable[None]]
#: Room plays that hear a stream's data: (data, the sender's client id or "") -> deliveries.
RoomData = Callable[[str | bytes, str], int]


class Stream:
    """A live stream: its record follows its Publication."""

    def __init__(
        self,
        ctx: Context,
        stream_id: str,
        record: StreamRecord,
        *,
        room: str = "",
        name: str = "",
        metadata: str = "",
        on_started: StreamStartedHook,
        on_ended: StreamEndedHook,
        on_restored: StreamStartedHook | None = None,
    ) -> None:
        self.ctx = ctx
        self.stream_id = stream_id
        self.record = record
        self.room = room
        self.name = name
        self.metadata = metadata
        self.publication: Publication | None = None
        self.playbacks: set[Playback] = set()
        self.started_at = 0.0
        self.closed = False
        self.room_data: RoomData | None = None  # set by the room the stream publishes in
        self._on_started = on_started
        self._on_ended = on_ended
        self._on_restored = on_restored
        self.orphaned: asyncio.TimerHandle | None = None  # its publication stopped; a publish may follow

    @property
    def started(self) -> bool:
        return self.publication is not None and self.publication.started and not self.closed

    def tracks(self) -> list[TrackInfo]:
        return self.publication.tracks() if self.publication is not None else []

    def publication_started(self) -> None:
        self.started_at = time.time()
        self._on_started(self)

    def replace_publication(self, publication: Publication) -> Publication | None:
        """`publication` takes the stream over; the previous one (returned) ends on its own,
        without ending the stream (its players stay, and switch once the new one starts)."""
        old, self.publication = self.publication, publication
        if old is not None:
            old.replaced = True
        if self.orphaned is not None:
            self.orphaned.cancel()
            self.orphaned = None
        return old

    def orphan(self, grace: float) -> None:
        """Its publication ends without the stream: a publish of the id within `grace` seconds
        takes it over (`replace_publication`), else the stream ends as if stopped."""
        if self.closed or self.orphaned is not None:
            return
        if self.publication is not None:
            self.publication.replaced = True
        self.orphaned = asyncio.get_running_loop().call_later(grace, self._orphan_expired)

    def _orphan_expired(self) -> None:
        self.orphaned = None
        if not self.closed:
            self.ctx.tasks.spawn(self.close("stop"))

    def publication_restored(self) -> None:
        """A replacement publication connected: its players switch to its tracks."""
        tracks = self.tracks()
        for playback in list(self.playbacks):
            playback.switch_to(tracks)
        if self._on_restored is not None:
            self._on_restored(self)

    def add_player(self, client: Party) -> Playback:
        playback = Playback(self, client)
        self.playbacks.add(playback)
        return playback

    async def close(self, reason: str = "stop") -> None:
        """Idempotent: players first, then the owner is told, then the publication."""
        if self.closed:
            return
        self.closed = True
        if self.orphaned is not None:
            self.orphaned.cancel()
            self.orphaned = None
        await asyncio.gather(*(p.close(reason) for p in list(self.playbacks)), return_exceptions=True)
        await self._on_ended(self, reason)
        if self.publication is not None:
            await self.publication.close(reason)

    def deliver_data(self, data: str | bytes, *, exclude: Leg | None = None, rooms: bool = True) -> int:
        """Send `data` to this stream's publisher and players and, in a room, to the room plays.

        Never back to the sender, nor to the sender's own room play.
        """
        targets: list[Leg] = []
        if self.publication is not None:
            targets.append(self.publication)
        targets += list(self.playbacks)
        count = sum(1 for t in targets if t is not exclude and t.send_data(data))
        if rooms and self.room_data is not None:
            count += self.room_data(data, exclude.client.client_id if exclude is not None else "")
        return count

    def info(self) -> StreamInfo:
        publisher = self.publication.publisher if self.publication is not None else None
        stats = {s.kind: s for s in publisher.stats()} if publisher is not None else {}
        video, audio = stats.get("video"), stats.get("audio")
        elapsed = max(time.time() - self.started_at, 1e-3) if self.started_at else 0.0
        return StreamInfo(
            video_codec=video.codec.split("/")[1] if video else "",
            audio_codec=audio.codec.split("/")[1] if audio else "",
            video_bitrate=int(video.octets * 8 / elapsed) if video and elapsed else 0,
            audio_bitrate=int(audio.octets * 8 / elapsed) if audio and elapsed else 0,
            width=video.width if video else 0,
            height=video.height if video else 0,
        )

    def subscribers(self) -> list[SubscriberInfo]:
        """The stream's current players, by subscriber id."""
        return sorted((p.subscriber_info() for p in self.playbacks), key=lambda s: s.subscriber_id)

    def leg_stats(self) -> list[LegStats]:
        """Its publisher's receive counters, then each player's send counters."""
        legs = [self.publication.leg_stats()] if self.publication is not None else []
        return legs + sorted((p.leg_stats() for p in self.playbacks), key=lambda leg: leg.client_id)

    def dump(self) -> dict[str, object]:
        return {
            "stream_id": self.stream_id,
            "room": self.room,
            "publishing": self.publication is not None and not self.publication.closed,
            "players": len(self.playbacks),
        }
