"""The per-copy forwarding engine: rewrite, remember, SRTP-protect and send.

Two implementations of one contract (the Protocols `Engine`, `Copy`, `Numbering`, `Ring`,
`Output` and `SendQueue` below; `_fanout.pyi` types the C module, so mypy checks it against
them):

* `python`, in this module, is the reference. Its code is the specification of what a copy
  sends: for the same calls the compiled engine must send the same bytes and keep the same
  counters, and tests/unit/test_fanout_differential.py feeds both the same random packet
  sequences, NACKs, resyncs and takeovers and compares their SRTP datagrams byte for byte.
  It is also the fallback where the extension was not built (no C compiler at install time;
  `select()` logs a warning), and `compiled_fanout = false` chooses it on purpose. It sends
  each copy at once.
* `compiled`, the C extension `confero.media._fanout`, built by the package's own build
  (`setup.py`, optional), is what a server runs. Per copy it rewrites the header into a buffer
  on the stack, calls libsrtp's `srtp_protect` in place and `sendto()`s on a dup of the
  subscriber's socket, with no Python object created; on a bound event loop it batches.

Objects (both engines):

* `Output` - one subscriber connection's send side (built by `aiortc_hooks.srtp_output`,
  which alone knows where aiortc keeps the socket and the SRTP session).
* `Ring` - one published video track's retransmission ring: the last 256 packets as received.
  Its copies share it and rebuild their own header for a NACK, so memory grows with
  published tracks, not with forwarded copies.
* `Numbering` - one output stream's numbering: the offsets fixed at a start, the last
  sequence number and timestamp sent, the RTX sequence number. Each Copy makes its own unless
  given another's (`numbering=`): copies of different layers that feed one player's stream
  share one, so a switch continues the same sequence/timestamp space (see `Copy.resync`).
* `Copy` - one DownTrack's rewrite state and counters, its Numbering, and a reference to its
  track's Ring.
* `fanout(copies, packet, offset, keyframe, ring=None)` - remember one decrypted RTP packet
  (payload at `offset`) in the ring and forward it to every Copy in the list; returns the
  indices of copies that started on this packet (it was the keyframe they waited for), or
  None.

Sharing a Numbering: the copy that last started with it numbers with it. Another copy of the
same Numbering takes over only after `resync(step)`: at its next keyframe it continues after
the last packet sent with that Numbering (by any copy: sequence + 1, timestamp + step), and
from then on the former copy drops its packets and waits (it starts again only after its own
`resync`). So a standby copy on another simulcast layer is switched to with one call, and the
player sees one stream with no sequence gap and no repeat.

Batching (compiled engine): `bind_loop(loop)` gives that event loop its own send queue (a
`SendQueue`: the C module's `Queue`), so two servers on two loops in two threads never share
or steal one. While the loop runs, copies are queued per Output and flushed once at the end
of the loop's I/O phase (`loop.call_soon`); each Output's run of same-sized packets leaves in
one `sendmsg()` with UDP_SEGMENT (UDP GSO), which costs the kernel about as much as one
datagram. `sendmmsg` would not help: it still pays the full per-datagram cost
(bench/sendpath.c measures both). `unbind_loop(loop)` flushes what is queued and, after as
many unbinds as binds, drops the queue. See `_fanout.c` for the run rules.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol, cast

from confero.media import rtp

logger = logging.getLogger(__name__)

RING_SIZE = 256  # packets kept for retransmission: about 1 s of 2.5 Mbit/s video, 2 s of 1 Mbit/s
RING_MASK = RING_SIZE - 1
YOUNG_PACKETS = 256  # after a start, drop packets older than the start point for this long
MAX_PACKET = 2048
MAX_EXTENSION = 64

_pack = rtp.HEADER.pack
_unpack_ts = rtp.U32.unpack_from


# -------------------------------------------------------------------------------- contract


# Each engine takes only its own Outputs, Rings and Numberings (TypeError for another engine's):
# the Protocols cannot say which, so parameters are typed with them.


class Output(Protocol):
    """Send side of one subscriber connection (its constructor differs per engine: see
    `aiortc_hooks.srtp_output`)."""

    @property
    def sent(self) -> int: ...
    @property
    def errors(self) -> int: ...
    @property
    def closed(self) -> bool: ...
    def send(self, packet: bytes) -> bool:
        """Protect one RTP packet and send it; False when dropped."""

    def close(self) -> None:
        """Let go of the socket (idempotent); queued copies of it are dropped."""


class Ring(Protocol):
    """Retransmission ring of one published track, shared by its copies."""

    def clear(self) -> None: ...
    def held(self) -> int: ...


class Numbering(Protocol):
    """One output stream's sequence and timestamp numbering (read-only from outside)."""

    def __init__(self, next_seq: int = 0, next_ts: int = 0, rtx_seq: int = 0) -> None: ...
    @property
    def next_seq(self) -> int:
        """The sequence number the next start begins with."""

    @property
    def next_ts(self) -> int: ...
    @property
    def last_seq(self) -> int:
        """The last sequence number sent."""

    @property
    def last_ts(self) -> int: ...
    @property
    def seq_off(self) -> int:
        """Output minus source sequence number, fixed at the last start."""

    @property
    def ts_off(self) -> int: ...
    @property
    def rtx_seq(self) -> int:
        """The next RTX sequence number."""

    @property
    def resync_step(self) -> int | None:
        """The timestamp step of a resync that the next start applies, or None."""


class Copy(Protocol):
    """One forwarded copy: rewrite state, counters, its Numbering and its track's Ring."""

    waiting: bool  # no keyframe yet since the (re)start: nothing is sent
    enabled: bool  # False: nothing is sent (and a waiting copy does not start)

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        extension: bytes,
        ring: Ring | None = None,
        rtx_ssrc: int = 0,
        rtx_payload_type: int = -1,
        next_seq: int = ...,
        next_ts: int = ...,
        rtx_seq: int = ...,
        numbering: Numbering | None = None,
    ) -> None: ...
    @property
    def ssrc(self) -> int: ...
    @property
    def payload_type(self) -> int: ...
    @property
    def rtx_ssrc(self) -> int: ...
    @property
    def rtx_payload_type(self) -> int: ...
    @property
    def packets(self) -> int: ...
    @property
    def octets(self) -> int: ...
    @property
    def retransmitted(self) -> int: ...
    @property
    def send_errors(self) -> int: ...
    @property
    def has_ring(self) -> bool: ...
    @property
    def numbering(self) -> Numbering: ...
    @property
    def seq_off(self) -> int: ...
    @property
    def ts_off(self) -> int: ...
    @property
    def last_seq(self) -> int: ...
    @property
    def last_ts(self) -> int: ...
    def set_output(self, output: Output | None) -> None: ...
    def clear_ring(self) -> None: ...
    def resync(self, step: int, /) -> None:
        """From the next keyframe, continue the numbering after its last packet (+ step)."""

    def retransmit(self, lost: Iterable[int], /) -> None:
        """Resend these output sequence numbers from the ring (as RTX where negotiated)."""


class SendQueue(Protocol):
    """One bound event loop's send queue (compiled engine)."""

    max_delay: float  # seconds the oldest queued copy may wait before the next fanout() flushes

    @property
    def loop(self) -> asyncio.AbstractEventLoop | None: ...
    @property
    def binds(self) -> int: ...
    def flush(self) -> None: ...
    def queued(self) -> int: ...
    def gso_enabled(self) -> bool: ...


# `copies` is typed by its elements' runtime check ("copies must hold Copy objects"), so that
# a caller's list[object] or list[Copy] both fit.
FanoutFunction = Callable[[Sequence[object], bytes, int, bool, Ring | None], list[int] | None]


class Engine(Protocol):
    """One implementation of the fan-out."""

    @property
    def name(self) -> str: ...
    @property
    def compiled(self) -> bool: ...
    @property
    def Copy(self) -> type[Copy]: ...
    @property
    def Output(self) -> type[Output]: ...
    @property
    def Ring(self) -> type[Ring]: ...
    @property
    def Numbering(self) -> type[Numbering]: ...
    @property
    def fanout(self) -> FanoutFunction: ...
    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> SendQueue | None:
        """Batch the copies forwarded while `loop` runs (compiled engine; None: sent at once)."""

    def unbind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush `loop`'s queue and undo one bind_loop() (idempotent once undone)."""


# ------------------------------------------------------------ the reference engine (Python)


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
        if len(packet) > MAX_PACKET:
            self.errors += 1
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

    def retarget(self, sendto: Callable[[bytes, Any], None], addr: Any) -> None:
        """Send through `sendto` to `addr` from now on (the peer's address changed)."""
        if self._sendto is not None:
            self._sendto = sendto
            self._addr = addr


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


class PyNumbering:
    """One output stream's numbering (pure Python); `owner` is the serial of its copy."""

    __slots__ = ("last_seq", "last_ts", "next_seq", "next_ts", "owner", "resync_step", "rtx_seq", "seq_off", "ts_off")

    def __init__(self, next_seq: int = 0, next_ts: int = 0, rtx_seq: int = 0) -> None:
        self.next_seq = next_seq & 0xFFFF
        self.next_ts = next_ts & 0xFFFFFFFF
        self.rtx_seq = rtx_seq & 0xFFFF
        self.last_seq = 0
        self.last_ts = 0
        self.seq_off = 0
        self.ts_off = 0
        self.resync_step: int | None = None
        self.owner = 0  # 0: no copy has started with it yet


_serials = itertools.count(1)  # Copy identities for Numbering ownership (never reused)
_UNSET: Any = object()


class PyCopy:
    """Rewrite state and counters of one forwarded copy (pure Python)."""

    __slots__ = (
        "_b0",
        "_begin_seq",
        "_ext",
        "_output",
        "_ring",
        "_serial",
        "_start_seq",
        "_young",
        "enabled",
        "numbering",
        "octets",
        "packets",
        "payload_type",
        "retransmitted",
        "rtx_payload_type",
        "rtx_ssrc",
        "send_errors",
        "ssrc",
        "waiting",
    )  # fmt: skip

    def __init__(
        self,
        ssrc: int,
        payload_type: int,
        extension: bytes,
        ring: Ring | None = None,
        rtx_ssrc: int = 0,
        rtx_payload_type: int = -1,
        next_seq: int = _UNSET,
        next_ts: int = _UNSET,
        rtx_seq: int = _UNSET,
        numbering: Numbering | None = None,
    ) -> None:
        if ring is not None and not isinstance(ring, PyRing):
            raise TypeError("ring must be a Ring or None")
        if numbering is not None and not isinstance(numbering, PyNumbering):
            raise TypeError("numbering must be a Numbering or None")
        given = [value for value in (next_seq, next_ts, rtx_seq) if value is not _UNSET]
        if numbering is not None and given:
            raise TypeError("a shared numbering has its own next_seq, next_ts and rtx_seq")
        if len(extension) > MAX_EXTENSION or len(extension) % 4:
            raise ValueError("extension block must be a multiple of 4 bytes, at most 64")
        if not 0 <= payload_type <= 127 or rtx_payload_type > 127:
            raise ValueError("payload type out of range")
        if numbering is None:
            numbering = PyNumbering(
                0 if next_seq is _UNSET else next_seq,
                0 if next_ts is _UNSET else next_ts,
                0 if rtx_seq is _UNSET else rtx_seq,
            )
        self.numbering: PyNumbering = numbering
        self._serial = next(_serials)
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
        self.packets = 0
        self.octets = 0
        self.retransmitted = 0
        self.send_errors = 0
        self._ring: PyRing | None = ring
        self._output: Output | None = None

    @property
    def has_ring(self) -> bool:
        return self._ring is not None

    @property
    def seq_off(self) -> int:
        return self.numbering.seq_off

    @property
    def ts_off(self) -> int:
        return self.numbering.ts_off

    @property
    def last_seq(self) -> int:
        return self.numbering.last_seq

    @property
    def last_ts(self) -> int:
        return self.numbering.last_ts

    def set_output(self, output: Output | None) -> None:
        if output is not None and not isinstance(output, PyOutput):
            raise TypeError("set_output() takes an Output or None")
        self._output = output

    def clear_ring(self) -> None:
        self._ring = None

    def resync(self, step: int, /) -> None:
        self.numbering.resync_step = step & 0xFFFFFFFF
        self.waiting = True

    def forward(self, pad: int, marker: int, seq: int, ts: int, payload: bytes, keyframe: bool) -> bool:
        numbering = self.numbering
        started = False
        if self.waiting:
            if not keyframe or not self.enabled:
                return False
            step = numbering.resync_step
            if step is not None:
                # continue after the last packet sent with this numbering, by whichever copy
                numbering.next_seq = (numbering.last_seq + 1) & 0xFFFF
                numbering.next_ts = (numbering.last_ts + step) & 0xFFFFFFFF
                numbering.resync_step = None
            elif numbering.owner and numbering.owner != self._serial:
                return False  # another copy numbers with it: only resync() lets this one take over
            numbering.seq_off = (numbering.next_seq - seq) & 0xFFFF
            numbering.ts_off = (numbering.next_ts - ts) & 0xFFFFFFFF
            numbering.owner = self._serial
            self._start_seq = seq
            self._begin_seq = numbering.next_seq
            self._young = YOUNG_PACKETS
            self.waiting = False
            started = True
        elif numbering.owner != self._serial:
            self.waiting = True  # another copy took our numbering over
            return False
        elif self._young:
            self._young -= 1
            if ((seq - self._start_seq) & 0xFFFF) >= 0x8000:
                return False
        if not self.enabled:
            return started
        if 12 + len(self._ext) + len(payload) > MAX_PACKET:
            self.send_errors += 1
            return started
        out_seq = (seq + numbering.seq_off) & 0xFFFF
        out_ts = (ts + numbering.ts_off) & 0xFFFFFFFF
        packet = _pack(self._b0 | pad, marker | self.payload_type, out_seq, out_ts, self.ssrc) + self._ext + payload
        numbering.last_ts = out_ts
        numbering.last_seq = out_seq
        self.packets += 1
        self.octets += len(payload)
        output = self._output
        if output is None or not output.send(packet):
            self.send_errors += 1
        return started

    def retransmit(self, lost: Iterable[int], /) -> None:
        ring, output, numbering = self._ring, self._output, self.numbering
        if ring is None or output is None or self.waiting or numbering.owner != self._serial:
            return
        for out_seq in lost:
            out_seq &= 0xFFFF
            if ((out_seq - self._begin_seq) & 0xFFFF) >= 0x8000:
                continue  # before our (re)start
            found = ring.get((out_seq - numbering.seq_off) & 0xFFFF)
            if found is None:
                continue
            original, offset = found
            rtx = self.rtx_payload_type >= 0
            if 12 + len(self._ext) + (2 if rtx else 0) + len(original) - offset > MAX_PACKET:
                continue
            b0 = self._b0 | (original[0] & 0x20)
            ts = (_unpack_ts(original, 4)[0] + numbering.ts_off) & 0xFFFFFFFF
            if rtx:
                rtx_seq = numbering.rtx_seq
                numbering.rtx_seq = (rtx_seq + 1) & 0xFFFF
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
    copies: Sequence[object], packet: bytes, offset: int, keyframe: bool, ring: Ring | None = None
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
        for i, copy in enumerate(cast("Sequence[PyCopy]", copies)):
            if copy.forward(pad, marker, seq, ts, payload, keyframe):
                if started is None:
                    started = [i]
                else:
                    started.append(i)
    except AttributeError:
        if not all(isinstance(c, PyCopy) for c in copies):
            raise TypeError("copies must hold Copy objects") from None
        raise
    return started


# ----------------------------------------------------------------------------- the engines


@dataclass(frozen=True)
class _Engine:
    """An Engine: its types, its fanout() and how it batches on an event loop."""

    name: str
    Copy: type[Copy]
    Output: type[Output]
    Ring: type[Ring]
    Numbering: type[Numbering]
    fanout: FanoutFunction
    _bind: Callable[[asyncio.AbstractEventLoop], SendQueue | None]
    _unbind: Callable[[asyncio.AbstractEventLoop], object]

    @property
    def compiled(self) -> bool:
        return self.name == "compiled"

    def bind_loop(self, loop: asyncio.AbstractEventLoop) -> SendQueue | None:
        """Batch the copies forwarded while `loop` runs: queue them, flush once per iteration.

        The queue belongs to `loop` alone. Bindings are counted: each unbind_loop() undoes one.
        """
        return self._bind(loop)

    def unbind_loop(self, loop: asyncio.AbstractEventLoop) -> None:
        """Flush `loop`'s queue and undo one bind_loop(); after the last, copies forwarded on
        `loop` are sent at once. Idempotent once every bind is undone."""
        self._unbind(loop)


def _no_queue(loop: asyncio.AbstractEventLoop) -> None:
    """The pure-Python engine sends each copy at once: no per-loop state."""


PYTHON: Engine = _Engine("python", PyCopy, PyOutput, PyRing, PyNumbering, py_fanout, _no_queue, _no_queue)

COMPILED: Engine | None
try:
    from confero.media import _fanout
except ImportError:  # not built (no C compiler at install time)
    COMPILED = None
else:
    if (_fanout.RING_SIZE, _fanout.YOUNG_PACKETS, _fanout.MAX_PACKET, _fanout.MAX_EXTENSION) != (
        RING_SIZE,
        YOUNG_PACKETS,
        MAX_PACKET,
        MAX_EXTENSION,
    ):
        raise RuntimeError("confero.media._fanout was built from another _fanout.c: rebuild it (setup.py build_ext)")
    COMPILED = _Engine(
        "compiled",
        _fanout.Copy,
        _fanout.Output,
        _fanout.Ring,
        _fanout.Numbering,
        _fanout.fanout,
        _fanout.bind_loop,
        _fanout.unbind_loop,
    )


def open_outputs() -> int:
    """Compiled Outputs still holding a socket descriptor (0 once everything is closed)."""
    return 0 if COMPILED is None else _fanout.open_outputs()


def select(compiled: bool = True) -> Engine:
    """The compiled engine when asked for and built, else the pure-Python one (logged)."""
    if compiled and COMPILED is not None:
        return COMPILED
    if compiled:
        logger.warning("the compiled fan-out is not built; forwarding with the pure-Python engine")
    return PYTHON
