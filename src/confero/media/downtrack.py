"""DownTrack: one forwarded copy of an UpTrack to one Subscriber.

It is the control side of one copy: when it starts (the subscriber's transport is up), stops,
restarts, answers NACKs and reports its clock for sender reports. The per-copy state and the
hot path (header rewrite, retransmission ring, SRTP protect, `sendto`) live in a `Copy` of the
fan-out engine (`media/fanout.py`: compiled or pure Python), which the UpTrack drives for every
packet. Whether a copy waits for a keyframe is the UpTrack's to count: a DownTrack changes that
state only through its UpTrack (`attach`, `detach`, `set_enabled`).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING

from confero.media.fanout import Copy, Output

if TYPE_CHECKING:
    from confero.media.uptrack import UpTrack


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
    ) -> None:
        self.uptrack = uptrack
        self.kind = uptrack.kind
        self.mid = mid
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self.attached = False
        self.keyframe_requests = 0  # the player's PLIs and FIRs for this copy
        self.switches = 0  # times the m-line changed source (switch())
        self._extension = extension
        self._output: Output | None = None
        self._earlier_packets = 0  # sent by the copies of earlier sources (switch())
        self._earlier_octets = 0
        with_rtx = rtx_payload_type is not None and rtx_ssrc is not None
        self._rtx = (
            rtx_ssrc if rtx_ssrc is not None and with_rtx else 0,
            rtx_payload_type if rtx_payload_type is not None and with_rtx else -1,
        )
        self.copy: Copy = uptrack.engine.Copy(
            ssrc,
            payload_type,
            extension,
            ring=uptrack.ring,
            rtx_ssrc=self._rtx[0],
            rtx_payload_type=self._rtx[1],
            next_seq=random.randrange(0x8000),
            next_ts=random.randrange(1 << 32),
            rtx_seq=random.randrange(0x8000),
        )

    # -- state kept by the engine's Copy ---------------------------------------------------

    @property
    def waiting(self) -> bool:
        return bool(self.copy.waiting)

    @property
    def enabled(self) -> bool:
        return bool(self.copy.enabled)

    @property
    def packets(self) -> int:
        return self._earlier_packets + int(self.copy.packets)

    @property
    def octets(self) -> int:
        return self._earlier_octets + int(self.copy.octets)

    @property
    def retransmitted(self) -> int:
        return int(self.copy.retransmitted)

    @property
    def send_errors(self) -> int:
        return int(self.copy.send_errors)

    # -- lifecycle -----------------------------------------------------------------------

    def start(self, output: Output) -> None:
        """The subscriber's transport is up: begin forwarding from the next keyframe."""
        self._output = output
        self.copy.set_output(output)
        if not self.attached and not self.uptrack.closed:
            self.attached = True
            self.copy.waiting = True
            self.uptrack.attach(self)

    def stop(self) -> None:
        """Idempotent: detach from the UpTrack and let go of the socket and the track's ring."""
        if self.attached:
            self.attached = False
            self.uptrack.detach(self)
        self._output = None
        self.copy.set_output(None)
        self.copy.clear_ring()

    def switch(self, uptrack: UpTrack) -> None:
        """Forward another UpTrack (same kind and codec) on this m-line: a new Copy that shares
        this one's Numbering takes over at the new source's next keyframe (requested with
        reason `join`), continuing the sequence and timestamps after the last packet sent, so
        the player sees one stream. The old source stops at once."""
        if uptrack is self.uptrack and self.attached:
            return
        old = self.copy
        enabled = bool(old.enabled)
        if self.attached:
            self.attached = False
            self.uptrack.detach(self)
        old.set_output(None)
        old.clear_ring()
        sent_before = self.packets > 0
        self._earlier_packets += int(old.packets)
        self._earlier_octets += int(old.octets)
        copy = uptrack.engine.Copy(
            self.ssrc,
            self.payload_type,
            self._extension,
            ring=uptrack.ring,
            rtx_ssrc=self._rtx[0],
            rtx_payload_type=self._rtx[1],
            numbering=old.numbering,
        )
        if sent_before:
            copy.resync(3000 if self.kind == "video" else 960)
        copy.enabled = enabled
        self.copy = copy
        self.uptrack = uptrack
        self.switches += 1
        if self._output is not None:
            self.start(self._output)

    def source_closed(self) -> None:
        """The publisher went away (its UpTrack dropped every copy): let go of its ring."""
        self.attached = False
        self.copy.clear_ring()

    def set_enabled(self, enabled: bool) -> None:
        """Pause or resume forwarding; a resumed copy restarts at the next keyframe."""
        if self.attached:
            self.uptrack.set_enabled(self, enabled)
        else:
            self.copy.enabled = enabled

    def restart(self) -> None:
        """Continue our numbering from the next keyframe (the UpTrack counts the wait)."""
        if not self.copy.waiting:
            self.copy.resync(3000 if self.kind == "video" else 960)

    # -- feedback ------------------------------------------------------------------------

    def retransmit(self, lost: list[int]) -> None:
        """Answer a NACK from the ring, as RTX where negotiated."""
        self.copy.retransmit(lost)

    def request_keyframe(self) -> None:
        """The player sent PLI or FIR for this copy."""
        self.keyframe_requests += 1
        self.uptrack.request_keyframe("player")

    def sender_report(self) -> tuple[int, int] | None:
        """(ntp, rtp timestamp) for this copy's SR, from the publisher's clock."""
        if not self.attached or self.waiting:
            return None
        now = self.uptrack.clock_now()
        if now is None:
            return None
        ntp, rtp_ts = now
        return ntp, (rtp_ts + self.copy.ts_off) & 0xFFFFFFFF

    def dump(self) -> dict[str, object]:
        return {
            "kind": self.kind,
            "mid": self.mid,
            "ssrc": self.ssrc,
            "attached": self.attached,
            "waiting": self.waiting,
            "enabled": self.enabled,
            "packets": self.packets,
            "retransmitted": self.retransmitted,
            "keyframeRequests": self.keyframe_requests,
            "switches": self.switches,
            "sendErrors": self.send_errors,
        }
