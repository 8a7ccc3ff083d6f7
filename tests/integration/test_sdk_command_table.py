"""Every command the official JavaScript SDK 2.16.2 can send (ams-coverage.md section 1, all 32),
as the SDK builds the frame (`webrtc_adaptor.js`), against a real server: none is answered
`unknown_command`, and each gets the reply Ant Media gives.

The state a command needs (a live stream, a play, a room play, a 1-1 call) is made first with
real aiortc peers. A reply of `None` means Ant Media sends nothing back: the row then checks,
after a ping round trip, that no error came either.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

import pytest
from aiortc import RTCPeerConnection

from confero.server import Server
from tests.support.amsclient import AmsSocket
from tests.support.clients import Clients

pytestmark = pytest.mark.integration

Message = dict[str, Any]
Matcher = Callable[[Message], bool]


@dataclass
class Context:
    """What one row runs against: its own socket, and a second one for a 1-1 partner."""

    clients: Clients
    sock: AmsSocket
    partner: AmsSocket | None = None
    closing: list[RTCPeerConnection] = field(default_factory=list)


async def live_stream(ctx: Context) -> None:
    """s1 publishes audio and video in room1 (multitrack flow), on another socket."""
    sock = await ctx.clients.socket()
    publisher = ctx.clients.publisher(sock, "s1", extra={"mainTrack": "room1"})
    await publisher.start()
    await sock.wait_for(definition="publish_started", stream_id="s1", timeout=10)


async def playing(ctx: Context) -> None:
    await live_stream(ctx)
    player = ctx.clients.player(ctx.sock, "s1", count_media=False)
    await player.start()
    await ctx.sock.wait_for(definition="play_started", stream_id="s1", timeout=10)


async def playing_room(ctx: Context) -> None:
    await live_stream(ctx)
    player = ctx.clients.player(ctx.sock, "room1", room="room1", count_media=False)
    await player.start()
    await ctx.sock.wait_for(definition="play_started", stream_id="room1", timeout=10)


async def publishing(ctx: Context) -> None:
    """This socket sent `publish` for s2 and got `start` (the SDK's offer comes next)."""
    await ctx.sock.send(sdk_publish("s2"))
    await ctx.sock.wait_for("start", stream_id="s2", timeout=5)


async def joined_room(ctx: Context) -> None:
    await ctx.sock.send(sdk_join_room("room1", "m1"))
    await ctx.sock.wait_for(definition="joinedTheRoom", timeout=5)


async def in_call(ctx: Context) -> None:
    ctx.partner = await ctx.clients.socket()
    for sock in (ctx.partner, ctx.sock):
        await sock.send({"command": "join", "streamId": "call1", "multiPeer": False, "mode": "both"})
        await sock.wait_for(definition="joined", stream_id="call1", timeout=5)


async def nothing(ctx: Context) -> None:
    pass


# -- the frames, as webrtc_adaptor.js builds them -------------------------------------------------


def sdk_publish(stream_id: str) -> Message:
    return {
        "command": "publish",
        "streamId": stream_id,
        "token": None,
        "subscriberId": "",
        "subscriberCode": "",
        "streamName": "",
        "mainTrack": "",
        "video": False,
        "audio": False,
        "metaData": "",
        "role": "",
    }


def sdk_join_room(room: str, stream_id: str) -> Message:
    # joinRoom(room, streamId) with the optional arguments left out: JSON null (undefined is dropped).
    return {
        "command": "joinRoom",
        "room": room,
        "mainTrack": room,
        "streamId": stream_id,
        "mode": None,
        "streamName": None,
        "role": None,
        "metadata": None,
    }


def sdk_play(stream_id: str, room: str = "") -> Message:
    return {
        "command": "play",
        "streamId": stream_id,
        "token": "",
        "room": room,
        "trackList": [],
        "subscriberId": "",
        "subscriberName": "",
        "subscriberCode": "",
        "viewerInfo": "",
        "role": "",
        "userPublishId": "",
        "disableTracksByDefault": False,
    }


async def data_offer(ctx: Context) -> str:
    """A browser-like offer for a data-only publish (the SDK's onlyDataChannel)."""
    pc = RTCPeerConnection()
    ctx.closing.append(pc)
    pc.createDataChannel("s2")
    await pc.setLocalDescription(await pc.createOffer())
    return str(pc.localDescription.sdp)


Frame = Message | Callable[[Context], Awaitable[Message]]


async def take_configuration(ctx: Context) -> Message:
    return {"command": "takeConfiguration", "streamId": "s2", "type": "offer", "sdp": await data_offer(ctx)}


def notification(definition: str, stream_id: str | None = None) -> Matcher:
    return lambda m: (
        m.get("command") == "notification"
        and m.get("definition") == definition
        and (stream_id is None or m.get("streamId") == stream_id)
    )


def command(name: str, **fields: Any) -> Matcher:
    return lambda m: m.get("command") == name and all(m.get(k) == v for k, v in fields.items())


def error(definition: str) -> Matcher:
    return lambda m: m.get("command") == "error" and m.get("definition") == definition


@dataclass(frozen=True)
class Row:
    setup: Callable[[Context], Awaitable[None]]
    frame: Frame
    reply: Matcher | None  # on this socket; None: Ant Media sends nothing
    partner_reply: Matcher | None = None  # on the 1-1 partner's socket


def lands_with(branch: str) -> pytest.MarkDecorator:
    return pytest.mark.xfail(strict=True, reason=f"lands with branch {branch}")


ROWS = [
    pytest.param(Row(nothing, {"command": "ping"}, command("pong")), id="ping"),
    pytest.param(Row(nothing, {"command": "getIceServerConfig"}, command("iceServerConfig")), id="getIceServerConfig"),
    pytest.param(Row(nothing, sdk_publish("s2"), command("start", streamId="s2")), id="publish"),
    pytest.param(
        Row(publishing, take_configuration, command("takeConfiguration", streamId="s2", type="answer")),
        id="takeConfiguration",
    ),
    pytest.param(
        Row(
            publishing,
            {
                "command": "takeCandidate",
                "streamId": "s2",
                "label": 0,
                "id": "0",
                "candidate": "candidate:1 1 udp 2122260223 127.0.0.1 50000 typ host generation 0",
            },
            None,
        ),
        id="takeCandidate",
    ),
    pytest.param(
        Row(publishing, {"command": "stop", "streamId": "s2"}, notification("publish_finished", "s2")), id="stop"
    ),
    pytest.param(
        Row(live_stream, sdk_play("s1"), command("takeConfiguration", streamId="s1", type="offer")), id="play"
    ),
    pytest.param(Row(nothing, sdk_join_room("room1", "m1"), notification("joinedTheRoom")), id="joinRoom"),
    pytest.param(
        Row(
            joined_room, {"command": "leaveFromRoom", "room": "room1", "streamId": "m1"}, notification("leavedFromRoom")
        ),
        id="leaveFromRoom",
    ),
    pytest.param(
        Row(live_stream, {"command": "getRoomInfo", "streamId": "m1", "room": "room1"}, command("roomInformation")),
        id="getRoomInfo",
    ),
    pytest.param(
        Row(live_stream, {"command": "getStreamInfo", "streamId": "s1"}, command("streamInformation", streamId="s1")),
        id="getStreamInfo",
    ),
    pytest.param(
        Row(playing_room, {"command": "enableTrack", "streamId": "room1", "trackId": "s1", "enabled": False}, None),
        id="enableTrack",
    ),
    pytest.param(
        Row(live_stream, {"command": "getTrackList", "streamId": "room1", "token": None}, command("trackList")),
        id="getTrackList",
    ),
    pytest.param(
        Row(
            nothing,
            {"command": "join", "streamId": "call1", "multiPeer": False, "mode": "both"},
            notification("joined", "call1"),
        ),
        id="join",
    ),
    pytest.param(Row(in_call, {"command": "leave", "streamId": "call1"}, notification("leaved", "call1")), id="leave"),
    pytest.param(
        Row(
            in_call,
            {"command": "peerMessageCommand", "streamId": "call1", "definition": "hello", "data": "hi"},
            None,
            command("peerMessageCommand", definition="hello", data="hi"),
        ),
        id="peerMessageCommand",
    ),
    pytest.param(
        Row(playing, {"command": "toggleVideo", "streamId": "s1", "trackId": "s1", "enabled": False}, None),
        id="toggleVideo",
    ),
    pytest.param(
        Row(playing, {"command": "toggleAudio", "streamId": "s1", "trackId": "s1", "enabled": False}, None),
        id="toggleAudio",
    ),
    pytest.param(
        Row(playing, {"command": "forceStreamQuality", "streamId": "s1", "streamHeight": 720}, None),
        id="forceStreamQuality",
    ),
    pytest.param(
        Row(live_stream, {"command": "getBroadcastObject", "streamId": "s1"}, notification("broadcastObject", "s1")),
        id="getBroadcastObject",
    ),
    pytest.param(
        Row(
            live_stream,
            {"command": "updateStreamMetaData", "streamId": "s1", "metaData": '{"isMicMuted":true}'},
            None,
        ),
        id="updateStreamMetaData",
    ),
    pytest.param(
        Row(
            live_stream,
            {"command": "getSubtracks", "streamId": "room1", "role": "", "offset": 0, "size": 10},
            notification("subtrackList"),
        ),
        id="getSubtracks",
    ),
    pytest.param(
        Row(
            live_stream,
            {"command": "getSubtracksCount", "streamId": "room1", "role": "", "status": ""},
            notification("subtrackCount"),
        ),
        id="getSubtracksCount",
    ),
    pytest.param(
        Row(
            playing_room,
            {"command": "getVideoTrackAssignmentsCommand", "streamId": "room1"},
            None,  # the list goes on the room play's data channel (VIDEO_TRACK_ASSIGNMENT_LIST)
        ),
        id="getVideoTrackAssignmentsCommand",
    ),
    pytest.param(
        Row(
            playing_room,
            {"command": "assignVideoTrackCommand", "streamId": "room1", "videoTrackId": "s1", "enabled": True},
            None,
        ),
        id="assignVideoTrackCommand",
    ),
    pytest.param(
        Row(
            playing_room,
            {"command": "updateVideoTrackAssignmentsCommand", "streamId": "room1", "offset": 0, "size": 5},
            None,
        ),
        id="updateVideoTrackAssignmentsCommand",
    ),
    pytest.param(
        Row(playing_room, {"command": "setMaxVideoTrackCountCommand", "streamId": "room1", "maxTrackCount": 3}, None),
        id="setMaxVideoTrackCountCommand",
    ),
    pytest.param(
        Row(live_stream, {"command": "getDebugInfo", "streamId": "s1"}, notification("debugInfo", "s1")),
        id="getDebugInfo",
    ),
    pytest.param(
        Row(playing, {"command": "getSubscriberCount", "streamId": "s1"}, notification("subscriberCount", "s1")),
        id="getSubscriberCount",
    ),
    pytest.param(
        Row(
            playing,
            {"command": "getSubscribers", "streamId": "s1", "offset": 0, "size": 10},
            notification("subscriberList", "s1"),
        ),
        id="getSubscribers",
    ),
    pytest.param(
        Row(
            nothing,
            {
                "command": "registerPushNotificationToken",
                "subscriberId": "user1",
                "token": "jwt",
                "pnsRegistrationToken": "fcm-token",
                "pnsType": "fcm",
            },
            error("authenticationTokenNotValid"),
        ),
        id="registerPushNotificationToken",
    ),
    pytest.param(
        Row(
            nothing,
            {
                "command": "sendPushNotification",
                "subscriberId": "user1",
                "token": "jwt",
                "pushNotificationContent": {"title": "hi"},
                "subscriberIdsToNotify": ["user2"],
            },
            error("authenticationTokenNotValid"),
        ),
        id="sendPushNotification",
    ),
]


def test_the_table_has_every_command_the_sdk_sends() -> None:
    assert len(ROWS) == 32 and len({p.id for p in ROWS}) == 32


@pytest.mark.parametrize("row", ROWS)
async def test_sdk_command(server: Server, clients: Clients, row: Row) -> None:
    ctx = Context(clients, await clients.socket())
    try:
        await row.setup(ctx)
        frame = row.frame if isinstance(row.frame, dict) else await row.frame(ctx)
        await ctx.sock.send(frame)
        if row.reply is not None:
            await ctx.sock.wait_for(row.reply, timeout=10)
        if row.partner_reply is not None:
            assert ctx.partner is not None
            await ctx.partner.wait_for(row.partner_reply, timeout=10)
        await ctx.sock.round_trip()  # everything the server answered to the frame has arrived
        errors = [m for m in ctx.sock.history if m.get("command") == "error"]
        assert not [m for m in errors if m.get("definition") == "unknown_command"], errors
        expected_error = row.reply is not None and any(row.reply(m) for m in errors)
        assert expected_error or errors == [], errors
    finally:
        for pc in ctx.closing:
            await pc.close()
