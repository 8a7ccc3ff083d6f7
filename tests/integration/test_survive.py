"""Sessions that survive the network (issue 13): a participant whose network disappears is out.

The network of one aiortc client is cut at its own sockets (every datagram in and out dropped,
STUN included): the server hears nothing more from it, as when a link goes down, while its
WebSocket stays open. The server must notice from the media plane alone (media inactivity,
then ICE consent) and tell the others, within 10 s.
"""

from __future__ import annotations

import statistics
import time
from pathlib import Path
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from confero.server import Server
from confero.store import TokenRecord
from tests.support import eventually
from tests.support.amsclient import AmsSocket, Player, Publisher
from tests.support.server import assert_no_leaks, make_settings, wait_idle
from tests.support.udprelay import Relays

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
ROOM = "survive"
TRIES = 3
GHOST_LIMIT = 10.0


def blackhole(pc: RTCPeerConnection) -> None:
    """Drop every datagram `pc` sends or receives from now on (its network is gone)."""

    def drop(*args: Any) -> None:
        pass

    for transceiver in pc.getTransceivers():
        connection = transceiver.receiver.transport.transport._connection
        for protocol in connection._protocols:
            protocol.datagram_received = drop
            if protocol.transport is not None:
                protocol.transport.sendto = drop
    if pc.sctp is not None:
        for protocol in pc.sctp.transport.transport._connection._protocols:
            protocol.datagram_received = drop
            if protocol.transport is not None:
                protocol.transport.sendto = drop


async def join(server: Server, stream_id: str, room: str = ROOM) -> AmsSocket:
    sock = await AmsSocket.connect(server.port)
    await sock.send({"command": "joinRoom", "room": room, "streamId": stream_id})
    await sock.wait_for(definition="joinedTheRoom", timeout=10)
    return sock


async def test_a_publisher_whose_network_is_gone_leaves_the_room_within_10_s(server: Server) -> None:
    delays = await ghost_publishers(server)
    print(
        f"ghost publisher: blackhole -> streamLeaved p50 {statistics.median(delays):.2f} s, worst {max(delays):.2f} s"
    )
    assert max(delays) <= GHOST_LIMIT, delays


async def test_ice_consent_alone_removes_a_ghost_within_10_s(tmp_path: Path) -> None:
    """With the media timeout off, the consent checks (1 s, 4 failures) find the ghost."""
    srv = Server(make_settings(tmp_path, media_timeout=0.0))
    await srv.start()
    try:
        delays = await ghost_publishers(srv, tries=1)
        await wait_idle(srv)
        assert_no_leaks(srv)
    finally:
        await srv.close()
    print(f"ghost publisher, consent only: blackhole -> streamLeaved {max(delays):.2f} s")
    assert 2.0 <= max(delays) <= GHOST_LIMIT, delays


async def ghost_publishers(server: Server, tries: int = TRIES) -> list[float]:
    """Seconds from each blackholed publisher's cut to its streamLeaved at another member."""
    watcher = await join(server, "watcher")
    delays: list[float] = []
    try:
        for i in range(tries):
            stream_id = f"ghost{i}"
            sock = await join(server, stream_id)
            publisher = Publisher(sock, stream_id, codec="VP8")
            try:
                await publisher.start()
                await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
                await watcher.wait_for(definition="streamJoined", stream_id=stream_id, timeout=10)
                assert publisher.pc is not None
                blackhole(publisher.pc)
                cut = time.monotonic()
                await watcher.wait_for(definition="streamLeaved", stream_id=stream_id, timeout=GHOST_LIMIT + 5)
                delays.append(time.monotonic() - cut)
                await eventually(
                    lambda: not server.dump()["router"]["publishers"], timeout=5, what="the ghost's publisher to go"
                )
            finally:
                await publisher.close()
                await sock.close()
    finally:
        await watcher.close()
    return delays


async def test_a_player_whose_network_is_gone_is_closed_within_10_s(server: Server) -> None:
    sock = await AmsSocket.connect(server.port)
    viewer = await AmsSocket.connect(server.port)
    publisher = Publisher(sock, "live", codec="VP8")
    delays: list[float] = []
    try:
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id="live", timeout=10)
        for _ in range(TRIES):
            player = Player(viewer, "live")
            try:
                await player.start()
                await player.counter.wait_frames(3)
                assert player.pc is not None
                blackhole(player.pc)
                cut = time.monotonic()
                await eventually(
                    lambda: not server.dump()["router"]["subscribers"],
                    timeout=GHOST_LIMIT + 5,
                    what="the ghost's subscriber to go",
                )
                delays.append(time.monotonic() - cut)
            finally:
                await player.close()
        assert [p["name"] for p in server.dump()["router"]["publishers"]] == ["live"]  # the publisher stays
    finally:
        await publisher.close()
        await viewer.close()
        await sock.close()
    print(f"ghost player: blackhole -> closed p50 {statistics.median(delays):.2f} s, worst {max(delays):.2f} s")
    assert max(delays) <= GHOST_LIMIT, delays


def drop_first_stun_copies(pc: RTCPeerConnection) -> list[bytes]:
    """Drop the first copy of every STUN binding request `pc` receives (its retransmissions
    pass), as a lossy link would; returns the transaction ids dropped so far (grows)."""
    dropped: list[bytes] = []
    connection = pc.getTransceivers()[0].receiver.transport.transport._connection
    for protocol in connection._protocols:
        original = protocol.datagram_received

        def received(data: bytes, addr: Any, original: Any = original) -> None:
            if data[:2] == b"\x00\x01" and len(data) >= 20:  # a binding request: 0x0001
                transaction = data[8:20]
                if transaction not in dropped:
                    dropped.append(transaction)
                    return
            original(data, addr)

        protocol.datagram_received = received
    return dropped


async def test_lost_consent_checks_are_retransmitted_not_counted_as_a_lost_peer(tmp_path: Path) -> None:
    """Every consent check's first datagram is lost: the retransmissions are answered, so the
    player stays for several consent windows (1 s x 4) with its media flowing."""
    srv = Server(make_settings(tmp_path, media_timeout=0.0))
    await srv.start()
    sock = await AmsSocket.connect(srv.port)
    viewer = await AmsSocket.connect(srv.port)
    publisher = Publisher(sock, "live", codec="VP8")
    player = Player(viewer, "live")
    try:
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id="live", timeout=10)
        await player.start()
        await player.counter.wait_frames(3)
        assert player.pc is not None
        dropped = drop_first_stun_copies(player.pc)
        window = srv.settings.ice_consent_interval * srv.settings.ice_consent_failures
        # More checks lost than one window's worth: each one was a failure before.
        await eventually(lambda: len(dropped) >= 2 * srv.settings.ice_consent_failures, timeout=30, what="checks lost")
        assert len(srv.router.subscribers) == 1, "a player whose checks were only delayed was closed"
        frames = player.counter.tracks[0].frames
        await eventually(lambda: player.counter.tracks[0].frames > frames + 10, timeout=10, what="frames still coming")
        assert len(srv.router.subscribers) == 1
        print(f"{len(dropped)} first copies of consent checks lost over > {2 * window:g} s: the player stayed")
    finally:
        await player.close()
        await publisher.close()
        await viewer.close()
        await sock.close()
        await srv.close()


# -- re-publish takeover ------------------------------------------------------------------------

RECONNECTS = 20


def server_publisher(server: Server, stream_id: str) -> Any:
    return next((p for p in server.router.publishers if p.name == stream_id and not p.closed), None)


async def refused_in_use(sock: AmsSocket, stream_id: str, token: str | None = None) -> None:
    """A stranger's publish of `stream_id` on `sock` is refused with streamIdInUse."""
    await sock.send({"command": "publish", "streamId": stream_id, **({"token": token} if token else {})})
    await sock.wait_for(definition="streamIdInUse", stream_id=stream_id, timeout=5)


async def reconnect_rounds(
    server: Server,
    stream_id: str,
    *,
    rounds: int = RECONNECTS,
    token: str | None = None,
    stranger_token: str | None = None,
    room: str = "",
) -> list[dict[str, Any]]:
    """The owner loses its network `rounds` times and re-publishes on a new socket each time;
    a stranger is refused while the owner is alive (and, with `stranger_token`, after it is
    gone too); the player (of the room when `room`) keeps its peer connection. Returns what
    the viewer (a room member with `room`) received until the last round."""
    sockets: list[AmsSocket] = []
    publishers: list[Publisher] = []
    extra = {"mainTrack": room} if room else None
    stranger = await AmsSocket.connect(server.port)
    viewer = await join(server, "watcher", room) if room else await AmsSocket.connect(server.port)
    player = Player(viewer, room or stream_id)
    try:
        sock = await AmsSocket.connect(server.port)
        sockets.append(sock)
        publisher = Publisher(sock, stream_id, codec="VP8", token=token, extra=extra)
        publishers.append(publisher)
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
        await player.start()
        await player.counter.wait_frames(3)
        pc = player.pc
        for _ in range(rounds):
            await refused_in_use(stranger, stream_id, stranger_token or token)
            assert publisher.pc is not None
            blackhole(publisher.pc)  # the owner's network is gone; its old socket stays open, silent
            sock.cut()
            await eventually(
                lambda: (p := server_publisher(server, stream_id)) is not None and p.idle_seconds() > 1.2,
                timeout=5,
                what="the server to stop hearing the owner's media",
            )
            if stranger_token:
                await refused_in_use(stranger, stream_id, stranger_token)  # the owner's token only
            sock = await AmsSocket.connect(server.port)
            sockets.append(sock)
            publisher = Publisher(sock, stream_id, codec="VP8", token=token, extra=extra)
            publishers.append(publisher)
            await publisher.start()  # never streamIdInUse: AmsError otherwise
            await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
            frames = player.video_frames
            await eventually(
                lambda f=frames: player.video_frames >= f + 3,  # type: ignore[misc]
                timeout=10,
                what="the player to decode the new publisher's frames",
            )
            assert player.pc is pc
        await refused_in_use(stranger, stream_id, stranger_token or token)
        assert not [m for m in viewer.history if m.get("definition") == "play_finished"]
        assert len([p for p in server.router.publishers if not p.closed]) == 1
        seen = list(viewer.history)
    finally:
        await player.close()
        for publisher in publishers:
            await publisher.close()
        for sock in [*sockets, stranger]:
            await sock.close()
        await viewer.close()
    return seen


async def test_twenty_reconnects_owner_always_accepted_stranger_always_refused(server: Server) -> None:
    await reconnect_rounds(server, "owned")


async def test_a_room_member_reconnects_without_leaving(server: Server) -> None:
    """The others see no streamLeaved/streamJoined flap; the room play keeps its m-lines."""
    seen = await reconnect_rounds(server, "member", rounds=5, room="stay")
    definitions = [m.get("definition") for m in seen]
    assert definitions.count("streamJoined") == 1, definitions
    assert "streamLeaved" not in definitions and "subtrackRemoved" not in definitions, definitions


async def test_with_token_control_only_the_owners_token_takes_over(server: Server) -> None:
    server.applications[APP].app_settings.publishTokenControlEnabled = True
    expires = int(time.time()) + 600
    for token in ("owner-token", "stranger-token"):
        await server.store.save_token(APP, TokenRecord(token, "guarded", expires, "publish"))
    await reconnect_rounds(server, "guarded", rounds=5, token="owner-token", stranger_token="stranger-token")


async def test_the_sdks_reconnect_stop_then_publish_on_the_same_socket_does_not_flap(server: Server) -> None:
    """The official SDK's tryAgain(): `stop`, then 500 ms later `publish` of the same id, on the
    socket that survived. The stream and its players stay; the room sees no flap."""
    room, stream_id = "sdk", "sdkpub"
    viewer = await join(server, "watcher", room)
    sock = await join(server, stream_id, room)
    player = Player(viewer, room)
    publishers: list[Publisher] = []
    try:
        publisher = Publisher(sock, stream_id, codec="VP8")
        publishers.append(publisher)
        await publisher.start()
        await player.start()
        await player.counter.wait_frames(3)
        pc = player.pc
        for _ in range(5):
            assert publisher.pc is not None
            blackhole(publisher.pc)
            await eventually(
                lambda: (p := server_publisher(server, stream_id)) is not None and p.idle_seconds() > 1.2,
                timeout=5,
                what="the server to stop hearing the publisher's media",
            )
            await publisher.stop()  # sends stop
            publisher = Publisher(sock, stream_id, codec="VP8")
            publishers.append(publisher)
            await publisher.start()
            frames = player.video_frames
            await eventually(
                lambda f=frames: player.video_frames >= f + 3,  # type: ignore[misc]
                timeout=10,
                what="the room play to decode the new publisher's frames",
            )
            assert player.pc is pc
        definitions = [m.get("definition") for m in viewer.history]
        assert definitions.count("streamJoined") == 1, definitions
        assert "streamLeaved" not in definitions and "subtrackRemoved" not in definitions, definitions
        assert "play_finished" not in definitions, definitions
    finally:
        await player.close()
        for p in publishers:
            await p.close()
        await sock.close()
        await viewer.close()


async def test_a_stop_after_media_loss_without_a_publish_ends_the_stream_after_the_grace(server: Server) -> None:
    viewer = await join(server, "watcher", "grace")
    sock = await join(server, "lone", "grace")
    publisher = Publisher(sock, "lone", codec="VP8")
    try:
        await publisher.start()
        await viewer.wait_for(definition="streamJoined", stream_id="lone", timeout=10)
        assert publisher.pc is not None
        blackhole(publisher.pc)
        await eventually(
            lambda: (p := server_publisher(server, "lone")) is not None and p.idle_seconds() > 1.2,
            timeout=5,
            what="the server to stop hearing the publisher's media",
        )
        await publisher.stop()
        await viewer.wait_for(definition="streamLeaved", stream_id="lone", timeout=5)
        await eventually(lambda: not server.dump()["applications"][APP]["streams"], timeout=5, what="the stream to end")
    finally:
        await publisher.close()
        await sock.close()
        await viewer.close()


# -- address change -----------------------------------------------------------------------------

ADDRESS_CHANGE_LIMIT = 3.0
ADDRESS_CHANGES = 20


async def address_changes(server: Server, moving: str, moves: int) -> list[float]:
    """A publisher of "live" and a player of it; the traffic of one of them (`moving`:
    "player" or "publisher") comes through a relay that moves it to a new address and port
    (Wi-Fi to mobile, a NAT rebinding) `moves` times. Seconds from each move until the server
    sends to the new address and the player has decoded 3 more frames (the video settles for
    15 frames before the next move); no peer connection is replaced and nothing ends."""
    sock = await AmsSocket.connect(server.port)
    viewer = await AmsSocket.connect(server.port)
    relays = await Relays().start()
    publisher = Publisher(sock, "live", codec="VP8")
    player = Player(viewer, "live")
    peer = player if moving == "player" else publisher
    peer.rewrite, peer.rewrite_local = relays.rewrite, relays.rewrite_local
    delays: list[float] = []
    try:
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id="live", timeout=10)
        await player.start()
        await player.counter.wait_frames(5)
        assert len(relays.by_target) == 1, relays.by_target
        relay = next(iter(relays.by_target.values()))
        subscriber = next(iter(server.router.subscribers))
        for _ in range(moves):
            await relay.rebind()
            moved = time.monotonic()
            frames = player.counter.tracks[0].frames
            await eventually(
                lambda frames=frames: (
                    server_sends_to(server, relay.outside) and player.counter.tracks[0].frames >= frames + 3
                ),
                timeout=ADDRESS_CHANGE_LIMIT + 7,
                what=lambda: (
                    f"video after the move to {relay.outside} ({[p.dump() for p in server.router.publishers]}, "
                    f"frames {player.counter.tracks[0].frames}, decode errors {player.decode_counter.count})"
                ),
            )
            delays.append(time.monotonic() - moved)
            settled = player.counter.tracks[0].frames
            await eventually(
                lambda settled=settled: player.counter.tracks[0].frames >= settled + 15,
                timeout=10,
                what="video to settle",
            )
        assert not publisher.finished.is_set() and not player.finished.is_set()
        assert list(server.router.subscribers) == [subscriber] and not subscriber.closed, (
            "the player's connection was replaced"
        )
    finally:
        await player.close()
        await publisher.close()
        await viewer.close()
        await sock.close()
        relays.close()
    print(
        f"{moving} address change -> video back: p50 {statistics.median(delays):.2f} s, "
        f"worst {max(delays):.2f} s over {len(delays)}"
    )
    return delays


async def test_a_players_address_changes_mid_call_and_media_is_back_within_3_s(server: Server) -> None:
    delays = await address_changes(server, "player", ADDRESS_CHANGES)
    assert max(delays) <= ADDRESS_CHANGE_LIMIT, delays


async def test_a_publishers_address_changes_mid_call_and_its_players_see_no_gap(server: Server) -> None:
    """The server follows the publisher (its RTCP goes to the new address) and the player keeps
    decoding."""
    delays = await address_changes(server, "publisher", 5)
    assert max(delays) <= ADDRESS_CHANGE_LIMIT, delays


def server_sends_to(server: Server, addr: tuple[str, int]) -> bool:
    """Some server peer's nominated ICE pair is `addr` (what its media and RTCP go to)."""
    return any(addr in peer.remote_addresses() for peer in [*server.router.publishers, *server.router.subscribers])


async def test_a_publisher_whose_media_stopped_but_whose_socket_answers_keeps_its_id(server: Server) -> None:
    """The owner's media stops, but its WebSocket answers the server's probe (a ping): another
    publish of its id is refused. Once the socket stops answering too, the publish takes over."""
    owner = await AmsSocket.connect(server.port)
    other = await AmsSocket.connect(server.port)
    first = Publisher(owner, "probed", codec="VP8")
    second = Publisher(other, "probed", codec="VP8")
    try:
        await first.start()
        await owner.wait_for(definition="publish_started", stream_id="probed", timeout=10)
        assert first.pc is not None
        blackhole(first.pc)
        await eventually(
            lambda: (p := server_publisher(server, "probed")) is not None and p.idle_seconds() > 1.2,
            timeout=5,
            what="the owner's media to stop",
        )
        await refused_in_use(other, "probed")  # its socket answered the probe
        owner.cut()
        started = time.monotonic()
        await second.start()
        await other.wait_for(definition="publish_started", stream_id="probed", timeout=10)
        print(f"probe unanswered -> takeover in {time.monotonic() - started:.2f} s")
    finally:
        await second.close()
        await first.close()
        await other.close()
        await owner.close()


async def test_a_websocket_whose_network_is_gone_is_closed_by_the_heartbeat(tmp_path: Path) -> None:
    """The client's socket stops answering (its TCP connection still open): the server pings it
    after `ws_heartbeat` seconds of silence, closes it when no answer comes within half of that,
    and ends what it started (its room stream leaves), even though its media still flows."""
    srv = Server(make_settings(tmp_path, ws_heartbeat=1.0))
    await srv.start()
    try:
        watcher = await join(srv, "watcher")
        sock = await join(srv, "cut")
        publisher = Publisher(sock, "cut", codec="VP8")
        try:
            await publisher.start()
            await watcher.wait_for(definition="streamJoined", stream_id="cut", timeout=10)
            assert len(srv.sessions) == 2
            sock.cut()
            cut = time.monotonic()
            await watcher.wait_for(definition="streamLeaved", stream_id="cut", timeout=10)
            took = time.monotonic() - cut
            await eventually(lambda: len(srv.sessions) == 1, timeout=5, what="the silent socket's session to close")
            # the watcher's socket, as silent but answering the pings, stays
            await watcher.send({"command": "ping"})
            await watcher.wait_for("pong", timeout=5)
            print(f"silent WebSocket -> closed, its stream left: {took:.2f} s (heartbeat 1 s)")
            assert took < 1.0 + 0.5 + 2.0, took
        finally:
            await publisher.close()
            await sock.close()
            await watcher.close()
        await wait_idle(srv)
        assert_no_leaks(srv)
    finally:
        await srv.close()
