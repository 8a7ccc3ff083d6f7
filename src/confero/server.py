"""Composition root: builds the store, media Router, Applications and the HTTP app; runs them.

Start-up order: store, router, applications, HTTP. Shut-down runs the other way: every client
is told the server will stop (`server_will_stop`, on which the SDK reconnects), then its streams
ended (`publish_finished` / `play_finished`), then peers close, then the HTTP server, then the
store is flushed. A drain (`Server.drain()`, SIGTERM) puts a wait between the first step and the
others: nothing new is taken (a new WebSocket is a 503, a new publish/play/joinRoom/join the
error `server_will_stop`) while what runs goes on, until it has all ended or `drain_timeout`
has passed. `Server` changes no process-wide state; `serve()`, the process's entry, installs the
media hooks, tunes the garbage collector, drains on SIGTERM (SIGINT, or a second signal, closes
at once) and reloads the TLS certificate on SIGHUP.

With `tls_cert` set, one aiohttp application is served by two sites: plain HTTP on `port` and
HTTPS/WSS on `tls_port`, so pages, REST and WebSocket answer on both.
"""

from __future__ import annotations

import asyncio
import gc
import logging
import signal
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from aiohttp import web

from confero.api.guards import forwarded_headers, https_redirect, rest_guard
from confero.api.pages import add_page_routes
from confero.api.routes import APPLICATIONS, add_routes, refusal_response
from confero.auth.turn import TurnServers
from confero.domain.application import Application
from confero.media import IcePolicy, IceServer, PeerConfig, Router, aiortc_hooks, fanout
from confero.settings import Settings
from confero.signaling import wire
from confero.signaling.circle import CircleSession
from confero.signaling.endpoint import circle_handler, websocket_handler
from confero.signaling.session import SignalingSession
from confero.store import SqliteStore, Store, StreamRecord
from confero.tls import ServerTLS
from confero.webhooks import Webhooks

logger = logging.getLogger(__name__)

#: Seconds between two looks at what still runs while draining.
DRAIN_POLL = 0.1

#: Generation thresholds for the garbage collector (CPython's default is 700, 10, 10).
GC_THRESHOLDS = (50_000, 20, 20)

CODEC_MIME = {"vp8": "video/VP8", "h264": "video/H264", "opus": "audio/opus"}


def codec_mimes(names: list[str]) -> tuple[str, ...]:
    out = []
    for name in names:
        mime = CODEC_MIME.get(name.lower())
        if mime is None:
            raise ValueError(f"codecs: {name!r} is not one of VP8, H264, opus")
        out.append(mime)
    return tuple(out)


def server_ice_servers(settings: Settings) -> Callable[[], tuple[IceServer, ...]]:
    """The STUN/TURN servers of the server's own peers: `server_ice_servers`, the TURN ones with
    credentials issued from `turn_secret` when each peer is made (they expire)."""
    stun = tuple(u for u in settings.server_ice_servers if u.startswith("stun"))
    turn = TurnServers(
        tuple(u for u in settings.server_ice_servers if u.startswith("turn")), settings.turn_secret, settings.turn_ttl
    )

    def servers() -> tuple[IceServer, ...]:
        out = [IceServer(stun)] if stun else []
        if turn.urls:
            issued = turn.issue("confero-server")
            out.append(IceServer(issued.urls, issued.username, issued.credential))
        return tuple(out)

    return servers


class Server:
    """One Confero node."""

    def __init__(self, settings: Settings, store: Store | None = None) -> None:
        self.settings = settings
        self.store: Store = store or SqliteStore(Path(settings.data_dir) / "confero.db")
        addresses = tuple(settings.ice_addresses) or None
        #: coturn's REST credentials for clients (getIceServerConfig), None without turn_urls.
        self.turn = (
            TurnServers(tuple(settings.turn_urls), settings.turn_secret, settings.turn_ttl)
            if settings.turn_urls
            else None
        )
        self.router = Router(
            PeerConfig(
                ice=IcePolicy(
                    addresses=addresses,
                    port_range=settings.port_range(),
                    consent_interval=settings.ice_consent_interval,
                    consent_failures=settings.ice_consent_failures,
                ),
                media_timeout=settings.media_timeout,
                announced_address=settings.announced_address or None,
                ice_servers=server_ice_servers(settings),
                max_bitrate=settings.max_bitrate,
                engine=fanout.select(settings.compiled_fanout),
            ),
            codec_mimes(settings.codecs),
        )
        self.applications = {
            name: Application(name, settings, self.store, self.router, encode_data=wire.data_message)
            for name in settings.applications
        }
        self.webhooks = {name: self._webhooks(app) for name, app in self.applications.items()}
        self.sessions: set[SignalingSession] = set()
        self.circle_sessions: set[CircleSession] = set()
        self.tls = ServerTLS(settings.tls_cert, settings.tls_key) if settings.tls_cert else None
        middlewares = []
        trusted = settings.trusted_networks()
        if trusted:
            middlewares.append(forwarded_headers(trusted))
        if self.tls is not None and settings.tls_redirect:
            middlewares.append(https_redirect(lambda: self.tls_port))
        middlewares.append(rest_guard(self.applications, refusal_response))
        self.web = web.Application(client_max_size=1 << 20, middlewares=middlewares)
        self.web[APPLICATIONS] = self.applications
        heartbeat = settings.ws_heartbeat
        self.web.router.add_get(
            "/{app}/websocket", websocket_handler(self.applications, self.sessions, self.turn, heartbeat=heartbeat)
        )
        self.web.router.add_get(
            "/{app}/websocket/application",
            circle_handler(self.applications, self.circle_sessions, heartbeat=heartbeat),
        )
        add_routes(self.web.router)
        add_page_routes(self.web.router, self.applications)
        self._runner: web.AppRunner | None = None
        self.port = settings.port
        self.tls_port = settings.tls_port
        self.closed = False
        self.draining = False
        self._cut = asyncio.Event()  # set: the drain ends now (a second signal)
        self._drained = asyncio.Event()  # set once a drain has ended (the server is closed)
        self._drain_outcome = ""

    @staticmethod
    def _webhooks(app: Application) -> Webhooks:
        def record_of(stream_id: str) -> StreamRecord | None:
            stream = app.streams.get(stream_id)
            return stream.record if stream is not None else None

        hooks = Webhooks(app.name, lambda: app.app_settings, record_of)
        hooks.attach(app.observers)
        return hooks

    async def start(self) -> None:
        for name in self.applications:
            await self.store.mark_all_finished(name)
        await self.router.start()
        self._runner = web.AppRunner(self.web, handle_signals=False, access_log=None, shutdown_timeout=2.0)
        await self._runner.setup()
        site = web.TCPSite(self._runner, self.settings.host, self.settings.port)
        await site.start()
        addresses = self._runner.addresses
        if addresses:
            self.port = int(addresses[0][1])
        if self.tls is not None:
            plain = len(addresses)
            tls_site = web.TCPSite(
                self._runner, self.settings.host, self.settings.tls_port, ssl_context=self.tls.context
            )
            await tls_site.start()
            tls_addresses = self._runner.addresses[plain:]
            if tls_addresses:
                self.tls_port = int(tls_addresses[0][1])
        logger.info(
            "confero listening on %s:%d%s, applications %s, %s fan-out",
            self.settings.host,
            self.port,
            f" and TLS {self.tls_port}" if self.tls is not None else "",
            ", ".join(self.applications),
            self.router.config.engine.name,
        )

    def reload_tls(self) -> bool:
        """Load the certificate files again (SIGHUP): new handshakes get them, open connections stay.
        False when TLS is off or the files could not be loaded (the current certificate is kept)."""
        if self.tls is None:
            logger.info("TLS is off: nothing to reload")
            return False
        return self.tls.reload()

    def active_sessions(self) -> int:
        """The publishes, plays, room memberships and 1-1 calls that run, in every application."""
        return sum(app.active_sessions() for app in self.applications.values())

    async def drain(self, grace: float | None = None) -> str:
        """Stop taking anything new, let what runs go on for at most `grace` seconds
        (`drain_timeout` by default), then close. Every client is told `server_will_stop` first.

        Returns how it ended: "drained" (nothing ran any more), "deadline", "cut" (`cut_drain()`)
        or "closed" (the server was closed already). A second call waits for the first one and
        returns the same; after a cancelled drain ("cancelled") the server stays stopping until
        `close()`."""
        if self.draining:
            await self._drained.wait()
            return self._drain_outcome
        if self.closed:
            return "closed"
        self.draining = True
        grace = self.settings.drain_timeout if grace is None else grace
        for application in self.applications.values():
            application.stopping()
        self._drain_outcome = "cancelled"  # until it ends otherwise
        try:
            self._drain_outcome = await self._drain(grace)
        finally:
            self._drained.set()
        return self._drain_outcome

    async def _drain(self, grace: float) -> str:
        started = time.monotonic()
        running = self.active_sessions()
        logger.info("draining: %s running; closing when they end, in %g s at most", _sessions_text(running), grace)
        outcome = "drained"
        while running:
            left = started + grace - time.monotonic()
            if left <= 0:
                outcome = "deadline"
                break
            try:
                await asyncio.wait_for(self._cut.wait(), min(DRAIN_POLL, left))
            except TimeoutError:
                running = self.active_sessions()
            else:
                outcome = "cut"
                break
        elapsed = time.monotonic() - started
        if outcome == "drained":
            logger.info("drained: every session ended after %.1f s; closing", elapsed)
        elif outcome == "deadline":
            logger.info("drain deadline reached after %.1f s: closing %s", elapsed, _sessions_text(running))
        else:
            logger.info("drain cut short after %.1f s: closing %s at once", elapsed, _sessions_text(running))
        await self.close()
        return outcome

    def cut_drain(self) -> None:
        """End a drain now (what still runs is closed); before a drain, `drain()` closes at once."""
        self._cut.set()

    async def close(self) -> None:
        """Idempotent, children first: sessions, applications, webhooks, router, HTTP, store."""
        if self.closed:
            return
        self.closed = True
        for application in self.applications.values():
            application.stopping()  # `server_will_stop` to every client, before any stream ends
        await asyncio.gather(*(s.close() for s in list(self.sessions)), return_exceptions=True)
        await asyncio.gather(*(s.close() for s in list(self.circle_sessions)), return_exceptions=True)
        await asyncio.gather(*(a.close() for a in self.applications.values()), return_exceptions=True)
        # After the applications, so the hooks of the streams they ended are sent (until a deadline).
        await asyncio.gather(*(w.close() for w in self.webhooks.values()), return_exceptions=True)
        await self.router.close()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        for name in self.applications:
            await self.store.mark_all_finished(name)
        await self.store.flush()
        await self.store.close()
        if self.tls is not None:
            self.tls.close()

    def dump(self) -> dict[str, Any]:
        return {
            "sessions": [s.dump() for s in self.sessions] + [s.dump() for s in self.circle_sessions],
            "applications": {n: a.dump() for n, a in self.applications.items()},
            "router": self.router.dump(),
            "webhooks": {n: w.dump() for n, w in self.webhooks.items()},
            "tls": self.tls.dump() if self.tls is not None else None,
        }


def _sessions_text(count: int) -> str:
    return f"{count} session" if count == 1 else f"{count} sessions"


def tune_garbage_collector() -> None:
    """Everything made during start-up lives as long as the process: keep it out of every future
    collection, and collect less often so that fewer short-lived objects reach the old generation,
    whose full collections stalled the event loop while peers joined (see BENCHMARKS.md)."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


async def serve(settings: Settings, ready: asyncio.Event | None = None) -> None:
    """Run until SIGTERM (drain, then shut down) or SIGINT (shut down at once); a signal during
    the drain ends it at once."""
    stop = asyncio.Event()
    at_once = asyncio.Event()
    server: Server | None = None

    def on_signal(sig: signal.Signals) -> None:
        if stop.is_set() or sig == signal.SIGINT:
            at_once.set()
            if server is not None:
                server.cut_drain()
        stop.set()

    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, on_signal, sig)
    aiortc_hooks.check_versions()
    aiortc_hooks.install_ice_patches()
    server = Server(settings)
    if at_once.is_set():
        server.cut_drain()
    hangup = getattr(signal, "SIGHUP", None)  # none on Windows
    if hangup is not None:
        loop.add_signal_handler(hangup, server.reload_tls)
    try:
        await server.start()
        tune_garbage_collector()
        if ready is not None:
            ready.set()
        await stop.wait()
        if at_once.is_set() or settings.drain_timeout <= 0:
            logger.info("shutting down")
        else:
            await server.drain(settings.drain_timeout)
    finally:
        await server.close()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.remove_signal_handler(sig)
        if hangup is not None:
            loop.remove_signal_handler(hangup)


def run(settings: Settings) -> None:
    try:
        import uvloop
    except ImportError:  # pragma: no cover - uvloop is a dependency except on Windows
        asyncio.run(serve(settings))
    else:
        uvloop.run(serve(settings))
