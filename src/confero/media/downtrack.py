"""DownTrack: one forwarded copy of an UpTrack to one Subscriber.

It holds only per-copy state: the subscriber's SSRC and payload type, the sequence-number and
timestamp offsets fixed on the first keyframe, a retransmission ring of the packets it sent,
and counters for sender reports. `write()` is the per-copy hot path: rewrite the header into
bytes, remember it, SRTP-protect and `sendto` without awaiting.
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any, Callable

from confero.media import rtp

if TYPE_CHECKING:
    from confero.media.uptrack import UpTrack

RING_SIZE = 256  # packets kept for retransmission: about 1 s of 2.5 Mbit/s video, 2 s of 1 Mbit/s
RING_MASK = RING_SIZE - 1
YOUNG_PACKETS = 256  # after a start, drop packets older than the start point for this long

_pack = rtp.HEADER.pack


class DownTrack:
    """Forwarding state of one UpTrack towards one subscriber."""

    def __init__(
        self,
        uptrack: UpTrack,
        *,
        mid: str | None,
        ssrc: int,
        payload_type: int,
        rtx_ssrc: int | None,
        rtx_payload_type: int | None,
        extension: bytes,
        on_started: Callable[[DownTrack], None] | None = None,
        on_source_closed: Callable[[DownTrack], None] | None = None,
    ) -> None:
        self.uptrack = uptrack
        self.kind = uptrack.kind
        self.mid = mid
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self._ext = extension
        self._b0 = 0x80 | (0x10 if extension else 0)
        self._on_started = on_started
        self._on_source_closed = on_source_closed
        self.enabled = True
        self.attached = False
        self.waiting = True
        self._seq_off = 0
        self._ts_off = 0
        self._start_seq = 0
        self._young = 0
        self._next_seq = random.randrange(0x8000)
        self._next_ts = random.randrange(1 << 32)
        self._rtx_seq = random.randrange(0x8000)
        self._protect: Callable[[bytes], bytes] | None = None
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._addr: Any = None
        self._ring: list[bytes | None] | None = [None] * RING_SIZE if uptrack.kind == "video" else None
        self.last_ts = 0
        self.last_seq = 0
        self.packets = 0
        self.octets = 0
        self.retransmitted = 0
        self.send_errors = 0
        self.keyframe_requests = 0

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, protect: Callable[[bytes], bytes], sendto: Callable[[bytes, Any], None], addr: Any) -> None:
        """The subscriber's transport is up: begin forwarding from the next keyframe."""
        self._protect, self._sendto, self._addr = protect, sendto, addr
        if not self.attached:
            self.attached = True
            self.waiting = True
            self.uptrack.attach(self)

    def stop(self) -> None:
        """Idempotent: detach from the UpTrack and forget the socket."""
        if self.attached:
            self.attached = False
            self.uptrack.detach(self)
        self._sendto = None
        self._protect = None
        self._ring = None

    def source_closed(self) -> None:
        """The publisher went away; the owner decides what happens to the subscriber."""
        self.attached = False
        self.waiting = False
        callback = self._on_source_closed
        if callback is not None:
            callback(self)

    # -- hot path ------------------------------------------------------------------------

    def write(self, pad: int, marker: int, seq: int, ts: int, payload: bytes, keyframe: bool) -> None:
        if self.waiting:
            if not keyframe or not self.enabled:
                return
            self._begin(seq, ts)
        elif self._young:
            self._young -= 1
            if ((seq - self._start_seq) & 0xFFFF) >= 0x8000:
                return
        if not self.enabled:
            return
        out_seq = (seq + self._seq_off) & 0xFFFF
        out_ts = (ts + self._ts_off) & 0xFFFFFFFF
        packet = _pack(self._b0 | pad, marker | self.payload_type, out_seq, out_ts, self.ssrc) + self._ext + payload
        ring = self._ring
        if ring is not None:
            ring[out_seq & RING_MASK] = packet
        self.last_ts = out_ts
        self.last_seq = out_seq
        self.packets += 1
        self.octets += len(payload)
        try:
            self._sendto(self._protect(packet), self._addr)  # type: ignore[misc]
        except Exception:
            self.send_errors += 1

    def _begin(self, seq: int, ts: int) -> None:
        self._seq_off = (self._next_seq - seq) & 0xFFFF
        self._ts_off = (self._next_ts - ts) & 0xFFFFFFFF
        self._start_seq = seq
        self._young = YOUNG_PACKETS
        self.waiting = False
        self.uptrack.started(self)
        if self._on_started is not None:
            self._on_started(self)

    def resync(self) -> None:
        """The source changed (new SSRC): continue our numbering from the next keyframe."""
        if self.waiting or not self.attached:
            return
        self._next_seq = (self.last_seq + 1) & 0xFFFF
        step = 3000 if self.kind == "video" else 960
        self._next_ts = (self.last_ts + step) & 0xFFFFFFFF
        self.waiting = True
        self.uptrack.pending += 1
        self.uptrack.request_keyframe()

    # -- feedback ------------------------------------------------------------------------

    def retransmit(self, lost: list[int]) -> None:
        """Answer a NACK from the ring, as RTX where negotiated."""
        ring = self._ring
        if ring is None or self._sendto is None or self._protect is None:
            return
        header_len = 12 + len(self._ext)
        for seq in lost:
            packet = ring[seq & RING_MASK]
            if packet is None or ((packet[2] << 8) | packet[3]) != seq:
                continue
            if self.rtx_payload_type is not None and self.rtx_ssrc is not None:
                rtx_seq = self._rtx_seq
                self._rtx_seq = (rtx_seq + 1) & 0xFFFF
                packet = (
                    _pack(
                        packet[0],
                        (packet[1] & 0x80) | self.rtx_payload_type,
                        rtx_seq,
                        rtp.U32.unpack_from(packet, 4)[0],
                        self.rtx_ssrc,
                    )
                    + packet[12:header_len]
                    + packet[2:4]
                    + packet[header_len:]
                )
            try:
                self._sendto(self._protect(packet), self._addr)
                self.retransmitted += 1
            except Exception:
                self.send_errors += 1

    def request_keyframe(self) -> None:
        self.keyframe_requests += 1
        self.uptrack.request_keyframe()

    def sender_report(self) -> tuple[int, int] | None:
        """(ntp, rtp timestamp) for this copy's SR, from the publisher's clock."""
        now = self.uptrack.clock_now()
        if now is None or self.waiting:
            return None
        ntp, rtp_ts = now
        return ntp, (rtp_ts + self._ts_off) & 0xFFFFFFFF

    def dump(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "mid": self.mid,
            "ssrc": self.ssrc,
            "waiting": self.waiting,
            "enabled": self.enabled,
            "packets": self.packets,
            "retransmitted": self.retransmitted,
            "sendErrors": self.send_errors,
        }
