"""PeerCalls: 1-1 calls. The server pairs two clients and relays their signaling; media flows
directly between them and never touches the server.

`join` twice with the same id pairs two clients: the first hears `start` and makes the offer.
Offers, answers, candidates and peer messages are relayed to the other client unchanged.
`leave` (or a closed socket) tells the other client `stop`; it stays joined for a new partner.
PeerCalls is the one record of who is in which call; clients are compared by id.
"""

from __future__ import annotations

from typing import Protocol

from confero.domain import events
from confero.errors import CallFull, NoPeer


class CallParty(Protocol):
    @property
    def client_id(self) -> str: ...

    def deliver(self, event: events.Event) -> None: ...


class PeerCall:
    """The (at most two) clients of one call id."""

    def __init__(self, call_id: str) -> None:
        self.call_id = call_id
        self.peers: list[CallParty] = []

    def has(self, client_id: str) -> bool:
        return any(p.client_id == client_id for p in self.peers)

    def other(self, client_id: str) -> CallParty | None:
        return next((p for p in self.peers if p.client_id != client_id), None)


class PeerCalls:
    """Every 1-1 call of an application."""

    def __init__(self) -> None:
        self.calls: dict[str, PeerCall] = {}

    def join(self, client: CallParty, call_id: str) -> PeerCall:
        call = self.calls.setdefault(call_id, PeerCall(call_id))
        if call.has(client.client_id):
            client.deliver(events.PeerJoined(call_id))
            return call
        if len(call.peers) >= 2:
            raise CallFull(f"the 1-1 call {call_id} already has two peers")
        call.peers.append(client)
        client.deliver(events.PeerJoined(call_id))
        if len(call.peers) == 2:
            # The first peer makes the offer.
            call.peers[0].deliver(events.PeerStart(call_id))
        return call

    def leave(self, client: CallParty, call_id: str, *, told: bool = True) -> bool:
        call = self.calls.get(call_id)
        if call is None or not call.has(client.client_id):
            return False
        call.peers = [p for p in call.peers if p.client_id != client.client_id]
        if told:
            client.deliver(events.PeerLeft(call_id))
        for other in call.peers:
            other.deliver(events.PeerStop(call_id))
        if not call.peers:
            del self.calls[call_id]
        return True

    def leave_all(self, client: CallParty) -> None:
        """A client went away: its partners hear `stop`; it is told nothing."""
        for call_id in self.of(client.client_id):
            self.leave(client, call_id, told=False)

    def relay(self, client: CallParty, call_id: str, payload: str) -> None:
        call = self.calls.get(call_id)
        other = call.other(client.client_id) if call is not None and call.has(client.client_id) else None
        if other is None:
            raise NoPeer(f"no peer in call {call_id}")
        other.deliver(events.Relay(call_id, payload))

    def member_of(self, client_id: str, call_id: str) -> bool:
        call = self.calls.get(call_id)
        return call is not None and call.has(client_id)

    def of(self, client_id: str) -> list[str]:
        return [c.call_id for c in self.calls.values() if c.has(client_id)]

    def dump(self) -> list[dict[str, object]]:
        return [{"call_id": c.call_id, "peers": len(c.peers)} for c in self.calls.values()]
