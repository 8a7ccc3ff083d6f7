"""Publisher: the ingest peer of one stream; demultiplexes its RTP into UpTracks.

It answers the client's offer with one codec per track, taps the DTLS transport so that RTP
never enters aiortc's decoder, unwraps RTX, reads the publisher's sender reports, and sends
the publisher PLI, NACK, receiver reports and REMB.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import Any

from aiortc.rtp import (
    RTCP_PSFB_APP,
    RTCP_PSFB_PLI,
    RTCP_RTPFB_NACK,
    RtcpPacket,
    RtcpPsfbPacket,
    RtcpReceiverInfo,
    RtcpRrPacket,
    RtcpRtpfbPacket,
    RtcpSrPacket,
    pack_remb_fci,
)

from confero.media import aiortc_hooks, rtp
from confero.media.peer import MediaError, Peer, PeerConfig
from confero.media.uptrack import UpTrack

logger = logging.getLogger(__name__)

PLI_INTERVAL = 0.3  # at most one PLI per track in this many seconds
RR_INTERVAL = 1.0


class Publisher(Peer):
    """Ingest side of one published stream (at most one audio and one video track)."""

    role = "publisher"

    def __init__(
        self,
        config: PeerConfig,
        name: str,
        *,
        codecs: tuple[str, ...] = ("video/VP8", "video/H264", "audio/opus"),
        on_closed: Callable[[Peer, str], None] | None = None,
        on_connected: Callable[[Peer], None] | None = None,
        on_data: Callable[[Peer, str | bytes], None] | None = None,
    ) -> None:
        super().__init__(config, name, on_closed=on_closed, on_connected=on_connected, on_data=on_data)
        self.pc.on("datachannel", self.attach_channel)
        self.allowed_codecs = tuple(c.lower() for c in codecs)
        self.uptracks: list[UpTrack] = []
        self._routes: dict[int, tuple[UpTrack, bool]] = {}
        self._by_pt: dict[int, tuple[UpTrack, bool]] = {}
        self._taps: list[aiortc_hooks.TransportTap] = []
        self._rtcp_ssrc = random.randrange(1, 1 << 32)
        self._last_pli: dict[int, float] = {}
        self._last_rr = 0.0
        self.unknown_packets = 0

    def track(self, kind: str) -> UpTrack | None:
        for uptrack in self.uptracks:
            if uptrack.kind == kind:
                return uptrack
        return None

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer and return the answer SDP."""
        await self._set_remote(offer_sdp, "offer")
        for transceiver in self.pc.getTransceivers():
            aiortc_hooks.never_decode(transceiver.receiver)
            kind = transceiver.kind
            if kind not in ("audio", "video") or self.track(kind) is not None:
                aiortc_hooks.restrict_codecs(transceiver, ())
                continue
            codecs = aiortc_hooks.payload_types(transceiver)
            chosen = next((c for c in codecs.values() if c.mimeType.lower() in self.allowed_codecs), None)
            if chosen is None:
                offered = sorted({c.mimeType for c in codecs.values() if not c.mimeType.lower().endswith("/rtx")})
                aiortc_hooks.restrict_codecs(transceiver, ())
                if offered or kind == "video":
                    raise MediaError(
                        "unsupported_codec",
                        f"no {kind} codec in common (offered {', '.join(offered) or 'none'}; "
                        f"server accepts {', '.join(self.allowed_codecs)})",
                    )
                continue
            rtx = next(
                (
                    c.payloadType
                    for c in codecs.values()
                    if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == chosen.payloadType
                ),
                None,
            )
            aiortc_hooks.restrict_codecs(transceiver, [chosen.payloadType] + ([rtx] if rtx is not None else []))
            nack = kind == "video" and any(fb.type == "nack" and not fb.parameter for fb in chosen.rtcpFeedback)
            uptrack = UpTrack(
                kind,
                chosen,
                rtx,
                nack=nack,
                request_keyframe=self._send_pli,
                send_nack=self._send_nack,
                engine=self.config.engine,
            )
            self.uptracks.append(uptrack)
            self._by_pt[chosen.payloadType] = (uptrack, False)
            if rtx is not None:
                self._by_pt[rtx] = (uptrack, True)
        if not self.uptracks:
            raise MediaError("notSetRemoteDescription", "the offer has no audio or video track")
        for dtls in aiortc_hooks.dtls_transports(self.pc):
            self._taps.append(aiortc_hooks.TransportTap(dtls, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp))
        answer = await self.pc.createAnswer()
        await self._set_local(answer)
        return self.local_sdp()

    # -- hot path ------------------------------------------------------------------------

    def _on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            self.unknown_packets += 1
            return
        route = self._routes.get(rtp.U32.unpack_from(data, 8)[0])
        if route is None:
            route = self._learn(data)
            if route is None:
                self.unknown_packets += 1
                return
        uptrack, is_rtx = route
        if is_rtx:
            offset = rtp.payload_offset(data)
            if offset < 0 or uptrack.ssrc is None:
                return
            unwrapped = rtp.unwrap_rtx(data, offset, uptrack.ssrc, uptrack.payload_type)
            if unwrapped is None:
                return
            data = unwrapped
        uptrack.receive(data)

    def _learn(self, data: bytes) -> tuple[UpTrack, bool] | None:
        ssrc = rtp.U32.unpack_from(data, 8)[0]
        route = self._by_pt.get(data[1] & 0x7F)
        if route is None:
            return None
        uptrack, is_rtx = route
        if not is_rtx:
            if uptrack.ssrc is not None and uptrack.ssrc != ssrc:
                logger.info("publisher %s: %s source changed SSRC", self.name, uptrack.kind)
                self._routes.pop(uptrack.ssrc, None)
                uptrack.reset_source()
            uptrack.ssrc = ssrc
        self._routes[ssrc] = route
        return route

    # -- RTCP ----------------------------------------------------------------------------

    def _on_rtcp(self, data: bytes) -> None:
        for packet in RtcpPacket.parse(data):
            if isinstance(packet, RtcpSrPacket):
                route = self._routes.get(packet.ssrc)
                if route is not None and not route[1]:
                    info = packet.sender_info
                    route[0].on_sender_report(info.ntp_timestamp, info.rtp_timestamp)

    def _send_rtcp(self, payload: bytes) -> None:
        for tap in self._taps:
            if tap.ready:
                tap.send_rtcp(payload)
                return

    def _send_pli(self, uptrack: UpTrack) -> None:
        if uptrack.ssrc is None:
            return
        now = time.monotonic()
        if now - self._last_pli.get(uptrack.ssrc, 0.0) < PLI_INTERVAL:
            return
        self._last_pli[uptrack.ssrc] = now
        packet = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=uptrack.ssrc)
        self._send_rtcp(bytes(packet))

    def _send_nack(self, uptrack: UpTrack, lost: list[int]) -> None:
        if uptrack.ssrc is None or not lost:
            return
        packet = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self._rtcp_ssrc, media_ssrc=uptrack.ssrc)
        packet.lost = sorted(lost)
        self._send_rtcp(bytes(packet))

    def tick(self, now: float) -> None:
        """Housekeeping: NACK retries; receiver reports and REMB once a second."""
        for uptrack in self.uptracks:
            uptrack.retry_nacks()
        if now - self._last_rr < RR_INTERVAL:
            return
        self._last_rr = now
        reports = []
        for uptrack in self.uptracks:
            if uptrack.ssrc is None:
                continue
            fraction, lost, highest, jitter = uptrack.receiver_report()
            lsr = dlsr = 0
            if uptrack.has_sender_report and uptrack.clock_ref is not None:
                wall, ntp, _ = uptrack.clock_ref
                lsr = (ntp >> 16) & 0xFFFFFFFF
                dlsr = int((time.time() - wall) * 65536) & 0xFFFFFFFF
            reports.append(
                RtcpReceiverInfo(
                    ssrc=uptrack.ssrc,
                    fraction_lost=fraction,
                    packets_lost=lost,
                    highest_sequence=highest,
                    jitter=jitter,
                    lsr=lsr,
                    dlsr=dlsr,
                )
            )
        if not reports:
            return
        payload = bytes(RtcpRrPacket(ssrc=self._rtcp_ssrc, reports=reports))
        video = [u.ssrc for u in self.uptracks if u.kind == "video" and u.ssrc is not None]
        if video:
            remb = RtcpPsfbPacket(
                fmt=RTCP_PSFB_APP,
                ssrc=self._rtcp_ssrc,
                media_ssrc=0,
                fci=pack_remb_fci(self.config.max_bitrate, video),
            )
            payload += bytes(remb)
        self._send_rtcp(payload)

    # -- lifecycle -----------------------------------------------------------------------

    def _close_children(self) -> None:
        for uptrack in self.uptracks:
            uptrack.close()
        for tap in self._taps:
            tap.close()
        self._taps.clear()
        self._routes.clear()

    def dump(self) -> dict[str, Any]:
        out = super().dump()
        out["tracks"] = [u.dump() for u in self.uptracks]
        out["unknownPackets"] = self.unknown_packets
        return out
