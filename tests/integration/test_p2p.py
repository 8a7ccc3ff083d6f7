"""1-1 calls (protocol.md §3.5): the server pairs two clients and relays their signaling only.

Two aiortc peers stand in for the SDK's `join` flow; media and data flow directly between
them, so the server's router never holds a publisher or subscriber for a call.
"""

from __future__ import annotations

import asyncio
import time

import pytest

from confero.server import Server
from tests.support import eventually
from tests.support.amsclient import AmsError, PeerClient
from tests.support.clients import Clients

pytestmark = pytest.mark.integration

APP = "WebRTCAppEE"
CALL = "call1"


def calls(server: Server) -> dict:
    return server.applications[APP].calls.calls


def router_is_empty(server: Server) -> bool:
    return server.router.dump() == {"publishers": [], "subscribers": [], "tracks": []}


async def call_peer(clients: Clients, call_id: str = CALL, *, join: bool = True) -> PeerClient:
    """A peer of the call on its own socket, joined unless `join` is False."""
    peer = clients.peer(await clients.socket(), call_id)
    if join:
        joined = await peer.join()
        assert joined == {"command": "notification", "definition": "joined", "streamId": call_id}
    return peer


async def connect_pair(first: PeerClient, second: PeerClient, frames: int = 30) -> None:
    """Both sides of a call (the first one already had `start`) connect and decode each other."""
    await asyncio.gather(first.wait_connected(), second.wait_connected())
    await asyncio.gather(first.wait_frames(frames, 5), second.wait_frames(frames, 5))
    # what each side decodes is the other side's synthetic 320x240 video
    assert first.counter.first_video_size == (320, 240)
    assert second.counter.first_video_size == (320, 240)


async def test_two_peers_call_each_other_through_relayed_signaling(server: Server) -> None:
    async with Clients(server.port) as clients:
        a = await call_peer(clients)
        assert a.starts == 0 and CALL in calls(server)
        b = await call_peer(clients)
        # the first peer hears start and offers; the second answers
        await eventually(lambda: a.starts == 1, timeout=10, what="start to the first peer")
        await connect_pair(a, b)
        assert b.starts == 0 and a.calls == 1 and b.calls == 1
        assert [m["command"] for m in a.history] == ["notification", "start", "takeConfiguration"]
        assert [m["command"] for m in b.history] == ["notification", "takeConfiguration"]
        # the offer and answer arrived exactly as the other peer sent them
        assert b.history[1] == {"command": "takeConfiguration", "streamId": CALL, "type": "offer", "sdp": a.offer_sdp}
        assert a.history[2] == {"command": "takeConfiguration", "streamId": CALL, "type": "answer", "sdp": b.answer_sdp}
        assert "a=sendrecv" in a.offer_sdp and "a=sendrecv" in b.answer_sdp
        # the server carries signaling only: no media peer of its own
        assert router_is_empty(server), server.router.dump()

        # the data channel (label = call id) goes straight from peer to peer
        await eventually(
            lambda: b.channel is not None and b.channel.readyState == "open", timeout=10, what="b's data channel"
        )
        assert a.channel is not None and a.channel.label == CALL and b.channel.label == CALL
        a.channel.send("hi b")
        b.channel.send(b"\x00\x01hi a")
        await eventually(
            lambda: b.data_messages == ["hi b"] and a.data_messages == [b"\x00\x01hi a"], timeout=10, what="p2p data"
        )
        assert router_is_empty(server)

        # peerMessageCommand is relayed unchanged, extra fields included, both ways
        sent = await a.send_peer_message("chat", {"text": "hello", "n": 1}, extra="kept", number=7)
        await b.wait_peer_messages(1)
        assert b.peer_messages == [sent]
        sent_back = await b.send_peer_message("typing", "yes")
        await a.wait_peer_messages(1)
        assert a.peer_messages == [sent_back]
        # a trickled candidate is relayed unchanged too (aiortc puts them all in the SDP anyway)
        line = next(x for x in a.offer_sdp.splitlines() if x.startswith("a=candidate:"))
        candidate = {"command": "takeCandidate", "streamId": CALL, "label": 0, "id": "0", "candidate": line[2:]}
        await a.sock.send(candidate)
        await eventually(lambda: b.history[-1] == candidate, timeout=10, what="relayed candidate")
        assert a.errors == [] and b.errors == []

        # a third client on the 1-1 call is refused clearly, and the call is undisturbed
        third = await call_peer(clients, join=False)
        with pytest.raises(AmsError) as refused:
            await third.join()
        error = refused.value.message
        assert error["definition"] == "streamIdInUse" and error["streamId"] == CALL
        assert "two peers" in error["information"]
        assert (await third.sock.wait_for("error", timeout=1)) == error
        assert len(calls(server)[CALL].peers) == 2
        assert [len(x["calls"]) for x in server.dump()["sessions"]] in ([1, 1, 0], [1, 0, 1], [0, 1, 1])
        # whatever the refusal made the server send the two peers has arrived and been handled
        for peer in (a, b):
            await peer.sock.round_trip()
            await peer.drain()
        assert a.stops == 0 and b.stops == 0 and a.starts == 1
        # ... and cannot relay into it
        await third.send_peer_message("chat", "intruder")
        intruder = await third.sock.wait_for("error", timeout=5)
        assert intruder["definition"] == "no_peer_associated_before"
        before = a.video_frames
        await eventually(lambda: a.video_frames > before + 5, timeout=10, what="the call keeps flowing")
        assert len(a.peer_messages) == 1 and len(b.peer_messages) == 1

        # the peers leave: leaved to each leaver, stop to the one remaining
        await b.leave()
        await a.wait_stops(1)
        await a.leave()
        assert a.stops == 1 and b.stops == 0
        assert calls(server) == {}
    assert calls(server) == {}


async def test_leave_keeps_the_other_joined_for_a_new_partner_and_disconnect_is_leave(server: Server) -> None:
    async with Clients(server.port) as clients:
        a = await call_peer(clients)
        b = await call_peer(clients)
        await connect_pair(a, b, frames=10)

        # b leaves: b gets leaved, a gets stop, closes its pc and stays joined
        left = await b.leave()
        assert left == {"command": "notification", "definition": "leaved", "streamId": CALL}
        await a.wait_stops(1)
        assert a.history[-1] == {"command": "stop", "streamId": CALL}
        assert b.stops == 0 and b.pc is None
        assert len(calls(server)[CALL].peers) == 1
        assert sum(CALL in s["calls"] for s in server.dump()["sessions"]) == 1
        # b is no longer in the call: relaying from it is refused
        await b.send_peer_message("chat", "anyone?")
        assert (await b.sock.wait_for("error", timeout=5))["definition"] == "no_peer_associated_before"

        # a new partner joins: a (still joined) gets start again, and a new call connects
        c = await call_peer(clients)
        await eventually(lambda: a.starts == 2, timeout=10, what="a second start")
        await connect_pair(a, c, frames=20)
        assert a.calls == 2 and c.starts == 0
        assert router_is_empty(server)

        # c's socket closes: that is a leave, and a hears stop
        await c.sock.close()
        await a.wait_stops(2)
        await eventually(lambda: len(calls(server)[CALL].peers) == 1, timeout=10, what="c gone from the call")

        # b comes back on the same socket and is the partner again
        await b.join()
        await eventually(lambda: a.starts == 3, timeout=10, what="a third start")
        await connect_pair(a, b, frames=10)

        # now a disconnects: b hears stop and stays joined alone; then it leaves
        await a.sock.close()
        await b.wait_stops(1)
        assert len(calls(server)[CALL].peers) == 1
        await b.leave()
        assert calls(server) == {}
    await eventually(lambda: calls(server) == {}, timeout=10, what="no calls left")


async def test_relaying_without_a_partner_and_leaving_without_joining(server: Server) -> None:
    async with Clients(server.port) as clients:
        a = await call_peer(clients)
        sock = a.sock
        # joined, but nobody to relay to
        await sock.send({"command": "takeConfiguration", "streamId": CALL, "type": "offer", "sdp": "v=0\r\n"})
        error = await sock.wait_for("error", timeout=5)
        assert error["definition"] == "no_peer_associated_before" and error["streamId"] == CALL
        await sock.send(
            {
                "command": "takeCandidate",
                "streamId": CALL,
                "label": 0,
                "id": "0",
                "candidate": "candidate:1 1 udp 1 127.0.0.1 9 typ host",
            }
        )
        assert (await sock.wait_for("error", timeout=5))["definition"] == "no_peer_associated_before"
        await a.send_peer_message("chat", "hello?")
        assert (await sock.wait_for("error", timeout=5))["definition"] == "no_peer_associated_before"
        # joining again is harmless: joined once more, still one peer
        assert (await a.join())["definition"] == "joined"
        assert len(calls(server)[CALL].peers) == 1 and a.starts == 0

        # a socket that never joined: peerMessageCommand and leave are refused
        other = await clients.socket()
        await other.send({"command": "peerMessageCommand", "streamId": CALL, "definition": "d", "data": "x"})
        assert (await other.wait_for("error", timeout=5))["definition"] == "no_peer_associated_before"
        await other.send({"command": "leave", "streamId": CALL})
        error = await other.wait_for("error", timeout=5)
        assert error["definition"] == "no_peer_associated_before" and error["streamId"] == CALL
        await other.send({"command": "leave", "streamId": "nosuchcall"})
        assert (await other.wait_for("error", timeout=5))["streamId"] == "nosuchcall"
        # a bad call id is refused like any stream id
        await other.send({"command": "join", "streamId": "bad id!"})
        assert (await other.wait_for("error", timeout=5))["definition"] == "invalidStreamName"
        assert other.find(definition="joined") == []

        # leave, then leave again: the second one is an error
        await a.leave()
        assert calls(server) == {}
        with pytest.raises(AmsError) as again:
            await a.leave()
        assert again.value.definition == "no_peer_associated_before"
        assert router_is_empty(server)
    assert calls(server) == {}


async def test_join_needs_a_token_when_token_control_is_on(server: Server) -> None:
    app = server.applications[APP]
    app.update_settings({"playTokenControlEnabled": True})
    async with Clients(server.port) as clients:
        a = await call_peer(clients, join=False)
        with pytest.raises(AmsError) as refused:
            await a.join()
        assert refused.value.definition == "unauthorized_access"
        assert calls(server) == {}
        token = await app.access.issue_token(CALL, "play", int(time.time()) + 60)
        await a.sock.send(
            {"command": "join", "streamId": CALL, "multiPeer": False, "mode": "both", "token": token.token_id}
        )
        assert (await a.sock.wait_for(definition="joined", timeout=5))["streamId"] == CALL
        await a.leave()
    assert calls(server) == {}
