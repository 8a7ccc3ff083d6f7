"""Stream security end to end (protocol.md §4.4-4.5): one-time and room tokens, JWT stream tokens,
token REST endpoints, settings over REST, and the REST guard, with real aiortc clients.

Every refusal is checked from both sides: the client gets `error unauthorized_access` and never
`start` (publish) or an offer (play), so it never builds a peer connection and cannot receive a
single media packet; the server holds no publisher or subscriber for it.
"""

from __future__ import annotations

import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import jwt as pyjwt
import pytest

from confero.auth import jwt
from confero.server import Server
from confero.settings import AppSettings
from tests.support import eventually
from tests.support.amsclient import AmsError, AmsSocket, Player, Publisher
from tests.support.clients import Clients as BaseClients
from tests.support.server import assert_no_leaks, assert_no_pending_tasks, make_settings, wait_idle

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
SECRET = "confero-stream-secret-" + "k" * 42  # 64 characters
OTHER_SECRET = "an-attackers-guess-at-it-" + "z" * 39
REST_SECRET = "confero-rest-api-secret-" + "r" * 40
UNAUTHORIZED = "unauthorized_access"
DEFINE = "Define Stream ID, Token Type and Expire Date (unix time)"
BAD_TYPE = "Invalid token type. Supported types are 'play' and 'publish'"


# -- helpers ------------------------------------------------------------------------------------


def app_settings(server: Server, app: str = APP) -> AppSettings:
    return server.settings.app(app)


async def call(http: aiohttp.ClientSession, method: str, path: str, **kw: Any) -> tuple[int, Any]:
    """A REST call; every answer, refusals included, is JSON."""
    async with http.request(method, path, **kw) as resp:
        assert resp.content_type == "application/json", (resp.status, await resp.text())
        return resp.status, await resp.json()


def rest(path: str, app: str = APP) -> str:
    return f"/{app}/rest/v2/broadcasts{path}"


def settings_path(app: str = APP) -> str:
    return f"/rest/v2/applications/settings/{app}"


def assert_refusal(status: int, body: Any, expected_status: int, message: str | None = None) -> None:
    assert status == expected_status, (status, body)
    assert isinstance(body, dict) and body["success"] is False, body
    assert isinstance(body["message"], str) and body["message"], body
    if message is not None:
        assert body["message"] == message, body


def in_future(seconds: int = 600) -> int:
    return int(time.time()) + seconds


async def issue(
    http: aiohttp.ClientSession,
    stream_id: str,
    type_: str,
    expire: int | None = None,
    room: str = "",
    *,
    kind: str = "token",
) -> str:
    """GET /broadcasts/{id}/token (or jwt-token); returns the tokenId."""
    params = {"type": type_, "expireDate": str(in_future() if expire is None else expire)}
    if room:
        params["roomId"] = room
    status, body = await call(http, "GET", rest(f"/{stream_id}/{kind}"), params=params)
    assert status == 200, body
    assert body["streamId"] == stream_id and body["type"] == type_ and body["roomId"] == room
    assert body["expireDate"] == int(params["expireDate"])
    assert isinstance(body["tokenId"], str) and len(body["tokenId"]) >= 20
    return body["tokenId"]


async def listed(http: aiohttp.ClientSession, stream_id: str) -> list[str]:
    status, body = await call(http, "GET", rest(f"/{stream_id}/tokens/list/0/50"))
    assert status == 200 and isinstance(body, list), body
    return [t["tokenId"] for t in body]


def publishers(server: Server, stream_id: str | None = None) -> list[dict]:
    return [p for p in server.router.dump()["publishers"] if stream_id is None or p["name"] == stream_id]


def holders(server: Server, stream_id: str) -> list[tuple]:
    """Who holds `stream_id`: each publisher and its tracks, without the counters that move
    while its media flows (the SSRCs, learned from the first packets, and every count)."""
    return [
        (
            p["name"],
            p["role"],
            p["connectionState"],
            p["closed"],
            [(t["kind"], t["codec"]) for t in p["tracks"]],
        )
        for p in publishers(server, stream_id)
    ]


def subscribers(server: Server, stream_id: str) -> list[dict]:
    names = {f"{stream_id}/play", f"{stream_id}/room-play"}
    return [s for s in server.router.dump()["subscribers"] if s["name"] in names]


class Clients(BaseClients):
    """Every socket and peer a test opens, closed at the end whatever happens."""

    def __init__(self, server: Server) -> None:
        super().__init__(server.port)
        self.server = server
        #: sockets that only ever made refused requests: they must never see any media signaling
        self.refused: list[AmsSocket] = []

    async def sock(self, app: str = APP) -> AmsSocket:
        return await self.socket(app)

    async def publish(
        self, stream_id: str, token: str | None = None, *, sock: AmsSocket | None = None, main_track: str = ""
    ) -> Publisher:
        sock = sock or await self.sock()
        publisher = self.publisher(
            sock, stream_id, token=token, extra={"mainTrack": main_track} if main_track else None
        )
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
        return publisher

    async def play(
        self,
        stream_id: str,
        token: str | None = None,
        *,
        room: str | None = None,
        track_list: list[str] | None = None,
        sock: AmsSocket | None = None,
        frames: int = 10,
    ) -> Player:
        sock = sock or await self.sock()
        player = self.player(sock, stream_id, token=token, room=room, track_list=track_list)
        await player.start()
        if frames:
            await player.wait_frames(frames, timeout=10)
            assert player.decode_errors == 0
        return player

    async def refused_publish(
        self,
        stream_id: str,
        token: str | None = None,
        *,
        main_track: str = "",
        sock: AmsSocket | None = None,
        definition: str = UNAUTHORIZED,
    ) -> AmsError:
        if sock is None:
            sock = await self.sock()
            self.refused.append(sock)
        held_before = holders(self.server, stream_id)
        publisher = self.publisher(
            sock, stream_id, token=token, extra={"mainTrack": main_track} if main_track else None
        )
        with pytest.raises(AmsError) as info:
            await publisher.start(timeout=5)
        assert info.value.definition == definition, info.value.message
        assert info.value.message.get("streamId") == stream_id
        # no `start`, so the client never even built a peer connection; nothing on the server
        assert publisher.start_message is None and publisher.pc is None
        assert sock.find("start", stream_id=stream_id) == []
        assert holders(self.server, stream_id) == held_before
        if not held_before:
            assert stream_id not in self.server.applications[APP].streams
        await publisher.close()
        return info.value

    async def refused_play(
        self,
        stream_id: str,
        token: str | None = None,
        *,
        room: str | None = None,
        track_list: list[str] | None = None,
        sock: AmsSocket | None = None,
        definition: str = UNAUTHORIZED,
    ) -> AmsError:
        if sock is None:
            sock = await self.sock()
            self.refused.append(sock)
        before = len(subscribers(self.server, stream_id))
        player = self.player(sock, stream_id, token=token, room=room, track_list=track_list)
        with pytest.raises(AmsError) as info:
            await player.start(timeout=5)
        assert info.value.definition == definition, info.value.message
        assert info.value.message.get("streamId") == stream_id
        # no offer was ever sent: no peer connection, no track, no frame
        assert player.offers == [] and player.pc is None
        assert sock.find("takeConfiguration", stream_id=stream_id) == []
        assert player.video_frames == 0 and player.audio_frames == 0
        assert len(subscribers(self.server, stream_id)) == before
        await player.close()
        return info.value

    def assert_refused_sockets_saw_no_media(self) -> None:
        for sock in self.refused:
            for command in ("start", "takeConfiguration", "takeCandidate"):
                assert sock.find(command) == [], (command, sock.history)


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[Clients]:
    async with Clients(server) as c:
        yield c
        c.assert_refused_sockets_saw_no_media()


async def assert_public(server: Server, http: aiohttp.ClientSession, app: str = APP) -> None:
    """The WebSocket and the pages answer whatever the REST guard says."""
    async with AmsSocket(server.port, app) as sock:
        await sock.send({"command": "ping"})
        assert (await sock.wait_for("pong", timeout=5))["command"] == "pong"
    for page in (f"/{app}/", f"/{app}/js/webrtc_adaptor.js"):
        async with http.get(page) as resp:
            assert resp.status == 200, (page, resp.status)
            assert resp.content_type != "application/json"
            await resp.read()


# -- publish tokens -------------------------------------------------------------------------------


async def test_publish_token_control_from_startup(tmp_path: Path) -> None:
    """Token control set in the settings the server starts with."""
    settings = make_settings(tmp_path)
    settings.app(APP).publishTokenControlEnabled = True
    server = Server(settings)
    await server.start()
    try:
        async with (
            Clients(server) as clients,
            aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}") as http,
        ):
            # no token: refused, and nothing at all on the server
            await clients.refused_publish("s1")
            assert server.router.dump()["publishers"] == []
            await clients.refused_publish("s1", token="")
            await clients.refused_publish("s1", token="made-up-token")
            assert server.router.dump()["publishers"] == []

            token = await issue(http, "s1", "publish")
            publisher = await clients.publish("s1", token)
            assert await listed(http, "s1") == []  # consumed on successful use
            player = await clients.play("s1")  # play control is off
            assert player.frames_for("ARDAMSvs1") >= 10

            await publisher.stop()
            await publisher.sock.wait_for(definition="publish_finished", stream_id="s1", timeout=10)
            await eventually(lambda: "s1" not in server.applications[APP].streams, timeout=10, what="s1 to end")
            # replay of the used token
            await clients.refused_publish("s1", token)
            clients.assert_refused_sockets_saw_no_media()
        await wait_idle(server)
        assert_no_leaks(server)
    finally:
        await server.close()
    await assert_no_pending_tasks()


async def test_publish_token_refusals(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    app_settings(server).publishTokenControlEnabled = True  # at run time: applies at once
    await clients.refused_publish("s1")
    assert server.router.dump()["publishers"] == []
    # wrong type: a play token for the very stream
    await clients.refused_publish("s1", await issue(http, "s1", "play"))
    # a token for another stream
    await clients.refused_publish("s1", await issue(http, "s2", "publish"))
    # expired (expireDate is unix seconds; valid only while now < expireDate)
    await clients.refused_publish("s1", await issue(http, "s1", "publish", expire=int(time.time()) - 1))
    # a room-bound publish token used outside its room
    await clients.refused_publish("s1", await issue(http, "s1", "publish", room="r1"))
    assert server.router.dump()["publishers"] == []
    # the refused tokens were not used up
    assert len(await listed(http, "s1")) == 3

    await clients.publish("s1", await issue(http, "s1", "publish"))
    await clients.play("s1")


async def test_refused_publish_does_not_consume_a_valid_token(
    server: Server, http: aiohttp.ClientSession, clients: Clients
) -> None:
    s = app_settings(server)
    s.publishTokenControlEnabled = True
    token = await issue(http, "s1", "publish")

    # refused: the token is for s1, not s2
    await clients.refused_publish("s2", token)
    # refused: another publisher holds s1
    holder = await clients.publish("s1", await issue(http, "s1", "publish"))
    await clients.refused_publish("s1", token, definition="streamIdInUse")
    assert len(publishers(server, "s1")) == 1
    assert await listed(http, "s1") == [token]
    await holder.stop()
    await eventually(lambda: "s1" not in server.applications[APP].streams, timeout=10, what="s1 to end")

    # refused: unregistered stream while acceptOnlyStreamsInDataStore
    s.acceptOnlyStreamsInDataStore = True
    await clients.refused_publish("s1", token, definition="not_allowed_unregistered_streams")
    assert await listed(http, "s1") == [token]
    status, _ = await call(http, "POST", rest("/create"), json={"streamId": "s1"})
    assert status == 200

    # the token still works, once
    publisher = await clients.publish("s1", token)
    assert await listed(http, "s1") == []
    await clients.play("s1")
    await publisher.stop()
    await eventually(lambda: "s1" not in server.applications[APP].streams, timeout=10, what="s1 to end")
    await clients.refused_publish("s1", token)


# -- play tokens ----------------------------------------------------------------------------------


async def test_play_token_control(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    await clients.publish("s1")
    app_settings(server).playTokenControlEnabled = True

    await clients.refused_play("s1")
    await clients.refused_play("s1", "made-up-token")
    await clients.refused_play("s1", await issue(http, "s1", "publish"))  # wrong type
    await clients.refused_play("s1", await issue(http, "s2", "play"))  # another stream
    await clients.refused_play("s1", await issue(http, "s1", "play", expire=int(time.time()) - 1))  # expired
    assert subscribers(server, "s1") == []

    token = await issue(http, "s1", "play")
    # refused for another reason (s1 is in no room "rX"): the token survives
    await clients.refused_play("s1", token, room="rX", definition="no_stream_exist")
    assert token in await listed(http, "s1")
    player = await clients.play("s1", token)
    assert token not in await listed(http, "s1")
    await player.stop()
    await eventually(lambda: subscribers(server, "s1") == [], timeout=10, what="the player to go")
    await clients.refused_play("s1", token)  # one-time

    # a play of a stream that is not live yet is refused without using the token up
    later = await issue(http, "s2", "play")
    await clients.refused_play("s2", later, definition="no_stream_exist")
    assert later in await listed(http, "s2")
    await clients.publish("s2")
    await clients.play("s2", later)
    assert later not in await listed(http, "s2")


# -- rooms ----------------------------------------------------------------------------------------


async def join(clients: Clients, room: str, stream_id: str) -> AmsSocket:
    sock = await clients.sock()
    await sock.send({"command": "joinRoom", "room": room, "streamId": stream_id, "streamName": stream_id})
    joined = await sock.wait_for(definition="joinedTheRoom", timeout=10)
    assert joined["streamId"] == stream_id and joined["room"] == room
    return sock


async def test_room_bound_play_token(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    # r1: a (legacy flow, plain publish) and b (multitrack flow, mainTrack); r2: c; "lone" in no room
    await clients.publish("a", sock=await join(clients, "r1", "a"))
    await clients.publish("b", sock=await join(clients, "r1", "b"), main_track="r1")
    await clients.publish("c", sock=await join(clients, "r2", "c"), main_track="r2")
    await clients.publish("lone")
    app_settings(server).playTokenControlEnabled = True

    token = await issue(http, "r1", "play", room="r1")

    # accepted, and reusable, for the room's streams in both flows
    await clients.play("a", token, room="r1")  # legacy: one play per member stream
    await clients.play("b", token, room="r1")
    short_expiry = int(time.time()) + 3
    short = await issue(http, "r1", "play", expire=short_expiry, room="r1")
    await clients.play("a", short, room="r1")
    room_player = await clients.play("r1", token, room="r1", frames=0)  # multitrack: the whole room
    await eventually(
        lambda: room_player.frames_for("ARDAMSva") >= 10 and room_player.frames_for("ARDAMSvb") >= 10,
        timeout=10,
        what="frames of a and b in the room play",
    )
    assert set(room_player.id_mapping.values()) >= {"ARDAMSva", "ARDAMSvb"}
    assert "ARDAMSvc" not in room_player.id_mapping.values()
    assert sorted(await listed(http, "r1")) == sorted([token, short])  # room tokens are not used up

    # nothing outside the room
    await clients.refused_play("c", token, room="r2")
    await clients.refused_play("c", token, room="r1")
    await clients.refused_play("c", token)
    await clients.refused_play("r2", token, room="r2")
    await clients.refused_play("lone", token)
    await clients.refused_play("lone", token, room="r1")
    # and a room play still needs a token
    await clients.refused_play("a", room="r1")
    await clients.refused_play("r1", room="r1")
    await clients.refused_play("r1", await issue(http, "r1", "play", room="r2"), room="r1")
    assert subscribers(server, "c") == [] and subscribers(server, "lone") == [] and subscribers(server, "r2") == []

    # until it expires
    await eventually(lambda: time.time() >= short_expiry, timeout=5, what="the short token to expire")
    await clients.refused_play("a", short, room="r1")
    await clients.refused_play("r1", short, room="r1")
    await clients.play("b", token, room="r1", sock=await clients.sock())


async def test_token_control_in_join_room_flows(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    s = app_settings(server)
    s.publishTokenControlEnabled = True
    s.playTokenControlEnabled = True

    # legacy flow: joinRoom, then a plain publish (the server knows the room)
    a_sock = await join(clients, "r1", "a")
    await clients.refused_publish("a", sock=a_sock)
    await clients.refused_publish("a", await issue(http, "a", "publish", room="r2"), sock=a_sock)
    await clients.refused_publish("a", await issue(http, "a", "play", room="r1"), sock=a_sock)
    await clients.refused_publish("a", await issue(http, "b", "publish", room="r1"), sock=a_sock)
    assert server.router.dump()["publishers"] == []
    for command in ("start", "takeConfiguration"):
        assert a_sock.find(command) == []
    await clients.publish("a", await issue(http, "a", "publish"), sock=a_sock)  # a room-less token

    # multitrack flow: joinRoom, then publish with mainTrack and a room-bound publish token
    b_sock = await join(clients, "r1", "b")
    await clients.refused_publish("b", sock=b_sock, main_track="r1")
    b_token = await issue(http, "b", "publish", room="r1")
    await clients.publish("b", b_token, sock=b_sock, main_track="r1")
    assert b_token not in await listed(http, "b")  # used up

    # plays in the room need a play token in both flows
    await clients.refused_play("r1", room="r1", track_list=["!b"], sock=b_sock)
    await clients.refused_play("a", room="r1", sock=b_sock)
    await clients.refused_play("b", await issue(http, "b", "publish", room="r1"), room="r1", sock=a_sock)
    room_token = await issue(http, "r1", "play", room="r1")
    room_player = await clients.play("r1", room_token, room="r1", track_list=["!b"], sock=b_sock, frames=0)
    await eventually(lambda: room_player.frames_for("ARDAMSva") >= 10, timeout=10, what="frames of a in b's room play")
    assert "ARDAMSvb" not in room_player.id_mapping.values()
    await clients.play("b", room_token, room="r1", sock=a_sock)


# -- JWT stream tokens ----------------------------------------------------------------------------


async def test_jwt_stream_tokens(
    server: Server, http: aiohttp.ClientSession, clients: Clients, monkeypatch: pytest.MonkeyPatch
) -> None:
    # without a secret there is no JWT to issue
    status, body = await call(http, "GET", rest("/j1/jwt-token"), params={"type": "publish", "expireDate": in_future()})
    assert_refusal(status, body, 400)

    s = app_settings(server)
    s.update({"jwtStreamSecretKey": SECRET, "publishJwtControlEnabled": True, "playJwtControlEnabled": True})
    lookups: list[str] = []
    real_get_token = server.store.get_token

    async def spy(app: str, token_id: str) -> Any:
        lookups.append(token_id)
        return await real_get_token(app, token_id)

    monkeypatch.setattr(server.store, "get_token", spy)

    publish_jwt = await issue(http, "j1", "publish", kind="jwt-token")
    claims = pyjwt.decode(publish_jwt, SECRET, algorithms=["HS256"])
    assert claims["streamId"] == "j1" and claims["type"] == "publish"
    expired = jwt.issue_stream_token(SECRET, "j1", "publish", int(time.time()) - 1)
    forged = jwt.issue_stream_token(OTHER_SECRET, "j1", "publish", in_future())
    stored = await issue(http, "j1", "publish")  # a one-time token is no JWT

    await clients.refused_publish("j1")
    await clients.refused_publish("j1", forged)
    await clients.refused_publish("j1", expired)
    await clients.refused_publish("j1", await issue(http, "j2", "publish", kind="jwt-token"))  # another stream
    await clients.refused_publish("j1", await issue(http, "j1", "play", kind="jwt-token"))  # wrong type
    await clients.refused_publish("j1", stored)
    assert server.router.dump()["publishers"] == []
    await clients.publish("j1", publish_jwt)

    await clients.refused_play("j1")
    await clients.refused_play("j1", jwt.issue_stream_token(OTHER_SECRET, "j1", "play", in_future()))
    await clients.refused_play("j1", jwt.issue_stream_token(SECRET, "j1", "play", int(time.time()) - 1))
    await clients.refused_play("j1", await issue(http, "j2", "play", kind="jwt-token"))
    await clients.refused_play("j1", publish_jwt)
    await clients.play("j1", await issue(http, "j1", "play", kind="jwt-token"))

    # checked with the secret alone: the store was never asked, and holds no JWT
    assert lookups == []
    assert await listed(http, "j1") == [stored]


async def test_either_kind_of_token_when_both_controls_are_on(
    server: Server, http: aiohttp.ClientSession, clients: Clients
) -> None:
    app_settings(server).update(
        {"jwtStreamSecretKey": SECRET, "publishJwtControlEnabled": True, "publishTokenControlEnabled": True}
    )
    await clients.refused_publish("s1")
    await clients.refused_publish("s1", jwt.issue_stream_token(OTHER_SECRET, "s1", "publish", in_future()))
    stored = await issue(http, "s1", "publish")
    await clients.publish("s1", stored)
    await clients.publish("s2", await issue(http, "s2", "publish", kind="jwt-token"))
    assert len(server.router.dump()["publishers"]) == 2
    await clients.refused_publish("s3", stored)  # used up, and for another stream anyway


# -- token REST endpoints -------------------------------------------------------------------------


async def test_token_rest_errors(server: Server, http: aiohttp.ClientSession) -> None:
    soon = str(in_future())
    for kind in ("token", "jwt-token"):
        for params in (
            {},
            {"type": "publish"},
            {"type": "publish", "expireDate": "0"},
            {"type": "publish", "expireDate": "-5"},
            {"type": "publish", "expireDate": "tomorrow"},
            {"expireDate": soon},
        ):
            status, body = await call(http, "GET", rest(f"/s1/{kind}"), params=params)
            assert_refusal(status, body, 400, DEFINE)
        for bad in ("admin", "PLAY", "view"):
            status, body = await call(http, "GET", rest(f"/s1/{kind}"), params={"type": bad, "expireDate": soon})
            assert_refusal(status, body, 400, BAD_TYPE)
    assert await listed(http, "s1") == []


async def test_token_list_revoke_and_validate(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    publish_tokens = [await issue(http, "s1", "publish", expire=in_future(100 + i)) for i in range(2)]
    play_token = await issue(http, "s1", "play", expire=in_future(300))
    other = await issue(http, "s2", "play")

    status, body = await call(http, "GET", rest("/s1/tokens/list/0/10"))
    assert status == 200
    assert [t["tokenId"] for t in body] == [*publish_tokens, play_token]
    assert {t["streamId"] for t in body} == {"s1"} and [t["type"] for t in body] == ["publish", "publish", "play"]
    assert set(body[0]) == {"tokenId", "streamId", "expireDate", "type", "roomId"}
    _, page = await call(http, "GET", rest("/s1/tokens/list/1/10"))
    assert [t["tokenId"] for t in page] == [publish_tokens[1], play_token]
    _, page = await call(http, "GET", rest("/s1/tokens/list/0/1"))
    assert [t["tokenId"] for t in page] == [publish_tokens[0]]
    assert await listed(http, "nobody") == []

    # revoke: every token of s1, none of s2; a revoked token no longer publishes
    status, body = await call(http, "DELETE", rest("/s1/tokens"))
    assert status == 200 and body["success"] is True
    assert await listed(http, "s1") == []
    assert await listed(http, "s2") == [other]
    app_settings(server).publishTokenControlEnabled = True
    await clients.refused_publish("s1", publish_tokens[0])

    # validate-token: same rules; a room-less token is used up by a successful validation
    async def validate(**token: str) -> bool:
        status, body = await call(http, "POST", rest("/validate-token"), json=token)
        assert status == 200 and set(body) == {"success", "message", "dataId", "errorId"}, body
        return body["success"]

    assert not await validate(tokenId=other, streamId="s2", type="publish")  # wrong type
    assert not await validate(tokenId=other, streamId="s1", type="play")  # wrong stream
    assert not await validate(tokenId="made-up", streamId="s2", type="play")
    assert await listed(http, "s2") == [other]  # refusals used nothing up
    assert await validate(tokenId=other, streamId="s2", type="play")
    assert await listed(http, "s2") == []
    assert not await validate(tokenId=other, streamId="s2", type="play")  # replayed

    expired = await issue(http, "s3", "play", expire=int(time.time()) - 1)
    assert not await validate(tokenId=expired, streamId="s3", type="play")

    room_token = await issue(http, "r1", "play", room="r1")
    assert await validate(tokenId=room_token, streamId="r1", type="play", roomId="r1")
    assert await validate(tokenId=room_token, streamId="r1", type="play", roomId="r1")  # reusable
    assert not await validate(tokenId=room_token, streamId="r2", type="play", roomId="r2")
    assert await listed(http, "r1") == [room_token]

    status, body = await call(http, "POST", rest("/validate-token"), json={"streamId": "s2", "type": "play"})
    assert_refusal(status, body, 400)


# -- settings over REST ---------------------------------------------------------------------------


async def test_token_settings_over_rest(server: Server, http: aiohttp.ClientSession, clients: Clients) -> None:
    status, view = await call(http, "GET", settings_path())
    assert status == 200
    assert view["publishTokenControlEnabled"] is False and view["playTokenControlEnabled"] is False
    await clients.publish("s1")

    # applies to the next publish and play, no restart
    status, body = await call(http, "POST", settings_path(), json={"publishTokenControlEnabled": True})
    assert status == 200 and body["success"] is True, body
    await clients.refused_publish("s2")
    status, body = await call(http, "POST", settings_path(), json={"playTokenControlEnabled": "true"})
    assert status == 200 and body["success"] is True, body
    await clients.refused_play("s1")

    # bad values: 400, and nothing changes (keys Confero does not use are kept: test_rest_broadcast_model)
    before = (await call(http, "GET", settings_path()))[1]
    for bad in (
        {"playTokenControlEnabled": "maybe"},
        {"playTokenControlEnabled": 1},
        {"publishTokenControlEnabled": None},
        {"publishTokenControlEnabled": False, "no such setting": True},
        {"publishTokenControlEnabled": False, "remoteAllowedCIDR": "300.1.2.3/8"},
        {"jwtStreamSecretKey": "too-short"},
        {"jwtSecretKey": "too-short"},
        {"publishJwtControlEnabled": True},  # no jwtStreamSecretKey
        {"jwtControlEnabled": True},  # no jwtSecretKey
        {"ipFilterEnabled": []},
    ):
        status, body = await call(http, "POST", settings_path(), json=bad)
        assert_refusal(status, body, 400)
    for raw in (b"[]", b"not json", b'"publishTokenControlEnabled"'):
        status, body = await call(http, "POST", settings_path(), data=raw)
        assert_refusal(status, body, 400)
    assert (await call(http, "GET", settings_path()))[1] == before
    await clients.refused_publish("s2")

    # other applications keep their own settings
    status, live_app = await call(http, "GET", settings_path("LiveApp"))
    assert status == 200 and live_app["publishTokenControlEnabled"] is False

    status, body = await call(
        http, "POST", settings_path(), json={"publishTokenControlEnabled": False, "playTokenControlEnabled": False}
    )
    assert status == 200 and body["success"] is True
    await clients.publish("s2")
    await clients.play("s1")


# -- the REST guard -------------------------------------------------------------------------------

GUARDED = [
    ("GET", rest("/list/0/10")),
    ("POST", rest("/create")),
    ("GET", rest("/s1/token?type=play&expireDate=9999999999")),
    ("POST", rest("/validate-token")),
    ("DELETE", rest("/s1/tokens")),
    ("GET", rest("/conference-rooms/list/0/10")),
    ("GET", settings_path()),
    ("POST", settings_path()),
]


async def assert_all_refused(http: aiohttp.ClientSession, status: int, message: str | None, **kw: Any) -> None:
    for method, path in GUARDED:
        got, body = await call(http, method, path, json={}, **kw)
        assert_refusal(got, body, status, message)


async def test_rest_guard_allowed_networks(server: Server, http: aiohttp.ClientSession) -> None:
    status, _ = await call(http, "GET", rest("/list/0/10"))
    assert status == 200  # loopback by default

    # set over REST: the change applies to the very next request
    status, body = await call(http, "POST", settings_path(), json={"remoteAllowedCIDR": "10.0.0.0/8"})
    assert status == 200 and body["success"] is True
    status, body = await call(http, "GET", rest("/list/0/10"))
    assert status == 403 and body == {"success": False, "message": "Not allowed IP", "dataId": "", "errorId": 0}
    await assert_all_refused(http, 403, "Not allowed IP")
    # the WebSocket stays public; other applications keep their own rules
    await assert_public(server, http)
    status, _ = await call(http, "GET", rest("/list/0/10", "LiveApp"))
    assert status == 200

    # a disabled filter lets any address through
    s = app_settings(server)
    s.ipFilterEnabled = False
    status, _ = await call(http, "GET", rest("/list/0/10"))
    assert status == 200
    s.ipFilterEnabled = True
    status, _ = await call(http, "GET", rest("/list/0/10"))
    assert status == 403

    # REST is locked, so restore through the settings object
    s.remoteAllowedCIDR = AppSettings().remoteAllowedCIDR
    status, _ = await call(http, "GET", rest("/list/0/10"))
    assert status == 200


async def test_rest_guard_from_another_address(server: Server, http: aiohttp.ClientSession) -> None:
    """A real request from 127.0.0.2, which the default (127.0.0.1, ::1) does not allow."""
    connector = aiohttp.TCPConnector(local_addr=("127.0.0.2", 0))
    async with aiohttp.ClientSession(base_url=f"http://127.0.0.1:{server.port}", connector=connector) as other:
        await assert_all_refused(other, 403, "Not allowed IP")
        await assert_public(server, other)
        app_settings(server).remoteAllowedCIDR = "127.0.0.2/32"
        status, _ = await call(other, "GET", rest("/list/0/10"))
        assert status == 200
        status, _ = await call(http, "GET", rest("/list/0/10"))
        assert status == 403
        app_settings(server).remoteAllowedCIDR = "127.0.0.0/8"
        for session in (http, other):
            status, _ = await call(session, "GET", rest("/list/0/10"))
            assert status == 200
        app_settings(server).remoteAllowedCIDR = AppSettings().remoteAllowedCIDR
        status, _ = await call(other, "GET", rest("/list/0/10"))
        assert status == 403


async def test_rest_guard_app_jwt(server: Server, http: aiohttp.ClientSession) -> None:
    app_settings(server).update({"jwtControlEnabled": True, "jwtSecretKey": REST_SECRET})
    good = pyjwt.encode({"sub": "admin"}, REST_SECRET, algorithm="HS256")

    await assert_all_refused(http, 401, None)
    for header in (
        pyjwt.encode({"sub": "admin"}, OTHER_SECRET, algorithm="HS256"),
        "Bearer " + pyjwt.encode({"sub": "admin"}, OTHER_SECRET, algorithm="HS256"),
        pyjwt.encode({"exp": int(time.time()) - 1}, REST_SECRET, algorithm="HS256"),
        "Bearer " + good[:-3],
        "Basic YWRtaW46YWRtaW4=",
        REST_SECRET,
    ):
        await assert_all_refused(http, 403, "Invalid App JWT Token", headers={"Authorization": header})

    for header in (good, f"Bearer {good}"):
        status, _ = await call(http, "GET", rest("/list/0/10"), headers={"Authorization": header})
        assert status == 200
        status, _ = await call(http, "GET", settings_path(), headers={"Authorization": header})
        assert status == 200
    # the WebSocket stays public; LiveApp has no JWT control
    await assert_public(server, http)
    status, _ = await call(http, "GET", rest("/list/0/10", "LiveApp"))
    assert status == 200

    # with the JWT, the API can turn the control off again
    status, body = await call(
        http, "POST", settings_path(), json={"jwtControlEnabled": False}, headers={"Authorization": f"Bearer {good}"}
    )
    assert status == 200 and body["success"] is True
    status, _ = await call(http, "GET", rest("/list/0/10"))
    assert status == 200
