"""Every aiortc/aioice internal that `confero.media.aiortc_hooks` relies on, exercised for real.

Each test drives real aiortc peers over 127.0.0.1 (or a real gathering), so that an aiortc,
aioice or pylibsrtp upgrade that renames or reshapes one of the hooked internals fails here,
loudly, instead of silently sending media through aiortc's decoder or nowhere at all.

Every test closes its peer connections and checks that no asyncio task is left pending.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import random
import re
import socket
import sys
import time
import tomllib
from collections.abc import AsyncIterator, Callable
from importlib import metadata
from pathlib import Path
from typing import Any

import aioice.ice
import pytest
from aiortc import RTCBundlePolicy, RTCConfiguration, RTCPeerConnection, RTCRtpTransceiver
from aiortc.rtcrtpsender import RTCRtpSender
from aiortc.rtp import RTCP_PSFB_PLI, RtcpByePacket, RtcpPacket, RtcpPsfbPacket, RtcpSrPacket
from aiortc.sdp import SessionDescription

from confero.media import aiortc_hooks, fanout, rtp
from confero.media.aiortc_hooks import IcePolicy, IdleTrack, TransportTap
from tests.support import wait_until
from tests.support.amsclient import (
    build_publisher_pc,
    codec_preferences,
    new_peer_connection,
    wait_for_connected,
)

ROOT = Path(__file__).resolve().parents[2]
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"


# --------------------------------------------------------------------------------------------
# helpers
# --------------------------------------------------------------------------------------------


async def assert_no_pending_tasks(within: float = 3.0) -> None:
    """Every task but the current one is done (aiortc's teardown may need a few loop turns)."""
    current = asyncio.current_task()

    def pending() -> list[asyncio.Task[Any]]:
        return [t for t in asyncio.all_tasks() if t is not current and not t.done()]

    deadline = time.monotonic() + within
    while pending():
        if time.monotonic() >= deadline:
            break
        await asyncio.sleep(0.02)
    assert not pending(), pending()


class Peers:
    """The peer connections of one test; closed, then checked for leftovers, at teardown."""

    def __init__(self) -> None:
        self.pcs: list[RTCPeerConnection] = []
        self.loop_errors: list[dict[str, Any]] = []

    def add(self, pc: RTCPeerConnection) -> RTCPeerConnection:
        self.pcs.append(pc)
        return pc

    def new(self, **config: Any) -> RTCPeerConnection:
        if config:
            return self.add(RTCPeerConnection(RTCConfiguration(iceServers=[], **config)))
        return self.add(new_peer_connection())

    async def close(self) -> None:
        for pc in self.pcs:
            await asyncio.wait_for(pc.close(), 5)
        self.pcs.clear()
        await assert_no_pending_tasks()


@pytest.fixture
async def peers() -> AsyncIterator[Peers]:
    loop = asyncio.get_running_loop()
    made = Peers()
    previous_handler = loop.get_exception_handler()
    loop.set_exception_handler(lambda _loop, context: made.loop_errors.append(context))
    try:
        yield made
        await made.close()
        gc.collect()  # "Task exception was never retrieved" is reported when a task is collected
        await asyncio.sleep(0)
        assert not made.loop_errors, made.loop_errors
    finally:
        for pc in made.pcs:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(pc.close(), 5)
        loop.set_exception_handler(previous_handler)


async def exchange(
    offerer: RTCPeerConnection,
    answerer: RTCPeerConnection,
    *,
    after_remote: Callable[[RTCPeerConnection], object] | None = None,
) -> None:
    """Offer/answer in-process; `after_remote` runs on the answerer between its two steps."""
    await offerer.setLocalDescription(await offerer.createOffer())
    await answerer.setRemoteDescription(offerer.localDescription)
    if after_remote is not None:
        after_remote(answerer)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await offerer.setRemoteDescription(answerer.localDescription)


async def connect(*pcs: RTCPeerConnection) -> None:
    await asyncio.gather(*(wait_for_connected(pc, 10) for pc in pcs))


def host_candidates(pc: RTCPeerConnection) -> list[tuple[str, int]]:
    """(address, port) of every a=candidate line in the local description."""
    assert pc.localDescription is not None
    found = re.findall(r"^a=candidate:\S+ \d+ udp \d+ (\S+) (\d+) typ host", pc.localDescription.sdp, re.M | re.I)
    return [(host, int(port)) for host, port in found]


def free_udp_range(size: int, host: str = "127.0.0.1") -> tuple[int, int]:
    """A run of `size` consecutive UDP ports that can all be bound right now."""
    rng = random.Random()
    for _ in range(200):
        low = rng.randrange(20000, 60000 - size)
        socks: list[socket.socket] = []
        try:
            for port in range(low, low + size):
                s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
                socks.append(s)
                s.bind((host, port))
        except OSError:
            continue
        finally:
            for s in socks:
                s.close()
        return low, low + size - 1
    raise RuntimeError("no free UDP port range")


def video_transceiver(pc: RTCPeerConnection) -> RTCRtpTransceiver:
    return next(t for t in pc.getTransceivers() if t.kind == "video")


def parse_rtcp(data: bytes) -> list[Any]:
    return RtcpPacket.parse(data)


def is_rtcp(data: bytes) -> bool:
    """RFC 5761: RTCP packet types 192-223 share the byte where RTP has marker+PT."""
    return len(data) > 1 and 192 <= data[1] <= 223


# --------------------------------------------------------------------------------------------
# pinned versions
# --------------------------------------------------------------------------------------------


def test_check_versions_passes_on_the_pinned_versions() -> None:
    aiortc_hooks.check_versions()
    for name, version in aiortc_hooks.PINNED.items():
        assert metadata.version(name) == version
    # the pins the hooks were verified on are the ones the project installs
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]["dependencies"]
    for name, version in aiortc_hooks.PINNED.items():
        assert f"{name}=={version}" in dependencies, (name, dependencies)


@pytest.mark.parametrize("package", sorted(aiortc_hooks.PINNED))
def test_check_versions_rejects_another_version(package: str, monkeypatch: pytest.MonkeyPatch) -> None:
    real_version = metadata.version

    def fake_version(name: str) -> str:
        return "99.0.0" if name == package else real_version(name)

    # the module looks the function up on `importlib.metadata` at call time
    monkeypatch.setattr(aiortc_hooks.metadata, "version", fake_version)
    with pytest.raises(RuntimeError, match=rf"{package}=={re.escape(aiortc_hooks.PINNED[package])}.*99\.0\.0"):
        aiortc_hooks.check_versions()


# --------------------------------------------------------------------------------------------
# ICE gathering policy
# --------------------------------------------------------------------------------------------


@pytest.fixture
def other_host_addresses(monkeypatch: pytest.MonkeyPatch) -> str:
    """What aioice gathers when no policy is set: 127.0.0.2 stands for "the host's interfaces".

    (conftest installs a loopback-only 127.0.0.1 fallback for test clients; with that, a
    policy of 127.0.0.1 would be indistinguishable from no policy at all.)
    """
    aiortc_hooks.install_ice_patches()
    monkeypatch.setattr(aiortc_hooks, "_fallback_get_host_addresses", lambda v4, v6: ["127.0.0.2"])
    return "127.0.0.2"


async def gather(pc: RTCPeerConnection, kinds: tuple[str, ...] = ("video",)) -> list[tuple[str, int]]:
    for kind in kinds:
        pc.addTransceiver(kind, direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    return host_candidates(pc)


def test_install_ice_patches_is_idempotent() -> None:
    aiortc_hooks.install_ice_patches()
    aiortc_hooks.install_ice_patches()
    # aioice looks both up at gathering time, so these replacements are what runs
    assert aioice.ice.get_host_addresses is aiortc_hooks._get_host_addresses
    assert aioice.ice.Connection.get_component_candidates is aiortc_hooks._get_component_candidates
    assert aioice.ice.relayed_candidate is aiortc_hooks._relayed_candidate
    assert aioice.ice.Connection.check_complete is aiortc_hooks._check_complete
    # a second install must not make the fallback call itself
    assert aiortc_hooks._fallback_get_host_addresses is not aiortc_hooks._get_host_addresses
    assert aiortc_hooks._get_host_addresses(True, False) == aiortc_hooks._fallback_get_host_addresses(True, False)


async def test_ice_policy_addresses(peers: Peers, other_host_addresses: str) -> None:
    # no policy: aioice's gathering goes through the fallback
    assert {h for h, _ in await gather(peers.new())} == {other_host_addresses}

    token = aiortc_hooks.set_ice_policy(IcePolicy(addresses=("127.0.0.1",)))
    try:
        candidates = await gather(peers.new(), ("video", "audio"))
        # unbundled too: every transport of the pc gathers only the policy's address
        candidates += await gather(peers.new(bundlePolicy=RTCBundlePolicy.MAX_COMPAT), ("video", "audio"))
    finally:
        aiortc_hooks._policy.reset(token)
    assert candidates
    assert {h for h, _ in candidates} == {"127.0.0.1"}

    token = aiortc_hooks.set_ice_policy(IcePolicy(addresses=("127.0.0.1", "::1")))
    try:
        assert aiortc_hooks._get_host_addresses(True, False) == ["127.0.0.1"]
        assert aiortc_hooks._get_host_addresses(False, True) == ["::1"]
        # addresses=None keeps aioice's default choice
        aiortc_hooks.set_ice_policy(IcePolicy(addresses=None))
        assert aiortc_hooks._get_host_addresses(True, True) == [other_host_addresses]
    finally:
        aiortc_hooks._policy.reset(token)


async def test_ice_policy_port_range(peers: Peers) -> None:
    low, high = free_udp_range(10)
    policy = IcePolicy(addresses=("127.0.0.1",), port_range=(low, high))

    # unbundled offer: one transport per m-line, each bound inside the range
    token = aiortc_hooks.set_ice_policy(policy)
    try:
        candidates = await gather(peers.new(bundlePolicy=RTCBundlePolicy.MAX_COMPAT), ("video", "audio", "video"))
    finally:
        aiortc_hooks._policy.reset(token)
    assert len(candidates) == 3
    assert len({p for _, p in candidates}) == 3
    for host, port in candidates:
        assert host == "127.0.0.1"
        assert low <= port <= high, (port, low, high)

    # an answering server peer: the sockets we bound are real aioice sockets, ICE and DTLS
    # complete over them
    server = peers.new()
    client = build_publisher_pc("VP8")
    peers.add(client.pc)

    def within_range(pc: RTCPeerConnection) -> None:
        # the answer's gathering happens inside setLocalDescription, i.e. in this context
        aiortc_hooks.set_ice_policy(policy)

    token = aiortc_hooks._policy.set(None)
    try:
        await exchange(client.pc, server, after_remote=within_range)
    finally:
        aiortc_hooks._policy.reset(token)
    ((host, port),) = set(host_candidates(server))  # one bundled transport, listed per m-line
    assert host == "127.0.0.1" and low <= port <= high
    await connect(client.pc, server)
    pair = aiortc_hooks.dtls_transports(server)[0].transport._connection._nominated[1]
    assert pair.protocol.local_candidate.port == port
    assert pair.protocol.transport.get_extra_info("sockname")[:2] == ("127.0.0.1", port)
    client.stop_tracks()


async def test_ice_port_range_exhausted_logs_and_gathers_nothing(
    peers: Peers, caplog: pytest.LogCaptureFixture
) -> None:
    low, high = free_udp_range(2)
    blockers = []
    try:
        for port in (low, high):
            s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
            s.bind(("127.0.0.1", port))
            blockers.append(s)
        token = aiortc_hooks.set_ice_policy(IcePolicy(addresses=("127.0.0.1",), port_range=(low, high)))
        try:
            with caplog.at_level(logging.WARNING, logger=aiortc_hooks.logger.name):
                assert await gather(peers.new()) == []
        finally:
            aiortc_hooks._policy.reset(token)
    finally:
        for s in blockers:
            s.close()
    assert any("no free UDP port" in r.getMessage() for r in caplog.records)


async def test_ice_policy_does_not_leak_between_tasks(peers: Peers, other_host_addresses: str) -> None:
    policy_set = asyncio.Event()
    other_done = asyncio.Event()

    async def with_policy() -> tuple[list[tuple[str, int]], IcePolicy | None]:
        aiortc_hooks.set_ice_policy(IcePolicy(addresses=("127.0.0.1",)))
        policy_set.set()
        await other_done.wait()  # the other task gathers while this one's policy is set
        return await gather(peers.new()), aiortc_hooks._policy.get()

    async def without_policy() -> tuple[list[tuple[str, int]], IcePolicy | None]:
        await policy_set.wait()
        try:
            return await gather(peers.new()), aiortc_hooks._policy.get()
        finally:
            other_done.set()

    (mine, my_policy), (theirs, their_policy) = await asyncio.gather(
        asyncio.create_task(with_policy()), asyncio.create_task(without_policy())
    )
    assert my_policy == IcePolicy(addresses=("127.0.0.1",))
    assert {h for h, _ in mine} == {"127.0.0.1"}
    assert their_policy is None
    assert {h for h, _ in theirs} == {other_host_addresses}
    # nor into the task that started them
    assert aiortc_hooks._policy.get() is None
    assert {h for h, _ in await gather(peers.new())} == {other_host_addresses}


# --------------------------------------------------------------------------------------------
# transports of a peer connection
# --------------------------------------------------------------------------------------------


async def test_dtls_transports(peers: Peers) -> None:
    # "balanced": before negotiation every transceiver has its own transport; BUNDLE merges them
    bundled = peers.new(bundlePolicy=RTCBundlePolicy.BALANCED)
    bundled.addTransceiver("video")
    bundled.addTransceiver("audio")
    bundled.createDataChannel("x")
    await bundled.setLocalDescription(await bundled.createOffer())
    assert len(aiortc_hooks.dtls_transports(bundled)) == 3
    answerer = peers.new(bundlePolicy=RTCBundlePolicy.BALANCED)
    await answerer.setRemoteDescription(bundled.localDescription)
    await answerer.setLocalDescription(await answerer.createAnswer())
    await bundled.setRemoteDescription(answerer.localDescription)
    for pc in (bundled, answerer):
        transports = aiortc_hooks.dtls_transports(pc)
        assert len(transports) == 1
        assert transports[0] is pc.getTransceivers()[0].receiver.transport
        assert transports[0] is pc.getTransceivers()[1].sender.transport
        assert transports[0] is pc.sctp.transport
    await connect(bundled, answerer)

    # "max-bundle" (server peers): one transport from the start
    max_bundle = peers.new(bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    max_bundle.addTransceiver("video")
    max_bundle.addTransceiver("audio")
    max_bundle.createDataChannel("x")
    await max_bundle.setLocalDescription(await max_bundle.createOffer())
    assert aiortc_hooks.dtls_transports(max_bundle) == [max_bundle.sctp.transport]
    assert all(t.receiver.transport is max_bundle.sctp.transport for t in max_bundle.getTransceivers())

    unbundled = peers.new(bundlePolicy=RTCBundlePolicy.MAX_COMPAT)
    unbundled.addTransceiver("video")
    unbundled.addTransceiver("audio")
    await unbundled.setLocalDescription(await unbundled.createOffer())
    assert aiortc_hooks.dtls_transports(unbundled) == [t.receiver.transport for t in unbundled.getTransceivers()]

    data_only = peers.new()
    data_only.createDataChannel("x")
    await data_only.setLocalDescription(await data_only.createOffer())
    assert aiortc_hooks.dtls_transports(data_only) == [data_only.sctp.transport]


# --------------------------------------------------------------------------------------------
# TransportTap
# --------------------------------------------------------------------------------------------


class Recorder:
    """on_rtp/on_rtcp callbacks that remember what arrived and by which path."""

    def __init__(self) -> None:
        self.rtp: list[bytes] = []
        self.rtp_paths: list[str] = []
        self.rtcp: list[bytes] = []

    def on_rtp(self, data: bytes) -> None:
        self.rtp.append(data)
        # the fast path calls us from the socket callback, the slow one from aiortc's DTLS loop
        self.rtp_paths.append(sys._getframe(1).f_code.co_name)

    def on_rtcp(self, data: bytes) -> None:
        self.rtcp.append(data)

    def sender_reports(self, ssrc: int) -> list[RtcpSrPacket]:
        return [p for d in self.rtcp for p in parse_rtcp(d) if isinstance(p, RtcpSrPacket) and p.ssrc == ssrc]


class TappedLink:
    """A VP8 sender and a receiving pc whose DTLS transport is tapped (as a Publisher does)."""

    def __init__(self, peers: Peers, *, on_rtp: bool = True) -> None:
        self.media = build_publisher_pc("VP8", with_audio=False)
        self.sender_pc = peers.add(self.media.pc)
        self.receiver_pc = peers.new()
        self.recorder = Recorder()
        self.tap: TransportTap | None = None
        self._with_on_rtp = on_rtp
        self.aiortc_rtp: list[Any] = []  # packets that reached aiortc's RTCRtpReceiver
        self.aiortc_rtcp: list[Any] = []  # RTCP that aiortc's receiver still handled

    def _tap(self, pc: RTCPeerConnection) -> None:
        # right after setRemoteDescription, before any media can arrive
        dtls = aiortc_hooks.dtls_transports(pc)[0]
        assert dtls.state == "new"
        self.tap = TransportTap(
            dtls,
            on_rtp=self.recorder.on_rtp if self._with_on_rtp else None,
            on_rtcp=self.recorder.on_rtcp,
        )
        receiver = video_transceiver(pc).receiver
        original_rtcp = receiver._handle_rtcp_packet

        async def handle_rtp_packet(packet: Any, arrival_time_ms: int) -> None:
            self.aiortc_rtp.append(packet)

        async def handle_rtcp_packet(packet: Any) -> None:
            self.aiortc_rtcp.append(packet)
            await original_rtcp(packet)

        receiver._handle_rtp_packet = handle_rtp_packet
        receiver._handle_rtcp_packet = handle_rtcp_packet

    async def start(self) -> None:
        await exchange(self.sender_pc, self.receiver_pc, after_remote=self._tap)
        await connect(self.sender_pc, self.receiver_pc)
        assert self.tap is not None
        await wait_until(lambda: self.tap.ready, 5, "the tap to see DTLS connected")

    @property
    def sender(self) -> RTCRtpSender:
        return video_transceiver(self.sender_pc).sender

    @property
    def nominated(self) -> Any:
        dtls = aiortc_hooks.dtls_transports(self.receiver_pc)[0]
        return dtls.transport._connection._nominated[1]

    def stop(self) -> None:
        self.media.stop_tracks()


async def test_tap_receives_decrypted_rtp_on_the_fast_path(peers: Peers) -> None:
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    pair = link.nominated
    protocol = pair.protocol
    # the fast path is an instance attribute shadowing aioice's StunProtocol.datagram_received
    assert "datagram_received" in vars(protocol)
    assert type(protocol).datagram_received is aioice.ice.StunProtocol.datagram_received
    assert tap.rtp_sender() is not None
    _protect, sendto, addr = tap.rtp_sender()  # type: ignore[misc]
    assert sendto == protocol.transport.sendto
    assert addr == pair.remote_addr

    # aioice's queue must not see RTP any more: count what still goes through it
    connection = pair.protocol.receiver
    queued_rtp = []
    original_data_received = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if 127 < data[0] < 192 and not is_rtcp(data):
            queued_rtp.append(data)
        original_data_received(data, component)

    connection.data_received = data_received
    try:
        before = len(link.recorder.rtp)
        await wait_until(lambda: len(link.recorder.rtp) >= before + 20, 5, "20 RTP packets")
    finally:
        del connection.data_received

    vp8_pt = aiortc_hooks.negotiated(video_transceiver(link.receiver_pc)).codec.payloadType
    ssrc, _ = aiortc_hooks.sender_ssrcs(link.sender)
    for data in link.recorder.rtp:
        assert data[0] & 0xC0 == 0x80  # version 2: decrypted, not SRTP garbage
        assert not is_rtcp(data)
        assert data[1] & 0x7F == vp8_pt
        assert rtp.U32.unpack_from(data, 8)[0] == ssrc
        assert rtp.payload_offset(data) > 12  # aiortc sends the mid and abs-send-time
    # the packets are plain RTP aiortc can parse, with the VP8 descriptor in front
    first_key = [d for d in link.recorder.rtp if rtp.vp8_is_keyframe(d[rtp.payload_offset(d) :])]
    assert first_key, "the sender's first frame is a keyframe"

    # packets after the fast path went in came from the socket callback, not aioice's queue
    assert set(link.recorder.rtp_paths[before:]) == {"datagram_received"}
    assert queued_rtp == []
    # and aiortc's receiver (jitter buffer, decoder) never saw one
    assert link.aiortc_rtp == []
    assert tap.srtp_errors == 0
    link.stop()


async def test_tap_slow_path_replaces_handle_rtp_data(peers: Peers) -> None:
    """Before nomination RTP comes through aiortc's DTLS loop: `_handle_rtp_data` is ours."""
    link = TappedLink(peers)
    await link.start()
    protocol = link.nominated.protocol
    assert "datagram_received" in vars(protocol)
    # send every datagram through aioice again, as before the fast path was installed
    protocol.datagram_received = lambda data, addr: aioice.ice.StunProtocol.datagram_received(protocol, data, addr)
    before = len(link.recorder.rtp)
    await wait_until(lambda: len(link.recorder.rtp) >= before + 20, 5, "20 RTP packets via aiortc's DTLS loop")
    assert set(link.recorder.rtp_paths[before:]) == {"handle_rtp_data"}
    assert all(d[0] & 0xC0 == 0x80 and not is_rtcp(d) for d in link.recorder.rtp[before:])
    assert link.aiortc_rtp == []
    del protocol.datagram_received
    link.stop()


async def test_tap_observes_rtcp_and_aiortc_still_handles_it(peers: Peers) -> None:
    link = TappedLink(peers)
    await link.start()
    ssrc, _ = aiortc_hooks.sender_ssrcs(link.sender)
    # aiortc sends an SR every 0.5-1.5 s
    await wait_until(lambda: link.recorder.sender_reports(ssrc), 5, "an SR from the sender")
    for data in link.recorder.rtcp:
        assert is_rtcp(data)
        assert data[0] & 0xC0 == 0x80  # decrypted SRTCP
    # RTCP is only observed: aiortc's receiver got the same SR afterwards
    await wait_until(
        lambda: any(isinstance(p, RtcpSrPacket) and p.ssrc == ssrc for p in link.aiortc_rtcp),
        2,
        "aiortc's receiver to handle the SR",
    )
    assert link.aiortc_rtp == []
    link.stop()


async def test_tap_observes_rtcp_without_an_rtp_callback(peers: Peers) -> None:
    """A Subscriber taps RTCP only: RTP handling stays aiortc's (the socket is only watched for
    a peer's new address)."""
    link = TappedLink(peers, on_rtp=False)
    await link.start()
    await wait_until(lambda: link.aiortc_rtp, 5, "RTP to reach aiortc's receiver")
    ssrc, _ = aiortc_hooks.sender_ssrcs(link.sender)
    await wait_until(lambda: link.recorder.sender_reports(ssrc), 5, "an SR from the sender")
    assert link.recorder.rtp == []
    link.stop()


async def test_tap_send_rtcp_pli_reaches_the_sender(peers: Peers) -> None:
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    sender = link.sender
    keyframe_requests: list[float] = []
    # what Subscriber overrides to forward a player's PLI; aiortc calls it on PLI and FIR
    sender._send_keyframe = lambda: keyframe_requests.append(time.monotonic())
    ssrc, _ = aiortc_hooks.sender_ssrcs(sender)
    pli = RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=0x5EED, media_ssrc=ssrc)
    tap.send_rtcp(bytes(pli))
    await wait_until(lambda: keyframe_requests, 3, "the sender to get the PLI")
    assert tap.send_errors == 0
    link.stop()


async def test_tap_rtp_sender_reaches_the_remote_peer(peers: Peers) -> None:
    """rtp_sender(): protect with the session's SRTP context and sendto the pair."""
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    # tap the sending peer's transport too (already connected: the tap is ready at once)
    remote = Recorder()
    remote_dtls = aiortc_hooks.dtls_transports(link.sender_pc)[0]
    assert remote_dtls.state == "connected"
    remote_tap = TransportTap(remote_dtls, on_rtp=remote.on_rtp, on_rtcp=remote.on_rtcp)
    assert remote_tap.ready

    ext = rtp.mid_extension(1, "0")
    packets = [
        rtp.HEADER.pack(0x90, 0x80 | 100, 4000 + i, 90000 * i, 0xABCDEF01) + ext + bytes([i]) * (50 + i)
        for i in range(5)
    ]
    protect, sendto, addr = tap.rtp_sender()  # type: ignore[misc]
    for packet in packets:
        sendto(protect(packet), addr)
    await wait_until(lambda: len(remote.rtp) >= len(packets), 3, "the injected RTP")
    assert remote.rtp == packets
    assert tap.send_errors == 0
    remote_tap.close()
    link.stop()


@pytest.mark.parametrize("engine_name", ["compiled", "python"])
async def test_tap_rtp_output_reaches_the_remote_peer(peers: Peers, engine_name: str) -> None:
    """rtp_output(engine): the compiled Output finds the socket, the remote address, the SRTP
    context and srtp_protect inside aioice and pylibsrtp; the remote peer decrypts what it sends."""
    engine = fanout.COMPILED if engine_name == "compiled" else fanout.PYTHON
    assert engine is not None, "the compiled fan-out is not built"
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    remote = Recorder()
    remote_tap = TransportTap(aiortc_hooks.dtls_transports(link.sender_pc)[0], on_rtp=remote.on_rtp)
    output = tap.rtp_output(engine)
    assert isinstance(output, engine.Output)
    assert tap.rtp_output(engine) is output  # one per tap
    packets = [rtp.HEADER.pack(0x80, 100, 7000 + i, 3000 * i, 0x5EED) + bytes([i]) * (100 + i) for i in range(4)]
    for packet in packets:
        assert output.send(packet)
    await wait_until(lambda: len(remote.rtp) >= len(packets), 3, "the Output's RTP")
    assert remote.rtp == packets
    assert output.sent == len(packets) and output.errors == 0
    before = fanout.open_outputs()
    tap.close()  # closes the Output with the tap
    assert output.closed and not output.send(packets[0])
    if engine.compiled:
        assert fanout.open_outputs() == before - 1
    assert tap.rtp_output(engine) is None
    remote_tap.close()
    link.stop()


async def test_a_probe_of_an_address_nobody_answers_at_moves_nothing(peers: Peers) -> None:
    """A datagram from an unknown address starts one ICE check of it (probe_address); when no
    answer with the peer's credentials comes, the nominated pair and the tap stay put."""
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    connection = tap.dtls.transport._connection
    nominated = connection._nominated[1]
    moves: list[Any] = []
    undo = aiortc_hooks.on_pair_moved(connection, moves.append)
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))
    silent.setblocking(False)
    try:
        addr = silent.getsockname()
        aiortc_hooks.probe_address(connection, nominated.protocol, addr, lambda: 0)
        pair = next(p for p in connection._check_list if p.remote_addr == addr)
        assert pair.task is not None
        aiortc_hooks.probe_address(connection, nominated.protocol, addr, lambda: 0)  # rate-limited: one check
        request = await asyncio.wait_for(asyncio.get_running_loop().sock_recv(silent, 2048), 2)
        assert request[:2] == b"\x00\x01"  # a STUN binding request reached the address
        await wait_until(lambda: pair.task is None, 10, "the unanswered check to end")
        assert connection._nominated[1] is nominated and moves == []
        assert pair not in connection._check_list  # the address is forgotten again
        assert all(c.port != addr[1] for c in connection._remote_candidates)
        # forged sources: only MAX_PROBES addresses are checked per window
        before = len(connection._check_list)
        for port in range(1, 20):
            aiortc_hooks.probe_address(connection, nominated.protocol, ("127.0.0.1", port), lambda: 0)
        assert len(connection._check_list) - before <= aiortc_hooks.MAX_PROBES
        assert tap.rtp_sender() is not None and tap.rtp_sender()[2] == nominated.remote_addr  # type: ignore[index]
    finally:
        undo()
        silent.close()
        link.stop()


async def test_tap_close_gives_the_socket_back(peers: Peers) -> None:
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    protocol = link.nominated.protocol
    assert "datagram_received" in vars(protocol)
    await wait_until(lambda: link.recorder.rtp, 5, "RTP")

    tap.close()
    assert "datagram_received" not in vars(protocol)
    assert protocol.datagram_received.__func__ is aioice.ice.StunProtocol.datagram_received
    assert not tap.ready and tap.rtp_sender() is None
    tap.send_rtcp(bytes(RtcpPsfbPacket(fmt=RTCP_PSFB_PLI, ssrc=1, media_ssrc=2)))
    assert tap.send_errors == 0

    # the socket is aioice's again: RTP goes through its queue and the DTLS loop
    connection = protocol.receiver
    queued_rtp = []
    original_data_received = connection.data_received

    def data_received(data: bytes, component: int) -> None:
        if 127 < data[0] < 192 and not is_rtcp(data):
            queued_rtp.append(data)
        original_data_received(data, component)

    connection.data_received = data_received
    try:
        await wait_until(lambda: len(queued_rtp) >= 5, 5, "RTP through aioice after close")
    finally:
        del connection.data_received
    seen_rtp, seen_rtcp = len(link.recorder.rtp), len(link.recorder.rtcp)
    await asyncio.sleep(1.6)  # > one RTCP interval
    # a closed tap calls nobody
    assert len(link.recorder.rtp) == seen_rtp
    assert len(link.recorder.rtcp) == seen_rtcp
    link.stop()


async def test_tap_closes_with_its_transport(peers: Peers) -> None:
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    protocol = link.nominated.protocol
    assert "datagram_received" in vars(protocol)
    await link.receiver_pc.close()  # DTLS statechange -> closed
    assert not tap.ready
    assert "datagram_received" not in vars(protocol)
    link.stop()


async def test_tap_counts_srtp_errors_on_the_fast_path(peers: Peers) -> None:
    link = TappedLink(peers)
    await link.start()
    tap = link.tap
    assert tap is not None
    pair = link.nominated
    before = len(link.recorder.rtp)
    # looks like SRTP but does not authenticate: pylibsrtp.Error, counted, not raised
    pair.protocol.datagram_received(rtp.HEADER.pack(0x80, 100, 1, 2, 3) + bytes(40), pair.remote_addr)
    assert tap.srtp_errors == 1
    assert all(d[0] & 0xC0 == 0x80 for d in link.recorder.rtp[before:])
    link.stop()


def test_tap_fast_path_under_uvloop() -> None:
    """The server runs on uvloop: its datagram transport must look the callback up per packet."""
    uvloop = pytest.importorskip("uvloop")

    async def scenario() -> None:
        made = Peers()
        try:
            link = TappedLink(made)
            await link.start()
            protocol = link.nominated.protocol
            assert "datagram_received" in vars(protocol)
            before = len(link.recorder.rtp)
            await wait_until(lambda: len(link.recorder.rtp) >= before + 20, 5, "20 RTP packets")
            assert set(link.recorder.rtp_paths[before:]) == {"datagram_received"}
            assert link.aiortc_rtp == []
            link.stop()
        finally:
            await made.close()

    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(scenario())


# --------------------------------------------------------------------------------------------
# transceivers and senders
# --------------------------------------------------------------------------------------------


def media_sections(sdp: str) -> list[Any]:
    return SessionDescription.parse(sdp).media


async def test_payload_types_restrict_codecs_negotiated_sender_ssrcs(peers: Peers) -> None:
    offerer = peers.new()
    offerer.addTransceiver("video", direction="sendonly")  # every video codec aiortc has
    offerer.addTransceiver("audio", direction="sendonly")
    answerer = peers.new()
    seen: dict[str, Any] = {}

    def answer_with_h264(pc: RTCPeerConnection) -> None:
        video = video_transceiver(pc)
        offered = media_sections(offerer.localDescription.sdp)[0]
        # payload_types: the codecs the answerer has in common with the offer, by PT
        pts = aiortc_hooks.payload_types(video)
        assert sorted(pts) == sorted(c.payloadType for c in offered.rtp.codecs)
        assert {pt: c.mimeType for pt, c in pts.items()} == {c.payloadType: c.mimeType for c in offered.rtp.codecs}
        h264 = next(c for c in pts.values() if c.mimeType == "video/H264")
        rtx = next(c for c in pts.values() if c.mimeType == "video/rtx" and c.parameters["apt"] == h264.payloadType)
        seen["h264"], seen["rtx"] = h264.payloadType, rtx.payloadType
        # restrict_codecs: what createAnswer puts on the m-line
        aiortc_hooks.restrict_codecs(video, [h264.payloadType, rtx.payloadType])
        assert list(aiortc_hooks.payload_types(video)) == [h264.payloadType, rtx.payloadType]

    await exchange(offerer, answerer, after_remote=answer_with_h264)
    answer = media_sections(answerer.localDescription.sdp)
    assert answer[0].fmt == [seen["h264"], seen["rtx"]]

    # negotiated(): the offerer now agrees on H264 + its RTX, the extension ids and the mid
    for pc, sdp in ((offerer, answerer.localDescription.sdp), (answerer, answerer.localDescription.sdp)):
        section = media_sections(sdp)[0]
        video = video_transceiver(pc)
        agreed = aiortc_hooks.negotiated(video)
        assert agreed.codec is not None
        assert agreed.codec.mimeType == "video/H264"
        assert agreed.codec.payloadType == seen["h264"]
        assert agreed.rtx_payload_type == seen["rtx"]
        assert agreed.mid == section.rtp.muxId == video.mid
        assert agreed.extensions == {e.uri: e.id for e in section.rtp.headerExtensions}
        assert MID_URI in agreed.extensions

    audio = aiortc_hooks.negotiated(offerer.getTransceivers()[1])
    assert audio.codec is not None and audio.codec.mimeType == "audio/opus"
    assert audio.rtx_payload_type is None
    assert audio.mid == "1"

    # sender_ssrcs(): the SSRCs aiortc announces (a=ssrc-group:FID media rtx)
    for pc in (offerer, answerer):
        section = media_sections(pc.localDescription.sdp)[0]
        ssrc, rtx_ssrc = aiortc_hooks.sender_ssrcs(video_transceiver(pc).sender)
        assert section.ssrc_group[0].semantic == "FID"
        assert section.ssrc_group[0].items == [ssrc, rtx_ssrc]
        assert [s.ssrc for s in section.ssrc] == [ssrc, rtx_ssrc]
    # (closing a pc while aioice is still connecting leaks aioice's consent task)
    await connect(offerer, answerer)


async def test_restrict_codecs_to_nothing_declines_the_m_line(peers: Peers) -> None:
    """Publisher ignores extra tracks with restrict_codecs(t, ()): the answer must stay valid."""
    client = build_publisher_pc("VP8")
    second = build_publisher_pc("VP8", with_audio=False)
    client.pc.addTransceiver(second.video, direction="sendonly")
    peers.add(client.pc)
    peers.add(second.pc)
    server = peers.new()

    def ignore_second_video(pc: RTCPeerConnection) -> None:
        aiortc_hooks.restrict_codecs(pc.getTransceivers()[2], ())

    await exchange(client.pc, server, after_remote=ignore_second_video)
    sections = media_sections(server.localDescription.sdp)
    assert [s.kind for s in sections] == ["video", "audio", "video"]
    assert sections[2].direction == "inactive"
    assert sections[0].direction == "recvonly" and sections[1].direction == "recvonly"
    await connect(client.pc, server)
    assert client.pc.getTransceivers()[2].currentDirection == "inactive"
    client.stop_tracks()
    second.stop_tracks()


async def test_take_over_rtcp_silences_the_sender_and_keeps_bye(peers: Peers) -> None:
    """take_over_rtcp: the sender sends no SR of its own (its owner does), stop() still sends
    BYE and returns; sender_cname gives the CNAME aiortc put in the SDP."""
    sending = peers.new()
    quiet = sending.addTransceiver(IdleTrack("video"), direction="sendonly")
    quiet.setCodecPreferences(codec_preferences("video", "VP8"))
    loud = sending.addTransceiver(IdleTrack("audio"), direction="sendonly")
    aiortc_hooks.take_over_rtcp(quiet.sender)
    receiving = peers.new()
    recorder = Recorder()

    def tap(pc: RTCPeerConnection) -> None:
        TransportTap(aiortc_hooks.dtls_transports(pc)[0], on_rtcp=recorder.on_rtcp)

    await exchange(sending, receiving, after_remote=tap)
    await connect(sending, receiving)
    quiet_ssrc, _ = aiortc_hooks.sender_ssrcs(quiet.sender)
    loud_ssrc, _ = aiortc_hooks.sender_ssrcs(loud.sender)
    # aiortc's own loop sends an SR within 0.5-1.5 s: the untouched sender shows it works
    await wait_until(lambda: recorder.sender_reports(loud_ssrc), 5, "the untouched sender's SR")
    await asyncio.sleep(1.6)
    assert recorder.sender_reports(quiet_ssrc) == []
    cname = aiortc_hooks.sender_cname(quiet.sender)
    assert cname and f"cname:{cname}" in (sending.localDescription.sdp or "")

    await asyncio.wait_for(quiet.sender.stop(), 3)

    def byes() -> list[int]:
        return [s for d in recorder.rtcp for p in parse_rtcp(d) if isinstance(p, RtcpByePacket) for s in p.sources]

    await wait_until(lambda: quiet_ssrc in byes(), 3, "BYE from the silenced sender")


async def test_set_msid_and_idle_track_id_name_the_m_line(peers: Peers) -> None:
    """set_msid + IdleTrack(track_id=): the offer's a=msid names our stream and track ids."""
    pc = peers.new()
    video = pc.addTransceiver(IdleTrack("video", "ARDAMSvx"), direction="sendonly")
    aiortc_hooks.set_msid(video.sender, "room")
    pc.addTransceiver(IdleTrack("audio"), direction="sendonly")
    await pc.setLocalDescription(await pc.createOffer())
    sdp = pc.localDescription.sdp
    assert "a=msid:room ARDAMSvx" in sdp
    assert sdp.count("a=msid:") == 2


async def test_idle_track_parks_the_sender_and_stops_cleanly(peers: Peers, caplog: pytest.LogCaptureFixture) -> None:
    calls: list[float] = []

    class CountingIdleTrack(IdleTrack):
        async def recv(self) -> Any:
            calls.append(time.monotonic())
            return await super().recv()

    track = CountingIdleTrack("video")
    sending = peers.new()
    transceiver = sending.addTransceiver(track, direction="sendonly")
    transceiver.setCodecPreferences(codec_preferences("video", "VP8"))
    receiving = peers.new()
    recorder = Recorder()
    taps: list[TransportTap] = []

    def tap(pc: RTCPeerConnection) -> None:
        taps.append(TransportTap(aiortc_hooks.dtls_transports(pc)[0], on_rtp=recorder.on_rtp))

    with caplog.at_level(logging.DEBUG, logger="aiortc"):
        await exchange(sending, receiving, after_remote=tap)
        await connect(sending, receiving)
        sender = transceiver.sender
        rtp_task = sender._RTCRtpSender__rtp_task
        await wait_until(lambda: calls, 3, "the sender to ask the track for a frame")
        await asyncio.sleep(0.5)  # 25 turns of aiortc's 20 ms idle poll
        # one recv() that never returns: no polling loop, no RTP
        assert len(calls) == 1
        assert not rtp_task.done()
        assert recorder.rtp == []
        assert track.readyState == "live"

        await asyncio.wait_for(sending.close(), 5)
        assert rtp_task.done() and not rtp_task.cancelled()  # aiortc's loop exited normally
        assert track.readyState == "ended"
        assert track._never.cancelled()
        await asyncio.wait_for(receiving.close(), 5)
        await assert_no_pending_tasks()
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not problems, [r.getMessage() for r in problems]


async def test_idle_track_stop_releases_the_sender(peers: Peers, caplog: pytest.LogCaptureFixture) -> None:
    """Stopping the track itself (not the pc) ends the sender's parked recv() and RTP loop."""
    track = IdleTrack("audio")
    sending = peers.new()
    transceiver = sending.addTransceiver(track, direction="sendonly")
    receiving = peers.new()
    with caplog.at_level(logging.DEBUG, logger="aiortc"):
        await exchange(sending, receiving)
        await connect(sending, receiving)
        rtp_task = transceiver.sender._RTCRtpSender__rtp_task
        await asyncio.sleep(0.1)
        assert not rtp_task.done()
        track.stop()
        await wait_until(rtp_task.done, 2, "the sender's RTP loop to end")
        assert not rtp_task.cancelled()
        assert track.readyState == "ended"
    problems = [r for r in caplog.records if r.levelno >= logging.WARNING or r.exc_info]
    assert not problems, [r.getMessage() for r in problems]


async def test_no_consent_checks_start_on_a_closing_connection() -> None:
    """aioice can start its consent loop after close(); the patch makes that a no-op."""
    import aioice.ice

    aiortc_hooks.install_ice_patches()
    connection = aioice.ice.Connection(ice_controlling=True)
    connection.remote_password = "x" * 22
    connection._closing = True
    await asyncio.wait_for(connection.query_consent(), timeout=1)  # returns at once
    connection._closing = False
    task = asyncio.ensure_future(connection.query_consent())
    await asyncio.sleep(0.05)
    assert not task.done()  # an open connection keeps checking
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


def test_direct_srtp_functions_match_pylibsrtp() -> None:
    """srtp_function reaches into pylibsrtp's session buffers; it must agree with the library."""
    import struct

    import pylibsrtp

    key = bytes(range(30))

    def session(kind: int) -> pylibsrtp.Session:
        policy = pylibsrtp.Policy(key=key, ssrc_type=kind, srtp_profile=pylibsrtp.Policy.SRTP_PROFILE_AES128_CM_SHA1_80)
        return pylibsrtp.Session(policy=policy)

    library_tx, direct_tx = session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND), session(pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    rx = session(pylibsrtp.Policy.SSRC_ANY_INBOUND)
    protect = aiortc_hooks.srtp_function(direct_tx, "protect")
    unprotect = aiortc_hooks.srtp_function(rx, "unprotect")
    for seq in range(5):
        packet = struct.pack("!BBHII", 0x80, 96, seq, seq * 3000, 0x1234) + bytes([seq]) * 900
        protected = protect(packet)
        assert protected == library_tx.protect(packet)
        assert unprotect(protected) == packet
    with pytest.raises(pylibsrtp.Error):
        unprotect(protected)  # replayed
    with pytest.raises(pylibsrtp.Error):
        protect(bytes(1500))  # too long for the buffer with its trailer


async def test_never_decode_stops_the_decoder_thread() -> None:
    """A forwarded receiver keeps no decoder thread (aiortc starts one per receiver)."""
    import threading

    from tests.support.amsclient import build_publisher_pc, new_peer_connection, wait_for_connected

    sender = build_publisher_pc("VP8", with_audio=False)
    receiver_pc = new_peer_connection()
    try:
        await sender.pc.setLocalDescription(await sender.pc.createOffer())
        await receiver_pc.setRemoteDescription(sender.pc.localDescription)
        transceiver = receiver_pc.getTransceivers()[0]
        aiortc_hooks.never_decode(transceiver.receiver)
        await receiver_pc.setLocalDescription(await receiver_pc.createAnswer())
        await sender.pc.setRemoteDescription(receiver_pc.localDescription)
        await wait_for_connected(receiver_pc)
        for _ in range(50):
            if transceiver.receiver._RTCRtpReceiver__started:
                break
            await asyncio.sleep(0.05)
        assert transceiver.receiver._RTCRtpReceiver__started
        assert transceiver.receiver._RTCRtpReceiver__decoder_thread is None
        assert not any(t.name == "video-decoder" and t.is_alive() for t in threading.enumerate())
    finally:
        await sender.pc.close()
        await receiver_pc.close()
