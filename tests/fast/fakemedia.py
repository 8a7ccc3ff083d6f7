"""A media plane without media: implements the domain's media Protocols and records what it is asked.

Tests drive it like a network would: `peer.connect()` is ICE/DTLS coming up, `peer.fail()` an
ICE failure, `peer.receive(data)` a data-channel message from the client. Offers and answers are
plain strings: an offer lists its m-lines, "bad" fails to apply, "h264" has no codec in common.
"""

from __future__ import annotations

from dataclasses import dataclass

from confero.domain import events
from confero.domain.media import OnClosed, OnConnected, OnData
from confero.media.types import (
    BadCandidate,
    CodecMismatch,
    LocalCandidate,
    SdpError,
    SlotInfo,
    TrackInfo,
    TrackLevel,
    TrackStats,
    UnknownTrack,
)


class FakePeer:
    role = "peer"

    def __init__(
        self, plane: FakeMedia, name: str, on_connected: OnConnected, on_closed: OnClosed, on_data: OnData
    ) -> None:
        self.plane = plane
        self.name = name
        self._on_connected = on_connected
        self._on_closed: OnClosed | None = on_closed
        self._on_data = on_data
        self.connected = False
        self.closed = False
        self.close_reason = ""
        self.candidates: list[tuple[str, str | None, int | None]] = []
        self.sent: list[str | bytes] = []

    def local_candidates(self) -> list[LocalCandidate]:
        return [LocalCandidate(0, "0", "candidate:1 1 udp 2130706431 127.0.0.1 40000 typ host")]

    async def add_candidate(self, candidate: str, mid: str | None, index: int | None) -> None:
        if candidate == "bad":
            raise BadCandidate("unparsable candidate")
        self.candidates.append((candidate, mid, index))

    def send_data(self, data: str | bytes) -> bool:
        if self.closed:
            return False
        self.sent.append(data)
        return True

    async def close(self, reason: str = "closed") -> None:
        if self.closed:
            return
        self.closed = True
        self.close_reason = reason
        self._forget()
        callback, self._on_closed = self._on_closed, None
        if callback is not None:
            callback(reason)

    def _forget(self) -> None:
        self.plane.peers.remove(self)

    # -- what the network does -----------------------------------------------------------------

    def connect(self) -> None:
        self.connected = True
        self._on_connected()

    def fail(self) -> None:
        """ICE failed: the peer closes itself and says why."""
        self.plane.spawn(self.close("ice_failed"))

    def receive(self, data: str | bytes) -> None:
        self._on_data(data)


#: The picture size a fake video track reports.
SIZES = {"video": (640, 480)}


class FakePublisher(FakePeer):
    role = "publisher"

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self._tracks: list[TrackInfo] = []
        self.octets = {"video": 0, "audio": 0}
        self.level = 127  # what levels() reports for its audio track (a test sets it)
        self.idle = 0.0  # what idle_seconds() reports (a test sets it: its media stopped)

    async def answer(self, offer_sdp: str) -> str:
        if offer_sdp == "bad":
            raise SdpError("cannot parse the offer")
        if offer_sdp == "h264":
            raise CodecMismatch("no video codec in common")
        if offer_sdp == "data":  # the SDK's onlyDataChannel publish: no media, a data channel
            return f"answer for {self.name}"
        n = len(self.plane.tracks)
        for kind, codec in (("video", "video/VP8"), ("audio", "audio/opus")):
            track = TrackInfo(f"{self.name}/{kind}/{n}", kind, codec)
            self._tracks.append(track)
            self.plane.tracks[track.track_id] = track
        return f"answer for {self.name}"

    def tracks(self) -> list[TrackInfo]:
        return list(self._tracks)

    def stats(self) -> list[TrackStats]:
        return [
            TrackStats(t.track_id, t.kind, t.codec, 10, self.octets[t.kind], 1, 0, *SIZES.get(t.kind, (0, 0)))
            for t in self._tracks
        ]

    def levels(self) -> list[TrackLevel]:
        return [TrackLevel(t.track_id, self.level) for t in self._tracks if t.kind == "audio"]

    def idle_seconds(self) -> float:
        return self.idle

    def _forget(self) -> None:
        super()._forget()
        for track in self._tracks:
            self.plane.tracks.pop(track.track_id, None)


@dataclass
class Source:
    track: TrackInfo
    label: str
    mid: str = ""
    active: bool = True
    enabled: bool = True
    msid: tuple[str, str] = ("", "")
    switches: int = 0


class FakeSubscriber(FakePeer):
    role = "subscriber"

    def __init__(self, *args: object, **kw: object) -> None:
        super().__init__(*args, **kw)  # type: ignore[arg-type]
        self.sources: list[Source] = []
        self.offers: list[str] = []
        self.negotiating = False
        self.data_channel: str | None = None

    def add_source(self, track_id: str, label: str, *, msid_stream: str = "", msid_track: str = "") -> None:
        track = self.plane.tracks.get(track_id)
        if track is None:
            raise UnknownTrack(f"no live track {track_id}")
        self.sources.append(Source(track, label, msid=(msid_stream, msid_track)))

    def switch_source(self, label: str, track_id: str) -> bool:
        track = self.plane.tracks.get(track_id)
        if track is None:
            raise UnknownTrack(f"no live track {track_id}")
        found = False
        for source in self.sources:
            if source.label == label and source.active and source.track.kind == track.kind:
                if source.track != track:
                    source.track = track
                    source.switches += 1
                found = True
        return found

    def carried(self, kind: str = "video") -> dict[str, str]:
        """label -> track id of the active m-lines of `kind` (a test's view of the slots)."""
        return {s.label: s.track.track_id for s in self.sources if s.active and s.track.kind == kind}

    def remove_source(self, label: str) -> bool:
        removed = False
        for source in self.sources:
            if source.label == label and source.active:
                source.active = False
                removed = True
        return removed

    def labels(self) -> set[str]:
        return {s.label for s in self.sources if s.active}

    def slots(self) -> list[SlotInfo]:
        return [SlotInfo(s.mid, s.track.kind, s.label) for s in self.sources if s.mid]

    async def offer(self, *, data_channel: str | None = None) -> str:
        for i, source in enumerate(self.sources):
            source.mid = source.mid or str(i)
        self.data_channel = self.data_channel or data_channel
        self.negotiating = True
        sdp = " ".join(f"{s.mid}:{s.label}:{s.track.kind}:{'on' if s.active else 'inactive'}" for s in self.sources)
        self.offers.append(sdp)
        return sdp

    async def accept_answer(self, answer_sdp: str) -> None:
        if answer_sdp == "bad":
            raise SdpError("cannot parse the answer")
        if answer_sdp == "h264":
            raise CodecMismatch("the player does not accept video/VP8")
        self.negotiating = False

    def set_enabled(self, label: str, enabled: bool, kind: str | None = None) -> bool:
        found = False
        for source in self.sources:
            if kind is not None and source.track.kind != kind:
                continue
            if source.label == label and source.active:
                source.enabled = enabled
                found = True
        return found

    def stats(self) -> list[TrackStats]:
        return [
            TrackStats(s.track.track_id, s.track.kind, s.track.codec, 5 if s.enabled else 0, 0, 0, 0)
            for s in self.sources
            if s.active
        ]


class FakeMedia:
    """The media plane: creates fake peers and keeps the live track registry."""

    def __init__(self) -> None:
        self.peers: list[FakePeer] = []
        self.tracks: dict[str, TrackInfo] = {}
        self._tasks: set[object] = set()

    def create_publisher(
        self, name: str, *, on_connected: OnConnected, on_closed: OnClosed, on_data: OnData
    ) -> FakePublisher:
        peer = FakePublisher(self, name, on_connected, on_closed, on_data)
        self.peers.append(peer)
        return peer

    def create_subscriber(
        self, name: str, *, on_connected: OnConnected, on_closed: OnClosed, on_data: OnData
    ) -> FakeSubscriber:
        peer = FakeSubscriber(self, name, on_connected, on_closed, on_data)
        self.peers.append(peer)
        return peer

    def spawn(self, coro: object) -> None:
        import asyncio

        task = asyncio.get_running_loop().create_task(coro)  # type: ignore[arg-type]
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def publishers(self) -> list[FakePublisher]:
        return [p for p in self.peers if isinstance(p, FakePublisher)]

    def subscribers(self) -> list[FakeSubscriber]:
        return [p for p in self.peers if isinstance(p, FakeSubscriber)]

    def subscriber(self, name: str) -> FakeSubscriber:
        (peer,) = [p for p in self.subscribers() if p.name == name]
        return peer

    def publisher(self, name: str) -> FakePublisher:
        (peer,) = [p for p in self.publishers() if p.name == name]
        return peer


class FakeSink:
    """A client's transport: keeps every event it is given."""

    def __init__(self) -> None:
        self.events: list[events.Event] = []

    def deliver(self, event: events.Event) -> None:
        self.events.append(event)

    #: What probe() answers (a test sets False for a connection that is gone).
    alive = True

    async def probe(self, wait: float) -> bool:
        return self.alive

    def of(self, type_: type) -> list[events.Event]:
        return [e for e in self.events if isinstance(e, type_)]

    def kinds(self) -> list[str]:
        return [type(e).__name__ for e in self.events]

    def clear(self) -> None:
        self.events.clear()
