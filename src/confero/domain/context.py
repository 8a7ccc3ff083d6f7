"""What every part of an application shares: its name, settings, media plane, observers, tasks.

Handed to Streams, Rooms, Clients and their children instead of a pointer to the Application,
so that each can be built and tested alone (with a fake media plane) and none can call back up.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Coroutine
from dataclasses import dataclass, field
from typing import Any

from confero.domain import events
from confero.domain.media import MediaPlane
from confero.domain.observer import Observers
from confero.settings import AppSettings
from confero.store import Store

logger = logging.getLogger(__name__)


class Tasks:
    """The background tasks of one application: kept alive until done, awaited or cancelled on close."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    def spawn(self, coro: Coroutine[Any, Any, Any]) -> asyncio.Task[Any]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: background task failed", self.name, exc_info=task.exception())

    async def close(self, grace: float = 5.0) -> None:
        """Let running tasks finish (each ends what it started), cancel what is left after `grace` seconds."""
        self.closed = True
        deadline = asyncio.get_running_loop().time() + grace
        while self._tasks:
            remaining = deadline - asyncio.get_running_loop().time()
            if remaining <= 0:
                for task in list(self._tasks):
                    task.cancel()
                await asyncio.gather(*list(self._tasks), return_exceptions=True)
                break
            await asyncio.wait(list(self._tasks), timeout=remaining)

    def __len__(self) -> int:
        return len(self._tasks)


@dataclass
class Context:
    """One application's shared services."""

    app: str
    settings: Callable[[], AppSettings]
    store: Store
    media: MediaPlane
    publish_timeout: Callable[[], float] = lambda: 20.0  # seconds a peer may take to connect
    observers: Observers = field(default_factory=Observers)
    #: How a server event for a data channel is written (the transport's; None: not sent)
    encode_data: Callable[[events.DataEvent], str] | None = None
    tasks: Tasks = field(init=False)

    def __post_init__(self) -> None:
        self.tasks = Tasks(self.app)
