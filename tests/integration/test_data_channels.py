"""Data channels (protocol.md §3.6): publisher to players, players back, room chat in both
conference flows, REST send, the size limit and token control — with real aiortc peers."""

from __future__ import annotations

import struct
import time
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiortc import RTCDataChannel

from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsError, AmsSocket, Player, Publisher, chat
from tests.support.clients import Clients as BaseClients

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
LIMIT = 65536


def is_open(channel: RTCDataChannel | None) -> bool:
    return channel is not None and channel.readyState == "open"


def recorder(channel: RTCDataChannel | None) -> list[str | bytes]:
    """Everything that arrives on a client-created (publish) channel."""
    assert channel is not None
    received: list[str | bytes] = []
    channel.on("message", received.append)
    return received


def sdk_binary_chunks(payload: bytes, token: int = 7, chunk: int = 16000) -> list[bytes]:
    """The SDK's binary framing: Int32[token, totalLength], then 4-byte token + <=16000 bytes."""
    out = [struct.pack("<ii", token, len(payload))]
    for pos in range(0, len(payload), chunk):
        out.append(struct.pack("<i", token) + payload[pos : pos + chunk])
    return out


class Clients(BaseClients):
    """Sockets, publishers and players of one test, all closed at the end."""

    async def publish(self, stream_id: str, sock: AmsSocket | None = None, **kw: Any) -> Publisher:
        sock = sock or await self.socket()
        kw.setdefault("with_video", False)  # audio keeps these tests light; data is what matters
        publisher = self.publisher(sock, stream_id, data_channel=True, **kw)
        await publisher.start()
        await sock.wait_for(definition="publish_started", stream_id=stream_id, timeout=10)
        await eventually(lambda: is_open(publisher.channel), timeout=10, what=f"{stream_id}'s publish channel")
        return publisher

    async def play(self, stream_id: str, sock: AmsSocket | None = None, **kw: Any) -> Player:
        player = self.player(sock or await self.socket(), stream_id, **kw)
        await player.start()
        await eventually(lambda: is_open(player.channel), timeout=10, what=f"the data channel of a play of {stream_id}")
        assert player.channel is not None and player.channel.label == stream_id
        return player


@pytest.fixture
async def clients(server: Server) -> AsyncIterator[Clients]:
    async with Clients(server.port) as c:
        yield c


async def post_data(http: aiohttp.ClientSession, stream_id: str, body: str | bytes) -> tuple[int, Any]:
    async with http.post(f"/{APP}/rest/v2/broadcasts/{stream_id}/data", data=body) as resp:
        return resp.status, await resp.json()


async def test_publisher_to_three_players_in_order_and_players_back(server: Server, clients: Clients) -> None:
    publisher = await clients.publish("s1", with_video=True)
    assert publisher.channel is not None and publisher.channel.label == "s1"
    at_publisher = recorder(publisher.channel)
    players = [await clients.play("s1") for _ in range(3)]

    # text stays text, binary stays bytes, order is kept, SDK binary framing passes untouched
    sent: list[str | bytes] = []
    for i in range(50):
        sent.append(f"msg-{i}" if i % 2 == 0 else b"bin-%d\x00\xff" % i)
    sent += sdk_binary_chunks(bytes(range(256)) * 160)  # 40960 bytes: header + 3 chunks
    sent.append('{"streamId":"s1","eventType":"UPDATE_STATUS","payload":"ünïcödé ✓"}')
    for message in sent:
        publisher.channel.send(message)
    await eventually(lambda: all(len(p.data_messages) >= len(sent) for p in players), timeout=10, what="all messages")
    for player in players:
        assert player.data_messages == sent
        assert [type(m) for m in player.data_messages] == [type(m) for m in sent]
    assert at_publisher == []  # never echoed to the sender

    # a player's message reaches the publisher and the other players, not itself
    players[0].channel.send("from player 0")
    players[1].channel.send(b"\x01from player 1")
    await eventually(lambda: len(at_publisher) == 2, timeout=10, what="players' messages at the publisher")
    assert sorted(at_publisher, key=lambda m: m if isinstance(m, bytes) else m.encode()) == [
        b"\x01from player 1",
        "from player 0",
    ]
    await eventually(
        lambda: (
            players[2].data_messages[len(sent) :]
            in (["from player 0", b"\x01from player 1"], [b"\x01from player 1", "from player 0"])
        ),
        timeout=10,
        what="players' messages at player 2",
    )
    # a marker from the publisher: whatever reached a player before it is all it will get from above
    publisher.channel.send("marker")
    await eventually(lambda: all(p.data_messages[-1:] == ["marker"] for p in players), timeout=10, what="marker")
    assert players[0].data_messages[len(sent) :] == [b"\x01from player 1", "marker"]
    assert players[1].data_messages[len(sent) :] == ["from player 0", "marker"]
    assert len(players[2].data_messages) == len(sent) + 3

    # a player that stopped hears nothing more; the others still do
    await players[2].stop()
    await eventually(
        lambda: len(server.applications[APP].streams["s1"].playbacks) == 2, timeout=10, what="play 3 ended"
    )
    publisher.channel.send("after stop")
    await eventually(
        lambda: all(p.data_messages[-1] == "after stop" for p in players[:2]), timeout=10, what="after stop"
    )
    assert players[2].data_messages[-1] == "marker"


async def test_message_size_limit(server: Server, clients: Clients) -> None:
    publisher = await clients.publish("big")
    at_publisher = recorder(publisher.channel)
    players = [await clients.play("big") for _ in range(2)]

    publisher.channel.send(b"x" * (LIMIT + 1))
    error = await publisher.sock.wait_for("error", timeout=10)
    assert error["definition"] == "data_message_too_large" and error["streamId"] == "big"
    assert str(LIMIT + 1) in error["information"] and str(LIMIT) in error["information"]
    # text counts in bytes: 21846 three-byte characters are 65538 bytes
    publisher.channel.send("✓" * 21846)
    error = await publisher.sock.wait_for("error", timeout=10)
    assert error["definition"] == "data_message_too_large"

    # smaller messages still flow, the limit itself included, and nothing oversize got through
    publisher.channel.send(b"y" * LIMIT)
    publisher.channel.send("small")
    await eventually(lambda: all(p.data_messages[-1:] == ["small"] for p in players), timeout=10, what="small message")
    for player in players:
        assert [len(m) for m in player.data_messages] == [LIMIT, 5]
        assert player.sock.find("error") == []

    # a player's oversize message is refused to that player only
    players[0].channel.send("z" * (LIMIT + 1))
    error = await players[0].sock.wait_for("error", timeout=10)
    assert error["definition"] == "data_message_too_large" and error["streamId"] == "big"
    players[0].channel.send("ok")
    await eventually(lambda: players[1].data_messages[-1:] == ["ok"], timeout=10, what="ok from player 0")
    await eventually(lambda: at_publisher == ["ok"], timeout=10, what="ok at the publisher")
    assert len(players[1].data_messages) == 3
    assert len(publisher.sock.find("error")) == 2


async def test_rest_send_data(server: Server, clients: Clients, http: aiohttp.ClientSession) -> None:
    publisher = await clients.publish("rs")
    at_publisher = recorder(publisher.channel)
    players = [await clients.play("rs") for _ in range(2)]

    status, body = await post_data(http, "rs", "hello from REST")
    assert status == 200 and body["success"] is True and body["dataId"] == "rs"
    status, body = await post_data(http, "rs", '{"eventType":"NOTICE","text":"çà"}'.encode())
    assert status == 200 and body["success"] is True
    await eventually(
        lambda: all(len(p.data_messages) == 2 for p in players) and len(at_publisher) == 2, timeout=10, what="REST data"
    )
    for received in [at_publisher, *(p.data_messages for p in players)]:
        assert received == ["hello from REST", '{"eventType":"NOTICE","text":"çà"}']

    status, body = await post_data(http, "nosuchstream", "hello")
    assert status == 404 and body["success"] is False
    status, body = await post_data(http, "rs", b"")
    assert status == 400 and body["success"] is False
    status, body = await post_data(http, "rs", "a" * (LIMIT + 1))
    assert status == 400 and body["success"] is False and str(LIMIT) in body["message"]
    # the limit is in bytes for text too
    status, body = await post_data(http, "rs", "é" * (LIMIT // 2 + 1))
    assert status == 400 and body["success"] is False
    status, body = await post_data(http, "rs", "a" * LIMIT)
    assert status == 200 and body["success"] is True
    await eventually(
        lambda: all(len(p.data_messages) == 3 for p in players), timeout=10, what="the largest REST message"
    )
    for received in [at_publisher, *(p.data_messages for p in players)]:
        assert len(received[-1]) == LIMIT
    assert len(at_publisher) == 3


async def test_room_chat_multitrack_flow(server: Server, clients: Clients) -> None:
    room = "chat-mt"
    ids = [f"mt{i}" for i in range(4)]
    socks: dict[str, AmsSocket] = {}
    publishers: dict[str, Publisher] = {}
    room_plays: dict[str, Player] = {}
    for sid in ids:
        sock = socks[sid] = await clients.socket()
        await sock.send({"command": "joinRoom", "room": room, "mainTrack": room, "streamId": sid})
        await sock.wait_for(definition="joinedTheRoom", timeout=10)
        publishers[sid] = await clients.publish(sid, sock, extra={"mainTrack": room})
    for sid in ids:
        room_plays[sid] = await clients.play(room, socks[sid], room=room, track_list=["!" + sid])
    at_publisher = {sid: recorder(publishers[sid].channel) for sid in ids}

    for rnd in ("hello", "bye"):
        for sid in ids:
            publishers[sid].channel.send(f"{rnd} from {sid}")
        await eventually(
            lambda rnd=rnd: all(sum(m.startswith(rnd) for m in chat(room_plays[s])) == 3 for s in ids),
            timeout=10,
            what=f"every {rnd} at every other member",
        )
    for sid in ids:
        received = chat(room_plays[sid])
        others = [o for o in ids if o != sid]
        # every other member's messages, in each sender's order; never the member's own
        assert sorted(received) == sorted([f"hello from {o}" for o in others] + [f"bye from {o}" for o in others])
        for o in others:
            assert received.index(f"hello from {o}") < received.index(f"bye from {o}")
        assert at_publisher[sid] == []

    # a message on the room-play channel goes to the other members' room plays as well
    room_plays["mt0"].channel.send("via room play")
    await eventually(
        lambda: all(chat(room_plays[s])[-1:] == ["via room play"] for s in ids[1:]),
        timeout=10,
        what="room play chat",
    )
    publishers["mt1"].channel.send("marker")
    await eventually(lambda: chat(room_plays["mt0"])[-1:] == ["marker"], timeout=10, what="marker")
    assert "via room play" not in chat(room_plays["mt0"])


async def test_room_chat_legacy_flow(server: Server, clients: Clients) -> None:
    room = "chat-legacy"
    ids = [f"lg{i}" for i in range(4)]
    socks: dict[str, AmsSocket] = {}
    publishers: dict[str, Publisher] = {}
    plays: dict[tuple[str, str], Player] = {}  # (who plays, whose stream)
    for sid in ids:
        sock = socks[sid] = await clients.socket()
        await sock.send({"command": "joinRoom", "room": room, "streamId": sid})
        await sock.wait_for(definition="joinedTheRoom", timeout=10)
        publishers[sid] = await clients.publish(sid, sock)  # plain publish: the room comes from joinRoom
    for sid in ids:
        for other in ids:
            if other != sid:
                plays[(sid, other)] = await clients.play(other, socks[sid], room=room)
    at_publisher = {sid: recorder(publishers[sid].channel) for sid in ids}

    for n in range(3):
        for sid in ids:
            publishers[sid].channel.send(f"{n}:{sid}")
    await eventually(lambda: all(len(p.data_messages) == 3 for p in plays.values()), timeout=10, what="legacy chat")
    for (who, whose), player in plays.items():
        # a member hears each other member on its play of that member's stream, in order
        assert player.data_messages == [f"0:{whose}", f"1:{whose}", f"2:{whose}"], (who, whose)
    assert all(received == [] for received in at_publisher.values())


async def test_no_data_without_the_right_to_play(server: Server, clients: Clients, http: aiohttp.ClientSession) -> None:
    app = server.applications[APP]
    publisher = await clients.publish("tok")  # publish control stays off
    app.update_settings({"playTokenControlEnabled": True})

    refused_sock = await clients.socket()
    refused = clients.player(refused_sock, "tok")
    with pytest.raises(AmsError) as error:
        await refused.start()
    assert error.value.definition == "unauthorized_access"

    token = await app.access.issue_token("tok", "play", int(time.time()) + 60)
    allowed = await clients.play("tok", token=token.token_id)

    publisher.channel.send("for token holders")
    status, _ = await post_data(http, "tok", "REST for token holders")
    assert status == 200
    await eventually(lambda: len(allowed.data_messages) == 2, timeout=10, what="data at the token holder")
    assert allowed.data_messages == ["for token holders", "REST for token holders"]
    await refused_sock.round_trip()  # whatever the server sent the refused socket has arrived
    assert refused_sock.find("takeConfiguration") == []
    assert refused.pc is None and refused.channel is None and refused.data_messages == []
    assert len(app.streams["tok"].playbacks) == 1
    # the one-time token is used up: a second player with it is refused too
    again = clients.player(await clients.socket(), "tok", token=token.token_id)
    with pytest.raises(AmsError):
        await again.start()
    assert again.sock.find("takeConfiguration") == []
