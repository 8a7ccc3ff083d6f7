"""The commands of branch `signal` against the domain and a fake media plane: per-player track
switches, subscribers, debug info, data-only streams, `server_will_stop`, and JSON nulls."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator

import pytest

from confero import errors
from confero.domain import events
from confero.domain.application import Application
from confero.domain.client import Client
from confero.settings import Settings
from confero.signaling import handlers, wire
from confero.signaling import messages as m
from confero.store import MemoryStore
from tests.fast.fakemedia import FakeMedia, FakeSink
from tests.fast.test_domain import APP, World, until


@pytest.fixture
async def world() -> AsyncIterator[World]:
    settings = Settings(publish_timeout=5.0)
    settings.validate()
    media = FakeMedia()
    app = Application(APP, settings, MemoryStore(), media)
    yield World(app, media, app.ctx.store, settings)  # type: ignore[arg-type]
    for client in list(app.clients.values()):
        await client.close()
    await app.close()
    assert media.peers == [] and not app.streams and not app.rooms and not app.clients
    assert len(app.ctx.tasks) == 0


async def live_player(world: World, stream_id: str, **kw: str) -> tuple[Client, FakeSink]:
    player, sink = world.client()
    await player.play(stream_id, **kw)  # type: ignore[arg-type]
    await player.configure(stream_id, "answer", "answer")
    world.media.subscribers()[-1].connect()
    return player, sink


# -- JSON null -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "frame",
    [
        {
            "command": "joinRoom",
            "room": "r",
            "streamId": "a",
            "mode": None,
            "streamName": None,
            "role": None,
            "metadata": None,
        },
        {"command": "play", "streamId": "s", "token": None, "room": None, "trackList": None, "subscriberId": None},
        {
            "command": "publish",
            "streamId": "s",
            "token": None,
            "streamName": None,
            "mainTrack": None,
            "metaData": None,
            "video": None,
        },
        {"command": "takeCandidate", "streamId": "s", "label": None, "id": None, "candidate": ""},
        {"command": "getSubscribers", "streamId": "s", "offset": None, "size": None},
    ],
)
def test_a_json_null_is_an_absent_field(frame: dict[str, object]) -> None:
    name, command = m.decode(json.dumps(frame))
    defaults = m.COMMANDS[name](stream_id=command.stream_id)
    present = {k for k, v in frame.items() if v is not None and k != "command"}
    for field in m.COMMANDS[name].__struct_fields__:
        encoded = m.COMMANDS[name].__struct_encode_fields__[m.COMMANDS[name].__struct_fields__.index(field)]
        if encoded not in present:
            assert getattr(command, field) == getattr(defaults, field), field


def test_a_null_stream_id_is_a_missing_one() -> None:
    name, command = m.decode('{"command":"getStreamInfo","streamId":null}')
    assert name == "getStreamInfo" and command.stream_id == ""


# -- toggleVideo / toggleAudio --------------------------------------------------------------------


async def test_toggle_video_and_audio_pause_one_kind_of_a_play(world: World) -> None:
    pub, _ = world.client()
    await world.live_publisher(pub, "s1")
    player, _ = await live_player(world, "s1")
    subscriber = world.media.subscriber("s1/play")
    enabled = lambda: {s.track.kind: s.enabled for s in subscriber.sources}  # noqa: E731
    player.toggle_track("s1", "s1", "video", False)
    assert enabled() == {"video": False, "audio": True}
    player.toggle_track("s1", "ARDAMSas1", "audio", False)
    assert enabled() == {"video": False, "audio": False}
    player.toggle_track("s1", "", "video", True)  # no track id: the stream's own
    assert enabled() == {"video": True, "audio": False}
    with pytest.raises(errors.NotFound):
        player.toggle_track("s1", "other", "video", False)
    with pytest.raises(errors.NotFound):
        pub.toggle_track("s1", "s1", "video", False)  # a publish is not a play
    assert wire.definition(errors.NotFound("x")) == "no_stream_exist"


async def test_toggle_on_a_room_play_takes_a_member_or_the_whole_room(world: World) -> None:
    alice, _ = world.client()
    bob, _ = world.client()
    await alice.join_room("room1", "alice")
    await bob.join_room("room1", "bob")
    await world.live_publisher(alice, "alice", room="room1")
    await world.live_publisher(bob, "bob", room="room1")
    carol, _ = world.client()
    await carol.play("room1", room="room1")
    subscriber = world.media.subscribers()[-1]
    carol.toggle_track("room1", "alice", "video", False)
    assert {(s.label, s.track.kind): s.enabled for s in subscriber.sources} == {
        ("alice", "video"): False,
        ("alice", "audio"): True,
        ("bob", "video"): True,
        ("bob", "audio"): True,
    }
    carol.toggle_track("room1", "room1", "audio", False)  # the room: every member's audio
    assert [s.enabled for s in subscriber.sources if s.track.kind == "audio"] == [False, False]


# -- subscribers, debug info -----------------------------------------------------------------------


async def test_subscriber_count_and_list_are_the_current_players(world: World) -> None:
    pub, _ = world.client()
    await world.live_publisher(pub, "s1")
    sent: list[m.Message | m.Raw] = []
    await handlers.handle(pub, world.app.app_settings, sent.append, m.GetSubscriberCount(stream_id="s1"), "")
    assert sent == [m.SubscriberCount(definition="subscriberCount", stream_id="s1", count=0)]
    first, _ = await live_player(world, "s1", subscriber_id="viewer-1")
    second, _ = world.client()
    await second.play("s1", subscriber_name="Ann")  # not connected yet
    sent.clear()
    await handlers.handle(pub, world.app.app_settings, sent.append, m.GetSubscriberCount(stream_id="s1"), "")
    await handlers.handle(pub, world.app.app_settings, sent.append, m.GetSubscribers(stream_id="s1"), "")
    count, listing = sent
    assert isinstance(count, m.SubscriberCount) and count.count == 2
    assert isinstance(listing, m.SubscriberList) and listing.definition == "subscriberList"
    entries = sorted((json.loads(e) for e in listing.subscriber_list), key=lambda e: e["subscriberId"])
    assert entries[1] == {
        "subscriberId": "viewer-1",
        "streamId": "s1",
        "subscriberName": "",
        "type": "play",
        "connected": True,
        "currentConcurrentConnections": 1,
        "concurrentConnectionsLimit": 1,
        "avgVideoBitrate": 0,
        "avgAudioBitrate": 0,
    }
    assert entries[0]["subscriberId"] == second.client_id and entries[0]["subscriberName"] == "Ann"
    assert entries[0]["connected"] is False
    sent.clear()
    await handlers.handle(
        pub, world.app.app_settings, sent.append, m.GetSubscribers(stream_id="s1", offset=1, size=5), ""
    )
    (page,) = sent
    assert isinstance(page, m.SubscriberList) and len(page.subscriber_list) == 1
    await first.stop("s1")
    assert len(pub.subscribers("s1")) == 1 and pub.subscribers("nothing") == []


async def test_debug_info_carries_the_publisher_and_players_counters(world: World) -> None:
    pub, _ = world.client()
    await world.live_publisher(pub, "s1")
    player, _ = await live_player(world, "s1")
    sent: list[m.Message | m.Raw] = []
    await handlers.handle(player, world.app.app_settings, sent.append, m.GetDebugInfo(stream_id="s1"), "")
    (reply,) = sent
    assert isinstance(reply, m.DebugInfo) and reply.definition == "debugInfo" and reply.stream_id == "s1"
    body = json.loads(reply.debug_info)
    assert body["type"] == "stream" and body["streamInfo"]["streamWidth"] == 640
    publish, play = body["connections"]
    assert publish["direction"] == "publish" and publish["clientId"] == pub.client_id and publish["connected"]
    assert {t["kind"]: t["packets"] for t in publish["tracks"]} == {"video": 10, "audio": 10}
    assert play["direction"] == "play" and play["clientId"] == player.client_id
    assert [t["kind"] for t in play["tracks"]] == ["video", "audio"]
    assert json.loads(wire.debug_info(pub.debug_info("nothing")).debug_info)["type"] == "none"


async def test_debug_info_of_a_room(world: World) -> None:
    alice, _ = world.client()
    await world.live_publisher(alice, "alice", room="room1")
    bob, _ = world.client()
    await bob.play("room1", room="room1")
    info = bob.debug_info("room1")
    assert info.kind == "room" and [leg.direction for leg in info.legs] == ["publish", "room play"]


# -- data-only publish and play ------------------------------------------------------------------


async def test_a_data_only_stream_is_published_and_played_on_its_data_channel(world: World) -> None:
    pub, pub_sink = world.client()
    await pub.publish("d1")
    await pub.configure("d1", "offer", "data")
    world.media.publisher("d1").connect()
    await until(lambda: world.app.streams.live["d1"].started, "d1 to start")
    assert pub_sink.of(events.PublishStarted) == [events.PublishStarted("d1")]
    player, sink = world.client()
    await player.play("d1")
    (offer,) = sink.of(events.Offer)
    assert isinstance(offer, events.Offer) and offer.id_mapping == {}
    subscriber = world.media.subscriber("d1/play")
    assert subscriber.data_channel == "d1" and subscriber.sources == []
    assert player.stream_info("d1").width == 0


async def test_a_data_only_stream_cannot_be_played_without_data_channels(world: World) -> None:
    world.app.update_settings({"dataChannelEnabled": False})
    pub, _ = world.client()
    await pub.publish("d1")
    await pub.configure("d1", "offer", "data")
    world.media.publisher("d1").connect()
    await until(lambda: world.app.streams.live["d1"].started, "d1 to start")
    player, _ = world.client()
    with pytest.raises(errors.NotFound):
        await player.play("d1")


# -- server_will_stop -------------------------------------------------------------------------------


async def test_server_will_stop_reaches_every_client_before_any_stream_ends(world: World) -> None:
    pub, pub_sink = world.client()
    await world.live_publisher(pub, "s1")
    _, player_sink = await live_player(world, "s1")
    idle, idle_sink = world.client()
    await world.app.close()
    for sink in (pub_sink, player_sink, idle_sink):
        assert sink.of(events.ServerWillStop) == [events.ServerWillStop()]
    assert pub_sink.kinds()[-2:] == ["ServerWillStop", "PublishFinished"]
    assert player_sink.kinds()[-2:] == ["ServerWillStop", "PlayFinished"]
    assert wire.event_message(events.ServerWillStop()) == m.Notification(definition="server_will_stop")
    with pytest.raises(errors.ShuttingDown):
        await idle.publish("late")


async def test_while_stopping_what_runs_goes_on_and_nothing_new_is_taken(world: World) -> None:
    pub, pub_sink = world.client()
    await world.live_publisher(pub, "s1")
    player, player_sink = await live_player(world, "s1")
    idle, idle_sink = world.client()
    assert world.app.active_sessions() == 2
    world.app.stopping()
    world.app.stopping()  # told once
    _late, late_sink = world.client()  # connected as the server began to stop: told too
    for sink in (pub_sink, player_sink, idle_sink, late_sink):
        assert sink.of(events.ServerWillStop) == [events.ServerWillStop()]
    assert world.app.active_sessions() == 2  # the publish and the play go on
    assert "PublishFinished" not in pub_sink.kinds() and "PlayFinished" not in player_sink.kinds()
    for refused in (
        lambda: idle.publish("late"),
        lambda: idle.play("s1"),
        lambda: idle.join_room("hall", "m1"),
        lambda: idle.join_call("call1"),
    ):
        with pytest.raises(errors.ShuttingDown):
            await refused()
    assert world.app.active_sessions() == 2
    await player.stop("s1")
    assert world.app.active_sessions() == 1
    await world.app.close()


# -- push, forceStreamQuality --------------------------------------------------------------------


async def test_push_commands_are_refused_in_ams_terms_and_quality_is_accepted(world: World) -> None:
    client, _ = world.client()
    sent: list[m.Message | m.Raw] = []
    for frame in (
        '{"command":"registerPushNotificationToken","subscriberId":"u","token":"t","pnsRegistrationToken":"x",'
        '"pnsType":"fcm"}',
        '{"command":"sendPushNotification","subscriberId":"u","token":"t","pushNotificationContent":{"a":1},'
        '"subscriberIdsToNotify":["v"]}',
        '{"command":"sendPushNotification","subscriberId":"u","token":"t","pushNotificationContent":{},"topic":"x"}',
        '{"command":"forceStreamQuality","streamId":"s1","streamHeight":720}',
        '{"command":"forceStreamQuality","streamId":"s1","streamHeight":"auto"}',
    ):
        name, command = m.decode(frame)
        await handlers.dispatch(client, world.app.app_settings, sent.append, name, command, frame)
    assert [s.definition for s in sent if isinstance(s, m.Error)] == ["authenticationTokenNotValid"] * 3
    assert len(sent) == 3


# -- getIceServerConfig ---------------------------------------------------------------------------


async def test_ice_server_config_answers_the_app_settings_without_turn(world: World) -> None:
    client, _ = world.client()
    world.app.app_settings.update({"stunServerURI": "stun:127.0.0.1:3478"})
    sent: list[m.Message | m.Raw] = []
    frame = '{"command":"getIceServerConfig"}'
    await handlers.dispatch(client, world.app.app_settings, sent.append, *m.decode(frame), frame)
    reply = json.loads(m.encode(sent[0]))
    assert reply == {"command": "iceServerConfig", "stunServerUri": "stun:127.0.0.1:3478"}


async def test_ice_server_config_gives_fresh_turn_credentials(world: World) -> None:
    import base64
    import hashlib
    import hmac
    import time

    from confero.auth.turn import TurnServers

    urls = ("turns:127.0.0.1:5349", "turn:127.0.0.1:3478?transport=udp", "turn:127.0.0.1:3478?transport=tcp")
    turn = TurnServers(urls, "north-wind", ttl=600)
    client, _ = world.client()
    frame = '{"command":"getIceServerConfig"}'
    replies = []
    for _ in range(2):
        sent: list[m.Message | m.Raw] = []
        before = int(time.time())
        await handlers.dispatch(client, world.app.app_settings, sent.append, *m.decode(frame), frame, turn)
        replies.append(json.loads(m.encode(sent[0])))
    reply = replies[0]
    # The official SDK reads only stunServerUri, and only a turn: or stun: one: the first turn: URL.
    assert reply["stunServerUri"] == "turn:127.0.0.1:3478?transport=udp"
    assert reply["turnServerUris"] == list(urls)
    expiry, label = reply["turnServerUsername"].split(":", 1)
    assert before + 600 <= int(expiry) <= int(time.time()) + 600
    assert label == client.client_id.replace(":", "_")
    digest = hmac.new(b"north-wind", reply["turnServerUsername"].encode(), hashlib.sha1).digest()
    assert base64.b64decode(reply["turnServerCredential"]) == digest
    # Fresh per request: never an object shared between answers (the expiry moves with time).
    assert replies[1]["turnServerUsername"].split(":", 1)[1] == label
    assert int(replies[1]["turnServerUsername"].split(":")[0]) >= int(expiry)
