"""Room validity windows (startDate/endDate, Unix seconds): refusals outside them, and expiry mid-call."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import aiohttp
import pytest

from confero.server import Server
from tests.integration.test_conference import Member, close_all
from tests.support import eventually
from tests.support.amsclient import AmsSocket

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
EXPIRED = "room_not_active_or_expired"


def rooms(path: str = "") -> str:
    return f"/{APP}/rest/v2/broadcasts/conference-rooms{path}"


async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, rooms(path), **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


async def create_room(http: aiohttp.ClientSession, room_id: str, start: int, end: int) -> dict[str, Any]:
    status, body = await call(http, "POST", "", json={"roomId": room_id, "startDate": start, "endDate": end})
    assert status == 200, body
    assert (body["startDate"], body["endDate"]) == (start, end)
    return body


def is_error(stream_id: str | None = None) -> Any:
    return lambda m: m.get("command") == "error" and (stream_id is None or m.get("streamId") == stream_id)


async def expect_refused(sock: AmsSocket, command: dict[str, Any]) -> dict[str, Any]:
    await sock.send(command)
    error = await sock.wait_for(is_error(), timeout=5)
    assert error["definition"] == EXPIRED, error
    # the socket stays usable
    await sock.send({"command": "ping"})
    await sock.wait_for("pong", timeout=5)
    return error


def assert_no_media(server: Server) -> None:
    assert not server.router.publishers and not server.router.subscribers


# -------------------------------------------------------------------- refused outside the window


@pytest.mark.parametrize("window", ["past", "future"])
async def test_outside_window_every_way_in_is_refused(server: Server, http: aiohttp.ClientSession, window: str) -> None:
    now = int(time.time())
    start, end = (now - 7200, now - 3600) if window == "past" else (now + 3600, now + 7200)
    await create_room(http, "closed", start, end)
    app = server.applications[APP]
    async with await AmsSocket.connect(server.port) as sock:
        # joinRoom (with and without a stream id)
        await expect_refused(sock, {"command": "joinRoom", "room": "closed", "mainTrack": "closed", "streamId": "j1"})
        await expect_refused(sock, {"command": "joinRoom", "room": "closed"})
        assert sock.find(definition="joinedTheRoom") == []
        # publish as a subtrack of the room
        error = await expect_refused(
            sock, {"command": "publish", "streamId": "p1", "mainTrack": "closed", "video": True, "audio": True}
        )
        assert error.get("streamId") == "p1"
        assert sock.find("start") == []
        # play the whole room
        error = await expect_refused(sock, {"command": "play", "streamId": "closed", "room": "closed", "trackList": []})
        assert error.get("streamId") == "closed"
        assert sock.find("takeConfiguration") == []
        # nothing was left behind
        assert "closed" not in app.rooms
        assert app.streams == {}
        assert_no_media(server)
        # the refusals did not change the room
        status, body = await call(http, "GET", "/closed")
        assert status == 200 and (body["startDate"], body["endDate"]) == (start, end)
        assert body["roomStreamList"] == []
        # getRoomInfo still answers for the room
        await sock.send({"command": "getRoomInfo", "room": "closed", "streamId": "j1"})
        info = await sock.wait_for("roomInformation", timeout=5)
        assert info["streams"] == []


async def test_window_opening_later_is_refused_then_accepted(server: Server, http: aiohttp.ClientSession) -> None:
    """Moving the window over REST takes effect for the next join."""
    now = int(time.time())
    await create_room(http, "later", now + 3600, now + 7200)
    async with await AmsSocket.connect(server.port) as sock:
        await expect_refused(sock, {"command": "joinRoom", "room": "later", "streamId": "w1"})
        status, body = await call(
            http, "PUT", "/later", json={"startDate": now - 10, "endDate": now + 600, "mode": "legacy"}
        )
        assert status == 200, body
        await sock.send({"command": "joinRoom", "room": "later", "streamId": "w1"})
        joined = await sock.wait_for(definition="joinedTheRoom", timeout=5)
        assert joined["streamId"] == "w1"
        await sock.send({"command": "leaveFromRoom", "room": "later", "streamId": "w1"})
        await sock.wait_for(definition="leavedFromRoom", timeout=5)


# ------------------------------------------------------------------------------- expiry mid-call


async def wait_room_gone(server: Server, room_id: str, timeout: float = 10) -> None:
    app = server.applications[APP]
    await eventually(lambda: room_id not in app.rooms, timeout=timeout, what=f"room {room_id} gone")


async def assert_expired_for(member: Member, room_id: str) -> None:
    error = await member.sock.wait_for(
        lambda m: m.get("command") == "error" and m.get("definition") == EXPIRED, timeout=10
    )
    assert error["room"] == room_id, error
    left = await member.sock.wait_for(definition="leavedFromRoom", timeout=10)
    assert left["room"] == room_id


@pytest.mark.parametrize("flow", ["legacy", "multitrack"])
async def test_room_expires_during_a_call(server: Server, http: aiohttp.ClientSession, flow: str) -> None:
    now = int(time.time())
    await create_room(http, "short", now, now + 3)
    app = server.applications[APP]
    members: list[Member] = []
    try:
        a, b = await asyncio.gather(Member.join(server, "ea", room="short"), Member.join(server, "eb", room="short"))
        members += [a, b]
        main_track = "short" if flow == "multitrack" else None
        await asyncio.gather(a.publish(room=main_track), b.publish(room=main_track))
        if flow == "legacy":
            await b.play("ea", room="short")  # one plays the other
        else:
            await b.play("short", room="short", track_list=["!eb"])  # the whole room on one connection
        assert "short" in app.rooms and time.time() < now + 3, "setup took longer than the window"
        assert server.router.publishers and server.router.subscribers

        for member in members:
            await assert_expired_for(member, "short")
            await member.sock.wait_for(definition="publish_finished", stream_id=member.stream_id, timeout=10)
        played = "ea" if flow == "legacy" else "short"
        await b.sock.wait_for(definition="play_finished", stream_id=played, timeout=10)
        assert time.time() >= now + 3 - 0.1  # not before the end date

        await wait_room_gone(server, "short")
        assert app.streams == {}
        await eventually(
            lambda: not server.router.publishers and not server.router.subscribers, timeout=5, what="peers closed"
        )
        # the record stays, with its window; a new join is refused
        status, body = await call(http, "GET", "/short")
        assert status == 200 and body["endDate"] == now + 3
        await expect_refused(a.sock, {"command": "joinRoom", "room": "short", "streamId": "ea"})
        assert "short" not in app.rooms
    finally:
        await close_all(members)


async def test_put_shortening_a_live_room_ends_it(server: Server, http: aiohttp.ClientSession) -> None:
    now = int(time.time())
    await create_room(http, "cut", now, now + 3600)
    app = server.applications[APP]
    members: list[Member] = []
    try:
        a, b = await asyncio.gather(Member.join(server, "ca", room="cut"), Member.join(server, "cb", room="cut"))
        members += [a, b]
        await asyncio.gather(a.publish(room="cut"), b.publish(room="cut"))
        await a.play("cb", room="cut")
        await a.sock.round_trip()  # whatever the server had sent a by now has arrived
        assert "cut" in app.rooms and not a.sock.find(definition="leavedFromRoom")

        end = int(time.time()) + 1
        status, body = await call(http, "PUT", "/cut", json={"endDate": end, "mode": "legacy"})
        assert status == 200 and body["endDate"] == end
        for member in members:
            await assert_expired_for(member, "cut")
            await member.sock.wait_for(definition="publish_finished", stream_id=member.stream_id, timeout=10)
        await a.sock.wait_for(definition="play_finished", stream_id="cb", timeout=10)
        ended = time.time()
        assert end - 0.1 <= ended <= end + 3, (end, ended)
        await wait_room_gone(server, "cut")
        await eventually(
            lambda: not server.router.publishers and not server.router.subscribers, timeout=5, what="peers closed"
        )
        await expect_refused(b.sock, {"command": "joinRoom", "room": "cut", "streamId": "cb"})
    finally:
        await close_all(members)


async def test_put_extending_a_live_room_keeps_it(server: Server, http: aiohttp.ClientSession) -> None:
    now = int(time.time())
    await create_room(http, "ext", now, now + 2)
    app = server.applications[APP]
    # A room whose window ends a second after ext's old one: its expiry comes after that end date.
    await create_room(http, "ext-probe", now, now + 3)
    member = await Member.join(server, "xa", room="ext")
    probe = await Member.join(server, "xp", room="ext-probe")
    try:
        await member.publish(room="ext")
        status, body = await call(http, "PUT", "/ext", json={"endDate": now + 3600, "mode": "legacy"})
        assert status == 200, body
        await assert_expired_for(probe, "ext-probe")  # past the old end date
        await member.sock.round_trip()  # and whatever the server had sent the member has arrived
        assert "ext" in app.rooms
        assert member.sock.find(definition="leavedFromRoom") == []
        assert member.sock.find(is_error()) == []
        assert member.publisher is not None and not member.publisher.finished.is_set()
    finally:
        await close_all([member, probe])


async def test_refused_put_leaves_a_live_room_untouched(server: Server, http: aiohttp.ClientSession) -> None:
    """A 400 PUT must not change the window of a room that is in memory (its record is the live one)."""
    now = int(time.time())
    await create_room(http, "steady", now - 10, now + 600)
    app = server.applications[APP]
    member = await Member.join(server, "sa", room="steady")
    try:
        for body in (
            {"startDate": now + 1000, "mode": "legacy"},  # start after the stored end
            {"endDate": now - 20, "mode": "legacy"},  # end before the stored start
            {"startDate": now + 50, "endDate": now + 40, "mode": "legacy"},
        ):
            status, result = await call(http, "PUT", "/steady", json=body)
            assert status == 400, (body, result)
            assert result["success"] is False
            status, room = await call(http, "GET", "/steady")
            assert (room["startDate"], room["endDate"]) == (now - 10, now + 600), body
        room_obj = app.rooms["steady"]
        assert room_obj.is_open()
        assert (room_obj.record.start_date, room_obj.record.end_date) == (now - 10, now + 600)
        stored = await server.store.get_room(APP, "steady")
        assert stored is not None and (stored.start_date, stored.end_date) == (now - 10, now + 600)
        # the member is still in, and a second member can still join
        await member.publish(room="steady")
        other = await Member.join(server, "sb", room="steady")
        await other.close()
        assert member.sock.find(definition="leavedFromRoom") == []
    finally:
        await member.close()


# --------------------------------------------------------------------------- auto-created room


async def test_auto_created_room_has_no_end_and_goes_when_it_empties(
    server: Server, http: aiohttp.ClientSession
) -> None:
    assert (await call(http, "GET", "/auto"))[0] == 404
    before = int(time.time())
    member = await Member.join(server, "au", room="auto")
    after = int(time.time())
    try:
        status, body = await call(http, "GET", "/auto")
        assert status == 200, body
        assert body["roomId"] == "auto"
        assert before <= body["startDate"] <= after
        assert body["endDate"] == 0  # no end: a meeting may last longer than an hour
        assert body["mode"] == "legacy"
        status, info = await call(http, "GET", "/auto/room-info", params={"streamId": "au"})
        assert info == {
            "roomId": "auto",
            "streamDetailsMap": {},
            "startDate": body["startDate"],
            "endDate": body["endDate"],
        }
    finally:
        await member.close()
    # the record goes with its last member (Ant Media's zombi main track), so the name is free again
    await wait_room_gone(server, "auto")
    status, again = await call(http, "GET", "/auto")
    assert status == 404, again
    member = await Member.join(server, "au2", room="auto")
    await member.close()
