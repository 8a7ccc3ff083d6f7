"""Router: the media plane's root. Creates Publishers and Subscribers and keeps their clocks.

This is the whole API the domain uses (`domain/media.py` states it as Protocols), with the
Publisher/Subscriber objects it returns: names, track ids and SDP in; values, typed errors and
callbacks out. The Router owns the registry of live published tracks by id, which is how a
Subscriber's source is named. The fan-out itself lives on each UpTrack (its list of
DownTracks) so the per-packet loop is one attribute away; the Router owns the objects, runs
the RTCP housekeeping tick, and proves in `dump()` that nothing outlives its owner.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confero.media.aiortc_hooks import check_versions, ice_patches_installed
from confero.media.peer import OnClosed, OnConnected, OnData, PeerConfig
from confero.media.publisher import Publisher
from confero.media.subscriber import Subscriber
from confero.media.uptrack import TrackRegistry

logger = logging.getLogger(__name__)

TICK = 0.25
PEERS_PER_SLICE = 16  # peers handled between two yields to the event loop


class Router:
    """Owner of every server peer connection and of the registry of live tracks."""

    def __init__(self, config: PeerConfig, codecs: tuple[str, ...]) -> None:
        self.config = config
        self.codecs = codecs  # read when a publisher is created
        self.publishers: set[Publisher] = set()
        self.subscribers: set[Subscriber] = set()
        self.tracks = TrackRegistry()
        self._task: asyncio.Task[None] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self.closed = False

    async def start(self) -> None:
        """Start the housekeeping tick. The process installs aioice's hooks first (`server.serve`)."""
        check_versions()
        if not ice_patches_installed():
            raise RuntimeError("install the ICE hooks first: aiortc_hooks.install_ice_patches() (server.serve does)")
        if self._task is None:
            self._loop = asyncio.get_running_loop()
            self.config.engine.bind_loop(self._loop)
            self._task = self._loop.create_task(self._housekeeping())

    def create_publisher(
        self, name: str, *, on_connected: OnConnected, on_closed: OnClosed, on_data: OnData
    ) -> Publisher:
        """The ingest peer of one stream; `answer()` its client's offer."""
        publisher: Publisher

        def closed(reason: str) -> None:
            self.publishers.discard(publisher)
            on_closed(reason)

        publisher = Publisher(
            self.config,
            name,
            registry=self.tracks,
            codecs=self.codecs,
            on_connected=on_connected,
            on_closed=closed,
            on_data=on_data,
        )
        self.publishers.add(publisher)
        return publisher

    def create_subscriber(
        self, name: str, *, on_connected: OnConnected, on_closed: OnClosed, on_data: OnData
    ) -> Subscriber:
        """The egress peer of one player; `add_source()` then `offer()`."""
        subscriber: Subscriber

        def closed(reason: str) -> None:
            self.subscribers.discard(subscriber)
            on_closed(reason)

        subscriber = Subscriber(
            self.config, name, registry=self.tracks, on_connected=on_connected, on_closed=closed, on_data=on_data
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
            "tracks": sorted(self.tracks),
        }
