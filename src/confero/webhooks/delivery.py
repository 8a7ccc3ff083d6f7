"""Webhooks: one application's events POSTed to its hook URLs, off the media path.

The observer callback (`on_event`) never awaits: it maps the event (`actions.Mapper`), builds each
body at once (so its timestamp is the event's) and puts it on the queue of its URL. Each URL
has one bounded queue and at most one worker task, so the hooks of one URL (hence of one
stream) are sent one at a time, in the order of the events. A full queue drops the new hook:
counted, and logged once per burst. A POST that does not answer 2xx within `timeout` seconds is
retried `webhookRetryCount` times, the first after `webhookRetryDelay` ms, each next one after
twice as long, at most `MAX_RETRY_DELAY` seconds. A receiver that is down or slow therefore holds
up only its own queue, never a join, a publish or a packet.

Bodies are JSON (Ant Media's default) or, with `webhookContentType`
`application/x-www-form-urlencoded`, a form. With `listenerHookSecret` set, every POST carries
`X-Confero-Signature: sha256=<hex HMAC-SHA256 of the exact body bytes>` (Confero's own).
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import hmac
import json
import logging
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import aiohttp

from confero.domain.observer import AppEvent, Observers
from confero.settings import AppSettings
from confero.webhooks.actions import Mapper, Notice, RecordLookup

logger = logging.getLogger(__name__)

SIGNATURE_HEADER = "X-Confero-Signature"
FORM = "application/x-www-form-urlencoded"
#: Hooks waiting per URL before new ones are dropped.
QUEUE_SIZE = 1000
#: Seconds a POST may take (Ant Media: 2 s to connect, 2 s per read).
REQUEST_TIMEOUT = 4.0
#: The longest wait between two attempts, in seconds.
MAX_RETRY_DELAY = 30.0
#: Seconds close() lets the queues drain before it cancels what is left.
DRAIN_DEADLINE = 2.0

#: Sends one POST: (url, body, headers) -> HTTP status; raises on a transport error or timeout.
Sender = Callable[[str, bytes, Mapping[str, str]], Awaitable[int]]
Sleep = Callable[[float], Awaitable[None]]


@dataclass(frozen=True)
class Hook:
    """One POST, ready to send."""

    url: str
    action: str
    stream_id: str
    body: bytes
    headers: dict[str, str]


def encode(fields: Mapping[str, Any], content_type: str) -> bytes:
    """The body in Ant Media's encodings: a JSON object, or a form whose values are text."""
    if content_type == FORM:
        pairs = [(k, v if isinstance(v, str) else json.dumps(v, separators=(",", ":"))) for k, v in fields.items()]
        return urlencode(pairs).encode()
    return json.dumps(fields, separators=(",", ":")).encode()


def signature(secret: str, body: bytes) -> str:
    """The X-Confero-Signature value: `sha256=` and the hex HMAC-SHA256 of the body."""
    return "sha256=" + hmac.new(secret.encode(), body, hashlib.sha256).hexdigest()


def retry_delay(base_ms: int, attempt: int) -> float:
    """Seconds before retry number `attempt` (1, 2, ...): base, 2x base, 4x base, ... capped."""
    return float(min(base_ms / 1000.0 * (2 ** (attempt - 1)), MAX_RETRY_DELAY))


class _Target:
    """The queue and the worker of one URL."""

    def __init__(self, url: str) -> None:
        self.url = url
        self.queue: deque[Hook] = deque()
        self.task: asyncio.Task[None] | None = None
        self.dropping = 0  # hooks dropped in the current burst


class Webhooks:
    """The webhooks of one application: subscribe it to the application's observers."""

    def __init__(
        self,
        app: str,
        settings: Callable[[], AppSettings],
        record_of: RecordLookup,
        *,
        sender: Sender | None = None,
        sleep: Sleep | None = None,
        clock: Callable[[], int] | None = None,
        queue_size: int = QUEUE_SIZE,
        timeout: float = REQUEST_TIMEOUT,
        drain_deadline: float = DRAIN_DEADLINE,
    ) -> None:
        self.app = app
        self.settings = settings
        self.mapper = Mapper(app, record_of)
        self.queue_size = queue_size
        self.timeout = timeout
        self.drain_deadline = drain_deadline
        self._sender: Sender = sender or self._post
        self._sleep: Sleep = sleep or asyncio.sleep
        self._clock = clock or (lambda: time.time_ns() // 1_000_000)
        self._session: aiohttp.ClientSession | None = None
        self._targets: dict[str, _Target] = {}
        self._unsubscribe: Callable[[], None] | None = None
        self.closed = False
        self.accepted = 0  # put on a queue, ever
        self.sent = 0
        self.failed = 0  # given up after the last retry
        self.dropped = 0  # a full queue, or still queued at close
        self.retried = 0

    # -- the observer side: never awaits ---------------------------------------------------------

    def attach(self, observers: Observers) -> None:
        self._unsubscribe = observers.subscribe(self.on_event)

    def on_event(self, event: AppEvent) -> None:
        notices = self.mapper.notices(event, self._clock())
        if not notices:
            return
        settings = self.settings()
        for notice in notices:
            url = notice.hook_url(settings.listenerHookURL)
            if url:
                self._enqueue(self._hook(url, notice, settings))

    def _hook(self, url: str, notice: Notice, settings: AppSettings) -> Hook:
        content_type = settings.webhookContentType
        body = encode(notice.fields, content_type)
        headers = {"Content-Type": content_type}
        if settings.listenerHookSecret:
            headers[SIGNATURE_HEADER] = signature(settings.listenerHookSecret, body)
        return Hook(url, notice.action, str(notice.fields["id"]), body, headers)

    def _enqueue(self, hook: Hook) -> None:
        if self.closed:
            self._drop(None, hook, "closed")
            return
        target = self._targets.get(hook.url)
        if target is None:
            target = self._targets[hook.url] = _Target(hook.url)
        if len(target.queue) >= self.queue_size:
            self._drop(target, hook, "queue full")
            return
        if target.dropping:
            logger.warning("%s: webhook %s: %d hooks were dropped (queue full)", self.app, hook.url, target.dropping)
            target.dropping = 0
        target.queue.append(hook)
        self.accepted += 1
        if target.task is None:
            target.task = asyncio.get_running_loop().create_task(self._work(target), name=f"webhooks {hook.url}")

    def _drop(self, target: _Target | None, hook: Hook, why: str) -> None:
        self.dropped += 1
        if target is None:
            logger.warning(
                "%s: webhook %s %s for %s dropped (%s)", self.app, hook.action, hook.url, hook.stream_id, why
            )
            return
        if not target.dropping:  # once per burst; the count follows when the queue takes hooks again
            logger.warning("%s: webhook %s: queue full (%d), dropping hooks", self.app, hook.url, self.queue_size)
        target.dropping += 1

    # -- the worker side --------------------------------------------------------------------------

    async def _work(self, target: _Target) -> None:
        try:
            while target.queue:
                hook = target.queue[0]
                await self._deliver(hook)
                target.queue.popleft()
        finally:
            target.task = None
            if not target.queue and self._targets.get(target.url) is target:
                del self._targets[target.url]

    async def _deliver(self, hook: Hook) -> None:
        attempt = 0
        while True:
            try:
                status = await self._sender(hook.url, hook.body, hook.headers)
                problem = "" if 200 <= status < 300 else f"status {status}"
            except Exception as exc:  # refused, reset, timed out, a bad URL: all are the receiver's
                problem = f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
            if not problem:
                self.sent += 1
                return
            settings = self.settings()
            if attempt >= settings.webhookRetryCount:
                self.failed += 1
                logger.warning(
                    "%s: webhook %s for %s to %s failed (%s)%s",
                    self.app,
                    hook.action,
                    hook.stream_id,
                    hook.url,
                    problem,
                    f" after {attempt} retries" if attempt else "",
                )
                return
            attempt += 1
            self.retried += 1
            delay = retry_delay(settings.webhookRetryDelay, attempt)
            logger.info(
                "%s: webhook %s to %s: %s, retry %d in %.1f s", self.app, hook.action, hook.url, problem, attempt, delay
            )
            await self._sleep(delay)

    async def _post(self, url: str, body: bytes, headers: Mapping[str, str]) -> int:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=self.timeout))
        async with self._session.post(url, data=body, headers=dict(headers), allow_redirects=False) as response:
            await response.read()
            return response.status

    # -- lifecycle --------------------------------------------------------------------------------

    def pending(self) -> int:
        return sum(len(t.queue) for t in self._targets.values())

    async def close(self) -> None:
        """Idempotent: stop listening, let the queues drain until the deadline, cancel the rest."""
        if self.closed:
            return
        self.closed = True
        if self._unsubscribe is not None:
            self._unsubscribe()
            self._unsubscribe = None
        tasks = [t.task for t in self._targets.values() if t.task is not None]
        if tasks:
            await asyncio.wait(tasks, timeout=self.drain_deadline)
        left = self.pending()
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if left:
            self.dropped += left
            logger.warning("%s: %d webhooks were not sent before shutdown", self.app, left)
        self._targets.clear()
        if self._session is not None:
            await self._session.close()
            self._session = None

    def dump(self) -> dict[str, Any]:
        return {
            "accepted": self.accepted,
            "queued": self.pending(),
            "sent": self.sent,
            "failed": self.failed,
            "dropped": self.dropped,
            "retried": self.retried,
            "targets": {url: len(t.queue) for url, t in self._targets.items()},
            "rooms": self.mapper.dump()["rooms"],
        }
