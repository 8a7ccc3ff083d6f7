"""The domain alone: clients, streams, rooms, calls and access against a fake media plane.

No sockets and no media: each test runs in milliseconds. What the network would do (a peer
connecting, failing, sending data) the test does through the fake peers.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable

import pytest

from confero import errors
from confero.domain import events, observer
from confero.domain.application import Application
from confero.domain.client import Client
from confero.media import types as media
from confero.settings import Settings
from confero.signaling import wire
from confero.store import MemoryStore, RoomRecord, StreamRecord, TokenRecord
from tests.fast.fakemedia import FakeMedia, FakeSink
from tests.support import eventually

APP = "WebRTCAppEE"


async def until(predicate: Callable[[], object], what: str, within: float = 2.0) -> None:
    """Wait for `predicate` while the domain's own tasks run."""
    await eventually(predicate, timeout=within, what=what)


class World:
    def __init__(self, app: Application, media: FakeMedia, store: MemoryStore, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.media = media
        self.store = store
        self.seen: list[observer.AppEvent] = []
        app.observers.subscribe(self.seen.append)

    def client(self) -> tuple[Client, FakeSink]:
        sink = FakeSink()
        return self.app.connect(sink, "127.0.0.1"), sink

    def seen_of(self, type_: type) -> list[observer.AppEvent]:
        return [e for e in self.seen if isinstance(e, type_)]

    async def live_publisher(self, client: Client, stream_id: str, room: str = "") -> None:
        await client.publish(stream_id, room=room)
        await client.configure(stream_id, "offer", "offer")
        self.media.publisher(stream_id).connect()
        await until(lambda: self.app.streams.live[stream_id].started, f"{stream_id} to start")


@pytest.fixture
async def world() -> AsyncIterator[World]:
    settings = Settings(publish_timeout=5.0)
    settings.validate()
    store = MemoryStore()
    media = FakeMedia()
    app = Application(APP, settings, store, media)
    w = World(app, media, store, settings)
    yield w
    for client in list(app.clients.values()):
        await client.close()
    await app.close()
    assert media.peers == [], [p.name for p in media.peers]
    assert not app.streams and not app.rooms and not app.clients
    assert len(app.ctx.tasks) == 0


# -- publish and play ------------------------------------------------------------------------------


async def test_publish_connect_play_stop(world: World) -> None:
    pub, pub_sink = world.client()
    await world.live_publisher(pub, "s1")
    assert pub_sink.kinds() == ["Answer", "Candidate", "PublishStarted"]
    await until(lambda: "s1" in world.store._streams.get(APP, {}), "the record")
    assert world.app.streams["s1"].record.status == "broadcasting"
    assert world.seen_of(observer.StreamStarted) == [observer.StreamStarted(APP, "s1")]

    player, player_sink = world.client()
    await player.play("s1")
    (offer,) = player_sink.of(events.Offer)
    assert isinstance(offer, events.Offer)
    assert sorted(offer.id_mapping.values()) == ["ARDAMSas1", "ARDAMSvs1"]
    await player.configure("s1", "answer", "answer")
    world.media.subscriber("s1/play").connect()
    assert player_sink.of(events.PlayStarted) == [events.PlayStarted("s1")]
    assert world.app.streams.viewer_count("s1") == 1

    order: list[str] = []
    pub_sink.deliver = lambda e: order.append(f"pub:{type(e).__name__}")  # type: ignore[method-assign]
    player_sink.deliver = lambda e: order.append(f"player:{type(e).__name__}")  # type: ignore[method-assign]
    await pub.stop("s1")
    # Players hear the end first, then the publisher.
    assert order == ["player:PlayFinished", "pub:PublishFinished"]
    assert "s1" not in world.app.streams
    assert not pub.legs and not player.legs
    assert [type(e) for e in world.seen if isinstance(e, observer.PlayEnded | observer.StreamEnded)] == [
        observer.PlayEnded,
        observer.StreamEnded,
    ]


async def test_a_zombi_record_goes_with_its_stream_and_a_created_one_is_kept(world: World) -> None:
    await world.app.streams.create(StreamRecord(stream_id="kept", name="Kept"))
    pub, _ = world.client()
    await world.live_publisher(pub, "kept")
    await world.live_publisher(pub, "zombi")
    await pub.stop("kept")
    await pub.stop("zombi")
    await world.store.flush()
    kept = await world.store.get_stream(APP, "kept")
    assert kept is not None and kept.status == "finished" and kept.name == "Kept"
    assert await world.store.get_stream(APP, "zombi") is None


async def test_one_id_one_publisher(world: World) -> None:
    a, _ = world.client()
    b, _ = world.client()
    await a.publish("s1")
    with pytest.raises(errors.AlreadyPublishing):
        await a.publish("s1")
    with pytest.raises(errors.InUse):
        await b.publish("s1")
    assert [e.reason for e in world.seen_of(observer.PublishRefused)] == ["InUse"]  # type: ignore[union-attr]
    await a.stop("s1")
    await b.publish("s1")  # free again
    await b.stop("s1")


async def test_concurrent_publishes_of_one_id_admit_exactly_one(world: World) -> None:
    clients = [world.client()[0] for _ in range(5)]
    results = await asyncio.gather(*(c.publish("race") for c in clients), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, errors.InUse) for r in results if r is not None)


async def test_play_needs_a_started_stream(world: World) -> None:
    pub, _ = world.client()
    player, _ = world.client()
    with pytest.raises(errors.NotFound):
        await player.play("nothing")
    await pub.publish("s1")
    with pytest.raises(errors.NotFound):
        await player.play("s1")  # published but not connected yet
    assert [e.reason for e in world.seen_of(observer.PlayRefused)] == ["NotFound", "NotFound"]  # type: ignore[union-attr]


async def test_a_failed_offer_ends_the_publish_and_frees_the_id(world: World) -> None:
    pub, _ = world.client()
    await pub.publish("s1")
    with pytest.raises(media.SdpError):
        await pub.configure("s1", "offer", "bad")
    assert "s1" not in world.app.streams and not pub.legs
    assert world.seen_of(observer.StreamEnded) == []  # it never started
    await pub.publish("s1")
    with pytest.raises(media.CodecMismatch):
        await pub.configure("s1", "offer", "h264")
    assert "s1" not in world.app.streams


async def test_out_of_order_negotiation_is_refused(world: World) -> None:
    pub, _ = world.client()
    with pytest.raises(errors.OutOfOrder):
        await pub.configure("s1", "offer", "offer")  # no publish
    await pub.publish("s1")
    with pytest.raises(errors.OutOfOrder):
        await pub.configure("s1", "answer", "answer")  # a publisher answers nothing
    with pytest.raises(errors.OutOfOrder):
        await pub.configure("s1", "pranswer", "x")
    await pub.configure("s1", "offer", "offer")
    with pytest.raises(errors.OutOfOrder):
        await pub.configure("s1", "offer", "offer")  # a second offer ends the publish
    assert "s1" not in world.app.streams


async def test_bad_candidates_are_refused_but_keep_the_leg(world: World) -> None:
    pub, _ = world.client()
    with pytest.raises(errors.NoPeer):
        await pub.add_candidate("s1", "candidate:x", "0", 0)
    await pub.publish("s1")
    await pub.configure("s1", "offer", "offer")
    with pytest.raises(media.BadCandidate):
        await pub.add_candidate("s1", "bad", "0", 0)
    await pub.add_candidate("s1", "candidate:ok", "0", 0)
    assert world.media.publisher("s1").candidates == [("candidate:ok", "0", 0)]


async def test_an_ice_failure_ends_the_stream_and_its_players(world: World) -> None:
    pub, pub_sink = world.client()
    await world.live_publisher(pub, "s1")
    player, player_sink = world.client()
    await player.play("s1")
    world.media.publisher("s1").fail()
    await until(lambda: "s1" not in world.app.streams, "the stream to end")
    await until(lambda: not player.legs, "the play to end")
    assert player_sink.of(events.PlayFinished) and pub_sink.of(events.PublishFinished)
    assert world.media.subscribers() == []


async def test_a_peer_that_never_connects_times_out(world: World) -> None:
    world.settings.publish_timeout = 0.02
    pub, sink = world.client()
    await pub.publish("slow")
    await pub.configure("slow", "offer", "offer")
    await until(lambda: "slow" not in world.app.streams, "the timeout")
    assert sink.of(events.ConnectTimeout) == [events.ConnectTimeout("slow")]


async def test_disconnect_ends_everything_the_client_holds(world: World) -> None:
    pub, _ = world.client()
    await world.live_publisher(pub, "s1")
    other, _ = world.client()
    await world.live_publisher(other, "s2")
    await pub.play("s2")
    await pub.join_room("room1", "m1")
    await pub.join_call("call1")
    await pub.close()
    assert "s1" not in world.app.streams and "s2" in world.app.streams
    assert world.app.streams.viewer_count("s2") == 0
    assert "room1" not in world.app.rooms
    assert world.app.calls.calls == {}
    assert pub.client_id not in world.app.clients


# -- data channels ---------------------------------------------------------------------------------


async def test_data_from_the_publisher_reaches_players_and_is_size_checked(world: World) -> None:
    pub, pub_sink = world.client()
    await world.live_publisher(pub, "s1")
    player, _ = world.client()
    await player.play("s1")
    publisher, subscriber = world.media.publisher("s1"), world.media.subscriber("s1/play")
    publisher.receive("hello")
    assert subscriber.sent == ["hello"]
    subscriber.receive("back")
    assert publisher.sent == ["back"]
    publisher.receive("x" * (world.app.app_settings.dataChannelMessageLimit + 1))
    assert pub_sink.of(events.DataTooLarge)
    assert subscriber.sent == ["hello"]
    assert world.app.streams.send_data("s1", "from rest") == 2
    with pytest.raises(errors.NotFound):
        world.app.streams.send_data("nothing", "x")


# -- rooms -----------------------------------------------------------------------------------------


async def test_room_members_hear_streams_and_room_plays_renegotiate(world: World) -> None:
    a, a_sink = world.client()
    b, b_sink = world.client()
    joined = await a.join_room("room1", "a1", name="Alice")
    assert joined.streams == ()
    await b.join_room("room1", "b1")
    assert world.seen_of(observer.RoomCreated) == [observer.RoomCreated(APP, "room1")]

    await world.live_publisher(a, "a1")  # legacy flow: the room joined with this id
    await until(lambda: b_sink.of(events.StreamJoined), "streamJoined")
    assert b_sink.of(events.StreamJoined) == [events.StreamJoined("a1", "room1")]
    assert not a_sink.of(events.StreamJoined)
    (summary,) = b.room_info("room1")
    assert (summary.stream_id, summary.name) == ("a1", "Alice")

    await b.play("room1")
    room_play = world.media.subscriber("room1/room-play")
    assert room_play.labels() == {"a1"}
    await b.configure("room1", "answer", "answer")
    assert b.track_list("room1") == ["a1"]
    b.enable_track("room1", "ARDAMSva1", False)
    with pytest.raises(errors.NotFound):
        b.enable_track("room1", "ARDAMSvnobody", False)

    await a.stop("a1")
    await until(lambda: b_sink.of(events.StreamLeft), "streamLeaved")
    await until(lambda: room_play.labels() == set(), "the re-offer")
    assert room_play.offers[-1].count("inactive") == 2

    assert await a.leave_room("room1") == "a1"
    assert "room1" in world.app.rooms  # b is still in it
    await b.stop("room1")
    await b.leave_room("room1")
    assert "room1" not in world.app.rooms
    assert [e.reason for e in world.seen_of(observer.RoomEnded)] == ["idle"]  # type: ignore[union-attr]
    assert [type(e).__name__ for e in world.seen if "Member" in type(e).__name__] == [
        "MemberJoined",
        "MemberJoined",
        "MemberLeft",
        "MemberLeft",
    ]


async def test_a_room_play_renegotiates_once_the_answer_is_in(world: World) -> None:
    a, _ = world.client()
    b, b_sink = world.client()
    await world.live_publisher(a, "a1", room="room1")
    await b.play("room1")
    room_play = world.media.subscriber("room1/room-play")
    await world.live_publisher(a, "a2", room="room1")
    await until(lambda: "a2" in world.app.rooms["room1"].record.room_stream_list, "a2 announced")
    assert len(room_play.offers) == 1  # no second offer while the first is out
    await b.configure("room1", "answer", "answer")
    await until(lambda: len(room_play.offers) == 2, "the re-offer")
    assert room_play.labels() == {"a1", "a2"}
    assert len(b_sink.of(events.Offer)) == 2


async def test_joining_with_an_id_another_client_has_is_refused(world: World) -> None:
    a, _ = world.client()
    b, _ = world.client()
    await a.join_room("room1", "same")
    with pytest.raises(errors.InUse):
        await b.join_room("room1", "same")
    await world.live_publisher(a, "pub")
    with pytest.raises(errors.InUse):
        await b.join_room("room1", "pub")
    with pytest.raises(errors.NoRoomGiven):
        await b.join_room("", "x")


async def test_a_room_whose_window_ends_removes_its_members(world: World) -> None:
    now = int(time.time())
    await world.app.rooms.create(RoomRecord(room_id="short", start_date=now - 10, end_date=now + 1))
    a, sink = world.client()
    await world.live_publisher(a, "a1", room="short")
    await until(lambda: "short" not in world.app.rooms, "the window to end", within=3.0)
    assert sink.of(events.RoomWindowEnded) == [events.RoomWindowEnded("a1", "short")]
    assert sink.of(events.LeftRoom) == [events.LeftRoom("short", "a1")]
    assert "a1" not in world.app.streams
    with pytest.raises(errors.RoomNotActive):
        await a.join_room("short", "again")


async def test_rest_removal_of_a_member_stops_its_stream(world: World) -> None:
    a, sink = world.client()
    await world.live_publisher(a, "a1", room="room1")
    assert await world.app.rooms.set_stream("room1", "a1", present=False)
    assert "a1" not in world.app.streams
    assert sink.of(events.LeftRoom) == [events.LeftRoom("room1", "a1")]
    assert a.memberships == {}


# -- access ----------------------------------------------------------------------------------------


async def test_a_refused_publish_does_not_spend_its_token(world: World) -> None:
    world.app.app_settings.publishTokenControlEnabled = True
    for token in ("tok", "tok2"):
        await world.store.save_token(APP, TokenRecord(token, "s1", int(time.time()) + 60, "publish"))
    a, _ = world.client()
    b, _ = world.client()
    with pytest.raises(errors.Unauthorized):
        await a.publish("s1")
    await b.publish("s1", token="tok")
    with pytest.raises(errors.InUse):
        await a.publish("s1", token="tok2")  # refused: tok2 is not spent
    with pytest.raises(errors.Unauthorized):
        await a.publish("s1", token="tok")  # used up
    await b.stop("s1")
    await a.publish("s1", token="tok2")
    await a.stop("s1")


async def test_one_time_tokens_race_and_one_wins(world: World) -> None:
    world.app.app_settings.playTokenControlEnabled = True
    pub, _ = world.client()
    await world.live_publisher(pub, "s1")
    await world.store.save_token(APP, TokenRecord("tok", "s1", int(time.time()) + 60, "play"))
    players = [world.client()[0] for _ in range(3)]
    results = await asyncio.gather(*(p.play("s1", token="tok") for p in players), return_exceptions=True)
    assert sum(r is None for r in results) == 1
    assert all(isinstance(r, errors.Unauthorized) for r in results if r is not None)


# -- 1-1 calls -------------------------------------------------------------------------------------


async def test_a_call_pairs_two_and_relays(world: World) -> None:
    a, a_sink = world.client()
    b, b_sink = world.client()
    c, _ = world.client()
    await a.join_call("call")
    await b.join_call("call")
    assert a_sink.of(events.PeerStart) == [events.PeerStart("call")]
    with pytest.raises(errors.CallFull):
        await c.join_call("call")
    assert a.relays("call") and not c.relays("call")
    a.relay("call", '{"command":"takeConfiguration"}')
    assert b_sink.of(events.Relay) == [events.Relay("call", '{"command":"takeConfiguration"}')]
    with pytest.raises(errors.NoPeer):
        c.relay("call", "x")
    b.leave_call("call")
    assert a_sink.of(events.PeerStop) == [events.PeerStop("call")]
    with pytest.raises(errors.NoPeer):
        b.leave_call("call")


# -- the wire mapping ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("exc", "definition"),
    [
        (errors.MissingStreamId(), "noStreamNameSpecified"),
        (errors.InvalidStreamId(), "invalidStreamName"),
        (errors.NoRoomGiven(), "no_room_specified"),
        (errors.UnregisteredStream(), "not_allowed_unregistered_streams"),
        (errors.BadRequest(), "missingParameter"),
        (errors.AlreadyPublishing(), "already_publishing"),
        (errors.AlreadyPlaying(), "already_playing"),
        (errors.InUse(), "streamIdInUse"),
        (errors.CallFull(), "streamIdInUse"),
        (errors.NotFound(), "no_stream_exist"),
        (errors.RoomNotActive(), "room_not_active_or_expired"),
        (errors.Unauthorized(), "unauthorized_access"),
        (errors.ShuttingDown(), "server_will_stop"),
        (errors.NoPeer(), "no_peer_associated_before"),
        (errors.OutOfOrder(), "notSetRemoteDescription"),
        (media.SdpError("x"), "notSetRemoteDescription"),
        (media.SdpError("x", side="local"), "notSetLocalDescription"),
        (media.NoMedia("x"), "notSetRemoteDescription"),
        (media.CodecMismatch("x"), "unsupported_codec"),
        (media.BadCandidate("x"), "invalid_candidate"),
        (media.UnknownTrack("x"), "no_stream_exist"),
        (RuntimeError("boom"), "server_error_check_logs"),
    ],
)
def test_every_refusal_has_its_definition(exc: BaseException, definition: str) -> None:
    message = wire.error_message(exc, "s1")
    assert (message.definition, message.stream_id) == (definition, "s1")
    assert message.error_code == ("404" if definition == "no_stream_exist" and isinstance(exc, errors.NotFound) else "")


# -- video slots (maxVideoTrackCount) ----------------------------------------------------------------


async def test_room_play_video_slots_follow_the_policy_and_its_commands(world: World) -> None:
    world.app.ctx.encode_data = repr  # the transport's encoder; a plain repr is enough here
    world.app.app_settings.maxVideoTrackCount = 1
    members = {}
    for sid in ("a1", "b1", "c1"):
        client, _ = world.client()
        await client.join_room("room1", sid)
        await world.live_publisher(client, sid)
        members[sid] = client
    viewer = members["a1"]
    await viewer.play("room1")
    play = world.media.subscriber("room1/room-play")
    assert play.carried("video") == {"videoTrack0": "b1/video/2"}
    assert set(play.carried("audio")) == {"b1", "c1"}
    assert play.sources[0].msid == ("room1", "ARDAMSvvideoTrack0")
    await viewer.configure("room1", "answer", "answer")
    play.connect()
    offers = len(play.offers)

    # c1 talks: after the hold and the streak it takes the slot, without a new offer
    world.media.publisher("c1").level = 10
    await until(lambda: play.carried("video") == {"videoTrack0": "c1/video/4"}, "c1 in the slot", within=10)
    assert len(play.offers) == offers
    sent = [d for d in play.sent if isinstance(d, str)]
    assert any("AudioLevels" in d and "('c1', 10)" in d for d in sent)
    assert "VideoAssignment(label='videoTrack0', stream_id='c1'" in sent[-1] or any(
        "stream_id='c1', reserved=False" in d for d in sent
    )

    # pinned: b1 holds the slot although c1 is the loudest
    viewer.assign_video_track("b1", "videoTrack0", True)
    await until(lambda: play.carried("video") == {"videoTrack0": "b1/video/2"}, "the pin")
    with pytest.raises(errors.NotFound):
        viewer.assign_video_track("nobody", "videoTrack0", True)

    # no limit for this player: every member's own video m-line, a new offer
    viewer.set_max_video_tracks("a1", -1)
    await until(lambda: len(play.offers) > offers, "the re-offer")
    assert set(play.carried("video")) == {"b1", "c1"}
    viewer.video_track_assignments("room1")
    assert "VideoAssignment(label='b1', stream_id='b1'" in play.sent[-1]  # type: ignore[operator]
