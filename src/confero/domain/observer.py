"""What happens in an application, for those who watch it (webhooks, metrics, tests).

Separate from the events addressed to one client (`events.py`): these describe the
application. Observers are called synchronously, in subscription order, right after the state
changed; an observer that raises is logged and does not disturb the others or the caller. An
observer that needs I/O queues the event and does it in its own task.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class StreamStarted:
    app: str
    stream_id: str
    room: str = ""


@dataclass(frozen=True)
class StreamEnded:
    app: str
    stream_id: str
    room: str = ""
    reason: str = ""


@dataclass(frozen=True)
class PublishRefused:
    app: str
    stream_id: str
    reason: str  # the refusal's type name, e.g. "Unauthorized"
    room: str = ""


@dataclass(frozen=True)
class PublishTimedOut:
    """A publish whose peer did not connect within the publish timeout (it ends unstarted)."""

    app: str
    stream_id: str
    room: str = ""


@dataclass(frozen=True)
class PlayStarted:
    app: str
    stream_id: str  # the stream, or the room for a room play
    client_id: str
    room_play: bool = False


@dataclass(frozen=True)
class PlayEnded:
    app: str
    stream_id: str
    client_id: str
    room_play: bool = False
    reason: str = ""


@dataclass(frozen=True)
class PlayRefused:
    app: str
    stream_id: str
    reason: str


@dataclass(frozen=True)
class RoomCreated:
    app: str
    room_id: str


@dataclass(frozen=True)
class RoomEnded:
    app: str
    room_id: str
    reason: str = ""


@dataclass(frozen=True)
class MemberJoined:
    app: str
    room_id: str
    stream_id: str
    client_id: str


@dataclass(frozen=True)
class MemberLeft:
    app: str
    room_id: str
    stream_id: str
    client_id: str
    reason: str = ""


AppEvent = (
    StreamStarted
    | StreamEnded
    | PublishRefused
    | PublishTimedOut
    | PlayStarted
    | PlayEnded
    | PlayRefused
    | RoomCreated
    | RoomEnded
    | MemberJoined
    | MemberLeft
)

Observer = Callable[[AppEvent], None]


class Observers:
    """The observers of one application."""

    def __init__(self) -> None:
        self._observers: list[Observer] = []
        self.failures = 0

    def subscribe(self, observer: Observer) -> Callable[[], None]:
        """Add `observer`; returns the function that removes it again."""
        self._observers.append(observer)

        def unsubscribe() -> None:
            if observer in self._observers:
                self._observers.remove(observer)

        return unsubscribe

    def emit(self, event: AppEvent) -> None:
        for observer in list(self._observers):
            try:
                observer(event)
            except Exception:
                self.failures += 1
                logger.exception("observer %r failed on %r", observer, event)

    def __len__(self) -> int:
        return len(self._observers)
