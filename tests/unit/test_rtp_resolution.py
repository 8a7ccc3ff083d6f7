"""The picture size of a keyframe: VP8's key frame header and H.264's SPS, read from payloads
real encoders made (aiortc's VP8 and H.264 packetizers, libx264 High profile), and the UpTrack
reading it on keyframes only."""

from __future__ import annotations

import fractions

import av
import numpy as np
import pytest
from aiortc.codecs import get_encoder
from aiortc.rtcrtpparameters import RTCRtpCodecParameters
from hypothesis import given, settings
from hypothesis import strategies as st

from confero.media import rtp
from confero.media.uptrack import UpTrack

SIZES = [(320, 240), (640, 360), (1280, 720), (176, 100), (854, 480)]
H264_PARAMS = {"packetization-mode": "1", "level-asymmetry-allowed": "1", "profile-level-id": "42e01f"}


def codec(mime: str) -> RTCRtpCodecParameters:
    params = H264_PARAMS if mime == "video/H264" else {}
    return RTCRtpCodecParameters(mimeType=mime, clockRate=90000, payloadType=96, parameters=dict(params))


def frame(width: int, height: int, pts: int = 0) -> av.VideoFrame:
    image = np.random.default_rng(pts).integers(0, 255, (height, width, 3), dtype=np.uint8)
    out = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
    out.pts = pts
    out.time_base = fractions.Fraction(1, 90000)
    return out


def encoded(mime: str, width: int, height: int, frames: int = 1) -> list[list[bytes]]:
    """RTP payloads of `frames` frames (the first a keyframe) as aiortc's encoder packetizes them."""
    encoder = get_encoder(codec(mime))
    out = []
    for i in range(frames):
        payloads, _ = encoder.encode(frame(width, height, i * 3000), force_keyframe=i == 0)
        out.append(payloads)
    return out


@pytest.mark.parametrize("size", SIZES, ids=lambda s: f"{s[0]}x{s[1]}")
@pytest.mark.parametrize(
    ("mime", "read"), [("video/VP8", rtp.vp8_resolution), ("video/H264", rtp.h264_resolution)], ids=["VP8", "H264"]
)
def test_the_size_of_a_real_keyframe(mime: str, read: object, size: tuple[int, int]) -> None:
    (keyframe, *later) = encoded(mime, *size, frames=3)
    assert callable(read)
    assert read(keyframe[0]) == size
    assert rtp.resolution_reader(mime) is read
    # Inter frames, and the packets after a keyframe's first, carry no size.
    assert all(read(p) is None for p in keyframe[1:] + [p for f in later for p in f])


@pytest.mark.parametrize("size", [(1920, 1080), (854, 480), (1280, 720)], ids=lambda s: f"{s[0]}x{s[1]}")
def test_the_size_of_a_high_profile_sps_with_cropping(size: tuple[int, int]) -> None:
    context = av.CodecContext.create("libx264", "w")
    context.width, context.height = size
    context.pix_fmt = "yuv420p"
    context.time_base = fractions.Fraction(1, 30)
    data = b"".join(bytes(p) for p in context.encode(frame(*size))) + b"".join(bytes(p) for p in context.encode(None))
    nals = [n for n in (chunk.rstrip(b"\x00") for chunk in data.split(b"\x00\x00\x01")) if n]
    (sps,) = [n for n in nals if n[0] & 0x1F == 7]
    assert sps[1] == 100  # High profile: the chroma format and scaling fields are read
    assert rtp.h264_sps_resolution(sps) == size
    # the same SPS in a STAP-A, before a PPS, as browsers send it
    (pps,) = [n for n in nals if n[0] & 0x1F == 8]
    stap = bytes([24]) + len(sps).to_bytes(2, "big") + sps + len(pps).to_bytes(2, "big") + pps
    assert rtp.h264_resolution(stap) == size


def test_no_reader_for_audio() -> None:
    assert rtp.resolution_reader("audio/opus") is None


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=64))
def test_any_bytes_give_a_size_or_none(payload: bytes) -> None:
    for read in (rtp.vp8_resolution, rtp.h264_resolution, rtp.h264_sps_resolution):
        size = read(payload)
        assert size is None or (size[0] > 0 and size[1] > 0)


def rtp_packet(seq: int, payload: bytes) -> bytes:
    return rtp.HEADER.pack(0x80, 96, seq, seq * 3000, 0x1234) + payload


@pytest.mark.parametrize("mime", ["video/VP8", "video/H264"])
def test_an_uptrack_reads_the_size_of_its_first_keyframe_then_stops_looking(mime: str) -> None:
    uptrack = UpTrack(
        "s/video/1", "video", codec(mime), None, nack=False, send_pli=lambda u: True, send_nack=lambda u, lost: None
    )
    assert (uptrack.stats().width, uptrack.info().height) == (0, 0)
    seq = 0
    for payloads in encoded(mime, 640, 360, frames=2):
        for payload in payloads:
            seq += 1
            uptrack.receive(rtp_packet(seq, payload))
    stats = uptrack.stats()
    assert (stats.width, stats.height) == (640, 360) and uptrack.info().width == 640
    assert stats.keyframes == 1  # detection for the size ended at the first keyframe
    # A later keyframe of another size is read only when a copy waits for one (none does here).
    for payload in encoded(mime, 320, 240)[0]:
        seq += 1
        uptrack.receive(rtp_packet(seq, payload))
    assert uptrack.stats().keyframes == 1 and uptrack.dump()["size"] == [640, 360]
    uptrack.reset_source()  # a new SSRC: its first keyframe tells the size again
    for payload in encoded(mime, 320, 240)[0]:
        seq += 1
        uptrack.receive(rtp_packet(seq, payload))
    assert (uptrack.width, uptrack.height) == (320, 240)
