"""What the domain answers a command with: frozen values, no wire format."""

from __future__ import annotations

from dataclasses import dataclass


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
    """A live stream's codecs and bitrates (bits per second since it started)."""

    video_codec: str = ""
    audio_codec: str = ""
    video_bitrate: int = 0
    audio_bitrate: int = 0
