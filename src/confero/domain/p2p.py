"""PeerCall: a 1-1 call. The server pairs two clients and relays their signaling; media flows
directly between them and never touches the server.

`join` twice with the same id pairs two clients: the first hears `start` and makes the offer.
Offers, answers, candidates and peer messages are relayed to the other client unchanged.
`leave` (or a closed socket) tells the other client `stop`; it stays joined for a new partner.
"""

from __future__ import annotations

from typing import Any

from confero.domain import events
from confero.domain.events import Listener
from confero.errors import ConferoError


class PeerCall:
    """The (at most two) clients of one call id."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.peers: list[Listener] = []

    def other(self, listener: Listener) -> Listener | None:
        return next((p for p in self.peers if p is not listener), None)


class PeerCalls:
    """Every 1-1 call of an application."""

    def __init__(self) -> None:
        self.calls: dict[str, PeerCall] = {}

    def join(self, listener: Listener, call_id: str) -> PeerCall:
        call = self.calls.setdefault(call_id, PeerCall(call_id))
        if listener in call.peers:
            listener.deliver(events.PeerJoined(call_id))
            return call
        if len(call.peers) >= 2:
            raise ConferoError(f"the 1-1 call {call_id} already has two peers", definition="streamIdInUse", status=409)
        call.peers.append(listener)
        listener.deliver(events.PeerJoined(call_id))
        if len(call.peers) == 2:
            # The first peer makes the offer.
            call.peers[0].deliver(events.PeerStart(call_id))
        return call

    def leave(self, listener: Listener, call_id: str, *, told: bool = True) -> bool:
        call = self.calls.get(call_id)
        if call is None or listener not in call.peers:
            return False
        call.peers.remove(listener)
        if told:
            listener.deliver(events.PeerLeft(call_id))
        for other in call.peers:
            other.deliver(events.PeerStop(call_id))
        if not call.peers:
            del self.calls[call_id]
        return True

    def relay(self, listener: Listener, call_id: str, payload: str) -> None:
        call = self.calls.get(call_id)
        other = call.other(listener) if call is not None and listener in call.peers else None
        if other is None:
            raise ConferoError(f"no peer in call {call_id}", definition="no_peer_associated_before")
        other.deliver(events.Relay(call_id, payload))

    def member_of(self, listener: Listener, call_id: str) -> bool:
        call = self.calls.get(call_id)
        return call is not None and listener in call.peers

    def dump(self) -> list[dict[str, Any]]:
        return [{"call_id": c.call_id, "peers": len(c.peers)} for c in self.calls.values()]
