"""What the domain asks of the media plane: ids and values in, callbacks out.

`media.MediaPlane` (the Router) implements these Protocols structurally; tests implement them
with `tests/support/fakemedia.py`. Nothing here is a media object: a publisher's tracks are
`TrackInfo` values whose `track_id` a subscriber takes as a source.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from confero.media.types import LocalCandidate, SlotInfo, TrackInfo, TrackLevel, TrackStats

OnConnected = Callable[[], None]
OnClosed = Callable[[str], None]  # the reason: "ice_failed", "closed", "shutdown", ...
OnData = Callable[[str | bytes], None]


class MediaPeer(Protocol):
    """One server peer connection."""

    @property
    def connected(self) -> bool: ...

    @property
    def closed(self) -> bool: ...

    def local_candidates(self) -> list[LocalCandidate]: ...

    async def add_candidate(self, candidate: str, mid: str | None, index: int | None) -> None: ...

    def send_data(self, data: str | bytes) -> bool:
        """Send on the peer's data channel (queued until it opens); False if it was dropped."""
        ...

    async def close(self, reason: str = "closed") -> None:
        """Idempotent; `on_closed` is called once, with the first reason."""
        ...


class MediaPublisher(MediaPeer, Protocol):
    """The ingest peer of one stream."""

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer; returns the answer SDP. Raises SdpError, NoMedia, CodecMismatch."""
        ...

    def tracks(self) -> list[TrackInfo]: ...

    def stats(self) -> list[TrackStats]: ...

    def idle_seconds(self) -> float:
        """Seconds since its media last came in (0 when none is expected: data only, not yet)."""
        ...

    def levels(self) -> list[TrackLevel]:
        """Each audio track's loudest RFC 6464 level since the last call (127: silence)."""
        ...


class MediaSubscriber(MediaPeer, Protocol):
    """The egress peer of one player: any number of sources, each under a caller's label."""

    def add_source(self, track_id: str, label: str, *, msid_stream: str = "", msid_track: str = "") -> None:
        """Forward a published track (on the next offer), its m-line's `a=msid` naming
        `msid_stream` and `msid_track`. Raises UnknownTrack."""
        ...

    def switch_source(self, label: str, track_id: str) -> bool:
        """Carry another published track of the same kind on the m-line of `label`, without
        renegotiating (from its next keyframe); False if there is none. Raises UnknownTrack."""
        ...

    def remove_source(self, label: str) -> bool:
        """Stop forwarding every source with `label`; their m-lines go inactive on the next offer."""
        ...

    def labels(self) -> set[str]:
        """Labels of the sources being forwarded."""
        ...

    def slots(self) -> list[SlotInfo]:
        """Every m-line offered so far, in order (for the client's track id mapping)."""
        ...

    @property
    def negotiating(self) -> bool:
        """An offer is out and its answer has not been applied."""
        ...

    async def offer(self, *, data_channel: str | None = None) -> str:
        """Offer (or re-offer) the current sources; returns the SDP. Raises SdpError."""
        ...

    async def accept_answer(self, answer_sdp: str) -> None:
        """Apply the client's answer. Raises SdpError, CodecMismatch."""
        ...

    def set_enabled(self, label: str, enabled: bool, kind: str | None = None) -> bool:
        """Pause or resume the sources with `label` (of `kind` only, if given) without
        renegotiating; False if none."""
        ...

    def stats(self) -> list[TrackStats]:
        """Send counters of each forwarded copy (`track_id` is its source's)."""
        ...


class MediaPlane(Protocol):
    """The media plane's root: creates peers and owns them."""

    def create_publisher(
        self, name: str, *, on_connected: OnConnected, on_closed: OnClosed, on_data: OnData
    ) -> MediaPublisher: ...

    def create_subscriber(
        self, name: str, *, on_connected: OnConnected, on_closed: OnClosed, on_data: OnData
    ) -> MediaSubscriber: ...


__all__ = [
    "LocalCandidate",
    "MediaPeer",
    "MediaPlane",
    "MediaPublisher",
    "MediaSubscriber",
    "OnClosed",
    "OnConnected",
    "OnData",
    "SlotInfo",
    "TrackInfo",
    "TrackLevel",
    "TrackStats",
]
