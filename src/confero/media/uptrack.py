"""UpTrack: one incoming RTP stream of a Publisher, and the fan-out loop to its DownTracks.

Per packet (the hot path) it peeks the header, keeps sequence/loss state for receiver reports
and NACKs, detects keyframes only while some DownTrack waits for one, and hands the packet to
the fan-out engine with the list of its DownTracks' Copies (one call for all copies). No
awaits, no per-packet objects.

The UpTrack alone keeps the count of its copies that wait for a keyframe (`pending`): a copy
waits when it attaches, when it resumes after a pause and when the source changes SSRC, and
stops waiting when the engine reports that it started. Every keyframe request goes through
the track's `KeyframeRequester` (video only). `TrackRegistry` is a Router's map of the live
tracks by id, which is how a Subscriber finds its sources.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from confero.media.fanout import Engine, select
from confero.media.keyframes import KeyframeRequester
from confero.media.rtp import U32, keyframe_detector, resolution_reader
from confero.media.types import TrackInfo, TrackStats, UnknownTrack

if TYPE_CHECKING:
    from confero.media.downtrack import DownTrack

AUDIO_LEVEL_URI = "urn:ietf:params:rtp-hdrext:ssrc-audio-level"  # RFC 6464
NTP_EPOCH_OFFSET = 2208988800
NACK_MAX_AGE = 1.0
NACK_MAX_TRIES = 3
MAX_MISSING = 256


def ntp_now() -> int:
    now = time.time() + NTP_EPOCH_OFFSET
    return (int(now) << 32) | int((now % 1) * (1 << 32))


class UpTrack:
    """Receive state of one published track (audio or video)."""

    def __init__(
        self,
        track_id: str,
        kind: str,
        codec: RTCRtpCodecParameters,
        rtx_payload_type: int | None,
        *,
        nack: bool,
        send_pli: Callable[[UpTrack], bool],
        send_nack: Callable[[UpTrack, list[int]], None],
        engine: Engine | None = None,
    ) -> None:
        if codec.payloadType is None:
            raise ValueError("the track's codec has no payload type")
        self.track_id = track_id
        self.kind = kind
        self.engine = engine or select()
        self._fanout = self.engine.fanout
        self.codec = codec
        self.payload_type: int = codec.payloadType
        self.rtx_payload_type = rtx_payload_type
        self.clock_rate: int = codec.clockRate
        self.ssrc: int | None = None
        self.closed = False
        self.downtracks: list[DownTrack] = []
        self.copies: list[object] = []  # downtracks[i].copy, the list the engine walks
        # the last packets, for its copies' retransmissions (video only: audio is not NACKed)
        self.ring = self.engine.Ring() if kind == "video" else None
        self.pending = 0  # attached, enabled copies waiting for a keyframe
        self.requester = KeyframeRequester(lambda: send_pli(self)) if kind == "video" else None
        self._is_keyframe = keyframe_detector(codec.mimeType)
        # picture size, read from keyframes only: the first one, then those copies wait for
        self._read_size = resolution_reader(codec.mimeType) if kind == "video" else None
        self._sizing = self._read_size is not None  # keyframes are detected until the first size
        self.width = 0
        self.height = 0
        self._send_nack = send_nack if nack else None
        # receive statistics (RFC 3550 A.3)
        self.packets = 0
        self.octets = 0
        self.keyframes = 0
        self.malformed = 0
        self.duplicates = 0
        self.recovered = 0
        self._max_seq = -1
        self._cycles = 0
        self._base_seq = 0
        self._expected_prior = 0
        self._received_prior = 0
        self.missing: dict[int, list[float]] = {}  # seq -> [first asked, tries]
        # publisher clock: (wallclock seconds, ntp, rtp) of the last SR, or of the first packet
        self.clock_ref: tuple[float, int, int] | None = None
        self.has_sender_report = False
        # RFC 6464 audio level: the negotiated id of urn:ietf:params:rtp-hdrext:ssrc-audio-level
        # (0: not negotiated), and the loudest level (-dBov, 0 loudest .. 127 silence) since the
        # last sample_level()
        self.audio_level_id = 0
        self.loudest = 127

    # -- hot path ------------------------------------------------------------------------

    def receive(self, data: bytes) -> None:
        """One decrypted RTP packet of this track (RTX already unwrapped)."""
        b0 = data[0]
        offset = 12 + 4 * (b0 & 0x0F)
        if b0 & 0x10:
            if len(data) < offset + 4:
                self.malformed += 1
                return
            offset += 4 + 4 * ((data[offset + 2] << 8) | data[offset + 3])
        if offset > len(data):
            self.malformed += 1
            return
        seq = (data[2] << 8) | data[3]
        max_seq = self._max_seq
        if max_seq < 0:
            self._max_seq = seq
            self._base_seq = seq
            self.clock_ref = (time.time(), ntp_now(), U32.unpack_from(data, 4)[0])
        else:
            delta = (seq - max_seq) & 0xFFFF
            if delta == 0:
                self.duplicates += 1
                return
            if delta < 0x8000:
                if seq < max_seq:
                    self._cycles += 0x10000
                if delta > 1 and self._send_nack is not None:
                    self._gap(max_seq, delta)
                self._max_seq = seq
            elif self.missing and self.missing.pop(seq, None) is not None:
                self.recovered += 1
        self.packets += 1
        self.octets += len(data) - offset
        if self.audio_level_id and b0 & 0x10:
            self._read_level(data, 12 + 4 * (b0 & 0x0F), offset)
        keyframe = False
        if self.pending or self._sizing:
            detector = self._is_keyframe
            keyframe = detector is None or detector(data[offset:])
            if keyframe:
                self.keyframes += 1
                if self._read_size is not None:
                    self._size(data[offset:])
        if self.copies:
            started = self._fanout(self.copies, data, offset, keyframe, self.ring)
            if started is not None:
                self.pending -= len(started)

    def _read_level(self, data: bytes, start: int, end: int) -> None:
        """The RFC 6464 level in the one-byte extension block at `start` (RFC 8285), if any:
        walks the few elements, keeps the loudest. No objects (ints up to 255 are cached)."""
        if data[start] != 0xBE or data[start + 1] != 0xDE:
            return
        want = self.audio_level_id
        i = start + 4
        while i < end:
            b = data[i]
            if b == 0:  # padding
                i += 1
                continue
            ext_id = b >> 4
            if ext_id == 15:
                return
            if ext_id == want:
                if i + 1 < end:
                    level = data[i + 1] & 0x7F
                    if level < self.loudest:
                        self.loudest = level
                return
            i += 2 + (b & 0x0F)

    def sample_level(self) -> int:
        """The loudest audio level since the last call (127, silence, when no packet said)."""
        level, self.loudest = self.loudest, 127
        return level

    def _size(self, payload: bytes) -> None:
        """A keyframe packet: take the picture size if it carries it (VP8's first packet, an
        H.264 SPS). Detection for the size alone ends at the first keyframe either way."""
        assert self._read_size is not None
        self._sizing = False
        size = self._read_size(payload)
        if size is not None:
            self.width, self.height = size

    def _gap(self, max_seq: int, delta: int) -> None:
        now = time.monotonic()
        lost = []
        for i in range(1, min(delta, 64)):
            s = (max_seq + i) & 0xFFFF
            self.missing[s] = [now, 1]
            lost.append(s)
        if len(self.missing) > MAX_MISSING:
            for s in list(self.missing)[: len(self.missing) - MAX_MISSING]:
                del self.missing[s]
        assert self._send_nack is not None
        self._send_nack(self, lost)

    # -- copies ----------------------------------------------------------------------------
    #
    # `pending` counts the attached copies that are enabled and wait for a keyframe: only
    # those can start on one (a paused copy never starts). Every change of that state goes
    # through the four methods below, and the fan-out's started indices take it back down.

    def attach(self, downtrack: DownTrack) -> None:
        """Forward to `downtrack` from the next keyframe, which is requested now."""
        if self.closed or downtrack in self.downtracks:
            return
        if not isinstance(downtrack.copy, self.engine.Copy):
            raise TypeError(f"a {type(downtrack.copy).__name__} cannot join the {self.engine.name} fan-out")
        self.downtracks.append(downtrack)
        self.copies.append(downtrack.copy)
        if downtrack.waiting and downtrack.enabled:
            self.pending += 1
            self.request_keyframe("join")

    def detach(self, downtrack: DownTrack) -> None:
        if downtrack in self.downtracks:
            index = self.downtracks.index(downtrack)
            del self.downtracks[index]
            del self.copies[index]
            if downtrack.waiting and downtrack.enabled:
                self.pending -= 1

    def set_enabled(self, downtrack: DownTrack, enabled: bool) -> None:
        """Pause or resume an attached copy; a resumed copy restarts at the next keyframe."""
        if downtrack not in self.downtracks or downtrack.enabled == enabled:
            return
        downtrack.copy.enabled = enabled
        if not enabled:
            if downtrack.waiting:
                self.pending -= 1
            return
        downtrack.restart()
        self.pending += 1
        self.request_keyframe("resume")

    def reset_source(self) -> None:
        """The publisher restarted this track with a new SSRC: start the statistics afresh,
        and every started copy again at the new source's first keyframe."""
        self._max_seq = -1
        self._cycles = 0
        self._expected_prior = self._received_prior = self.packets = 0
        self.missing.clear()
        self.clock_ref = None
        self.has_sender_report = False
        self._sizing = self._read_size is not None  # the new source's first keyframe tells its size
        if self.ring is not None:
            self.ring.clear()  # the old source's sequence numbers mean nothing now
        if self.requester is not None:
            self.requester.reset()
        restarted = False
        for downtrack in self.downtracks:
            if not downtrack.waiting and downtrack.enabled:
                downtrack.restart()
                self.pending += 1
                restarted = True
        if restarted:
            self.request_keyframe("resync")

    def request_keyframe(self, reason: str) -> bool:
        """Ask the publisher for a keyframe (video; rate-limited). True when a PLI went out."""
        requester = self.requester
        return requester is not None and requester.request(reason)

    # -- publisher clock, NACKs, receiver reports --------------------------------------------

    def on_sender_report(self, ntp: int, rtp_ts: int) -> None:
        self.clock_ref = (time.time(), ntp, rtp_ts)
        self.has_sender_report = True

    def clock_now(self) -> tuple[int, int] | None:
        """(ntp, rtp timestamp) of the publisher's clock now, extrapolated from the last SR."""
        if self.clock_ref is None:
            return None
        wall, ntp, rtp_ts = self.clock_ref
        elapsed = time.time() - wall
        ntp_out = ntp + int(elapsed * (1 << 32))
        rtp_out = (rtp_ts + int(elapsed * self.clock_rate)) & 0xFFFFFFFF
        return ntp_out, rtp_out

    def retry_nacks(self) -> None:
        """Ask again for packets still missing (called on the housekeeping tick)."""
        if not self.missing or self._send_nack is None:
            return
        now = time.monotonic()
        again = []
        for s, entry in list(self.missing.items()):
            if now - entry[0] > NACK_MAX_AGE or entry[1] >= NACK_MAX_TRIES:
                del self.missing[s]
            else:
                entry[1] += 1
                again.append(s)
        if again:
            self._send_nack(self, again)

    def receiver_report(self) -> tuple[int, int, int, int]:
        """(fraction lost, cumulative lost, extended highest seq, jitter) for an RR block."""
        extended = self._cycles + max(self._max_seq, 0)
        expected = extended - self._base_seq + 1
        lost = max(0, expected - self.packets)
        expected_interval = expected - self._expected_prior
        received_interval = self.packets - self._received_prior
        self._expected_prior = expected
        self._received_prior = self.packets
        lost_interval = expected_interval - received_interval
        fraction = 0
        if expected_interval > 0 and lost_interval > 0:
            fraction = (lost_interval << 8) // expected_interval
        return min(fraction, 255), min(lost, 0x7FFFFF), extended & 0xFFFFFFFF, 0

    # -- values, lifecycle -------------------------------------------------------------------

    def info(self) -> TrackInfo:
        return TrackInfo(self.track_id, self.kind, self.codec.mimeType, self.width, self.height)

    def stats(self) -> TrackStats:
        return TrackStats(
            track_id=self.track_id,
            kind=self.kind,
            codec=self.codec.mimeType,
            packets=self.packets,
            octets=self.octets,
            keyframes=self.keyframes,
            keyframe_requests=self.requester.sent if self.requester is not None else 0,
            width=self.width,
            height=self.height,
        )

    def close(self) -> None:
        """Idempotent: the publisher is gone; every copy lets go of the track."""
        self.closed = True
        for downtrack in list(self.downtracks):
            downtrack.source_closed()
        self.downtracks.clear()
        self.copies.clear()
        self.pending = 0

    def dump(self) -> dict[str, object]:
        return {
            "trackId": self.track_id,
            "kind": self.kind,
            "codec": self.codec.mimeType,
            "ssrc": self.ssrc,
            "packets": self.packets,
            "octets": self.octets,
            "keyframes": self.keyframes,
            "audioLevelId": self.audio_level_id,
            "size": [self.width, self.height],
            "missing": len(self.missing),
            "recovered": self.recovered,
            "downtracks": len(self.downtracks),
            "pending": self.pending,
            "keyframeRequests": self.requester.dump() if self.requester is not None else None,
        }


class TrackRegistry:
    """The live published tracks of one Router, by track id (unique per Router)."""

    def __init__(self) -> None:
        self._tracks: dict[str, UpTrack] = {}
        self._count = 0

    def new_id(self, name: str, kind: str) -> str:
        """A fresh id: "<publisher name>/<kind>/<n>", n counting every track of the Router."""
        self._count += 1
        return f"{name}/{kind}/{self._count}"

    def add(self, uptrack: UpTrack) -> None:
        if uptrack.track_id in self._tracks:
            raise ValueError(f"track id {uptrack.track_id!r} is already live")
        self._tracks[uptrack.track_id] = uptrack

    def remove(self, uptrack: UpTrack) -> None:
        if self._tracks.get(uptrack.track_id) is uptrack:
            del self._tracks[uptrack.track_id]

    def get(self, track_id: str) -> UpTrack:
        """The live track with this id. Raises UnknownTrack."""
        uptrack = self._tracks.get(track_id)
        if uptrack is None:
            raise UnknownTrack(f"no live track {track_id!r}")
        return uptrack

    def __contains__(self, track_id: object) -> bool:
        return track_id in self._tracks

    def __iter__(self) -> Iterator[str]:
        return iter(list(self._tracks))

    def __len__(self) -> int:
        return len(self._tracks)
