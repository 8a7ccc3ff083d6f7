"""Per-packet CPU of a published track's receive path, in-process: `UpTrack.receive` alone.

    .venv/bin/python bench/receive.py [--packets 200000] [--repeat 7]

One audio track (Opus, every packet carrying the RFC 8285 one-byte extension block with the
RFC 6464 audio level, as browsers send it) and one video track (VP8: a key frame, then delta
frames), no copies
attached: what receiving costs before any fan-out. The figure is process CPU time per packet,
the minimum over `--repeat` runs, so that two builds can be compared back to back on a noisy
machine: run it with PYTHONPATH pointing at each tree's `src/` in turn. The audio-level element
is read when the build knows the extension (`audio_level_id`); older builds skip it.
"""

from __future__ import annotations

import argparse
import json
import struct
import time

from aiortc.rtcrtpparameters import RTCRtpCodecParameters

from confero.media.uptrack import UpTrack

LEVEL_ID = 1


#: A VP8 key frame's first packet (descriptor S=1, frame tag, start code, 320x240), then delta frames.
VP8_KEY = bytes([0x10, 0x50, 0x02, 0x00, 0x9D, 0x01, 0x2A, 0x40, 0x01, 0xF0, 0x00]) + bytes(990)
VP8_DELTA = bytes([0x00, 0x11, 0x00, 0x00]) + bytes(997)


def packets(count: int, payload_type: int, extension: bool, payload: bytes, first: bytes | None = None) -> list[bytes]:
    out = []
    for i in range(count):
        header = struct.pack("!BBHII", 0x90 if extension else 0x80, payload_type, i & 0xFFFF, i * 960, 0x1234)
        if extension:
            # 0xBEDE, one word: the audio-level element (id 1, length 0: one byte), two padding.
            header += struct.pack("!HH", 0xBEDE, 1) + bytes([LEVEL_ID << 4, 0x80 | (i % 127), 0, 0])
        out.append(header + (first if i == 0 and first is not None else payload))
    return out


def track(kind: str) -> UpTrack:
    mime, rate = ("audio/opus", 48000) if kind == "audio" else ("video/VP8", 90000)
    codec = RTCRtpCodecParameters(mimeType=mime, clockRate=rate, payloadType=111 if kind == "audio" else 96)
    uptrack = UpTrack(
        f"bench/{kind}/0", kind, codec, None, nack=False, send_pli=lambda _: True, send_nack=lambda _t, _s: None
    )
    if kind == "audio" and hasattr(uptrack, "audio_level_id"):
        uptrack.audio_level_id = LEVEL_ID
    return uptrack


def per_packet(kind: str, count: int, repeat: int) -> float:
    if kind == "audio":
        data = packets(count, 111, True, bytes(60))
    else:  # a key frame first (a build that reads the picture size stops looking after it)
        data = packets(count, 96, False, VP8_DELTA, first=VP8_KEY)
    best = float("inf")
    for _ in range(repeat):
        uptrack = track(kind)
        receive = uptrack.receive
        start = time.process_time()
        for packet in data:
            receive(packet)
        best = min(best, (time.process_time() - start) / count)
        assert uptrack.packets == count, uptrack.packets
    return best * 1e6


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--packets", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=7)
    args = parser.parse_args()
    result = {kind: round(per_packet(kind, args.packets, args.repeat), 3) for kind in ("audio", "video")}
    print(json.dumps({"us_per_packet": result, "packets": args.packets, "repeat": args.repeat}))


if __name__ == "__main__":
    main()
