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


# -- the picture size of a keyframe (called on keyframes only, never per packet) -------------


def _vp8_descriptor_size(payload: bytes) -> int:
    """Length of the VP8 payload descriptor (RFC 7741 4.2), or -1 if the packet is too short."""
    n = len(payload)
    if n < 1:
        return -1
    i = 1
    if payload[0] & 0x80:
        if n <= i:
            return -1
        x = payload[i]
        i += 1
        if x & 0x80:
            if n <= i:
                return -1
            i += 2 if payload[i] & 0x80 else 1
        if x & 0x40:
            i += 1
        if x & 0x30:
            i += 1
    return i if i <= n else -1


def vp8_resolution(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from the first packet of a VP8 key frame (RFC 6386 9.1), else None."""
    i = _vp8_descriptor_size(payload)
    if i < 0 or len(payload) < i + 10 or payload[i] & 0x01:  # not a key frame
        return None
    if payload[i + 3 : i + 6] != b"\x9d\x01\x2a":
        return None
    width = ((payload[i + 7] << 8) | payload[i + 6]) & 0x3FFF
    height = ((payload[i + 9] << 8) | payload[i + 8]) & 0x3FFF
    return (width, height) if width and height else None


class _Bits:
    """An RBSP bit reader with Exp-Golomb codes (H.264 7.2, 9.1); IndexError past the end."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def bit(self) -> int:
        byte = self.data[self.pos >> 3]
        value = (byte >> (7 - (self.pos & 7))) & 1
        self.pos += 1
        return value

    def bits(self, n: int) -> int:
        value = 0
        for _ in range(n):
            value = (value << 1) | self.bit()
        return value

    def ue(self) -> int:
        zeros = 0
        while self.bit() == 0:
            zeros += 1
            if zeros > 31:
                raise ValueError("Exp-Golomb code too long")
        return (1 << zeros) - 1 + self.bits(zeros)

    def se(self) -> int:
        k = self.ue()
        return (k + 1) // 2 if k & 1 else -(k // 2)


def _unescape(nal: bytes) -> bytes:
    """The RBSP of a NAL unit: emulation prevention bytes (00 00 03) removed."""
    return nal.replace(b"\x00\x00\x03", b"\x00\x00")


_HIGH_PROFILES = frozenset({100, 110, 122, 244, 44, 83, 86, 118, 128, 138, 139, 134, 135})


def h264_sps_resolution(sps: bytes) -> tuple[int, int] | None:
    """(width, height) of an H.264 SPS NAL unit (header byte first; H.264 7.3.2.1.1), else None."""
    try:
        r = _Bits(_unescape(sps[1:]))
        profile = r.bits(8)
        r.bits(16)  # constraint flags, level
        r.ue()  # seq_parameter_set_id
        chroma_format = 1
        if profile in _HIGH_PROFILES:
            chroma_format = r.ue()
            if chroma_format == 3:
                r.bit()  # separate_colour_plane_flag
            r.ue()  # bit_depth_luma_minus8
            r.ue()  # bit_depth_chroma_minus8
            r.bit()  # qpprime_y_zero_transform_bypass_flag
            if r.bit():  # seq_scaling_matrix_present_flag
                for index in range(8 if chroma_format != 3 else 12):
                    if r.bit():
                        last = scale = 8
                        for _ in range(16 if index < 6 else 64):
                            if scale:
                                scale = (last + r.se()) % 256
                            last = scale or last
        r.ue()  # log2_max_frame_num_minus4
        poc_type = r.ue()
        if poc_type == 0:
            r.ue()
        elif poc_type == 1:
            r.bit()
            r.se()
            r.se()
            for _ in range(r.ue()):
                r.se()
        r.ue()  # max_num_ref_frames
        r.bit()  # gaps_in_frame_num_value_allowed_flag
        width_mbs = r.ue() + 1
        height_units = r.ue() + 1
        frame_mbs_only = r.bit()
        if not frame_mbs_only:
            r.bit()  # mb_adaptive_frame_field_flag
        r.bit()  # direct_8x8_inference_flag
        width = width_mbs * 16
        height = (2 - frame_mbs_only) * height_units * 16
        if r.bit():  # frame_cropping_flag
            left, right, top, bottom = r.ue(), r.ue(), r.ue(), r.ue()
            crop_x = 1 if chroma_format in (0, 3) else 2  # SubWidthC (1 without chroma)
            crop_y = (2 if chroma_format == 1 else 1) * (2 - frame_mbs_only)  # SubHeightC
            width -= crop_x * (left + right)
            height -= crop_y * (top + bottom)
    except (IndexError, ValueError):
        return None
    return (width, height) if width > 0 and height > 0 else None


def h264_resolution(payload: bytes) -> tuple[int, int] | None:
    """(width, height) from an SPS in this RTP payload (a single NAL unit or STAP-A), else None."""
    n = len(payload)
    if n < 2:
        return None
    nal = payload[0] & 0x1F
    if nal == 7:
        return h264_sps_resolution(payload)
    if nal == 24:
        i = 1
        while i + 2 < n:
            size = (payload[i] << 8) | payload[i + 1]
            if size == 0 or i + 2 + size > n:
                return None
            if payload[i + 2] & 0x1F == 7:
                return h264_sps_resolution(payload[i + 2 : i + 2 + size])
            i += 2 + size
    return None


def resolution_reader(mime_type: str) -> Callable[[bytes], tuple[int, int] | None] | None:
    """The picture-size reader for a video codec's keyframe payloads (None: not a video codec we parse)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_resolution
    if mime == "video/h264":
        return h264_resolution
    return None


def keyframe_detector(mime_type: str) -> Callable[[bytes], bool] | None:
    """The keyframe test for a codec: None means every packet is a valid start (audio)."""
    mime = mime_type.lower()
    if mime == "video/vp8":
        return vp8_is_keyframe
    if mime == "video/h264":
        return h264_is_keyframe
    return None
