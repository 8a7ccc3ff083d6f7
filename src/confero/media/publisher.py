"""Publisher: the ingest peer of one stream; demultiplexes its RTP into UpTracks.

It answers the client's offer with one codec per track, taps the DTLS transport so that RTP
never enters aiortc's decoder, unwraps RTX, reads the publisher's sender reports, and sends
the publisher PLI, NACK, receiver reports and REMB. Its tracks join the Router's registry once
the answer is made and leave it when the Publisher closes; the domain knows them only as
`TrackInfo` values.
"""

from __future__ import annotations

import logging
import random
import time
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

from confero.media.aiortc_hooks import (
    TransportTap,
    dtls_transports,
    negotiated,
    never_decode,
    payload_types,
    restrict_codecs,
)
from confero.media.peer import OnClosed, OnConnected, OnData, Peer, PeerConfig
from confero.media.rtp import U32, payload_offset, unwrap_rtx
from confero.media.types import CodecMismatch, NoMedia, SdpError, TrackInfo, TrackLevel, TrackStats
from confero.media.uptrack import AUDIO_LEVEL_URI, TrackRegistry, UpTrack

logger = logging.getLogger(__name__)

RR_INTERVAL = 1.0

# Bound once: CPython 3.11 calls a method of an imported name (`U32.unpack_from(...)`) through
# a bound-method object made on each call; the hot path must not allocate.
_unpack_u32 = U32.unpack_from


class Publisher(Peer):
    """Ingest side of one published stream (at most one audio and one video track)."""

    role = "publisher"

    def __init__(
        self,
        config: PeerConfig,
        name: str,
        *,
        registry: TrackRegistry,
        codecs: tuple[str, ...] = ("video/VP8", "video/H264", "audio/opus"),
        on_connected: OnConnected | None = None,
        on_closed: OnClosed | None = None,
        on_data: OnData | None = None,
    ) -> None:
        super().__init__(config, name, on_connected=on_connected, on_closed=on_closed, on_data=on_data)
        self.pc.on("datachannel", self.attach_channel)
        self.allowed_codecs = tuple(c.lower() for c in codecs)
        self.uptracks: list[UpTrack] = []
        self._registry = registry
        self._registered = False
        self._offered = False
        self._routes: dict[int, tuple[UpTrack, bool]] = {}
        self._by_pt: dict[int, tuple[UpTrack, bool]] = {}
        self._taps: list[TransportTap] = []
        self._rtcp_ssrc = random.randrange(1, 1 << 32)
        self._last_rr = 0.0
        self.unknown_packets = 0

    def track(self, kind: str) -> UpTrack | None:
        for uptrack in self.uptracks:
            if uptrack.kind == kind:
                return uptrack
        return None

    def tracks(self) -> list[TrackInfo]:
        """The live tracks (once answered, until closed)."""
        if not self._registered or self.closed:
            return []
        return [u.info() for u in self.uptracks]

    def stats(self) -> list[TrackStats]:
        return [u.stats() for u in self.uptracks]

    def levels(self) -> list[TrackLevel]:
        """Each audio track's loudest level since the last call (RFC 6464; 127 when silent)."""
        return [TrackLevel(u.track_id, u.sample_level()) for u in self.uptracks if u.kind == "audio"]

    async def answer(self, offer_sdp: str) -> str:
        """Apply the client's offer; returns the answer SDP. Raises SdpError, NoMedia, CodecMismatch."""
        if self.closed:
            raise SdpError("the publisher is closed", side="local")
        if self._offered:
            raise SdpError("this publisher already has an offer")
        self._offered = True
        await self._set_remote(offer_sdp, "offer")
        if self.closed_meanwhile():
            raise SdpError("the publisher closed while answering", side="local")
        for transceiver in self.pc.getTransceivers():
            never_decode(transceiver.receiver)
            kind = transceiver.kind
            if kind not in ("audio", "video") or self.track(kind) is not None:
                restrict_codecs(transceiver, ())
                continue
            codecs = payload_types(transceiver)
            chosen = next((c for c in codecs.values() if c.mimeType.lower() in self.allowed_codecs), None)
            if chosen is None or chosen.payloadType is None:
                offered = sorted({c.mimeType for c in codecs.values() if not c.mimeType.lower().endswith("/rtx")})
                restrict_codecs(transceiver, ())
                if offered or kind == "video":
                    raise CodecMismatch(
                        f"no {kind} codec in common (offered {', '.join(offered) or 'none'}; "
                        f"server accepts {', '.join(self.allowed_codecs)})"
                    )
                continue
            payload_type: int = chosen.payloadType
            rtx = next(
                (
                    c.payloadType
                    for c in codecs.values()
                    if c.mimeType.lower().endswith("/rtx") and c.parameters.get("apt") == payload_type
                ),
                None,
            )
            restrict_codecs(transceiver, [payload_type] + ([rtx] if rtx is not None else []))
            nack = kind == "video" and any(fb.type == "nack" and not fb.parameter for fb in chosen.rtcpFeedback)
            uptrack = UpTrack(
                self._registry.new_id(self.name, kind),
                kind,
                chosen,
                rtx,
                nack=nack,
                send_pli=self._send_pli,
                send_nack=self._send_nack,
                engine=self.config.engine,
            )
            uptrack.audio_level_id = (
                negotiated(transceiver).extensions.get(AUDIO_LEVEL_URI, 0) if kind == "audio" else 0
            )
            self.uptracks.append(uptrack)
            self._by_pt[payload_type] = (uptrack, False)
            if rtx is not None:
                self._by_pt[rtx] = (uptrack, True)
        if not self.uptracks and self.pc.sctp is None:
            # A data channel alone is a publish too (the SDK's onlyDataChannel): no tracks.
            raise NoMedia("the offer has no audio, video or data channel")
        for dtls in dtls_transports(self.pc):
            self._taps.append(TransportTap(dtls, on_rtp=self._on_rtp, on_rtcp=self._on_rtcp))
        try:
            answer = await self.pc.createAnswer()
        except Exception as exc:
            raise SdpError(f"no answer could be made: {exc}", side="local") from exc
        await self._set_local(answer)
        if self.closed_meanwhile():  # closed while the answer was made: its tracks never go live
            self._close_children()  # what was made after close() released the rest
            raise SdpError("the publisher closed while answering", side="local")
        for uptrack in self.uptracks:
            self._registry.add(uptrack)
        self._registered = True
        return self.local_sdp()

    # -- hot path ------------------------------------------------------------------------

    def _on_rtp(self, data: bytes) -> None:
        if len(data) < 12:
            self.unknown_packets += 1
            return
        route = self._routes.get(_unpack_u32(data, 8)[0])
        if route is None:
            route = self._learn(data)
            if route is None:
                self.unknown_packets += 1
                return
        uptrack, is_rtx = route
        if is_rtx:
            offset = payload_offset(data)
            if offset < 0 or uptrack.ssrc is None:
                return
            unwrapped = unwrap_rtx(data, offset, uptrack.ssrc, uptrack.payload_type)
            if unwrapped is None:
                return
            data = unwrapped
        uptrack.receive(data)

    def _learn(self, data: bytes) -> tuple[UpTrack, bool] | None:
        ssrc: int = U32.unpack_from(data, 8)[0]
        route = self._by_pt.get(data[1] & 0x7F)
        if route is None:
            return None
        uptrack, is_rtx = route
        if not is_rtx:
            previous, uptrack.ssrc = uptrack.ssrc, ssrc
            if previous is not None and previous != ssrc:
                logger.info("publisher %s: %s source changed SSRC", self.name, uptrack.kind)
                self._routes.pop(previous, None)
                uptrack.reset_source()  # its keyframe request goes to the new SSRC
        self._routes[ssrc] = route
        return route

    # -- RTCP ----------------------------------------------------------------------------

    def _on_rtcp(self, data: bytes) -> None:
        self.rtcp_received += 1
        for packet in RtcpPacket.parse(data):
            if isinstance(packet, RtcpSrPacket):
                route = self._routes.get(packet.ssrc)
                if route is not None and not route[1]:
                    info = packet.sender_info
                    route[0].on_sender_report(info.ntp_timestamp, info.rtp_timestamp)

    def _send_rtcp(self, payload: bytes) -> bool:
        for tap in self._taps:
            if tap.ready:
                tap.send_rtcp(payload)
                return True
        return False

    def _send_pli(self, uptrack: UpTrack) -> bool:
        """One PLI for `uptrack`; only its KeyframeRequester calls this (it rate-limits)."""
        if uptrack.ssrc is None or self.closed:
            return False
        packet = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=self._rtcp_ssrc, media_ssrc=uptrack.ssrc)
        return self._send_rtcp(bytes(packet))

    def _send_nack(self, uptrack: UpTrack, lost: list[int]) -> None:
        if uptrack.ssrc is None or not lost:
            return
        packet = RtcpRtpfbPacket(fmt=RTCP_RTPFB_NACK, ssrc=self._rtcp_ssrc, media_ssrc=uptrack.ssrc)
        packet.lost = sorted(lost)
        self._send_rtcp(bytes(packet))

    def tick(self, now: float) -> None:
        """Housekeeping: NACK retries, keyframe retries while copies wait; receiver reports and
        REMB once a second; closed when its media stopped (`check_activity`; a publisher of a
        data channel alone is left to ICE consent)."""
        if self.uptracks:
            activity = self.rtcp_received
            for uptrack in self.uptracks:
                activity += uptrack.packets
            self.check_activity(now, activity)
        for uptrack in self.uptracks:
            uptrack.retry_nacks()
            if uptrack.pending:
                uptrack.request_keyframe("retry")
            elif uptrack.requester is not None:
                uptrack.requester.settle()  # a player's request the rate limit held back
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
            self._registry.remove(uptrack)
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
