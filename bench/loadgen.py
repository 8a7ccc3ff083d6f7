"""Load generator for bench/quick.py: one replaying publisher and K counting players, in one process.

Everything talks to a Confero server on 127.0.0.1 over Ant Media's WebSocket protocol
(docs/protocol.md §3.1 publish, §3.2 play) with aiortc peers, gathering 127.0.0.1 only. The
signaling is the test suite's Ant Media client (tests/support/amsclient.py); the RTP helpers
are Confero's own (confero.media.rtp).

* Publisher: VP8 is encoded ONCE at start-up (PyAV/libvpx, `--frames` frames, a keyframe every
  `--gop` frames, ~10 packets per delta frame at 640x480), then replayed as `av.Packet`s at a
  fixed `--fps`. aiortc's RTCRtpSender packs an `av.Packet` without re-encoding, so the publisher
  costs little CPU per packet. Joiners start fast because keyframes recur (the replay cannot
  answer PLI: aiortc ignores PLI on the packet path).
* Players: each on its own WebSocket (like the SDK). Nothing is decoded: the DTLS transport's
  `_handle_rtp_data` is a no-op, and once ICE has nominated a pair its socket callback counts
  SRTP datagrams from the clear 12-byte header (count, sequence gaps, late/duplicate packets)
  and drops them before aioice's queue. One packet in 256 is SRTP-unprotected to check that it
  is genuine forwarded VP8.

Control: JSON lines on stdin, JSON lines on stdout (logs go to stderr).

    {"cmd": "subs", "n": K, "wait": s} -> {"event": "subs", "n": K, "receiving": K, "elapsed": s}
                              (waits up to `wait` s for every player's first packet)
    {"cmd": "stats"}          -> {"event": "stats", "t": ..., "sent": ..., "subs": [...]}
    {"cmd": "quit"}           -> {"event": "bye"} and exit

Bounded: the whole process exits after `--max-seconds`, and at most `--max-subs` players exist.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import fractions
import json
import logging
import math
import os
import socket
import sys
import time
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import av
from aiortc import MediaStreamTrack, RTCPeerConnection
from aiortc.mediastreams import MediaStreamError

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "src"))  # this tree's confero
sys.path.insert(0, str(REPO))  # tests.support: the client

from confero.media import rtp  # noqa: E402
from tests.support import eventually  # noqa: E402
from tests.support.amsclient import (  # noqa: E402
    AmsSocket,
    Message,
    Player,
    Publisher,
    build_publisher_pc,
    loopback_only,
)

logger = logging.getLogger("bench.loadgen")

VP8_PAYLOAD_MAX = 1300  # aiortc's PACKET_MAX (descriptor included)
RCVBUF = 4 << 20


# ------------------------------------------------------------------------------------ helpers

#: WebSocket messages a bench client keeps (its clients live for the whole run)
HISTORY = 200


def starts_keyframe(packet: bytes) -> bool:
    """An RTP packet (VP8 payload) that starts a key frame."""
    offset = rtp.payload_offset(packet)
    return offset >= 0 and rtp.vp8_is_keyframe(packet[offset:])


# --------------------------------------------------------------------------- pre-encoded VP8


def encode_vp8(frames: int, gop: int, width: int, height: int, bitrate: int, noise: int) -> list[tuple[bytes, bool]]:
    """Encode a moving gradient with per-frame noise once; returns (bitstream, keyframe) per frame.

    The noise keeps libvpx rate-limited, so delta frames land near `bitrate / 30` bytes
    (~10 RTP packets at the defaults) and keyframes are only ~2x larger (max-intra-rate).
    """
    import numpy as np  # only needed here; numpy is in the venv with PyAV

    ctx = av.CodecContext.create("libvpx", "w")
    ctx.width, ctx.height, ctx.pix_fmt = width, height, "yuv420p"
    ctx.time_base = fractions.Fraction(1, 30)
    ctx.framerate = fractions.Fraction(30, 1)
    ctx.bit_rate = bitrate
    ctx.gop_size = gop
    ctx.options = {
        "deadline": "realtime",
        "cpu-used": "8",
        "lag-in-frames": "0",
        "auto-alt-ref": "0",
        "static-thresh": "0",
        "max-intra-rate": "300",
        "minrate": str(bitrate),
        "maxrate": str(bitrate),
        "bufsize": str(bitrate // 2),
        "qmin": "4",
        "qmax": "63",
    }
    rng = np.random.default_rng(1)
    ramp = np.add.outer(np.arange(height), np.arange(width))
    out: list[tuple[bytes, bool]] = []
    for i in range(frames):
        image = np.full((height * 3 // 2, width), 128, np.uint8)
        image[:height] = (ramp + 4 * i) % 256
        if noise:
            image[:height] += rng.integers(0, noise, (height, width), dtype=np.uint8)
        frame = av.VideoFrame.from_ndarray(image, format="yuv420p")
        frame.pts = i
        frame.time_base = ctx.time_base
        force_key = i % gop == 0
        if force_key:
            frame.pict_type = av.video.frame.PictureType.I
        for packet in ctx.encode(frame):
            out.append((bytes(packet), bool(packet.is_keyframe)))
    for packet in ctx.encode(None):
        out.append((bytes(packet), bool(packet.is_keyframe)))
    if not out or not out[0][1]:
        raise RuntimeError("the encoded sequence does not start with a keyframe")
    return out


class ReplayTrack(MediaStreamTrack):
    """Yields the pre-encoded frames as av.Packet at a fixed rate, looping; ends after max_seconds."""

    kind = "video"

    def __init__(self, frames: list[tuple[bytes, bool]], fps: float, max_seconds: float) -> None:
        super().__init__()
        self.frames = frames
        self.fps = fps
        self.time_base = fractions.Fraction(1, int(fps)) if float(fps).is_integer() else fractions.Fraction(1, 90000)
        self.max_seconds = max_seconds
        self.count = 0
        self.resyncs = 0
        self._start: float | None = None

    async def recv(self) -> av.Packet:
        if self.readyState != "live":
            raise MediaStreamError
        loop = asyncio.get_running_loop()
        now = loop.time()
        if self._start is None:
            self._start = now
        else:
            if now - self._start > self.max_seconds:
                raise MediaStreamError
            target = self._start + self.count / self.fps
            delay = target - now
            if delay > 0:
                await asyncio.sleep(delay)
            elif delay < -0.25:  # stalled (CPU starved): do not burst to catch up, restart the clock
                self.resyncs += 1
                self._start = now - self.count / self.fps
        data, _key = self.frames[self.count % len(self.frames)]
        packet = av.Packet(data)
        if self.time_base.denominator == 90000:
            packet.pts = int(self.count * 90000 / self.fps)
        else:
            packet.pts = self.count
        packet.time_base = self.time_base
        self.count += 1
        return packet


# --------------------------------------------------------------------------------- publisher


class BenchPublisher:
    """Publishes the replayed VP8 (video only) on its own WebSocket."""

    def __init__(self, url: tuple[str, int, str], stream_id: str, track: ReplayTrack) -> None:
        self.host, self.port, self.app = url
        self.stream_id = stream_id
        self.track = track
        self.sock: AmsSocket | None = None
        self.publisher: Publisher | None = None

    @property
    def pc(self) -> RTCPeerConnection | None:
        return self.publisher.pc if self.publisher is not None else None

    @property
    def sender(self) -> Any:
        media = self.publisher.media if self.publisher is not None else None
        return media.video_transceiver.sender if media is not None and media.video_transceiver is not None else None

    async def start(self, timeout: float) -> None:
        self.sock = await AmsSocket.connect(self.port, self.app, host=self.host, history_limit=HISTORY)
        self.publisher = Publisher(
            self.sock,
            self.stream_id,
            with_audio=False,
            media_factory=lambda: build_publisher_pc("VP8", with_audio=False, video_track=self.track),
        )
        await self.publisher.start(timeout)
        await self.sock.wait_for("notification", "publish_started", stream_id=self.stream_id, timeout=timeout)

    @property
    def packets_sent(self) -> int:
        return self.sender._RTCRtpSender__packet_count if self.sender is not None else 0  # type: ignore[attr-defined]

    @property
    def octets_sent(self) -> int:
        return self.sender._RTCRtpSender__octet_count if self.sender is not None else 0  # type: ignore[attr-defined]

    async def close(self) -> None:
        self.track.stop()
        if self.publisher is not None:
            with contextlib.suppress(Exception):
                await asyncio.wait_for(self.publisher.stop(), 5)
        if self.sock is not None:
            await self.sock.close()


# ------------------------------------------------------------------------------------ player


class CountingPlayer(Player):
    """Plays the stream; counts SRTP datagrams without decrypting (except a sample) or decoding."""

    SAMPLE_EVERY = 256

    def __init__(self, sock: AmsSocket, stream_id: str, index: int) -> None:
        super().__init__(sock, stream_id, count_media=False)
        self.index = index
        self.received = 0  # SRTP datagrams seen on the nominated socket (media SSRC)
        self.other = 0  # SRTP with another SSRC (RTX)
        self.before_hook = 0  # RTP that arrived through aiortc's DTLS loop before the socket hook
        self.gaps = 0  # sequence numbers skipped (forward jumps - 1)
        self.late = 0  # packets older than the highest seen (reordered or retransmitted)
        self.dups = 0
        self.max_seq = -1
        self.ssrc: int | None = None
        self.payload_type: int | None = None
        self.first_is_keyframe: bool | None = None
        self.samples_ok = 0
        self.samples_bad = 0
        self.bytes = 0
        self.first_at: float | None = None

    @classmethod
    async def open(cls, url: tuple[str, int, str], stream_id: str, index: int) -> CountingPlayer:
        host, port, app = url
        return cls(await AmsSocket.connect(port, app, host=host, history_limit=HISTORY), stream_id, index)

    def _check_plain(self, plain: bytes) -> None:
        ok = (plain[1] & 0x7F) == self.payload_type
        if self.first_is_keyframe is None:
            self.first_is_keyframe = starts_keyframe(plain)
        if ok:
            self.samples_ok += 1
        else:
            self.samples_bad += 1

    def _count(self, data: bytes) -> None:
        count_sequence(self, (data[2] << 8) | data[3])

    def before_answer(self, pc: RTCPeerConnection, offer: Message) -> None:
        """Before any media: note the VP8 payload type; decrypted RTP is counted, never decoded."""
        if self.payload_type is not None:
            return  # a re-offer: the hooks are in place
        transceivers = pc.getTransceivers()
        codec = next(c for c in transceivers[0]._codecs if c.mimeType.lower() == "video/vp8")
        self.payload_type = codec.payloadType

        async def no_decode(data: bytes, arrival_time_ms: int) -> None:
            # Before the socket hook: decrypted RTP from aiortc's loop. Count, never decode.
            if data[8:12] and self.ssrc is None:
                self.ssrc = int.from_bytes(data[8:12], "big")
            self.before_hook += 1
            if self.first_is_keyframe is None:
                self._check_plain(data)
            if self.first_at is None:
                self.first_at = time.monotonic()

        transceivers[0].receiver.transport._handle_rtp_data = no_decode  # instance attribute wins over the method

    async def start(self, timeout: float = 10.0) -> None:
        await super().start(timeout)
        assert self.pc is not None
        self._hook_socket(self.pc.getTransceivers()[0].receiver.transport)

    def _hook_socket(self, dtls: Any) -> None:
        pair = dtls.transport._connection._nominated.get(1)
        if pair is None:
            raise RuntimeError("connected without a nominated pair")
        protocol = pair.protocol
        # A big receive buffer, so that a stall of this (shared) client process does not show
        # up as loss; the kernel caps it at net.core.rmem_max.
        with contextlib.suppress(Exception):
            protocol.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, RCVBUF)
        original = protocol.datagram_received
        unprotect = dtls._rx_srtp.unprotect
        sample = self.SAMPLE_EVERY
        player = self

        def datagram_received(data: bytes, addr: Any) -> None:
            b0 = data[0]
            if 127 < b0 < 192 and not (191 < data[1] < 224):
                ssrc = int.from_bytes(data[8:12], "big")
                if player.ssrc is None:
                    player.ssrc = ssrc
                if ssrc != player.ssrc:
                    player.other += 1
                    return
                n = player.received
                player.received = n + 1
                player.bytes += len(data)
                player._count(data)
                if n % sample == 0:
                    if player.first_at is None:
                        player.first_at = time.monotonic()
                    try:
                        player._check_plain(unprotect(data))
                    except Exception:
                        player.samples_bad += 1
                return
            original(data, addr)

        protocol.datagram_received = datagram_received

    def stats(self) -> dict[str, Any]:
        return {
            "index": self.index,
            "received": self.received,
            "bytes": self.bytes,
            "before_hook": self.before_hook,
            "other_ssrc": self.other,
            "gaps": self.gaps,
            "late": self.late,
            "dups": self.dups,
            "first_is_keyframe": self.first_is_keyframe,
            "samples_ok": self.samples_ok,
            "samples_bad": self.samples_bad,
            "state": self.pc.connectionState if self.pc else "new",
        }

    async def close(self) -> None:
        with contextlib.suppress(Exception):
            await asyncio.wait_for(self.stop(), 5)
        await self.sock.close()


# ------------------------------------------------------------------------------------- main


def emit(obj: dict[str, Any]) -> None:
    sys.stdout.write(json.dumps(obj) + "\n")
    sys.stdout.flush()


class Commands:
    """The controller's JSON commands on stdin, one per line, until `quit`, end of input or the
    deadline (`timed_out`, after emitting a `timeout` event). Lines that are not JSON are
    answered with an `error` event and skipped."""

    def __init__(self, deadline: float) -> None:
        self.deadline = deadline
        self.timed_out = False

    async def __aiter__(self) -> AsyncIterator[dict[str, Any]]:
        loop = asyncio.get_running_loop()
        stdin = asyncio.StreamReader()
        await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(stdin), sys.stdin)
        while True:
            remaining = self.deadline - loop.time()
            if remaining <= 0:
                emit({"event": "timeout"})
                self.timed_out = True
                return
            try:
                line = await asyncio.wait_for(stdin.readline(), remaining)
            except TimeoutError:
                continue
            if not line:
                return  # the controller went away
            try:
                cmd = json.loads(line)
            except ValueError:
                emit({"event": "error", "error": f"bad command {line!r}"})
                continue
            if cmd.get("cmd") == "quit":
                return
            yield cmd


def cpu_seconds() -> float:
    t = os.times()
    return t.user + t.system


async def run(args: argparse.Namespace) -> int:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + args.max_seconds
    url = (args.host, args.port, args.app)
    t0 = time.monotonic()
    frames = encode_vp8(args.frames, args.gop, args.width, args.height, args.bitrate, args.noise)
    per_frame = [math.ceil(len(b) / (VP8_PAYLOAD_MAX - 4)) for b, _ in frames]
    key_packets = [p for p, (_, k) in zip(per_frame, frames, strict=True) if k]
    encode_s = time.monotonic() - t0
    track = ReplayTrack(frames, args.fps, args.max_seconds)
    publisher = BenchPublisher(url, args.stream, track)
    players: list[CountingPlayer] = []
    commands = Commands(deadline)
    code = 0
    try:
        await publisher.start(args.timeout)
        emit(
            {
                "event": "ready",
                "frames": len(frames),
                "keyframes": sum(1 for _, k in frames if k),
                "packets_per_frame": sum(per_frame) / len(per_frame),
                "packets_per_keyframe": sum(key_packets) / max(1, len(key_packets)),
                "bytes_per_frame": sum(len(b) for b, _ in frames) / len(frames),
                "encode_seconds": round(encode_s, 3),
                "fps": args.fps,
                "expected_pps": args.fps * sum(per_frame) / len(per_frame),
                "loop": type(loop).__module__,
            }
        )
        async for cmd in commands:
            name = cmd.get("cmd")
            if name == "stats":
                emit(
                    {
                        "event": "stats",
                        "t": time.monotonic(),
                        "cpu": cpu_seconds(),
                        "sent": publisher.packets_sent,
                        "sent_octets": publisher.octets_sent,
                        "frames": track.count,
                        "resyncs": track.resyncs,
                        "publisher_state": publisher.pc.connectionState if publisher.pc else "new",
                        "subs": [p.stats() for p in players],
                    }
                )
            elif name == "subs":
                n = max(0, min(int(cmd.get("n", 0)), args.max_subs))
                started = time.monotonic()
                try:
                    while len(players) > n:
                        await players.pop().close()
                    new = [await CountingPlayer.open(url, args.stream, i) for i in range(len(players), n)]
                    players.extend(new)
                    # Join in small batches so ICE/DTLS handshakes do not starve each other.
                    for i in range(0, len(new), 4):
                        await asyncio.gather(*(p.start(args.timeout) for p in new[i : i + 4]))
                    # Bounded: up to `wait` s for every player's first packet, then report.
                    with contextlib.suppress(AssertionError):
                        await eventually(
                            lambda: all(p.received > 0 for p in players),
                            timeout=float(cmd.get("wait", args.timeout)),
                            what="every player's first packet",
                            interval=0.05,
                        )
                    emit(
                        {
                            "event": "subs",
                            "n": len(players),
                            "receiving": sum(1 for p in players if p.received > 0),
                            "elapsed": round(time.monotonic() - started, 3),
                        }
                    )
                except Exception as exc:  # report, keep the process alive for stats/quit
                    logger.exception("adding players failed")
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
        await asyncio.wait_for(
            asyncio.gather(*(p.close() for p in players), publisher.close(), return_exceptions=True), 15
        )
        emit({"event": "bye"})
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--app", default="WebRTCAppEE")
    parser.add_argument("--stream", default="bench")
    parser.add_argument("--fps", type=float, default=200.0, help="replayed frames per second")
    parser.add_argument("--frames", type=int, default=60, help="pre-encoded frames (looped)")
    parser.add_argument("--gop", type=int, default=30, help="a keyframe every GOP frames")
    parser.add_argument("--width", type=int, default=640)
    parser.add_argument("--height", type=int, default=480)
    parser.add_argument("--bitrate", type=int, default=3_000_000, help="encoder bitrate at 30 fps (sets frame size)")
    parser.add_argument("--noise", type=int, default=16, help="per-frame luma noise amplitude")
    parser.add_argument("--timeout", type=float, default=20.0, help="per signaling/connect step")
    parser.add_argument("--max-subs", type=int, default=32)
    parser.add_argument("--max-seconds", type=float, default=300.0, help="hard limit on the whole run")
    parser.add_argument("--no-uvloop", action="store_true")
    args = parser.parse_args(argv)
    if not args.host.startswith("127."):
        parser.error("--host must be a loopback address")
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr, format="loadgen %(levelname)s %(name)s: %(message)s")
    loopback_only()
    return run_on_loop(run(args), uvloop=not args.no_uvloop)


def count_sequence(stats: Any, seq: int) -> None:
    """Sequence accounting from the clear RTP header: `stats` has max_seq (-1 at first), gaps, late, dups."""
    max_seq = stats.max_seq
    if max_seq < 0:
        stats.max_seq = seq
        return
    d = (seq - max_seq) & 0xFFFF
    if d == 0:
        stats.dups += 1
    elif d < 0x8000:
        stats.gaps += d - 1
        stats.max_seq = seq
    else:
        stats.late += 1


def run_on_loop(coroutine: Any, *, uvloop: bool = True) -> Any:
    """Run the load generator's main coroutine, on uvloop when it is installed and wanted."""
    if uvloop:
        try:
            import uvloop as _uvloop
        except ImportError:
            pass
        else:
            return _uvloop.run(coroutine)
    return asyncio.run(coroutine)


if __name__ == "__main__":
    sys.exit(main())
