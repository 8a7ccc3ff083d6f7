"""What the domain answers a command with: frozen values, no wire format."""

from __future__ import annotations

from dataclasses import dataclass

from confero.media.types import TrackStats


@dataclass(frozen=True)
class StreamSummary:
    """A live stream of a room, as members see it."""

    stream_id: str
    name: str = ""
    metadata: str = ""


@dataclass(frozen=True)
class JoinResult:
    """A client joined `room_id` with `stream_id`; `streams` are the other live streams there."""

    room_id: str
    stream_id: str
    streams: tuple[StreamSummary, ...] = ()


@dataclass(frozen=True)
class StreamInfo:
    """A live stream's codecs, bitrates (bits per second since it started) and video size
    (from its last parsed keyframe; 0 before one)."""

    video_codec: str = ""
    audio_codec: str = ""
    video_bitrate: int = 0
    audio_bitrate: int = 0
    width: int = 0
    height: int = 0


@dataclass(frozen=True)
class SubscriberInfo:
    """One current player of a stream (Confero has no registered TOTP subscribers)."""

    subscriber_id: str
    stream_id: str
    name: str = ""
    connected: bool = False


@dataclass(frozen=True)
class LegStats:
    """One peer connection of a stream, for debugging: who, which way, and its counters."""

    client_id: str
    direction: str  # "publish" | "play" | "room play"
    connected: bool
    tracks: tuple[TrackStats, ...] = ()  # what the publisher sends us, or what we send the player


@dataclass(frozen=True)
class DebugInfo:
    """What a stream (or room) looks like to the server now."""

    stream_id: str
    kind: str  # "stream" | "room" | "none"
    info: StreamInfo | None = None
    legs: tuple[LegStats, ...] = ()
