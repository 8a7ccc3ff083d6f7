"""Test-side Ant Media Server (AMS) client for exercising Confero.

This module is *test infrastructure*: it plays the role of the AMS JavaScript SDK
(``@antmedia/webrtc_adaptor`` 2.16.2) so that integration tests can drive a real
Confero server over its WebSocket signaling protocol (``docs/protocol.md``) with
real aiortc peers that send and receive real media over 127.0.0.1. The load
generators of ``bench/`` use the same signaling clients (with their own media).

Building blocks (usable without a server, see ``tests/unit/test_amsclient_selftest.py``):

* :func:`loopback_only` / :func:`force_loopback_ice` -- make aioice gather only
  ``127.0.0.1`` host candidates.
* :func:`new_peer_connection`, :func:`wait_for_connected` -- pc helpers
  (never any STUN/TURN server, so no traffic leaves the host).
* :class:`SyntheticVideoTrack`, :class:`SineAudioTrack` -- cheap media sources.
* :func:`build_publisher_pc` -- a send-only pc with the codec forced (VP8/H264).
* :class:`MediaCounter` -- consumes remote tracks and counts decoded frames.
* :class:`DecodeErrorCounter` -- counts aiortc "failed to decode" warnings of one pc.
* :class:`LossInjector` -- drops a fraction of incoming video RTP packets.

Signaling clients:

* :class:`AmsSocket` -- JSON WebSocket client with a background reader.
* :class:`Publisher` -- the SDK's ``publish`` flow (section 3.1).
* :class:`Player` -- the SDK's ``play`` flow (section 3.2), including re-offers.
* :class:`PeerClient` -- the SDK's ``join`` flow of a 1-1 call (section 3.5).

Every wait here is bounded and polls a condition (:func:`tests.support.eventually`).
"""

from __future__ import annotations

import asyncio
import contextlib
import fractions
import json
import logging
import math
import random
import ssl as ssl_module
import struct
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import aiohttp
import aioice.ice
import av
from aiortc import (
    MediaStreamTrack,
    RTCBundlePolicy,
    RTCConfiguration,
    RTCDataChannel,
    RTCPeerConnection,
    RTCRtpSender,
    RTCRtpTransceiver,
    RTCSessionDescription,
    VideoStreamTrack,
)
from aiortc.mediastreams import AudioStreamTrack, MediaStreamError
from aiortc.rtcrtpparameters import RTCRtpCodecCapability
from aiortc.sdp import candidate_from_sdp

from tests.support.waiting import eventually

__all__ = [
    "AmsError",
    "AmsSocket",
    "AmsSocketClosed",
    "DecodeErrorCounter",
    "LossInjector",
    "MediaCounter",
    "PeerClient",
    "Player",
    "Publisher",
    "PublisherMedia",
    "SineAudioTrack",
    "SyntheticVideoTrack",
    "TrackStats",
    "build_publisher_pc",
    "codec_preferences",
    "force_loopback_ice",
    "is_video_rtp",
    "loopback_only",
    "new_peer_connection",
    "wait_for_connected",
]

logger = logging.getLogger("tests.support.amsclient")

Message = dict[str, Any]
Matcher = Callable[[Message], bool]

#: Every asyncio task this module creates is named with this prefix, so tests can
#: assert that none leaked.
TASK_PREFIX = "amsclient-"


# --------------------------------------------------------------------------- ICE


def _loopback_host_addresses(use_ipv4: bool, use_ipv6: bool) -> list[str]:
    """Replacement for ``aioice.ice.get_host_addresses``: loopback IPv4 only."""
    return ["127.0.0.1"] if use_ipv4 else []


_loopback_host_addresses._amsclient_loopback = True  # type: ignore[attr-defined]


def loopback_only() -> bool:
    """Make aioice gather only ``127.0.0.1`` host candidates (idempotent).

    Stock aioice skips 127.0.0.1.  If the current ``aioice.ice.get_host_addresses``
    was already replaced by Confero (function attribute ``_confero_patched``), it is
    left alone: the server's own function decides (it consults a ContextVar).

    Returns True when the client-side loopback function is in effect.
    """
    current = aioice.ice.get_host_addresses
    if getattr(current, "_confero_patched", False):
        return False
    if getattr(current, "_amsclient_loopback", False):
        return True
    aioice.ice.get_host_addresses = _loopback_host_addresses
    return True


@contextlib.contextmanager
def force_loopback_ice() -> Iterator[bool]:
    """Context manager around :func:`loopback_only` that undoes its own patch.

    On exit the original function is restored only if our function is still the
    installed one (a later Confero patch is never clobbered).
    """
    previous = aioice.ice.get_host_addresses
    installed = loopback_only()
    try:
        yield installed
    finally:
        if aioice.ice.get_host_addresses is _loopback_host_addresses and previous is not _loopback_host_addresses:
            aioice.ice.get_host_addresses = previous


def new_peer_connection(configuration: RTCConfiguration | None = None) -> RTCPeerConnection:
    """An RTCPeerConnection with no STUN/TURN servers (aiortc's default is Google STUN), or
    with `configuration` (a TURN server, iceTransportPolicy) when given.

    max-bundle: with aiortc's default "balanced" policy, an answerer given several m-lines of
    one kind (a room play) puts the later ones on a transport that BUNDLE then discards, and
    their media is routed to the first receiver of that kind. Browsers bundle everything.
    """
    return RTCPeerConnection(
        configuration=configuration or RTCConfiguration(iceServers=[], bundlePolicy=RTCBundlePolicy.MAX_BUNDLE)
    )


async def wait_for_connected(pc: RTCPeerConnection, timeout: float = 10.0) -> None:
    """Wait until ``pc.connectionState == "connected"``.

    Raises ``ConnectionError`` if the pc fails/closes and ``TimeoutError`` on timeout.
    """

    def connected() -> bool:
        state = pc.connectionState
        if state in ("failed", "closed"):
            raise ConnectionError(f"peer connection {state} (ice={pc.iceConnectionState})")
        return state == "connected"

    await eventually(
        connected,
        timeout=timeout,
        what=lambda: (
            f"the peer connection to connect (connection={pc.connectionState}, "
            f"ice={pc.iceConnectionState}, gathering={pc.iceGatheringState})"
        ),
        interval=0.01,
    )


def _candidate_from_message(msg: Message) -> Any:
    """Build an RTCIceCandidate from an AMS ``takeCandidate`` (None = end-of-candidates)."""
    text = str(msg.get("candidate") or "").strip()
    if text.startswith("a="):
        text = text[2:]
    if text.startswith("candidate:"):
        text = text[len("candidate:") :]
    if not text:
        return None
    candidate = candidate_from_sdp(text)
    candidate.sdpMid = msg.get("id")
    label = msg.get("label")
    candidate.sdpMLineIndex = int(label) if label is not None else None
    return candidate


# ------------------------------------------------------------------ media sources


class SyntheticVideoTrack(VideoStreamTrack):
    """30 fps ``yuv420p`` test pattern: a scrolling luma ramp plus a moving bar.

    Built from ``bytes`` slicing only (numpy is not installed), a 320x240 frame costs
    a few microseconds.
    """

    def __init__(self, width: int = 320, height: int = 240) -> None:
        super().__init__()
        if width % 2 or height % 2:
            raise ValueError("width and height must be even for yuv420p")
        self.width = width
        self.height = height
        self.frames_sent = 0
        self._ramp = bytes((x * 3) & 0xFF for x in range(2 * width))
        self._bar_row = bytes([235]) * width
        self._chroma_size = (width // 2) * (height // 2)

    async def recv(self) -> av.VideoFrame:
        pts, time_base = await self.next_timestamp()
        n = self.frames_sent
        self.frames_sent += 1

        shift = (n * 4) % self.width
        row = self._ramp[shift : shift + self.width]
        bar_top = (n * 3) % self.height
        bar_end = min(bar_top + 16, self.height)
        luma = row * bar_top + self._bar_row * (bar_end - bar_top) + row * (self.height - bar_end)

        frame = av.VideoFrame(self.width, self.height, "yuv420p")
        self._fill(frame.planes[0], luma, self.width)
        u = bytes([(64 + n) & 0xFF]) * self._chroma_size
        v = bytes([(192 - n) & 0xFF]) * self._chroma_size
        self._fill(frame.planes[1], u, self.width // 2)
        self._fill(frame.planes[2], v, self.width // 2)
        frame.pts = pts
        frame.time_base = time_base
        return frame

    @staticmethod
    def _fill(plane: Any, data: bytes, width: int) -> None:
        if plane.line_size == width:
            plane.update(data)
            return
        # Padded lines: copy row by row into a buffer of the plane's stride.
        pad = bytes(plane.line_size - width)
        rows = [data[i : i + width] + pad for i in range(0, len(data), width)]
        plane.update(b"".join(rows))


class SineAudioTrack(AudioStreamTrack):
    """48 kHz mono ``s16`` sine tone in 20 ms frames (paced like aiortc's AudioStreamTrack).

    400 Hz is used because 120 samples is an exact period, so a single precomputed
    960-sample frame repeats seamlessly.
    """

    SAMPLE_RATE = 48000
    SAMPLES = 960  # 20 ms

    def __init__(self, frequency: int = 400, amplitude: float = 0.3) -> None:
        super().__init__()
        if (self.SAMPLES * frequency) % self.SAMPLE_RATE:
            raise ValueError("frequency must fit an integer number of periods in 20 ms")
        peak = int(32767 * amplitude)
        self._pcm = struct.pack(
            f"<{self.SAMPLES}h",
            *(int(peak * math.sin(2 * math.pi * frequency * i / self.SAMPLE_RATE)) for i in range(self.SAMPLES)),
        )
        self._start: float | None = None
        self._timestamp = 0
        self.frames_sent = 0

    async def recv(self) -> av.AudioFrame:
        if self.readyState != "live":
            raise MediaStreamError
        if self._start is None:
            self._start = time.time()
            self._timestamp = 0
        else:
            self._timestamp += self.SAMPLES
            wait = self._start + self._timestamp / self.SAMPLE_RATE - time.time()
            if wait > 0:
                await asyncio.sleep(wait)

        frame = av.AudioFrame(format="s16", layout="mono", samples=self.SAMPLES)
        frame.planes[0].update(self._pcm)
        frame.pts = self._timestamp
        frame.sample_rate = self.SAMPLE_RATE
        frame.time_base = fractions.Fraction(1, self.SAMPLE_RATE)
        self.frames_sent += 1
        return frame


def codec_preferences(kind: str, codec: str) -> list[RTCRtpCodecCapability]:
    """Capabilities for ``setCodecPreferences`` restricting ``kind`` to ``codec``.

    * ``VP8``  -> [VP8, rtx]
    * ``H264`` -> every H264 capability with packetization-mode=1, then rtx (aiortc
      attaches one rtx per kept codec; the rtx capability has no ``apt``).
    * ``opus`` (audio) -> [opus]
    """
    caps = RTCRtpSender.getCapabilities(kind).codecs
    wanted = f"{kind}/{codec}".lower()
    chosen = [
        c
        for c in caps
        if c.mimeType.lower() == wanted
        and (codec.upper() != "H264" or str(c.parameters.get("packetization-mode")) == "1")
    ]
    if not chosen:
        raise ValueError(f"aiortc has no {kind} codec {codec!r}")
    if kind == "video":
        chosen += [c for c in caps if c.mimeType.lower() == "video/rtx"]
    return chosen


@dataclass
class PublisherMedia:
    """What :func:`build_publisher_pc` created."""

    pc: RTCPeerConnection
    video: MediaStreamTrack | None  # a SyntheticVideoTrack unless the caller gave its own
    audio: MediaStreamTrack | None  # a SineAudioTrack unless the caller gave its own
    video_transceiver: RTCRtpTransceiver | None
    audio_transceiver: RTCRtpTransceiver | None
    channel: RTCDataChannel | None = None

    def stop_tracks(self) -> None:
        for track in (self.video, self.audio):
            if track is not None:
                track.stop()


def build_publisher_pc(
    codec: str = "VP8",
    *,
    with_video: bool = True,
    with_audio: bool = True,
    data_channel_label: str | None = None,
    video_track: MediaStreamTrack | None = None,
    audio_track: MediaStreamTrack | None = None,
    configuration: RTCConfiguration | None = None,
) -> PublisherMedia:
    """Create a send-only pc with synthetic video (codec forced) and a sine tone (opus).

    `video_track` / `audio_track` replace the synthetic sources (e.g. a track that yields
    pre-encoded ``av.Packet`` s, which aiortc sends without encoding).
    """
    codec = codec.upper()
    if codec not in ("VP8", "H264"):
        raise ValueError(f"unsupported video codec {codec!r}")
    pc = new_peer_connection(configuration)
    media = PublisherMedia(pc=pc, video=None, audio=None, video_transceiver=None, audio_transceiver=None)
    # Video first, so transceivers[0] / mid "0" is the video m-line.
    if with_video:
        media.video = video_track or SyntheticVideoTrack()
        media.video_transceiver = pc.addTransceiver(media.video, direction="sendonly")
        media.video_transceiver.setCodecPreferences(codec_preferences("video", codec))
    if with_audio:
        media.audio = audio_track or SineAudioTrack()
        media.audio_transceiver = pc.addTransceiver(media.audio, direction="sendonly")
        media.audio_transceiver.setCodecPreferences(codec_preferences("audio", "opus"))
    if data_channel_label is not None:
        media.channel = pc.createDataChannel(data_channel_label, ordered=True)
    return media


# -------------------------------------------------------------- receive-side tools


@dataclass
class TrackStats:
    """Counters for one remote track."""

    kind: str
    mid: str | None
    frames: int = 0
    first_at: float | None = None  # time.monotonic() of the first decoded frame
    last_at: float | None = None
    first_size: tuple[int, int] | None = None  # (width, height), video only
    ended: bool = False


class MediaCounter:
    """Consumes every remote track of a pc and counts decoded frames.

    Usage: ``counter = MediaCounter(); counter.attach(pc)`` before the remote
    description is applied; ``await counter.aclose()`` at the end.
    """

    def __init__(self, name: str = "media") -> None:
        self.name = name
        self.created_at = time.monotonic()
        self.video_frames = 0
        self.audio_frames = 0
        self.first_video_size: tuple[int, int] | None = None
        self.first_video_at: float | None = None
        self.first_audio_at: float | None = None
        self.tracks: list[TrackStats] = []
        self._tasks: list[asyncio.Task[None]] = []
        self._closed = False

    def attach(self, pc: RTCPeerConnection) -> None:
        """Start a consumer for every track the pc announces."""

        @pc.on("track")
        def _on_track(track: MediaStreamTrack) -> None:
            mid = None
            for t in pc.getTransceivers():
                if t.receiver.track is track:
                    mid = t.mid
            self.consume(track, mid)

    def consume(self, track: MediaStreamTrack, mid: str | None = None) -> TrackStats:
        """Start consuming ``track`` in a background task."""
        stats = TrackStats(kind=track.kind, mid=mid)
        self.tracks.append(stats)
        if self._closed:
            stats.ended = True
            return stats
        task = asyncio.get_running_loop().create_task(
            self._run(track, stats), name=f"{TASK_PREFIX}{self.name}-{track.kind}-{mid}"
        )
        self._tasks.append(task)
        return stats

    async def _run(self, track: MediaStreamTrack, stats: TrackStats) -> None:
        try:
            while True:
                frame = await track.recv()
                now = time.monotonic()
                stats.frames += 1
                stats.last_at = now
                if stats.first_at is None:
                    stats.first_at = now
                if track.kind == "video":
                    self.video_frames += 1
                    if stats.first_size is None:
                        stats.first_size = (frame.width, frame.height)
                    if self.first_video_at is None:
                        self.first_video_at = now
                        self.first_video_size = (frame.width, frame.height)
                else:
                    self.audio_frames += 1
                    if self.first_audio_at is None:
                        self.first_audio_at = now
        except MediaStreamError:
            pass
        finally:
            stats.ended = True

    def stats_for_mid(self, mid: str) -> TrackStats | None:
        for stats in self.tracks:
            if stats.mid == mid:
                return stats
        return None

    async def wait_frames(self, n_video: int, n_audio: int = 0, timeout: float = 20.0) -> None:
        """Wait until at least ``n_video`` video and ``n_audio`` audio frames were decoded."""
        await eventually(
            lambda: self.video_frames >= n_video and self.audio_frames >= n_audio,
            timeout=timeout,
            what=lambda: (
                f"{self.name}: {n_video} video/{n_audio} audio frames (got {self.video_frames}/{self.audio_frames})"
            ),
        )

    async def aclose(self) -> None:
        """Cancel and await all consumer tasks (idempotent)."""
        self._closed = True
        tasks, self._tasks = self._tasks, []
        for task in tasks:
            task.cancel()
        if tasks:
            await asyncio.gather(*tasks, return_exceptions=True)


class DecodeErrorCounter(logging.Handler):
    """Counts aiortc decode-failure warnings ("... failed to decode ...").

    aiortc logs them from the receiver's decoder *thread* (logger
    ``aiortc.rtcrtpreceiver``), without any pc identity in the message.  When a pc
    is given, a record is counted only if it was emitted by one of that pc's decoder
    threads, so several players in one process are told apart.
    """

    def __init__(self, pc: RTCPeerConnection | None = None) -> None:
        super().__init__(level=logging.WARNING)
        self.pc = pc
        self.count = 0
        self.messages: list[str] = []
        self._logger = logging.getLogger("aiortc")
        self._saved_level: int | None = None
        self._attached = False

    def attach(self) -> DecodeErrorCounter:
        if not self._attached:
            if self._logger.getEffectiveLevel() > logging.WARNING:
                self._saved_level = self._logger.level
                self._logger.setLevel(logging.WARNING)
            self._logger.addHandler(self)
            self._attached = True
        return self

    def detach(self) -> None:
        if self._attached:
            self._logger.removeHandler(self)
            if self._saved_level is not None:
                self._logger.setLevel(self._saved_level)
                self._saved_level = None
            self._attached = False

    def decoder_thread_idents(self) -> set[int] | None:
        """Thread idents of the pc's running decoder threads (None if unknowable)."""
        if self.pc is None:
            return None
        try:
            receivers = [t.receiver for t in self.pc.getTransceivers()]
        except Exception:  # pragma: no cover - defensive, may run in a foreign thread
            return None
        idents: set[int] = set()
        known = False
        for receiver in receivers:
            if not hasattr(receiver, "_RTCRtpReceiver__decoder_thread"):
                continue
            known = True
            thread = receiver._RTCRtpReceiver__decoder_thread
            if thread is not None and thread.ident is not None:
                idents.add(thread.ident)
        # If aiortc internals changed, callers fall back to counting everything.
        return idents if known else None

    def _owns_current_thread(self) -> bool:
        idents = self.decoder_thread_idents()
        return idents is None or threading.get_ident() in idents

    def emit(self, record: logging.LogRecord) -> None:
        try:
            message = record.getMessage()
        except Exception:  # pragma: no cover
            return
        if "decode" not in message.lower():
            return
        if not self._owns_current_thread():
            return
        with self.lock or contextlib.nullcontext():
            self.count += 1
            self.messages.append(message)


def is_video_rtp(data: bytes, video_payload_types: set[int] | frozenset[int]) -> bool:
    """True for an (S)RTP packet (RFC 7983 / RFC 5761 demux) carrying one of the PTs."""
    if len(data) < 12 or not 128 <= data[0] <= 191:
        return False
    if 192 <= data[1] <= 223:  # RTCP (SR/RR/SDES/BYE/APP/RTPFB/PSFB...)
        return False
    return (data[1] & 0x7F) in video_payload_types


class LossInjector:
    """Drops incoming *video* RTP packets of a pc with probability ``drop_rate``.

    Install after ICE is connected.  The hook wraps ``data_received`` of the pc's
    aioice ``Connection`` (reached via ``transceiver.receiver.transport.transport
    ._connection``), which the nominated pair's ``StunProtocol.datagram_received``
    calls for every non-STUN datagram.  STUN is therefore never seen; DTLS and
    SRTCP pass untouched; only RTP whose payload type is a negotiated primary video
    codec (not rtx, so retransmissions always get through) is dropped.
    """

    def __init__(self, pc: RTCPeerConnection, drop_rate: float, seed: int | None = 0) -> None:
        if not 0.0 <= drop_rate < 1.0:
            raise ValueError("drop_rate must be in [0, 1)")
        self.pc = pc
        self.drop_rate = drop_rate
        self.rng = random.Random(seed)
        self.dropped = 0
        self.video_packets = 0
        self._hooked: list[Any] = []
        self._pt_cache: tuple[int, frozenset[int]] = (-1, frozenset())

    def video_payload_types(self) -> frozenset[int]:
        """Negotiated non-rtx video payload types (recomputed after renegotiation)."""
        transceivers = self.pc.getTransceivers()
        key = sum(len(t._codecs) for t in transceivers) + 1000 * len(transceivers)
        if key != self._pt_cache[0]:
            pts = frozenset(
                codec.payloadType
                for t in transceivers
                if t.kind == "video"
                for codec in t._codecs
                if codec.mimeType.lower() != "video/rtx" and codec.payloadType is not None
            )
            self._pt_cache = (key, pts)
        return self._pt_cache[1]

    def install(self) -> None:
        connections = []
        for t in self.pc.getTransceivers():
            conn = t.receiver.transport.transport._connection
            if all(conn is not c for c in connections):
                connections.append(conn)
        if not connections:
            raise RuntimeError("pc has no transceivers/ICE connection to hook")
        for conn in connections:
            if any(conn is c for c in self._hooked):
                continue
            original = conn.data_received

            def data_received(data: bytes, component: int, _orig: Any = original) -> None:
                if is_video_rtp(data, self.video_payload_types()):
                    self.video_packets += 1
                    if self.rng.random() < self.drop_rate:
                        self.dropped += 1
                        return
                _orig(data, component)

            conn.data_received = data_received
            self._hooked.append(conn)

    def uninstall(self) -> None:
        for conn in self._hooked:
            with contextlib.suppress(AttributeError):
                del conn.data_received  # back to the class method
        self._hooked = []


# ---------------------------------------------------------------------- signaling


class AmsError(Exception):
    """The server answered with ``{"command":"error", ...}`` for our stream."""

    def __init__(self, message: Message) -> None:
        super().__init__(f"{message.get('definition')}: {message}")
        self.message = message
        self.definition: str | None = message.get("definition")


class AmsSocketClosed(ConnectionError):
    """The WebSocket closed while waiting for a message."""


def _make_matcher(match: str | Matcher | None, definition: str | None, stream_id: str | None) -> Matcher:
    def matcher(msg: Message) -> bool:
        if callable(match):
            if not match(msg):
                return False
        elif match is not None and msg.get("command") != match:
            return False
        if definition is not None and msg.get("definition") != definition:
            return False
        return stream_id is None or msg.get("streamId") == stream_id

    return matcher


class AmsSocket:
    """JSON WebSocket client for ``ws://127.0.0.1:{port}/{app}/websocket``.

    A background reader appends every message to :attr:`history` (never cleared),
    calls the registered listeners, and makes it available to :meth:`recv` /
    :meth:`wait_for`.  Messages are *claimed* at most once: ``recv`` claims the oldest
    unclaimed one, ``wait_for`` the oldest unclaimed *matching* one; non-matching
    messages stay unclaimed (a later ``wait_for`` can still find them) and are in
    :attr:`history`.  Non-JSON text frames are delivered as ``{"_raw": text}``.

    ``history_limit`` bounds :attr:`history` and the unclaimed messages to the last N (for
    long-lived clients such as the benchmark's); by default nothing is dropped.
    """

    def __init__(
        self,
        port: int,
        app: str = "WebRTCAppEE",
        *,
        host: str = "127.0.0.1",
        query: str | None = None,
        history_limit: int | None = None,
        ssl: ssl_module.SSLContext | None = None,
    ) -> None:
        scheme = "ws" if ssl is None else "wss"  # wss: TLS, with `ssl` deciding what to trust
        self.url = f"{scheme}://{host}:{port}/{app}/websocket" + (f"?{query}" if query else "")
        self.ssl = ssl
        self.history_limit = history_limit
        self.history: list[Message] = []
        self.close_code: int | None = None
        self.closed = asyncio.Event()  # set when the server side is gone
        self._pending: deque[Message] = deque(maxlen=history_limit)
        self._pings = 0  # pings sent; the server answers each with one pong, in order
        self._pongs = 0
        self._cond = asyncio.Condition()
        self._listeners: list[Callable[[Message], None]] = []
        self._session: aiohttp.ClientSession | None = None
        self._ws: aiohttp.ClientWebSocketResponse | None = None
        self._reader: asyncio.Task[None] | None = None

    # -- lifecycle

    @classmethod
    async def connect(cls, port: int, app: str = "WebRTCAppEE", **kwargs: Any) -> AmsSocket:
        sock = cls(port, app, **kwargs)
        await sock.open()
        return sock

    async def open(self) -> None:
        self._session = aiohttp.ClientSession()
        try:
            self._ws = await self._session.ws_connect(
                self.url, autoping=True, max_msg_size=0, ssl=self.ssl if self.ssl is not None else True
            )
        except BaseException:
            await self._session.close()
            self._session = None
            raise
        self._reader = asyncio.get_running_loop().create_task(self._read_loop(), name=f"{TASK_PREFIX}ws-reader")

    def cut(self) -> None:
        """The network under this socket is gone: nothing more is read (so the server's pings go
        unanswered), and the socket stays open, as a TCP connection whose path died does."""
        assert self._ws is not None
        connection = self._ws._response.connection
        assert connection is not None and connection.transport is not None
        connection.transport.pause_reading()
        self._cut = True

    def transport_info(self, name: str) -> Any:
        """The connection's transport extra info (e.g. "ssl_object" of a wss socket), None when closed."""
        return self._ws.get_extra_info(name) if self._ws is not None else None

    async def __aenter__(self) -> AmsSocket:
        if self._ws is None:
            await self.open()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    async def close(self) -> None:
        """Close the WebSocket, cancel+await the reader, close the session (idempotent)."""
        ws, self._ws = self._ws, None
        if ws is not None and getattr(self, "_cut", False):  # a dead path: no closing handshake
            connection = ws._response.connection
            if connection is not None and connection.transport is not None:
                connection.transport.abort()
        if ws is not None and not ws.closed:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(ws.close(), 5)
        reader, self._reader = self._reader, None
        if reader is not None:
            reader.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await reader
        session, self._session = self._session, None
        if session is not None:
            await session.close()
        self.closed.set()
        async with self._cond:
            self._cond.notify_all()

    async def _read_loop(self) -> None:
        assert self._ws is not None
        ws = self._ws
        try:
            async for frame in ws:
                if frame.type == aiohttp.WSMsgType.TEXT:
                    try:
                        msg = json.loads(frame.data)
                        if not isinstance(msg, dict):
                            msg = {"_raw": frame.data}
                    except ValueError:
                        msg = {"_raw": frame.data}
                    await self._deliver(msg)
                elif frame.type == aiohttp.WSMsgType.BINARY:
                    await self._deliver({"_binary": frame.data})
                elif frame.type == aiohttp.WSMsgType.ERROR:
                    break
        finally:
            self.close_code = ws.close_code
            self.closed.set()
            async with self._cond:
                self._cond.notify_all()

    async def _deliver(self, msg: Message) -> None:
        self.history.append(msg)
        if self.history_limit is not None and len(self.history) > self.history_limit:
            del self.history[: len(self.history) - self.history_limit]
        if msg.get("command") == "pong":
            self._pongs += 1
        for listener in list(self._listeners):
            try:
                listener(msg)
            except Exception:
                logger.exception("AmsSocket listener failed on %s", msg)
        async with self._cond:
            self._pending.append(msg)
            self._cond.notify_all()

    # -- listeners

    def add_listener(self, listener: Callable[[Message], None]) -> Callable[[], None]:
        """Call ``listener(msg)`` for every future message; returns a remover."""
        self._listeners.append(listener)

        def remove() -> None:
            with contextlib.suppress(ValueError):
                self._listeners.remove(listener)

        return remove

    # -- sending

    async def send(self, msg: Message) -> None:
        await self.send_raw(json.dumps(msg))
        if msg.get("command") == "ping":
            self._pings += 1

    async def round_trip(self, timeout: float = 5.0) -> None:
        """Send a ``ping`` and wait for its ``pong`` (without claiming it).

        The server writes to a socket in order, so once the pong is here, every message it
        sent on this socket before answering the ping has been received (and handed to the
        listeners): a positive signal that something the server did not send never will be,
        as far as what it had done by then goes. Peers handle messages in their own task:
        see :meth:`Player.drain` / :meth:`PeerClient.drain`.
        """
        await self.send({"command": "ping"})
        wanted = self._pings
        await eventually(
            lambda: self._pongs >= wanted or self.closed.is_set(),
            timeout=timeout,
            what=f"the pong of ping {wanted} on {self.url}",
            interval=0.005,
        )
        if self._pongs < wanted:
            raise AmsSocketClosed(f"socket closed (code {self.close_code}) before the pong of ping {wanted}")

    async def send_raw(self, text: str) -> None:
        """Send a text frame verbatim (e.g. malformed JSON)."""
        if self._ws is None:
            raise AmsSocketClosed("socket not open")
        await self._ws.send_str(text)

    # -- receiving

    async def recv(self, timeout: float = 5.0) -> Message:
        """Claim the oldest unclaimed message."""
        return await self.wait_for(None, timeout=timeout)

    async def wait_for(
        self,
        match: str | Matcher | None = None,
        definition: str | None = None,
        *,
        stream_id: str | None = None,
        timeout: float = 10.0,
    ) -> Message:
        """Claim the oldest unclaimed message matching all given criteria.

        ``match`` is a ``command`` value or a predicate; ``definition`` and
        ``stream_id`` must also equal the message's fields when given.  Raises
        ``TimeoutError`` or :class:`AmsSocketClosed`.
        """
        matcher = _make_matcher(match, definition, stream_id)

        def take() -> Message | None:
            for i, msg in enumerate(self._pending):
                if matcher(msg):
                    del self._pending[i]
                    return msg
            if self.closed.is_set():
                raise AmsSocketClosed(
                    f"socket closed (code {self.close_code}) while waiting for {match!r}/{definition!r}"
                )
            return None

        try:
            async with self._cond:
                result: Message = await asyncio.wait_for(self._cond.wait_for(take), timeout)
                return result
        except TimeoutError:
            recent = self.history[-8:]
            raise TimeoutError(
                f"no message matching {match!r}/{definition!r}/{stream_id!r} within {timeout}s; recent: {recent}"
            ) from None

    def find(
        self,
        match: str | Matcher | None = None,
        definition: str | None = None,
        *,
        stream_id: str | None = None,
    ) -> list[Message]:
        """All messages in :attr:`history` matching (claimed or not)."""
        matcher = _make_matcher(match, definition, stream_id)
        return [m for m in self.history if matcher(m)]

    def discard_pending(self) -> None:
        """Drop all unclaimed messages (they remain in history)."""
        self._pending.clear()


# ------------------------------------------------------------------ AMS peers


def _compact(msg: Message) -> Message:
    """Drop None values, like JSON.stringify drops undefined fields in the SDK."""
    return {k: v for k, v in msg.items() if v is not None}


class _AmsPeer:
    """Shared plumbing: per-stream message pump, candidate queueing, closing."""

    role = "peer"

    def __init__(self, sock: AmsSocket, stream_id: str) -> None:
        self.sock = sock
        self.stream_id = stream_id
        self.pc: RTCPeerConnection | None = None
        self.errors: list[Message] = []
        self.notifications: list[Message] = []
        #: Set when the server reports publish_finished / play_finished for the stream.
        self.finished = asyncio.Event()
        self.candidates_applied = 0
        self.candidate_errors: list[str] = []
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._pending_candidates: list[Message] = []
        self._remote_set = False
        self._failure: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._failure_exc: BaseException | None = None
        self._pump: asyncio.Task[None] | None = None
        self._remove_listener: Callable[[], None] | None = None
        self._closed = False
        self._busy = False
        #: Rewrites the server's SDP and candidates before they are applied (a test puts a
        #: relay between this peer and the server: tests.support.udprelay.Relays.rewrite).
        self.rewrite: Callable[[str], Awaitable[str]] | None = None
        #: Rewrites this peer's own SDP before it is sent (e.g. `without_candidates`: the
        #: server then learns the peer's address only from its traffic, as behind a NAT).
        self.rewrite_local: Callable[[str], str] | None = None

    async def _remote(self, text: str) -> str:
        return text if self.rewrite is None else await self.rewrite(text)

    def _listen(self) -> None:
        if self._pump is not None or self._closed:
            raise RuntimeError(f"{self.role} {self.stream_id} already started or closed")

        def on_message(msg: Message) -> None:
            sid = msg.get("streamId")
            if sid == self.stream_id or (msg.get("command") == "error" and sid is None):
                self._inbox.put_nowait(msg)

        self._remove_listener = self.sock.add_listener(on_message)
        self._pump = asyncio.get_running_loop().create_task(
            self._run_pump(), name=f"{TASK_PREFIX}{self.role}-{self.stream_id}"
        )

    async def _run_pump(self) -> None:
        while True:
            msg = await self._inbox.get()
            self._busy = True
            try:
                await self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("%s %s failed handling %s", self.role, self.stream_id, msg)
                self._fail(exc)
            finally:
                self._busy = False

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every message received so far for this stream has been handled.

        With :meth:`AmsSocket.round_trip` first, this is "everything the server had sent
        this peer is applied" (an offer answered, a notification recorded).
        """
        await eventually(
            lambda: self._inbox.empty() and not self._busy,
            timeout=timeout,
            what=f"{self.role} {self.stream_id} to handle its messages",
            interval=0.005,
        )

    def _fail(self, exc: BaseException) -> None:
        if not self._failure.done():
            self._failure_exc = exc
            self._failure.set_result(None)

    async def _handle(self, msg: Message) -> None:
        command = msg.get("command")
        if command == "takeCandidate":
            if self._remote_set:
                await self._apply_candidate(msg)
            else:
                self._pending_candidates.append(msg)
        elif command == "error":
            self.errors.append(msg)
            self._fail(AmsError(msg))
        elif command == "notification":
            self.notifications.append(msg)
            if msg.get("definition") in ("publish_finished", "play_finished"):
                self.finished.set()
        else:
            await self._on_message(msg)

    async def _on_message(self, msg: Message) -> None:  # overridden
        pass

    async def _apply_candidate(self, msg: Message) -> None:
        assert self.pc is not None
        try:
            if self.rewrite is not None and msg.get("candidate"):
                msg = {**msg, "candidate": await self.rewrite(str(msg["candidate"]))}
            candidate = _candidate_from_message(msg)
            await self.pc.addIceCandidate(candidate)
            self.candidates_applied += 1
        except Exception as exc:  # a bad candidate must not kill the pump
            self.candidate_errors.append(f"{msg.get('candidate')!r}: {exc!r}")

    async def _remote_description_set(self) -> None:
        self._remote_set = True
        queued, self._pending_candidates = self._pending_candidates, []
        for msg in queued:
            await self._apply_candidate(msg)

    async def _await(self, awaitable: Any, what: str, timeout: float) -> Any:
        """Await ``awaitable`` but raise early if the server sent an error / pump failed."""
        task = asyncio.ensure_future(awaitable)
        try:
            done, _ = await asyncio.wait({task, self._failure}, timeout=timeout, return_when=asyncio.FIRST_COMPLETED)
            if task in done:
                return task.result()
            if self._failure.done() and self._failure_exc is not None:
                raise self._failure_exc
            raise TimeoutError(f"{self.role} {self.stream_id}: timed out waiting for {what}")
        finally:
            if not task.done():
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError, Exception):
                    await task

    async def stop(self) -> None:
        """Send ``stop`` for the stream (if the socket is up) and close the pc."""
        if not self._closed and not self.sock.closed.is_set():
            with contextlib.suppress(Exception):
                await self.sock.send({"command": "stop", "streamId": self.stream_id})
        await self.close()

    async def close(self) -> None:
        """Close the pc and stop background work (idempotent, sends nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._remove_listener is not None:
            self._remove_listener()
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        if not self._failure.done():
            self._failure.cancel()
        await self._close_media()
        if self.pc is not None:
            await self.pc.close()

    async def _close_media(self) -> None:  # overridden
        pass


class Publisher(_AmsPeer):
    """SDK-like WebRTC publisher (protocol section 3.1)."""

    role = "publisher"

    def __init__(
        self,
        sock: AmsSocket,
        stream_id: str,
        codec: str = "VP8",
        with_audio: bool = True,
        token: str | None = None,
        extra: Message | None = None,
        *,
        with_video: bool = True,
        data_channel: bool = False,
        media_factory: Callable[[], PublisherMedia] | None = None,
    ) -> None:
        """`media_factory`, when given, builds the pc and its senders instead of
        :func:`build_publisher_pc` (it is called once `start` arrives)."""
        super().__init__(sock, stream_id)
        self.media_factory = media_factory
        self.codec = codec.upper()
        self.with_audio = with_audio
        self.with_video = with_video
        self.token = token
        self.extra = dict(extra or {})
        self.data_channel = data_channel
        self.media: PublisherMedia | None = None
        self.start_message: Message | None = None
        self.answer_sdp: str | None = None
        self.offer_sdp: str | None = None
        self._got_start: asyncio.Event = asyncio.Event()
        self._got_answer: asyncio.Event = asyncio.Event()

    @property
    def channel(self) -> RTCDataChannel | None:
        return self.media.channel if self.media else None

    async def start(self, timeout: float = 10.0) -> None:
        """publish -> start -> offer -> answer -> connected.  Raises :class:`AmsError`."""
        self._listen()
        await self.sock.send(
            _compact(
                {
                    "command": "publish",
                    "streamId": self.stream_id,
                    "token": self.token,
                    "video": self.with_video,
                    "audio": self.with_audio,
                    **self.extra,
                }
            )
        )
        await self._await(self._got_start.wait(), "start", timeout)

        if self.media_factory is not None:
            self.media = self.media_factory()
        else:
            self.media = build_publisher_pc(
                self.codec,
                with_video=self.with_video,
                with_audio=self.with_audio,
                data_channel_label=self.stream_id if self.data_channel else None,
            )
        self.pc = self.media.pc
        offer = await self.pc.createOffer()
        await self.pc.setLocalDescription(offer)
        self.offer_sdp = self.pc.localDescription.sdp
        if self.rewrite_local is not None:
            self.offer_sdp = self.rewrite_local(self.offer_sdp)
        await self.sock.send(
            {
                "command": "takeConfiguration",
                "streamId": self.stream_id,
                "type": "offer",
                "sdp": self.offer_sdp,
            }
        )
        await self._await(self._got_answer.wait(), "answer", timeout)
        await self._await(wait_for_connected(self.pc, timeout), "connected", timeout)

    async def _on_message(self, msg: Message) -> None:
        command = msg.get("command")
        if command == "start":
            self.start_message = msg
            self._got_start.set()
        elif command == "takeConfiguration" and msg.get("type") == "answer":
            if self.pc is None:
                raise RuntimeError("answer received before offer was sent")
            self.answer_sdp = await self._remote(msg["sdp"])
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=self.answer_sdp, type="answer"))
            await self._remote_description_set()
            self._got_answer.set()

    async def _close_media(self) -> None:
        if self.media is not None:
            self.media.stop_tracks()


class Player(_AmsPeer):
    """SDK-like WebRTC player (protocol section 3.2; also answers re-offers, 3.3).

    Counters live on :attr:`counter` (:class:`MediaCounter`) and are mirrored by the
    ``video_frames`` / ``audio_frames`` / ``first_video_size`` ... properties.
    """

    role = "player"

    def __init__(
        self,
        sock: AmsSocket,
        stream_id: str,
        token: str | None = None,
        room: str | None = None,
        drop_rate: float = 0.0,
        seed: int | None = 0,
        *,
        track_list: list[str] | None = None,
        extra: Message | None = None,
        count_media: bool = True,
        configuration: RTCConfiguration | None = None,
    ) -> None:
        """`count_media=False`: no :class:`MediaCounter` / :class:`DecodeErrorCounter` (for
        players that count packets themselves, see :meth:`before_answer`)."""
        super().__init__(sock, stream_id)
        self.configuration = configuration
        self.count_media = count_media
        self.token = token
        self.room = room
        self.drop_rate = drop_rate
        self.seed = seed
        self.track_list = list(track_list or [])
        self.extra = dict(extra or {})
        self.id_mapping: dict[str, str] = {}
        self.offer_sdp: str | None = None
        self.answer_sdp: str | None = None
        self.offers: list[Message] = []  # every takeConfiguration offer (re-offers too)
        self.counter = MediaCounter(name=f"player-{stream_id}")
        self.decode_counter: DecodeErrorCounter | None = None
        self.loss: LossInjector | None = None
        self.channel: RTCDataChannel | None = None
        self.data_messages: list[str | bytes] = []
        self.started_at: float | None = None
        self._answered = asyncio.Event()

    # -- counters

    @property
    def video_frames(self) -> int:
        return self.counter.video_frames

    @property
    def audio_frames(self) -> int:
        return self.counter.audio_frames

    @property
    def first_video_size(self) -> tuple[int, int] | None:
        return self.counter.first_video_size

    @property
    def first_video_at(self) -> float | None:
        return self.counter.first_video_at

    @property
    def first_audio_at(self) -> float | None:
        return self.counter.first_audio_at

    @property
    def decode_errors(self) -> int:
        return self.decode_counter.count if self.decode_counter else 0

    @property
    def dropped(self) -> int:
        return self.loss.dropped if self.loss else 0

    def frames_for(self, track_id: str) -> int:
        """Decoded frames of the remote track whose idMapping trackId is ``track_id``."""
        total = 0
        for mid, tid in self.id_mapping.items():
            if tid == track_id:
                stats = self.counter.stats_for_mid(mid)
                if stats is not None:
                    total += stats.frames
        return total

    async def wait_frames(self, n_video: int, n_audio: int = 0, timeout: float = 20.0) -> None:
        await self.counter.wait_frames(n_video, n_audio, timeout)

    # -- flow

    async def start(self, timeout: float = 10.0) -> None:
        """play -> offer (idMapping) -> answer -> connected.  Raises :class:`AmsError`."""
        self.started_at = time.monotonic()
        self._listen()
        await self.sock.send(
            _compact(
                {
                    "command": "play",
                    "streamId": self.stream_id,
                    "token": self.token,
                    "room": self.room,
                    "trackList": self.track_list,
                    **self.extra,
                }
            )
        )
        await self._await(self._answered.wait(), "offer", timeout)
        assert self.pc is not None
        await self._await(wait_for_connected(self.pc, timeout), "connected", timeout)
        if self.drop_rate > 0:
            self.loss = LossInjector(self.pc, self.drop_rate, self.seed)
            self.loss.install()

    def _create_pc(self) -> RTCPeerConnection:
        pc = new_peer_connection(self.configuration)
        if self.count_media:
            self.counter.attach(pc)
            self.decode_counter = DecodeErrorCounter(pc).attach()

        @pc.on("datachannel")
        def _on_datachannel(channel: RTCDataChannel) -> None:
            self.channel = channel

            @channel.on("message")
            def _on_message(data: str | bytes) -> None:
                self.data_messages.append(data)

        return pc

    async def _on_message(self, msg: Message) -> None:
        if msg.get("command") != "takeConfiguration" or msg.get("type") != "offer":
            return
        self.offers.append(msg)
        self.offer_sdp = msg["sdp"]
        mapping = msg.get("idMapping")
        if isinstance(mapping, dict):
            self.id_mapping = {str(k): str(v) for k, v in mapping.items()}
        if self.pc is None:
            self.pc = self._create_pc()
        await self.pc.setRemoteDescription(RTCSessionDescription(sdp=await self._remote(msg["sdp"]), type="offer"))
        await self._remote_description_set()
        self.before_answer(self.pc, msg)
        answer = await self.pc.createAnswer()
        await self.pc.setLocalDescription(answer)
        self.answer_sdp = self.pc.localDescription.sdp
        if self.rewrite_local is not None:
            self.answer_sdp = self.rewrite_local(self.answer_sdp)
        await self.sock.send(
            {
                "command": "takeConfiguration",
                "streamId": self.stream_id,
                "type": "answer",
                "sdp": self.answer_sdp,
            }
        )
        self.after_answer(self.pc, msg)
        self._answered.set()

    # -- hooks for subclasses (no-ops here)

    def before_answer(self, pc: RTCPeerConnection, offer: Message) -> None:
        """Called for every offer (the first and re-offers) once it is applied, before the
        answer is made: the transceivers and their transports exist, no media has flowed."""

    def after_answer(self, pc: RTCPeerConnection, offer: Message) -> None:
        """Called for every offer once its answer is set and sent."""

    async def _close_media(self) -> None:
        if self.loss is not None:
            self.loss.uninstall()
        await self.counter.aclose()
        if self.decode_counter is not None:
            self.decode_counter.detach()


# ------------------------------------------------------------------ 1-1 calls (P2P)


class PeerClient:
    """SDK-like peer of a 1-1 call (protocol section 3.5).

    ``await join()`` sends ``join`` and waits for ``joined``.  The server then pairs two
    clients: the first hears ``start`` and offers (its own synthetic video + audio, sendrecv,
    and a data channel labelled with the call id); the other answers with its own tracks.
    Offers, answers, candidates and ``peerMessageCommand`` travel through the server
    unchanged; media and data flow directly between the two peers.  On ``stop`` the pc is
    closed and the client stays joined (a later ``start`` begins a new call).

    Counters of the current call are on :attr:`counter`; :attr:`calls` counts the pcs made.
    """

    role = "peer-client"

    def __init__(self, sock: AmsSocket, call_id: str, codec: str = "VP8") -> None:
        self.sock = sock
        self.call_id = call_id
        self.codec = codec.upper()
        self.pc: RTCPeerConnection | None = None
        self.media: PublisherMedia | None = None
        self.counter = MediaCounter(name=f"peer-{call_id}")
        self.channel: RTCDataChannel | None = None
        self.data_messages: list[str | bytes] = []
        self.peer_messages: list[Message] = []
        self.errors: list[Message] = []
        #: every message of this call id, in arrival order
        self.history: list[Message] = []
        self.starts = 0
        self.stops = 0
        self.calls = 0
        self.offer_sdp: str | None = None
        self.answer_sdp: str | None = None
        self.handler_errors: list[BaseException] = []
        self._inbox: asyncio.Queue[Message] = asyncio.Queue()
        self._pending_candidates: list[Message] = []
        self._remote_set = False
        self._remove_listener: Callable[[], None] | None = None
        self._pump: asyncio.Task[None] | None = None
        self._closed = False
        self._busy = False

    # -- properties

    @property
    def video_frames(self) -> int:
        return self.counter.video_frames

    @property
    def audio_frames(self) -> int:
        return self.counter.audio_frames

    @property
    def connected(self) -> bool:
        return self.pc is not None and self.pc.connectionState == "connected"

    # -- plumbing

    def _ensure_listening(self) -> None:
        if self._pump is not None:
            return
        if self._closed:
            raise RuntimeError(f"peer {self.call_id} is closed")

        def on_message(msg: Message) -> None:
            if msg.get("streamId") == self.call_id:
                self.history.append(msg)
                self._inbox.put_nowait(msg)

        self._remove_listener = self.sock.add_listener(on_message)
        self._pump = asyncio.get_running_loop().create_task(
            self._run_pump(), name=f"{TASK_PREFIX}{self.role}-{self.call_id}"
        )

    async def _run_pump(self) -> None:
        while True:
            msg = await self._inbox.get()
            self._busy = True
            try:
                await self._handle(msg)
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                logger.exception("peer %s failed handling %s", self.call_id, msg)
                self.handler_errors.append(exc)
            finally:
                self._busy = False

    async def _handle(self, msg: Message) -> None:
        command = msg.get("command")
        if command == "start":
            self.starts += 1
            await self._offer()
        elif command == "takeConfiguration" and msg.get("type") == "offer":
            await self._answer(msg["sdp"])
        elif command == "takeConfiguration" and msg.get("type") == "answer":
            if self.pc is None:
                raise RuntimeError("answer without an offer")
            self.answer_sdp = msg["sdp"]
            await self.pc.setRemoteDescription(RTCSessionDescription(sdp=msg["sdp"], type="answer"))
            await self._remote_description_set()
        elif command == "takeCandidate":
            if self.pc is not None and self._remote_set:
                await self._apply_candidate(msg)
            else:
                self._pending_candidates.append(msg)
        elif command == "stop":
            self.stops += 1
            await self._close_pc()
        elif command == "peerMessageCommand":
            self.peer_messages.append(msg)
        elif command == "error":
            self.errors.append(msg)

    async def _apply_candidate(self, msg: Message) -> None:
        assert self.pc is not None
        with contextlib.suppress(Exception):
            await self.pc.addIceCandidate(_candidate_from_message(msg))

    async def _remote_description_set(self) -> None:
        self._remote_set = True
        queued, self._pending_candidates = self._pending_candidates, []
        for msg in queued:
            await self._apply_candidate(msg)

    def _new_pc(self, pc: RTCPeerConnection) -> None:
        self.pc = pc
        self.calls += 1
        self._remote_set = False
        self.counter = MediaCounter(name=f"peer-{self.call_id}-{self.calls}")
        self.counter.attach(pc)
        self.channel = None

        @pc.on("datachannel")
        def _on_datachannel(channel: RTCDataChannel) -> None:
            self._use_channel(channel)

    def _use_channel(self, channel: RTCDataChannel) -> None:
        self.channel = channel

        @channel.on("message")
        def _on_message(data: str | bytes) -> None:
            self.data_messages.append(data)

    async def _offer(self) -> None:
        """``start``: the SDK's startPublishing — local tracks and a data channel, then offer."""
        await self._close_pc()
        self.media = build_publisher_pc(self.codec, data_channel_label=self.call_id)
        for transceiver in (self.media.video_transceiver, self.media.audio_transceiver):
            if transceiver is not None:
                transceiver.direction = "sendrecv"  # a call: both sides send
        self._new_pc(self.media.pc)
        assert self.media.channel is not None
        self._use_channel(self.media.channel)
        offer = await self.media.pc.createOffer()
        await self.media.pc.setLocalDescription(offer)
        self.offer_sdp = self.media.pc.localDescription.sdp
        await self.sock.send(
            {"command": "takeConfiguration", "streamId": self.call_id, "type": "offer", "sdp": self.offer_sdp}
        )

    async def _answer(self, sdp: str) -> None:
        """The partner's offer: a pc with this client's own tracks answers it."""
        await self._close_pc(keep_candidates=True)
        pc = new_peer_connection()
        self._new_pc(pc)
        await pc.setRemoteDescription(RTCSessionDescription(sdp=sdp, type="offer"))
        video, audio = SyntheticVideoTrack(), SineAudioTrack()
        self.media = PublisherMedia(pc=pc, video=video, audio=audio, video_transceiver=None, audio_transceiver=None)
        pc.addTrack(video)
        pc.addTrack(audio)
        await self._remote_description_set()
        answer = await pc.createAnswer()
        await pc.setLocalDescription(answer)
        self.answer_sdp = pc.localDescription.sdp
        await self.sock.send(
            {"command": "takeConfiguration", "streamId": self.call_id, "type": "answer", "sdp": self.answer_sdp}
        )

    async def _close_pc(self, *, keep_candidates: bool = False) -> None:
        pc, self.pc = self.pc, None
        media, self.media = self.media, None
        self._remote_set = False
        if not keep_candidates:
            self._pending_candidates = []
        if media is not None:
            media.stop_tracks()
        if pc is not None:
            await pc.close()
            await self.counter.aclose()

    async def _wait(self, check: Callable[[], bool], what: str | Callable[[], str], timeout: float) -> None:
        def done() -> bool:
            if self.handler_errors:
                raise self.handler_errors[0]
            return check()

        await eventually(
            done,
            timeout=timeout,
            what=lambda: f"peer {self.call_id}: {what() if callable(what) else what}",
            interval=0.01,
        )

    async def drain(self, timeout: float = 10.0) -> None:
        """Wait until every message received so far for this call has been handled."""
        await self._wait(lambda: self._inbox.empty() and not self._busy, "its messages handled", timeout)

    async def _reply(self, sent: Message, definition: str, timeout: float) -> Message:
        """Send ``sent`` and wait for the notification ``definition`` (or an error) it causes."""
        self._ensure_listening()
        mark = len(self.history)
        await self.sock.send(sent)
        found: list[Message] = []

        def check() -> bool:
            for msg in self.history[mark:]:
                if msg.get("command") == "error" or (
                    msg.get("command") == "notification" and msg.get("definition") == definition
                ):
                    found.append(msg)
                    return True
            return False

        await self._wait(check, definition, timeout)
        if found[0].get("command") == "error":
            raise AmsError(found[0])
        return found[0]

    # -- API

    async def join(self, timeout: float = 10.0) -> Message:
        """``join`` -> ``joined``; raises :class:`AmsError` if refused."""
        return await self._reply(
            {"command": "join", "streamId": self.call_id, "multiPeer": False, "mode": "both"}, "joined", timeout
        )

    async def leave(self, timeout: float = 10.0) -> Message:
        """``leave`` -> ``leaved`` (the SDK closes its pc too); raises :class:`AmsError` if refused."""
        try:
            return await self._reply({"command": "leave", "streamId": self.call_id}, "leaved", timeout)
        finally:
            await self._close_pc()

    async def send_peer_message(self, definition: str, data: Any, **extra: Any) -> Message:
        msg = {
            "command": "peerMessageCommand",
            "streamId": self.call_id,
            "definition": definition,
            "data": data,
            **extra,
        }
        await self.sock.send(msg)
        return msg

    async def wait_connected(self, timeout: float = 10.0) -> None:
        await self._wait(lambda: self.connected, "connected", timeout)

    async def wait_frames(self, n_video: int, n_audio: int = 0, timeout: float = 20.0) -> None:
        await self._wait(
            lambda: self.counter.video_frames >= n_video and self.counter.audio_frames >= n_audio,
            lambda: (
                f"{n_video} video/{n_audio} audio frames (have {self.counter.video_frames}/{self.counter.audio_frames})"
            ),
            timeout,
        )

    async def wait_stops(self, n: int, timeout: float = 10.0) -> None:
        """Wait until ``n`` ``stop`` messages were handled (the pc is closed by then)."""
        await self._wait(lambda: self.stops >= n and self.pc is None, f"{n} stops", timeout)

    async def wait_peer_messages(self, n: int, timeout: float = 10.0) -> None:
        await self._wait(lambda: len(self.peer_messages) >= n, f"{n} peer messages", timeout)

    async def close(self) -> None:
        """Close the pc and stop background work (idempotent, sends nothing)."""
        if self._closed:
            return
        self._closed = True
        if self._remove_listener is not None:
            self._remove_listener()
        pump, self._pump = self._pump, None
        if pump is not None:
            pump.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await pump
        await self._close_pc()
        await self.counter.aclose()


def chat(player: Player) -> list[str | bytes]:
    """A room play's data without the server's own events (VIDEO_TRACK_ASSIGNMENT_LIST, ...)."""
    return [
        m
        for m in player.data_messages
        if not (isinstance(m, str) and m.startswith('{"streamId"') and '"eventType"' in m)
    ]
