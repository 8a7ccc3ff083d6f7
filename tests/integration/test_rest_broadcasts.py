"""REST v2 broadcasts (protocol.md §4.1, §4.3) against an in-process server, with live streams too."""

from __future__ import annotations

import asyncio
import itertools
import time
from typing import Any

import aiohttp
import pytest

from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsSocket
from tests.support.clients import Clients

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"


def rest(path: str, app: str = APP) -> str:
    return f"/{app}/rest/v2/broadcasts{path}"


async def call(http: aiohttp.ClientSession, method: str, path: str, *, app: str = APP, **kw: Any) -> tuple[int, Any]:
    async with http.request(method, rest(path, app), **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


def assert_failure(body: Any) -> None:
    assert isinstance(body, dict)
    assert body["success"] is False
    assert isinstance(body["message"], str) and body["message"]
    assert set(body) == {"success", "message", "dataId", "errorId"}


async def create(http: aiohttp.ClientSession, app: str = APP, **fields: Any) -> dict[str, Any]:
    status, body = await call(http, "POST", "/create", app=app, json=fields)
    assert status == 200, body
    return body


async def wait_status(http: aiohttp.ClientSession, stream_id: str, status: str, timeout: float = 10) -> dict:
    async def reached() -> tuple[int, Any] | None:
        code, body = await call(http, "GET", f"/{stream_id}")
        return (code, body) if code == 200 and body["status"] == status else None

    _, body = await eventually(reached, timeout=timeout, what=f"{stream_id} to be {status!r}", interval=0.05)
    return body


async def wait_gone(http: aiohttp.ClientSession, stream_id: str, timeout: float = 10) -> None:
    async def gone() -> bool:
        code, _ = await call(http, "GET", f"/{stream_id}")
        return code == 404

    await eventually(gone, timeout=timeout, what=f"{stream_id} to be gone", interval=0.05)


# -- create ---------------------------------------------------------------------------------


async def test_create_with_stream_id(server: Server, http: aiohttp.ClientSession) -> None:
    before = int(time.time() * 1000)
    body = await create(http, streamId="cam1", name="Camera 1", description="front door")
    after = int(time.time() * 1000)
    assert body["streamId"] == "cam1"
    assert body["status"] == "created"
    assert body["name"] == "Camera 1"
    assert body["description"] == "front door"
    assert body["type"] == "liveStream"
    assert body["publishType"] == "WebRTC"
    assert body["publish"] is True
    assert body["publicStream"] is True
    assert before <= body["date"] <= after
    assert body["zombi"] is False
    assert body["webRTCViewerCount"] == 0
    assert body["webRTCViewerLimit"] == -1
    assert body["subtracksLimit"] == -1
    assert body["subTrackStreamIds"] == []
    assert body["userAgent"] == "N/A"


async def test_create_trims_the_stream_id(server: Server, http: aiohttp.ClientSession) -> None:
    body = await create(http, streamId="  padded  ")
    assert body["streamId"] == "padded"
    status, _ = await call(http, "GET", "/padded")
    assert status == 200


async def test_create_without_stream_id_generates_one(server: Server, http: aiohttp.ClientSession) -> None:
    first = await create(http, name="anonymous")
    second = await create(http)
    assert first["streamId"] and second["streamId"]
    assert first["streamId"] != second["streamId"]
    assert first["name"] == "anonymous"
    for stream_id in (first["streamId"], second["streamId"]):
        status, body = await call(http, "GET", f"/{stream_id}")
        assert status == 200
        assert body["status"] == "created"


async def test_create_with_empty_body(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", "/create", data=b"")
    assert status == 200
    assert body["streamId"]
    assert body["status"] == "created"


async def test_create_duplicate_is_refused(server: Server, http: aiohttp.ClientSession) -> None:
    await create(http, streamId="dup", name="original")
    status, body = await call(http, "POST", "/create", json={"streamId": "dup", "name": "copy"})
    assert status == 400  # Ant Media: 400 Result
    assert_failure(body)
    assert "already being used" in body["message"]
    _, record = await call(http, "GET", "/dup")
    assert record["name"] == "original"


@pytest.mark.parametrize("stream_id", ["has space", "slash/inside", "quote'", "ünï", "a" * 201, "semi;colon"])
async def test_create_with_invalid_id(server: Server, http: aiohttp.ClientSession, stream_id: str) -> None:
    status, body = await call(http, "POST", "/create", json={"streamId": stream_id})
    assert status == 400
    assert_failure(body)
    assert body["message"] == "Stream id is not valid."


async def test_create_with_invalid_json(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "POST", "/create", data=b"{not json", headers={"Content-Type": "application/json"})
    assert status == 400
    assert_failure(body)


@pytest.mark.parametrize(
    "payload",
    [
        {"streamId": 42},
        {"name": ["a"]},
        {"publicStream": "yes"},
        {"plannedStartDate": "tomorrow"},
        {"webRTCViewerLimit": 1.5},
        [1, 2, 3],
        "a string",
    ],
)
async def test_create_with_wrong_field_types(server: Server, http: aiohttp.ClientSession, payload: Any) -> None:
    status, body = await call(http, "POST", "/create", json=payload)
    assert status == 400
    assert_failure(body)


async def test_create_ignores_unknown_fields(server: Server, http: aiohttp.ClientSession) -> None:
    body = await create(http, streamId="extra", rtmpURL="rtmp://x", listenerHookURL="")
    assert body["streamId"] == "extra"


# -- get / list -----------------------------------------------------------------------------


async def test_get_unknown_is_404_json(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "GET", "/nobody")
    assert status == 404
    assert_failure(body)


async def test_get_returns_the_broadcast(server: Server, http: aiohttp.ClientSession) -> None:
    created = await create(
        http,
        streamId="full",
        name="Full",
        description="d",
        plannedStartDate=1700000000,
        plannedEndDate=1700003600,
        metaData="m",
        role="host",
        publicStream=False,
        webRTCViewerLimit=5,
    )
    status, body = await call(http, "GET", "/full")
    assert status == 200
    assert body == created
    for key in (
        "streamId", "status", "type", "publishType", "name", "description", "publish", "date",
        "plannedStartDate", "plannedEndDate", "duration", "publicStream", "originAdress",
        "mainTrackStreamId", "subTrackStreamIds", "metaData", "role", "webRTCViewerCount",
        "hlsViewerCount", "rtmpViewerCount", "startTime", "updateTime", "webRTCViewerLimit",
        "subtracksLimit", "zombi", "absoluteStartTimeMs", "userAgent", "remoteIp",
    ):  # fmt: skip
        assert key in body, key
    assert body["plannedStartDate"] == 1700000000
    assert body["plannedEndDate"] == 1700003600
    assert body["metaData"] == "m"
    assert body["role"] == "host"
    assert body["publicStream"] is False
    assert body["webRTCViewerLimit"] == 5
    assert isinstance(body["date"], int) and body["date"] > 1_600_000_000_000  # milliseconds


async def test_list_pagination(server: Server, http: aiohttp.ClientSession) -> None:
    ids = [f"page{i}" for i in range(7)]
    for stream_id in ids:
        created = await create(http, streamId=stream_id)
        # distinct creation dates (milliseconds): the next one is made once the clock has moved on
        await eventually(
            lambda created=created: int(time.time() * 1000) > created["date"], timeout=1, what="the next ms"
        )

    status, everything = await call(http, "GET", "/list/0/50")
    assert status == 200
    assert sorted(b["streamId"] for b in everything) == sorted(ids)

    pages = []
    for offset in range(0, 9, 3):
        status, page = await call(http, "GET", f"/list/{offset}/3")
        assert status == 200
        pages.append([b["streamId"] for b in page])
    assert [len(p) for p in pages] == [3, 3, 1]
    assert sorted(itertools.chain.from_iterable(pages)) == sorted(ids)  # no overlap, nothing missed
    assert list(itertools.chain.from_iterable(pages)) == [b["streamId"] for b in everything]  # a stable order

    status, beyond = await call(http, "GET", "/list/100/10")
    assert (status, beyond) == (200, [])
    status, empty = await call(http, "GET", "/list/0/0")
    assert (status, empty) == (200, [])


async def test_list_size_is_capped_at_50(server: Server, http: aiohttp.ClientSession) -> None:
    for i in range(55):
        await create(http, streamId=f"many{i}")
    status, page = await call(http, "GET", "/list/0/100")
    assert status == 200
    assert len(page) == 50


@pytest.mark.parametrize("path", ["/list/x/10", "/list/0/y", "/list/-1/10", "/list/0/-5"])
async def test_list_bad_numbers(server: Server, http: aiohttp.ClientSession, path: str) -> None:
    status, body = await call(http, "GET", path)
    assert status == 400
    assert_failure(body)


# -- update / delete ------------------------------------------------------------------------


async def test_update(server: Server, http: aiohttp.ClientSession) -> None:
    created = await create(http, streamId="upd", name="before")
    status, body = await call(http, "PUT", "/upd", json={"name": "after", "description": "new", "metaData": "x"})
    assert status == 200
    assert body == {"success": True, "message": "", "dataId": "upd", "errorId": 0}
    _, record = await call(http, "GET", "/upd")
    assert record["name"] == "after"
    assert record["description"] == "new"
    assert record["metaData"] == "x"
    assert record["status"] == "created"
    assert record["date"] == created["date"]
    assert record["updateTime"] >= created["date"]


async def test_update_unknown_and_bad_body(server: Server, http: aiohttp.ClientSession) -> None:
    status, body = await call(http, "PUT", "/ghost", json={"name": "x"})
    assert status == 404
    assert_failure(body)
    await create(http, streamId="typed")
    status, body = await call(http, "PUT", "/typed", json={"name": 5})
    assert status == 400
    assert_failure(body)
    status, body = await call(http, "PUT", "/typed", data=b"[", headers={"Content-Type": "application/json"})
    assert status == 400
    assert_failure(body)


async def test_delete(server: Server, http: aiohttp.ClientSession) -> None:
    await create(http, streamId="gone")
    status, body = await call(http, "DELETE", "/gone")
    assert status == 200
    assert body == {"success": True, "message": "", "dataId": "gone", "errorId": 0}
    status, body = await call(http, "GET", "/gone")
    assert status == 404
    assert_failure(body)
    status, body = await call(http, "DELETE", "/gone")
    assert status == 404
    assert_failure(body)
    # The id is free again.
    await create(http, streamId="gone")


async def test_active_live_stream_count_without_streams(server: Server, http: aiohttp.ClientSession) -> None:
    await create(http, streamId="idle")
    status, body = await call(http, "GET", "/active-live-stream-count")
    assert (status, body) == (200, {"number": 0})


# -- namespacing ----------------------------------------------------------------------------


async def test_applications_are_separate(server: Server, http: aiohttp.ClientSession) -> None:
    await create(http, streamId="mine", name="in WebRTCAppEE")
    status, _ = await call(http, "GET", "/mine", app="LiveApp")
    assert status == 404
    status, listed = await call(http, "GET", "/list/0/50", app="LiveApp")
    assert (status, listed) == (200, [])
    # The same id may exist in the other application.
    other = await create(http, app="LiveApp", streamId="mine", name="in LiveApp")
    assert other["name"] == "in LiveApp"
    _, body = await call(http, "GET", "/mine")
    assert body["name"] == "in WebRTCAppEE"
    status, _ = await call(http, "DELETE", "/mine", app="LiveApp")
    assert status == 200
    status, _ = await call(http, "GET", "/mine")
    assert status == 200


async def test_unknown_application_is_404(server: Server, http: aiohttp.ClientSession) -> None:
    for method, path, kw in [
        ("GET", "/anything", {}),
        ("GET", "/list/0/10", {}),
        ("POST", "/create", {"json": {"streamId": "x"}}),
        ("PUT", "/x", {"json": {}}),
        ("DELETE", "/x", {}),
    ]:
        status, body = await call(http, method, path, app="Nope", **kw)
        assert status == 404, (method, path)
        assert_failure(body)


async def test_unknown_application_websocket_is_404(server: Server, http: aiohttp.ClientSession) -> None:
    async with http.get("/Nope/websocket") as resp:
        assert resp.status == 404
    with pytest.raises(aiohttp.WSServerHandshakeError) as info:
        await AmsSocket.connect(server.port, app="Nope")
    assert info.value.status == 404


# -- with live streams ----------------------------------------------------------------------


async def test_publish_to_a_rest_created_stream(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    await create(http, streamId="live1", name="Live one")
    sock = await clients.socket()
    publisher = clients.publisher(sock, "live1")
    await publisher.start()
    await sock.wait_for("notification", "publish_started", stream_id="live1")
    body = await wait_status(http, "live1", "broadcasting")
    assert body["name"] == "Live one"
    assert body["zombi"] is False
    assert body["startTime"] >= body["date"]
    assert body["remoteIp"] == "127.0.0.1"
    status, count = await call(http, "GET", "/active-live-stream-count")
    assert (status, count) == (200, {"number": 1})
    # A live stream's id is taken.
    status, dup = await call(http, "POST", "/create", json={"streamId": "live1"})
    assert status == 400  # Ant Media: 400 Result
    assert_failure(dup)

    await publisher.stop()
    await sock.wait_for("notification", "publish_finished", stream_id="live1")
    body = await wait_status(http, "live1", "finished")
    assert body["name"] == "Live one"
    assert body["duration"] >= 0


async def test_implicit_stream_record_is_removed_after_publish(
    server: Server, http: aiohttp.ClientSession, clients: Clients
) -> None:
    sock = await clients.socket()
    publisher = clients.publisher(sock, "implicit1")
    await publisher.start()
    await sock.wait_for("notification", "publish_started", stream_id="implicit1")
    body = await wait_status(http, "implicit1", "broadcasting")
    assert body["zombi"] is True
    await publisher.stop()
    await sock.wait_for("notification", "publish_finished", stream_id="implicit1")
    await wait_gone(http, "implicit1")


async def test_delete_live_stream_ends_publisher_and_players(
    server: Server, http: aiohttp.ClientSession, clients: Clients
) -> None:
    await create(http, streamId="doomed")
    pub_sock = await clients.socket()
    play_socks = [await clients.socket() for _ in range(2)]
    publisher = clients.publisher(pub_sock, "doomed")
    players = [clients.player(s, "doomed") for s in play_socks]
    await publisher.start()
    await pub_sock.wait_for("notification", "publish_started", stream_id="doomed")
    await asyncio.gather(*(p.start() for p in players))
    for sock in play_socks:
        await sock.wait_for("notification", "play_started", stream_id="doomed")
    await asyncio.gather(*(p.wait_frames(5, timeout=20) for p in players))
    body = await wait_status(http, "doomed", "broadcasting")
    assert body["webRTCViewerCount"] == 2

    status, result = await call(http, "DELETE", "/doomed")
    assert status == 200
    assert result["success"] is True

    await pub_sock.wait_for("notification", "publish_finished", stream_id="doomed")
    for sock in play_socks:
        await sock.wait_for("notification", "play_finished", stream_id="doomed")
    status, body = await call(http, "GET", "/doomed")
    assert status == 404
    assert_failure(body)
    # Sockets stay open: the clients were told, not cut off.
    assert not pub_sock.closed.is_set()
    assert all(not s.closed.is_set() for s in play_socks)
    await eventually(
        lambda: server.router.dump() == {"publishers": [], "subscribers": [], "tracks": []},
        timeout=5,
        what="the peers to close",
    )
    assert server.router.dump() == {"publishers": [], "subscribers": [], "tracks": []}
    assert server.applications[APP].streams == {}
    status, listed = await call(http, "GET", "/list/0/50")
    assert (status, listed) == (200, [])


async def test_delete_implicit_live_stream(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    sock = await clients.socket()
    publisher = clients.publisher(sock, "implicit2", with_audio=False)
    await publisher.start()
    await sock.wait_for("notification", "publish_started", stream_id="implicit2")
    await wait_status(http, "implicit2", "broadcasting")
    status, result = await call(http, "DELETE", "/implicit2")
    assert status == 200 and result["success"] is True
    await sock.wait_for("notification", "publish_finished", stream_id="implicit2")
    await wait_gone(http, "implicit2")


async def test_live_stream_is_per_application(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    sock = await clients.socket("LiveApp")
    publisher = clients.publisher(sock, "scoped", with_audio=False)
    await publisher.start()
    await sock.wait_for("notification", "publish_started", stream_id="scoped")
    status, _ = await call(http, "GET", "/scoped", app="LiveApp")
    assert status == 200
    status, _ = await call(http, "GET", "/scoped")
    assert status == 404
    status, _ = await call(http, "DELETE", "/scoped")
    assert status == 404
    assert not publisher.finished.is_set()
    _, count = await call(http, "GET", "/active-live-stream-count")
    assert count == {"number": 0}
    _, count = await call(http, "GET", "/active-live-stream-count", app="LiveApp")
    assert count == {"number": 1}
    await publisher.stop()
    await sock.wait_for("notification", "publish_finished", stream_id="scoped")
