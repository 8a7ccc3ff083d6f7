"""Table-driven tests of `confero.media.rtp`: the byte-level RTP helpers of the hot path.

Packets are built with aiortc's own serializer (`aiortc.rtp.RtpPacket`) where one exists, so the
helpers are checked against an independent implementation; VP8 and H.264 payloads also come
from aiortc's real encoders.
"""

from __future__ import annotations

import fractions
import random
import struct

import av
import pytest
from aiortc.codecs.h264 import H264Encoder
from aiortc.codecs.vpx import Vp8Encoder
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import (
    HeaderExtensionsMap,
    RtcpSrPacket,
    RtpPacket,
    wrap_rtx,
)

from confero.media import rtp

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"


def ext_map(mid_id: int = 4, abs_send_time_id: int | None = 2) -> HeaderExtensionsMap:
    extensions = [RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID_URI)]
    if abs_send_time_id is not None:
        extensions.append(RTCRtpHeaderExtensionParameters(id=abs_send_time_id, uri=ABS_SEND_TIME_URI))
    m = HeaderExtensionsMap()
    m.configure(RTCRtpParameters(headerExtensions=extensions))
    return m


def rtp_packet(
    *,
    payload: bytes = b"\x01\x02\x03\x04\x05",
    csrc: tuple[int, ...] = (),
    mid: str | None = None,
    abs_send_time: int | None = None,
    padding: int = 0,
    marker: int = 0,
    payload_type: int = 96,
    seq: int = 1000,
    ts: int = 123456,
    ssrc: int = 0x11223344,
    extensions: HeaderExtensionsMap | None = None,
) -> bytes:
    packet = RtpPacket(
        payload_type=payload_type, marker=marker, sequence_number=seq, timestamp=ts, ssrc=ssrc, payload=payload
    )
    packet.csrc = list(csrc)
    packet.extensions.mid = mid
    packet.extensions.abs_send_time = abs_send_time
    packet.padding_size = padding
    return packet.serialize(extensions or ext_map())


# ------------------------------------------------------------------------ payload_offset


@pytest.mark.parametrize(
    ("kwargs", "expected"),
    [
        ({}, 12),
        ({"csrc": (1,)}, 16),
        ({"csrc": (1, 2, 3)}, 24),
        # one-byte header: 4 bytes 0xBEDE+length, then (1 + 1) mid bytes padded to 4
        ({"mid": "0"}, 12 + 4 + 4),
        # mid "0" (2 bytes) + abs-send-time (4 bytes) = 6, padded to 8
        ({"mid": "0", "abs_send_time": 0x123456}, 12 + 4 + 8),
        ({"mid": "0123456789abcdef"}, 12 + 4 + 20),  # 17 bytes padded to 20
        ({"csrc": (7, 8), "mid": "audio"}, 12 + 8 + 4 + 8),
        ({"mid": "1", "padding": 5}, 12 + 4 + 4),  # padding sits after the payload
    ],
)
def test_payload_offset_matches_aiortc_parse(kwargs: dict, expected: int) -> None:
    payload = b"PAYLOAD-BYTES"
    data = rtp_packet(payload=payload, **kwargs)
    offset = rtp.payload_offset(data)
    assert offset == expected
    assert data[offset : offset + len(payload)] == payload
    # aiortc's own parser agrees on where the payload starts
    parsed = RtpPacket.parse(data, ext_map())
    assert parsed.payload == payload
    assert parsed.extensions.mid == kwargs.get("mid")


def hand_header(b0: int, extra: bytes = b"") -> bytes:
    return bytes([b0, 96]) + b"\x00\x01" + b"\x00\x00\x00\x02" + b"\x00\x00\x00\x03" + extra


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        (hand_header(0x80), 12),  # empty payload is valid
        (hand_header(0x80, b"xyz"), 12),
        (hand_header(0x81, b"\x00\x00\x00\x01"), 16),  # one CSRC, empty payload
        (hand_header(0x81, b"\x00\x00\x00"), -1),  # CSRC truncated
        (hand_header(0x82, b"\x00\x00\x00\x01"), -1),  # claims 2 CSRCs, has 1
        (hand_header(0x90, b"\xbe\xde\x00\x00"), 16),  # empty extension block
        (hand_header(0x90, b"\xbe\xde\x00\x01\x10\xaa\x00\x00P"), 20),
        (hand_header(0x90, b"\xbe\xde"), -1),  # extension header cut
        (hand_header(0x90, b"\xbe\xde\x00\x02\x10\xaa\x00\x00"), -1),  # claims 8 bytes, has 4
        (hand_header(0x90, b"\x10\x00\x00\x01\x00\x00\x00\x00"), 20),  # two-byte profile 0x1000
        (hand_header(0x91, b"\x00\x00\x00\x01\xbe\xde\x00\x01\x10\xaa\x00\x00"), 24),  # CSRC + ext
        (hand_header(0x91, b"\x00\x00\x00\x01\xbe\xde\x00"), -1),
        (b"\x80\x60\x00\x01", -1),  # shorter than the fixed header
    ],
)
def test_payload_offset_hand_built(data: bytes, expected: int) -> None:
    assert rtp.payload_offset(data) == expected


# ---------------------------------------------------------------------------- padding_size


@pytest.mark.parametrize("padding", [0, 1, 4, 17, 255])
def test_padding_size(padding: int) -> None:
    data = rtp_packet(payload=b"abc", padding=padding)
    assert rtp.padding_size(data) == padding
    assert RtpPacket.parse(data).padding_size == padding


def test_padding_size_ignores_last_byte_without_p_bit() -> None:
    assert rtp.padding_size(hand_header(0x80, b"\x07")) == 0
    assert rtp.padding_size(hand_header(0xA0, b"\x00\x00\x03")) == 3


# --------------------------------------------------------------------------- mid_extension


@pytest.mark.parametrize(
    ("ext_id", "mid", "expected"),
    [
        (1, "0", b"\xbe\xde\x00\x01" + b"\x10" + b"0" + b"\x00\x00"),
        (4, "0", b"\xbe\xde\x00\x01" + b"\x40" + b"0" + b"\x00\x00"),
        (9, "12", b"\xbe\xde\x00\x01" + b"\x91" + b"12" + b"\x00"),
        (3, "abc", b"\xbe\xde\x00\x01" + b"\x32" + b"abc"),  # exactly 4 bytes: no padding
        (14, "abcd", b"\xbe\xde\x00\x02" + b"\xe3" + b"abcd" + b"\x00\x00\x00"),
        (
            5,
            "0123456789abcdef",
            b"\xbe\xde\x00\x05" + b"\x5f" + b"0123456789abcdef" + b"\x00\x00\x00",
        ),
        # RFC 8285 one-byte elements carry at most 16 bytes
        (
            5,
            "0123456789abcdefXYZ",
            b"\xbe\xde\x00\x05" + b"\x5f" + b"0123456789abcdef" + b"\x00\x00\x00",
        ),
        (None, "0", b""),
        (0, "0", b""),  # id 0 is padding in the one-byte form
        (15, "0", b""),  # id 15 is reserved
        (16, "0", b""),
        (-1, "0", b""),
        (4, "", b""),
    ],
)
def test_mid_extension_bytes(ext_id: int | None, mid: str, expected: bytes) -> None:
    block = rtp.mid_extension(ext_id, mid)
    assert block == expected
    assert len(block) % 4 == 0


@pytest.mark.parametrize(("ext_id", "mid"), [(1, "0"), (4, "1"), (9, "video"), (14, "0123456789abcdef")])
def test_mid_extension_parses_with_aiortc(ext_id: int, mid: str) -> None:
    """The block spliced after a 12-byte header is what aiortc (and browsers) read as the MID."""
    block = rtp.mid_extension(ext_id, mid)
    header = rtp.HEADER.pack(0x80 | rtp.EXTENSION_BIT, 96, 1, 2, 3)
    data = header + block + b"payload"
    assert rtp.payload_offset(data) == 12 + len(block)
    parsed = RtpPacket.parse(data, ext_map(mid_id=ext_id, abs_send_time_id=None))
    assert parsed.extensions.mid == mid
    assert parsed.payload == b"payload"


# ------------------------------------------------------------------------------ unwrap_rtx


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"marker": 1},
        {"mid": "0", "abs_send_time": 0x0ABCDE},
        {"mid": "0", "marker": 1, "csrc": (42,)},
        {"payload": b"\x90\x80" + bytes(range(200))},
        {"payload": b"", "mid": "0"},  # empty original payload: RTX carries the OSN only
    ],
)
def test_unwrap_rtx_restores_the_original(kwargs: dict) -> None:
    extensions = ext_map()
    original = RtpPacket(
        payload_type=96,
        marker=kwargs.get("marker", 0),
        sequence_number=0xFFFE,
        timestamp=0xDEADBEEF,
        ssrc=0x01020304,
        payload=kwargs.get("payload", b"original payload"),
    )
    original.csrc = list(kwargs.get("csrc", ()))
    original.extensions.mid = kwargs.get("mid")
    original.extensions.abs_send_time = kwargs.get("abs_send_time")
    rtx = wrap_rtx(original, payload_type=97, sequence_number=7, ssrc=0x0A0B0C0D)
    data = rtx.serialize(extensions)
    assert data[1] & 0x7F == 97

    offset = rtp.payload_offset(data)
    unwrapped = rtp.unwrap_rtx(data, offset, 0x01020304, 96)
    assert unwrapped == original.serialize(extensions)

    parsed = RtpPacket.parse(unwrapped, extensions)
    assert parsed.sequence_number == 0xFFFE
    assert parsed.payload_type == 96
    assert parsed.ssrc == 0x01020304
    assert parsed.timestamp == 0xDEADBEEF
    assert parsed.marker == original.marker
    assert parsed.extensions.mid == original.extensions.mid
    assert parsed.extensions.abs_send_time == original.extensions.abs_send_time
    assert parsed.csrc == original.csrc
    assert parsed.payload == original.payload


def test_unwrap_rtx_keeps_trailing_padding() -> None:
    original = rtp.HEADER.pack(0x80, 96, 500, 9, 1) + b"media"
    # RTX with the P bit and 3 bytes of padding after OSN + payload
    rtx = rtp.HEADER.pack(0xA0, 97, 12, 9, 2) + b"\x01\xf4" + b"media" + b"\x00\x00\x03"
    out = rtp.unwrap_rtx(rtx, 12, 1, 96)
    assert out is not None
    assert out[:12] == rtp.HEADER.pack(0xA0, 96, 500, 9, 1)
    assert out[12:] == b"media\x00\x00\x03"
    assert out[12:17] == original[12:]  # the original payload, then the RTX packet's padding
    assert rtp.padding_size(out) == 3


@pytest.mark.parametrize(
    "data",
    [
        # padding-only probe: P bit, payload is only padding
        rtp.HEADER.pack(0xA0, 97, 12, 9, 2) + b"\x00" * 254 + b"\xff",  # 255 bytes, as browsers send
        rtp.HEADER.pack(0xA0, 97, 12, 9, 2) + b"\x00\x00\x00\x04",
        rtp.HEADER.pack(0xA0, 97, 12, 9, 2) + b"\x01",  # one byte of padding
        rtp.HEADER.pack(0x80, 97, 12, 9, 2),  # no payload at all
        rtp.HEADER.pack(0x80, 97, 12, 9, 2) + b"\x01",  # half an OSN
        rtp.HEADER.pack(0xA0, 97, 12, 9, 2) + b"\x01\x02\x03",  # OSN eaten by 3 bytes of padding
    ],
)
def test_unwrap_rtx_padding_only_probe_is_none(data: bytes) -> None:
    assert rtp.unwrap_rtx(data, rtp.payload_offset(data), 1, 96) is None


def test_unwrap_rtx_padding_probe_with_extension() -> None:
    block = rtp.mid_extension(4, "0")
    data = rtp.HEADER.pack(0xB0, 97, 12, 9, 2) + block + b"\x00" * 31 + b"\x20"
    assert rtp.unwrap_rtx(data, rtp.payload_offset(data), 1, 96) is None


# ------------------------------------------------------------------------ vp8_is_keyframe


def noise_frame(index: int, width: int = 320, height: int = 240) -> av.VideoFrame:
    """A frame of random pixels: large enough to span several RTP payloads."""
    rng = random.Random(index)
    frame = av.VideoFrame(width, height, "yuv420p")
    for plane in frame.planes:
        plane.update(rng.randbytes(plane.buffer_size))
    frame.pts = index * 3000
    frame.time_base = fractions.Fraction(1, 90000)
    return frame


@pytest.fixture(scope="module")
def vp8_frames() -> list[tuple[bool, list[bytes]]]:
    encoder = Vp8Encoder()
    out = []
    for i, key in enumerate((True, False, False, True, False)):
        payloads, _ = encoder.encode(noise_frame(i), force_keyframe=key)
        out.append((key, payloads))
    return out


def test_vp8_real_encoder_payloads(vp8_frames: list[tuple[bool, list[bytes]]]) -> None:
    for key, payloads in vp8_frames:
        assert len(payloads) > 1, "frame too small to test continuation packets"
        assert rtp.vp8_is_keyframe(payloads[0]) is key
        # continuation packets never start a frame
        assert not any(rtp.vp8_is_keyframe(p) for p in payloads[1:])
    # aiortc writes the 15-bit picture id form: X=1, I=1, M=1
    first = vp8_frames[0][1][0]
    assert first[0] & 0x90 == 0x90 and first[1] & 0x80 and first[2] & 0x80


def vp8_descriptor(
    *,
    s: bool = True,
    pid: int = 0,
    picture_id: int | None = None,
    long_picture_id: bool = False,
    tl0picidx: int | None = None,
    tid: int | None = None,
    keyidx: int | None = None,
    n_bit: bool = False,
) -> bytes:
    """RFC 7741 VP8 payload descriptor, built by hand."""
    x = 0
    if picture_id is not None:
        x |= 0x80
    if tl0picidx is not None:
        x |= 0x40
    if tid is not None:
        x |= 0x20
    if keyidx is not None:
        x |= 0x10
    b0 = (0x10 if s else 0) | (0x20 if n_bit else 0) | pid
    if not x:
        return bytes([b0])
    out = bytes([b0 | 0x80, x])
    if picture_id is not None:
        if long_picture_id:
            out += struct.pack("!H", 0x8000 | picture_id)
        else:
            out += bytes([picture_id & 0x7F])
    if tl0picidx is not None:
        out += bytes([tl0picidx])
    if tid is not None or keyidx is not None:
        out += bytes([((tid or 0) << 6) | (keyidx or 0)])
    return out


# VP8 payload header byte 0: bit 0 is P (inverse key frame); key frames also carry a start code.
VP8_KEY = b"\x50\x04\x00\x9d\x01\x2a"  # P=0, show_frame, start code 9d 01 2a
VP8_DELTA = b"\x51\x04\x00"  # P=1

VP8_CASES = [
    ("plain key", vp8_descriptor(), VP8_KEY, True),
    ("plain delta", vp8_descriptor(), VP8_DELTA, False),
    ("not start (S=0)", vp8_descriptor(s=False), VP8_KEY, False),
    ("partition 1", vp8_descriptor(pid=1), VP8_KEY, False),
    ("partition 7", vp8_descriptor(pid=7), VP8_KEY, False),
    ("N bit key", vp8_descriptor(n_bit=True), VP8_KEY, True),
    ("7-bit pid key", vp8_descriptor(picture_id=0x45), VP8_KEY, True),
    ("7-bit pid delta", vp8_descriptor(picture_id=0x45), VP8_DELTA, False),
    # a 7-bit picture id with its low bit set must not be read as the P bit
    ("7-bit pid=1 key", vp8_descriptor(picture_id=0x01), VP8_KEY, True),
    ("7-bit pid=0 delta", vp8_descriptor(picture_id=0x00), VP8_DELTA, False),
    ("15-bit pid key", vp8_descriptor(picture_id=0x1234, long_picture_id=True), VP8_KEY, True),
    ("15-bit pid delta", vp8_descriptor(picture_id=0x1234, long_picture_id=True), VP8_DELTA, False),
    ("15-bit pid odd low byte key", vp8_descriptor(picture_id=0x7F01, long_picture_id=True), VP8_KEY, True),
    ("15-bit pid even low byte delta", vp8_descriptor(picture_id=0x7F00, long_picture_id=True), VP8_DELTA, False),
    ("L key", vp8_descriptor(tl0picidx=0x01), VP8_KEY, True),
    ("L delta", vp8_descriptor(tl0picidx=0x00), VP8_DELTA, False),
    ("T key", vp8_descriptor(tid=1), VP8_KEY, True),
    ("K key", vp8_descriptor(keyidx=3), VP8_KEY, True),
    ("T+K delta", vp8_descriptor(tid=2, keyidx=5), VP8_DELTA, False),
    (
        "I+L+T+K 15-bit key",
        vp8_descriptor(picture_id=0x2001, long_picture_id=True, tl0picidx=0x11, tid=1, keyidx=1),
        VP8_KEY,
        True,
    ),
    (
        "I+L+T+K 15-bit delta",
        vp8_descriptor(picture_id=0x2000, long_picture_id=True, tl0picidx=0x10, tid=0, keyidx=0),
        VP8_DELTA,
        False,
    ),
    ("I+L+T+K 7-bit key", vp8_descriptor(picture_id=0x03, tl0picidx=0x07, tid=3, keyidx=31), VP8_KEY, True),
    ("I+L+T+K 7-bit delta", vp8_descriptor(picture_id=0x02, tl0picidx=0x06, tid=3, keyidx=30), VP8_DELTA, False),
    ("X with no extensions key", b"\x90\x00", VP8_KEY, True),
    # truncated descriptors: never a keyframe, never an IndexError
    ("empty", b"", b"", False),
    ("descriptor only", vp8_descriptor(), b"", False),
    ("X without extension byte", b"\x90", b"", False),
    ("I without picture id", b"\x90\x80", b"", False),
    ("15-bit pid cut", b"\x90\x80\x80", b"", False),
    ("15-bit pid, no payload header", b"\x90\x80\x80\x01", b"", False),
    ("7-bit pid, no payload header", b"\x90\x80\x01", b"", False),
    ("L, no payload header", b"\x90\x40\x01", b"", False),
    ("T/K, no payload header", b"\x90\x30\x01", b"", False),
]


@pytest.mark.parametrize(
    ("descriptor", "header", "expected"), [c[1:] for c in VP8_CASES], ids=[c[0] for c in VP8_CASES]
)
def test_vp8_is_keyframe_hand_built(descriptor: bytes, header: bytes, expected: bool) -> None:
    assert rtp.vp8_is_keyframe(descriptor + header) is expected


def test_vp8_hand_built_descriptors_match_aiortc() -> None:
    """Our hand-built descriptors are the ones aiortc's parser understands."""
    from aiortc.codecs.vpx import VpxPayloadDescriptor

    data = vp8_descriptor(picture_id=0x1234, long_picture_id=True, tl0picidx=0x11, tid=2, keyidx=5) + VP8_KEY
    descr, rest = VpxPayloadDescriptor.parse(data)
    assert descr.partition_start == 1 and descr.partition_id == 0
    assert descr.picture_id == 0x1234
    assert descr.tl0picidx == 0x11
    assert descr.keyidx == 5
    assert rest == VP8_KEY

    data = vp8_descriptor(picture_id=0x45, tl0picidx=0x07) + VP8_DELTA
    descr, rest = VpxPayloadDescriptor.parse(data)
    assert descr.picture_id == 0x45 and descr.tl0picidx == 0x07
    assert rest == VP8_DELTA


# ----------------------------------------------------------------------- h264_is_keyframe


def nal(nal_type: int, nri: int = 3, body: bytes = b"\x88\x84\x21") -> bytes:
    return bytes([(nri << 5) | nal_type]) + body


def stap_a(*units: bytes) -> bytes:
    return b"\x78" + b"".join(struct.pack("!H", len(u)) + u for u in units)


def fu_a(nal_type: int, *, start: bool, end: bool = False, indicator_type: int = 28) -> bytes:
    header = nal_type | (0x80 if start else 0) | (0x40 if end else 0)
    return bytes([0x60 | indicator_type, header]) + b"\x11\x22\x33"


H264_CASES = [
    ("IDR", nal(5), True),
    ("IDR nri 0", nal(5, nri=0), True),
    ("SPS", nal(7), True),
    ("PPS", nal(8), False),
    ("SEI", nal(6), False),
    ("non-IDR", nal(1), False),
    ("non-IDR nri 0", nal(1, nri=0), False),
    ("AUD", nal(9), False),
    ("STAP-A SPS PPS", stap_a(nal(7), nal(8)), True),
    ("STAP-A PPS then IDR", stap_a(nal(8), nal(5)), True),
    ("STAP-A SEI then SPS", stap_a(nal(6, body=b"\x05" * 20), nal(7)), True),
    ("STAP-A non-IDR", stap_a(nal(1), nal(1)), False),
    ("STAP-A PPS only", stap_a(nal(8)), False),
    ("STAP-A zero size", b"\x78\x00\x00\x67", False),
    ("STAP-A truncated", b"\x78\x00\x04", False),
    ("STAP-A header only", b"\x78", False),
    # a size that runs past the end stops the walk instead of raising
    ("STAP-A oversized unit", b"\x78\x01\x00\x61\x00", False),
    ("FU-A start IDR", fu_a(5, start=True), True),
    ("FU-A middle IDR", fu_a(5, start=False), False),
    ("FU-A end IDR", fu_a(5, start=False, end=True), False),
    ("FU-A start non-IDR", fu_a(1, start=True), False),
    ("FU-A start SPS", fu_a(7, start=True), True),
    ("FU-B start IDR", fu_a(5, start=True, indicator_type=29), True),
    ("FU-B middle IDR", fu_a(5, start=False, indicator_type=29), False),
    ("FU-A indicator only", b"\x7c", False),
    ("empty", b"", False),
]


@pytest.mark.parametrize(("payload", "expected"), [c[1:] for c in H264_CASES], ids=[c[0] for c in H264_CASES])
def test_h264_is_keyframe_hand_built(payload: bytes, expected: bool) -> None:
    assert rtp.h264_is_keyframe(payload) is expected


@pytest.fixture(scope="module")
def h264_frames() -> list[tuple[bool, list[bytes]]]:
    encoder = H264Encoder()
    out = []
    for i, key in enumerate((True, False, False, True)):
        payloads, _ = encoder.encode(noise_frame(i), force_keyframe=key)
        out.append((key, payloads))
    return out


def test_h264_real_encoder_payloads(h264_frames: list[tuple[bool, list[bytes]]]) -> None:
    for key, payloads in h264_frames:
        assert payloads
        assert rtp.h264_is_keyframe(payloads[0]) is key
        if not key:
            assert not any(rtp.h264_is_keyframe(p) for p in payloads)
        # FU-A fragments after the first of a NAL unit are never a start
        for p in payloads:
            if p[0] & 0x1F == 28 and not p[1] & 0x80:
                assert not rtp.h264_is_keyframe(p)
    key_payloads = h264_frames[0][1]
    assert key_payloads[0][0] & 0x1F == 24, "libx264 key frame should start with a STAP-A (SPS, PPS)"
    fragments = [p for p in key_payloads if p[0] & 0x1F == 28]
    assert fragments, "noise key frame should need FU-A fragmentation"
    starts = [p for p in fragments if p[1] & 0x80]
    assert any(p[1] & 0x1F == 5 for p in starts)
    assert all(rtp.h264_is_keyframe(p) for p in starts if p[1] & 0x1F == 5)
    assert any(not p[1] & 0x80 for p in fragments)


# ---------------------------------------------------------------------- keyframe_detector


@pytest.mark.parametrize(
    ("mime", "expected"),
    [
        ("video/VP8", rtp.vp8_is_keyframe),
        ("video/vp8", rtp.vp8_is_keyframe),
        ("VIDEO/VP8", rtp.vp8_is_keyframe),
        ("video/H264", rtp.h264_is_keyframe),
        ("video/h264", rtp.h264_is_keyframe),
        ("audio/opus", None),
        ("audio/PCMU", None),
        ("video/rtx", None),
        ("video/VP9", None),
        ("video/AV1", None),
        ("", None),
    ],
)
def test_keyframe_detector(mime: str, expected: object) -> None:
    assert rtp.keyframe_detector(mime) is expected


def test_sender_report_and_sdes_parse_with_aiortc() -> None:
    from aiortc.rtp import RtcpPacket, RtcpSdesPacket

    for cname in ("c", "confero-cname", "x" * 37, "é" * 3):
        compound = b"".join(
            rtp.sender_report(s, 0x0102030405060708 + s, 0x1_0000_0005, 1 << 33, s) for s in (1000, 1001, 1002)
        ) + rtp.sdes_cname(1000, cname)
        assert len(compound) % 4 == 0
        packets = RtcpPacket.parse(compound)
        srs = [p for p in packets if isinstance(p, RtcpSrPacket)]
        assert [p.ssrc for p in srs] == [1000, 1001, 1002]
        info = srs[0].sender_info
        # timestamps and counters wrap at 32 bits as RFC 3550 counters do
        assert (info.ntp_timestamp, info.rtp_timestamp, info.packet_count, info.octet_count) == (
            0x0102030405060708 + 1000,
            5,
            0,
            1000,
        )
        (sdes,) = [p for p in packets if isinstance(p, RtcpSdesPacket)]
        assert [(c.ssrc, c.items) for c in sdes.chunks] == [(1000, [(1, cname.encode())])]
