"""Properties of `confero.media.rtp` on arbitrary bytes, with aiortc's parsers as the oracle.

The helpers' contract (see the module and its callers): a packet is at least one byte (the
hot path drops anything shorter than the 12-byte header first); `payload_offset` is -1 for a
packet too short for the header it claims, and otherwise the offset of its payload, read
from nothing past that offset; the keyframe tests take any payload; `unwrap_rtx` takes an
RTX packet and its payload offset.
"""

from __future__ import annotations

import struct

from aiortc.codecs.vpx import VpxPayloadDescriptor
from aiortc.rtcrtpparameters import RTCRtpHeaderExtensionParameters, RTCRtpParameters
from aiortc.rtp import HeaderExtensionsMap, RtcpPacket, RtcpSdesPacket, RtcpSrPacket, RtpPacket, wrap_rtx
from hypothesis import HealthCheck, assume, example, given, settings
from hypothesis import strategies as st

from confero.media import rtp

FAST = settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])

MID_URI = "urn:ietf:params:rtp-hdrext:sdes:mid"
ABS_SEND_TIME_URI = "http://www.webrtc.org/experiments/rtp-hdrext/abs-send-time"

U8 = st.integers(0, 0xFF)
U16 = st.integers(0, 0xFFFF)
U32 = st.integers(0, 0xFFFFFFFF)
PAYLOAD_TYPE = st.integers(0, 127)
#: SDP tokens as browsers and aiortc use for MIDs (ASCII), up to the 16 bytes a one-byte header holds
MIDS = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-_", min_size=1, max_size=16)

packets = st.binary(min_size=1, max_size=96)


def extensions_map(mid_id: int = 4, abs_send_time_id: int = 2) -> HeaderExtensionsMap:
    m = HeaderExtensionsMap()
    m.configure(
        RTCRtpParameters(
            headerExtensions=[
                RTCRtpHeaderExtensionParameters(id=mid_id, uri=MID_URI),
                RTCRtpHeaderExtensionParameters(id=abs_send_time_id, uri=ABS_SEND_TIME_URI),
            ]
        )
    )
    return m


@st.composite
def rtp_packets(draw: st.DrawFn) -> RtpPacket:
    """aiortc packets with any header fields, CSRCs, MID and abs-send-time extensions."""
    packet = RtpPacket(
        payload_type=draw(PAYLOAD_TYPE),
        marker=draw(st.integers(0, 1)),
        sequence_number=draw(U16),
        timestamp=draw(U32),
        ssrc=draw(U32),
        payload=draw(st.binary(max_size=64)),
    )
    packet.csrc = draw(st.lists(U32, max_size=15))
    packet.extensions.mid = draw(st.none() | MIDS)
    packet.extensions.abs_send_time = draw(st.none() | st.integers(0, 0xFFFFFF))
    return packet


# -- payload_offset and padding_size --------------------------------------------------------------


@FAST
@given(packets)
@example(b"\x90")
@example(b"\x9f" + bytes(11))
@example(b"\x90\x60" + bytes(10) + b"\xbe\xde\xff\xff")
def test_payload_offset_is_within_the_packet_or_minus_one(data: bytes) -> None:
    offset = rtp.payload_offset(data)
    assert offset == -1 or 12 <= offset <= len(data)


@FAST
@given(packets)
def test_payload_offset_reads_nothing_past_the_header(data: bytes) -> None:
    """Cut anywhere: before the payload the header is too short (-1), from there on it is whole."""
    offset = rtp.payload_offset(data)
    for cut in range(1, len(data) + 1):
        expected = offset if offset != -1 and cut >= offset else -1
        assert rtp.payload_offset(data[:cut]) == expected, cut


@FAST
@given(st.binary(min_size=12, max_size=96))
def test_payload_offset_agrees_with_aiortc(data: bytes) -> None:
    # aiortc also checks the version and the padding: make both valid, the header stays as it is
    data = bytes([0x80 | (data[0] & 0x1F)]) + data[1:]
    offset = rtp.payload_offset(data)
    try:
        parsed = RtpPacket.parse(data)
    except ValueError:
        assert offset == -1  # aiortc refuses only headers that do not fit
        return
    assert offset == len(data) - len(parsed.payload)


@FAST
@given(rtp_packets(), st.integers(0, 255))
def test_payload_offset_and_padding_of_aiortc_packets(packet: RtpPacket, padding: int) -> None:
    packet.padding_size = padding
    data = packet.serialize(extensions_map())
    offset = rtp.payload_offset(data)
    assert data[offset : offset + len(packet.payload)] == packet.payload
    assert rtp.padding_size(data) == padding
    assert len(data) - padding - offset == len(packet.payload)


@FAST
@given(packets)
def test_padding_size_is_a_byte_count(data: bytes) -> None:
    size = rtp.padding_size(data)
    assert 0 <= size <= 255
    assert size == (data[-1] if data[0] & 0x20 else 0)


# -- RTX ------------------------------------------------------------------------------------------


@FAST
@given(rtp_packets(), PAYLOAD_TYPE, U16, U32)
def test_unwrap_rtx_undoes_aiortcs_wrap_rtx(original: RtpPacket, rtx_pt: int, rtx_seq: int, rtx_ssrc: int) -> None:
    extensions = extensions_map()
    data = wrap_rtx(original, payload_type=rtx_pt, sequence_number=rtx_seq, ssrc=rtx_ssrc).serialize(extensions)
    unwrapped = rtp.unwrap_rtx(data, rtp.payload_offset(data), original.ssrc, original.payload_type)
    assert unwrapped == original.serialize(extensions)


@FAST
@given(rtp_packets(), st.integers(1, 255), PAYLOAD_TYPE, U16, U32)
def test_unwrap_rtx_keeps_the_padding(
    original: RtpPacket, padding: int, rtx_pt: int, rtx_seq: int, rtx_ssrc: int
) -> None:
    """RTX with padding after OSN + payload: the original gets the same padding (and P bit)."""
    extensions = extensions_map()
    rtx = wrap_rtx(original, payload_type=rtx_pt, sequence_number=rtx_seq, ssrc=rtx_ssrc)
    rtx.padding_size = padding
    data = rtx.serialize(extensions)
    unwrapped = rtp.unwrap_rtx(data, rtp.payload_offset(data), original.ssrc, original.payload_type)
    assert unwrapped is not None
    parsed = RtpPacket.parse(unwrapped, extensions)
    assert (parsed.sequence_number, parsed.payload_type, parsed.ssrc) == (
        original.sequence_number,
        original.payload_type,
        original.ssrc,
    )
    assert (parsed.marker, parsed.timestamp, parsed.csrc) == (original.marker, original.timestamp, original.csrc)
    assert parsed.payload == original.payload
    assert parsed.padding_size == padding and unwrapped[-padding:] == data[-padding:]


@st.composite
def whole_headers(draw: st.DrawFn) -> bytes:
    """Bytes whose header (CSRCs, extension block) fits: any flags, CSRC count and content."""
    b0 = draw(U8)
    data = (
        bytes([b0])
        + draw(st.binary(min_size=11, max_size=11))
        + draw(st.binary(min_size=4 * (b0 & 0x0F), max_size=4 * (b0 & 0x0F)))
    )
    if b0 & 0x10:
        words = draw(st.integers(0, 4))
        data += (
            draw(st.binary(min_size=2, max_size=2))
            + struct.pack("!H", words)
            + draw(st.binary(min_size=4 * words, max_size=4 * words))
        )
    return data + draw(st.binary(max_size=32))


@FAST
@given(whole_headers(), U32, PAYLOAD_TYPE)
def test_unwrap_rtx_of_any_packet(data: bytes, ssrc: int, payload_type: int) -> None:
    offset = rtp.payload_offset(data)
    assert offset >= 12
    unwrapped = rtp.unwrap_rtx(data, offset, ssrc, payload_type)
    if len(data) - rtp.padding_size(data) - offset < 2:
        assert unwrapped is None  # no room for the original sequence number: a padding probe
        return
    assert unwrapped is not None and len(unwrapped) == len(data) - 2
    assert unwrapped[2:4] == data[offset : offset + 2]
    assert unwrapped[1] == (data[1] & 0x80) | payload_type
    assert struct.unpack_from("!I", unwrapped, 8)[0] == ssrc
    assert unwrapped[4:8] == data[4:8] and unwrapped[12:offset] == data[12:offset]
    assert rtp.payload_offset(unwrapped) == offset


# -- keyframe detectors ---------------------------------------------------------------------------


@FAST
@given(st.binary(max_size=24))
@example(b"\x90\x80\x80")
@example(b"\x90\xf0\xff\xff\x01\x02")
def test_vp8_is_keyframe_agrees_with_aiortcs_descriptor(payload: bytes) -> None:
    keyframe = rtp.vp8_is_keyframe(payload)
    assert isinstance(keyframe, bool)
    try:
        descriptor, rest = VpxPayloadDescriptor.parse(payload)
    except ValueError:
        assert not keyframe  # a truncated descriptor is no frame start
        return
    # aiortc reads the PID as 4 bits; RFC 7741 has 3 and a reserved bit
    starts_frame = descriptor.partition_start == 1 and descriptor.partition_id & 0x07 == 0
    assert keyframe == (starts_frame and len(rest) > 0 and not rest[0] & 0x01)


nal_header = st.builds(lambda nri, kind: (nri << 5) | kind, st.integers(0, 3), st.integers(1, 23))


@FAST
@given(st.binary(max_size=32))
def test_h264_is_keyframe_on_any_payload(payload: bytes) -> None:
    assert isinstance(rtp.h264_is_keyframe(payload), bool)


@FAST
@given(nal_header, st.binary(max_size=16))
def test_h264_single_nal_unit(header: int, body: bytes) -> None:
    assert rtp.h264_is_keyframe(bytes([header]) + body) == (header & 0x1F in (5, 7))


@FAST
@given(st.lists(st.tuples(nal_header, st.binary(max_size=8)), min_size=1, max_size=5))
def test_h264_stap_a(units: list[tuple[int, bytes]]) -> None:
    """A well-formed STAP-A (RFC 6184 5.7.1) holds a keyframe when one of its NAL units is IDR or SPS."""
    payload = b"\x78" + b"".join(struct.pack("!H", 1 + len(body)) + bytes([h]) + body for h, body in units)
    assert rtp.h264_is_keyframe(payload) == any(h & 0x1F in (5, 7) for h, _ in units)


@FAST
@given(st.sampled_from([28, 29]), st.integers(1, 23), st.booleans(), st.booleans(), st.binary(max_size=8))
def test_h264_fragmentation_units(indicator: int, kind: int, start: bool, end: bool, body: bytes) -> None:
    """FU-A/FU-B: a keyframe starts with the first fragment of an IDR slice or SPS."""
    payload = bytes([0x60 | indicator, kind | (0x80 if start else 0) | (0x40 if end else 0)]) + body
    assert rtp.h264_is_keyframe(payload) == (start and kind in (5, 7))


@FAST
@given(st.text(max_size=12), st.sampled_from(["video/VP8", "video/H264", "audio/opus"]), st.booleans())
def test_keyframe_detector(other: str, mime: str, upper: bool) -> None:
    name = mime.upper() if upper else mime.lower()
    expected = {"video/vp8": rtp.vp8_is_keyframe, "video/h264": rtp.h264_is_keyframe}.get(mime.lower())
    assert rtp.keyframe_detector(name) is expected
    if other.lower() not in ("video/vp8", "video/h264"):
        assert rtp.keyframe_detector(other) is None


# -- header extensions and RTCP the server writes -------------------------------------------------


@FAST
@given(st.integers(1, 14), st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789", min_size=1, max_size=24))
def test_mid_extension_parses_with_aiortc(ext_id: int, mid: str) -> None:
    block = rtp.mid_extension(ext_id, mid)
    assert len(block) % 4 == 0
    data = rtp.HEADER.pack(0x90, 96, 1, 2, 3) + block + b"payload"
    assert rtp.payload_offset(data) == 12 + len(block)
    abs_send_time_id = 1 if ext_id != 1 else 2
    parsed = RtpPacket.parse(data, extensions_map(mid_id=ext_id, abs_send_time_id=abs_send_time_id))
    assert parsed.extensions.mid == mid[:16]
    assert parsed.payload == b"payload"


@FAST
@given(st.none() | st.integers(-4, 20), st.text(max_size=4))
def test_mid_extension_without_a_usable_id_or_mid(ext_id: int | None, mid: str) -> None:
    assume(ext_id is None or not 1 <= ext_id <= 14 or not mid)
    assert rtp.mid_extension(ext_id, mid) == b""


@FAST
@given(U32, st.integers(0, 2**64 - 1), st.integers(0, 2**40), st.integers(0, 2**40), st.integers(0, 2**40))
def test_sender_report_parses_with_aiortc(ssrc: int, ntp: int, rtp_ts: int, packets_: int, octets: int) -> None:
    (report,) = RtcpPacket.parse(rtp.sender_report(ssrc, ntp, rtp_ts, packets_, octets))
    assert isinstance(report, RtcpSrPacket) and report.ssrc == ssrc and report.reports == []
    info = report.sender_info
    assert (info.ntp_timestamp, info.rtp_timestamp) == (ntp, rtp_ts & 0xFFFFFFFF)
    assert (info.packet_count, info.octet_count) == (packets_ & 0xFFFFFFFF, octets & 0xFFFFFFFF)


@FAST
@given(U32, st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789{}-", max_size=255))
def test_sdes_cname_parses_with_aiortc(ssrc: int, cname: str) -> None:
    data = rtp.sdes_cname(ssrc, cname)
    assert len(data) % 4 == 0
    (sdes,) = RtcpPacket.parse(data)
    assert isinstance(sdes, RtcpSdesPacket)
    (chunk,) = sdes.chunks
    assert chunk.ssrc == ssrc
    assert chunk.items == [(1, cname.encode())]
