"""Application: one Ant Media application namespace (WebRTCAppEE, LiveApp, ...).

The façade that signaling and REST call: publish, play, stop and stream records. It owns the
live Streams of its namespace and writes their records to the store.
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from confero.domain import events
from confero.domain.events import Listener
from confero.domain.ids import check_stream_id, new_stream_id
from confero.domain.stream import Playback, Publication, Stream
from confero.errors import BadRequest, Conflict, ConferoError, NotFound
from confero.media import Router
from confero.settings import AppSettings, Settings
from confero.store import Store, StreamRecord

logger = logging.getLogger(__name__)


def now_ms() -> int:
    return int(time.time() * 1000)


class Application:
    """Streams, players and records of one application."""

    def __init__(self, name: str, settings: Settings, store: Store, router: Router) -> None:
        self.name = name
        self.settings = settings
        self.store = store
        self.router = router
        self.streams: dict[str, Stream] = {}
        self._tasks: set[asyncio.Task[Any]] = set()
        self.closed = False

    @property
    def app_settings(self) -> AppSettings:
        return self.settings.app(self.name)

    def track_task(self, task: asyncio.Task[Any]) -> None:
        """Keep a background task alive until done, and cancellable on close()."""
        self._tasks.add(task)
        task.add_done_callback(self._task_done)

    def _task_done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled() and task.exception() is not None:
            logger.error("%s: background task failed", self.name, exc_info=task.exception())

    # -- publish ---------------------------------------------------------------------------

    async def publish(self, listener: Listener, stream_id: str, *, name: str = "", room: str = "") -> Publication:
        """Reserve `stream_id` for `listener`; the client's offer follows."""
        check_stream_id(stream_id)
        if self.closed:
            raise ConferoError("the server is shutting down", definition="server_will_stop")
        if stream_id in self.streams:
            raise Conflict(f"stream {stream_id} is already publishing", definition="streamIdInUse")
        record = await self.store.get_stream(self.name, stream_id)
        if record is not None and record.status in ("broadcasting", "preparing"):
            # A record left live by a crash: nobody is publishing it in this process.
            record.status = "finished"
        if record is None and self.app_settings.acceptOnlyStreamsInDataStore:
            raise BadRequest("stream is not registered", definition="not_allowed_unregistered_streams")
        stream = Stream(self, stream_id, room=room, zombi=record is None or record.zombi)
        stream.publication = Publication(stream, listener)
        self.streams[stream_id] = stream
        if record is None:
            record = StreamRecord(stream_id=stream_id, name=name or stream_id, zombi=True, date=now_ms())
        record.status = "preparing"
        record.remote_ip = listener.remote
        record.update_time = now_ms()
        await self.store.save_stream(self.name, record)
        return stream.publication

    async def stream_started(self, stream: Stream) -> None:
        record = await self.store.get_stream(self.name, stream.stream_id)
        if record is None or stream.closed:
            return
        record.status = "broadcasting"
        record.start_time = record.update_time = now_ms()
        record.absolute_start_time_ms = record.start_time
        await self.store.save_stream(self.name, record)

    async def stream_finished(self, stream: Stream) -> None:
        if self.streams.get(stream.stream_id) is stream:
            del self.streams[stream.stream_id]
        record = await self.store.get_stream(self.name, stream.stream_id)
        if record is None:
            return
        if record.zombi:
            await self.store.delete_stream(self.name, stream.stream_id)
            return
        record.status = "finished"
        record.update_time = now_ms()
        if record.start_time:
            record.duration = record.update_time - record.start_time
        record.webrtc_viewer_count = 0
        await self.store.save_stream(self.name, record)

    # -- play ------------------------------------------------------------------------------

    def live_stream(self, stream_id: str) -> Stream:
        check_stream_id(stream_id)
        stream = self.streams.get(stream_id)
        publication = stream.publication if stream else None
        if stream is None or publication is None or not publication.started or publication.publisher is None:
            raise NotFound(f"stream {stream_id} is not streaming", definition="no_stream_exist")
        return stream

    async def play(self, listener: Listener, stream_id: str) -> Playback:
        stream = self.live_stream(stream_id)
        playback = Playback(stream, listener)
        stream.playbacks.add(playback)
        try:
            await playback.offer()
        except BaseException:
            await playback.close("error")
            raise
        return playback

    # -- REST ------------------------------------------------------------------------------

    async def stop_stream(self, stream_id: str) -> bool:
        """Stop a live stream from outside (REST delete): players and publisher are told."""
        stream = self.streams.get(stream_id)
        if stream is None:
            return False
        await stream.close("deleted")
        return True

    async def create_stream(self, record: StreamRecord) -> StreamRecord:
        if record.stream_id:
            check_stream_id(record.stream_id)
            if await self.store.get_stream(self.name, record.stream_id) is not None or record.stream_id in self.streams:
                raise Conflict("Stream id is already being used. Please change stream id or keep it empty", status=400)
        else:
            record.stream_id = new_stream_id()
        record.status = "created"
        record.date = now_ms()
        record.zombi = False
        await self.store.save_stream(self.name, record)
        return record

    async def stream_record(self, stream_id: str) -> StreamRecord | None:
        return await self.store.get_stream(self.name, stream_id)

    async def stream_records(self, offset: int, size: int) -> list[StreamRecord]:
        return await self.store.list_streams(self.name, offset, min(size, 50))

    async def save_stream_record(self, record: StreamRecord) -> None:
        record.update_time = now_ms()
        await self.store.save_stream(self.name, record)

    async def delete_stream(self, stream_id: str) -> bool:
        """Delete a stream's record; a live stream is stopped first (its clients are told)."""
        stopped = await self.stop_stream(stream_id)
        deleted = await self.store.delete_stream(self.name, stream_id)
        return stopped or deleted

    def viewer_count(self, stream_id: str) -> int:
        stream = self.streams.get(stream_id)
        return len(stream.playbacks) if stream else 0

    # -- lifecycle -------------------------------------------------------------------------

    async def close(self) -> None:
        """Idempotent: end every stream (players and publishers are told), then tasks."""
        if self.closed:
            return
        self.closed = True
        await asyncio.gather(*(s.close("shutdown") for s in list(self.streams.values())), return_exceptions=True)
        if self._tasks:
            await asyncio.gather(*list(self._tasks), return_exceptions=True)

    def dump(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "streams": [s.dump() for s in self.streams.values()],
            "tasks": len(self._tasks),
        }


__all__ = ["Application", "events"]
