"""Pure RTP helpers on bytes: header peeking, keyframe detection, RTX and extension blocks.

Nothing here allocates objects per packet beyond ints and byte slices; the forwarding hot path
(`uptrack.py`, `downtrack.py`) calls these functions or inlines their arithmetic.
"""

from __future__ import annotations

import struct
from collections.abc import Callable

#: b0, b1, sequence number, timestamp, ssrc
HEADER = struct.Struct("!BBHII")
#: sequence number alone
U16 = struct.Struct("!H")
U32 = struct.Struct("!I")

RTP_VERSION_BITS = 0x80
PADDING_BIT = 0x20
EXTENSION_BIT = 0x10
MARKER_BIT = 0x80


def payload_offset(data: bytes) -> int:
    """Offset of the payload in an RTP packet (after CSRCs and the extension block).

    Returns -1 for a packet too short for the header it claims.
    """
    b0 = data[0]
    offset = 12 + 4 * (b0 & 0x0F)
    if b0 & EXTENSION_BIT:
        if len(data) < offset + 4:
            return -1
        offset += 4 + 4 * U16.unpack_from(data, offset + 2)[0]
    if offset > len(data):
        return -1
    return offset


def padding_size(data: bytes) -> int:
    """Number of padding bytes at the end of the packet (0 when the P bit is clear)."""
    return data[-1] if data[0] & PADDING_BIT else 0


def mid_extension(ext_id: int | None, mid: str) -> bytes:
    """A one-byte-header extension block (RFC 8285) carrying the MID, or b"" without one."""
    if ext_id is None or not 1 <= ext_id <= 14 or not mid:
        return b""
    value = mid.encode("ascii")[:16]
    element = bytes([(ext_id << 4) | (len(value) - 1)]) + value
    element += b"\x00" * (-len(element) % 4)
    return b"\xbe\xde" + U16.pack(len(element) // 4) + element


SR = struct.Struct("!BBHIQIII")


def sender_report(ssrc: int, ntp: int, rtp_timestamp: int, packets: int, octets: int) -> bytes:
    """An RTCP SR (RFC 3550 6.4.1) without report blocks."""
    return SR.pack(0x80, 200, 6, ssrc, ntp, rtp_timestamp & 0xFFFFFFFF, packets & 0xFFFFFFFF, octets & 0xFFFFFFFF)


def sdes_cname(ssrc: int, cname: str) -> bytes:
    """An RTCP SDES packet (RFC 3550 6.5) with one chunk: `ssrc`'s CNAME.

    One chunk per compound packet is enough, since every SSRC of a connection shares the CNAME;
    it is also what aiortc's parser (the test clients) reads correctly.
    """
    item = cname.encode("utf-8")[:255]
    chunk = U32.pack(ssrc) + bytes([1, len(item)]) + item
    chunk += b"\x00" * (4 - (len(chunk) % 4))  # the list's terminating null, and padding
    return bytes((0x81, 202)) + U16.pack(len(chunk) // 4) + chunk


def unwrap_rtx(data: bytes, offset: int, ssrc: int, payload_type: int) -> bytes | None:
    """Turn an RTX packet (RFC 4588) back into the original packet.

    `offset` is the payload offset of `data`. Returns None for padding-only probes.
    """
    pad = padding_size(data)
    if len(data) - pad - offset < 2:
        return None
    osn = data[offset : offset + 2]
    b1 = (data[1] & MARKER_BIT) | payload_type
    # Keep the header (with its extensions), put back the original seq, PT and SSRC.
    return bytes((data[0], b1)) + osn + data[4:8] + U32.pack(ssrc) + data[12:offset] + data[offset + 2 :]


def vp8_is_keyframe(payload: bytes) -> bool:
    """True when `payload` (RTP payload, VP8 descriptor first) starts a VP8 key frame."""
    n = len(payload)
    if n < 1:
        return False
    b0 = payload[0]
    # S bit set and partition index 0: the packet starts a frame.
    if not (b0 & 0x10) or (b0 & 0x07):
        return False
    i = 1
    if b0 & 0x80:  # X: extension byte follows
        if n <= i:
            return False
        x = payload[i]
        i += 1
        if x & 0x80:  # I: picture id
            if n <= i:
                return False
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:  # L: TL0PICIDX
            i += 1
        if x & 0x30:  # T or K: TID/KEYIDX
            i += 1
    if n <= i:
        return False
    # VP8 payload header: P bit (inverse key frame flag) is bit 0.
    return not (payload[i] & 0x01)


def h264_is_keyframe(payload: bytes) -> bool:
    """True when `payload` carries an SPS or the start of an IDR slice (RFC 6184)."""
    n = len(payload)
    if n < 1:
        return False
    nal = payload[0] & 0x1F
    if nal in (5, 7):
        return True
    if nal == 24:  # STAP-A: 16-bit size + NAL unit, repeated
        i = 1
        while i + 2 < n:
            size = (payload[i] << 8) | payload[i + 1]
            if size == 0:
                return False
            if payload[i + 2] & 0x1F in (5, 7):
                return True
            i += 2 + size
        return False
    if nal in (28, 29):  # FU-A / FU-B: start bit + original NAL type
        return n > 1 and bool(payload[1] & 0x80) and (payload[1] & 0x1F) in (5, 7)
    return False


def keyframe_detector(mime_type: str) -> Callable[[bytes], bool] | None:
    """The keyframe test for a codec: None means every packet is a valid start (audio)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_is_keyframe
    if mime == "video/h264":
        return h264_is_keyframe
    return None
