"""REST v2 conference rooms (protocol.md §4.1-4.2) against an in-process server, with live members too."""

from __future__ import annotations

import time
from typing import Any

import aiohttp
import pytest

from confero.server import Server
from tests.integration.test_conference import Member, close_all
from tests.support import eventually

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
ROOM_FIELDS = {"roomId", "startDate", "endDate", "roomStreamList", "mode", "originAdress"}


def rooms(path: str = "", app: str = APP) -> str:
    return f"/{app}/rest/v2/broadcasts/conference-rooms{path}"


async def call(http: aiohttp.ClientSession, method: str, path: str, *, app: str = APP, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, rooms(path, app), **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


def assert_failure(body: Any, message: str | None = None) -> None:
    assert isinstance(body, dict), body
    assert set(body) == {"success", "message", "dataId", "errorId"}, body
    assert body["success"] is False
    assert isinstance(body["message"], str) and body["message"]
    if message is not None:
        assert body["message"] == message, body


def assert_success(body: Any) -> None:
    assert isinstance(body, dict), body
    assert set(body) == {"success", "message", "dataId", "errorId"}, body
    assert body["success"] is True, body


async def create_room(http: aiohttp.ClientSession, app: str = APP, **fields: Any) -> dict[str, Any]:
    status, body = await call(http, "POST", "", app=app, json=fields)
    assert status == 200, body
    assert set(body) == ROOM_FIELDS, body
    return body


async def get_room(http: aiohttp.ClientSession, room_id: str, app: str = APP) -> tuple[int, Any]:
    return await call(http, "GET", f"/{room_id}", app=app)


# ------------------------------------------------------------------------------- create


async def test_create_with_room_id_only_gets_one_hour_window(server: Server, http: aiohttp.ClientSession) -> None:
    before = int(time.time())
    room = await create_room(http, roomId="r1")
    after = int(time.time())
    assert room["roomId"] == "r1"
    assert before <= room["startDate"] <= after  # Unix seconds, not milliseconds
    assert room["endDate"] == room["startDate"] + 3600
    assert room["roomStreamList"] == []
    assert room["mode"] == "legacy"
    assert isinstance(room["originAdress"], str)
    # GET returns the same object
    status, fetched = await get_room(http, "r1")
    assert status == 200
    assert fetched == room
    # a room is not in memory until someone joins it
    assert "r1" not in server.applications[APP].rooms


async def test_create_with_explicit_window_and_mode(http: aiohttp.ClientSession) -> None:
    now = int(time.time())
    room = await create_room(http, roomId="win", startDate=now + 60, endDate=now + 120, mode="multitrack")
    assert (room["startDate"], room["endDate"], room["mode"]) == (now + 60, now + 120, "multitrack")
    # endDate alone: the start is now
    room = await create_room(http, roomId="endonly", endDate=now + 500)
    assert abs(room["startDate"] - now) <= 2 and room["endDate"] == now + 500
    # startDate alone: the end is one hour after it
    room = await create_room(http, roomId="startonly", startDate=now + 100)
    assert room["startDate"] == now + 100 and room["endDate"] == now + 100 + 3600
    # a roomStreamList given at creation is kept
    room = await create_room(http, roomId="withlist", roomStreamList=["s1", "s2"])
    assert room["roomStreamList"] == ["s1", "s2"]


async def test_create_without_room_id_generates_one(http: aiohttp.ClientSession) -> None:
    first = await create_room(http)
    second = await create_room(http, roomId="")
    for room in (first, second):
        assert isinstance(room["roomId"], str) and room["roomId"]
        assert all(c.isalnum() or c in "_.-" for c in room["roomId"])
        status, fetched = await get_room(http, room["roomId"])
        assert status == 200 and fetched["roomId"] == room["roomId"]
    assert first["roomId"] != second["roomId"]
    # an empty body is a room with every default
    async with http.post(rooms(), data=b"") as resp:
        assert resp.status == 200, await resp.text()
        assert (await resp.json())["roomId"]


async def test_create_duplicate_id_is_refused(http: aiohttp.ClientSession) -> None:
    original = await create_room(http, roomId="dup", mode="mcu")
    status, body = await call(http, "POST", "", json={"roomId": "dup", "mode": "legacy"})
    assert status == 400
    assert_failure(body, "Stream id is already being used. Please change stream id or keep it empty")
    # ... and leaves the first one untouched
    assert (await get_room(http, "dup"))[1] == original
    # a broadcast's id is taken too (rooms are stored as broadcast main tracks in Ant Media)
    async with http.post(f"/{APP}/rest/v2/broadcasts/create", json={"streamId": "bcast"}) as resp:
        assert resp.status == 200, await resp.text()
    status, body = await call(http, "POST", "", json={"roomId": "bcast"})
    assert status == 400
    assert_failure(body, "Stream id is already being used. Please change stream id or keep it empty")


@pytest.mark.parametrize(
    "body",
    [
        {"roomId": "bad1", "startDate": "x"},
        {"roomId": "bad2", "endDate": "tomorrow"},
        {"roomId": "bad3", "roomStreamList": 5},
        {"roomId": "bad4", "roomStreamList": [1, 2]},
        {"roomId": 7},
        {"roomId": "bad5", "mode": 3},
        {"roomId": "bad6", "startDate": -1},
        {"roomId": "bad7", "endDate": -5},
        {"roomId": "bad8", "startDate": 2_000_000_000, "endDate": 2_000_000_000},
        {"roomId": "bad9", "startDate": 2_000_000_100, "endDate": 2_000_000_000},
        {"roomId": "bad room"},
        {"roomId": "bad/room"},
        {"roomId": "bäd"},
        {"roomId": "x" * 201},
        {"roomId": "bad10", "mode": "p2p"},
        [],
        "room",
    ],
    ids=lambda b: repr(b)[:40],
)
async def test_create_invalid_bodies_are_400(http: aiohttp.ClientSession, body: Any) -> None:
    status, result = await call(http, "POST", "", json=body)
    assert status == 400, result
    assert_failure(result)
    # nothing was created
    status, listed = await call(http, "GET", "/list/0/50")
    assert status == 200 and listed == []


@pytest.mark.parametrize("raw", [b"{not json", b"roomId=r", b"\xff\xfe", b'{"roomId": "r"'])
async def test_create_non_json_body_is_400(http: aiohttp.ClientSession, raw: bytes) -> None:
    status, result = await call(http, "POST", "", data=raw, headers={"Content-Type": "application/json"})
    assert status == 400
    assert_failure(result)
    status, listed = await call(http, "GET", "/list/0/50")
    assert status == 200 and listed == []


# ------------------------------------------------------------------------- get and list


async def test_get_unknown_room_is_404_json(http: aiohttp.ClientSession) -> None:
    status, body = await get_room(http, "nope")
    assert status == 404
    assert_failure(body)


async def test_list_pagination(http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", "/list/0/10")
    assert status == 200 and body == []
    start = int(time.time())
    ids = [f"room{i:02d}" for i in range(7)]
    for room_id in reversed(ids):  # created out of order; the list is ordered
        await create_room(http, roomId=room_id, startDate=start, endDate=start + 600)
    status, page = await call(http, "GET", "/list/0/3")
    assert status == 200
    assert [r["roomId"] for r in page] == ids[:3]
    assert all(set(r) == ROOM_FIELDS for r in page)
    assert all(r["startDate"] == start and r["endDate"] == start + 600 for r in page)
    status, page = await call(http, "GET", "/list/3/3")
    assert [r["roomId"] for r in page] == ids[3:6]
    status, page = await call(http, "GET", "/list/6/3")
    assert [r["roomId"] for r in page] == ids[6:]
    status, page = await call(http, "GET", "/list/7/3")
    assert status == 200 and page == []
    status, page = await call(http, "GET", "/list/0/0")
    assert status == 200 and page == []
    status, page = await call(http, "GET", "/list/0/100")  # capped, but 7 < cap
    assert sorted(r["roomId"] for r in page) == ids
    for bad in ("/list/-1/3", "/list/0/-3", "/list/a/3", "/list/0/b"):
        status, body = await call(http, "GET", bad)
        assert status == 400, bad
        assert_failure(body)


# ------------------------------------------------------------------------------ update


async def test_put_updates_dates_and_mode(http: aiohttp.ClientSession) -> None:
    now = int(time.time())
    await create_room(http, roomId="upd", startDate=now, endDate=now + 100)
    status, body = await call(
        http, "PUT", "/upd", json={"roomId": "upd", "startDate": now + 10, "endDate": now + 7200, "mode": "multitrack"}
    )
    assert status == 200, body
    assert (body["roomId"], body["startDate"], body["endDate"], body["mode"]) == (
        "upd",
        now + 10,
        now + 7200,
        "multitrack",
    )
    status, fetched = await get_room(http, "upd")
    assert status == 200
    assert (fetched["startDate"], fetched["endDate"], fetched["mode"]) == (now + 10, now + 7200, "multitrack")
    # a zero date keeps the stored one
    status, body = await call(http, "PUT", "/upd", json={"endDate": now + 9000, "mode": "multitrack"})
    assert status == 200, body
    status, fetched = await get_room(http, "upd")
    assert (fetched["startDate"], fetched["endDate"]) == (now + 10, now + 9000)


async def test_put_refusals(http: aiohttp.ClientSession) -> None:
    now = int(time.time())
    await create_room(http, roomId="upd2", startDate=now, endDate=now + 100, mode="mcu")
    status, body = await call(http, "PUT", "/missing", json={"startDate": now, "endDate": now + 10})
    assert status == 404
    assert_failure(body)
    # end before start, and end equal to start
    for dates in ({"startDate": now + 50, "endDate": now + 10}, {"startDate": now + 50, "endDate": now + 50}):
        status, body = await call(http, "PUT", "/upd2", json={**dates, "mode": "mcu"})
        assert status == 400, dates
        assert_failure(body)
    # only a new end, before the stored start
    status, body = await call(http, "PUT", "/upd2", json={"endDate": now - 100, "mode": "mcu"})
    assert status == 400
    assert_failure(body)
    for bad in ({"startDate": "x"}, {"endDate": -1}, {"mode": "bogus"}, {"roomStreamList": 5}):
        status, body = await call(http, "PUT", "/upd2", json=bad)
        assert status == 400, bad
        assert_failure(body)
    status, body = await call(http, "PUT", "/upd2", data=b"{nope", headers={"Content-Type": "application/json"})
    assert status == 400
    assert_failure(body)
    # nothing changed
    status, fetched = await get_room(http, "upd2")
    assert (fetched["startDate"], fetched["endDate"], fetched["mode"]) == (now, now + 100, "mcu")


# ------------------------------------------------------------------------------ delete


async def test_delete_room(http: aiohttp.ClientSession) -> None:
    await create_room(http, roomId="del")
    status, body = await call(http, "DELETE", "/del")
    assert status == 200
    assert_success(body)
    assert (await get_room(http, "del"))[0] == 404
    status, body = await call(http, "DELETE", "/del")
    assert status == 404
    assert_failure(body)
    # the id is free again
    await create_room(http, roomId="del")


# --------------------------------------------------------------------------- room-info


async def test_room_info_without_members(http: aiohttp.ClientSession) -> None:
    now = int(time.time())
    await create_room(http, roomId="info", startDate=now, endDate=now + 300)
    status, body = await call(http, "GET", "/info/room-info", params={"streamId": "x"})
    assert status == 200
    assert body == {"roomId": "info", "streamDetailsMap": {}, "startDate": now, "endDate": now + 300}
    status, body = await call(http, "GET", "/info/room-info")
    assert status == 200 and body["streamDetailsMap"] == {}
    # unknown room: a null map
    status, body = await call(http, "GET", "/ghost/room-info", params={"streamId": "x"})
    assert status == 200
    assert body["roomId"] == "ghost" and body["streamDetailsMap"] is None


# ---------------------------------------------------------------- add / remove streams


async def room_streams(http: aiohttp.ClientSession, room_id: str) -> list[str]:
    status, body = await get_room(http, room_id)
    assert status == 200, body
    return body["roomStreamList"]


async def test_add_and_remove_streams(http: aiohttp.ClientSession) -> None:
    await create_room(http, roomId="list")
    status, body = await call(http, "PUT", "/list/s1")
    assert status == 200
    assert_success(body)
    assert await room_streams(http, "list") == ["s1"]
    # adding twice keeps one entry
    status, body = await call(http, "PUT", "/list/s1")
    assert status == 200 and await room_streams(http, "list") == ["s1"]
    # deprecated form
    status, body = await call(http, "PUT", "/list/add", params={"streamId": "s2"})
    assert status == 200
    assert_success(body)
    assert await room_streams(http, "list") == ["s1", "s2"]
    status, body = await call(http, "PUT", "/list/add", params={"streamId": "s3"})
    assert await room_streams(http, "list") == ["s1", "s2", "s3"]
    # remove
    status, body = await call(http, "DELETE", "/list/s1")
    assert status == 200
    assert_success(body)
    assert await room_streams(http, "list") == ["s2", "s3"]
    status, body = await call(http, "PUT", "/list/delete", params={"streamId": "s3"})
    assert status == 200
    assert_success(body)
    assert await room_streams(http, "list") == ["s2"]
    # removing an id that is not there is harmless
    status, body = await call(http, "DELETE", "/list/never")
    assert status == 200 and await room_streams(http, "list") == ["s2"]


async def test_add_and_remove_stream_refusals(http: aiohttp.ClientSession) -> None:
    await create_room(http, roomId="lst")
    # blank stream ids (deprecated forms without or with an empty streamId)
    for method, path, params in (
        ("PUT", "/lst/add", {}),
        ("PUT", "/lst/add", {"streamId": ""}),
        ("PUT", "/lst/delete", {}),
        ("PUT", "/lst/delete", {"streamId": ""}),
    ):
        status, body = await call(http, method, path, params=params)
        assert status == 400, (method, path, params)
        assert_failure(body, "Room id or stream id is empty")
    # unknown room
    for method, path, params in (
        ("PUT", "/ghost/s1", {}),
        ("DELETE", "/ghost/s1", {}),
        ("PUT", "/ghost/add", {"streamId": "s1"}),
        ("PUT", "/ghost/delete", {"streamId": "s1"}),
    ):
        status, body = await call(http, method, path, params=params)
        assert status == 404, (method, path)
        assert_failure(body)
    assert (await get_room(http, "ghost"))[0] == 404
    assert await room_streams(http, "lst") == []


# ---------------------------------------------------------------------- live members


async def test_room_info_lists_live_members(server: Server, http: aiohttp.ClientSession) -> None:
    members: list[Member] = []
    try:
        a = await Member.join(server, "ma", room="live")
        members.append(a)
        b = await Member.join(server, "mb", room="live")
        members.append(b)
        # joined but not publishing: not listed
        status, body = await call(http, "GET", "/live/room-info", params={"streamId": "zz"})
        assert status == 200 and body["streamDetailsMap"] == {}
        await a.publish()  # legacy: plain publish after joinRoom
        await b.publish(room="live")  # multitrack: mainTrack = room
        status, body = await call(http, "GET", "/live/room-info", params={"streamId": "zz"})
        assert status == 200
        assert body["streamDetailsMap"] == {"ma": "name-ma", "mb": "name-mb"}
        # the room was created on the first join, with no end (a zombi main track)
        status, room = await get_room(http, "live")
        assert status == 200
        assert body["startDate"] == room["startDate"] and body["endDate"] == room["endDate"]
        assert room["endDate"] == 0
        assert sorted(room["roomStreamList"]) == ["ma", "mb"]
        # the requester's own stream is left out
        status, body = await call(http, "GET", "/live/room-info", params={"streamId": "ma"})
        assert body["streamDetailsMap"] == {"mb": "name-mb"}
        # ... as in getRoomInfo over the WebSocket
        await a.sock.send({"command": "getRoomInfo", "room": "live", "streamId": "ma"})
        info = await a.sock.wait_for("roomInformation", timeout=5)
        assert info["streams"] == ["mb"]
    finally:
        await close_all(members)


async def test_delete_room_with_live_members_ends_everything(server: Server, http: aiohttp.ClientSession) -> None:
    members: list[Member] = []
    try:
        for sid in ("d1", "d2", "d3"):
            member = await Member.join(server, sid, room="doomed")
            members.append(member)
            await member.publish(room="doomed" if sid != "d1" else None)
        # d1 plays d2 (legacy flow), d3 plays the whole room (multitrack flow)
        await members[0].play("d2", room="doomed")
        await members[2].play("doomed", room="doomed", track_list=["!d3"])
        assert "doomed" in server.applications[APP].rooms

        status, body = await call(http, "DELETE", "/doomed")
        assert status == 200
        assert_success(body)
        for member in members:
            left = await member.sock.wait_for(definition="leavedFromRoom", timeout=10)
            assert left["room"] == "doomed"
            await member.sock.wait_for(definition="publish_finished", stream_id=member.stream_id, timeout=10)
        await members[0].sock.wait_for(definition="play_finished", stream_id="d2", timeout=10)
        await members[2].sock.wait_for(definition="play_finished", stream_id="doomed", timeout=10)
        assert "doomed" not in server.applications[APP].rooms
        assert server.applications[APP].streams == {}
        await eventually(
            lambda: not server.router.publishers and not server.router.subscribers, timeout=5, what="peers closed"
        )
        assert (await get_room(http, "doomed"))[0] == 404
        # every socket is still usable
        for member in members:
            await member.sock.send({"command": "ping"})
            await member.sock.wait_for("pong", timeout=5)
    finally:
        await close_all(members)


async def test_rest_remove_of_live_member_stops_its_stream(server: Server, http: aiohttp.ClientSession) -> None:
    members: list[Member] = []
    try:
        for sid in ("k1", "k2", "k3"):
            member = await Member.join(server, sid, room="kick")
            members.append(member)
            await member.publish()
        await members[1].play("k1", room="kick")
        kicked = members[0]
        status, body = await call(http, "DELETE", "/kick/k1")
        assert status == 200
        assert_success(body)
        await kicked.sock.wait_for(definition="publish_finished", stream_id="k1", timeout=10)
        for member in members[1:]:
            leaved = await member.sock.wait_for(definition="streamLeaved", stream_id="k1", timeout=10)
            assert leaved["room"] == "kick"
        await members[1].sock.wait_for(definition="play_finished", stream_id="k1", timeout=10)
        room = server.applications[APP].rooms["kick"]
        assert sorted(room.members) == ["k2", "k3"]
        assert "k1" not in server.applications[APP].streams
        assert sorted(await room_streams(http, "kick")) == ["k2", "k3"]
        status, body = await call(http, "GET", "/kick/room-info", params={"streamId": "k2"})
        assert body["streamDetailsMap"] == {"k3": "name-k3"}
        # the others still stream: nobody else heard about a stop
        assert members[1].sock.find(definition="publish_finished") == []
        assert members[2].sock.find(definition="publish_finished") == []
    finally:
        await close_all(members)


async def test_rooms_are_per_application(server: Server, http: aiohttp.ClientSession) -> None:
    await create_room(http, roomId="mine")
    status, body = await get_room(http, "mine", app="LiveApp")
    assert status == 404
    assert_failure(body)
    status, body = await call(http, "GET", "/list/0/10", app="LiveApp")
    assert status == 200 and body == []
    status, body = await call(http, "GET", "/mine/room-info", app="LiveApp")
    assert status == 200 and body["streamDetailsMap"] is None
    # the same id can be created in the other application, with its own window
    other = await create_room(http, app="LiveApp", roomId="mine", mode="mcu")
    assert other["mode"] == "mcu"
    status, body = await get_room(http, "mine")
    assert body["mode"] == "legacy"
    # deleting one leaves the other
    status, body = await call(http, "DELETE", "/mine", app="LiveApp")
    assert status == 200
    assert (await get_room(http, "mine"))[0] == 200
    # an unknown application
    async with http.get("/NoSuchApp/rest/v2/broadcasts/conference-rooms/mine") as resp:
        assert resp.status == 404
    # the live room is per application too
    member = await Member.join(server, "pa", room="mine")
    try:
        assert "mine" in server.applications[APP].rooms
        assert "mine" not in server.applications["LiveApp"].rooms
    finally:
        await member.close()
