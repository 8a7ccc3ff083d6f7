"""RTCP between the SFU and both ends: publisher RTX unwrapped, sender reports for A/V sync,
receiver reports towards the publisher."""

from __future__ import annotations

import random
import time

import pytest
from aiortc.rtp import RtcpPacket, RtcpSrPacket

from confero.server import Server
from tests.support import eventually
from tests.support.clients import Clients

# Both fan-out engines (compiled and pure Python) forward, retransmit and report the same.
pytestmark = [pytest.mark.integration, pytest.mark.parametrize("server", ["compiled", "python"], indirect=True)]

NTP_EPOCH = 2208988800
#: Longer than the server's PLI rate limit (0.3 s per track).
QUIET = 0.5


def ntp_to_unix(ntp: int) -> float:
    return (ntp >> 32) - NTP_EPOCH + (ntp & 0xFFFFFFFF) / (1 << 32)


def ssrc_clock_rates(sdp: str) -> dict[int, int]:
    """SSRC -> RTP clock rate, from the server's offer (video 90 kHz, Opus 48 kHz)."""
    rates: dict[int, int] = {}
    rate = 0
    for line in sdp.splitlines():
        if line.startswith("m="):
            rate = 90000 if line.startswith("m=video") else 48000
        elif line.startswith("a=ssrc:"):
            rates[int(line[7:].split()[0])] = rate
    return rates


def dtls_of(pc: object) -> object:
    return pc.getTransceivers()[0].receiver.transport  # type: ignore[attr-defined]


async def test_publisher_loss_is_recovered_through_nack_and_rtx(server: Server, clients: Clients) -> None:
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "rtx", codec="VP8", with_audio=False)
    player = clients.player(play_sock, "rtx")
    await publisher.start()
    await pub_sock.wait_for(definition="publish_started", stream_id="rtx")
    await player.start()
    await player.wait_frames(10)
    # Drop 5% of the publisher's outgoing video RTP before it reaches the server.
    pair = dtls_of(publisher.pc).transport._connection._nominated[1]
    transport = pair.protocol.transport
    original = transport.sendto
    rng = random.Random(3)
    dropped = 0

    def lossy_sendto(data: bytes, addr: object = None) -> None:
        nonlocal dropped
        is_rtp = 127 < data[0] < 192 and not 191 < data[1] < 224
        if is_rtp and (data[1] & 0x7F) == 97 and rng.random() < 0.05:
            dropped += 1
            return
        original(data, addr)

    transport.sendto = lossy_sendto
    before = player.video_frames
    await player.wait_frames(before + 90, timeout=30)
    transport.sendto = original
    (pub,) = server.router.dump()["publishers"]
    video = next(t for t in pub["tracks"] if t["kind"] == "video")
    assert dropped > 0
    # The server asked for the lost packets and got them back as RTX, unwrapped.
    assert video["recovered"] > 0, video
    assert player.decode_errors == 0


async def test_sender_and_receiver_reports(server: Server, clients: Clients) -> None:
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "sync", codec="VP8")
    player = clients.player(play_sock, "sync")
    await publisher.start()
    await pub_sock.wait_for(definition="publish_started", stream_id="sync")
    await player.start()
    await player.wait_frames(5, 5)
    # Watch the player's side: SRs from the server, and every RTP packet's timestamp.
    dtls = dtls_of(player.pc)
    reports: dict[int, tuple[int, int]] = {}
    last_rtp: dict[int, tuple[int, float]] = {}
    original_rtcp, original_rtp = dtls._handle_rtcp_data, dtls._handle_rtp_data

    async def rtcp(data: bytes) -> None:
        for packet in RtcpPacket.parse(data):
            if isinstance(packet, RtcpSrPacket):
                reports[packet.ssrc] = (packet.sender_info.ntp_timestamp, packet.sender_info.rtp_timestamp)
        await original_rtcp(data)

    async def rtp(data: bytes, arrival_time_ms: int) -> None:
        ssrc = int.from_bytes(data[8:12], "big")
        last_rtp[ssrc] = (int.from_bytes(data[4:8], "big"), time.time())
        await original_rtp(data, arrival_time_ms)

    dtls._handle_rtcp_data, dtls._handle_rtp_data = rtcp, rtp
    try:
        await eventually(lambda: len(reports) >= 2, timeout=10, what="sender reports of both tracks")
    finally:
        dtls._handle_rtcp_data, dtls._handle_rtp_data = original_rtcp, original_rtp
    assert len(reports) == 2, reports  # one SR stream per forwarded track (audio, video)

    # Each SR maps the track's RTP clock to wall-clock time; with the publisher's clock
    # translated, a just-received packet maps to about "now" on both tracks (A/V sync).
    rates = ssrc_clock_rates(player.offer_sdp or "")
    capture_times = []
    for ssrc, (ntp, rtp_ts) in reports.items():
        ts, arrived = last_rtp[ssrc]
        delta = ((ts - rtp_ts + (1 << 31)) & 0xFFFFFFFF) - (1 << 31)
        capture_times.append(ntp_to_unix(ntp) + delta / rates[ssrc] - arrived)
    # Both tracks' packets map to within half a second of their arrival, and of each other.
    assert all(abs(c) < 0.5 for c in capture_times), capture_times
    assert abs(capture_times[0] - capture_times[1]) < 0.2, capture_times

    # Receiver reports reach the publisher: its senders see remote-inbound statistics.
    stats = []
    for sender in publisher.pc.getSenders():
        report = await sender.getStats()
        stats += [s for s in report.values() if s.type == "remote-inbound-rtp"]
    assert {s.kind for s in stats} == {"audio", "video"}, stats
    assert all(s.packetsLost == 0 for s in stats)


async def test_player_pli_reaches_the_publisher(server: Server, clients: Clients) -> None:
    """A player's PLI for its video copy is counted on the DownTrack and becomes a PLI to the
    publisher (a keyframe request on the publisher's video sender)."""
    from aiortc.rtp import RTCP_PSFB_PLI, RtcpPsfbPacket

    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "pli", codec="VP8", with_audio=False)
    player = clients.player(play_sock, "pli")
    await publisher.start()
    await pub_sock.wait_for(definition="publish_started", stream_id="pli")
    (sender,) = [s for s in publisher.pc.getSenders() if s.track is not None and s.track.kind == "video"]
    requests: list[float] = []
    original = sender._send_keyframe
    sender._send_keyframe = lambda: (requests.append(time.monotonic()), original())  # type: ignore[method-assign]
    await player.start()
    await player.wait_frames(5)
    (subscriber,) = server.router.subscribers
    (downtrack,) = [d for d in subscriber.downtracks if d.kind == "video"]
    # The join's own keyframe request reached the publisher; the server rate-limits PLIs per
    # track (0.3 s), so the test's PLI goes out once that request is QUIET seconds old.
    await eventually(lambda: requests, timeout=5, what="the join's keyframe request at the publisher")
    await eventually(
        lambda: time.monotonic() - requests[-1] >= QUIET, timeout=5, what=f"{QUIET} s without a keyframe request"
    )
    requests.clear()
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0x5EED, media_ssrc=downtrack.ssrc)
    await dtls_of(player.pc)._send_rtp(bytes(pli))  # type: ignore[attr-defined]
    await eventually(lambda: requests, timeout=5, what="the PLI at the publisher")
    assert downtrack.keyframe_requests == 1
    assert requests, "the publisher got no PLI"
