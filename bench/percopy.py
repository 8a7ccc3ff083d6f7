"""Per-copy CPU of the fan-out engine, in-process: what one forwarded copy costs, without a network.

    .venv/bin/python bench/percopy.py [--copies 8] [--packets 20000] [--repeat 7] [--engine compiled]

One published track, K copies on K real Outputs (libsrtp sessions and UDP sockets on
127.0.0.1), batched on an event loop as the server runs them: each loop iteration forwards a
burst of packets (a video frame) to every copy, then the loop flushes. The figure is process CPU
time per forwarded copy, the minimum over `--repeat` runs (the least disturbed one), so that two
builds can be compared back to back on a noisy machine: run it with PYTHONPATH pointing at each
tree's `src/` in turn. It reads nothing but the engine's public API (`fanout.select`, `Copy`,
`Ring`, `fanout`, `bind_loop`, `unbind_loop`) and `aiortc_hooks.srtp_output`.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import struct
import sys
import time

import pylibsrtp

from confero.media import fanout
from confero.media.aiortc_hooks import srtp_output

KEY = bytes(range(30))
EXT = b"\xbe\xde\x00\x01\x10\x30\x00\x00"  # a one-byte-header MID extension, as the server writes
BURST = 10  # packets per loop iteration: about one video frame


def session() -> pylibsrtp.Session:
    policy = pylibsrtp.Policy(key=KEY, ssrc_type=pylibsrtp.Policy.SSRC_ANY_OUTBOUND)
    policy.allow_repeat_tx = True
    policy.window_size = 1024
    return pylibsrtp.Session(policy)


async def run(engine: fanout.Engine, copies: int, packets: int) -> float:
    loop = asyncio.get_running_loop()
    sink = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sink.bind(("127.0.0.1", 0))
    sink.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
    senders, sessions, outputs = [], [], []
    for _ in range(copies):
        sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        sender.bind(("127.0.0.1", 0))
        sender.setblocking(False)
        tx = session()
        senders.append(sender)
        sessions.append(tx)
        outputs.append(srtp_output(engine, tx, sender.fileno(), sender.sendto, sink.getsockname()))
    ring = engine.Ring()
    track = [
        engine.Copy(0x1000 + i, 100, EXT, ring=ring, next_seq=1000, next_ts=5000, rtx_seq=200) for i in range(copies)
    ]
    for copy, output in zip(track, outputs, strict=True):
        copy.set_output(output)
        copy.waiting = True
    payload = bytes(1100)
    engine.bind_loop(loop)
    try:
        seq, ts = 1, 90_000
        first = struct.pack("!BBHII", 0x80, 96, 0, ts, 0x11111111) + b"\x10" + payload
        engine.fanout(track, first, 12, True, ring)  # the keyframe every copy waits for
        await asyncio.sleep(0)
        start = time.process_time()
        sent = 0
        while sent < packets:
            for _ in range(BURST):
                data = struct.pack("!BBHII", 0x80, 96, seq & 0xFFFF, ts, 0x11111111) + payload
                engine.fanout(track, data, 12, False, ring)
                seq += 1
            ts += 3000
            sent += BURST
            await asyncio.sleep(0)  # the loop flushes the batch
        elapsed = time.process_time() - start
    finally:
        engine.unbind_loop(loop)
        for output in outputs:
            output.close()
        for sender in senders:
            sender.close()
        sink.close()
    return elapsed / (sent * copies) * 1e6


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--packets", type=int, default=20_000, help="packets per run (bounded)")
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--engine", choices=("compiled", "python"), default="compiled")
    args = parser.parse_args()
    engine = fanout.select(args.engine == "compiled")
    if engine.name != args.engine:
        print(f"percopy: the {args.engine} engine is not available", file=sys.stderr)
        return 2
    runs = [asyncio.run(run(engine, args.copies, min(args.packets, 200_000))) for _ in range(args.repeat)]
    result = {
        "src": os.path.dirname(os.path.dirname(fanout.__file__)),
        "engine": engine.name,
        "copies": args.copies,
        "us_per_copy_min": round(min(runs), 4),
        "us_per_copy_median": round(sorted(runs)[len(runs) // 2], 4),
    }
    print(json.dumps(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
