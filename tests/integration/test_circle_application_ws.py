"""Circle's application WebSocket (`/{App}/websocket/application`, protocol.md "Circle's
application WebSocket"): what Circle's server plugin answers, over a real socket, with a real
aiortc publisher for `sendData`."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCDataChannel

from confero.server import Server
from tests.support import eventually
from tests.support.clients import Clients

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"


class CircleSocket:
    """A client of the application socket, as Circle's WebSocketProvider is."""

    def __init__(self, ws: aiohttp.ClientWebSocketResponse) -> None:
        self.ws = ws

    async def send(self, command: dict[str, Any] | str) -> None:
        await self.ws.send_str(command if isinstance(command, str) else json.dumps(command))

    async def receive(self, timeout: float = 5.0) -> dict[str, Any]:
        msg = await self.ws.receive(timeout=timeout)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        out = json.loads(msg.data)
        assert isinstance(out, dict)
        return out

    async def ask(self, command: dict[str, Any] | str) -> dict[str, Any]:
        await self.send(command)
        return await self.receive()

    async def no_reply_to(self, command: dict[str, Any]) -> None:
        """`command` gets no answer: the ping sent after it is answered first."""
        await self.send(command)
        assert (await self.ask({"command": "ping"}))["command"] == "pong"


@pytest.fixture
async def circle(server: Server, http: aiohttp.ClientSession) -> AsyncIterator[CircleSocket]:
    async with http.ws_connect(f"/{APP}/websocket/application") as ws:
        yield CircleSocket(ws)
    await eventually(lambda: not server.circle_sessions, timeout=5, what="the server to let go of the socket")


async def test_ping_is_answered_with_a_result_in_a_string(circle: CircleSocket) -> None:
    reply = await circle.ask({"command": "ping"})
    assert reply["command"] == "pong"
    assert json.loads(reply["definition"]) == {"success": True, "errorId": 0}  # Gson's Result


async def test_settings_carry_what_circle_reads(circle: CircleSocket) -> None:
    reply = await circle.ask({"command": "getSettings"})
    assert reply["command"] == "setSettings"
    settings = json.loads(reply["settings"])  # a JSON string, which Circle parses again
    assert settings["roomCreationPasswordEnabled"] is False  # Home: no password dialog
    assert settings["isRecordingFeatureAvailable"] is False  # the meeting: no record button
    assert settings["maxVideoTrackCount"] == -1  # Circle then uses its own 6
    assert json.loads(settings["participantVisibilityMatrix"])["default"] == ["default"]


async def test_room_creation_password_is_not_required_and_never_accepted(circle: CircleSocket) -> None:
    assert await circle.ask({"command": "isRoomCreationPasswordRequired"}) == {
        "command": "isRoomCreationPasswordRequired",
        "required": False,
    }
    reply = await circle.ask({"command": "createRoomWithPassword", "roomCreationPassword": "x", "roomName": "r"})
    assert reply == {"command": "createRoomWithPassword", "authenticated": False}


async def test_recording_is_refused_with_a_reason(circle: CircleSocket) -> None:
    start = await circle.ask(
        {"command": "startRecording", "streamId": "room1", "websocketURL": "ws://127.0.0.1/x", "token": None}
    )
    assert start["command"] == "startRecordingResponse"
    result = json.loads(start["definition"])
    assert result["success"] is False and "not available" in result["message"]
    stop = await circle.ask({"command": "stopRecording", "streamId": "room1"})
    assert stop["command"] == "stopRecordingResponse" and json.loads(stop["definition"])["success"] is False


async def test_sync_administrative_fields_is_ignored_like_the_plugin_does(circle: CircleSocket) -> None:
    await circle.no_reply_to(
        {"command": "syncAdministrativeFields", "roomName": "room1", "streamId": "s1", "websocketURL": "ws://x"}
    )


async def test_bad_frames_get_an_error_and_the_socket_stays(circle: CircleSocket) -> None:
    for frame, definition in (
        ("not json", "invalid_json"),
        ("[1, 2]", "invalid_json"),
        ({"streamId": "s1"}, "missingParameter"),
        ({"command": "makePresenter"}, "unknown_command"),
        ({"command": "sendData", "receiverStreamId": 5}, "invalid_field"),
    ):
        reply = await circle.ask(frame)
        assert reply["command"] == "error" and reply["definition"] == definition, (frame, reply)
    await circle.ws.send_bytes(b"\x00")
    assert (await circle.receive())["definition"] == "invalid_json"
    # A JSON string holding the command, which Circle's provider also accepts, is a command.
    assert (await circle.ask(json.dumps(json.dumps({"command": "ping"}))))["command"] == "pong"


async def test_send_data_reaches_the_receivers_data_channel(server: Server, circle: CircleSocket) -> None:
    async with Clients(server.port) as clients:
        sock = await clients.socket()
        publisher = clients.publisher(sock, "bob", data_channel=True, with_video=False)
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id="bob", timeout=10)
        channel: RTCDataChannel | None = publisher.channel
        await eventually(lambda: channel is not None and channel.readyState == "open", timeout=10, what="bob's channel")
        assert channel is not None
        received: list[str | bytes] = []
        channel.on("message", received.append)
        note = json.dumps({"eventType": "MIC_MUTED", "streamId": "alice"})
        await circle.no_reply_to(
            {"command": "sendData", "streamId": "alice", "receiverStreamId": "bob", "message": note}
        )
        await eventually(lambda: received == [note], timeout=5, what="bob to get the message")
        # A receiver that is not streaming: logged, no answer (as the plugin does).
        await circle.no_reply_to({"command": "sendData", "receiverStreamId": "nobody", "message": "x"})


async def test_update_broadcast_role_changes_the_record(circle: CircleSocket, http: aiohttp.ClientSession) -> None:
    async with http.post(f"/{APP}/rest/v2/broadcasts/create", json={"streamId": "carol", "role": "listener"}) as r:
        assert r.status == 200, await r.text()
    await circle.no_reply_to({"command": "updateBroadcastRole", "streamId": "carol", "role": "speaker"})
    async with http.get(f"/{APP}/rest/v2/broadcasts/carol") as r:
        assert (await r.json())["role"] == "speaker"
    await circle.no_reply_to({"command": "updateBroadcastRole", "streamId": "nobody", "role": "speaker"})


async def test_unknown_application_is_not_found(http: aiohttp.ClientSession) -> None:
    with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
        async with http.ws_connect("/NoSuchApp/websocket/application"):
            pass
    assert refused.value.status == 404


async def test_server_close_closes_the_socket(tmp_path: Any) -> None:
    from tests.support.server import make_settings

    srv = Server(make_settings(tmp_path))
    await srv.start()
    try:
        url = f"http://127.0.0.1:{srv.port}/{APP}/websocket/application"
        async with aiohttp.ClientSession() as http, http.ws_connect(url) as ws:
            await ws.send_str('{"command": "ping"}')
            assert (await ws.receive(timeout=5)).type == aiohttp.WSMsgType.TEXT
            assert len(srv.dump()["sessions"]) == 1
            await srv.close()
            assert (await ws.receive(timeout=5)).type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED)
    finally:
        await srv.close()
    assert srv.circle_sessions == set()
