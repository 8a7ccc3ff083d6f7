"""Conference load generator for bench/run.py: R rooms x M participants of aiortc clients.

Every participant publishes pre-encoded VP8 (default 1 Mbit/s, 30 fps) plus Opus (20 ms
frames) and plays every other participant of its room, against either server:

* `--server confero`: Ant Media's WebSocket protocol (docs/protocol.md §3.3, the
  multitrack conference flow, signaled with the test suite's client, tests/support/amsclient.py): `joinRoom` -> `publish` (mainTrack = room) -> once every member
  publishes, `play` of the room (one peer connection carrying the other members' tracks,
  `trackList: ["!<own id>"]`); later re-offers are answered.
* `--server janus`: Janus's VideoRoom over its HTTP API (long-poll): create session, attach
  `janus.plugin.videoroom`, `join` as publisher, `publish` with the jsep offer; then a
  subscriber handle `join`s with `streams: [{feed}, ...]` for every other member (one peer
  connection, like the Confero side) and `start`s with the jsep answer; keepalives.

Light on purpose (the generator shares a 2-core machine with the server):

* Publishing: media is encoded ONCE at start-up and packetised in advance; each publisher sends
  RTP itself once its peer connection is up (header pack + SRTP protect + sendto on the
  nominated pair; no aiortc sender loop, no per-packet objects). A PLI/FIR from the server makes
  the next video frame a keyframe (at most one every 0.3 s, like a browser), which is how both
  SFUs start a new subscriber quickly.
* Latency stamp: the last 12 bytes of every RTP payload are `CFRB` + the publisher's send time
  (CLOCK_REALTIME ns), written just before SRTP protect. Both SFUs forward payloads unchanged.
* Subscribing: nothing is decoded. Before the ICE pair is nominated, decrypted RTP arrives through
  an instance override of the DTLS transport's `_handle_rtp_data` (no parsing, no jitter
  buffer); afterwards the nominated socket's `datagram_received` counts SRTP packets from their
  clear header (per SSRC: received, sequence gaps, late, duplicates) and drops them. One packet
  in `--sample` is decrypted to read the stamp: latency = arrival - send, both as seen by this
  process (app) and from the kernel's receive timestamp of the datagram (SIOCGSTAMPNS, so a busy
  generator does not inflate the server's figure). Video packets of a source are decrypted until
  its first keyframe start, for join -> first keyframe.

Control: JSON lines on stdin, JSON lines on stdout (logs on stderr).

    {"cmd": "add", "rooms": ["r1", ...], "m": M}  -> {"event": "added", ...join figures...}
    {"cmd": "mark"}   -> {"event": "stats", ...}   cumulative counters; latency histograms restart
    {"cmd": "stats"}  -> {"event": "stats", ...}   cumulative counters + histograms since mark
    {"cmd": "pause"} / {"cmd": "resume"}            publishers stop / restart sending (peers stay up)
    {"cmd": "quit"}   -> {"event": "bye"}

Bounded: at most `--max-participants`, and the process exits after `--max-seconds`.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fcntl
import fractions
import logging
import math
import os
import random
import socket
import string
import struct
import sys
import time
from collections.abc import Callable
from typing import Any

import aiohttp
import av
from aiortc import RTCPeerConnection, RTCRtpSender, RTCSessionDescription
from aiortc.codecs.vpx import Vp8Encoder

BENCH = os.path.dirname(os.path.abspath(__file__))
# bench/ (loadgen), the repository (tests.support: the client) and this tree's confero
for path in (os.path.join(os.path.dirname(BENCH), "src"), os.path.dirname(BENCH), BENCH):
    sys.path.insert(0, path)
from confero.media.aiortc_hooks import IdleTrack  # noqa: E402
from confero.media.rtp import mid_extension  # noqa: E402
from loadgen import (  # noqa: E402
    HISTORY,
    Commands,
    count_sequence,
    emit,
    encode_vp8,
    run_on_loop,
    starts_keyframe,
)
from tests.support import eventually  # noqa: E402
from tests.support.amsclient import (  # noqa: E402
    AmsSocket,
    Message,
    Player,
    Publisher,
    PublisherMedia,
    loopback_only,
    new_peer_connection,
    wait_for_connected,
)

logger = logging.getLogger("bench.roomload")

MAGIC = b"CFRB"
STAMP = struct.Struct("!4sQ")
HDR = struct.Struct("!BBHII")
TS_NS = struct.Struct("qq")
SIOCGSTAMPNS = 0x8907
MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
RCVBUF = 4 << 20
KEYFRAME_MIN_INTERVAL = 0.3
HIST_US = 10  # latency histogram bucket (µs)
HIST_MAX = 200_000  # buckets: up to 2 s


# ------------------------------------------------------------------------------------- media


class Media:
    """Pre-encoded, pre-packetised VP8 frames and Opus packets, shared by every publisher."""

    def __init__(
        self, *, bitrate: int, fps: float, frames: int, width: int, height: int, noise: int, audio_bitrate: int
    ) -> None:
        # encode_vp8 sizes frames for 30 fps; scale the bitrate so that `fps` gives `bitrate`.
        encoded = encode_vp8(frames, frames, width, height, int(bitrate * 30 / fps), noise)
        self.fps = fps
        self.video: list[tuple[list[bytes], bool]] = []
        for i, (data, key) in enumerate(encoded):
            self.video.append((Vp8Encoder._packetize(data, i % 0x7FFF), key))
        self.keyframes = [i for i, (_, k) in enumerate(self.video) if k]
        self.audio = encode_opus(50, audio_bitrate)
        video_bytes = sum(len(p) for ps, _ in self.video for p in ps)
        self.video_pps = fps * sum(len(ps) for ps, _ in self.video) / len(self.video)
        self.video_bps = 8 * fps * video_bytes / len(self.video)
        self.audio_pps = 50.0
        self.audio_bps = 8 * 50 * sum(len(p) for p in self.audio) / len(self.audio)

    def describe(self) -> dict[str, Any]:
        return {
            "video_frames": len(self.video),
            "video_keyframes": len(self.keyframes),
            "video_fps": self.fps,
            "video_pps": round(self.video_pps, 1),
            "video_kbps": round(self.video_bps / 1000, 1),
            "keyframe_packets": len(self.video[0][0]),
            "audio_pps": self.audio_pps,
            "audio_kbps": round(self.audio_bps / 1000, 1),
            "stamp_bytes": STAMP.size,
        }


def encode_opus(frames: int, bitrate: int) -> list[bytes]:
    """`frames` 20 ms Opus packets of a 440 Hz tone (stereo, 48 kHz), encoded once."""
    import numpy as np

    ctx = av.CodecContext.create("libopus", "w")
    ctx.sample_rate = 48000
    ctx.layout = "stereo"
    ctx.format = "s16"
    ctx.bit_rate = bitrate
    ctx.time_base = fractions.Fraction(1, 48000)
    out: list[bytes] = []
    n = 960
    for i in range(frames + 5):
        t = (np.arange(n) + i * n) / 48000
        tone = (np.sin(2 * math.pi * 440 * t) * 8000).astype(np.int16)
        frame = av.AudioFrame.from_ndarray(np.repeat(tone, 2).reshape(1, -1), format="s16", layout="stereo")
        frame.sample_rate = 48000
        frame.pts = i * n
        frame.time_base = fractions.Fraction(1, 48000)
        for packet in ctx.encode(frame):
            out.append(bytes(packet))
    out = [p for p in out if p][:frames]
    if not out:
        raise RuntimeError("libopus produced no packets")
    return out


def add_send_transceivers(pc: RTCPeerConnection) -> None:
    """Audio (Opus only) and video (VP8 + RTX) sendonly transceivers with idle tracks."""
    for kind, mime in (("audio", "audio/opus"), ("video", "video/vp8")):
        t = pc.addTransceiver(IdleTrack(kind), direction="sendonly")
        caps = RTCRtpSender.getCapabilities(kind).codecs
        t.setCodecPreferences(
            [c for c in caps if c.mimeType.lower() == mime] + [c for c in caps if c.mimeType.lower() == f"{kind}/rtx"]
        )


def idle_publisher_media() -> PublisherMedia:
    """A publisher's pc for RawSender: idle audio and video senders (RawSender sends the RTP)."""
    pc = new_peer_connection()
    add_send_transceivers(pc)
    return PublisherMedia(pc=pc, video=None, audio=None, video_transceiver=None, audio_transceiver=None)


class RawSender:
    """Sends the pre-packetised media of one publisher on its connected peer connection."""

    def __init__(self, media: Media, stats: Totals) -> None:
        self.media = media
        self.stats = stats
        self.streams: dict[str, dict[str, Any]] = {}
        self.closed = False
        self._want_key = False
        self._last_key = -1.0
        self._sendto: Callable[[bytes, Any], None] | None = None
        self._protect: Callable[[bytes], bytes] | None = None
        self._addr: Any = None
        self._handles: list[asyncio.TimerHandle] = []
        self.plis = 0
        self.paused = False  # ticks go on (timestamps advance) but nothing is sent

    def start(self, pc: RTCPeerConnection) -> None:
        loop = asyncio.get_running_loop()
        transceivers = pc.getTransceivers()
        dtls = transceivers[0].sender.transport
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None or dtls._tx_srtp is None:
            raise RuntimeError("publisher connected without a nominated pair / SRTP session")
        self._sendto = pair.protocol.transport.sendto
        self._addr = pair.remote_addr
        self._protect = dtls._tx_srtp.protect
        self.stats.note_profile(dtls)
        for t in transceivers:
            codecs = [c for c in t._codecs if not c.mimeType.lower().endswith("/rtx")]
            if not codecs:
                continue
            ext_id = next((e.id for e in t._headerExtensions if e.uri == MID_URI), None)
            ext = mid_extension(ext_id, t.mid)
            self.streams[t.kind] = {
                "pt": codecs[0].payloadType,
                "ssrc": t.sender._ssrc,
                "ext": ext,
                "b0": 0x90 if ext else 0x80,
                "seq": random.randrange(0x10000),
                "ts": random.randrange(1 << 32),
                "i": random.randrange(len(self.media.audio)) if t.kind == "audio" else 0,
            }
            if t.kind == "video":
                t.sender._send_keyframe = self.request_keyframe  # PLI/FIR from the server
        now = loop.time()
        phase = random.random() / self.media.fps  # spread publishers over the frame interval
        if "video" in self.streams:
            self._schedule(self._video, now + phase, 1.0 / self.media.fps)
        if "audio" in self.streams:
            self._schedule(self._audio, now + random.random() * 0.02, 0.02)

    def _schedule(self, fn: Callable[[], None], first: float, interval: float) -> None:
        loop = asyncio.get_running_loop()
        state = {"n": 0, "t0": first}

        def tick() -> None:
            if self.closed:
                return
            try:
                fn()
            except Exception as exc:  # keep sending; count
                self.stats.send_errors += 1
                logger.debug("send failed: %r", exc)
            now = loop.time()
            state["n"] += 1
            due = state["t0"] + state["n"] * interval
            if now - due > 0.25:  # starved: do not burst to catch up
                self.stats.resyncs += 1
                state["t0"] = now - state["n"] * interval
                due = now + interval
            self._handles[idx] = loop.call_at(due, tick)

        idx = len(self._handles)
        self._handles.append(loop.call_at(first, tick))

    def request_keyframe(self) -> None:
        self.plis += 1
        self.stats.plis += 1
        self._want_key = True

    def _send(self, s: dict[str, Any], payload: bytes, marker: int) -> None:
        packet = (
            HDR.pack(s["b0"], marker | s["pt"], s["seq"], s["ts"], s["ssrc"])
            + s["ext"]
            + payload
            + STAMP.pack(MAGIC, time.time_ns())
        )
        s["seq"] = (s["seq"] + 1) & 0xFFFF
        self._sendto(self._protect(packet), self._addr)  # type: ignore[misc]

    def _video(self) -> None:
        s = self.streams["video"]
        media = self.media
        i = s["i"]
        if self.paused:
            s["ts"] = (s["ts"] + int(90000 / media.fps)) & 0xFFFFFFFF
            return
        now = time.monotonic()
        if self._want_key and now - self._last_key >= KEYFRAME_MIN_INTERVAL:
            self._want_key = False
            if not media.video[i][1]:
                i = media.keyframes[0]
                self.stats.forced_keyframes += 1
        payloads, key = media.video[i]
        if key:
            self._last_key = now
            self._want_key = False
        last = len(payloads) - 1
        for j, payload in enumerate(payloads):
            self._send(s, payload, 0x80 if j == last else 0)
        self.stats.video_sent += len(payloads)
        s["i"] = (i + 1) % len(media.video)
        s["ts"] = (s["ts"] + int(90000 / media.fps)) & 0xFFFFFFFF

    def _audio(self) -> None:
        s = self.streams["audio"]
        audio = self.media.audio
        if self.paused:
            s["ts"] = (s["ts"] + 960) & 0xFFFFFFFF
            return
        self._send(s, audio[s["i"]], 0)
        self.stats.audio_sent += 1
        s["i"] = (s["i"] + 1) % len(audio)
        s["ts"] = (s["ts"] + 960) & 0xFFFFFFFF

    def stop(self) -> None:
        self.closed = True
        for h in self._handles:
            h.cancel()
        self._handles.clear()


# -------------------------------------------------------------------------------- receiving


class Totals:
    """Process-wide counters (cumulative) and latency histograms (since the last mark)."""

    def __init__(self) -> None:
        self.video_sent = 0
        self.audio_sent = 0
        self.send_errors = 0
        self.resyncs = 0
        self.plis = 0
        self.forced_keyframes = 0
        self.hist_app: dict[int, int] = {}
        self.hist_kernel: dict[int, int] = {}
        self.bad_stamps = 0
        self.srtp_errors = 0
        self.reoffers = 0
        self.lag_max = 0.0
        self.lag_sum = 0.0
        self.lag_n = 0
        self.lag_over_10ms = 0
        self.srtp_profiles: dict[str, int] = {}

    def note_profile(self, dtls: Any) -> None:
        try:
            name = dtls._ssl.get_selected_srtp_profile().decode()
        except Exception:
            name = "?"
        self.srtp_profiles[name] = self.srtp_profiles.get(name, 0) + 1


class SourceStat:
    __slots__ = ("bytes", "dups", "first_ns", "gaps", "key_ns", "kind", "late", "max_seq", "received")

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self.received = 0
        self.max_seq = -1
        self.gaps = 0
        self.late = 0
        self.dups = 0
        self.first_ns = 0
        self.key_ns = 0
        self.bytes = 0


class Sink:
    """Counting side of one subscriber peer connection (all its sources)."""

    def __init__(self, totals: Totals, sample: int, expected_sources: int) -> None:
        self.totals = totals
        self.sample = sample
        self.expected_sources = expected_sources
        self.sources: dict[int, SourceStat] = {}
        self.kinds: dict[int, str] = {}  # payload type -> "video" | "audio" | "rtx"
        self.count = 0
        self.before_hook = 0
        self.t0_ns = 0
        self._unprotect: Callable[[bytes], bytes] | None = None
        self._fd = -1
        self._protocol: Any = None

    def set_kinds(self, pc: RTCPeerConnection) -> None:
        for t in pc.getTransceivers():
            for c in t._codecs:
                mime = c.mimeType.lower()
                self.kinds[c.payloadType] = (
                    "rtx" if mime.endswith("/rtx") else ("video" if mime.startswith("video/") else "audio")
                )

    def _source(self, ssrc: int, pt: int) -> SourceStat:
        st = SourceStat(self.kinds.get(pt, "other"))
        st.first_ns = time.time_ns()
        self.sources[ssrc] = st
        return st

    def _plain(self, plain: bytes, st: SourceStat, kernel: bool) -> None:
        now = time.time_ns()
        if st.kind == "video" and not st.key_ns and starts_keyframe(plain):
            st.key_ns = now
        if len(plain) < 24 or plain[-12:-8] != MAGIC:
            self.totals.bad_stamps += 1
            return
        sent = STAMP.unpack_from(plain, len(plain) - 12)[1]
        b = (now - sent) // 1000 // HIST_US
        b = 0 if b < 0 else (HIST_MAX if b > HIST_MAX else b)
        h = self.totals.hist_app
        h[b] = h.get(b, 0) + 1
        if kernel and self._fd >= 0:
            try:
                sec, nsec = TS_NS.unpack(fcntl.ioctl(self._fd, SIOCGSTAMPNS, bytes(16)))
            except OSError:
                return
            k = (sec * 1_000_000_000 + nsec - sent) // 1000 // HIST_US
            k = 0 if k < 0 else (HIST_MAX if k > HIST_MAX else k)
            h = self.totals.hist_kernel
            h[k] = h.get(k, 0) + 1

    def count_header(self, data: bytes) -> SourceStat | None:
        """Per-source accounting from the clear RTP header; returns the source (None for RTX)."""
        ssrc = (data[8] << 24) | (data[9] << 16) | (data[10] << 8) | data[11]
        st = self.sources.get(ssrc)
        if st is None:
            st = self._source(ssrc, data[1] & 0x7F)
        st.received += 1
        st.bytes += len(data)
        if st.kind == "rtx":
            return None
        count_sequence(st, (data[2] << 8) | data[3])
        return st

    def hook_dtls(self, pc: RTCPeerConnection) -> None:
        """Before the socket hook: decrypted RTP from aiortc's DTLS loop, counted, never decoded."""
        seen = set()
        for t in pc.getTransceivers():
            dtls = t.receiver.transport
            if dtls is None or id(dtls) in seen:
                continue
            seen.add(id(dtls))

            async def handle_rtp_data(data: bytes, arrival_time_ms: int) -> None:
                if len(data) < 12:
                    return
                self.before_hook += 1
                st = self.count_header(data)
                if st is not None:
                    self._plain(data, st, kernel=False)

            dtls._handle_rtp_data = handle_rtp_data

    def hook_socket(self, pc: RTCPeerConnection) -> None:
        dtls = pc.getTransceivers()[0].receiver.transport
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise RuntimeError("connected without a nominated pair")
        protocol = pair.protocol
        sock = protocol.transport.get_extra_info("socket")
        with contextlib.suppress(Exception):
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        with contextlib.suppress(Exception):
            self._fd = sock.fileno()
            with contextlib.suppress(OSError):
                fcntl.ioctl(self._fd, SIOCGSTAMPNS, bytes(16))  # enables receive timestamps
        self.totals.note_profile(dtls)
        original = protocol.datagram_received
        unprotect = dtls._rx_srtp.unprotect
        sample = self.sample
        sink = self
        totals = self.totals
        count_header = self.count_header
        plain_of = self._plain

        def datagram_received(data: bytes, addr: Any) -> None:
            b0 = data[0]
            if 127 < b0 < 192 and not (191 < data[1] < 224):
                st = count_header(data)
                if st is None:
                    return
                n = sink.count
                sink.count = n + 1
                if n % sample == 0 or (not st.key_ns and st.kind == "video"):
                    try:
                        plain = unprotect(data)
                    except Exception:
                        totals.srtp_errors += 1
                        return
                    plain_of(plain, st, kernel=True)
                return
            original(data, addr)

        protocol.datagram_received = datagram_received
        self._protocol = protocol

    def unhook(self) -> None:
        if self._protocol is not None:
            self._protocol.__dict__.pop("datagram_received", None)
            self._protocol = None

    def summary(self) -> dict[str, Any]:
        out: dict[str, Any] = {"video": [0, 0, 0, 0], "audio": [0, 0, 0, 0], "rtx": 0, "other": 0}
        for st in self.sources.values():
            if st.kind in ("video", "audio"):
                acc = out[st.kind]
                acc[0] += st.received
                acc[1] += st.gaps
                acc[2] += st.late
                acc[3] += st.dups
            elif st.kind == "rtx":
                out["rtx"] += st.received
            else:
                out["other"] += st.received
        return out

    def join_figures(self) -> dict[str, Any]:
        """Per video source: ms from the subscribe request to its first packet / first keyframe."""
        out = []
        for st in self.sources.values():
            if st.kind != "video":
                continue
            out.append(
                {
                    "first_ms": (st.first_ns - self.t0_ns) / 1e6 if st.first_ns else None,
                    "key_ms": (st.key_ns - self.t0_ns) / 1e6 if st.key_ns else None,
                }
            )
        return {"sources": out, "expected": self.expected_sources}


# ------------------------------------------------------------------------ Confero (AMS) client


class RoomPlay(Player):
    """A participant's play of its room: counted by its Sink, re-offers answered on the same pc."""

    def __init__(self, participant: ConferoParticipant, sink: Sink) -> None:
        super().__init__(
            participant.sock,
            participant.room,
            room=participant.room,
            track_list=["!" + participant.stream_id],
            extra={
                "token": "",
                "subscriberId": "",
                "subscriberCode": "",
                "viewerInfo": "",
                "role": "",
                "userPublishId": participant.stream_id,
            },
            count_media=False,
        )
        self.totals = participant.gen.totals
        self.sink = sink

    def before_answer(self, pc: RTCPeerConnection, offer: Message) -> None:
        if len(self.offers) == 1:
            self.sink.hook_dtls(pc)  # before any media: decrypted RTP is counted, never decoded

    def after_answer(self, pc: RTCPeerConnection, offer: Message) -> None:
        self.sink.set_kinds(pc)
        if len(self.offers) > 1:
            self.totals.reoffers += 1  # the server re-offers the room when members come or go


class ConferoParticipant:
    """One SDK-like client: its own WebSocket, a publish PC and a room-play PC."""

    def __init__(self, gen: Generator, room: str, index: int) -> None:
        self.gen = gen
        self.room = room
        self.stream_id = f"{room}-p{index}"
        self.sock: AmsSocket | None = None
        self.publisher: Publisher | None = None
        self.play: RoomPlay | None = None
        self.sender = RawSender(gen.media, gen.totals)
        self.sink: Sink | None = None

    @property
    def pub_pc(self) -> RTCPeerConnection | None:
        return self.publisher.pc if self.publisher is not None else None

    @property
    def sub_pc(self) -> RTCPeerConnection | None:
        return self.play.pc if self.play is not None else None

    async def publish(self, timeout: float) -> None:
        sock = self.sock = await AmsSocket.connect(self.gen.args.port, self.gen.args.app, history_limit=HISTORY)
        await sock.send(
            {
                "command": "joinRoom",
                "room": self.room,
                "mainTrack": self.room,
                "streamId": self.stream_id,
                "mode": "multitrack",
                "streamName": self.stream_id,
                "role": "",
                "metadata": "",
            }
        )
        await sock.wait_for("notification", "joinedTheRoom", timeout=timeout)
        self.publisher = Publisher(
            sock,
            self.stream_id,
            extra={
                "token": "",
                "subscriberId": "",
                "subscriberCode": "",
                "streamName": self.stream_id,
                "mainTrack": self.room,
                "metaData": "",
                "role": "",
            },
            media_factory=idle_publisher_media,
        )
        await self.publisher.start(timeout)
        assert self.publisher.pc is not None
        self.sender.start(self.publisher.pc)
        await sock.wait_for("notification", "publish_started", stream_id=self.stream_id, timeout=timeout)

    async def subscribe(self, others: int, timeout: float) -> None:
        sink = self.sink = Sink(self.gen.totals, self.gen.sample, others)
        sink.t0_ns = time.time_ns()
        self.play = RoomPlay(self, sink)
        await self.play.start(timeout)
        assert self.play.pc is not None
        sink.hook_socket(self.play.pc)

    async def close(self) -> None:
        self.sender.stop()
        if self.sink is not None:
            self.sink.unhook()
        if self.sock is not None and not self.sock.closed.is_set():
            with contextlib.suppress(Exception):
                await self.sock.send(
                    {"command": "leaveFromRoom", "room": self.room, "mainTrack": self.room, "streamId": self.stream_id}
                )
        for peer in (self.play, self.publisher):
            if peer is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(peer.close(), 5)
        if self.sock is not None:
            with contextlib.suppress(Exception):
                await self.sock.close()


# --------------------------------------------------------------------------- Janus client


def transaction_id() -> str:
    return "".join(random.choices(string.ascii_letters + string.digits, k=12))


class JanusError(RuntimeError):
    pass


class JanusSession:
    """One Janus API session over HTTP: requests, long-poll for events, keepalives."""

    def __init__(self, http: aiohttp.ClientSession, url: str) -> None:
        self.http = http
        self.root = url
        self.url = ""
        self.session_id = 0
        self._pending: dict[str, asyncio.Future[dict[str, Any]]] = {}
        self._tasks: list[asyncio.Task[None]] = []
        self.events: dict[int, list[str]] = {}  # handle -> janus event names (webrtcup, media, hangup...)
        self.closed = False

    async def _post(self, url: str, body: dict[str, Any]) -> dict[str, Any]:
        async with self.http.post(url, json=body) as response:
            return await response.json(content_type=None)

    async def create(self) -> None:
        data = await self._post(self.root, {"janus": "create", "transaction": transaction_id()})
        if data.get("janus") != "success":
            raise JanusError(f"create: {data}")
        self.session_id = data["data"]["id"]
        self.url = f"{self.root}/{self.session_id}"
        loop = asyncio.get_running_loop()
        self._tasks = [loop.create_task(self._poll()), loop.create_task(self._keepalive())]

    async def attach(self, plugin: str = "janus.plugin.videoroom") -> int:
        data = await self._post(self.url, {"janus": "attach", "plugin": plugin, "transaction": transaction_id()})
        if data.get("janus") != "success":
            raise JanusError(f"attach: {data}")
        return int(data["data"]["id"])

    async def message(
        self, handle: int, body: dict[str, Any], jsep: dict[str, Any] | None = None, timeout: float = 20.0
    ) -> dict[str, Any]:
        """A plugin request; returns the synchronous answer or the asynchronous event for it."""
        tid = transaction_id()
        msg: dict[str, Any] = {"janus": "message", "transaction": tid, "body": body}
        if jsep is not None:
            msg["jsep"] = jsep
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._pending[tid] = future
        try:
            data = await self._post(f"{self.url}/{handle}", msg)
            kind = data.get("janus")
            if kind == "success":
                result = data
            elif kind == "ack":
                result = await asyncio.wait_for(future, timeout)
            else:
                raise JanusError(f"{body.get('request')}: {data}")
        finally:
            self._pending.pop(tid, None)
        plugindata = result.get("plugindata", {}).get("data", {})
        if "error" in plugindata:
            raise JanusError(f"{body.get('request')}: {plugindata}")
        return result

    async def _poll(self) -> None:
        while not self.closed:
            try:
                async with self.http.get(
                    self.url,
                    params={"maxev": "10", "rid": str(time.time_ns())},
                    timeout=aiohttp.ClientTimeout(total=40),
                ) as response:
                    data = await response.json(content_type=None)
            except asyncio.CancelledError:
                return
            except Exception as exc:
                if self.closed:
                    return
                logger.warning("janus long-poll failed: %r", exc)
                await asyncio.sleep(0.5)
                continue
            for event in data if isinstance(data, list) else [data]:
                tid = event.get("transaction")
                future = self._pending.get(tid) if tid else None
                if future is not None and not future.done() and event.get("janus") == "event":
                    future.set_result(event)
                elif event.get("janus") not in ("keepalive", "ack"):
                    sender = int(event.get("sender", 0) or 0)
                    self.events.setdefault(sender, []).append(event.get("janus", "?"))

    async def _keepalive(self) -> None:
        while not self.closed:
            await asyncio.sleep(25)
            with contextlib.suppress(Exception):
                await self._post(self.url, {"janus": "keepalive", "transaction": transaction_id()})

    async def destroy(self) -> None:
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self._post(self.url, {"janus": "destroy", "transaction": transaction_id()}), 5)
        self.closed = True


class JanusParticipant:
    """One Janus VideoRoom participant: a session with a publisher and a subscriber handle."""

    def __init__(self, gen: Generator, room: str, index: int) -> None:
        self.gen = gen
        self.room = room
        self.room_id = gen.janus_room_id(room)
        self.feed_id = self.room_id * 100 + index + 1
        self.name = f"{room}-p{index}"
        self.session = JanusSession(gen.http, gen.janus_url)
        self.pub_pc: RTCPeerConnection | None = None
        self.sub_pc: RTCPeerConnection | None = None
        self.sender = RawSender(gen.media, gen.totals)
        self.sink: Sink | None = None
        self.others: list[int] = []

    async def publish(self, timeout: float) -> None:
        await self.session.create()
        self.pub_handle = await self.session.attach()
        await self.session.message(
            self.pub_handle,
            {"request": "join", "ptype": "publisher", "room": self.room_id, "id": self.feed_id, "display": self.name},
            timeout=timeout,
        )
        pc = self.pub_pc = new_peer_connection()
        add_send_transceivers(pc)
        await pc.setLocalDescription(await pc.createOffer())
        event = await self.session.message(
            self.pub_handle,
            {"request": "publish"},
            jsep={"type": "offer", "sdp": pc.localDescription.sdp, "trickle": False},
            timeout=timeout,
        )
        jsep = event.get("jsep")
        if not jsep:
            raise JanusError(f"publish: no answer in {event}")
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="answer"))
        await wait_for_connected(pc, timeout)
        self.sender.start(pc)

    async def subscribe(self, feeds: list[int], timeout: float) -> None:
        sink = self.sink = Sink(self.gen.totals, self.gen.sample, len(feeds))
        self.sub_handle = await self.session.attach()
        sink.t0_ns = time.time_ns()
        event = await self.session.message(
            self.sub_handle,
            {"request": "join", "ptype": "subscriber", "room": self.room_id, "streams": [{"feed": f} for f in feeds]},
            timeout=timeout,
        )
        jsep = event.get("jsep")
        if not jsep:
            raise JanusError(f"subscribe: no offer in {event}")
        pc = self.sub_pc = new_peer_connection()
        await pc.setRemoteDescription(RTCSessionDescription(sdp=jsep["sdp"], type="offer"))
        sink.hook_dtls(pc)
        await pc.setLocalDescription(await pc.createAnswer())
        sink.set_kinds(pc)
        await self.session.message(
            self.sub_handle,
            {"request": "start"},
            jsep={"type": "answer", "sdp": pc.localDescription.sdp, "trickle": False},
            timeout=timeout,
        )
        await wait_for_connected(pc, timeout)
        sink.hook_socket(pc)

    async def close(self) -> None:
        self.sender.stop()
        if self.sink is not None:
            self.sink.unhook()
        for pc in (self.sub_pc, self.pub_pc):
            if pc is not None:
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(pc.close(), 5)
        await self.session.destroy()


# -------------------------------------------------------------------------------- generator


class Generator:
    def __init__(self, args: argparse.Namespace, media: Media) -> None:
        self.args = args
        self.media = media
        self.totals = Totals()
        self.sample = max(1, args.sample)
        self.participants: list[Any] = []
        self.rooms: dict[str, list[Any]] = {}
        self.ws_url = f"ws://127.0.0.1:{args.port}/{args.app}/websocket"
        self.janus_url = f"http://127.0.0.1:{args.port}/janus"
        self.http: aiohttp.ClientSession | None = None
        self._janus_control: JanusSession | None = None
        self._janus_handle = 0
        self._room_ids: dict[str, int] = {}
        self.failures: list[str] = []

    def janus_room_id(self, room: str) -> int:
        if room not in self._room_ids:
            self._room_ids[room] = 1000 + self.args.worker * 100000 + len(self._room_ids) + 1
        return self._room_ids[room]

    async def start(self) -> None:
        if self.args.server == "janus":
            self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0, force_close=False))
            self._janus_control = JanusSession(self.http, self.janus_url)
            await self._janus_control.create()
            self._janus_handle = await self._janus_control.attach()

    async def add_rooms(self, rooms: list[str], m: int) -> dict[str, Any]:
        t0 = time.monotonic()
        timeout = self.args.timeout
        limit = asyncio.Semaphore(self.args.concurrency)
        new: dict[str, list[Any]] = {}
        for room in rooms:
            if self.args.server == "janus":
                assert self._janus_control is not None
                await self._janus_control.message(
                    self._janus_handle,
                    {
                        "request": "create",
                        "room": self.janus_room_id(room),
                        "publishers": m + 1,
                        "bitrate": 0,
                        "videocodec": "vp8",
                        "audiocodec": "opus",
                        "notify_joining": False,
                        "description": room,
                    },
                )
                cls: Any = JanusParticipant
            else:
                cls = ConferoParticipant
            new[room] = [cls(self, room, i) for i in range(m)]
        failed: list[str] = []

        async def guarded(coro: Any, label: str) -> bool:
            async with limit:
                try:
                    await coro
                    return True
                except Exception as exc:
                    failed.append(f"{label}: {exc!r}"[:300])
                    logger.warning("%s failed: %r", label, exc)
                    return False

        everyone = [p for ps in new.values() for p in ps]
        self.participants.extend(everyone)
        for room, ps in new.items():
            self.rooms[room] = ps
        ok = await asyncio.gather(
            *(
                guarded(p.publish(timeout), f"publish {getattr(p, 'stream_id', getattr(p, 'name', '?'))}")
                for p in everyone
            )
        )
        published = time.monotonic() - t0
        subs = []
        for ps in new.values():
            for p in ps:
                if self.args.server == "janus":
                    feeds = [o.feed_id for o in ps if o is not p]
                    subs.append(guarded(p.subscribe(feeds, timeout), f"subscribe {p.name}"))
                else:
                    subs.append(guarded(p.subscribe(m - 1, timeout), f"subscribe {p.stream_id}"))
        if all(ok):
            await asyncio.gather(*subs)
        else:
            for coro in subs:
                coro.close()
        # Wait for every subscriber to see every source's first keyframe (bounded; then report).
        with contextlib.suppress(AssertionError):
            await eventually(
                lambda: all(
                    p.sink is not None
                    and sum(1 for s in p.sink.sources.values() if s.kind == "video" and s.key_ns) >= m - 1
                    for p in everyone
                ),
                timeout=self.args.first_frame_wait,
                what="every source's first keyframe at every subscriber",
                interval=0.05,
            )
        joins = []
        complete = 0
        for p in everyone:
            if p.sink is None:
                continue
            fig = p.sink.join_figures()
            joins.extend(fig["sources"])
            videos = sum(1 for s in p.sink.sources.values() if s.kind == "video")
            audios = sum(1 for s in p.sink.sources.values() if s.kind == "audio")
            if videos >= m - 1 and audios >= m - 1:
                complete += 1
        self.failures.extend(failed)
        return {
            "event": "added",
            "rooms": len(new),
            "participants": len(everyone),
            "total_participants": len(self.participants),
            "complete_subscribers": complete,
            "failed": failed[:10],
            "n_failed": len(failed),
            "publish_s": round(published, 3),
            "elapsed_s": round(time.monotonic() - t0, 3),
            "join": joins,
        }

    def stats(self, reset: bool) -> dict[str, Any]:
        t = self.totals
        video = [0, 0, 0, 0]
        audio = [0, 0, 0, 0]
        rtx = other = before = 0
        sources = 0
        for p in self.participants:
            if p.sink is None:
                continue
            s = p.sink.summary()
            for i in range(4):
                video[i] += s["video"][i]
                audio[i] += s["audio"][i]
            rtx += s["rtx"]
            other += s["other"]
            before += p.sink.before_hook
            sources += len(p.sink.sources)
        out = {
            "event": "stats",
            "t": time.monotonic(),
            "participants": len(self.participants),
            "video_sent": t.video_sent,
            "audio_sent": t.audio_sent,
            "send_errors": t.send_errors,
            "resyncs": t.resyncs,
            "plis": t.plis,
            "forced_keyframes": t.forced_keyframes,
            "video": dict(zip(("received", "gaps", "late", "dups"), video, strict=True)),
            "audio": dict(zip(("received", "gaps", "late", "dups"), audio, strict=True)),
            "rtx": rtx,
            "other": other,
            "before_hook": before,
            "sources": sources,
            "bad_stamps": t.bad_stamps,
            "srtp_errors": t.srtp_errors,
            "reoffers": t.reoffers,
            "srtp_profiles": t.srtp_profiles,
            "hist_app": t.hist_app,
            "hist_kernel": t.hist_kernel,
            "lag_max_ms": round(t.lag_max * 1000, 2),
            "lag_mean_ms": round(t.lag_sum / t.lag_n * 1000, 3) if t.lag_n else 0.0,
            "lag_over_10ms": t.lag_over_10ms,
            "cpu": sum(os.times()[:2]),
        }
        if reset:
            t.hist_app = {}
            t.hist_kernel = {}
            t.lag_max = t.lag_sum = 0.0
            t.lag_n = t.lag_over_10ms = 0
        return out

    async def lag_monitor(self) -> None:
        """Event-loop lag: how late a 10 ms timer fires (a busy generator shows here)."""
        loop = asyncio.get_running_loop()
        t = self.totals
        while True:
            due = loop.time() + 0.01
            await asyncio.sleep(0.01)
            lag = max(0.0, loop.time() - due)
            t.lag_n += 1
            t.lag_sum += lag
            if lag > t.lag_max:
                t.lag_max = lag
            if lag > 0.01:
                t.lag_over_10ms += 1

    async def close(self) -> None:
        await asyncio.gather(*(p.close() for p in self.participants), return_exceptions=True)
        if self._janus_control is not None:
            await self._janus_control.destroy()
        if self.http is not None:
            await self.http.close()


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.max_seconds
    t0 = time.monotonic()
    media = Media(
        bitrate=args.bitrate,
        fps=args.fps,
        frames=args.frames,
        width=args.width,
        height=args.height,
        noise=args.noise,
        audio_bitrate=args.audio_bitrate,
    )
    gen = Generator(args, media)
    commands = Commands(deadline)
    lag_task = loop.create_task(gen.lag_monitor())
    code = 0
    try:
        await gen.start()
        emit(
            {
                "event": "ready",
                "media": media.describe(),
                "prepare_s": round(time.monotonic() - t0, 3),
                "loop": type(loop).__module__,
            }
        )
        async for cmd in commands:
            name = cmd.get("cmd")
            if name in ("stats", "mark"):
                emit(gen.stats(reset=name == "mark"))
            elif name in ("pause", "resume"):
                for p in gen.participants:
                    p.sender.paused = name == "pause"
                emit({"event": name, "participants": len(gen.participants)})
            elif name == "add":
                rooms = [str(r) for r in cmd.get("rooms", [])]
                m = int(cmd.get("m", 2))
                if len(gen.participants) + len(rooms) * m > args.max_participants or m < 2:
                    emit({"event": "error", "error": "over --max-participants or m < 2"})
                    continue
                try:
                    emit(await gen.add_rooms(rooms, m))
                except Exception as exc:
                    logger.exception("add failed")
                    emit({"event": "error", "error": repr(exc)})
            else:
                emit({"event": "error", "error": f"unknown command {name!r}"})
        if commands.timed_out:
            code = 3
    except Exception as exc:
        logger.exception("load generator failed")
        emit({"event": "error", "error": repr(exc)})
        code = 2
    finally:
        lag_task.cancel()
        with contextlib.suppress(Exception):
            await asyncio.wait_for(gen.close(), 30)
        emit({"event": "bye"})
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--server", choices=("confero", "janus"), required=True)
    parser.add_argument(
        "--port", type=int, required=True, help="Confero's HTTP/WebSocket port or Janus's HTTP API port"
    )
    parser.add_argument("--app", default="WebRTCAppEE")
    parser.add_argument("--worker", type=int, default=0, help="worker index (keeps Janus room ids apart)")
    parser.add_argument("--bitrate", type=int, default=1_000_000, help="video bit/s per publisher")
    parser.add_argument("--audio-bitrate", type=int, default=32_000)
    parser.add_argument("--fps", type=float, default=30.0)
    parser.add_argument("--frames", type=int, default=90, help="pre-encoded frames (looped; the first is a keyframe)")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument(
        "--noise", type=int, default=8, help="per-frame luma noise (8 keeps libvpx near the target bitrate)"
    )
    parser.add_argument("--sample", type=int, default=8, help="decrypt one packet in N for the latency stamp")
    parser.add_argument("--timeout", type=float, default=20.0, help="per signaling/connect step")
    parser.add_argument("--concurrency", type=int, default=8, help="participants set up at once")
    parser.add_argument("--first-frame-wait", type=float, default=5.0)
    parser.add_argument("--max-participants", type=int, default=200)
    parser.add_argument("--max-seconds", type=float, default=900.0)
    parser.add_argument(
        "--srtp",
        choices=("any", "cm"),
        default="any",
        help="any: aiortc's list (AEAD GCM first, as browsers); cm: offer only AES_CM_128_HMAC_SHA1_80",
    )
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if args.srtp == "cm":
        from aiortc import rtcdtlstransport

        # RTCDtlsTransport keeps a reference to this list: restrict it in place.
        rtcdtlstransport.SRTP_PROFILES[:] = [
            p for p in rtcdtlstransport.SRTP_PROFILES if p.openssl_profile == b"SRTP_AES128_CM_SHA1_80"
        ]
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="roomload %(levelname)s %(name)s: %(message)s")
    loopback_only()
    return run_on_loop(run(args), uvloop=not args.no_uvloop)


if __name__ == "__main__":
    sys.exit(main())
