"""Stream (Ant Media's broadcast) with its Publication and Playbacks.

A Stream exists while someone publishes it. Its Publication owns the media Publisher; each
Playback owns one media Subscriber fed from the Publication's tracks. Closing cascades:
Stream.close() closes every Playback (each player hears `play_finished`), then the Publication
(the publisher hears `publish_finished`), then leaves the Application's registry.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import TYPE_CHECKING, Any

from confero.domain import events
from confero.domain.events import Listener
from confero.media import MediaError, Peer, Publisher, Subscriber

if TYPE_CHECKING:
    from confero.domain.application import Application
    from confero.domain.room import Room

logger = logging.getLogger(__name__)


def track_id(kind: str, stream_id: str) -> str:
    """The track id Ant Media's SDK expects in idMapping: ARDAMSv<id> / ARDAMSa<id>."""
    return f"ARDAMS{'v' if kind == 'video' else 'a'}{stream_id}"


class _Session:
    """What Publication and Playback share: an owner, a peer, a connect deadline, close()."""

    kind = ""

    def __init__(self, stream_id: str, listener: Listener, app: Application) -> None:
        self.stream_id = stream_id
        self.listener = listener
        self.app = app
        self.peer: Peer | None = None
        self.closed = False
        self._deadline: asyncio.TimerHandle | None = None
        self._close_task: asyncio.Task[None] | None = None

    def _arm_deadline(self) -> None:
        timeout = self.app.settings.publish_timeout
        self._deadline = asyncio.get_running_loop().call_later(timeout, self._timed_out)

    def _timed_out(self) -> None:
        self._deadline = None
        if self.peer is not None and not self.peer.connected and not self.closed:
            logger.info("%s %s: not connected in time", self.kind, self.stream_id)
            self.listener.deliver(
                events.Failure(self.stream_id, "publishTimeoutError", "the peer did not connect in time")
            )
            self.close_soon("timeout")

    def _disarm(self) -> None:
        if self._deadline is not None:
            self._deadline.cancel()
            self._deadline = None

    def _send_candidates(self) -> None:
        assert self.peer is not None
        for c in self.peer.local_candidates():
            self.listener.deliver(events.Candidate(self.stream_id, c.index, c.mid, c.candidate))

    async def add_candidate(self, candidate: str, mid: str | None, index: int | None) -> None:
        if self.peer is not None:
            await self.peer.add_candidate(candidate, mid, index)

    def send_data(self, data: str | bytes) -> bool:
        return self.peer is not None and not self.closed and self.peer.send_data(data)

    def _data(self, peer: Peer, data: str | bytes) -> None:
        """A data-channel message from this client: checked, then relayed by the domain."""
        if self.closed:
            return
        limit = self.app.app_settings.dataChannelMessageLimit
        size = len(data.encode() if isinstance(data, str) else data)
        if size > limit:
            self.listener.deliver(events.DataTooLarge(self.stream_id, size, limit))
            return
        self.relay(data)

    def relay(self, data: str | bytes) -> None:
        """Who hears this client's data (subclasses)."""

    def close_soon(self, reason: str) -> None:
        if not self.closed and self._close_task is None:
            self._close_task = asyncio.get_running_loop().create_task(self.close(reason))
            self.app.track_task(self._close_task)

    def _peer_closed(self, peer: Peer, reason: str) -> None:
        """The media peer ended on its own (ICE failure, DTLS close, consent expiry)."""
        if not self.closed:
            self.close_soon(reason)

    async def close(self, reason: str = "stop") -> None:
        """Idempotent: release what this client started, then tell it."""
        if self.closed:
            return
        self.closed = True
        self._disarm()
        await self._release(reason)

    async def _release(self, reason: str) -> None:
        raise NotImplementedError


class _Player(_Session):
    """What Playback and RoomPlayback share: a Subscriber, play_started and play_finished."""

    kind = "play"

    def __init__(self, stream_id: str, listener: Listener, app: Application) -> None:
        super().__init__(stream_id, listener, app)
        self.subscriber: Subscriber | None = None
        self.started = False

    def _create_subscriber(self, name: str) -> Subscriber:
        self.subscriber = self.app.router.create_subscriber(
            name, on_closed=self._peer_closed, on_connected=self._peer_connected, on_data=self._data
        )
        self.peer = self.subscriber
        self._arm_deadline()
        return self.subscriber

    def _data_channel(self) -> str | None:
        return self.stream_id if self.app.app_settings.dataChannelEnabled else None

    def _offer_event(self, sdp: str) -> events.Offer:
        assert self.subscriber is not None
        mapping = {mid: track_id(kind, label) for mid, kind, label in self.subscriber.mapping()}
        return events.Offer(self.stream_id, sdp, mapping)

    async def accept_answer(self, sdp: str) -> None:
        if self.subscriber is None:
            raise MediaError("notSetRemoteDescription", "no offer was made for this play")
        await self.subscriber.accept_answer(sdp)

    def _peer_connected(self, peer: Peer) -> None:
        self._disarm()
        if self.closed or self.started:
            return
        self.started = True
        self.listener.deliver(events.PlayStarted(self.stream_id))

    def _detach(self) -> None:
        """Leave the owner's set of players (subclasses)."""

    async def _release(self, reason: str) -> None:
        self._detach()
        if self.subscriber is not None:
            await self.subscriber.close(reason)
        self.listener.deliver(events.PlayFinished(self.stream_id))


class Publication(_Session):
    """One client publishing one stream."""

    kind = "publish"

    def __init__(self, stream: Stream, listener: Listener) -> None:
        super().__init__(stream.stream_id, listener, stream.app)
        self.stream = stream
        self.publisher: Publisher | None = None
        self.started = False

    async def accept_offer(self, sdp: str) -> None:
        if self.publisher is not None:
            raise MediaError("notSetRemoteDescription", "this publish already has an offer")
        self.publisher = self.app.router.create_publisher(
            self.stream_id, on_closed=self._peer_closed, on_connected=self._peer_connected, on_data=self._data
        )
        self.peer = self.publisher
        self._arm_deadline()
        answer = await self.publisher.answer(sdp)
        self.listener.deliver(events.Answer(self.stream_id, answer))
        self._send_candidates()

    def relay(self, data: str | bytes) -> None:
        # The publisher's messages reach its players and, in a room, every other member's room play.
        self.stream.deliver_data(data, exclude=self)

    def _peer_connected(self, peer: Peer) -> None:
        self._disarm()
        if self.closed or self.started:
            return
        self.started = True
        self.stream.on_started()
        self.listener.deliver(events.PublishStarted(self.stream_id, self.stream.room))

    async def _release(self, reason: str) -> None:
        # The stream ends (its players first), then the publisher peer.
        await self.stream.close(reason)
        if self.publisher is not None:
            await self.publisher.close(reason)
        self.listener.deliver(events.PublishFinished(self.stream_id))


class Playback(_Player):
    """One client playing one stream."""

    def __init__(self, stream: Stream, listener: Listener) -> None:
        super().__init__(stream.stream_id, listener, stream.app)
        self.stream = stream

    async def offer(self) -> None:
        publisher = self.stream.publication.publisher if self.stream.publication else None
        if publisher is None or not publisher.uptracks:
            raise MediaError("no_stream_exist", "the stream has no media yet")
        subscriber = self._create_subscriber(f"{self.stream_id}/play")
        sdp = await subscriber.offer(
            [(u, self.stream_id) for u in publisher.uptracks], data_channel=self._data_channel()
        )
        self.listener.deliver(self._offer_event(sdp))
        self._send_candidates()

    def relay(self, data: str | bytes) -> None:
        # A player's message goes to the publisher and the other players (distribution "all").
        self.stream.deliver_data(data, exclude=self, rooms=False)

    def _detach(self) -> None:
        self.stream.playbacks.discard(self)


class RoomPlayback(_Player):
    """One client playing a whole room on one peer connection (the multitrack flow).

    Its Subscriber carries every live member stream except the excluded ones (the client's
    own). When streams start or end in the room it renegotiates: new m-lines for newcomers,
    inactive ones for those who left, and a fresh `idMapping` each time.
    """

    def __init__(self, room: Room, listener: Listener, excluded: set[str]) -> None:
        super().__init__(room.room_id, listener, room.app)
        self.room = room
        self.excluded = excluded
        self.offers = 0
        self._lock = asyncio.Lock()
        self._dirty = False

    def wanted(self) -> dict[str, Stream]:
        out = {}
        for stream in self.room.live_streams():
            publisher = stream.publication.publisher if stream.publication else None
            if stream.stream_id not in self.excluded and publisher is not None and publisher.uptracks:
                out[stream.stream_id] = stream
        return out

    def track_ids(self) -> list[str]:
        return list(self.wanted())

    async def offer(self) -> None:
        self._create_subscriber(f"{self.stream_id}/room-play")
        await self._negotiate()

    async def refresh(self) -> None:
        await self._negotiate()

    async def _negotiate(self) -> None:
        async with self._lock:
            subscriber = self.subscriber
            if self.closed or subscriber is None or subscriber.closed:
                return
            if subscriber.negotiating:
                self._dirty = True
                return
            wanted = self.wanted()
            current = subscriber.labels()
            removed = current - wanted.keys()
            added = [stream_id for stream_id in wanted if stream_id not in current]
            if self.offers and not removed and not added:
                return
            for label in removed:
                subscriber.remove(label)
            sources = []
            for stream_id in added:
                publisher = wanted[stream_id].publication.publisher  # type: ignore[union-attr]
                sources += [(u, stream_id) for u in publisher.uptracks]  # type: ignore[union-attr]
            sdp = await subscriber.offer(sources, data_channel=self._data_channel())
            self.offers += 1
            self.listener.deliver(self._offer_event(sdp))
            if self.offers == 1:
                self._send_candidates()

    async def accept_answer(self, sdp: str) -> None:
        await super().accept_answer(sdp)
        if self._dirty:
            self._dirty = False
            await self._negotiate()

    def set_enabled(self, stream_id: str, enabled: bool) -> bool:
        return self.subscriber is not None and self.subscriber.set_enabled(stream_id, enabled)

    def relay(self, data: str | bytes) -> None:
        # Sent on the room connection: the other members' room connections hear it.
        self.room.deliver_data(data, exclude_listener=self.listener)

    def _detach(self) -> None:
        self.room.playbacks.discard(self)

    async def _release(self, reason: str) -> None:
        await super()._release(reason)
        await self.app.room_maybe_idle(self.room)


class Stream:
    """A live stream: the record's status follows its Publication."""

    def __init__(
        self,
        app: Application,
        stream_id: str,
        *,
        room: str = "",
        zombi: bool = True,
        name: str = "",
        metadata: str = "",
    ) -> None:
        self.app = app
        self.stream_id = stream_id
        self.room = room
        self.zombi = zombi
        self.name = name
        self.metadata = metadata
        self.publication: Publication | None = None
        self.playbacks: set[Playback] = set()
        self.started_at = 0.0
        self.closed = False

    def on_started(self) -> None:
        self.started_at = time.time()
        self.app.track_task(asyncio.get_running_loop().create_task(self.app.stream_started(self)))

    async def close(self, reason: str = "stop") -> None:
        """Idempotent: players first, then leave the registry and mark the record finished."""
        if self.closed:
            return
        self.closed = True
        await asyncio.gather(*(p.close(reason) for p in list(self.playbacks)), return_exceptions=True)
        await self.app.stream_finished(self)
        if self.publication is not None and not self.publication.closed:
            await self.publication.close(reason)

    def deliver_data(self, data: str | bytes, *, exclude: _Session | None = None, rooms: bool = True) -> int:
        """Send `data` to this stream's publisher and players and, in a room, to the room plays.

        Never back to the sender, nor to the sender's own room play.
        """
        sender = exclude.listener if exclude is not None else None
        targets: list[_Session] = []
        if self.publication is not None:
            targets.append(self.publication)
        targets += list(self.playbacks)
        count = sum(1 for t in targets if t is not exclude and t.send_data(data))
        if rooms and self.room:
            room = self.app.rooms.get(self.room)
            if room is not None:
                count += room.deliver_data(data, exclude_listener=sender)
        return count

    def info(self) -> list[dict[str, Any]]:
        publisher = self.publication.publisher if self.publication else None
        video = publisher.track("video") if publisher else None
        audio = publisher.track("audio") if publisher else None
        elapsed = max(time.time() - self.started_at, 1e-3) if self.started_at else 0
        return [
            {
                "video_codec": video.codec.mimeType.split("/")[1] if video else "",
                "audio_codec": audio.codec.mimeType.split("/")[1] if audio else "",
                "video_bitrate": int(video.octets * 8 / elapsed) if video and elapsed else 0,
                "audio_bitrate": int(audio.octets * 8 / elapsed) if audio and elapsed else 0,
            }
        ]

    def dump(self) -> dict[str, Any]:
        return {
            "stream_id": self.stream_id,
            "room": self.room,
            "publishing": self.publication is not None and not self.publication.closed,
            "players": len(self.playbacks),
        }
