"""Subscriber: the egress peer of one player; one DownTrack per forwarded UpTrack.

The caller names its sources by track id (`add_source`), each under a label of its own; the
next `offer()` makes one sendonly m-line per new source, restricted to the publisher's codec
(plus RTX), with a sender that never produces media of its own (it is there for its SSRC, SDP
and RTCP). Once DTLS is up, every DownTrack starts forwarding at the next keyframe. Players'
PLI/FIR go to the UpTrack's keyframe requester, NACKs are answered from the track's ring.
"""

from __future__ import annotations

import logging
import random
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

from confero.media.aiortc_hooks import (
    IdleTrack,
    TransportTap,
    dtls_transports,
    negotiated,
    sender_cname,
    sender_ssrcs,
    set_msid,
    take_over_rtcp,
)
from confero.media.downtrack import DownTrack
from confero.media.peer import OnClosed, OnConnected, OnData, Peer, PeerConfig
from confero.media.rtp import U32, mid_extension, sdes_cname, sender_report
from confero.media.types import CodecMismatch, SdpError, SlotInfo, TrackStats
from confero.media.uptrack import TrackRegistry, UpTrack

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


def rejected_mids(sdp: str) -> set[str]:
    """Mids of the m-lines an answer rejected (port 0)."""
    rejected: set[str] = set()
    port = ""
    for line in sdp.splitlines():
        if line.startswith("m="):
            parts = line.split()
            port = parts[1] if len(parts) > 1 else ""
        elif line.startswith("a=mid:") and port == "0":
            rejected.add(line[6:].strip())
    return rejected


@dataclass
class Source:
    """A source added since the last offer: the track, its label and its `a=msid` names."""

    uptrack: UpTrack
    label: str
    msid_stream: str = ""
    msid_track: str = ""


@dataclass
class Slot:
    """One offered m-line: its transceiver, the UpTrack it carries and the caller's label."""

    transceiver: RTCRtpTransceiver
    uptrack: UpTrack
    label: str
    active: bool = True
    downtrack: DownTrack | None = None
    refused: bool = False  # the player's answer refused its codec


class Subscriber(Peer):
    """Egress side of one player: any number of forwarded tracks on one peer connection."""

    role = "subscriber"

    def __init__(
        self,
        config: PeerConfig,
        name: str,
        *,
        registry: TrackRegistry,
        on_connected: OnConnected | None = None,
        on_closed: OnClosed | None = None,
        on_data: OnData | None = None,
    ) -> None:
        super().__init__(config, name, on_connected=on_connected, on_closed=on_closed, on_data=on_data)
        self._registry = registry
        self._sources: list[Source] = []  # added since the last offer
        self._slots: list[Slot] = []
        self.downtracks: list[DownTrack] = []
        self._next_report = 0.0
        self._cname: str | None = None
        self._by_ssrc: dict[int, DownTrack] = {}
        self._tap: TransportTap | None = None
        self._sent_sample = 0  # sum of the copies' packets at the last tick

    # -- sources ---------------------------------------------------------------------------

    def add_source(self, track_id: str, label: str, *, msid_stream: str = "", msid_track: str = "") -> None:
        """Forward a live published track under `label`, from the next offer (once, however often
        it is added). `msid_stream`/`msid_track` are the ids its m-line's `a=msid` gives (random
        when empty). Raises UnknownTrack."""
        uptrack = self._registry.get(track_id)
        offered = any(s.uptrack is uptrack and s.label == label and s.active for s in self._slots)
        if not offered and not any(s.uptrack is uptrack and s.label == label for s in self._sources):
            self._sources.append(Source(uptrack, label, msid_stream, msid_track))

    def switch_source(self, label: str, track_id: str) -> bool:
        """Carry another published track on the m-line(s) of `label` without renegotiating: the
        copy continues the m-line's numbering from the new source's first keyframe (requested
        now). False when no m-line of the track's kind has this label, or the codec differs.
        Raises UnknownTrack."""
        uptrack = self._registry.get(track_id)
        switched = False
        same_codec = uptrack.codec.mimeType.lower()
        for source in self._sources:
            if source.label == label and source.uptrack.codec.mimeType.lower() == same_codec:
                source.uptrack = uptrack  # same label and codec: same kind
                switched = True
        for slot in self._slots:
            if slot.label != label or not slot.active or slot.uptrack.kind != uptrack.kind:
                continue
            if slot.uptrack.codec.mimeType.lower() != same_codec:
                continue
            switched = True
            if slot.uptrack is uptrack and slot.downtrack is not None and slot.downtrack.attached:
                continue
            slot.uptrack = uptrack
            if slot.downtrack is not None:
                slot.downtrack.switch(uptrack)
        return switched

    def remove_source(self, label: str) -> bool:
        """Stop forwarding every source with `label`; their m-lines go inactive on the next offer."""
        removed = False
        kept = [s for s in self._sources if s.label != label]
        if len(kept) != len(self._sources):
            self._sources = kept
            removed = True
        for slot in self._slots:
            if slot.label == label and slot.active:
                slot.active = False
                slot.transceiver.direction = "inactive"
                # The m-line stays (inactive) but gives up its `a=msid` track id: a member who
                # comes back under the same label gets a new m-line with that id, and a browser
                # refuses an offer where two m-lines name one track.
                slot.transceiver.sender.replaceTrack(IdleTrack(slot.uptrack.kind))
                removed = True
                downtrack, slot.downtrack = slot.downtrack, None
                if downtrack is not None:
                    downtrack.stop()
                    self.downtracks.remove(downtrack)
                    self._by_ssrc.pop(downtrack.ssrc, None)
        return removed

    def labels(self) -> set[str]:
        """Labels of the sources being forwarded, or to be offered next."""
        return {s.label for s in self._slots if s.active} | {s.label for s in self._sources}

    def slots(self) -> list[SlotInfo]:
        """Every m-line offered so far, in order (removed ones too, as they stay in the SDP)."""
        return [SlotInfo(s.transceiver.mid or "", s.uptrack.kind, s.label) for s in self._slots]

    def set_enabled(self, label: str, enabled: bool, kind: str | None = None) -> bool:
        """Pause or resume forwarding of the sources with `label` (of `kind` only, if given)
        without renegotiating; False if none is forwarded (a resumed copy restarts at the next keyframe)."""
        found = False
        for slot in self._slots:
            if kind is not None and slot.uptrack.kind != kind:
                continue
            if slot.label == label and slot.active and slot.downtrack is not None:
                found = True
                slot.downtrack.set_enabled(enabled)
        return found

    # -- SDP -------------------------------------------------------------------------------

    @property
    def negotiating(self) -> bool:
        """An offer is out and its answer has not been applied."""
        return self.pc.signalingState == "have-local-offer"

    async def offer(self, *, data_channel: str | None = None) -> str:
        """Offer the sources added since the last offer, after the m-lines offered before
        (removed ones as inactive); returns the offer SDP. Raises SdpError.

        A source whose publisher closed in the meantime is left out.
        """
        if self.closed:
            raise SdpError("the subscriber is closed", side="local")
        sources, self._sources = self._sources, []
        for source in sources:
            uptrack = source.uptrack
            if uptrack.closed:
                continue
            track = IdleTrack(uptrack.kind, source.msid_track)
            transceiver = self.pc.addTransceiver(track, direction="sendonly")
            if source.msid_stream:
                set_msid(transceiver.sender, source.msid_stream)
            take_over_rtcp(transceiver.sender)  # tick() sends the SRs, all in one packet
            transceiver.setCodecPreferences(codec_preferences(uptrack))
            self._slots.append(Slot(transceiver, uptrack, source.label))
        if data_channel is not None and self.data_channel is None:
            self.attach_channel(self.pc.createDataChannel(data_channel))
        try:
            offer = await self.pc.createOffer()
        except Exception as exc:
            raise SdpError(f"no offer could be made: {exc}", side="local") from exc
        await self._set_local(offer)
        if self._tap is None:
            transports = dtls_transports(self.pc)
            if transports:
                self._tap = TransportTap(
                    transports[0], on_rtcp=self._on_rtcp, on_ready=self._ready, on_moved=self._moved
                )
        return self.local_sdp()

    async def accept_answer(self, answer_sdp: str) -> None:
        """Apply the client's answer to the last offer. Raises SdpError, and CodecMismatch when
        the player refuses a source's codec (the other sources are forwarded regardless)."""
        if self.closed:
            raise SdpError("the subscriber is closed", side="local")
        if not self.negotiating:
            raise SdpError("no offer is waiting for an answer")
        await self._set_remote(answer_sdp, "answer")
        rejected = rejected_mids(answer_sdp)
        refused = []
        for slot in self._slots:
            transceiver, uptrack = slot.transceiver, slot.uptrack
            if not slot.active or slot.refused or slot.downtrack is not None:
                continue
            agreed = negotiated(transceiver)
            codec = agreed.codec
            if (
                transceiver.mid in rejected  # what a browser answers for a codec it lacks
                or codec is None
                or codec.payloadType is None
                or codec.mimeType.lower() != uptrack.codec.mimeType.lower()
            ):
                slot.refused = True  # it keeps its m-line and label; later answers skip it
                refused.append(uptrack.codec.mimeType)
                continue
            ssrc, rtx_ssrc = sender_ssrcs(transceiver.sender)
            downtrack = DownTrack(
                uptrack,
                mid=transceiver.mid,
                ssrc=ssrc,
                payload_type=codec.payloadType,
                rtx_ssrc=rtx_ssrc if agreed.rtx_payload_type is not None else None,
                rtx_payload_type=agreed.rtx_payload_type,
                extension=mid_extension(agreed.extensions.get(MID_URI), transceiver.mid or ""),
            )
            slot.downtrack = downtrack
            self.downtracks.append(downtrack)
            self._by_ssrc[ssrc] = downtrack
        if self._tap is not None and self._tap.ready:
            self._ready()
        if refused:
            raise CodecMismatch(f"the player does not accept {', '.join(sorted(set(refused)))}, the publisher's codec")

    def _ready(self) -> None:
        if self.closed or self._tap is None:
            return
        output = self._tap.rtp_output(self.config.engine)
        if output is None:
            return
        for downtrack in self.downtracks:
            downtrack.start(output)

    def _moved(self) -> None:
        """The player is at a new address: what went to the old one is lost, so its video
        restarts at a keyframe (NACKs could not reach back that far)."""
        for downtrack in self.downtracks:
            if downtrack.attached:
                downtrack.uptrack.request_keyframe("moved")

    # -- RTCP ----------------------------------------------------------------------------

    def _on_rtcp(self, data: bytes) -> None:
        self.rtcp_received += 1
        for packet in RtcpPacket.parse(data):
            if isinstance(packet, RtcpPsfbPacket) and packet.fmt in (RTCP_PSFB_PLI, RTCP_PSFB_FIR):
                target = packet.media_ssrc
                if packet.fmt == RTCP_PSFB_FIR and len(packet.fci) >= 4:
                    target = U32.unpack_from(packet.fci, 0)[0]
                downtrack = self._by_ssrc.get(target)
                if downtrack is not None:
                    downtrack.request_keyframe()
            elif isinstance(packet, RtcpRtpfbPacket) and packet.fmt == RTCP_RTPFB_NACK:
                downtrack = self._by_ssrc.get(packet.media_ssrc)
                if downtrack is not None:
                    downtrack.retransmit(packet.lost)

    def tick(self, now: float) -> None:
        """Housekeeping: about once a second (0.5-1.5 s, RFC 3550 6.2), one compound RTCP packet
        with the SRs of up to 30 copies (the publisher's clock, translated) and a CNAME.

        Closed when the player sends no RTCP (its receiver reports) for `media_timeout` seconds
        while it is being sent media (a player of idle slots sends nothing and is left to ICE
        consent)."""
        sent = 0
        for downtrack in self.downtracks:
            sent += downtrack.packets
        self.check_activity(now, self.rtcp_received, expecting=sent != self._sent_sample)
        self._sent_sample = sent
        if now < self._next_report or self._tap is None or not self._tap.ready:
            return
        self._next_report = now + random.uniform(*REPORT_INTERVAL)
        reports: list[tuple[int, bytes]] = []
        for downtrack in self.downtracks:
            report = downtrack.sender_report()
            if report is not None:
                ntp, rtp_ts = report
                ssrc = downtrack.ssrc
                reports.append((ssrc, sender_report(ssrc, ntp, rtp_ts, downtrack.packets, downtrack.octets)))
        if not reports:
            return
        if self._cname is None and self._slots:
            self._cname = sender_cname(self._slots[0].transceiver.sender)
        for start in range(0, len(reports), REPORTS_PER_PACKET):
            group = reports[start : start + REPORTS_PER_PACKET]
            packet = b"".join(sr for _, sr in group)
            if self._cname:
                packet += sdes_cname(group[0][0], self._cname)
            self._tap.send_rtcp(packet)

    def stats(self) -> list[TrackStats]:
        """Send counters of each forwarded copy (`track_id` is its source's)."""
        return [
            TrackStats(
                track_id=d.uptrack.track_id,
                kind=d.kind,
                codec=d.uptrack.codec.mimeType,
                packets=d.packets,
                octets=d.octets,
                keyframes=0,
                keyframe_requests=d.keyframe_requests,
                width=d.uptrack.width,
                height=d.uptrack.height,
            )
            for d in self.downtracks
        ]

    # -- lifecycle -----------------------------------------------------------------------

    def _close_children(self) -> None:
        for downtrack in self.downtracks:
            downtrack.stop()
        self.downtracks.clear()
        if self._tap is not None:
            self._tap.close()
            self._tap = None
        self._by_ssrc.clear()
        self._sources.clear()
        self._slots.clear()

    def dump(self) -> dict[str, Any]:
        out = super().dump()
        out["tracks"] = [d.dump() for d in self.downtracks]
        out["slots"] = [
            {
                "mid": s.transceiver.mid,
                "kind": s.uptrack.kind,
                "label": s.label,
                "trackId": s.uptrack.track_id,
                "active": s.active,
                "refused": s.refused,
            }
            for s in self._slots
        ]
        return out
