"""Router: the media plane's root. Creates Publishers and Subscribers and keeps their clocks.

This is the whole API the domain uses (with the Publisher/Subscriber objects it returns):
plain arguments in, callbacks out. The fan-out itself lives on each UpTrack (its list of
DownTracks) so the per-packet loop is one attribute away; the Router owns the objects, runs
the RTCP housekeeping tick, and proves in `dump()` that nothing outlives its owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from typing import Any

from confero.media import aiortc_hooks
from confero.media.downtrack import DownTrack
from confero.media.peer import Peer, PeerConfig
from confero.media.publisher import Publisher
from confero.media.subscriber import Subscriber

logger = logging.getLogger(__name__)

TICK = 0.25
PEERS_PER_SLICE = 16  # peers handled between two yields to the event loop


class Router:
    """Owner of every server peer connection."""

    def __init__(self, config: PeerConfig, codecs: tuple[str, ...]) -> None:
        self.config = config
        self.codecs = codecs
        self.publishers: set[Publisher] = set()
        self.subscribers: set[Subscriber] = set()
        self._task: asyncio.Task[None] | None = None
        self._closing: set[asyncio.Task[None]] = set()
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    async def start(self) -> None:
        aiortc_hooks.check_versions()
        aiortc_hooks.install_ice_patches()
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self.config.engine.bind_loop(self._loop)
            self._task = self._loop.create_task(self._housekeeping())

    def create_publisher(
        self,
        name: str,
        *,
        on_closed: Callable[[Peer, str], None] | None = None,
        on_connected: Callable[[Peer], None] | None = None,
        on_data: Callable[[Peer, str | bytes], None] | None = None,
    ) -> Publisher:
        def closed(peer: Peer, reason: str) -> None:
            self.publishers.discard(peer)  # type: ignore[arg-type]
            if on_closed is not None:
                on_closed(peer, reason)

        publisher = Publisher(
            self.config, name, codecs=self.codecs, on_closed=closed, on_connected=on_connected, on_data=on_data
        )
        self.publishers.add(publisher)
        return publisher

    def create_subscriber(
        self,
        name: str,
        *,
        on_closed: Callable[[Peer, str], None] | None = None,
        on_connected: Callable[[Peer], None] | None = None,
        on_source_closed: Callable[[DownTrack], None] | None = None,
        on_data: Callable[[Peer, str | bytes], None] | None = None,
    ) -> Subscriber:
        def closed(peer: Peer, reason: str) -> None:
            self.subscribers.discard(peer)  # type: ignore[arg-type]
            if on_closed is not None:
                on_closed(peer, reason)

        subscriber = Subscriber(
            self.config,
            name,
            on_closed=closed,
            on_connected=on_connected,
            on_source_closed=on_source_closed,
            on_data=on_data,
        )
        self.subscribers.add(subscriber)
        return subscriber

    async def _housekeeping(self) -> None:
        while True:
            await asyncio.sleep(TICK)
            now = time.monotonic()
            # A few peers at a time, yielding in between: with hundreds of peers one pass takes
            # milliseconds, and forwarding must not wait for all of it (p99 latency).
            for i, publisher in enumerate(list(self.publishers)):
                if i and i % PEERS_PER_SLICE == 0:
                    await asyncio.sleep(0)
                if publisher.closed:
                    continue
                try:
                    publisher.tick(now)
                    for uptrack in publisher.uptracks:
                        if uptrack.pending:
                            uptrack.request_keyframe()
                except Exception:
                    logger.exception("publisher %s: housekeeping failed", publisher.name)
            for i, subscriber in enumerate(list(self.subscribers)):
                if i and i % PEERS_PER_SLICE == 0:
                    await asyncio.sleep(0)
                if subscriber.closed:
                    continue
                try:
                    subscriber.tick(now)
                except Exception:
                    logger.exception("subscriber %s: housekeeping failed", subscriber.name)

    async def close(self) -> None:
        """Idempotent: subscribers first, then publishers, then the clock."""
        if self.closed:
            return
        self.closed = True
        await asyncio.gather(*(s.close("shutdown") for s in list(self.subscribers)), return_exceptions=True)
        await asyncio.gather(*(p.close("shutdown") for p in list(self.publishers)), return_exceptions=True)
        if self._loop is not None:
            self.config.engine.unbind_loop(self._loop)  # flushes what is queued
            self._loop = None
        if self._task is not None:
            self._task.cancel()
            try:
                await self._task
            except asyncio.CancelledError:
                pass
            self._task = None

    def dump(self) -> dict[str, Any]:
        return {
            "publishers": [p.dump() for p in self.publishers],
            "subscribers": [s.dump() for s in self.subscribers],
        }
