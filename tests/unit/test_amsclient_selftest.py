"""Self-test of the media half of ``tests/support/amsclient.py`` -- no Confero server involved.

Two aiortc peers are wired directly in-process (offer/answer handed over as Python
objects, candidates embedded in the SDP) over 127.0.0.1, using exactly the pieces
Publisher/Player use: :func:`build_publisher_pc`, :class:`MediaCounter`,
:class:`DecodeErrorCounter` and :class:`LossInjector`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import AsyncIterator
from dataclasses import dataclass

import pytest
from aiortc import RTCPeerConnection

from tests.support.amsclient import (
    TASK_PREFIX,
    DecodeErrorCounter,
    LossInjector,
    MediaCounter,
    PublisherMedia,
    build_publisher_pc,
    codec_preferences,
    force_loopback_ice,
    is_video_rtp,
    new_peer_connection,
    wait_for_connected,
)


@pytest.fixture(autouse=True)
def _loopback() -> object:
    with force_loopback_ice() as installed:
        yield installed


@dataclass
class Link:
    sender: PublisherMedia
    receiver: RTCPeerConnection
    counter: MediaCounter
    decode_errors: DecodeErrorCounter
    loss: LossInjector | None


async def _connect(codec: str, drop_rate: float = 0.0) -> Link:
    sender = build_publisher_pc(codec)
    receiver = new_peer_connection()
    counter = MediaCounter(name=f"selftest-{codec}")
    counter.attach(receiver)
    decode_errors = DecodeErrorCounter(receiver).attach()
    link = Link(sender, receiver, counter, decode_errors, None)
    try:
        await sender.pc.setLocalDescription(await sender.pc.createOffer())
        await receiver.setRemoteDescription(sender.pc.localDescription)
        await receiver.setLocalDescription(await receiver.createAnswer())
        await sender.pc.setRemoteDescription(receiver.localDescription)
        await asyncio.gather(wait_for_connected(sender.pc, 10), wait_for_connected(receiver, 10))
        if drop_rate > 0:
            # seed 1234: the 3rd video packet is already dropped, so `dropped > 0` is
            # deterministic once a handful of packets arrived.
            link.loss = LossInjector(receiver, drop_rate, seed=1234)
            link.loss.install()
    except BaseException:
        await _teardown(link)
        raise
    return link


async def _teardown(link: Link) -> None:
    if link.loss is not None:
        link.loss.uninstall()
    await link.counter.aclose()
    link.decode_errors.detach()
    link.sender.stop_tracks()
    await link.sender.pc.close()
    await link.receiver.close()
    leaked = [t for t in asyncio.all_tasks() if t.get_name().startswith(TASK_PREFIX) and not t.done()]
    assert not leaked, leaked


@pytest.fixture
async def links() -> AsyncIterator[list[Link]]:
    made: list[Link] = []
    yield made
    for link in made:
        await _teardown(link)


def _negotiated_video(link: Link) -> list[str]:
    return [
        f"{c.mimeType};{c.parameters}" for t in link.receiver.getTransceivers() if t.kind == "video" for c in t._codecs
    ]


def test_codec_preferences() -> None:
    vp8 = codec_preferences("video", "VP8")
    assert [c.mimeType for c in vp8] == ["video/VP8", "video/rtx"]
    h264 = codec_preferences("video", "H264")
    assert h264[-1].mimeType == "video/rtx"
    assert h264[:-1] and all(
        c.mimeType == "video/H264" and c.parameters["packetization-mode"] == "1" for c in h264[:-1]
    )
    assert [c.mimeType for c in codec_preferences("audio", "opus")] == ["audio/opus"]
    with pytest.raises(ValueError):
        codec_preferences("video", "AV1")


def test_rtp_classifier() -> None:
    rtp = bytes([0x80, 97]) + bytes(10)
    marker = bytes([0x80, 0x80 | 97]) + bytes(10)
    rtcp_rr = bytes([0x81, 201]) + bytes(10)
    dtls = bytes([22, 0xFE]) + bytes(10)
    assert is_video_rtp(rtp, {97}) and is_video_rtp(marker, {97})
    assert not is_video_rtp(rtp, {96})  # audio PT
    assert not is_video_rtp(rtcp_rr, {97, 201 & 0x7F})
    assert not is_video_rtp(dtls, {97})
    assert not is_video_rtp(rtp[:8], {97})


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_direct_link_decodes(codec: str, links: list[Link]) -> None:
    link = await _connect(codec)
    links.append(link)
    negotiated = _negotiated_video(link)
    assert negotiated and all(n.startswith(f"video/{codec}") or n.startswith("video/rtx") for n in negotiated), (
        negotiated
    )

    await link.counter.wait_frames(30, 1, timeout=15)
    assert link.counter.video_frames >= 30
    assert link.counter.audio_frames > 0
    assert link.counter.first_video_size == (320, 240)
    assert link.counter.first_video_at is not None
    assert link.decode_errors.count == 0, link.decode_errors.messages
    kinds = sorted(t.kind for t in link.counter.tracks)
    assert kinds == ["audio", "video"]

    # Decode-error attribution: the counter knows this pc's two decoder threads, so a
    # matching warning from any other thread (e.g. another player's) is not counted.
    idents = link.decode_errors.decoder_thread_idents()
    assert idents is not None and len(idents) == 2
    unbound = DecodeErrorCounter().attach()
    try:
        logging.getLogger("aiortc.rtcrtpreceiver").warning(
            "RTCRtpReceiver(video) failed to decode VP8 frame: simulated"
        )
    finally:
        unbound.detach()
    assert unbound.count == 1
    assert link.decode_errors.count == 0


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_direct_link_survives_packet_loss(codec: str, links: list[Link]) -> None:
    link = await _connect(codec, drop_rate=0.05)
    links.append(link)
    assert link.loss is not None
    await link.counter.wait_frames(60, 1, timeout=15)
    assert link.loss.dropped > 0, (link.loss.video_packets, link.loss.video_payload_types())
    assert link.loss.video_packets > link.loss.dropped
    assert link.counter.audio_frames > 0


# ----------------------------------------------------------------------------------
# Signaling half, against a tiny in-test fake AMS (NOT Confero): proves AmsSocket,
# Publisher and Player (takeCandidate queueing before the SDP, idMapping, errors).


class FakeAms:
    """Minimal AMS-like relay: one publisher stream fanned out to players.

    Server SDPs are sent *without* candidates; the candidates are trickled as
    ``takeCandidate`` messages *before* the SDP, so clients must queue them.
    """

    def __init__(self) -> None:
        from aiortc.contrib.media import MediaRelay

        self.relay = MediaRelay()
        self.sources: dict[str, list[object]] = {}
        self.pcs: list[RTCPeerConnection] = []
        self.runner: object | None = None
        self.port = 0

    async def start(self) -> None:
        from aiohttp import web

        app = web.Application()
        app.router.add_get("/{app}/websocket", self._ws)
        runner = web.AppRunner(app)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        self.runner = runner
        self.port = runner.addresses[0][1]

    async def stop(self) -> None:
        for pc in self.pcs:
            await pc.close()
        await self.runner.cleanup()  # type: ignore[union-attr]

    @staticmethod
    async def _send_sdp(ws: object, stream_id: str, pc: RTCPeerConnection, **extra: object) -> None:
        desc = pc.localDescription
        lines = desc.sdp.splitlines()
        for line in lines:
            if line.startswith("a=candidate:"):
                await ws.send_json(  # type: ignore[attr-defined]
                    {"command": "takeCandidate", "streamId": stream_id, "label": 0, "id": "0", "candidate": line[2:]}
                )
        sdp = "\r\n".join(x for x in lines if not x.startswith(("a=candidate:", "a=end-of-candidates"))) + "\r\n"
        await ws.send_json(  # type: ignore[attr-defined]
            {"command": "takeConfiguration", "streamId": stream_id, "type": desc.type, "sdp": sdp, **extra}
        )

    async def _ws(self, request: object) -> object:
        from aiohttp import web
        from aiortc import RTCSessionDescription

        ws = web.WebSocketResponse()
        await ws.prepare(request)  # type: ignore[arg-type]
        pcs: dict[str, RTCPeerConnection] = {}
        async for frame in ws:
            try:
                msg = frame.json()
            except ValueError:
                await ws.send_json({"command": "error", "definition": "badJson"})
                continue
            cmd, sid = msg.get("command"), msg.get("streamId")
            if cmd == "publish":
                if msg.get("token") == "bad":
                    await ws.send_json({"command": "error", "definition": "unauthorized_access", "streamId": sid})
                else:
                    await ws.send_json({"command": "start", "streamId": sid})
            elif cmd == "takeConfiguration" and msg["type"] == "offer":
                pc = pcs[sid] = new_peer_connection()
                self.pcs.append(pc)
                tracks: list[object] = []
                self.sources[sid] = tracks
                pc.on("track", tracks.append)
                await pc.setRemoteDescription(RTCSessionDescription(msg["sdp"], "offer"))
                await pc.setLocalDescription(await pc.createAnswer())
                await self._send_sdp(ws, sid, pc)
                await ws.send_json({"command": "notification", "definition": "publish_started", "streamId": sid})
            elif cmd == "play":
                if sid not in self.sources:
                    await ws.send_json(
                        {"command": "error", "definition": "no_stream_exist", "error_code": "404", "streamId": sid}
                    )
                    continue
                pc = pcs[sid] = new_peer_connection()
                self.pcs.append(pc)
                for track in self.sources[sid]:
                    pc.addTransceiver(self.relay.subscribe(track), direction="sendonly")
                await pc.setLocalDescription(await pc.createOffer())
                mapping = {t.mid: f"ARDAMS{t.kind[0]}{sid}" for t in pc.getTransceivers()}
                await self._send_sdp(ws, sid, pc, idMapping=mapping)
            elif cmd == "takeConfiguration" and msg["type"] == "answer":
                await pcs[sid].setRemoteDescription(RTCSessionDescription(msg["sdp"], "answer"))
                await ws.send_json({"command": "notification", "definition": "play_started", "streamId": sid})
            elif cmd == "stop":
                pc = pcs.pop(sid, None)
                if pc is not None:
                    await pc.close()
                await ws.send_json({"command": "notification", "definition": "play_finished", "streamId": sid})
            elif cmd == "ping":
                await ws.send_json({"command": "pong"})
        return ws


@pytest.fixture
async def fake_ams() -> AsyncIterator[FakeAms]:
    server = FakeAms()
    await server.start()
    yield server
    await server.stop()


async def test_signaling_against_fake_ams(fake_ams: FakeAms) -> None:
    from tests.support.amsclient import AmsError, AmsSocket, Player, Publisher

    async with (
        AmsSocket(fake_ams.port, "LiveApp", query="target=origin") as sock,
        AmsSocket(fake_ams.port, "LiveApp") as sock2,
    ):
        await sock.send({"command": "ping"})
        assert (await sock.recv())["command"] == "pong"
        await sock.send_raw("{not json")
        assert (await sock.wait_for("error", "badJson"))["definition"] == "badJson"

        bad = Publisher(sock, "s1", token="bad")
        with pytest.raises(AmsError) as info:
            await bad.start(timeout=5)
        assert info.value.definition == "unauthorized_access"
        await bad.close()

        missing = Player(sock2, "nope")
        with pytest.raises(AmsError):
            await missing.start(timeout=5)
        await missing.close()

        pub = Publisher(sock, "s1", codec="H264", extra={"streamName": "cam"})
        player = Player(sock2, "s1", drop_rate=0.05, seed=7)  # 9th packet dropped
        try:
            await pub.start()
            assert pub.candidates_applied > 0 and not pub.candidate_errors
            await sock.wait_for("notification", "publish_started", stream_id="s1")
            await player.start()
            assert player.candidates_applied > 0 and not player.candidate_errors
            assert sorted(player.id_mapping.values()) == ["ARDAMSas1", "ARDAMSvs1"]
            assert player.offer_sdp and "a=candidate" not in player.offer_sdp
            await player.wait_frames(30, 1, timeout=15)
            assert player.first_video_size == (320, 240)
            assert player.frames_for("ARDAMSvs1") >= 30
            assert player.dropped > 0
            # The error for "nope" arrived on sock2 but was never claimed there:
            assert sock2.find("error", "no_stream_exist")
            # Claimed-once semantics: publish_started was claimed above.
            with pytest.raises(TimeoutError):
                await sock.wait_for("notification", "publish_started", timeout=0.1)
            assert len(sock.find("notification", "publish_started")) == 1
            assert player.notifications[0]["definition"] == "play_started"
            await player.stop()
            await sock2.wait_for("notification", "play_finished", stream_id="s1")
        finally:
            await player.close()
            await pub.stop()
            await pub.close()  # idempotent
    assert sock.closed.is_set()
    leaked = [t for t in asyncio.all_tasks() if t.get_name().startswith(TASK_PREFIX)]
    assert not leaked, leaked
