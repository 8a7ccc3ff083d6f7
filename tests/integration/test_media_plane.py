"""The media plane through the API the domain uses (`domain/media.py`), with no signaling.

A real Router, built as `confero.server` builds it (loopback ICE, the compiled fan-out), real
aiortc clients publishing VP8 video and Opus audio through `Publisher.answer()`, and real
aiortc players fed through `Subscriber.add_source(track_id)`: frames are decoded on the
player. Candidates are trickled both ways, so `local_candidates()` and `add_candidate()` are
what connects the peers.
"""

from __future__ import annotations

import asyncio
import gc
import re
import time
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection, RTCSessionDescription
from aiortc.rtp import RTCP_PSFB_FIR, RTCP_PSFB_PLI, RtcpPsfbPacket

from confero.domain.media import MediaPlane, MediaPublisher, MediaSubscriber
from confero.media import (
    BadCandidate,
    CodecMismatch,
    IcePolicy,
    NoMedia,
    PeerConfig,
    Router,
    SdpError,
    SlotInfo,
    TrackInfo,
    UnknownTrack,
    aiortc_hooks,
    fanout,
    rtp,
)
from confero.media.aiortc_hooks import TransportTap
from confero.server import codec_mimes
from tests.conftest import assert_no_pending_tasks
from tests.support import eventually
from tests.support.amsclient import (
    MediaCounter,
    PublisherMedia,
    _candidate_from_message,
    build_publisher_pc,
    new_peer_connection,
    wait_for_connected,
)

pytestmark = pytest.mark.integration

MEDIA_SRC = Path(__file__).resolve().parents[2] / "src" / "confero" / "media"
EMPTY = {"publishers": [], "subscribers": [], "tracks": []}


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


async def until(predicate: Callable[[], object], what: str, within: float = 10.0) -> None:
    await eventually(predicate, timeout=within, what=what)


@dataclass
class Owner:
    """What the domain gives a media peer: three callbacks, recorded."""

    connected: int = 0
    closed: list[str] = field(default_factory=list)
    data: list[str | bytes] = field(default_factory=list)

    def on_connected(self) -> None:
        self.connected += 1

    def on_closed(self, reason: str) -> None:
        self.closed.append(reason)

    def on_data(self, data: str | bytes) -> None:
        self.data.append(data)

    def callbacks(self) -> dict[str, Any]:
        return {"on_connected": self.on_connected, "on_closed": self.on_closed, "on_data": self.on_data}


def without_candidates(sdp: str) -> tuple[str, list[tuple[str, str | None, int]]]:
    """The SDP with its candidate lines taken out, and those lines as (candidate, mid, index)
    to trickle: what a browser does."""
    kept, trickled = [], []
    index, mid = -1, None
    for line in sdp.splitlines():
        if line.startswith("m="):
            index += 1
            mid = None
        elif line.startswith("a=mid:"):
            mid = line[6:]
        if line.startswith("a=candidate:"):
            trickled.append((line[2:], mid, index))
        elif line != "a=end-of-candidates":
            kept.append(line)
    return "\r\n".join(kept) + "\r\n", trickled


async def trickle_to_client(pc: RTCPeerConnection, peer: MediaPublisher | MediaSubscriber) -> None:
    for candidate in peer.local_candidates():
        message = {"candidate": candidate.candidate, "id": candidate.mid, "label": candidate.index}
        await pc.addIceCandidate(_candidate_from_message(message))


def dump_of(router: Router, role: str, name: str) -> dict[str, Any]:
    (entry,) = [p for p in router.dump()[role] if p["name"] == name]
    return entry  # type: ignore[no-any-return]


def server_track(router: Router, name: str, kind: str) -> dict[str, Any]:
    return next(t for t in dump_of(router, "publishers", name)["tracks"] if t["kind"] == kind)  # type: ignore[no-any-return]


def server_copy(router: Router, name: str, mid: str) -> dict[str, Any]:
    return next(t for t in dump_of(router, "subscribers", name)["tracks"] if t["mid"] == mid)  # type: ignore[no-any-return]


def mid_directions(sdp: str) -> dict[str, str]:
    """mid -> direction attribute of every m-line."""
    sections: list[dict[str, str]] = []
    for line in sdp.splitlines():
        if line.startswith("m="):
            sections.append({})
        elif sections and line.startswith("a=mid:"):
            sections[-1]["mid"] = line[6:]
        elif sections and line[2:] in ("sendonly", "recvonly", "sendrecv", "inactive"):
            sections[-1]["direction"] = line[2:]
    return {s["mid"]: s.get("direction", "sendrecv") for s in sections if "mid" in s}


@dataclass
class Publishing:
    """One aiortc client publishing through one server Publisher."""

    media: PublisherMedia
    publisher: MediaPublisher
    owner: Owner

    def track(self, kind: str) -> TrackInfo:
        return next(t for t in self.publisher.tracks() if t.kind == kind)

    async def close(self) -> None:
        self.media.stop_tracks()
        await self.media.pc.close()
        await self.publisher.close("stop")


async def publish(
    router: Router, name: str, codec: str = "VP8", *, with_audio: bool = True, data_channel: str | None = None
) -> Publishing:
    owner = Owner()
    media = build_publisher_pc(codec, with_audio=with_audio, data_channel_label=data_channel)
    await media.pc.setLocalDescription(await media.pc.createOffer())
    offer, candidates = without_candidates(media.pc.localDescription.sdp)
    assert candidates, "the client gathered no candidate"
    publisher = router.create_publisher(name, **owner.callbacks())
    # one candidate before the offer (queued), the others after the answer
    await publisher.add_candidate(*candidates[0])
    answer, _ = without_candidates(await publisher.answer(offer))
    for candidate in candidates[1:]:
        await publisher.add_candidate(*candidate)
    await media.pc.setRemoteDescription(RTCSessionDescription(answer, "answer"))
    await trickle_to_client(media.pc, publisher)
    await wait_for_connected(media.pc)
    await until(lambda: owner.connected and publisher.connected, f"publisher {name} to connect")
    return Publishing(media, publisher, owner)


@dataclass
class Playing:
    """One aiortc player fed by one server Subscriber."""

    pc: RTCPeerConnection
    counter: MediaCounter
    subscriber: MediaSubscriber
    owner: Owner
    offers: list[str] = field(default_factory=list)

    def frames(self, mid: str) -> int:
        stats = self.counter.stats_for_mid(mid)
        return stats.frames if stats is not None else 0

    async def renegotiate(self, answer_filter: Callable[[str], str] = lambda sdp: sdp) -> str:
        """offer() -> the player -> accept_answer(); returns the offer."""
        offer = await self.subscriber.offer()
        assert self.subscriber.negotiating
        self.offers.append(offer)
        await self.pc.setRemoteDescription(RTCSessionDescription(offer, "offer"))
        await self.pc.setLocalDescription(await self.pc.createAnswer())
        answer = answer_filter(self.pc.localDescription.sdp)
        await self.subscriber.accept_answer(answer)
        assert not self.subscriber.negotiating
        return offer

    async def close(self) -> None:
        await self.counter.aclose()
        await self.pc.close()
        await self.subscriber.close("stop")


async def play(router: Router, name: str, sources: list[tuple[str, str]]) -> Playing:
    owner = Owner()
    subscriber = router.create_subscriber(name, **owner.callbacks())
    for track_id, label in sources:
        subscriber.add_source(track_id, label)
    pc = new_peer_connection()
    counter = MediaCounter(name)
    counter.attach(pc)
    playing = Playing(pc, counter, subscriber, owner)
    await playing.renegotiate()
    await trickle_to_client(pc, subscriber)
    await wait_for_connected(pc)
    await until(lambda: owner.connected and subscriber.connected, f"subscriber {name} to connect")
    return playing


@pytest.fixture
async def router() -> AsyncIterator[Router]:
    """A Router as `confero.server.Server` builds it, on loopback, with the compiled fan-out."""
    router = Router(
        PeerConfig(ice=IcePolicy(addresses=("127.0.0.1",)), engine=fanout.select(True)),
        codec_mimes(["VP8", "H264", "opus"]),
    )
    assert router.config.engine.compiled, "the compiled fan-out is not built (setup.py build_ext --inplace)"
    plane: MediaPlane = router  # what the domain is written against (checked by mypy)
    assert plane is router
    await router.start()
    try:
        yield router
    finally:
        await router.close()
    assert router.dump() == EMPTY
    await assert_no_pending_tasks()
    gc.collect()
    assert fanout.open_outputs() == 0, "an Output kept its socket descriptor"


# --------------------------------------------------------------------------------------------
# publish and play
# --------------------------------------------------------------------------------------------


async def test_publish_and_play_by_track_id(router: Router) -> None:
    pub = await publish(router, "stream1", data_channel="chat")
    tracks = pub.publisher.tracks()
    assert sorted((t.kind, t.codec) for t in tracks) == [("audio", "audio/opus"), ("video", "video/VP8")]
    assert sorted(t.track_id for t in tracks) == router.dump()["tracks"]
    assert all(t.track_id.startswith("stream1/") for t in tracks)
    assert len({t.track_id for t in tracks}) == 2

    player = await play(router, "stream1/play", [(t.track_id, "cam") for t in tracks])
    subscriber = player.subscriber
    assert subscriber.labels() == {"cam"}
    slots = subscriber.slots()
    assert [(s.kind, s.label) for s in slots] == [(t.kind, "cam") for t in tracks]
    assert [s.mid for s in slots] == list(mid_directions(player.offers[0]))
    assert set(mid_directions(player.offers[0]).values()) == {"sendonly"}
    await player.counter.wait_frames(20, 20)

    # receive counters as values; the join's keyframe request went to the publisher
    stats = {s.kind: s for s in pub.publisher.stats()}
    assert stats["video"].packets > 0 and stats["video"].octets > 0 and stats["video"].keyframes >= 1
    assert stats["video"].keyframe_requests >= 1
    assert stats["audio"].packets > 0 and stats["audio"].keyframe_requests == 0
    assert server_track(router, "stream1", "video")["keyframeRequests"]["requests"]["join"] == 1
    video_mid = next(s.mid for s in slots if s.kind == "video")
    copy = server_copy(router, "stream1/play", video_mid)
    assert copy["attached"] and not copy["waiting"] and copy["packets"] > 0

    # the publisher's data channel, both ways
    channel = pub.media.channel
    assert channel is not None
    received: list[str] = []
    channel.on("message", received.append)
    await until(lambda: channel.readyState == "open", "the data channel to open")
    channel.send("hello")
    await until(lambda: pub.owner.data == ["hello"], "the publisher's message")
    pub.publisher.send_data("hi")
    await until(lambda: received == ["hi"], "the server's message")

    # closing: on_closed once, with the first reason; the tracks leave the registry
    await player.close()
    await pub.close()
    await player.subscriber.close("again")
    await pub.publisher.close("again")
    assert player.owner.closed == ["stop"] and pub.owner.closed == ["stop"]
    assert pub.publisher.closed and not pub.publisher.send_data("late")
    assert pub.publisher.tracks() == []
    with pytest.raises(UnknownTrack):
        router.create_subscriber("late", **Owner().callbacks()).add_source(tracks[0].track_id, "cam")
    await router.close()  # the "late" subscriber goes with the router
    assert router.dump() == EMPTY


async def test_remove_source_reoffer_and_set_enabled(router: Router) -> None:
    one = await publish(router, "one", with_audio=False)
    two = await publish(router, "two", with_audio=False)
    one_id, two_id = one.track("video").track_id, two.track("video").track_id
    player = await play(router, "room", [(one_id, "one"), (two_id, "two")])
    subscriber = player.subscriber
    mid_one, mid_two = (s.mid for s in subscriber.slots())
    await until(lambda: player.frames(mid_one) >= 10 and player.frames(mid_two) >= 10, "frames of both")

    # pause: the copy sends nothing while the track goes on; resume: again from a keyframe
    assert subscriber.set_enabled("one", False)
    paused_at = server_copy(router, "room", mid_one)["packets"]
    received_at = server_track(router, "one", "video")["packets"]
    await until(lambda: server_track(router, "one", "video")["packets"] >= received_at + 30, "30 more packets")
    assert server_copy(router, "room", mid_one)["packets"] == paused_at
    assert not subscriber.set_enabled("nobody", False)
    frames_two = player.frames(mid_two)
    await until(lambda: player.frames(mid_two) > frames_two, "frames of two while one is paused")
    assert subscriber.set_enabled("one", True)
    assert server_track(router, "one", "video")["keyframeRequests"]["requests"]["resume"] == 1
    frames_one = player.frames(mid_one)
    await until(lambda: player.frames(mid_one) >= frames_one + 10, "frames of one after resuming")
    assert server_copy(router, "room", mid_one)["packets"] > paused_at

    # remove one: its m-line stays, inactive; two keeps flowing
    assert subscriber.remove_source("one")
    assert not subscriber.remove_source("one")
    assert subscriber.labels() == {"two"}
    offer = await player.renegotiate()
    assert mid_directions(offer) == {mid_one: "inactive", mid_two: "sendonly"}
    assert subscriber.slots() == [SlotInfo(mid_one, "video", "one"), SlotInfo(mid_two, "video", "two")]
    assert [t["mid"] for t in dump_of(router, "subscribers", "room")["tracks"]] == [mid_two]
    assert server_track(router, "one", "video")["downtracks"] == 0
    frames_two = player.frames(mid_two)
    await until(lambda: player.frames(mid_two) >= frames_two + 10, "frames of two after the re-offer")

    # add one again, under another label: a new m-line after the earlier ones
    subscriber.add_source(one_id, "one-again")
    assert subscriber.labels() == {"two", "one-again"}
    offer = await player.renegotiate()
    slots = subscriber.slots()
    assert [s.label for s in slots] == ["one", "two", "one-again"]
    mid_again = slots[2].mid
    assert mid_directions(offer) == {mid_one: "inactive", mid_two: "sendonly", mid_again: "sendonly"}
    await until(lambda: player.frames(mid_again) >= 10, "frames of one on its new m-line")

    # a publisher that ends: its track leaves the registry, its copies let go
    await two.close()
    assert two_id not in router.dump()["tracks"]
    with pytest.raises(UnknownTrack):
        subscriber.add_source(two_id, "two")
    assert not server_copy(router, "room", mid_two)["attached"]
    assert subscriber.remove_source("two")
    assert subscriber.labels() == {"one-again"}
    offer = await player.renegotiate()
    assert mid_directions(offer)[mid_two] == "inactive"
    frames_again = player.frames(mid_again)
    await until(lambda: player.frames(mid_again) >= frames_again + 10, "frames after two ended")

    await player.close()
    await one.close()
    assert router.dump() == EMPTY


async def test_a_players_pli_reaches_the_publisher_through_the_keyframe_owner(router: Router) -> None:
    pub = await publish(router, "pli", with_audio=False)
    player = await play(router, "pli/play", [(pub.track("video").track_id, "cam")])
    (slot,) = player.subscriber.slots()
    await player.counter.wait_frames(5)
    # the copy started: nobody waits any more, so the tick asks for nothing
    await until(lambda: server_track(router, "pli", "video")["pending"] == 0, "the copy to start")
    before = server_track(router, "pli", "video")["keyframeRequests"]

    sender = pub.media.video_transceiver.sender  # type: ignore[union-attr]
    keyframes_asked: list[float] = []
    original = sender._send_keyframe
    sender._send_keyframe = lambda: (keyframes_asked.append(time.monotonic()), original())

    tap = TransportTap(aiortc_hooks.dtls_transports(player.pc)[0])
    copy_ssrc = server_copy(router, "pli/play", slot.mid)["ssrc"]
    sent = 0
    try:
        deadline = time.monotonic() + 10
        while not keyframes_asked:  # the first PLIs may fall inside the join's interval
            assert time.monotonic() < deadline, "the publisher got no PLI"
            if sent % 2:
                fci = rtp.U32.pack(copy_ssrc) + bytes([sent & 0xFF, 0, 0, 0])
                packet = RtcpPsfbPacket(fmt=RTCP_PSFB_FIR, ssrc=0x5EED, media_ssrc=0, fci=fci)
            else:
                packet = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0x5EED, media_ssrc=copy_ssrc)
            tap.send_rtcp(bytes(packet))
            sent += 1
            await asyncio.sleep(0.1)
        await until(
            lambda: (
                server_track(router, "pli", "video")["keyframeRequests"]["requests"]["player"]
                >= before["requests"]["player"] + sent
            ),
            "the server to count every PLI and FIR",
        )
    finally:
        tap.close()
    after = server_track(router, "pli", "video")["keyframeRequests"]
    assert after["sent"] > before["sent"]
    for reason in ("join", "resume", "resync", "retry"):
        assert after["requests"][reason] == before["requests"][reason], reason
    assert server_copy(router, "pli/play", slot.mid)["keyframeRequests"] >= sent

    await player.close()
    await pub.close()


# --------------------------------------------------------------------------------------------
# typed failures
# --------------------------------------------------------------------------------------------


async def test_typed_failures(router: Router) -> None:
    owner = Owner()
    publisher = router.create_publisher("bad", **owner.callbacks())
    with pytest.raises(SdpError) as raised:
        await publisher.answer("garbage")
    assert type(raised.value) is SdpError and raised.value.side == "remote"
    with pytest.raises(SdpError, match="already has an offer"):
        await publisher.answer("v=0\r\n")
    await publisher.close()

    # an offer with a data channel alone is a publish without tracks (the SDK's onlyDataChannel)
    client = new_peer_connection()
    client.createDataChannel("chat")
    await client.setLocalDescription(await client.createOffer())
    publisher = router.create_publisher("data-only", **owner.callbacks())
    answer = await publisher.answer(client.localDescription.sdp)
    assert "m=application" in answer and publisher.tracks() == []
    await publisher.close()
    await client.close()

    # an offer with neither media nor a data channel
    publisher = router.create_publisher("empty", **owner.callbacks())
    with pytest.raises(NoMedia):
        await publisher.answer("v=0\r\no=- 1 1 IN IP4 127.0.0.1\r\ns=-\r\nt=0 0\r\n")
    await publisher.close()

    # no video codec in common: the router takes VP8 only, the client offers H264 only
    router.codecs = ("video/VP8", "audio/opus")
    media = build_publisher_pc("H264")
    await media.pc.setLocalDescription(await media.pc.createOffer())
    publisher = router.create_publisher("h264", **owner.callbacks())
    with pytest.raises(CodecMismatch, match="H264"):
        await publisher.answer(media.pc.localDescription.sdp)
    assert publisher.tracks() == [] and router.dump()["tracks"] == []
    await publisher.close()
    media.stop_tracks()
    await media.pc.close()
    router.codecs = codec_mimes(["VP8", "H264", "opus"])

    # candidates that cannot be used, before and after the remote description
    publisher = router.create_publisher("candidates", **owner.callbacks())
    bad = [
        ("candidate:garbage", "0", 0),
        ("candidate:1 1 udp 2130706431 not-an-address 5000 typ host", "0", 0),
        ("candidate:1 1 udp 2130706431 127.0.0.1 0 typ host", "0", 0),
        ("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", None, None),
    ]
    ignored = [
        ("", "0", 0),  # end-of-candidates
        ("candidate:1 1 tcp 1518280447 127.0.0.1 9 typ host tcptype active", "0", 0),
        ("candidate:1 1 udp 2130706431 0f1d2c3b-4a59-6877-8695-a4b3c2d1e0f9.local 5000 typ host", "0", 0),
    ]
    for candidate in bad:
        with pytest.raises(BadCandidate):
            await publisher.add_candidate(*candidate)
    for candidate in ignored:
        await publisher.add_candidate(*candidate)
    media = build_publisher_pc("VP8")
    await media.pc.setLocalDescription(await media.pc.createOffer())
    await publisher.answer(media.pc.localDescription.sdp)
    for candidate in bad:
        with pytest.raises(BadCandidate):
            await publisher.add_candidate(*candidate)
    with pytest.raises(BadCandidate):  # an m-line this connection does not have
        await publisher.add_candidate("candidate:1 1 udp 2130706431 127.0.0.1 5000 typ host", None, 7)
    assert publisher.tracks() and all(t.track_id in router.dump()["tracks"] for t in publisher.tracks())
    await publisher.close()
    media.stop_tracks()
    await media.pc.close()
    assert router.dump()["tracks"] == []

    # a subscriber: unknown tracks, an answer before any offer
    subscriber = router.create_subscriber("player", **owner.callbacks())
    with pytest.raises(UnknownTrack):
        subscriber.add_source("nobody/video/1", "x")
    with pytest.raises(SdpError, match="no offer"):
        await subscriber.accept_answer("v=0\r\n")
    assert subscriber.labels() == set() and subscriber.slots() == []
    await subscriber.close()
    assert owner.closed == ["closed"] * 6
    assert router.dump() == EMPTY


def reject_video(sdp: str) -> str:
    """What a browser without the codec answers: the video m-line rejected (port 0)."""
    return re.sub(r"^m=video \d+", "m=video 0", sdp, flags=re.M)


async def test_a_player_that_refuses_the_publishers_codec(router: Router) -> None:
    pub = await publish(router, "h264", "H264")
    assert pub.track("video").codec == "video/H264"
    owner = Owner()
    subscriber = router.create_subscriber("h264/play", **owner.callbacks())
    for track in pub.publisher.tracks():
        subscriber.add_source(track.track_id, "cam")
    pc = new_peer_connection()
    counter = MediaCounter("refusing")
    counter.attach(pc)
    player = Playing(pc, counter, subscriber, owner)
    try:
        with pytest.raises(CodecMismatch, match="H264"):
            await player.renegotiate(reject_video)
        assert not subscriber.negotiating  # the answer was applied; only the video was refused
        await trickle_to_client(pc, subscriber)
        await wait_for_connected(pc)
        await counter.wait_frames(0, 10)  # the audio it took is forwarded regardless
        assert [t["kind"] for t in dump_of(router, "subscribers", "h264/play")["tracks"]] == ["audio"]
        assert server_track(router, "h264", "video")["downtracks"] == 0
        # the refused source keeps its m-line and label: adding it again offers nothing new, and
        # the next answer does not fail on it again
        assert subscriber.labels() == {"cam"}
        for track in pub.publisher.tracks():
            subscriber.add_source(track.track_id, "cam")
        await player.renegotiate(reject_video)
        assert [(s.kind, s.label) for s in subscriber.slots()] == [("video", "cam"), ("audio", "cam")]
        assert [s["refused"] for s in dump_of(router, "subscribers", "h264/play")["slots"]] == [True, False]
        audio = counter.audio_frames
        await counter.wait_frames(0, audio + 10)
    finally:
        await player.close()
        await pub.close()
    assert router.dump() == EMPTY


async def test_on_closed_once_when_the_client_goes_away(router: Router) -> None:
    pub = await publish(router, "gone", with_audio=False)
    player = await play(router, "gone/play", [(pub.track("video").track_id, "cam")])
    await player.counter.wait_frames(3)

    await player.counter.aclose()
    await player.pc.close()  # DTLS close_notify: the server's peer ends on its own
    await until(lambda: player.owner.closed, "the subscriber to see its player go")
    assert player.owner.closed == ["closed"] and player.subscriber.closed
    await player.subscriber.close("stop")  # the owner's own close comes second: no second call
    assert player.owner.closed == ["closed"]

    pub.media.stop_tracks()
    await pub.media.pc.close()
    await until(lambda: pub.owner.closed, "the publisher to see its client go")
    assert pub.owner.closed == ["closed"] and pub.publisher.tracks() == []
    await pub.publisher.close("stop")
    assert pub.owner.closed == ["closed"]
    assert router.dump() == EMPTY


def test_no_ant_media_wire_term_in_the_media_plane() -> None:
    terms = re.compile(
        r"notSetRemoteDescription|notSetLocalDescription|unsupported_codec|invalid_candidate|no_stream_exist"
        r"|streamId|takeConfiguration|publishTimeoutError"
    )
    offenders = [
        f"{path.name}:{n}"
        for path in sorted(MEDIA_SRC.glob("*.py"))
        for n, line in enumerate(path.read_text().splitlines(), 1)
        if terms.search(line)
    ]
    assert offenders == []
