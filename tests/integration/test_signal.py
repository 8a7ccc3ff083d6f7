"""Branch `signal` with real aiortc peers: the picture size in `streamInformation`, data-only
publish and play (the SDK's onlyDataChannel), per-player toggleVideo/toggleAudio,
subscribers and debug info of a live stream, and `server_will_stop` on shutdown."""

from __future__ import annotations

import json
from typing import Any

import pytest
from aiortc import RTCDataChannel

from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsSocket, Player, Publisher, chat
from tests.support.clients import Clients

pytestmark = pytest.mark.integration


def is_open(channel: RTCDataChannel | None) -> bool:
    return channel is not None and channel.readyState == "open"


async def live(clients: Clients, stream_id: str, **kw: Any) -> tuple[AmsSocket, Publisher]:
    sock = await clients.socket()
    publisher = clients.publisher(sock, stream_id, **kw)
    await publisher.start()
    await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
    return sock, publisher


async def playing(clients: Clients, stream_id: str, **kw: Any) -> tuple[AmsSocket, Player]:
    sock = await clients.socket()
    player = clients.player(sock, stream_id, **kw)
    await player.start()
    await sock.wait_for(definition="play_started", stream_id=stream_id, timeout=10)
    return sock, player


def downtracks(server: Server) -> dict[str, dict[str, Any]]:
    """The one player's copies by kind, as the media plane dumps them."""
    (subscriber,) = server.router.dump()["subscribers"]
    return {t["kind"]: t for t in subscriber["tracks"]}


@pytest.mark.parametrize("codec", ["VP8", "H264"])
async def test_stream_information_has_the_publishers_picture_size(server: Server, clients: Clients, codec: str) -> None:
    sock, _ = await live(clients, "sized", codec=codec)

    async def size() -> tuple[int, int]:
        await sock.send({"command": "getStreamInfo", "streamId": "sized"})
        reply = await sock.wait_for("streamInformation", timeout=5)
        (entry,) = reply["streamInfo"]
        return entry["streamWidth"], entry["streamHeight"]

    async def sized() -> bool:
        return await size() == (320, 240)

    await eventually(sized, timeout=10, what="the keyframe's size in streamInformation")
    reply = sock.find("streamInformation")[-1]
    assert reply["streamInfo"][0]["videoCodec"].lower() == codec.lower()


async def test_a_data_only_publish_is_played_on_its_data_channel(server: Server, clients: Clients) -> None:
    _, publisher = await live(clients, "chat", with_video=False, with_audio=False, data_channel=True)
    assert "m=application" in (publisher.answer_sdp or "") and "m=video" not in (publisher.answer_sdp or "")
    await eventually(lambda: is_open(publisher.channel), timeout=10, what="the publish channel")
    _, player = await playing(clients, "chat", count_media=False)
    assert player.id_mapping == {} and "m=video" not in (player.offer_sdp or "")
    await eventually(lambda: is_open(player.channel), timeout=10, what="the play channel")
    received: list[str | bytes] = []
    assert publisher.channel is not None and player.channel is not None
    publisher.channel.on("message", received.append)
    publisher.channel.send("to the player")
    await eventually(lambda: player.data_messages == ["to the player"], timeout=10, what="publisher -> player")
    player.channel.send(b"\x00back")
    await eventually(lambda: received == [b"\x00back"], timeout=10, what="player -> publisher")


async def test_a_room_member_publishing_data_only(server: Server, clients: Clients) -> None:
    """Alice publishes only a data channel in the room; Bob publishes audio and plays the room."""
    alice_sock, alice = await live(
        clients, "alice", with_video=False, with_audio=False, data_channel=True, extra={"mainTrack": "room1"}
    )
    await eventually(lambda: is_open(alice.channel), timeout=10, what="alice's channel")
    bob_sock, _ = await live(clients, "bob", with_video=False, extra={"mainTrack": "room1"})
    bob_play = clients.player(bob_sock, "room1", room="room1", extra={"userPublishId": "bob"}, count_media=False)
    await bob_play.start()
    await eventually(lambda: is_open(bob_play.channel), timeout=10, what="bob's room channel")
    await alice_sock.wait_for(definition="streamJoined", stream_id="bob", timeout=10)
    assert alice.channel is not None
    alice.channel.send("hello room")
    await eventually(lambda: chat(bob_play) == ["hello room"], timeout=10, what="alice's data in the room")
    await bob_sock.send({"command": "getRoomInfo", "room": "room1", "streamId": "bob"})
    info = await bob_sock.wait_for("roomInformation", timeout=5)
    assert info["streams"] == ["alice"]


async def test_toggle_video_stops_one_players_video_and_resumes_it(server: Server, clients: Clients) -> None:
    await live(clients, "tv")
    sock, player = await playing(clients, "tv")
    await player.wait_frames(10, 5, timeout=20)
    await sock.send({"command": "toggleVideo", "streamId": "tv", "trackId": "tv", "enabled": False})
    await eventually(lambda: downtracks(server)["video"]["enabled"] is False, timeout=5, what="video paused")
    paused_at = downtracks(server)["video"]["packets"]
    audio_at = downtracks(server)["audio"]["packets"]
    await eventually(lambda: downtracks(server)["audio"]["packets"] > audio_at + 50, timeout=10, what="audio")
    assert downtracks(server)["video"]["packets"] == paused_at  # audio flowed, video did not
    await sock.send({"command": "toggleVideo", "streamId": "tv", "trackId": "tv", "enabled": True})
    await eventually(lambda: downtracks(server)["video"]["packets"] > paused_at, timeout=10, what="video resumed")
    await sock.send({"command": "toggleAudio", "streamId": "tv", "trackId": "tv", "enabled": False})
    await eventually(lambda: downtracks(server)["audio"]["enabled"] is False, timeout=5, what="audio paused")
    await sock.round_trip()
    assert sock.find("error") == []


async def test_subscribers_and_debug_info_of_a_live_stream(server: Server, clients: Clients) -> None:
    pub_sock, _ = await live(clients, "watched")
    await playing(clients, "watched", count_media=False, extra={"subscriberId": "viewer-7"})
    await pub_sock.send({"command": "getSubscriberCount", "streamId": "watched"})
    count = await pub_sock.wait_for(definition="subscriberCount", timeout=5)
    assert count["count"] == 1 and count["streamId"] == "watched"
    await pub_sock.send({"command": "getSubscribers", "streamId": "watched", "offset": 0, "size": 10})
    listing = await pub_sock.wait_for(definition="subscriberList", timeout=5)
    (entry,) = [json.loads(e) for e in listing["subscriberList"]]
    assert entry["subscriberId"] == "viewer-7" and entry["connected"] is True and entry["type"] == "play"
    await pub_sock.send({"command": "getDebugInfo", "streamId": "watched"})
    debug = await pub_sock.wait_for(definition="debugInfo", timeout=5)
    body = json.loads(debug["debugInfo"])
    publish, play = body["connections"]
    assert publish["direction"] == "publish" and play["direction"] == "play"
    assert {t["kind"] for t in publish["tracks"]} == {"video", "audio"}
    assert all(t["packets"] > 0 for t in publish["tracks"])


async def test_server_will_stop_reaches_every_client_before_its_streams_end(server: Server, clients: Clients) -> None:
    pub_sock, _ = await live(clients, "going", with_video=False)
    play_sock, _ = await playing(clients, "going", count_media=False)
    idle = await clients.socket()
    await idle.round_trip()
    await server.close()
    for sock in (pub_sock, play_sock, idle):
        await eventually(sock.closed.is_set, timeout=10, what="the server to close the socket")
    definitions = lambda sock: [m.get("definition") for m in sock.history if m.get("command") == "notification"]  # noqa: E731
    assert definitions(pub_sock)[-2:] == ["server_will_stop", "publish_finished"]
    assert definitions(play_sock)[-2:] == ["server_will_stop", "play_finished"]
    assert definitions(idle) == ["server_will_stop"]
