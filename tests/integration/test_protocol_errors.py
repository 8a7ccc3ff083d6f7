"""Bad input gets Ant Media's `error` replies; the connection and other clients carry on."""

from __future__ import annotations

import json

import pytest

from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsSocket, Publisher
from tests.support.clients import Clients

pytestmark = pytest.mark.integration


async def expect_error(sock: AmsSocket, definition: str, timeout: float = 5) -> dict:
    msg = await sock.wait_for(lambda m: m.get("command") == "error", timeout=timeout)
    assert msg["definition"] == definition, msg
    return msg


async def still_usable(sock: AmsSocket) -> None:
    await sock.send({"command": "ping"})
    await sock.wait_for("pong", timeout=5)


BAD_MESSAGES = [
    pytest.param({"command": "publish"}, "noStreamNameSpecified", id="publish-without-id"),
    pytest.param({"command": "play", "streamId": ""}, "noStreamNameSpecified", id="play-empty-id"),
    pytest.param({"command": "publish", "streamId": "bad id!"}, "invalidStreamName", id="invalid-chars"),
    pytest.param({"command": "play", "streamId": "nobody"}, "no_stream_exist", id="play-unknown"),
    pytest.param({"command": "getStreamInfo", "streamId": "nobody"}, "no_stream_exist", id="info-unknown"),
    pytest.param({"command": "fly", "streamId": "x"}, "unknown_command", id="unknown-command"),
    pytest.param({"streamId": "x"}, "missingParameter", id="no-command"),
    pytest.param(
        {"command": "takeCandidate", "streamId": "x", "label": "zero", "candidate": "c"},
        "invalid_field",
        id="wrong-type",
    ),
    pytest.param(
        {
            "command": "takeCandidate",
            "streamId": "x",
            "label": 0,
            "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
        },
        "no_peer_associated_before",
        id="candidate-without-peer",
    ),
    pytest.param(
        {"command": "takeConfiguration", "streamId": "x", "type": "answer", "sdp": "v=0"},
        "notSetRemoteDescription",
        id="answer-without-play",
    ),
]


@pytest.mark.parametrize("message,definition", BAD_MESSAGES)
async def test_bad_command_gets_error_and_connection_stays_usable(
    server: Server, message: dict, definition: str
) -> None:
    async with await AmsSocket.connect(server.port) as sock:
        await sock.send(message)
        error = await expect_error(sock, definition)
        if definition == "no_stream_exist":
            assert error["error_code"] == "404" and error["streamId"] == "nobody"
        await still_usable(sock)


@pytest.mark.parametrize("raw", ["{not json", "[1, 2]", '"text"', "", "null"])
async def test_malformed_frames(server: Server, raw: str) -> None:
    async with await AmsSocket.connect(server.port) as sock:
        await sock.send_raw(raw)
        await expect_error(sock, "invalid_json")
        await still_usable(sock)


async def test_stream_id_in_use_from_another_connection(server: Server) -> None:
    async with await AmsSocket.connect(server.port) as a, await AmsSocket.connect(server.port) as b:
        await a.send({"command": "publish", "streamId": "taken"})
        await a.wait_for("start")
        await b.send({"command": "publish", "streamId": "taken"})
        await expect_error(b, "streamIdInUse")
        await a.send({"command": "publish", "streamId": "taken"})
        await expect_error(a, "already_publishing")
        await a.send({"command": "stop", "streamId": "taken"})
        await a.wait_for(definition="publish_finished", stream_id="taken")
        # stop frees the id at once
        await b.send({"command": "publish", "streamId": "taken"})
        await b.wait_for("start")


async def test_unparsable_sdp_frees_the_stream(server: Server) -> None:
    async with await AmsSocket.connect(server.port) as sock:
        await sock.send({"command": "publish", "streamId": "sdp"})
        await sock.wait_for("start")
        await sock.send({"command": "takeConfiguration", "streamId": "sdp", "type": "offer", "sdp": "garbage"})
        await expect_error(sock, "notSetRemoteDescription")
        await still_usable(sock)
        assert server.applications["WebRTCAppEE"].streams == {}
        await sock.send({"command": "publish", "streamId": "sdp"})
        await sock.wait_for("start")


async def test_video_codec_the_server_does_not_accept(server: Server) -> None:
    server.router.codecs = ("video/VP8", "audio/opus")
    async with await AmsSocket.connect(server.port) as sock:
        publisher = Publisher(sock, "h264only", codec="H264")
        with pytest.raises(Exception):  # noqa: B017 - whatever the client raises; the error message is what counts
            await publisher.start(timeout=5)
        error = await expect_error(sock, "unsupported_codec")
        assert "H264" in error["information"]
        await publisher.close()
        await still_usable(sock)


async def test_garbage_never_disturbs_another_clients_stream(server: Server, clients: Clients) -> None:
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    bad = await clients.socket()
    publisher = clients.publisher(pub_sock, "calm", codec="VP8")
    player = clients.player(play_sock, "calm")
    await publisher.start()
    await pub_sock.wait_for(definition="publish_started", stream_id="calm")
    await player.start()
    await player.wait_frames(10)
    for message, _definition in [p.values for p in BAD_MESSAGES]:
        await bad.send(message)
    for target in ("stop", "takeConfiguration", "takeCandidate"):
        # Commands naming someone else's stream touch nothing of theirs.
        await bad.send({"command": target, "streamId": "calm", "type": "offer", "sdp": "x", "candidate": "x"})
    await bad.send_raw("\x00\xff{{")
    await bad.send_raw(json.dumps({"command": "publish", "streamId": "calm"}))
    await bad.wait_for(definition="streamIdInUse", timeout=10)
    before = player.video_frames
    await eventually(
        lambda: player.video_frames > before + 20, timeout=10, what=f"20 more frames than {before} at the player"
    )
    assert player.video_frames > before + 20
    assert player.decode_errors == 0


async def test_player_that_vanishes_without_stop_is_released(server: Server, clients: Clients) -> None:
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "left", codec="VP8", with_audio=False)
    player = clients.player(play_sock, "left")
    await publisher.start()
    await pub_sock.wait_for(definition="publish_started", stream_id="left")
    await player.start()
    await player.wait_frames(5)
    assert len(server.router.subscribers) == 1
    await player.pc.close()  # DTLS close_notify, no `stop` on the socket
    await play_sock.wait_for(definition="play_finished", stream_id="left", timeout=10)
    assert not server.router.subscribers
    assert len(server.router.publishers) == 1


async def test_publish_that_never_connects_times_out(server: Server) -> None:
    server.settings.publish_timeout = 1.5
    async with await AmsSocket.connect(server.port) as sock:
        publisher = Publisher(sock, "ghost", codec="VP8")
        await sock.send({"command": "publish", "streamId": "ghost"})
        await sock.wait_for("start")
        # An offer whose ICE credentials lead nowhere: the client never answers checks.
        offer_pc = publisher  # keep a reference for close()
        from tests.support.amsclient import build_publisher_pc

        media = build_publisher_pc("VP8")
        await media.pc.setLocalDescription(await media.pc.createOffer())
        sdp = media.pc.localDescription.sdp.replace("a=candidate:", "a=x-candidate:")
        await media.pc.close()
        await sock.send({"command": "takeConfiguration", "streamId": "ghost", "type": "offer", "sdp": sdp})
        await sock.wait_for(lambda m: m.get("command") == "takeConfiguration", timeout=5)
        await expect_error(sock, "publishTimeoutError", timeout=10)
        await sock.wait_for(definition="publish_finished", stream_id="ghost", timeout=5)
        assert server.applications["WebRTCAppEE"].streams == {}
        assert not server.router.publishers
        await offer_pc.close()


async def test_closing_the_socket_mid_publish_releases_everything(server: Server) -> None:
    sock = await AmsSocket.connect(server.port)
    await sock.send({"command": "publish", "streamId": "half"})
    await sock.wait_for("start")
    await sock.close()
    await eventually(lambda: not server.applications["WebRTCAppEE"].streams, timeout=2.5, what="the stream to go")
    assert server.applications["WebRTCAppEE"].streams == {}


async def test_silent_player_is_released_after_consent_expires(
    server: Server, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    import aioice.ice

    monkeypatch.setattr(aioice.ice, "CONSENT_INTERVAL", 0.1)
    pub_sock = await clients.socket()
    play_sock = await clients.socket()
    publisher = clients.publisher(pub_sock, "silent", codec="VP8", with_audio=False)
    player = clients.player(play_sock, "silent")
    await publisher.start()
    await pub_sock.wait_for(definition="publish_started", stream_id="silent")
    await player.start()
    await player.wait_frames(5)
    # The player's machine vanishes: nothing in, nothing out, no DTLS close.
    pair = player.pc.getTransceivers()[0].receiver.transport.transport._connection._nominated[1]
    pair.protocol.datagram_received = lambda data, addr: None
    pair.protocol.transport.sendto = lambda data, addr=None: None
    await play_sock.wait_for(definition="play_finished", stream_id="silent", timeout=15)
    assert not server.router.subscribers
    assert server.applications["WebRTCAppEE"].streams["silent"].playbacks == set()
