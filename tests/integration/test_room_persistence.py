"""Rooms and broadcasts survive a restart on the same data directory; live state does not."""

from __future__ import annotations

import gc
import time
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from confero.server import Server
from confero.store import SqliteStore
from tests.integration.test_conference import Member, close_all
from tests.support import eventually
from tests.support.amsclient import AmsSocket
from tests.support.server import assert_no_leaks, assert_no_pending_tasks, make_settings

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
EXPIRED = "room_not_active_or_expired"


def rest(path: str) -> str:
    return f"/{APP}/rest/v2/broadcasts{path}"


async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, rest(path), **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


async def started(tmp_path: Path) -> Server:
    server = Server(make_settings(tmp_path))
    try:
        await server.start()
    except BaseException:
        await server.close()
        raise
    return server


async def stopped(server: Server) -> None:
    """Wait for the clients' sockets to go, check nothing leaked, close."""
    try:
        await eventually(lambda: not server.dump()["sessions"], timeout=5, what="sessions gone")
        assert_no_leaks(server)
    finally:
        await server.close()


async def refused_join(server: Server, room_id: str) -> None:
    async with await AmsSocket.connect(server.port) as sock:
        await sock.send({"command": "joinRoom", "room": room_id, "streamId": "late"})
        error = await sock.wait_for(lambda m: m.get("command") == "error", timeout=5)
        assert error["definition"] == EXPIRED, error
        await sock.send({"command": "ping"})
        await sock.wait_for("pong", timeout=5)


def window(room: dict[str, Any]) -> tuple[str, int, int, str]:
    return room["roomId"], room["startDate"], room["endDate"], room["mode"]


async def test_rooms_and_broadcasts_survive_a_restart(tmp_path: Path) -> None:
    now = int(time.time())
    first: Server | None = None
    second: Server | None = None
    members: list[Member] = []
    try:
        # ---------------------------------------------------------------- first run
        first = await started(tmp_path)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{first.port}") as http:
            rooms: dict[str, dict[str, Any]] = {}
            for body in (
                {"roomId": "planned", "startDate": now - 60, "endDate": now + 7200, "mode": "multitrack"},
                {"roomId": "expired", "startDate": now - 7200, "endDate": now - 3600, "mode": "mcu"},
                {"roomId": "plain"},
            ):
                status, room = await call(http, "POST", "/conference-rooms", json=body)
                assert status == 200, room
                rooms[room["roomId"]] = room
            status, generated = await call(http, "POST", "/conference-rooms", json={"endDate": now + 900})
            assert status == 200, generated
            rooms[generated["roomId"]] = generated
            status, _ = await call(http, "PUT", "/conference-rooms/plain/listed")
            assert status == 200
            rooms["plain"]["roomStreamList"] = ["listed"]

            status, bcast = await call(http, "POST", "/create", json={"streamId": "bc1", "name": "Kept broadcast"})
            assert status == 200, bcast
            status, live = await call(http, "POST", "/create", json={"streamId": "livebc", "name": "Live at shutdown"})
            assert status == 200, live

            # one room only exists because somebody joined it; that member is live at shutdown
            member = await Member.join(first, "livebc", room="auto")
            members.append(member)
            await member.publish(room="auto")
            status, body = await call(http, "GET", "/livebc")
            assert status == 200 and body["status"] == "broadcasting", body
            status, auto = await call(http, "GET", "/conference-rooms/auto")
            assert status == 200, auto
            assert auto["endDate"] == 0 and auto["roomStreamList"] == ["livebc"]

            await refused_join(first, "expired")

        await first.close()  # with the member still connected and publishing
        await member.sock.wait_for(definition="publish_finished", stream_id="livebc", timeout=10)
        await close_all(members)
        members.clear()
        first = None

        # ---------------------------------------------------------------- second run
        second = await started(tmp_path)
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{second.port}") as http:
            for room_id, before in rooms.items():
                status, after = await call(http, "GET", f"/conference-rooms/{room_id}")
                assert status == 200, (room_id, after)
                assert window(after) == window(before)
                assert after["roomStreamList"] == before["roomStreamList"], room_id
            # the room made by a join (a zombi main track) went when it closed at shutdown
            status, auto = await call(http, "GET", "/conference-rooms/auto")
            assert status == 404, auto
            status, listed = await call(http, "GET", "/conference-rooms/list/0/50")
            assert status == 200
            assert {r["roomId"] for r in listed} == set(rooms)
            # nothing is in memory until someone joins
            assert second.applications[APP].rooms == {}

            status, body = await call(http, "GET", "/bc1")
            assert status == 200 and body["name"] == "Kept broadcast" and body["status"] == "created"
            status, body = await call(http, "GET", "/livebc")
            assert status == 200, body
            assert body["name"] == "Live at shutdown"
            assert body["status"] == "finished"
            status, count = await call(http, "GET", "/active-live-stream-count")
            assert status == 200 and count["number"] == 0

            # a surviving room can be joined, published into and is listed in room-info
            member = await Member.join(second, "again", room="planned")
            members.append(member)
            await member.publish(room="planned")
            status, info = await call(http, "GET", "/conference-rooms/planned/room-info", params={"streamId": "x"})
            assert status == 200
            assert info["streamDetailsMap"] == {"again": "name-again"}
            assert (info["startDate"], info["endDate"]) == (now - 60, now + 7200)
            # the stream that was live at shutdown can be published again
            again = await Member.join(second, "livebc", room="auto")
            members.append(again)
            await again.publish(room="auto")
            status, body = await call(http, "GET", "/livebc")
            assert body["status"] == "broadcasting"

            # the expired window still refuses
            await refused_join(second, "expired")
            assert "expired" not in second.applications[APP].rooms

            await close_all(members)
            members.clear()
            await eventually(lambda: not second.applications[APP].rooms, timeout=5, what="rooms idle")
        await stopped(second)
        second = None
    finally:
        await close_all(members)
        for server in (first, second):
            if server is not None:
                await server.close()
    await assert_no_pending_tasks()
    gc.collect()


async def test_a_crash_leaves_no_stream_broadcasting(tmp_path: Path) -> None:
    """A record still marked live (as after a crash) is finished when the server starts."""
    server = await started(tmp_path)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as http:
            status, _ = await call(http, "POST", "/create", json={"streamId": "crashed"})
            assert status == 200
            status, _ = await call(http, "POST", "/conference-rooms", json={"roomId": "crashroom"})
            assert status == 200
        await stopped(server)
    finally:
        await server.close()

    # what a crash mid-publish leaves in the store
    store = SqliteStore(Path(tmp_path) / "data" / "confero.db")
    try:
        record = await store.get_stream(APP, "crashed")
        assert record is not None
        record.status = "broadcasting"
        await store.save_stream(APP, record)
        await store.flush()
    finally:
        await store.close()

    server = await started(tmp_path)
    try:
        async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as http:
            status, body = await call(http, "GET", "/crashed")
            assert status == 200 and body["status"] == "finished", body
            status, room = await call(http, "GET", "/conference-rooms/crashroom")
            assert status == 200 and room["endDate"] - room["startDate"] == 3600
        # and it can be published again
        member = await Member.join(server, "crashed", room="crashroom")
        try:
            await member.publish()
        finally:
            await member.close()
        await stopped(server)
    finally:
        await server.close()
    await assert_no_pending_tasks()
