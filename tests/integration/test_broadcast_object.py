"""getBroadcastObject, getSubtracks, getSubtracksCount, updateStreamMetaData, subtrackAdded/Removed."""

from __future__ import annotations

import json

import pytest

from confero.server import Server
from tests.integration.test_conference import Member, close_all
from tests.support.amsclient import AmsSocket, Player

pytestmark = pytest.mark.integration

ROOM = "bo-room"


async def broadcast_object(sock: AmsSocket, stream_id: str) -> dict:
    await sock.send({"command": "getBroadcastObject", "streamId": stream_id})
    reply = await sock.wait_for(definition="broadcastObject", stream_id=stream_id, timeout=5)
    assert isinstance(reply["broadcast"], str)  # a JSON string, as Ant Media sends it
    broadcast = json.loads(reply["broadcast"])
    assert isinstance(broadcast, dict)
    return broadcast


async def test_room_and_member_broadcast_objects_subtracks_and_metadata(server: Server) -> None:
    members: list[Member] = []
    try:
        a = await Member.join(server, "ba", room=ROOM)
        members.append(a)
        await a.publish(room=ROOM)
        b = await Member.join(server, "bb", room=ROOM)
        members.append(b)
        await b.publish(room=ROOM)

        room = await broadcast_object(a.sock, ROOM)
        assert room["streamId"] == ROOM and sorted(room["subTrackStreamIds"]) == ["ba", "bb"]
        assert room["status"] == "broadcasting"
        member = await broadcast_object(a.sock, "bb")
        assert member["mainTrackStreamId"] == ROOM and member["status"] == "broadcasting"

        # updateStreamMetaData is stored on the record: no reply, the next object shows it
        await b.sock.send({"command": "updateStreamMetaData", "streamId": "bb", "metaData": '{"isCameraOff":true}'})
        await b.sock.round_trip()
        assert (await broadcast_object(a.sock, "bb"))["metaData"] == '{"isCameraOff":true}'
        assert server.applications["WebRTCAppEE"].streams["bb"].record.meta_data == '{"isCameraOff":true}'

        await a.sock.send({"command": "getSubtracks", "streamId": ROOM, "offset": 0, "size": 10, "role": None})
        listed = await a.sock.wait_for(definition="subtrackList", timeout=5)
        assert listed["streamId"] == ROOM
        assert sorted(json.loads(s)["streamId"] for s in listed["subtrackList"]) == ["ba", "bb"]
        await a.sock.send({"command": "getSubtracks", "streamId": ROOM, "offset": 1, "size": 10})
        listed = await a.sock.wait_for(definition="subtrackList", timeout=5)
        assert len(listed["subtrackList"]) == 1
        await a.sock.send({"command": "getSubtracksCount", "streamId": ROOM})
        counted = await a.sock.wait_for(definition="subtrackCount", timeout=5)
        assert counted["count"] == 2 and counted["streamId"] == ROOM
        await a.sock.send({"command": "getSubtracksCount", "streamId": ROOM, "status": "finished"})
        counted = await a.sock.wait_for(definition="subtrackCount", timeout=5)
        assert counted["count"] == 0
        await a.sock.send({"command": "getSubtracksCount", "streamId": "no-such-room"})
        counted = await a.sock.wait_for(definition="subtrackCount", timeout=5)
        assert counted["count"] == 0

        # an unknown id: no_stream_exist, as Ant Media
        await a.sock.send({"command": "getBroadcastObject", "streamId": "ghost"})
        error = await a.sock.wait_for(lambda m: m.get("command") == "error", timeout=5)
        assert error["definition"] == "no_stream_exist" and error["streamId"] == "ghost"
        await a.sock.send({"command": "updateStreamMetaData", "streamId": "ghost", "metaData": "x"})
        error = await a.sock.wait_for(lambda m: m.get("command") == "error", timeout=5)
        assert error["definition"] == "no_stream_exist"
    finally:
        await close_all(members)


async def test_room_players_hear_subtrack_added_and_removed(server: Server) -> None:
    members: list[Member] = []
    try:
        a = await Member.join(server, "pa", room=ROOM)
        members.append(a)
        await a.publish(room=ROOM)
        player = Player(a.sock, ROOM, room=ROOM)
        a.players[ROOM] = player
        await player.start()

        b = await Member.join(server, "pb", room=ROOM)
        members.append(b)
        await b.publish(room=ROOM)
        added = await a.sock.wait_for(definition="subtrackAdded", timeout=10)
        assert added["streamId"] == ROOM and added["trackId"] == "pb"
        # Confero's own notifications stay, for the tutorial's pages
        await a.sock.wait_for(definition="streamJoined", stream_id="pb", timeout=5)

        await b.close()
        members.remove(b)
        removed = await a.sock.wait_for(definition="subtrackRemoved", timeout=10)
        assert removed["streamId"] == ROOM and removed["trackId"] == "pb"
    finally:
        await close_all(members)
