"""What the media plane hands out: plain values and typed failures, no media objects.

The domain (`domain/media.py`) knows the media plane through these and through small
Protocols; it never sees an UpTrack, a DownTrack, an aiortc object or an RTP byte. A failure
is one of the exception types below; each transport maps them to its own error terms in one
place (`signaling/wire.py`, `api/routes.py`).
"""

from __future__ import annotations

from dataclasses import dataclass

# -- failures --------------------------------------------------------------------------------


class MediaError(Exception):
    """Base of every failure the media plane reports; `detail` says what went wrong."""

    def __init__(self, detail: str = "") -> None:
        super().__init__(detail or type(self).__name__)
        self.detail = detail


class SdpError(MediaError):
    """A description could not be applied. `side` is "remote" (the client's) or "local" (ours)."""

    def __init__(self, detail: str = "", *, side: str = "remote") -> None:
        super().__init__(detail)
        self.side = side


class NoMedia(SdpError):
    """The client's offer has no audio, video or data channel section the server can take."""


class CodecMismatch(MediaError):
    """No codec in common: the publisher's offer, or a player that cannot take the publisher's codec."""


class BadCandidate(MediaError):
    """A trickled ICE candidate that does not parse or cannot be added."""


class UnknownTrack(MediaError):
    """A track id that no live publisher has (it ended, or never existed)."""


# -- values ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class LocalCandidate:
    """A server ICE candidate for trickling: m-line index, mid and the `candidate:` line."""

    index: int
    mid: str | None
    candidate: str


@dataclass(frozen=True)
class TrackInfo:
    """One published track: its media-plane id (unique on this node), kind and codec."""

    track_id: str
    kind: str  # "audio" | "video"
    codec: str  # MIME type as negotiated, e.g. "video/VP8"
    width: int = 0  # video: the picture size of the last keyframe read (0 before one)
    height: int = 0


@dataclass(frozen=True)
class TrackStats:
    """Receive counters of one published track."""

    track_id: str
    kind: str
    codec: str
    packets: int
    octets: int
    keyframes: int
    keyframe_requests: int
    width: int = 0  # video: as in TrackInfo
    height: int = 0


@dataclass(frozen=True)
class TrackLevel:
    """The loudest RFC 6464 audio level of one published audio track since the last sample:
    -dBov, 0 (loudest) .. 127 (silence, also when the track sent no level)."""

    track_id: str
    level: int


@dataclass(frozen=True)
class SlotInfo:
    """One m-line a subscriber offered: its mid, the kind, and the caller's label."""

    mid: str
    kind: str
    label: str


__all__ = [
    "BadCandidate",
    "CodecMismatch",
    "LocalCandidate",
    "MediaError",
    "NoMedia",
    "SdpError",
    "SlotInfo",
    "TrackInfo",
    "TrackLevel",
    "TrackStats",
    "UnknownTrack",
]
