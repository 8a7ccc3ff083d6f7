"""N-N conference rooms in both Ant Media flows, with real aiortc participants over loopback."""

from __future__ import annotations

import asyncio

import pytest

from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsSocket, Player, Publisher

pytestmark = pytest.mark.integration

ROOM = "room1"


class Member:
    """One participant: a socket, its publisher, and the players it opened."""

    def __init__(self, sock: AmsSocket, stream_id: str) -> None:
        self.sock = sock
        self.stream_id = stream_id
        self.publisher: Publisher | None = None
        self.players: dict[str, Player] = {}
        self.joined: dict = {}

    @classmethod
    async def join(cls, server: Server, stream_id: str, room: str = ROOM) -> Member:
        sock = await AmsSocket.connect(server.port)
        member = cls(sock, stream_id)
        await sock.send({"command": "joinRoom", "room": room, "streamId": stream_id, "streamName": f"name-{stream_id}"})
        member.joined = await sock.wait_for(definition="joinedTheRoom", timeout=10)
        assert member.joined["streamId"] == stream_id
        assert member.joined["room"] == room and member.joined["ATTR_ROOM_NAME"] == room
        return member

    async def publish(self, room: str | None = None) -> None:
        extra = {"mainTrack": room} if room else None
        self.publisher = Publisher(self.sock, self.stream_id, codec="VP8", extra=extra)
        await self.publisher.start()
        await self.sock.wait_for(definition="publish_started", stream_id=self.stream_id, timeout=10)

    async def play(self, stream_id: str, **kwargs: object) -> Player:
        player = Player(self.sock, stream_id, **kwargs)  # type: ignore[arg-type]
        self.players[stream_id] = player
        await player.start()
        return player

    async def close(self) -> None:
        for player in self.players.values():
            await player.close()
        if self.publisher is not None:
            await self.publisher.close()
        await self.sock.close()


async def close_all(members: list[Member]) -> None:
    for member in members:
        await member.close()


async def room_info(member: Member, room: str = ROOM) -> dict:
    await member.sock.send({"command": "getRoomInfo", "room": room, "streamId": member.stream_id})
    return await member.sock.wait_for("roomInformation", timeout=5)


async def test_legacy_flow_four_members_late_joiner_and_leaver(server: Server) -> None:
    members: list[Member] = []
    try:
        for i in range(4):
            member = await Member.join(server, f"p{i}")
            # joinedTheRoom lists the members already publishing
            assert sorted(member.joined["streams"]) == [f"p{j}" for j in range(i)]
            assert [d["streamName"] for d in member.joined["streamList"]] == [f"name-p{j}" for j in range(i)]
            await member.publish()  # plain publish: the server knows the room from joinRoom
            members.append(member)
        # everyone already inside heard streamJoined for each later member
        for i, member in enumerate(members):
            for j in range(i + 1, 4):
                await member.sock.wait_for(definition="streamJoined", stream_id=f"p{j}", timeout=10)
        # every member plays every other member's stream separately
        for member in members:
            for other in members:
                if other is not member:
                    await member.play(other.stream_id, room=ROOM)
        await asyncio.gather(*(p.wait_frames(30, 10, timeout=40) for m in members for p in m.players.values()))

        # a fifth joins late
        late = await Member.join(server, "p4")
        members.append(late)
        assert sorted(late.joined["streams"]) == ["p0", "p1", "p2", "p3"]
        await late.publish()
        for member in members[:4]:
            await member.sock.wait_for(definition="streamJoined", stream_id="p4", timeout=10)
            await member.play("p4", room=ROOM)
        for other in members[:4]:
            await late.play(other.stream_id, room=ROOM)
        await asyncio.gather(*(p.wait_frames(20, 5, timeout=40) for m in members for p in m.players.values()))

        # p1 leaves mid-call
        leaver = members[1]
        await leaver.sock.send({"command": "leaveFromRoom", "room": ROOM, "streamId": "p1"})
        left = await leaver.sock.wait_for(definition="leavedFromRoom", timeout=10)
        assert left["room"] == ROOM
        await leaver.sock.wait_for(definition="publish_finished", stream_id="p1", timeout=10)
        for member in members:
            if member is leaver:
                continue
            await member.sock.wait_for(definition="streamLeaved", stream_id="p1", timeout=10)
            await member.sock.wait_for(definition="play_finished", stream_id="p1", timeout=10)
            info = await room_info(member)
            assert sorted(info["streams"]) == sorted({"p0", "p2", "p3", "p4"} - {member.stream_id})
        assert "p1" not in server.applications["WebRTCAppEE"].rooms[ROOM].members
        for member in members:
            for player in member.players.values():
                assert player.decode_errors == 0
    finally:
        await close_all(members)


async def test_multitrack_flow_one_peer_connection_renegotiated(server: Server) -> None:
    members: list[Member] = []
    room_players: dict[str, Player] = {}

    async def room_play(member: Member) -> Player:
        track_list = [*member.joined["streams"], "!" + member.stream_id]
        player = await member.play(ROOM, room=ROOM, track_list=track_list)
        room_players[member.stream_id] = player
        return player

    async def sees(player: Player, stream_ids: set[str], frames: int = 15) -> None:
        want = {f"ARDAMSv{s}" for s in stream_ids} | {f"ARDAMSa{s}" for s in stream_ids}
        await eventually(lambda: want <= set(player.id_mapping.values()), timeout=15, what=f"idMapping with {want}")
        await eventually(
            lambda: all(player.frames_for(f"ARDAMSv{s}") >= frames for s in stream_ids),
            timeout=30,
            what=f"video of {stream_ids}",
        )
        assert all(player.frames_for(f"ARDAMSa{s}") > 0 for s in stream_ids), (
            player.id_mapping,
            [(t.kind, t.mid, t.frames) for t in player.counter.tracks],
            [s.dump() for s in server.router.subscribers],
        )

    try:
        for i in range(4):
            member = await Member.join(server, f"m{i}")
            await member.publish(room=ROOM)  # mainTrack = room: a subtrack of the room
            members.append(member)
        for member in members:
            await room_play(member)
        for member in members:
            others = {m.stream_id for m in members if m is not member}
            await sees(room_players[member.stream_id], others)
            # a member never receives itself
            assert f"ARDAMSv{member.stream_id}" not in room_players[member.stream_id].id_mapping.values()

        # a fifth joins late: one re-offer on each existing room connection adds its tracks
        late = await Member.join(server, "m4")
        members.append(late)
        offers_before = {sid: len(p.offers) for sid, p in room_players.items()}
        await late.publish(room=ROOM)
        await room_play(late)
        for member in members[:4]:
            player = room_players[member.stream_id]
            await sees(player, {"m4"})
            assert len(player.offers) > offers_before[member.stream_id]
            assert player.offers[-1]["streamId"] == ROOM
        await sees(room_players["m4"], {"m0", "m1", "m2", "m3"})

        # getTrackList and enableTrack on the room play
        await members[0].sock.send({"command": "getTrackList", "streamId": ROOM})
        tracks = await members[0].sock.wait_for("trackList", timeout=5)
        assert sorted(tracks["trackList"]) == ["m1", "m2", "m3", "m4"]

        # m2 leaves mid-call: its m-lines go inactive on every remaining member
        leaver = members[2]
        await leaver.sock.send({"command": "leaveFromRoom", "room": ROOM, "streamId": "m2"})
        await leaver.sock.wait_for(definition="leavedFromRoom", timeout=10)
        for member in members:
            if member is leaver:
                continue
            player = room_players[member.stream_id]
            await member.sock.wait_for(definition="streamLeaved", stream_id="m2", timeout=10)
            mids = [mid for mid, tid in player.id_mapping.items() if tid.endswith("m2")]
            await eventually(
                lambda player=player, mids=mids: all(_direction(player.offer_sdp, mid) == "inactive" for mid in mids),
                timeout=15,
                what="m2's m-lines inactive",
            )
            # the others' video keeps coming: every remaining member's frame count goes up
            before = {s: player.frames_for(f"ARDAMSv{s}") for s in ("m0", "m1", "m3", "m4") if s != member.stream_id}
            await eventually(
                lambda player=player, before=before: all(
                    player.frames_for(f"ARDAMSv{stream_id}") > count for stream_id, count in before.items()
                ),
                timeout=15,
                what=f"new frames of {sorted(before)} (had {before})",
            )
        room_subscribers = [s for s in server.router.subscribers if s.name == f"{ROOM}/room-play"]
        assert len(room_subscribers) == 4  # the leaver's room play ended with it
        for subscriber in room_subscribers:
            assert "m2" not in subscriber.labels()
        for player in room_players.values():
            assert player.decode_errors == 0
    finally:
        await close_all(members)


def _direction(sdp: str | None, mid: str) -> str:
    """The direction attribute of the m-section with `mid` in `sdp`."""
    if not sdp:
        return ""
    for section in sdp.split("m=")[1:]:
        if f"a=mid:{mid}\r\n" in section or section.rstrip().endswith(f"a=mid:{mid}"):
            for direction in ("sendonly", "recvonly", "sendrecv", "inactive"):
                if f"a={direction}" in section:
                    return direction
    return ""


async def test_room_info_and_errors(server: Server) -> None:
    async with await AmsSocket.connect(server.port) as sock:
        await sock.send({"command": "joinRoom", "streamId": "x"})
        error = await sock.wait_for(lambda m: m.get("command") == "error", timeout=5)
        assert error["definition"] == "no_room_specified"
        await sock.send({"command": "getRoomInfo", "room": "empty-room", "streamId": "x"})
        info = await sock.wait_for("roomInformation", timeout=5)
        assert info["streams"] == [] and info["streamList"] == [] and info["room"] == "empty-room"
        # joining without a stream id gets a generated one
        await sock.send({"command": "joinRoom", "room": "auto"})
        joined = await sock.wait_for(definition="joinedTheRoom", timeout=5)
        assert joined["streamId"] and joined["streams"] == []
        # the room was created on the first join, with no end (a zombi main track)
        record = await server.store.get_room("WebRTCAppEE", "auto")
        assert record is not None and record.zombi and record.end_date == 0
        await sock.send({"command": "leaveFromRoom", "room": "auto"})
        await sock.wait_for(definition="leavedFromRoom", timeout=5)
        # ... and removed when its last member left
        await eventually(lambda: "auto" not in server.applications["WebRTCAppEE"].rooms, timeout=5, what="room gone")
        assert await server.store.get_room("WebRTCAppEE", "auto") is None


async def test_rooms_are_isolated(server: Server) -> None:
    a = await Member.join(server, "a1", room="roomA")
    b = await Member.join(server, "b1", room="roomB")
    try:
        await a.publish(room="roomA")
        await b.publish(room="roomB")
        # b plays room B: it must not get a's tracks, nor hear of a
        player = await b.play("roomB", room="roomB", track_list=["!b1"])
        # a's start has gone through its room (room A lists it) ...
        await eventually(
            lambda: "a1" in server.applications["WebRTCAppEE"].rooms["roomA"].record.room_stream_list,
            timeout=15,
            what="a1 in room A's stream list",
        )
        # ... and whatever the server had sent b by now has arrived and been handled
        await b.sock.round_trip()
        await player.drain()
        assert not any("a1" in tid for tid in player.id_mapping.values())
        assert b.sock.find(definition="streamJoined", stream_id="a1") == []
        # a legacy play of a's stream named as room B is refused
        await b.sock.send({"command": "play", "streamId": "a1", "room": "roomB"})
        error = await b.sock.wait_for(lambda m: m.get("command") == "error" and m.get("streamId") == "a1", timeout=5)
        assert error["definition"] == "no_stream_exist"
    finally:
        await close_all([a, b])


async def test_closing_the_socket_is_leaving(server: Server) -> None:
    stay = await Member.join(server, "stay")
    go = await Member.join(server, "go")
    try:
        await stay.publish(room=ROOM)
        await go.publish(room=ROOM)
        player = await stay.play(ROOM, room=ROOM, track_list=["!stay"])
        await eventually(lambda: player.frames_for("ARDAMSvgo") >= 5, timeout=15, what="go's video")
        mids = [mid for mid, tid in player.id_mapping.items() if tid.endswith("go")]
        await go.sock.close()  # no leaveFromRoom, no stop
        await stay.sock.wait_for(definition="streamLeaved", stream_id="go", timeout=10)
        await eventually(
            lambda: all(_direction(player.offer_sdp, mid) == "inactive" for mid in mids), timeout=15, what="re-offer"
        )
        room = server.applications["WebRTCAppEE"].rooms[ROOM]
        assert sorted(room.members) == ["stay"]
        await stay.sock.send({"command": "getRoomInfo", "room": ROOM, "streamId": "stay"})
        info = await stay.sock.wait_for("roomInformation", timeout=5)
        assert info["streams"] == []
    finally:
        await close_all([stay, go])


async def test_a_second_room_play_on_one_connection_is_already_playing(server: Server) -> None:
    member = await Member.join(server, "twice", room="again")
    try:
        await member.play("again", room="again", track_list=["!twice"])
        await member.sock.send({"command": "play", "streamId": "again", "room": "again"})
        error = await member.sock.wait_for(definition="already_playing", timeout=5)
        assert error["streamId"] == "again"
    finally:
        await close_all([member])
