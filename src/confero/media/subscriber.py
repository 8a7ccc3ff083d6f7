"""Subscriber: the egress peer of one player; one DownTrack per forwarded UpTrack.

The server makes the offer: one sendonly transceiver per UpTrack, restricted to the
publisher's codec (plus RTX), with a sender that never produces media of its own (it is there
for its SSRC, SDP and RTCP). Once DTLS is up, every DownTrack starts forwarding at the next
keyframe. Players' PLI/FIR go to the UpTrack, NACKs are answered from the DownTrack's ring.
"""

from __future__ import annotations

import logging
import random
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from aiortc import RTCRtpSender, RTCRtpTransceiver
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.rtp import (
    RTCP_PSFB_FIR,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpRtpfbPacket,
)

from confero.media import aiortc_hooks, rtp
from confero.media.downtrack import DownTrack
from confero.media.peer import MediaError, Peer, PeerConfig
from confero.media.uptrack import UpTrack

logger = logging.getLogger(__name__)

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
REPORT_INTERVAL = (0.5, 1.5)  # seconds between compound SR packets, drawn afresh each time
REPORTS_PER_PACKET = 30  # SRs of 28 bytes + one CNAME chunk: under 1,000 bytes


def codec_preferences(uptrack: UpTrack) -> list[RTCRtpCodecCapability]:
    """The capabilities matching the publisher's codec, and RTX for video."""
    capabilities = RTCRtpSender.getCapabilities(uptrack.kind).codecs
    source = uptrack.codec
    chosen = [
        c for c in capabilities if c.mimeType.lower() == source.mimeType.lower() and c.parameters == source.parameters
    ]
    if not chosen:
        chosen = [c for c in capabilities if c.mimeType.lower() == source.mimeType.lower()][:1]
    if uptrack.kind == "video":
        chosen += [c for c in capabilities if c.mimeType.lower() == "video/rtx"]
    return chosen


@dataclass
class Slot:
    """One offered m-line: its transceiver, the UpTrack it carries and the caller's label."""

    transceiver: RTCRtpTransceiver
    uptrack: UpTrack
    label: str
    active: bool = True


class Subscriber(Peer):
    """Egress side of one player: any number of forwarded tracks on one peer connection."""

    role = "subscriber"

    def __init__(
        self,
        config: PeerConfig,
        name: str,
        *,
        on_closed: Callable[[Peer, str], None] | None = None,
        on_connected: Callable[[Peer], None] | None = None,
        on_source_closed: Callable[[DownTrack], None] | None = None,
        on_data: Callable[[Peer, str | bytes], None] | None = None,
    ) -> None:
        super().__init__(config, name, on_closed=on_closed, on_connected=on_connected, on_data=on_data)
        self.downtracks: list[DownTrack] = []
        self._on_source_closed = on_source_closed
        self.slots: list[Slot] = []
        self._next_report = 0.0
        self._cname: str | None = None
        self._by_ssrc: dict[int, DownTrack] = {}
        self._tap: aiortc_hooks.TransportTap | None = None

    async def offer(self, uptracks: list[tuple[UpTrack, str]], *, data_channel: str | None = None) -> str:
        """Offer one sendonly m-line per (UpTrack, label) and returns the offer SDP.

        Called again on a connected peer, it renegotiates: earlier m-lines stay (removed ones
        as inactive) and the new ones are appended.
        """
        for uptrack, label in uptracks:
            transceiver = self.pc.addTransceiver(aiortc_hooks.IdleTrack(uptrack.kind), direction="sendonly")
            aiortc_hooks.take_over_rtcp(transceiver.sender)  # tick() sends the SRs, all in one packet
            transceiver.setCodecPreferences(codec_preferences(uptrack))
            self.slots.append(Slot(transceiver, uptrack, label))
        if data_channel is not None and self.data_channel is None:
            self.attach_channel(self.pc.createDataChannel(data_channel))
        offer = await self.pc.createOffer()
        await self._set_local(offer)
        if self._tap is None:
            transports = aiortc_hooks.dtls_transports(self.pc)
            self._tap = aiortc_hooks.TransportTap(transports[0], on_rtcp=self._on_rtcp, on_ready=self._ready)
        return self.local_sdp()

    def mapping(self) -> list[tuple[str, str, str]]:
        """(mid, kind, label) of every offered m-line, for the client's track id mapping."""
        return [(s.transceiver.mid or "", s.uptrack.kind, s.label) for s in self.slots]

    def labels(self) -> set[str]:
        """Labels of the sources currently forwarded."""
        return {s.label for s in self.slots if s.active}

    def remove(self, label: str) -> bool:
        """Stop forwarding the sources with `label`; their m-lines go inactive on the next offer."""
        removed = False
        for slot in self.slots:
            if slot.label == label and slot.active:
                slot.active = False
                slot.transceiver.direction = "inactive"
                removed = True
                for downtrack in [d for d in self.downtracks if d.mid == slot.transceiver.mid]:
                    downtrack.stop()
                    self.downtracks.remove(downtrack)
                    self._by_ssrc.pop(downtrack.ssrc, None)
        return removed

    def set_enabled(self, label: str, enabled: bool) -> bool:
        """Pause or resume forwarding of a source without renegotiating."""
        found = False
        mids = {s.transceiver.mid for s in self.slots if s.label == label and s.active}
        for downtrack in self.downtracks:
            if downtrack.mid in mids:
                found = True
                if enabled and not downtrack.enabled:
                    downtrack.enabled = True
                    downtrack.resync()
                else:
                    downtrack.enabled = enabled
        return found

    @property
    def negotiating(self) -> bool:
        return self.pc.signalingState == "have-local-offer"

    async def accept_answer(self, answer_sdp: str) -> None:
        await self._set_remote(answer_sdp, "answer")
        for slot in self.slots:
            transceiver, uptrack = slot.transceiver, slot.uptrack
            if not slot.active or any(d.mid == transceiver.mid for d in self.downtracks):
                continue
            agreed = aiortc_hooks.negotiated(transceiver)
            if agreed.codec is None or agreed.codec.mimeType.lower() != uptrack.codec.mimeType.lower():
                raise MediaError(
                    "unsupported_codec",
                    f"the player does not accept {uptrack.codec.mimeType}, the publisher's codec",
                )
            ssrc, rtx_ssrc = aiortc_hooks.sender_ssrcs(transceiver.sender)
            downtrack = DownTrack(
                uptrack,
                mid=transceiver.mid,
                ssrc=ssrc,
                payload_type=agreed.codec.payloadType,
                rtx_ssrc=rtx_ssrc if agreed.rtx_payload_type is not None else None,
                rtx_payload_type=agreed.rtx_payload_type,
                extension=rtp.mid_extension(agreed.extensions.get(MID_URI), transceiver.mid or ""),
                on_source_closed=self._source_closed,
            )
            self.downtracks.append(downtrack)
            self._by_ssrc[ssrc] = downtrack
        if self._tap is not None and self._tap.ready:
            self._ready()

    def _ready(self) -> None:
        if self.closed or self._tap is None:
            return
        output = self._tap.rtp_output(self.config.engine)
        if output is None:
            return
        for downtrack in self.downtracks:
            downtrack.start(output)

    def _source_closed(self, downtrack: DownTrack) -> None:
        if self._on_source_closed is not None:
            self._on_source_closed(downtrack)

    # -- RTCP ----------------------------------------------------------------------------

    def _on_rtcp(self, data: bytes) -> None:
        for packet in RtcpPacket.parse(data):
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                target = packet.media_ssrc
                if packet.fmt == RTCP_PSFB_FIR and len(packet.fci) >= 4:
                    target = rtp.U32.unpack_from(packet.fci, 0)[0]
                downtrack = self._by_ssrc.get(target)
                if downtrack is not None:
                    downtrack.request_keyframe()
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                downtrack = self._by_ssrc.get(packet.media_ssrc)
                if downtrack is not None:
                    downtrack.retransmit(packet.lost)

    def tick(self, now: float) -> None:
        """Housekeeping: about once a second (0.5-1.5 s, RFC 3550 6.2), one compound RTCP packet
        with the SRs of up to 30 copies (the publisher's clock, translated) and a CNAME."""
        if now < self._next_report or self._tap is None or not self._tap.ready:
            return
        self._next_report = now + random.uniform(*REPORT_INTERVAL)
        reports: list[tuple[int, bytes]] = []
        for downtrack in self.downtracks:
            report = downtrack.sender_report()
            if report is not None:
                ntp, rtp_ts = report
                ssrc = downtrack.ssrc
                reports.append((ssrc, rtp.sender_report(ssrc, ntp, rtp_ts, downtrack.packets, downtrack.octets)))
        if not reports:
            return
        if self._cname is None and self.slots:
            self._cname = aiortc_hooks.sender_cname(self.slots[0].transceiver.sender)
        for start in range(0, len(reports), REPORTS_PER_PACKET):
            group = reports[start : start + REPORTS_PER_PACKET]
            packet = b"".join(sr for _, sr in group)
            if self._cname:
                packet += rtp.sdes_cname(group[0][0], self._cname)
            self._tap.send_rtcp(packet)

    # -- lifecycle -----------------------------------------------------------------------

    def _close_children(self) -> None:
        for downtrack in self.downtracks:
            downtrack.stop()
        if self._tap is not None:
            self._tap.close()
            self._tap = None
        self._by_ssrc.clear()
        self.slots.clear()

    def dump(self) -> dict[str, Any]:
        out = super().dump()
        out["tracks"] = [d.dump() for d in self.downtracks]
        return out
