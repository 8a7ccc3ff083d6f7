"""The per-copy forwarding engine: rewrite, remember, SRTP-protect and send.

Two implementations with one API:

* `compiled`: the C extension `confero.media._fanout`, built by the package's own build
  (`setup.py`, optional). Per copy it rewrites the header into a reused buffer, copies it into
  the retransmission ring, calls libsrtp's `srtp_protect` in place and `sendto()`s on a dup of
  the subscriber's socket, with no Python object created.
* `python`: the same logic in pure Python (below), used when the extension is not built or
  when `compiled_fanout = false`.

Objects (both engines):

* `Output` - one subscriber connection's send side (built by `aiortc_hooks.TransportTap`,
  which alone knows where aiortc keeps the socket and the SRTP session).
* `Ring` - one published video track's retransmission ring: the last 256 packets as received.
  Its copies share it and rebuild their own header for a NACK, so memory grows with
  published tracks, not with forwarded copies.
* `Copy` - one DownTrack's rewrite state and counters, and a reference to its track's Ring.
* `fanout(copies, packet, offset, keyframe, ring=None)` - remember one decrypted RTP packet
  (payload at `offset`) in the ring and forward it to every Copy in the list; returns the
  indices of copies that started on this packet (it was the keyframe they waited for), or
  None.

Batching (compiled engine): once a Router binds its event loop (`bind_loop`), copies are
queued per Output and flushed once at the end of the loop's I/O phase (`loop.call_soon`); each
Output's run of same-sized packets leaves in one `sendmsg()` with UDP_SEGMENT (UDP GSO), which
costs the kernel about as much as one datagram. `sendmmsg` would not help: it still pays the
full per-datagram cost (bench/sendpath.c measures both). See `_fanout.c` for the run rules.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from confero.media import rtp

logger = logging.getLogger(__name__)

RING_SIZE = 256  # packets kept for retransmission: about 1 s of 2.5 Mbit/s video, 2 s of 1 Mbit/s
RING_MASK = RING_SIZE - 1
YOUNG_PACKETS = 256  # after a start, drop packets older than the start point for this long
MAX_PACKET = 2048

_pack = rtp.HEADER.pack
_unpack_ts = rtp.U32.unpack_from


class PyOutput:
    """Send side of one subscriber connection: SRTP protect and the transport's sendto."""

    def __init__(self, protect: Callable[[bytes], bytes], sendto: Callable[[bytes, Any], None], addr: Any) -> None:
        self._protect: Callable[[bytes], bytes] | None = protect
        self._sendto: Callable[[bytes, Any], None] | None = sendto
        self._addr = addr
        self.sent = 0
        self.errors = 0

    @property
    def closed(self) -> bool:
        return self._sendto is None

    def send(self, packet: bytes) -> bool:
        if self._sendto is None or self._protect is None:
            return False
        try:
            self._sendto(self._protect(packet), self._addr)
        except Exception:
            self.errors += 1
            return False
        self.sent += 1
        return True

    def close(self) -> None:
        self._protect = None
        self._sendto = None


class PyRing:
    """Retransmission ring of one published track, shared by its copies (pure Python)."""

    __slots__ = ("_slots",)

    def __init__(self) -> None:
        self._slots: list[tuple[int, bytes, int] | None] = [None] * RING_SIZE

    def store(self, seq: int, packet: bytes, offset: int) -> None:
        self._slots[seq & RING_MASK] = (seq, packet, offset)

    def get(self, seq: int) -> tuple[bytes, int] | None:
        slot = self._slots[seq & RING_MASK]
        if slot is None or slot[0] != seq:
            return None
        return slot[1], slot[2]

    def clear(self) -> None:
        self._slots = [None] * RING_SIZE

    def held(self) -> int:
        return sum(slot is not None for slot in self._slots)


class PyCopy:
    """Rewrite state and retransmission ring of one forwarded copy (pure Python)."""

    __slots__ = (
        "_b0",
        "_begin_seq",
        "_ext",
        "_output",
        "_ring",
        "_rtx_seq",
        "_start_seq",
        "_young",
        "enabled",
        "last_seq",
        "last_ts",
        "next_seq",
        "next_ts",
        "octets",
        "packets",
        "payload_type",
        "retransmitted",
        "rtx_payload_type",
        "rtx_ssrc",
        "send_errors",
        "seq_off",
        "ssrc",
        "ts_off",
        "waiting",
    )  # fmt: skip

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        extension: bytes,
        ring: PyRing | None = None,
        rtx_ssrc: int = 0,
        rtx_payload_type: int = -1,
        next_seq: int = 0,
        next_ts: int = 0,
        rtx_seq: int = 0,
    ) -> None:
        if len(extension) > 64 or len(extension) % 4:
            raise ValueError("extension block must be a multiple of 4 bytes, at most 64")
        if not 0 <= payload_type <= 127 or rtx_payload_type > 127:
            raise ValueError("payload type out of range")
        if ring is not None and not isinstance(ring, PyRing):
            raise TypeError("ring must be a Ring or None")
        self.ssrc = ssrc
        self.payload_type = payload_type
        self.rtx_ssrc = rtx_ssrc
        self.rtx_payload_type = rtx_payload_type
        self._ext = bytes(extension)
        self._b0 = 0x80 | (0x10 if extension else 0)
        self.waiting = True
        self.enabled = True
        self._young = 0
        self._start_seq = 0
        self._begin_seq = 0
        self.seq_off = 0
        self.ts_off = 0
        self.next_seq = next_seq & 0xFFFF
        self.next_ts = next_ts & 0xFFFFFFFF
        self._rtx_seq = rtx_seq & 0xFFFF
        self.last_seq = 0
        self.last_ts = 0
        self.packets = 0
        self.octets = 0
        self.retransmitted = 0
        self.send_errors = 0
        self._ring = ring
        self._output: PyOutput | None = None

    @property
    def has_ring(self) -> bool:
        return self._ring is not None

    def set_output(self, output: PyOutput | None) -> None:
        if output is not None and not isinstance(output, PyOutput):
            raise TypeError("set_output() takes an Output or None")
        self._output = output

    def clear_ring(self) -> None:
        self._ring = None

    def resync(self, step: int) -> None:
        self.next_seq = (self.last_seq + 1) & 0xFFFF
        self.next_ts = (self.last_ts + step) & 0xFFFFFFFF
        self.waiting = True

    def _write(self, pad: int, marker: int, seq: int, ts: int, payload: bytes, keyframe: bool) -> bool:
        started = False
        if self.waiting:
            if not keyframe or not self.enabled:
                return False
            self.seq_off = (self.next_seq - seq) & 0xFFFF
            self.ts_off = (self.next_ts - ts) & 0xFFFFFFFF
            self._start_seq = seq
            self._begin_seq = self.next_seq
            self._young = YOUNG_PACKETS
            self.waiting = False
            started = True
        elif self._young:
            self._young -= 1
            if ((seq - self._start_seq) & 0xFFFF) >= 0x8000:
                return False
        if not self.enabled:
            return started
        if 12 + len(self._ext) + len(payload) > MAX_PACKET:
            self.send_errors += 1
            return started
        out_seq = (seq + self.seq_off) & 0xFFFF
        out_ts = (ts + self.ts_off) & 0xFFFFFFFF
        packet = _pack(self._b0 | pad, marker | self.payload_type, out_seq, out_ts, self.ssrc) + self._ext + payload
        self.last_ts = out_ts
        self.last_seq = out_seq
        self.packets += 1
        self.octets += len(payload)
        output = self._output
        if output is None or not output.send(packet):
            self.send_errors += 1
        return started

    def retransmit(self, lost: Any) -> None:
        ring, output = self._ring, self._output
        if ring is None or output is None or self.waiting:
            return
        for out_seq in lost:
            out_seq &= 0xFFFF
            if ((out_seq - self._begin_seq) & 0xFFFF) >= 0x8000:
                continue  # before our (re)start
            found = ring.get((out_seq - self.seq_off) & 0xFFFF)
            if found is None:
                continue
            original, offset = found
            if 12 + len(self._ext) + 2 + len(original) - offset > MAX_PACKET:
                continue
            b0 = self._b0 | (original[0] & 0x20)
            ts = (_unpack_ts(original, 4)[0] + self.ts_off) & 0xFFFFFFFF
            if self.rtx_payload_type >= 0:
                rtx_seq = self._rtx_seq
                self._rtx_seq = (rtx_seq + 1) & 0xFFFF
                header = _pack(b0, (original[1] & 0x80) | self.rtx_payload_type, rtx_seq, ts, self.rtx_ssrc)
                packet = header + self._ext + out_seq.to_bytes(2, "big") + original[offset:]
            else:
                header = _pack(b0, (original[1] & 0x80) | self.payload_type, out_seq, ts, self.ssrc)
                packet = header + self._ext + original[offset:]
            if output.send(packet):
                self.retransmitted += 1
            else:
                self.send_errors += 1


def py_fanout(
    copies: list[PyCopy], packet: bytes, offset: int, keyframe: bool, ring: PyRing | None = None
) -> list[int] | None:
    """Remember one decrypted RTP packet and forward it to every copy (pure Python)."""
    if len(packet) < 12 or not 12 <= offset <= len(packet):
        raise ValueError("not an RTP packet with that payload offset")
    if ring is not None:
        if not isinstance(ring, PyRing):
            raise TypeError("ring must be a Ring or None")
        if len(packet) <= MAX_PACKET:
            ring.store((packet[2] << 8) | packet[3], packet, offset)
    pad = packet[0] & 0x20
    marker = packet[1] & 0x80
    seq = (packet[2] << 8) | packet[3]
    ts = _unpack_ts(packet, 4)[0]
    payload = packet[offset:]
    started = None
    try:
        for i, copy in enumerate(copies):
            if copy._write(pad, marker, seq, ts, payload, keyframe):
                if started is None:
                    started = [i]
                else:
                    started.append(i)
    except AttributeError:
        if not all(isinstance(c, PyCopy) for c in copies):
            raise TypeError("copies must hold Copy objects") from None
        raise
    return started


@dataclass(frozen=True)
class Engine:
    """One implementation of the fan-out: its Copy and Output types and its fanout()."""

    name: str
    Copy: Any
    Output: Any
    Ring: Any
    fanout: Callable[..., list[int] | None]
    _loops: list[asyncio.AbstractEventLoop] = field(default_factory=list, compare=False, repr=False)

    @property
    def compiled(self) -> bool:
        return self.name == "compiled"

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Batch copies on this loop: queue them, flush once per loop iteration."""
        self._loops.append(loop)
        self._schedule()

    def unbind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush and stop batching on this loop (idempotent); an earlier bound loop takes over."""
        if loop in self._loops:
            self._loops.remove(loop)
            self._schedule()

    def _schedule(self) -> None:
        if not self.compiled:
            return  # the pure-Python engine sends each copy at once
        loop = self._loops[-1] if self._loops else None
        _fanout.set_scheduler(None if loop is None else functools.partial(loop.call_soon, _fanout.flush))


PYTHON = Engine("python", PyCopy, PyOutput, PyRing, py_fanout)

try:
    from confero.media import _fanout
except ImportError:  # not built (no C compiler at install time)
    COMPILED: Engine | None = None
else:
    COMPILED = Engine("compiled", _fanout.Copy, _fanout.Output, _fanout.Ring, _fanout.fanout)
    assert _fanout.RING_SIZE == RING_SIZE and _fanout.YOUNG_PACKETS == YOUNG_PACKETS
    assert _fanout.MAX_PACKET == MAX_PACKET


def open_outputs() -> int:
    """Compiled Outputs still holding a socket descriptor (0 once everything is closed)."""
    return 0 if COMPILED is None else int(_fanout.open_outputs())


def select(compiled: bool = True) -> Engine:
    """The compiled engine when asked for and built, else the pure-Python one (logged)."""
    if compiled and COMPILED is not None:
        return COMPILED
    if compiled:
        logger.warning("the compiled fan-out is not built; forwarding with the pure-Python engine")
    return PYTHON
