"""A user-space UDP relay between a client and a server, for what this kernel cannot do
(no netem): it drops or delays datagrams, and it can move the client to a new address.

The client is told the relay's address instead of the server's (see `rewrite`); the relay
forwards what it gets to the server from its own "outside" socket, and the server's answers
back to the client. `rebind()` replaces the outside socket, so the server sees the client's
traffic come from a new address and port from then on, as when a phone moves from Wi-Fi to
mobile data or a NAT rebinds.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Callable
from typing import Any

Addr = tuple[str, int]


class _Side(asyncio.DatagramProtocol):
    def __init__(self, on_datagram: Callable[[bytes, Addr], None]) -> None:
        self.on_datagram = on_datagram
        self.transport: asyncio.DatagramTransport | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport  # type: ignore[assignment]

    def datagram_received(self, data: bytes, addr: Any) -> None:
        self.on_datagram(data, (addr[0], addr[1]))


class UdpRelay:
    """Relay between one client and `target` on 127.0.0.1. `loss` drops that share of the
    datagrams each way (seeded); `blocked` drops everything while set."""

    def __init__(self, target: Addr, *, loss: float = 0.0, seed: int = 0) -> None:
        self.target = target
        self.loss = loss
        self.blocked = False
        self.random = random.Random(seed)
        self.client: Addr | None = None
        self.forwarded = 0
        self.dropped = 0
        self.rebinds = 0
        self._inside: _Side | None = None
        self._outside: _Side | None = None

    async def start(self) -> UdpRelay:
        loop = asyncio.get_running_loop()
        _, self._inside = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_client), local_addr=("127.0.0.1", 0)
        )
        await self._open_outside()
        return self

    async def _open_outside(self) -> None:
        loop = asyncio.get_running_loop()
        _, self._outside = await loop.create_datagram_endpoint(
            lambda: _Side(self._from_server), local_addr=("127.0.0.1", 0)
        )

    @property
    def address(self) -> Addr:
        """Where the client sends (the relay's inside socket)."""
        assert self._inside is not None and self._inside.transport is not None
        host, port = self._inside.transport.get_extra_info("sockname")[:2]
        return host, port

    @property
    def outside(self) -> Addr:
        """The client's address as the server sees it."""
        assert self._outside is not None and self._outside.transport is not None
        host, port = self._outside.transport.get_extra_info("sockname")[:2]
        return host, port

    async def rebind(self) -> None:
        """From now on the server sees the client at a new address (the old one is gone)."""
        old = self._outside
        await self._open_outside()
        if old is not None and old.transport is not None:
            old.transport.close()
        self.rebinds += 1

    def _drop(self) -> bool:
        if self.blocked or (self.loss and self.random.random() < self.loss):
            self.dropped += 1
            return True
        return False

    def _from_client(self, data: bytes, addr: Addr) -> None:
        self.client = addr
        if self._drop() or self._outside is None or self._outside.transport is None:
            return
        self._outside.transport.sendto(data, self.target)
        self.forwarded += 1

    def _from_server(self, data: bytes, addr: Addr) -> None:
        if addr != self.target or self.client is None or self._drop():
            return
        if self._inside is not None and self._inside.transport is not None:
            self._inside.transport.sendto(data, self.client)
            self.forwarded += 1

    def close(self) -> None:
        for side in (self._inside, self._outside):
            if side is not None and side.transport is not None:
                side.transport.close()
        self._inside = self._outside = None


class Relays:
    """The network between one client and the server: one relay per server address the client
    is told about (made as the addresses appear), all sharing one outside address.

    `rewrite` (for the server's SDP and candidates) points the client at its relays;
    `rewrite_local` (for the client's own SDP) gives the server the outside address instead of
    the client's, as a server-reflexive candidate behind a NAT would.
    """

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.by_target: dict[Addr, UdpRelay] = {}
        self._first: UdpRelay | None = None

    async def start(self) -> Relays:
        """Open the first relay now (its target comes with the server's first candidate)."""
        self._first = await UdpRelay(("0.0.0.0", 0), **self.options).start()
        return self

    @property
    def outside(self) -> Addr:
        assert self._first is not None, "start() first"
        return self._first.outside

    async def rewrite(self, text: str) -> str:
        """`text` (an SDP or a candidate line) with every UDP host candidate's address replaced
        by its relay's."""
        return self._replace(text, await self._relay_for_each(text))

    def rewrite_local(self, sdp: str) -> str:
        """The client's SDP with its UDP candidates' address replaced by the outside address."""
        return self._replace(sdp, lambda host, port: self.outside)

    async def _relay_for_each(self, text: str) -> Callable[[str, int], Addr]:
        for host, port in _candidates(text):
            if (host, port) not in self.by_target:
                first = self._first
                if first is not None and first.target == ("0.0.0.0", 0):
                    first.target = (host, port)
                    self.by_target[(host, port)] = first
                else:
                    self.by_target[(host, port)] = await UdpRelay((host, port), **self.options).start()
        return lambda host, port: self.by_target[(host, port)].address

    @staticmethod
    def _replace(text: str, where: Callable[[str, int], Addr]) -> str:
        words = text.split(" ")
        for i in _candidate_indexes(words):
            host, port = where(words[i], int(words[i + 1]))
            words[i], words[i + 1] = host, str(port)
        return " ".join(words)

    async def rebind(self) -> None:
        for relay in self.by_target.values():
            await relay.rebind()

    def close(self) -> None:
        for relay in {id(r): r for r in [*self.by_target.values(), *([self._first] if self._first else [])]}.values():
            relay.close()
        self.by_target.clear()
        self._first = None


def _candidate_indexes(words: list[str]) -> list[int]:
    """Indexes of the address in each `candidate:FOUNDATION COMPONENT udp PRIORITY HOST PORT typ`."""
    return [i + 2 for i in range(len(words) - 4) if words[i].lower() == "udp" and words[i + 4] == "typ"]


def _candidates(text: str) -> list[Addr]:
    words = text.split(" ")
    return [(words[i], int(words[i + 1])) for i in _candidate_indexes(words)]


def without_candidates(sdp: str) -> str:
    """`sdp` without its candidate lines: the far end learns this peer's address only from
    the packets it receives (peer-reflexive), as when the peer sits behind a NAT."""
    return "".join(line for line in sdp.splitlines(keepends=True) if not line.startswith("a=candidate:"))
