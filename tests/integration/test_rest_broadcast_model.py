"""Rooms as main-track Broadcasts over REST, and the Broadcast REST a backend calls (issue 12)."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from confero.server import Server
from tests.integration.test_conference import Member, close_all
from tests.support import eventually
from tests.support.amsclient import AmsSocket, Player, Publisher

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"


async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, f"/{APP}/rest/v2{path}", **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


async def create(http: aiohttp.ClientSession, **fields: Any) -> dict[str, Any]:
    status, body = await call(http, "POST", "/broadcasts/create", json=fields)
    assert status == 200, body
    return body


async def get(http: aiohttp.ClientSession, stream_id: str) -> dict[str, Any]:
    status, body = await call(http, "GET", f"/broadcasts/{stream_id}")
    assert status == 200, body
    return body


# ------------------------------------------------------------------------- rooms are Broadcasts


async def test_rest_created_broadcast_is_a_room_when_used_as_main_track(
    server: Server, http: aiohttp.ClientSession
) -> None:
    await create(http, streamId="mt", name="Main track")
    members: list[Member] = []
    try:
        member = await Member.join(server, "m1", room="mt")
        members.append(member)
        member.publisher = Publisher(
            member.sock, "m1", extra={"mainTrack": "mt", "metaData": '{"isMicMuted":true}', "role": "host"}
        )
        await member.publisher.start()
        await member.sock.wait_for(definition="publish_started", stream_id="m1", timeout=10)

        room = await get(http, "mt")
        assert room["name"] == "Main track"
        assert room["subTrackStreamIds"] == ["m1"] and room["status"] == "broadcasting"
        sub = await get(http, "m1")
        assert sub["mainTrackStreamId"] == "mt"
        assert sub["metaData"] == '{"isMicMuted":true}' and sub["role"] == "host"  # the publish's, stored
        # the deprecated conference-rooms paths see the same room
        status, legacy = await call(http, "GET", "/broadcasts/conference-rooms/mt")
        assert status == 200 and legacy["roomStreamList"] == ["m1"] and legacy["endDate"] == 0
    finally:
        await close_all(members)
    await eventually(lambda: "mt" not in server.applications[APP].rooms, timeout=5, what="room idle")
    # a REST-created room is kept when it empties
    room = await get(http, "mt")
    assert room["subTrackStreamIds"] == [] and room["zombi"] is False


async def test_subtrack_rest_adds_and_removes_members(server: Server, http: aiohttp.ClientSession) -> None:
    await create(http, streamId="main")
    await create(http, streamId="s1")
    status, body = await call(http, "POST", "/broadcasts/main/subtrack", params={"id": "s1"})
    assert status == 200 and body["success"] is True, body
    assert (await get(http, "main"))["subTrackStreamIds"] == ["s1"]
    assert (await get(http, "s1"))["mainTrackStreamId"] == "main"
    status, legacy = await call(http, "GET", "/broadcasts/conference-rooms/main")
    assert status == 200 and legacy["roomStreamList"] == ["s1"]
    status, body = await call(http, "DELETE", "/broadcasts/main/subtrack", params={"id": "s1"})
    assert status == 200 and body["success"] is True, body
    assert (await get(http, "main"))["subTrackStreamIds"] == []
    assert (await get(http, "s1"))["mainTrackStreamId"] == ""
    # an unknown main track, a missing id
    status, body = await call(http, "POST", "/broadcasts/nothing/subtrack", params={"id": "s1"})
    assert status == 404 and body["success"] is False
    status, body = await call(http, "POST", "/broadcasts/main/subtrack")
    assert status == 400 and body["success"] is False
    # a room made over conference-rooms is a Broadcast too
    status, _ = await call(http, "POST", "/broadcasts/conference-rooms", json={"roomId": "legacy"})
    assert status == 200
    status, body = await call(http, "POST", "/broadcasts/legacy/subtrack", params={"id": "x1"})
    assert status == 200, body
    legacy = await get(http, "legacy")
    assert legacy["subTrackStreamIds"] == ["x1"] and legacy["plannedEndDate"] - legacy["plannedStartDate"] == 3600
    # one namespace: a room's id cannot be created as a stream
    status, body = await call(http, "POST", "/broadcasts/create", json={"streamId": "legacy"})
    assert status == 400, body
    # deleting the Broadcast deletes the room
    status, _ = await call(http, "DELETE", "/broadcasts/legacy")
    assert status == 200
    status, _ = await call(http, "GET", "/broadcasts/conference-rooms/legacy")
    assert status == 404


async def test_room_made_by_a_join_is_a_zombi_broadcast_removed_when_empty(
    server: Server, http: aiohttp.ClientSession
) -> None:
    member = await Member.join(server, "z1", room="zroom")
    try:
        await member.publish(room="zroom")
        room = await get(http, "zroom")
        assert room["zombi"] is True and room["subTrackStreamIds"] == ["z1"]
    finally:
        await member.close()
    await eventually(lambda: "zroom" not in server.applications[APP].rooms, timeout=5, what="room gone")
    status, _ = await call(http, "GET", "/broadcasts/zroom")
    assert status == 404
    # the name is free again, for a stream too
    await create(http, streamId="zroom")


async def test_accept_only_rooms_in_data_store(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.post(f"/rest/v2/applications/settings/{APP}", json={"acceptOnlyRoomsInDataStore": True}) as r:
        assert r.status == 200
    await create(http, streamId="known")
    async with await AmsSocket.connect(server.port) as sock:
        await sock.send({"command": "joinRoom", "room": "unknown", "streamId": "u1"})
        error = await sock.wait_for(lambda m: m.get("command") == "error", timeout=5)
        assert error["definition"] == "room_not_active_or_expired"
        assert "unknown" not in server.applications[APP].rooms
        await sock.send({"command": "joinRoom", "room": "known", "streamId": "u1"})
        joined = await sock.wait_for(definition="joinedTheRoom", timeout=5)
        assert joined["room"] == "known"
        await sock.send({"command": "leaveFromRoom", "room": "known", "streamId": "u1"})
        await sock.wait_for(definition="leavedFromRoom", timeout=5)


# ------------------------------------------------------------------------- Broadcast REST


async def test_put_changes_only_the_fields_given_and_null_is_absent(http: aiohttp.ClientSession) -> None:
    end = int(time.time()) + 7200
    await create(
        http,
        streamId="p1",
        name="first",
        description="kept",
        metaData="m",
        plannedEndDate=end,
        plannedStartDate=None,
        listenerHookURL="http://127.0.0.1:9/hook",
    )
    status, body = await call(http, "PUT", "/broadcasts/p1", json={"name": "renamed", "description": None})
    assert status == 200 and body["success"] is True
    record = await get(http, "p1")
    assert record["name"] == "renamed"
    assert record["description"] == "kept" and record["metaData"] == "m" and record["plannedEndDate"] == end
    assert record["listenerHookURL"] == "http://127.0.0.1:9/hook"
    status, body = await call(http, "PUT", "/broadcasts/p1", json={"listenerHookURL": ""})
    assert status == 200 and (await get(http, "p1"))["listenerHookURL"] == ""
    status, body = await call(http, "PUT", "/broadcasts/p1", json={"plannedEndDate": "soon"})
    assert status == 400 and body["success"] is False


async def test_listener_hook_url_is_stored(server: Server, http: aiohttp.ClientSession) -> None:
    await create(http, streamId="hooked", listenerHookURL="http://127.0.0.1:9/h")
    await server.store.flush()
    record = await server.store.get_stream(APP, "hooked")
    assert record is not None and record.listener_hook_url == "http://127.0.0.1:9/h"


async def test_count_search_sort_and_single_segment_routes(http: aiohttp.ClientSession) -> None:
    for stream_id, name in (("c1", "Bravo"), ("c2", "alpha"), ("c3", "Charlie"), ("count", "named count")):
        await create(http, streamId=stream_id, name=name)
    assert await call(http, "GET", "/broadcasts/count") == (200, {"number": 4})
    assert await call(http, "GET", "/broadcasts/count/ALPH") == (200, {"number": 1})
    status, found = await call(http, "GET", "/broadcasts/list/0/10", params={"search": "c"})
    assert status == 200 and {b["streamId"] for b in found} == {"c1", "c2", "c3", "count"}
    status, found = await call(http, "GET", "/broadcasts/list/0/10", params={"sort_by": "name", "order_by": "desc"})
    assert [b["name"] for b in found] == ["named count", "alpha", "Charlie", "Bravo"]
    status, found = await call(http, "GET", "/broadcasts/list/1/2", params={"sort_by": "name"})
    assert [b["name"] for b in found] == ["Charlie", "alpha"]
    # a stream named "count" is still reachable under /{id}/...: the more literal path wins, as in JAX-RS
    status, body = await call(http, "GET", "/broadcasts/count/broadcast-statistics")
    assert status == 200 and body["totalWebRTCWatchersCount"] == 0
    assert (await call(http, "GET", "/broadcasts/total-broadcast-statistics"))[1] == {
        "totalRTMPWatchersCount": -1,
        "totalHLSWatchersCount": 0,
        "totalWebRTCWatchersCount": 0,
        "totalDASHWatchersCount": 0,
        "activeLiveStreamCount": 0,
    }
    status, version = await call(http, "GET", "/version")
    assert status == 200 and version["versionName"] and set(version) == {"versionName", "versionType", "buildNumber"}


async def test_statistics_client_stats_and_stop(server: Server, http: aiohttp.ClientSession) -> None:
    await create(http, streamId="live1")
    async with await AmsSocket.connect(server.port) as sock, await AmsSocket.connect(server.port) as viewer:
        publisher = Publisher(sock, "live1")
        player = Player(viewer, "live1")
        try:
            await publisher.start()
            await sock.wait_for(definition="publish_started", stream_id="live1", timeout=10)
            await player.start()
            status, stats = await call(http, "GET", "/broadcasts/live1/broadcast-statistics")
            assert status == 200 and stats["totalWebRTCWatchersCount"] == 1
            status, clients = await call(http, "GET", "/broadcasts/live1/webrtc-client-stats/0/10")
            assert status == 200 and len(clients) == 1 and clients[0]["clientId"] == 0
            infos: list[dict[str, Any]] = []

            async def sized() -> bool:
                nonlocal infos
                _, infos = await call(http, "GET", "/broadcasts/live1/stream-info")
                return bool(infos) and infos[0]["videoHeight"] > 0

            await eventually(sized, timeout=10, what=lambda: f"the stream's size in {infos}")
            assert infos == [
                {
                    "videoHeight": 240,
                    "videoWidth": 320,
                    "videoBitrate": infos[0]["videoBitrate"],
                    "audioBitrate": infos[0]["audioBitrate"],
                    "videoCodec": "VP8",
                }
            ]
            status, total = await call(http, "GET", "/broadcasts/total-broadcast-statistics")
            assert total["totalWebRTCWatchersCount"] == 1 and total["activeLiveStreamCount"] == 1
            status, body = await call(http, "POST", "/broadcasts/live1/stop")
            assert status == 200 and body["success"] is True
            await sock.wait_for(definition="publish_finished", stream_id="live1", timeout=10)
            assert (await get(http, "live1"))["status"] == "finished"  # the record stays
        finally:
            await player.close()
            await publisher.close()
    status, stats = await call(http, "GET", "/broadcasts/nope/broadcast-statistics")
    assert status == 200 and stats["totalWebRTCWatchersCount"] == -1
    status, body = await call(http, "POST", "/broadcasts/nope/stop")
    assert status == 404 and body["success"] is False
    assert await call(http, "GET", "/broadcasts/nope/stream-info") == (200, [])


async def test_settings_keep_ant_media_keys_confero_does_not_use(http: aiohttp.ClientSession) -> None:
    path = f"/rest/v2/applications/settings/{APP}"
    async with http.get(path) as resp:
        settings = await resp.json()
    settings.update({"maxVideoTrackCount": 6, "webRTCClientStartTimeoutMs": 10000, "hlsMuxingEnabled": False})
    async with http.post(path, json=settings) as resp:
        assert resp.status == 200, await resp.text()
    async with http.get(path) as resp:
        after = await resp.json()
    assert after["maxVideoTrackCount"] == 6 and after["hlsMuxingEnabled"] is False
    # a bad value of a key Confero uses still refuses the whole update
    async with http.post(path, json={"dataChannelEnabled": "maybe", "maxVideoTrackCount": 3}) as resp:
        assert resp.status == 400
    async with http.get(path) as resp:
        assert (await resp.json())["maxVideoTrackCount"] == 6


# ------------------------------------------------------------------------- what is stored is enforced


async def test_planned_dates_viewer_and_subtrack_limits(server: Server, http: aiohttp.ClientSession) -> None:
    now = int(time.time())
    await create(http, streamId="later", plannedStartDate=now + 3600)
    await create(http, streamId="over", plannedEndDate=now - 60)
    await create(http, streamId="one", webRTCViewerLimit=1)
    await create(http, streamId="small", subtracksLimit=1)
    async with await AmsSocket.connect(server.port) as sock:
        for stream_id in ("later", "over"):
            await sock.send({"command": "publish", "streamId": stream_id})
            error = await sock.wait_for(lambda m: m.get("command") == "error", timeout=5)
            assert error["definition"] == "stream_not_active_or_expired", error
        publisher = Publisher(sock, "one")
        first = Player(await AmsSocket.connect(server.port), "one")
        try:
            await publisher.start()
            await sock.wait_for(definition="publish_started", stream_id="one", timeout=10)
            await first.start()
            async with await AmsSocket.connect(server.port) as other:
                await other.send({"command": "play", "streamId": "one"})
                error = await other.wait_for(lambda m: m.get("command") == "error", timeout=5)
                assert error["definition"] == "viewerLimitReached", error
        finally:
            await first.close()
            await first.sock.close()
            await publisher.close()
    members: list[Member] = []
    try:
        a = await Member.join(server, "sa", room="small")
        members.append(a)
        await a.publish(room="small")
        b = await Member.join(server, "sb", room="small")
        members.append(b)
        await b.sock.send({"command": "publish", "streamId": "sb", "mainTrack": "small"})
        error = await b.sock.wait_for(lambda m: m.get("command") == "error", timeout=5)
        assert error["definition"] == "main_track_has_max_subtrack_count__not_allowed_to_add_more_subtracks"
        status, body = await call(http, "POST", "/broadcasts/small/subtrack", params={"id": "sc"})
        assert status == 400 and body["success"] is False and "limit" in body["message"]
    finally:
        await close_all(members)
