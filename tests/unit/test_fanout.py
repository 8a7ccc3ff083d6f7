"""The fan-out engines (compiled C and pure Python) against real SRTP and real UDP sockets.

Each test runs on both engines: packets go through `fanout()`, are protected with a real
libsrtp session, sent over a loopback socket, received, unprotected and compared byte for
byte with what the rewrite must produce.
"""

from __future__ import annotations

import asyncio
import os
import socket
import struct
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pylibsrtp
import pytest

from confero.media import fanout
from confero.media.aiortc_hooks import srtp_output

KEY = bytes(range(30))  # AES_CM_128 master key (16) + salt (14)
ENGINES = ["compiled", "python"]


def engine_named(name: str) -> fanout.Engine:
    engine = fanout.COMPILED if name == "compiled" else fanout.PYTHON
    assert engine is not None, "the compiled fan-out is not built (pip install -e .)"
    return engine


def srtp_pair(allow_repeat_tx: bool = True) -> tuple[pylibsrtp.Session, pylibsrtp.Session]:
    """A transmit and a receive session; the transmit policy is aiortc's (resends allowed)."""
    tx_policy = pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    tx_policy.allow_repeat_tx = allow_repeat_tx
    tx_policy.window_size = 1024
    rx_policy = pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_INBOUND)
    rx_policy.allow_repeat_tx = True  # the test reads a plain resend back with the same session
    rx_policy.window_size = 1024
    return pylibsrtp.Session(tx_policy), pylibsrtp.Session(rx_policy)


def packet(seq: int, ts: int, payload: bytes, *, pt: int = 96, marker: bool = False, ssrc: int = 0x11111111,
           pad: bool = False, ext: bytes = b"") -> bytes:  # fmt: skip
    b0 = 0x80 | (0x20 if pad else 0) | (0x10 if ext else 0)
    return struct.pack("!BBHII", b0, (0x80 if marker else 0) | pt, seq, ts, ssrc) + ext + payload


@dataclass
class Link:
    """One subscriber connection: an Output sending to a receiving socket we read back."""

    engine: fanout.Engine
    output: Any
    receiver: socket.socket
    sender: socket.socket
    rx: pylibsrtp.Session

    def received(self, expected: int, raw: bool = False) -> list[bytes]:
        """The next `expected` packets, unprotected (raw: as they came, still SRTP)."""
        out = []
        for _ in range(expected):
            data = self.receiver.recv(4096)
            out.append(data if raw else self.rx.unprotect(data))
        self.receiver.setblocking(False)
        try:
            extra = self.receiver.recv(4096)
        except BlockingIOError:
            pass
        else:
            raise AssertionError(f"more than {expected} packets arrived: {extra!r}")
        finally:
            self.receiver.setblocking(True)
        return out

    def close(self) -> None:
        self.output.close()
        self.receiver.close()
        self.sender.close()


def make_link(
    engine: fanout.Engine, family: int = socket.AF_INET, host: str = "127.0.0.1", allow_repeat_tx: bool = True
) -> Link:
    receiver = socket.socket(family, socket.SOCK_DGRAM)
    receiver.bind((host, 0))
    receiver.settimeout(2)
    sender = socket.socket(family, socket.SOCK_DGRAM)
    sender.bind((host, 0))
    sender.setblocking(False)
    tx, rx = srtp_pair(allow_repeat_tx)
    output = srtp_output(engine, tx, sender.fileno(), sender.sendto, receiver.getsockname())
    return Link(engine, output, receiver, sender, rx)


@pytest.fixture(params=ENGINES)
def engine(request: pytest.FixtureRequest) -> fanout.Engine:
    return engine_named(request.param)


@pytest.fixture
def link(engine: fanout.Engine) -> Iterator[Link]:
    before = fanout.open_outputs()
    link = make_link(engine)
    yield link
    link.close()
    assert fanout.open_outputs() == before


MID_EXT = b"\xbe\xde\x00\x01\x10\x30\x00\x00"  # RFC 8285 one-byte header: id 1, MID "0"


def copy_of(engine: fanout.Engine, **kwargs: Any) -> Any:
    args: dict[str, Any] = dict(next_seq=1000, next_ts=5000, rtx_seq=200)
    args.update(kwargs)
    return engine.Copy(0x22222222, 100, MID_EXT, **args)


def test_rewrite_protect_send(link: Link) -> None:
    copy = copy_of(link.engine)
    copy.set_output(link.output)
    copies = [copy]
    run = link.engine.fanout
    # Before a keyframe nothing is sent.
    assert run(copies, packet(40, 900, b"delta"), 12, False) is None
    assert copy.waiting and copy.packets == 0
    # The keyframe starts the copy: its index comes back, numbering starts at next_seq/next_ts.
    assert run(copies, packet(41, 1000, b"key", marker=True), 12, True) == [0]
    assert not copy.waiting
    run(copies, packet(42, 4000, b"next", pad=True), 12, False)
    run(copies, packet(43, 4000, b"x" * 1200, ext=MID_EXT), 20, False)  # the source's extension is replaced
    got = link.received(3)
    assert got == [
        packet(1000, 5000, b"key", pt=100, marker=True, ssrc=0x22222222, ext=MID_EXT),
        packet(1001, 8000, b"next", pt=100, ssrc=0x22222222, ext=MID_EXT, pad=True),
        packet(1002, 8000, b"x" * 1200, pt=100, ssrc=0x22222222, ext=MID_EXT),
    ]
    assert (copy.packets, copy.octets, copy.send_errors) == (3, 3 + 4 + 1200, 0)
    assert (copy.last_seq, copy.last_ts, copy.seq_off, copy.ts_off) == (1002, 8000, 1000 - 41, 4000)
    assert link.output.sent == 3


def test_sequence_and_timestamp_wrap(link: Link) -> None:
    copy = copy_of(link.engine, next_seq=0xFFFF, next_ts=0xFFFFFFFF)
    copy.set_output(link.output)
    link.engine.fanout([copy], packet(10, 10, b"a"), 12, True)
    link.engine.fanout([copy], packet(11, 20, b"b"), 12, False)
    assert [p[2:8] for p in link.received(2)] == [
        struct.pack("!HI", 0xFFFF, 0xFFFFFFFF),
        struct.pack("!HI", 0, 9),
    ]


def test_young_copy_drops_packets_older_than_its_start(link: Link) -> None:
    copy = copy_of(link.engine)
    copy.set_output(link.output)
    link.engine.fanout([copy], packet(500, 0, b"key"), 12, True)
    link.engine.fanout([copy], packet(498, 0, b"late"), 12, False)  # reordered, before the start
    link.engine.fanout([copy], packet(501, 0, b"ok"), 12, False)
    assert [p[12 + len(MID_EXT) :] for p in link.received(2)] == [b"key", b"ok"]


def test_disabled_copy_sends_nothing_and_does_not_start(link: Link) -> None:
    copy = copy_of(link.engine)
    copy.set_output(link.output)
    copy.enabled = False
    assert link.engine.fanout([copy], packet(1, 0, b"key"), 12, True) is None
    assert copy.waiting
    copy.enabled = True
    assert link.engine.fanout([copy], packet(2, 0, b"key"), 12, True) == [0]
    copy.enabled = False
    link.engine.fanout([copy], packet(3, 0, b"off"), 12, False)
    assert len(link.received(1)) == 1 and copy.packets == 1


def test_many_copies_one_call(engine: fanout.Engine) -> None:
    links = [make_link(engine) for _ in range(5)]
    try:
        copies = [copy_of(engine, next_seq=100 * i) for i in range(5)]
        for copy, link in zip(copies, links, strict=True):
            copy.set_output(link.output)
        copies[2].enabled = False
        assert engine.fanout(copies, packet(7, 70, b"key"), 12, True) == [0, 1, 3, 4]
        for i, link in enumerate(links):
            if i == 2:
                with pytest.raises(TimeoutError):
                    link.received(1)
            else:
                (got,) = link.received(1)
                assert struct.unpack_from("!H", got, 2)[0] == 100 * i
    finally:
        for link in links:
            link.close()


def test_retransmit_as_rtx_and_plain(engine: fanout.Engine) -> None:
    for rtx in (True, False):
        link = make_link(engine)
        try:
            kwargs: dict[str, Any] = {"rtx_ssrc": 0x33333333, "rtx_payload_type": 101} if rtx else {}
            ring = engine.Ring()
            copy = copy_of(engine, ring=ring, **kwargs)
            copy.set_output(link.output)
            for i in range(5):
                engine.fanout([copy], packet(10 + i, 100, bytes([i]) * 20, marker=i == 4), 12, i == 0, ring)
            assert ring.held() == 5
            sent_raw = link.received(5, raw=True)
            sent = [link.rx.unprotect(p) for p in sent_raw]
            copy.retransmit([1001, 1004, 999, 1200])  # 999 was never sent, 1200 not in the ring
            if rtx:
                got = link.received(2)
                for n, (original, seq) in enumerate(((sent[1], 1001), (sent[4], 1004))):
                    header = original[: 12 + len(MID_EXT)]
                    expected = (
                        bytes([header[0], (header[1] & 0x80) | 101])
                        + struct.pack("!H", 200 + n)
                        + header[4:8]
                        + struct.pack("!I", 0x33333333)
                        + MID_EXT
                        + struct.pack("!H", seq)
                        + original[len(header) :]
                    )
                    assert got[n] == expected
            else:
                # without RTX the same SRTP packet again (aiortc's policy allows repeated sends;
                # a receiver's replay window would drop the copy it already has)
                assert link.received(2, raw=True) == [sent_raw[1], sent_raw[4]]
            assert copy.retransmitted == 2 and copy.send_errors == 0
            copy.clear_ring()  # the copy lets go of the ring: no more answers
            assert not copy.has_ring
            copy.retransmit([1001])
            link.received(0)
        finally:
            link.close()


def test_copies_share_their_track_ring(engine: fanout.Engine) -> None:
    """One ring per published track: every copy answers its NACKs from it with its own
    numbering, nothing from before its (re)start, nothing once the ring is cleared."""
    links = [make_link(engine) for _ in range(2)]
    try:
        ring = engine.Ring()
        early = copy_of(engine, ring=ring, next_seq=1000)
        late = copy_of(engine, ring=ring, next_seq=40000, next_ts=0)
        early.set_output(links[0].output)
        late.set_output(links[1].output)
        engine.fanout([early], packet(1, 10, b"k1"), 12, True, ring)
        engine.fanout([early], packet(2, 20, b"d2"), 12, False, ring)
        engine.fanout([early, late], packet(3, 30, b"k3", marker=True), 12, True, ring)  # late starts here
        engine.fanout([early, late], packet(4, 40, b"d4\x00\x02", pad=True), 12, False, ring)
        sent_early = links[0].received(4)
        sent_late = links[1].received(2)
        early.retransmit([1001, 1003])
        late.retransmit([40000, 40001, 39999])  # 39999 would be packet 2: before late's start
        # without RTX a resend is the same packet again: compare the clear text via raw bytes
        assert links[0].received(2, raw=True) and links[1].received(2, raw=True)
        assert (early.retransmitted, late.retransmitted) == (2, 2)
        assert struct.unpack_from("!HI", sent_late[0], 2) == (40000, 0)
        assert strip_padding(sent_late[1])[12 + len(MID_EXT) :] == b"d4"
        assert sent_early[3][0] & 0x20  # the padding bit travels
        ring.clear()
        early.retransmit([1001])
        links[0].received(0)
        # a copy that restarts does not answer for packets before the restart
        engine.fanout([early], packet(5, 50, b"d5"), 12, False, ring)
        links[0].received(1)
        early.resync(3000)
        early.retransmit([1004])
        links[0].received(0)
    finally:
        for link in links:
            link.close()


def test_resync_continues_the_numbering(link: Link) -> None:
    copy = copy_of(link.engine)
    copy.set_output(link.output)
    link.engine.fanout([copy], packet(5, 100, b"k"), 12, True)
    link.engine.fanout([copy], packet(6, 200, b"d"), 12, False)
    copy.resync(3000)
    assert copy.waiting
    # the new source has other numbers; the copy goes on where it was
    assert link.engine.fanout([copy], packet(60000, 123456, b"d"), 12, False) is None
    assert link.engine.fanout([copy], packet(60001, 123456, b"k2"), 12, True) == [0]
    got = link.received(3)
    assert [struct.unpack_from("!HI", p, 2) for p in got] == [(1000, 5000), (1001, 5100), (1002, 8100)]


def test_srtp_failure_is_counted_not_raised(engine: fanout.Engine) -> None:
    link = make_link(engine, allow_repeat_tx=False)
    try:
        ring = engine.Ring()
        copy = copy_of(engine, ring=ring)
        copy.set_output(link.output)
        engine.fanout([copy], packet(1, 0, b"k"), 12, True, ring)
        sent = link.received(1)
        copy.retransmit([1000])  # libsrtp refuses a repeated index without allow_repeat_tx
        link.received(0)
        assert copy.send_errors == 1 and copy.retransmitted == 0 and link.output.errors == 1
        assert sent
    finally:
        link.close()


def test_no_output_counts_errors_and_closed_output_drops(link: Link) -> None:
    copy = copy_of(link.engine)
    link.engine.fanout([copy], packet(1, 0, b"k"), 12, True)
    assert copy.send_errors == 1 and copy.packets == 1
    copy.set_output(link.output)
    link.output.close()
    link.output.close()  # idempotent
    assert link.output.closed
    link.engine.fanout([copy], packet(2, 0, b"d"), 12, False)
    assert copy.send_errors == 2
    link.received(0)


def test_bad_input_is_refused(link: Link) -> None:
    copy = copy_of(link.engine)
    copy.set_output(link.output)
    run = link.engine.fanout
    with pytest.raises(ValueError):
        run([copy], b"\x80\x60\x00", 12, True)
    with pytest.raises(ValueError):
        run([copy], packet(1, 0, b"abc"), 40, True)
    with pytest.raises(TypeError):
        run([object()], packet(1, 0, b"abc"), 12, True)
    with pytest.raises(TypeError):
        copy.set_output(object())
    with pytest.raises(ValueError):
        link.engine.Copy(1, 200, b"")
    with pytest.raises(ValueError):
        link.engine.Copy(1, 96, b"\x00" * 3)
    with pytest.raises(TypeError):
        link.engine.Copy(1, 96, b"", ring=True)
    with pytest.raises(TypeError):
        run([copy], packet(1, 0, b"abc"), 12, True, object())
    # Oversized packets are dropped and counted.
    run([copy], packet(1, 0, b"k"), 12, True)
    run([copy], packet(2, 0, b"z" * 4000), 12, False)
    assert copy.send_errors == 1 and len(link.received(1)) == 1


def test_retarget_moves_an_output_to_a_new_socket_and_address(link: Link) -> None:
    """The peer's address changed: the copies keep their Output, which now sends elsewhere."""
    from confero.media.aiortc_hooks import retarget_output

    copy = copy_of(link.engine)
    copy.set_output(link.output)
    link.engine.fanout([copy], packet(1, 0, b"before", marker=True), 12, True)
    assert link.received(1)[0].endswith(b"before")
    new_receiver = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new_receiver.bind(("127.0.0.1", 0))
    new_receiver.settimeout(2)
    new_sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    new_sender.bind(("127.0.0.1", 0))

    class Transport:  # what retarget_output reads of an asyncio transport
        def get_extra_info(self, name: str) -> socket.socket:
            return new_sender

    try:
        retarget_output(link.engine, link.output, Transport(), new_sender.sendto, new_receiver.getsockname())
        link.engine.fanout([copy], packet(2, 0, b"after"), 12, False)
        data, source = new_receiver.recvfrom(4096)
        assert link.rx.unprotect(data).endswith(b"after")
        assert source == new_sender.getsockname()  # from the new socket
        link.receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            link.receiver.recv(4096)  # nothing more at the old address
        if link.engine.compiled:
            with pytest.raises(ValueError):
                link.output.retarget(new_sender.fileno(), "not an address", 1)
    finally:
        new_receiver.close()
        new_sender.close()


@pytest.mark.skipif(not socket.has_ipv6, reason="no IPv6")
def test_ipv6_output() -> None:
    try:
        link = make_link(engine_named("compiled"), socket.AF_INET6, "::1")
    except OSError:
        pytest.skip("::1 is not configured here")
    try:
        copy = copy_of(link.engine)
        copy.set_output(link.output)
        link.engine.fanout([copy], packet(1, 0, b"v6"), 12, True)
        assert link.received(1)[0].endswith(b"v6")
    finally:
        link.close()


def test_compiled_output_owns_a_duplicate_descriptor() -> None:
    """The Output dup()s the socket: closing the original cannot leave it sending on a reused
    descriptor number, and closing the Output releases its own."""
    engine = engine_named("compiled")
    link = make_link(engine)
    copy = copy_of(engine)
    copy.set_output(link.output)
    before = fanout.open_outputs()
    link.sender.close()  # aioice closes its socket first
    # a new file takes the lowest free number, possibly the old socket's
    reuse = os.open(os.devnull, os.O_WRONLY)
    try:
        engine.fanout([copy], packet(1, 0, b"still"), 12, True)
        assert link.received(1)[0].endswith(b"still")  # sent on our own duplicate
    finally:
        os.close(reuse)
    link.output.close()
    assert fanout.open_outputs() == before - 1
    link.receiver.close()


def test_invalid_output_arguments() -> None:
    engine = engine_named("compiled")
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        with pytest.raises(ValueError):
            engine.Output(sock.fileno(), "localhost", 5000, 1, 1, None)  # names are not resolved
        with pytest.raises(ValueError):
            engine.Output(sock.fileno(), "127.0.0.1", 0, 1, 1, None)
        with pytest.raises(ValueError):
            engine.Output(sock.fileno(), "127.0.0.1", 5000, 0, 1, None)
        with pytest.raises(OSError):
            engine.Output(-1, "127.0.0.1", 5000, 1, 1, None)
    finally:
        sock.close()


def test_select_falls_back_to_python(monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture) -> None:
    assert fanout.select(False) is fanout.PYTHON
    assert fanout.select(True) is fanout.COMPILED
    monkeypatch.setattr(fanout, "COMPILED", None)
    assert fanout.select(True) is fanout.PYTHON
    assert "pure-Python" in caplog.text


# -- batching (compiled engine): queue per Output, flush once, runs leave as UDP GSO --------


def strip_padding(packet: bytes) -> bytes:
    """The packet as its sender meant it: RTP padding removed, P bit cleared."""
    if not packet[0] & 0x20:
        return packet
    return bytes([packet[0] & ~0x20 & 0xFF]) + packet[1 : len(packet) - packet[-1]]


# Tests that are not about the 1 ms limit lift it: on a loaded machine two calls in a row can
# be more than 1 ms apart, and the second would flush what the test expects still queued.
NO_DEADLINE = 60.0


@dataclass
class Batching:
    """A send queue for code that runs with no event loop, and the flushes it asked for."""

    queue: Any
    calls: list[object]


@pytest.fixture
def batching() -> Iterator[Batching]:
    """The compiled engine queueing outside any event loop, with a schedule that only records
    its calls; tests flush by hand."""
    from confero.media import _fanout

    calls: list[object] = []
    queue = _fanout.bind_loop(None, calls.append)
    queue.max_delay = NO_DEADLINE
    try:
        yield Batching(queue, calls)
    finally:
        assert _fanout.unbind_loop(None)
    assert queue.queued() == 0
    assert _fanout.loop_queue(None) is None


def test_batched_copies_wait_for_flush_and_arrive_in_order(batching: Batching) -> None:
    queue = batching.queue
    engine = engine_named("compiled")
    links = [make_link(engine) for _ in range(3)]
    try:
        copies = [copy_of(engine, next_seq=100 * i) for i in range(3)]
        for copy, link in zip(copies, links, strict=True):
            copy.set_output(link.output)
        # a keyframe of 6 packets of about the same size (as encoders split a frame), then audio
        sizes = [1100, 1100, 1099, 1100, 1095, 700]
        for n, size in enumerate(sizes):
            engine.fanout(copies, packet(10 + n, 3000, bytes([n]) * size, marker=n == 5), 12, n == 0)
        engine.fanout(copies, packet(16, 3000, b"\x07" * 90), 12, False)
        assert batching.calls == [queue.flush]  # one flush arranged for the whole batch
        assert queue.queued() == 3 * 7
        links[0].receiver.setblocking(False)
        with pytest.raises(BlockingIOError):
            links[0].receiver.recv(4096)  # nothing left before the flush
        links[0].receiver.setblocking(True)
        queue.flush()
        assert queue.queued() == 0
        for i, link in enumerate(links):
            got = [strip_padding(p) for p in link.received(7)]
            seqs = [struct.unpack_from("!H", p, 2)[0] for p in got]
            assert seqs == list(range(100 * i, 100 * i + 7))
            payloads = [p[12 + len(MID_EXT) :] for p in got]
            assert payloads == [bytes([n]) * size for n, size in enumerate(sizes)] + [b"\x07" * 90]
            # packets 0-4 left as one segmented send (padded to 1100), then the short ones
            if queue.gso_enabled():
                assert link.output.segmented >= 5, link.output.segmented
            assert link.output.sent == 7 and link.output.errors == 0
        # a second batch arranges a second flush
        engine.fanout(copies, packet(17, 6000, b"d"), 12, False)
        assert len(batching.calls) == 2
        queue.flush()
        for link in links:
            assert len(link.received(1)) == 1
    finally:
        for link in links:
            link.close()


def test_padding_keeps_existing_padding_and_srtp_holds(batching: Batching) -> None:
    engine = engine_named("compiled")
    link = make_link(engine)
    try:
        copy = copy_of(engine)
        copy.set_output(link.output)
        # the second packet already carries 4 bytes of padding (P bit, count 4)
        padded = packet(2, 0, b"b" * 1000 + b"\x00\x00\x00\x04", pad=True)
        engine.fanout([copy], packet(1, 0, b"a" * 1010), 12, True)
        engine.fanout([copy], padded, 12, False)
        engine.fanout([copy], packet(3, 0, b"c" * 1008), 12, False)
        batching.queue.flush()
        got = link.received(3)
        assert len({len(p) for p in got[:2]}) == 1  # the run's segments have one size
        assert [strip_padding(p)[12 + len(MID_EXT) :] for p in got] == [b"a" * 1010, b"b" * 1000, b"c" * 1008]
    finally:
        link.close()


def test_closing_an_output_with_queued_copies_drops_them(batching: Batching) -> None:
    engine = engine_named("compiled")
    link = make_link(engine)
    before = fanout.open_outputs()
    copy = copy_of(engine)
    copy.set_output(link.output)
    engine.fanout([copy], packet(1, 0, b"k"), 12, True)
    assert batching.queue.queued() == 1
    link.output.close()
    copy.set_output(None)
    batching.queue.flush()  # nothing sent, nothing crashes, the descriptor is gone
    assert fanout.open_outputs() == before - 1
    link.receiver.setblocking(False)
    with pytest.raises(BlockingIOError):
        link.receiver.recv(4096)
    link.receiver.close()
    link.sender.close()


@pytest.mark.filterwarnings("ignore::pytest.PytestUnraisableExceptionWarning")
def test_a_failing_scheduler_sends_at_once() -> None:
    """A scheduler that fails (its loop is closed) is reported once and dropped: copies go out
    at once from then on."""
    from confero.media import _fanout

    engine = engine_named("compiled")
    link = make_link(engine)
    calls = []

    def broken(flush: object) -> None:
        calls.append(flush)
        raise RuntimeError("Event loop is closed")

    queue = _fanout.bind_loop(None, broken)
    try:
        copy = copy_of(engine)
        copy.set_output(link.output)
        engine.fanout([copy], packet(1, 0, b"k"), 12, True)
        assert queue.queued() == 0
        assert len(link.received(1)) == 1
        engine.fanout([copy], packet(2, 0, b"d"), 12, False)  # no second report, sent at once
        assert queue.queued() == 0 and len(calls) == 1
        assert len(link.received(1)) == 1
    finally:
        _fanout.unbind_loop(None)
        link.close()


async def test_bind_loop_flushes_once_per_iteration() -> None:
    engine = engine_named("compiled")
    loop = asyncio.get_running_loop()
    link = make_link(engine)
    queue = engine.bind_loop(loop)
    assert queue is not None and queue.loop is loop
    queue.max_delay = NO_DEADLINE
    try:
        copy = copy_of(engine)
        copy.set_output(link.output)
        for n in range(4):
            engine.fanout([copy], packet(n, 0, b"x" * 500), 12, n == 0)
        assert queue.queued() == 4
        await asyncio.sleep(0)
        assert queue.queued() == 0
        assert len(link.received(4)) == 4
    finally:
        engine.unbind_loop(loop)
        engine.unbind_loop(loop)  # idempotent
        link.close()
    # unbound: sent at once again
    link = make_link(engine)
    try:
        copy = copy_of(engine)
        copy.set_output(link.output)
        engine.fanout([copy], packet(1, 0, b"k"), 12, True)
        assert queue.queued() == 0 and len(link.received(1)) == 1
    finally:
        link.close()


def test_bind_loop_on_uvloop() -> None:
    """The server runs on uvloop: its running loop is found too, so copies are batched there."""
    uvloop = pytest.importorskip("uvloop")
    engine = engine_named("compiled")
    link = make_link(engine)
    seen: list[int] = []

    async def forward() -> None:
        loop = asyncio.get_running_loop()
        queue = engine.bind_loop(loop)
        assert queue is not None
        queue.max_delay = NO_DEADLINE
        try:
            copy = copy_of(engine)
            copy.set_output(link.output)
            for n in range(3):
                engine.fanout([copy], packet(n, 0, b"u" * 400), 12, n == 0)
            seen.append(queue.queued())
            await asyncio.sleep(0)
            seen.append(queue.queued())
        finally:
            engine.unbind_loop(loop)

    try:
        loop = uvloop.new_event_loop()
        try:
            loop.run_until_complete(forward())
        finally:
            loop.close()
        assert seen == [3, 0]
        assert len(link.received(3)) == 3
    finally:
        link.close()


async def test_binds_are_counted_and_unbind_flushes() -> None:
    """Two Routers on one loop share its queue; the first to close flushes it but the queue
    stays until the second closes too."""
    from confero.media import _fanout

    engine = engine_named("compiled")
    loop = asyncio.get_running_loop()
    link = make_link(engine)
    try:
        first = engine.bind_loop(loop)
        second = engine.bind_loop(loop)
        assert first is second and second is not None and second.binds == 2
        second.max_delay = NO_DEADLINE
        copy = copy_of(engine)
        copy.set_output(link.output)
        engine.fanout([copy], packet(1, 0, b"k"), 12, True)
        assert second.queued() == 1
        engine.unbind_loop(loop)  # flushes
        assert second.queued() == 0 and len(link.received(1)) == 1
        assert _fanout.loop_queue(loop) is second and second.binds == 1
        engine.fanout([copy], packet(2, 0, b"d"), 12, False)
        assert second.queued() == 1  # still batching on this loop
        engine.unbind_loop(loop)
        assert _fanout.loop_queue(loop) is None and len(link.received(1)) == 1
    finally:
        while _fanout.unbind_loop(loop):
            pass
        link.close()


def test_two_loops_in_two_threads_keep_their_own_queues() -> None:
    """Two servers, each with its loop in its own thread: each loop queues and flushes only the
    copies forwarded on it, and neither can flush (or schedule on) the other's."""
    import threading

    engine = engine_named("compiled")
    links = [make_link(engine) for _ in range(2)]
    barrier = threading.Barrier(2, timeout=10)
    seen: dict[int, dict[str, Any]] = {}
    errors: list[BaseException] = []

    def server(i: int) -> None:
        loop = asyncio.new_event_loop()

        async def forward() -> None:
            queue = engine.bind_loop(loop)
            assert queue is not None
            queue.max_delay = NO_DEADLINE
            try:
                copy = copy_of(engine, next_seq=1000 * (i + 1))
                copy.set_output(links[i].output)
                for n in range(3 + i):
                    engine.fanout([copy], packet(n, 0, b"x" * 300), 12, n == 0)
                barrier.wait()  # both loops have queued their copies
                seen[i] = {"queue": queue, "queued": queue.queued()}
                barrier.wait()
                await asyncio.sleep(0)  # this loop's flush runs
                seen[i]["after"] = queue.queued()
            finally:
                engine.unbind_loop(loop)

        try:
            loop.run_until_complete(forward())
        except BaseException as e:  # reported below
            errors.append(e)
            barrier.abort()
        finally:
            loop.close()

    threads = [threading.Thread(target=server, args=(i,)) for i in range(2)]
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert not errors, errors
        assert seen[0]["queue"] is not seen[1]["queue"]
        assert [seen[i]["queued"] for i in range(2)] == [3, 4]  # each its own copies only
        assert [seen[i]["after"] for i in range(2)] == [0, 0]
        for i, link in enumerate(links):
            seqs = [struct.unpack_from("!H", p, 2)[0] for p in link.received(3 + i)]
            assert seqs == list(range(1000 * (i + 1), 1000 * (i + 1) + 3 + i))
    finally:
        for link in links:
            link.close()


def test_no_copy_waits_more_than_a_millisecond_for_its_flush(batching: Batching) -> None:
    """Under load a loop iteration can be long: the next packet after max_delay (1 ms by
    default) flushes the queue. (Tried with 50 ms, so that a loaded machine cannot put that
    much between the first two calls.)"""
    import time

    engine = engine_named("compiled")
    loop = asyncio.new_event_loop()
    try:
        default = engine.bind_loop(loop)  # as a Router binds its loop
        assert default is not None and default.max_delay == pytest.approx(0.001)
    finally:
        engine.unbind_loop(loop)
        loop.close()
    link = make_link(engine)
    queue = batching.queue
    queue.max_delay = 0.05
    try:
        copy = copy_of(engine)
        copy.set_output(link.output)
        engine.fanout([copy], packet(1, 0, b"k"), 12, True)
        engine.fanout([copy], packet(2, 0, b"d"), 12, False)  # at once: still queued
        assert queue.queued() == 2
        time.sleep(0.06)  # the condition under test is the passing of time itself
        engine.fanout([copy], packet(3, 0, b"e"), 12, False)  # the first two are overdue
        assert queue.queued() == 1
        assert len(link.received(2)) == 2
        queue.flush()
        assert len(link.received(1)) == 1
        with pytest.raises(ValueError):
            queue.max_delay = -1
    finally:
        link.close()


def test_a_flush_sends_at_most_max_batch_copies(batching: Batching) -> None:
    """A long loop iteration flushes every MAX_BATCH copies, so no single flush runs long.
    (One call forwards to all the copies: the 1 ms limit is checked only between calls.)"""
    from confero.media import _fanout

    engine = engine_named("compiled")
    link = make_link(engine)
    link.receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    queue = batching.queue
    try:
        copies = [copy_of(engine, next_seq=n) for n in range(_fanout.MAX_BATCH + 40)]
        for copy in copies:
            copy.set_output(link.output)
        started = engine.fanout(copies, packet(1, 0, b"p" * 200), 12, True)
        assert started is not None and len(started) == len(copies)
        assert queue.queued() == 40
        assert len(link.received(_fanout.MAX_BATCH)) == _fanout.MAX_BATCH
        queue.flush()
        assert len(link.received(40)) == 40
    finally:
        link.close()


# -- robustness: Python code that runs in the middle of a call --------------------------------


def test_a_scheduler_that_empties_the_copies_list(engine: fanout.Engine) -> None:
    """The schedule call runs after the loop over the copies; emptying the list (and dropping
    every copy) from it cannot pull anything away under the engine."""
    from confero.media import _fanout

    if not engine.compiled:
        pytest.skip("the pure-Python engine has no scheduler")
    links = [make_link(engine) for _ in range(3)]
    copies = [copy_of(engine) for _ in range(3)]
    for copy, link in zip(copies, links, strict=True):
        copy.set_output(link.output)
    queue = _fanout.bind_loop(None, lambda flush: copies.clear())
    try:
        assert engine.fanout(copies, packet(1, 0, b"k"), 12, True) == [0, 1, 2]
        assert copies == [] and queue.queued() == 3
        queue.flush()
        for link in links:
            assert len(link.received(1)) == 1
    finally:
        _fanout.unbind_loop(None)
        for link in links:
            link.close()


def test_a_flush_inside_the_loop_that_runs_code_which_empties_the_list(batching: Batching) -> None:
    """A full queue is flushed in the middle of the loop over the copies; freeing a flushed
    Output can run arbitrary Python (its `keep` object's __del__). Here that code empties the
    list being walked: the engine stops at the new end instead of reading freed items."""
    from pylibsrtp._binding import ffi, lib

    from confero.media import _fanout

    engine = engine_named("compiled")
    queue = batching.queue
    link = make_link(engine)
    doomed_link = make_link(engine)
    link.receiver.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4 << 20)
    copies: list[Any] = []

    class Trap:
        def __init__(self, session: Any) -> None:
            self.session = session  # what `keep` is for: the SRTP session stays alive

        def __del__(self) -> None:
            copies.clear()

    try:
        tx = srtp_pair()[0]
        # an Output as aiortc_hooks.srtp_output builds it, but whose `keep` is the trap
        doomed = engine.Output(
            doomed_link.sender.fileno(),
            "127.0.0.1",
            doomed_link.receiver.getsockname()[1],
            int(ffi.cast("uintptr_t", tx._srtp[0])),
            int(ffi.cast("uintptr_t", ffi.addressof(lib, "srtp_protect"))),
            Trap(tx),
        )
        first = copy_of(engine)
        first.set_output(doomed)
        # the next call queues MAX_BATCH - 1 copies, then finds the queue full at the next one
        for _ in range(_fanout.MAX_BATCH + 4):
            copy = copy_of(engine)
            copy.set_output(link.output)
            copies.append(copy)
        del copy
        data = packet(600, 0, b"x")
        engine.fanout([first], packet(1, 0, b"k"), 12, True)  # the doomed Output is queued
        first.set_output(None)
        del doomed  # from now on only the queue holds it
        assert engine.fanout(copies, data, 12, True) == list(range(_fanout.MAX_BATCH))
        assert copies == []
        assert queue.queued() == 1  # flushed in the loop: the copy that found it full queued after
        assert len(doomed_link.received(1)) == 1
        queue.flush()
        # (one copy's packet 512 times over: the same SRTP index, so read as it came)
        assert len(link.received(_fanout.MAX_BATCH, raw=True)) == _fanout.MAX_BATCH
    finally:
        link.close()
        doomed_link.close()


def test_a_nack_iterator_that_lets_go_of_the_ring_and_output(engine: fanout.Engine) -> None:
    """retransmit() walks an iterable, which can run code: the ring and Output it started
    with stay valid until it returns."""
    link = make_link(engine)
    try:
        rings = [engine.Ring()]
        copy = copy_of(engine, ring=rings[0])
        copy.set_output(link.output)
        for n in range(3):
            engine.fanout([copy], packet(10 + n, 0, bytes([n]) * 50), 12, n == 0, rings[0])
        link.received(3)

        def lost() -> Iterator[int]:
            yield 1000
            copy.clear_ring()  # with the list's, the last reference to the ring
            rings.clear()
            copy.set_output(None)
            yield 1001
            yield 1002

        copy.retransmit(lost())
        assert len(link.received(3, raw=True)) == 3 and copy.retransmitted == 3
        copy.retransmit([1000])  # now without ring and Output: nothing
        link.received(0)
    finally:
        link.close()


# -- one numbering, several copies (simulcast layers) -----------------------------------------


def test_copy_numbering_state_is_exposed(link: Link) -> None:
    engine = link.engine
    copy = copy_of(engine, next_seq=0x1FFFF, next_ts=7, rtx_seq=3)
    numbering = copy.numbering
    assert isinstance(numbering, engine.Numbering)
    assert (numbering.next_seq, numbering.next_ts, numbering.rtx_seq) == (0xFFFF, 7, 3)
    copy.set_output(link.output)
    engine.fanout([copy], packet(5, 100, b"k"), 12, True)
    assert (numbering.last_seq, numbering.last_ts) == (0xFFFF, 7) == (copy.last_seq, copy.last_ts)
    assert (numbering.seq_off, numbering.ts_off) == ((0xFFFF - 5) & 0xFFFF, (7 - 100) & 0xFFFFFFFF)
    assert numbering.resync_step is None
    copy.resync(3000)
    assert numbering.resync_step == 3000 and copy.waiting
    link.received(1)
    with pytest.raises(TypeError):
        engine.Copy(1, 96, b"", numbering=numbering, next_seq=4)  # a shared numbering has its own
    other = fanout.PYTHON if engine.compiled else engine_named("compiled")
    with pytest.raises(TypeError):
        engine.Copy(1, 96, b"", numbering=other.Numbering())


def test_a_standby_copy_takes_over_the_numbering_without_a_gap(link: Link) -> None:
    """Two copies of two layers feed one player's stream through one Numbering: the second
    takes over at its keyframe after resync(), continuing the sequence with no gap and no
    repeat and the timestamps forward; the first stops, answers no NACK, and does not come
    back on its own keyframes until it is resynced itself."""
    engine = link.engine
    ring_a, ring_b = engine.Ring(), engine.Ring()
    a = copy_of(engine, ring=ring_a)  # next_seq 1000, next_ts 5000
    b = engine.Copy(0x22222222, 100, MID_EXT, ring=ring_b, numbering=a.numbering)
    assert b.numbering is a.numbering
    a.set_output(link.output)
    b.set_output(link.output)
    run = engine.fanout

    def layer_a(n: int, key: bool = False) -> list[int] | None:
        return run([a], packet(10 + n, 90000 + 3000 * n, b"A%d" % n), 12, key, ring_a)

    def layer_b(n: int, key: bool = False) -> list[int] | None:
        return run([b], packet(50000 + n, 777 + 3000 * n, b"B%d" % n), 12, key, ring_b)

    assert layer_a(0, key=True) == [0]
    layer_a(1)
    layer_a(2)
    assert layer_b(0, key=True) is None  # b may not start: a numbers with it
    b.resync(3000)  # switch to layer B at its next keyframe
    assert layer_b(1) is None and b.waiting  # not a keyframe
    layer_a(3)  # a goes on until b starts
    assert layer_b(2, key=True) == [0]
    assert layer_a(4) is None and a.waiting  # a lost the numbering
    layer_b(3)
    assert layer_a(5, key=True) is None and a.waiting  # no silent switch back
    layer_b(4)
    got = link.received(7)
    assert [p[12 + len(MID_EXT) :] for p in got] == [b"A0", b"A1", b"A2", b"A3", b"B2", b"B3", b"B4"]
    seqs = [struct.unpack_from("!H", p, 2)[0] for p in got]
    stamps = [struct.unpack_from("!I", p, 4)[0] for p in got]
    assert seqs == list(range(1000, 1007))  # no gap, no repeat
    assert stamps == [5000, 8000, 11000, 14000, 17000, 20000, 23000]
    numbering = b.numbering
    assert (numbering.last_seq, numbering.last_ts, b.last_seq) == (1006, 23000, 1006)
    assert (a.packets, b.packets) == (4, 3)
    # NACKs: only the copy numbering now answers, and only for what it sent itself
    a.retransmit([1002])
    b.retransmit([1003, 1004, 1006])
    assert (a.retransmitted, b.retransmitted) == (0, 2)
    resent = link.received(2, raw=True)
    assert len(resent) == 2
    # and back to layer A
    a.resync(3000)
    assert layer_a(6) is None
    layer_b(5)  # b forwards until a starts
    assert layer_a(7, key=True) == [0]
    assert layer_b(6) is None and b.waiting
    got = link.received(2)
    assert [struct.unpack_from("!HI", p, 2) for p in got] == [(1007, 26000), (1008, 29000)]
    assert [p[12 + len(MID_EXT) :] for p in got] == [b"B5", b"A7"]


def test_a_closed_output_drops_without_counting(engine: fanout.Engine) -> None:
    """Found by the differential test: an oversized packet on a closed Output was counted as
    an error by the compiled engine only."""
    link = make_link(engine)
    link.output.close()
    try:
        assert link.output.send(b"\x80" * (fanout.MAX_PACKET + 1)) is False
        assert link.output.send(packet(1, 0, b"x")) is False
        assert (link.output.sent, link.output.errors) == (0, 0)
    finally:
        link.close()
