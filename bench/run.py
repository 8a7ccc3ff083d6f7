"""Conference benchmark: Confero against Janus's VideoRoom, same load, same run, loopback only.

    .venv/bin/python bench/run.py                   # full sweep, both servers (~10 min);
                                                    # writes BENCHMARKS.md and bench/plots/*.png
    .venv/bin/python bench/run.py --smoke           # CI-sized (< 60 s), both servers if Janus is installed
    .venv/bin/python bench/run.py --smoke --confero-only

Load (bench/roomload.py, one process of aiortc clients): R rooms x M participants; each
participant publishes pre-encoded VP8 (1 Mbit/s, 30 fps) + Opus and plays every other member of
its room (one subscriber peer connection per participant, on both servers). Subscribers count
packets and sequence gaps from the clear RTP header and decrypt one packet in 8 to read the
publisher's send time stamped into the payload tail; nothing is decoded.

For each room size M (default 2, 4, 6, 8) and each server (interleaved: Confero M=2, Janus M=2,
Confero M=4, ...), a fresh server is started, its idle CPU and RSS measured, then rooms are added
step by step (participants 8, 16, 32, 48, 64, 80, 96, ...). Each step: join, warm-up, then a
steady window in which the server's CPU (all threads, /proc/<pid>/task/*/schedstat), its RSS,
the packets sent/received by the generator, sequence gaps and latency histograms are read.
The ramp stops at loss > 0.1 %, a saturated server, generator or machine, join failures, the
participant cap or the time budget. At the end of each ramp the publishers pause for a few
seconds: the server CPU then is the cost of the connected-but-idle peers.

Figures: forwarded packets/s; µs of server CPU per received packet and per forwarded copy (least
squares over every zero-loss step: CPU = idle + pps_in x recv + pps_out x copy, raw and with the
measured idle-peer cost taken out); CPU and memory per participant; loss; added latency p50/p99
(publisher send -> kernel receive timestamp at the subscriber, and as seen by the client);
join -> first packet and -> first keyframe; participants per core at zero loss. Every figure is
also given as the ratio Confero/Janus.

Exit status: 0 ok; 1 nothing was forwarded (or no step measured); 2 a server or the generator
failed to start.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shlex
import subprocess
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
sys.path.insert(0, str(BENCH))

from janus import JanusServer, janus_binary, janus_version  # noqa: E402
from quick import LoadGen, free_port, machine, problems_in, stop_process, udp_drops, udp_errors, wait_port  # noqa: E402

CLK_TCK = os.sysconf("SC_CLK_TCK")
PAGE = os.sysconf("SC_PAGE_SIZE")

TARGETS = {
    "recv_us": ("receive path CPU per packet", "<=", 10.0, "µs"),
    "copy_us": ("CPU per forwarded copy", "<=", 4.0, "µs"),
    "fwd_pps_per_core": ("forwarded packets/s per core at zero loss", ">=", 200_000.0, "pps"),
    "lat_p99_ms": ("added latency p99 at 70 % of capacity", "<=", 5.0, "ms"),
    "join_key_p95_ms": ("join -> first keyframe (p95)", "<=", 1000.0, "ms"),
    "participants_per_core": ("participants per core at zero loss", ">=", None, ""),  # >= Janus
}


# ------------------------------------------------------------------------------ measurement


def cpu_sample(pid: int) -> dict[str, Any]:
    """Process CPU: /proc/<pid>/stat user/system (ticks, includes exited threads) and the sum of
    the live threads' schedstat run times (ns, precise)."""
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    total_ns = 0
    tids = []
    for tid in os.listdir(f"/proc/{pid}/task"):
        try:
            with open(f"/proc/{pid}/task/{tid}/schedstat") as f:
                total_ns += int(f.read().split()[0])
            tids.append(tid)
        except (OSError, ValueError, IndexError):
            continue
    return {"t": time.monotonic(), "user": user, "sys": system, "sched": total_ns / 1e9, "tids": frozenset(tids)}


def cpu_delta(a: dict[str, Any], b: dict[str, Any]) -> dict[str, float]:
    dt = b["t"] - a["t"]
    stat = (b["user"] + b["sys"] - a["user"] - a["sys"]) / dt
    sched = (b["sched"] - a["sched"]) / dt
    # Threads that ended inside the window take their schedstat time with them; /proc/<pid>/stat
    # keeps it (at 10 ms resolution). Use schedstat only when the thread set did not change.
    same = a["tids"] == b["tids"]
    return {
        "cores": sched if same else stat,
        "user": (b["user"] - a["user"]) / dt,
        "sys": (b["sys"] - a["sys"]) / dt,
        "stat_cores": stat,
        "threads": len(b["tids"]),
        "threads_stable": same,
    }


def machine_busy() -> tuple[float, float]:
    """(busy seconds summed over CPUs, monotonic time) from /proc/stat."""
    with open("/proc/stat") as f:
        parts = f.readline().split()[1:]
    values = [int(v) for v in parts]
    idle = values[3] + (values[4] if len(values) > 4 else 0)
    return (sum(values[:8]) - idle) / CLK_TCK, time.monotonic()


def rss_mb(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/statm") as f:
            return int(f.read().split()[1]) * PAGE / 1e6
    except OSError:
        return float("nan")


def hist_merge(h: dict[str, int]) -> dict[int, int]:
    return {int(k): int(v) for k, v in h.items()}


def hist_pct(h: dict[int, int], q: float, bucket_us: int = 10) -> float | None:
    n = sum(h.values())
    if not n:
        return None
    acc = 0
    target = q * n
    for k in sorted(h):
        acc += h[k]
        if acc >= target:
            return (k + 0.5) * bucket_us / 1000.0  # ms, bucket centre
    return None


def pct(values: list[float], q: float) -> float | None:
    values = sorted(v for v in values if v is not None)
    if not values:
        return None
    i = min(len(values) - 1, max(0, math.ceil(q * len(values)) - 1))
    return values[i]


# ---------------------------------------------------------------------------------- servers


class ConferoTarget:
    name = "confero"
    label = "Confero"
    core_limit = 1.0  # one Python event loop

    def __init__(self, tmp: Path, diagnose: bool = False, engine: str = "compiled") -> None:
        self.tmp = tmp
        self.port = free_port()
        if engine == "python":
            self.name, self.label = "confero-python", "Confero (pure-Python fan-out)"
        entry = [str(BENCH / "diag_serve.py")] if diagnose else ["-m", "confero"]
        self.command = [
            sys.executable, *entry, "serve",
            "--host", "127.0.0.1", "--port", str(self.port),
            "--data-dir", str(tmp / "data"),
            "--ice-address", "127.0.0.1",
            "--log-level", "WARNING",
            "--compiled-fanout", "true" if engine == "compiled" else "false",
        ]  # fmt: skip
        self.log_path = tmp / "confero.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def start(self) -> None:
        env = dict(os.environ)
        env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - kept open for the process's lifetime, closed in stop()
        self.proc = subprocess.Popen(self.command, stdout=self._log, stderr=subprocess.STDOUT, cwd=REPO, env=env)
        wait_port(self.port, self.proc, 30)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def stop(self) -> int | None:
        if self.proc is not None:
            stop_process(self.proc, 15.0)
        if self._log is not None:
            self._log.close()
            self._log = None
        return self.proc.returncode if self.proc else None

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""


class JanusTarget:
    name = "janus"
    label = "Janus"

    def __init__(self, tmp: Path) -> None:
        self.core_limit = float(len(os.sched_getaffinity(0)))  # multi-threaded
        self.server = JanusServer(tmp, port=free_port(), rtp_ports=(30000, 39999))
        self.port = self.server.port

    @property
    def command(self) -> list[str]:
        return self.server.command

    @property
    def pid(self) -> int:
        return self.server.pid

    def start(self) -> None:
        self.server.start()

    def alive(self) -> bool:
        return self.server.proc is not None and self.server.proc.poll() is None

    def stop(self) -> int | None:
        return self.server.stop()

    def log_text(self) -> str:
        return self.server.log_text()


# Janus warnings that every run prints and that say nothing about the load: aiortc's offer lists
# sha-256/384/512 fingerprints, and mDNS is off on purpose.
JANUS_BENIGN = (
    "mDNS resolution disabled",
    "Hashing algorithm not the one we expected",  # aiortc lists sha-256/384/512 fingerprints
    "Failed to add some remote candidates",  # aiortc's SDP candidates; ICE connects on 127.0.0.1
    "Didn't receive video for more than",  # the pause at the end of a ramp
    "Didn't receive audio for more than",
    "Can't notify event, no session object",  # teardown
)


def janus_problems(text: str) -> tuple[int, list[str]]:
    bad = [line for line in text.splitlines() if "[ERR]" in line or "[WARN]" in line or "[FATAL]" in line]
    bad = [line for line in bad if not any(b in line for b in JANUS_BENIGN)]
    return len(bad), bad[:20]


# ------------------------------------------------------------------------------------ sweep


def step_plan(m: int, targets: list[int], max_participants: int) -> list[int]:
    """Room counts for the ramp: the participant targets rounded to whole rooms."""
    rooms: list[int] = []
    for p in targets:
        r = max(1, round(p / m))
        if r * m > max_participants:
            break
        if not rooms or r > rooms[-1]:
            rooms.append(r)
    return rooms


def wait_quiet(pids: list[int], limit: float, max_wait: float) -> float:
    """Wait (at most max_wait s) until other processes use less than `limit` cores over 1 s.
    Returns the seconds waited."""
    t0 = time.monotonic()
    while True:
        b0 = machine_busy()
        c0 = [cpu_sample(p) for p in pids]
        time.sleep(1.0)
        b1 = machine_busy()
        c1 = [cpu_sample(p) for p in pids]
        ours = sum(cpu_delta(a, b)["cores"] for a, b in zip(c0, c1, strict=True))
        other = (b1[0] - b0[0]) / (b1[1] - b0[1]) - ours
        if other < limit or time.monotonic() - t0 >= max_wait:
            return time.monotonic() - t0


def measure_window(lg: LoadGen, target: Any, lg_pid: int, window: float) -> dict[str, Any]:
    s0 = lg.request({"cmd": "mark"}, "stats", 30)
    c0, l0 = cpu_sample(target.pid), cpu_sample(lg_pid)
    b0 = machine_busy()
    d0 = (udp_drops(target.pid), udp_drops(lg_pid))
    u0 = udp_errors()
    time.sleep(window)
    s1 = lg.request({"cmd": "stats"}, "stats", 30)
    c1, l1 = cpu_sample(target.pid), cpu_sample(lg_pid)
    b1 = machine_busy()
    d1 = (udp_drops(target.pid), udp_drops(lg_pid))
    u1 = udp_errors()
    dt = s1["t"] - s0["t"]
    server = cpu_delta(c0, c1)
    gen = cpu_delta(l0, l1)
    busy = (b1[0] - b0[0]) / (b1[1] - b0[1])
    sent = (s1["video_sent"] + s1["audio_sent"]) - (s0["video_sent"] + s0["audio_sent"])
    recv = {k: s1[k]["received"] - s0[k]["received"] for k in ("video", "audio")}
    gaps = sum(s1[k]["gaps"] - s0[k]["gaps"] for k in ("video", "audio"))
    late = sum(s1[k]["late"] - s0[k]["late"] for k in ("video", "audio"))
    dups = sum(s1[k]["dups"] - s0[k]["dups"] for k in ("video", "audio"))
    received = recv["video"] + recv["audio"]
    lost = max(0, gaps - late)
    h_k = hist_merge(s1["hist_kernel"])
    h_a = hist_merge(s1["hist_app"])
    return {
        "window_s": round(dt, 3),
        "pps_in": sent / dt,
        "pps_in_video": (s1["video_sent"] - s0["video_sent"]) / dt,
        "fwd_pps": received / dt,
        "fwd_pps_video": recv["video"] / dt,
        "rtx_pps": (s1["rtx"] - s0["rtx"]) / dt,
        "gaps": gaps,
        "late": late,
        "dups": dups,
        "lost": lost,
        "loss": lost / (received + lost) if received + lost else 0.0,
        "server_cpu": server["cores"],
        "server_user": server["user"],
        "server_sys": server["sys"],
        "server_threads": server["threads"],
        "server_threads_stable": server["threads_stable"],
        "gen_cpu": gen["cores"],
        "machine_busy": busy,
        "other_cpu": max(0.0, busy - server["cores"] - gen["cores"]),
        "rss_mb": rss_mb(target.pid),
        "lat_kernel_ms": {
            "p50": hist_pct(h_k, 0.50),
            "p90": hist_pct(h_k, 0.90),
            "p99": hist_pct(h_k, 0.99),
            "max": hist_pct(h_k, 1.0),
            "n": sum(h_k.values()),
        },
        "lat_app_ms": {
            "p50": hist_pct(h_a, 0.50),
            "p90": hist_pct(h_a, 0.90),
            "p99": hist_pct(h_a, 0.99),
            "max": hist_pct(h_a, 1.0),
            "n": sum(h_a.values()),
        },
        "hist_kernel": h_k,
        "gen_lag_max_ms": s1["lag_max_ms"],
        "gen_lag_mean_ms": s1["lag_mean_ms"],
        "gen_resyncs": s1["resyncs"] - s0["resyncs"],
        "plis": s1["plis"] - s0["plis"],
        "forced_keyframes": s1["forced_keyframes"] - s0["forced_keyframes"],
        "send_errors": s1["send_errors"] - s0["send_errors"],
        "srtp_errors": s1["srtp_errors"] - s0["srtp_errors"],
        "bad_stamps": s1["bad_stamps"] - s0["bad_stamps"],
        "reoffers": s1["reoffers"] - s0["reoffers"],
        "srtp_profiles": s1.get("srtp_profiles"),
        "server_socket_drops": d1[0] - d0[0],
        "gen_socket_drops": d1[1] - d0[1],
        "udp_errors": {k: u1.get(k, 0) - u0.get(k, 0) for k in u1},
    }


def noisy(step: dict[str, Any], args: argparse.Namespace) -> bool:
    """Other processes took a lot of CPU, or the generator stalled, during the window."""
    return step["other_cpu"] > args.noisy_cpu or step["gen_lag_mean_ms"] > 2.0 or step["gen_resyncs"] > 0


def join_summary(samples: list[dict[str, Any]], expected: int) -> dict[str, Any]:
    first = [s["first_ms"] for s in samples if s.get("first_ms") is not None]
    key = [s["key_ms"] for s in samples if s.get("key_ms") is not None]
    return {
        "n": len(samples),
        "expected": expected,
        "missing_key": expected - len(key),
        "first_p50_ms": pct(first, 0.5),
        "first_p95_ms": pct(first, 0.95),
        "first_max_ms": max(first) if first else None,
        "key_p50_ms": pct(key, 0.5),
        "key_p95_ms": pct(key, 0.95),
        "key_max_ms": max(key) if key else None,
        "key_samples": key,
        "first_samples": first,
    }


def sweep(kind: str, m: int, args: argparse.Namespace, deadline: float, log: Any) -> dict[str, Any]:
    tmp = Path(tempfile.mkdtemp(prefix=f"bench-{kind}-m{m}-"))
    target: Any
    if kind == "janus":
        target = JanusTarget(tmp)
    else:
        target = ConferoTarget(tmp, args.diagnose, "python" if kind == "confero-python" else "compiled")
    result: dict[str, Any] = {"server": kind, "m": m, "steps": [], "stop_reason": None, "tmp": str(tmp)}
    rooms_plan = step_plan(m, args.targets, args.max_participants)
    lg: LoadGen | None = None
    try:
        target.start()
        result["server_command"] = " ".join(shlex.quote(a) for a in target.command)
        if args.pin:
            os.sched_setaffinity(target.pid, {sorted(os.sched_getaffinity(0))[0]})
        time.sleep(1.0)
        c0 = cpu_sample(target.pid)
        time.sleep(args.idle)
        c1 = cpu_sample(target.pid)
        result["idle"] = {"cpu": cpu_delta(c0, c1)["cores"], "rss_mb": rss_mb(target.pid)}
        gen_cmd = [
            sys.executable, str(BENCH / "roomload.py"),
            "--server", "janus" if kind == "janus" else "confero", "--port", str(target.port),
            "--bitrate", str(args.bitrate), "--sample", str(args.sample), "--srtp", args.srtp,
            "--max-participants", str(args.max_participants),
            "--max-seconds", str(int(max(60, deadline - time.monotonic() + 120))),
        ]  # fmt: skip
        result["generator_command"] = " ".join(shlex.quote(a) for a in gen_cmd)
        lg = LoadGen(gen_cmd, tmp / "roomload.log", sorted(os.sched_getaffinity(0))[-1] if args.pin else None)
        ready = lg.wait_event("ready", 90)
        result["media"] = ready["media"]
        rooms = 0
        for target_rooms in rooms_plan:
            if time.monotonic() > deadline:
                result["stop_reason"] = "time budget"
                break
            new = [f"m{m}r{i}" for i in range(rooms, target_rooms)]
            p_next = target_rooms * m
            added = lg.request({"cmd": "add", "rooms": new, "m": m}, "added", 60 + 3 * p_next)
            rooms = target_rooms
            time.sleep(args.warmup)
            if not target.alive():
                result["stop_reason"] = "server exited"
                break
            step = measure_window(lg, target, lg.proc.pid, args.window)
            windows = 1
            waited = 0.0
            while noisy(step, args) and windows <= args.retries and time.monotonic() < deadline:
                waited += wait_quiet([target.pid, lg.proc.pid], args.noisy_cpu, args.quiet_wait)
                again = measure_window(lg, target, lg.proc.pid, args.window)
                windows += 1
                if (
                    again["other_cpu"] + again["gen_lag_mean_ms"] / 10
                    < step["other_cpu"] + step["gen_lag_mean_ms"] / 10
                ):
                    step = again
            step["windows"] = windows
            step["waited_for_quiet_s"] = round(waited, 1)
            step["noisy"] = noisy(step, args)
            step.update(
                {
                    "m": m,
                    "rooms": rooms,
                    "participants": rooms * m,
                    "join": join_summary(added["join"], len(new) * m * (m - 1)),
                    "join_elapsed_s": added["elapsed_s"],
                    "join_failed": added["n_failed"],
                    "join_errors": added["failed"],
                    "complete_subscribers": added["complete_subscribers"],
                    "new_participants": added["participants"],
                }
            )
            step["expected_fwd_pps"] = step["pps_in"] * (m - 1)
            step["delivery"] = step["fwd_pps"] / step["expected_fwd_pps"] if step["expected_fwd_pps"] else 0.0
            step["cpu_per_participant_ms"] = step["server_cpu"] * 1000 / step["participants"]
            step["us_per_fwd"] = step["server_cpu"] * 1e6 / step["fwd_pps"] if step["fwd_pps"] else None
            step["rss_per_participant_mb"] = (step["rss_mb"] - result["idle"]["rss_mb"]) / step["participants"]
            reasons = []
            if added["n_failed"]:
                reasons.append(f"{added['n_failed']} join failures")
            if step["loss"] > args.loss_threshold:
                reasons.append(f"loss {step['loss'] * 100:.2f} %")
            if step["server_cpu"] >= args.cpu_stop * target.core_limit:
                reasons.append("server saturated")
            if step["gen_cpu"] >= args.cpu_stop:
                reasons.append("generator saturated")
            if step["server_cpu"] + step["gen_cpu"] >= 0.95 * len(os.sched_getaffinity(0)):
                reasons.append("machine saturated")
            # Delivery far from 100 % with no gaps means packets piled up in a queue (a stall).
            step["zero_loss"] = (
                step["loss"] <= args.loss_threshold and not added["n_failed"] and 0.98 < step["delivery"] < 1.02
            )
            # ...and packets did not sit in a queue (a starved or stalled server): median latency < 50 ms.
            p50 = step["lat_kernel_ms"]["p50"]
            step["healthy"] = step["zero_loss"] and p50 is not None and p50 < 50.0
            step["limits"] = reasons
            result["steps"].append(step)
            lk = step["lat_kernel_ms"]
            line = (
                f"  {target.label:7} M={m} R={rooms:3} P={rooms * m:3}: server {step['server_cpu'] * 100:5.1f} % "
                f"(gen {step['gen_cpu'] * 100:4.1f} %, other {step['other_cpu'] * 100:4.1f} %) "
                f"in {step['pps_in']:7.0f} fwd {step['fwd_pps']:8.0f} pps ({step['delivery'] * 100:5.1f} %) "
                f"loss {step['loss'] * 100:.3f} % lat p50/p99 {fmt(lk['p50'], 2)}/{fmt(lk['p99'], 2)} ms "
                f"join->key p95 {fmt(step['join']['key_p95_ms'], 0)} ms RSS {step['rss_mb']:.0f} MB"
                + (
                    f" (noisy after {windows} windows)"
                    if step["noisy"]
                    else (f" ({windows} windows)" if windows > 1 else "")
                )
                + (f"  [{'; '.join(reasons)}]" if reasons else "")
            )
            print(line, file=log, flush=True)
            if reasons:
                result["stop_reason"] = "; ".join(reasons)
                break
        else:
            result["stop_reason"] = result["stop_reason"] or "participant cap"
        # Cost of the connected peers without media: publishers pause.
        if result["steps"] and target.alive() and args.pause > 0:
            lg.request({"cmd": "pause"}, "pause", 30)
            time.sleep(1.0)
            p0 = cpu_sample(target.pid)
            time.sleep(args.pause)
            p1 = cpu_sample(target.pid)
            lg.request({"cmd": "resume"}, "resume", 30)
            paused = cpu_delta(p0, p1)["cores"]
            participants = result["steps"][-1]["participants"]
            result["paused"] = {
                "participants": participants,
                "cpu": paused,
                "per_participant_ms": max(0.0, paused - result["idle"]["cpu"]) * 1000 / participants,
            }
    except Exception as exc:
        result["error"] = repr(exc)
        print(f"  {target.__class__.__name__} M={m}: FAILED {exc!r}", file=log, flush=True)
    finally:
        if lg is not None:
            lg.close(30)
        result["exit"] = target.stop()
        text = target.log_text()
        n, lines = janus_problems(text) if kind == "janus" else problems_in(text)
        if kind != "janus" and args.diagnose:
            result["diag"] = [line for line in text.splitlines() if line.startswith("diag:")]
        result["server_log"] = {"problem_lines": n, "first": lines}
        gtext = (tmp / "roomload.log").read_text(errors="replace") if (tmp / "roomload.log").exists() else ""
        gn, glines = problems_in(gtext)
        result["generator_log"] = {"problem_lines": gn, "first": glines}
    return result


def fmt(v: float | None, digits: int = 1) -> str:
    return "-" if v is None else f"{v:.{digits}f}"


# --------------------------------------------------------------------------------- analysis


def fit_costs(steps: list[dict[str, Any]], idle_pp_ms: float | None) -> dict[str, Any] | None:
    """Least squares CPU = a + pps_in*recv + fwd_pps*copy over zero-loss steps (optionally after
    removing the measured idle-peer cost per participant)."""
    import numpy as np

    rows = [s for s in steps if s.get("healthy", s["zero_loss"]) and s["fwd_pps"] > 0]
    if len(rows) < 3:
        return None
    x = np.array([[1.0, s["pps_in"], s["fwd_pps"]] for s in rows])
    if len({s["m"] for s in rows}) < 2 or np.linalg.matrix_rank(x / x.max(axis=0)) < 3:
        return None  # one room size only: pps_out = (M-1) pps_in, recv and copy cannot be told apart
    y = np.array([s["server_cpu"] - ((idle_pp_ms or 0.0) / 1000 * s["participants"]) for s in rows])
    coef, *_ = np.linalg.lstsq(x, y, rcond=None)
    pred = x @ coef
    ss_res = float(((y - pred) ** 2).sum())
    ss_tot = float(((y - y.mean()) ** 2).sum()) or 1e-12
    return {
        "intercept_cores": float(coef[0]),
        "recv_us": float(coef[1] * 1e6),
        "copy_us": float(coef[2] * 1e6),
        "r2": 1 - ss_res / ss_tot,
        "rms_cores": math.sqrt(ss_res / len(rows)),
        "n": len(rows),
        "idle_per_participant_ms_removed": idle_pp_ms,
    }


def rss_slope(sweep_result: dict[str, Any]) -> float | None:
    pts = [(0, sweep_result.get("idle", {}).get("rss_mb"))] + [
        (s["participants"], s["rss_mb"]) for s in sweep_result["steps"]
    ]
    pts = [(p, r) for p, r in pts if r is not None and not math.isnan(r)]
    if len(pts) < 2:
        return None
    n = len(pts)
    mx = sum(p for p, _ in pts) / n
    my = sum(r for _, r in pts) / n
    sxx = sum((p - mx) ** 2 for p, _ in pts)
    if sxx == 0:
        return None
    return sum((p - mx) * (r - my) for p, r in pts) / sxx


def summarize(results: list[dict[str, Any]], server: str, args: argparse.Namespace) -> dict[str, Any]:
    sweeps = [r for r in results if r["server"] == server]
    steps = [s for r in sweeps for s in r["steps"]]
    out: dict[str, Any] = {"server": server, "steps": len(steps)}
    if not steps:
        return out
    paused = [r["paused"]["per_participant_ms"] for r in sweeps if r.get("paused")]
    idle_pp = sorted(paused)[len(paused) // 2] if paused else None
    out["idle_peer_ms_per_participant"] = idle_pp
    out["fit_raw"] = fit_costs(steps, None)
    out["fit_net"] = fit_costs(steps, idle_pp) if idle_pp is not None else None
    fit = out["fit_net"] or out["fit_raw"]
    out["recv_us"] = fit["recv_us"] if fit else None
    out["copy_us"] = fit["copy_us"] if fit else None
    zl = [s for s in steps if s.get("healthy", s["zero_loss"])]
    best = max(zl, key=lambda s: s["fwd_pps"]) if zl else None
    out["max_zero_loss_fwd_pps"] = best["fwd_pps"] if best else None
    out["fwd_pps_per_core"] = best["fwd_pps"] / best["server_cpu"] if best and best["server_cpu"] > 0 else None
    out["fwd_pps_per_core_at"] = {"m": best["m"], "participants": best["participants"]} if best else None
    out["copies_per_core_from_fit"] = 1e6 / fit["copy_us"] if fit and fit["copy_us"] > 0 else None
    per_m = {}
    for r in sweeps:
        zsteps = [s for s in r["steps"] if s.get("healthy", s["zero_loss"])]
        if not zsteps:
            continue
        top = max(zsteps, key=lambda s: s["participants"])
        per_m[r["m"]] = {
            "participants": top["participants"],
            "server_cpu": top["server_cpu"],
            "participants_per_core": top["participants"] / top["server_cpu"] if top["server_cpu"] > 0 else None,
            "cpu_per_participant_ms": top["cpu_per_participant_ms"],
            "stop_reason": r.get("stop_reason"),
            "rss_slope_mb": rss_slope(r),
        }
    out["per_m"] = per_m
    ppc = [v["participants_per_core"] for v in per_m.values() if v["participants_per_core"]]
    out["participants_per_core"] = sum(ppc) / len(ppc) if ppc else None
    cpp = [v["cpu_per_participant_ms"] for v in per_m.values()]
    out["cpu_per_participant_ms"] = sum(cpp) / len(cpp) if cpp else None
    slopes = [v["rss_slope_mb"] for v in per_m.values() if v["rss_slope_mb"] is not None]
    out["mem_per_participant_mb"] = sorted(slopes)[len(slopes) // 2] if slopes else None
    keys = [k for s in zl for k in s["join"]["key_samples"]]
    firsts = [k for s in zl for k in s["join"]["first_samples"]]
    out["join_first_p50_ms"] = pct(firsts, 0.5)
    out["join_first_p95_ms"] = pct(firsts, 0.95)
    out["join_key_p50_ms"] = pct(keys, 0.5)
    out["join_key_p95_ms"] = pct(keys, 0.95)
    out["join_key_max_ms"] = max(keys) if keys else None
    out["missing_keyframes"] = sum(s["join"]["missing_key"] for s in steps)
    out["max_loss"] = max(s["loss"] for s in steps)
    return out


def pick_latency_point(results: list[dict[str, Any]], core_limit: float) -> tuple[int, int] | None:
    """(M, participants) of Confero's zero-loss step nearest 70 % of its core limit."""
    steps = [s for r in results if r["server"] == "confero" for s in r["steps"] if s.get("healthy", s["zero_loss"])]
    quiet = [s for s in steps if not s.get("noisy")]
    steps = quiet or steps
    if not steps:
        return None
    best = min(steps, key=lambda s: (abs(s["server_cpu"] - 0.7 * core_limit), -s["m"]))
    return best["m"], best["participants"]


def latency_band(
    results: list[dict[str, Any]], servers: list[str], low: float = 0.6, high: float = 0.8
) -> dict[str, Any]:
    """Latency pooled over Confero's healthy steps at 60-80 % of its core (70 % of capacity), and
    over Janus's steps at the same (M, participants): one window's p99 hangs on a single stall,
    the pool is steadier."""
    points = sorted(
        {
            (s["m"], s["participants"])
            for r in results
            if r["server"] == "confero"
            for s in r["steps"]
            if s.get("healthy") and low <= s["server_cpu"] <= high
        }
    )
    out: dict[str, Any] = {"points": points, "band": [low, high]}
    if not points:
        # The generator could not drive Confero that far: pool the steps nearest the top load.
        healthy = [
            (s["server_cpu"], s["m"], s["participants"])
            for r in results
            if r["server"] == "confero"
            for s in r["steps"]
            if s.get("healthy")
        ]
        if healthy:
            top = max(c for c, _, _ in healthy)
            points = sorted({(m, p) for c, m, p in healthy if c >= top - 0.1})
            out["points"] = points
            out["fallback"] = (
                f"no step reached {low * 100:.0f}-{high * 100:.0f} % of a core; pooled instead: the steps within 10 points of the highest load reached ({top * 100:.0f} %)"
            )
    for server in servers:
        pooled: dict[int, int] = {}
        used = []
        for r in results:
            if r["server"] != server:
                continue
            for st in r["steps"]:
                if (st["m"], st["participants"]) in points and st.get("healthy"):
                    used.append((st["m"], st["participants"]))
                    for k, v in st["hist_kernel"].items():
                        pooled[int(k)] = pooled.get(int(k), 0) + v
        out[server] = {
            "p50": hist_pct(pooled, 0.5),
            "p99": hist_pct(pooled, 0.99),
            "n": sum(pooled.values()),
            "steps": used,
        }
    return out


def step_at(results: list[dict[str, Any]], server: str, point: tuple[int, int] | None) -> dict[str, Any] | None:
    if point is None:
        return None
    for r in results:
        if r["server"] == server and r["m"] == point[0]:
            for s in r["steps"]:
                if s["participants"] == point[1]:
                    return s
    return None


def common_point(results: list[dict[str, Any]], m: int) -> dict[str, Any] | None:
    """Largest participant count with a zero-loss step for both servers at room size m."""
    by = {}
    for r in results:
        if r["m"] == m:
            by[r["server"]] = {s["participants"]: s for s in r["steps"] if s.get("healthy", s["zero_loss"])}
    if "confero" not in by or "janus" not in by:
        return None
    common = sorted(set(by["confero"]) & set(by["janus"]))
    if not common:
        return None
    p = common[-1]
    return {"participants": p, "confero": by["confero"][p], "janus": by["janus"][p]}


def ratio(a: float | None, b: float | None) -> float | None:
    if a is None or b is None or b == 0:
        return None
    return a / b


# ------------------------------------------------------------------------------------ report


def plots(results: list[dict[str, Any]], summary: dict[str, Any], outdir: Path) -> list[str]:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        print(
            "NOTE: matplotlib is not installed: no plots (pip install matplotlib); tables are still written",
            file=sys.stderr,
        )
        return []
    outdir.mkdir(parents=True, exist_ok=True)
    colors = {"confero": "tab:blue", "confero-python": "tab:green", "janus": "tab:orange"}
    servers = [s for s in colors if any(r["server"] == s for r in results)]
    markers = {2: "o", 4: "s", 6: "^", 8: "D", 3: "v", 5: "P", 10: "X", 12: "*"}
    written = []

    def series(server: str) -> list[dict[str, Any]]:
        return [r for r in results if r["server"] == server]

    # 1. server CPU vs forwarded pps
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for server in servers:
        for r in series(server):
            xs = [s["fwd_pps"] / 1000 for s in r["steps"]]
            ys = [s["server_cpu"] * 100 for s in r["steps"]]
            ax.plot(
                xs, ys, marker=markers.get(r["m"], "o"), color=colors[server], label=f"{server} M={r['m']}", alpha=0.8
            )
    ax.set_xlabel("forwarded packets/s (thousands)")
    ax.set_ylabel("server CPU (% of one core)")
    ax.set_title("Server CPU vs forwarded packet rate")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(outdir / "cpu_vs_pps.png", dpi=110)
    plt.close(fig)
    written.append("cpu_vs_pps.png")

    # 2. latency p50/p99 vs forwarded pps
    fig, ax = plt.subplots(figsize=(7, 4.5))
    for server in servers:
        steps = sorted((s for r in series(server) for s in r["steps"]), key=lambda s: s["fwd_pps"])
        xs = [s["fwd_pps"] / 1000 for s in steps]
        ax.plot(
            xs, [s["lat_kernel_ms"]["p50"] for s in steps], "o", color=colors[server], label=f"{server} p50", alpha=0.8
        )
        ax.plot(
            xs, [s["lat_kernel_ms"]["p99"] for s in steps], "x", color=colors[server], label=f"{server} p99", alpha=0.8
        )
    ax.set_yscale("log")
    ax.set_xlabel("forwarded packets/s (thousands)")
    ax.set_ylabel("added latency, ms (publisher send -> kernel receive)")
    ax.set_title("Forwarding latency")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(outdir / "latency.png", dpi=110)
    plt.close(fig)
    written.append("latency.png")

    # 3. CPU per participant vs participants, per M
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    for server in servers:
        for r in series(server):
            ps = [s["participants"] for s in r["steps"]]
            axes[0].plot(
                ps,
                [s["cpu_per_participant_ms"] / 10 for s in r["steps"]],
                marker=markers.get(r["m"], "o"),
                color=colors[server],
                label=f"{server} M={r['m']}",
                alpha=0.8,
            )
            axes[1].plot(
                ps,
                [s["loss"] * 100 for s in r["steps"]],
                marker=markers.get(r["m"], "o"),
                color=colors[server],
                label=f"{server} M={r['m']}",
                alpha=0.8,
            )
    axes[0].set_xlabel("participants")
    axes[0].set_ylabel("server CPU per participant (% of a core)")
    axes[0].grid(alpha=0.3)
    axes[1].set_xlabel("participants")
    axes[1].set_ylabel("loss (%)")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(outdir / "per_participant.png", dpi=110)
    plt.close(fig)
    written.append("per_participant.png")

    # 4. participants per core and memory
    ms = sorted({r["m"] for r in results})
    fig, axes = plt.subplots(1, 2, figsize=(10, 4))
    width = 0.8 / max(1, len(servers))
    for i, server in enumerate(servers):
        per_m = summary.get(server, {}).get("per_m", {})
        vals = [per_m.get(m, {}).get("participants_per_core") or 0 for m in ms]
        axes[0].bar(
            [j + (i - (len(servers) - 1) / 2) * width for j in range(len(ms))],
            vals,
            width,
            color=colors[server],
            label=server,
        )
        for r in series(server):
            axes[1].plot(
                [0] + [s["participants"] for s in r["steps"]],
                [r.get("idle", {}).get("rss_mb", float("nan"))] + [s["rss_mb"] for s in r["steps"]],
                marker=markers.get(r["m"], "o"),
                color=colors[server],
                alpha=0.8,
                label=f"{server} M={r['m']}",
            )
    axes[0].set_xticks(range(len(ms)), [f"M={m}" for m in ms])
    axes[0].set_ylabel("participants per core (zero loss, largest step)")
    axes[0].legend()
    axes[0].grid(alpha=0.3, axis="y")
    axes[1].set_xlabel("participants")
    axes[1].set_ylabel("server RSS (MB)")
    axes[1].grid(alpha=0.3)
    axes[1].legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(outdir / "capacity_memory.png", dpi=110)
    plt.close(fig)
    written.append("capacity_memory.png")
    return written


def verdict(key: str, value: float | None, janus_value: float | None) -> str:
    _name, op, limit, _ = TARGETS[key]
    if limit is None:
        limit = janus_value
    if value is None or limit is None:
        return "n/a"
    ok = value <= limit if op == "<=" else value >= limit
    return "met" if ok else "**not met**"


def markdown(data: dict[str, Any], plot_files: list[str], plot_rel: str) -> str:
    info = data["machine"]
    s_c = data["summary"].get("confero", {})
    s_j = data["summary"].get("janus", {})
    lat = data.get("latency_point") or {}
    lc = lat.get("confero") or {}
    lj = lat.get("janus") or {}
    L = []
    L.append("# Benchmarks: Confero vs Janus VideoRoom (conference load, loopback)")
    L.append("")
    L.append(
        f"Generated by `bench/run.py` on {data['date']} (run took {data['elapsed_s']:.0f} s). "
        "Regenerate with the command below; this file is overwritten by every full run."
    )
    L.append("")
    L.append("## How to run")
    L.append("")
    L.append("```")
    L.append(data["command"])
    L.append("```")
    L.append("")
    L.append(
        "* Full run: `.venv/bin/python bench/run.py` (both servers, ~10 min, writes this file and `bench/plots/*.png`)."
    )
    L.append(
        "* CI smoke: `python bench/run.py --smoke` (< 60 s; `--confero-only` without Janus); exits non-zero if nothing was forwarded."
    )
    L.append(
        "* Needs: the project venv (aiortc, PyAV, numpy, uvloop); `apt-get install -y janus gcc libc6-dev` for the Janus side "
        "(the C compiler builds `bench/janus_loopback.c`, see below); `pip install matplotlib` for the plots "
        "(without it the harness says so and still writes the tables)."
    )
    L.append("")
    L.append("## Machine")
    L.append("")
    v = info["versions"]
    L.append(
        f"* {info['nproc']} CPUs ({info['affinity']} usable), {info['cpu_model']}, {info['mem_gib']} GiB RAM, Linux {info['kernel']}"
    )
    L.append(
        f"* Python {info['python']}, aiortc {v.get('aiortc')}, aioice {v.get('aioice')}, pylibsrtp {v.get('pylibsrtp')}, PyAV {v.get('av')}, uvloop {v.get('uvloop')}, "
        f"numpy {info.get('numpy')}, matplotlib {info.get('matplotlib') or 'not installed'}"
    )
    L.append(f"* Janus {info.get('janus') or 'not installed'} (Debian package), VideoRoom plugin + HTTP transport")
    if info.get("commit"):
        L.append(f"* Confero at commit {info['commit']}")
    L.append(
        f"* Load average at start: {' '.join(f'{x:.2f}' for x in info['loadavg'])}; server and load generator "
        f"{'pinned to one CPU each' if data['args']['pin'] else 'unpinned'}; the generator shares the machine with the server."
    )
    L.append("")
    L.append("## Load and method")
    L.append("")
    media = data.get("media") or {}
    L.append(
        f"* R rooms × M participants (M ∈ {data['args']['sizes']}); every participant publishes VP8 "
        f"({media.get('video_kbps', '?')} kbit/s, {media.get('video_fps', '?')} fps, {media.get('video_pps', '?')} packets/s, "
        f"pre-encoded once, keyframe on PLI at most every 0.3 s and every {media.get('video_frames', '?')} frames) plus Opus "
        f"({media.get('audio_kbps', '?')} kbit/s, 50 packets/s) and plays the M−1 others on one subscriber peer connection."
    )
    L.append(
        "* Confero: Ant Media's multitrack conference flow (joinRoom → publish with mainTrack → play the room with "
        '`trackList: ["!own"]`). Janus: VideoRoom over the HTTP API (publisher `join` + `publish`; subscriber `join` '
        "with `streams: [{feed}…]` + `start`). Same media, same counting client code."
    )
    L.append(
        "* Subscribers never decode: packets and sequence gaps are counted from the clear RTP header; one packet in "
        f"{data['args']['sample']} is decrypted to read the publisher's send time (CLOCK_REALTIME ns) stamped into the last 12 "
        "bytes of the payload before SRTP (both SFUs forward payloads unchanged). **Latency** = kernel receive timestamp "
        "of the datagram at the subscriber (SIOCGSTAMPNS) − send stamp, so a busy client does not inflate it; the "
        "client-side (application) figure is in the JSON."
    )
    L.append(
        f"* Each step: add rooms, {data['args']['warmup']} s warm-up, {data['args']['window']} s window. Server CPU = "
        "sum of its threads' run time (`/proc/<pid>/task/*/schedstat`), RSS from `/proc/<pid>/statm`. A ramp stops at "
        f"loss > {data['args']['loss_threshold'] * 100:g} %, server CPU ≥ {data['args']['cpu_stop'] * 100:.0f} % of its core "
        "limit (1 core for Confero's single event loop, all CPUs for Janus), generator ≥ that share of its core, machine "
        f"saturation, join failures, {data['args']['max_participants']} participants or the time budget."
    )
    L.append(
        "* Per-packet costs: least squares over all zero-loss steps of a server, "
        "CPU = a + pps_in·recv + pps_out·copy. Because every participant publishes the same rate, the per-peer "
        "housekeeping (ICE consent, RTCP, timers) is proportional to pps_in and would land in `recv`; so at the end "
        "of each ramp the publishers pause for a few seconds and the server's CPU then (minus idle) gives the "
        "idle-peer cost per participant, which is taken out before the fit (the raw fit is shown as well)."
    )
    profiles: dict[str, int] = {}
    for r in data["results"]:
        for st in r["steps"][-1:]:
            for k, n in (st.get("srtp_profiles") or {}).items():
                profiles[f"{r['server']} {k}"] = profiles.get(f"{r['server']} {k}", 0) + n
    L.append(
        f"* SRTP suite negotiated (`--srtp {data['args']['srtp']}`): "
        + ", ".join(sorted(profiles))
        + ". Confero encrypts with "
        "pylibsrtp (libsrtp + OpenSSL, bundled in the wheel); Debian's Janus with libsrtp2 2.5 built on NSS."
    )
    L.append(
        "* A step counts as *zero-loss* when sequence gaps stay under the loss threshold, 98–102 % of the expected "
        "copies arrive and the median latency is under 50 ms (no queue building up in a starved server); only such "
        "steps feed the fits, the per-core figures and the latency point. Windows during which other processes used "
        f"more than {data['args']['noisy_cpu']:g} core are measured again (after waiting for the machine to calm down, "
        "bounded) and flagged `noisy` if they stay so."
    )
    L.append(
        '* Janus is started with a generated config (HTTP on 127.0.0.1 only, admin/WebSockets off, `ice_enforce_list = "lo"`, '
        "no STUN/TURN, mDNS ignored, RTP ports 30000-39999) and an LD_PRELOAD shim (`bench/janus_loopback.c`) that clears "
        "IFF_LOOPBACK on `lo` in `getifaddrs()`: Janus skips loopback interfaces when it lists addresses, so without it "
        "libnice falls back to the machine's other interfaces. With it, both servers offer 127.0.0.1 host candidates only. "
        "All other Janus settings are its defaults (a thread per handle)."
    )
    L.append("")
    L.append("## Headline (Confero / Janus)")
    L.append("")
    L.append("| figure | Confero | Janus | Confero/Janus | target | Confero meets it |")
    L.append("|---|---|---|---|---|---|")

    def row(label: str, c: float | None, j: float | None, digits: int, target: str, key: str | None) -> None:
        r = ratio(c, j)
        L.append(
            f"| {label} | {fmt(c, digits)} | {fmt(j, digits)} | {fmt(r, 2)} | {target} | {verdict(key, c, j) if key else ''} |"
        )

    row(
        "receive path, µs CPU per received packet (fit, idle peers removed)",
        s_c.get("recv_us"),
        s_j.get("recv_us"),
        1,
        "≤ 10",
        "recv_us",
    )
    row(
        "per forwarded copy, µs CPU (fit, idle peers removed)",
        s_c.get("copy_us"),
        s_j.get("copy_us"),
        2,
        "≤ 4",
        "copy_us",
    )
    raw_c, raw_j = s_c.get("fit_raw") or {}, s_j.get("fit_raw") or {}
    row("receive path, µs (raw fit, idle peers included)", raw_c.get("recv_us"), raw_j.get("recv_us"), 1, "", None)
    row("per forwarded copy, µs (raw fit)", raw_c.get("copy_us"), raw_j.get("copy_us"), 2, "", None)
    row(
        "forwarded packets/s per core at zero loss (measured, largest zero-loss step)",
        s_c.get("fwd_pps_per_core"),
        s_j.get("fwd_pps_per_core"),
        0,
        "≥ 200,000",
        "fwd_pps_per_core",
    )
    row(
        "max forwarded packets/s reached at zero loss",
        s_c.get("max_zero_loss_fwd_pps"),
        s_j.get("max_zero_loss_fwd_pps"),
        0,
        "",
        None,
    )
    band = data.get("latency_band") or {}
    bc, bj = band.get("confero") or {}, band.get("janus") or {}
    pts = ", ".join(f"M={m}/P={p}" for m, p in band.get("points", []))
    where = band.get("fallback") or "the steps where Confero used 60-80 % of its core"
    row(
        f"added latency p50, ms, pooled over {where} ({pts}); Janus at the same steps",
        bc.get("p50"),
        bj.get("p50"),
        2,
        "",
        None,
    )
    row("added latency p99, ms, same pool (70 % of capacity)", bc.get("p99"), bj.get("p99"), 2, "≤ 5", "lat_p99_ms")
    point = data.get("latency_point_mp")
    label = f"M={point[0]}, {point[1]} participants" if point else ""
    row(
        f"added latency p50 / p99, ms, single step nearest 70 % ({label}): p50",
        (lc.get("lat_kernel_ms") or {}).get("p50"),
        (lj.get("lat_kernel_ms") or {}).get("p50"),
        2,
        "",
        None,
    )
    row(
        "… p99 at that single step",
        (lc.get("lat_kernel_ms") or {}).get("p99"),
        (lj.get("lat_kernel_ms") or {}).get("p99"),
        2,
        "",
        None,
    )
    row("join → first packet p50, ms", s_c.get("join_first_p50_ms"), s_j.get("join_first_p50_ms"), 0, "", None)
    row("join → first keyframe p50, ms", s_c.get("join_key_p50_ms"), s_j.get("join_key_p50_ms"), 0, "", None)
    row(
        "join → first keyframe p95, ms",
        s_c.get("join_key_p95_ms"),
        s_j.get("join_key_p95_ms"),
        0,
        "≤ 1000",
        "join_key_p95_ms",
    )
    row(
        "participants per core at zero loss (mean over M, own largest step)",
        s_c.get("participants_per_core"),
        s_j.get("participants_per_core"),
        1,
        "≥ Janus",
        "participants_per_core",
    )
    row(
        "server CPU per participant, ms/s (mean over M, largest zero-loss step)",
        s_c.get("cpu_per_participant_ms"),
        s_j.get("cpu_per_participant_ms"),
        2,
        "",
        None,
    )
    row(
        "idle-peer CPU per participant (publishers paused), ms/s",
        s_c.get("idle_peer_ms_per_participant"),
        s_j.get("idle_peer_ms_per_participant"),
        3,
        "",
        None,
    )
    row(
        "server memory per participant, MB (RSS slope, median over M)",
        s_c.get("mem_per_participant_mb"),
        s_j.get("mem_per_participant_mb"),
        2,
        "",
        None,
    )
    row(
        "worst loss over all steps, %",
        (s_c.get("max_loss") or 0) * 100 if s_c.get("steps") else None,
        (s_j.get("max_loss") or 0) * 100 if s_j.get("steps") else None,
        3,
        "",
        None,
    )
    L.append("")
    L.append("Same-load comparison (largest participant count at which both servers ran without loss, per room size):")
    L.append("")
    L.append(
        "| M | participants | Confero CPU (cores) | Janus CPU (cores) | CPU ratio | Confero participants/core | Janus participants/core | ratio | Confero lat p99 ms | Janus lat p99 ms |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|")
    for m, cp in sorted(data.get("common", {}).items(), key=lambda kv: int(kv[0])):
        if not cp:
            continue
        c, j = cp["confero"], cp["janus"]
        pc = c["participants"] / c["server_cpu"] if c["server_cpu"] else None
        pj = j["participants"] / j["server_cpu"] if j["server_cpu"] else None
        L.append(
            f"| {m} | {cp['participants']} | {c['server_cpu']:.3f} | {j['server_cpu']:.3f} | {fmt(ratio(c['server_cpu'], j['server_cpu']), 2)} | "
            f"{fmt(pc, 1)} | {fmt(pj, 1)} | {fmt(ratio(pc, pj), 2)} | {fmt(c['lat_kernel_ms']['p99'], 2)} | {fmt(j['lat_kernel_ms']['p99'], 2)} |"
        )
    L.append("")
    L.append("## Per-size summary")
    L.append("")
    L.append(
        "| server | M | largest zero-loss step (participants) | server CPU there (cores) | participants/core | CPU per participant (ms/s) | RSS slope (MB/participant) | ramp stopped by |"
    )
    L.append("|---|---|---|---|---|---|---|---|")
    for server, s in data["summary"].items():
        for m, v in sorted((s.get("per_m") or {}).items()):
            L.append(
                f"| {server} | {m} | {v['participants']} | {v['server_cpu']:.3f} | {fmt(v['participants_per_core'], 1)} | "
                f"{v['cpu_per_participant_ms']:.2f} | {fmt(v['rss_slope_mb'], 2)} | {v['stop_reason']} |"
            )
    L.append("")
    L.append("## Fits")
    L.append("")
    L.append("| server | fit | a (cores) | recv µs/pkt | copy µs/copy | R² | steps |")
    L.append("|---|---|---|---|---|---|---|")
    for server, s in data["summary"].items():
        for name in ("fit_net", "fit_raw"):
            f = s.get(name)
            if f:
                L.append(
                    f"| {server} | {'idle peers removed' if name == 'fit_net' else 'raw'} | {f['intercept_cores']:.4f} | {f['recv_us']:.2f} | {f['copy_us']:.2f} | {f['r2']:.3f} | {f['n']} |"
                )
    L.append("")
    s_p = data["summary"].get("confero-python") or {}
    if s_p.get("steps"):
        L.append("## Compiled fan-out: before and after (same run)")
        L.append("")
        L.append(
            "The same ramps against Confero with `--compiled-fanout false`, interleaved with the other servers in this run. "
            "The pure-Python engine forwards each copy at once (header rewrite, SRTP protect, `sendto`); the compiled "
            "one (`confero.media._fanout`) batches a player's copies into UDP GSO sends. Everything else (rings, RTCP, "
            "signaling) is the same code."
        )
        L.append("")
        L.append("| figure | compiled (after) | pure Python (before) | after/before |")
        L.append("|---|---|---|---|")
        bp = band.get("confero-python") or {}
        for label, key, digits, src_c, src_p in (
            ("receive path, µs per packet (fit, idle peers removed)", "recv_us", 2, s_c, s_p),
            ("per forwarded copy, µs (fit, idle peers removed)", "copy_us", 2, s_c, s_p),
            ("forwarded packets/s per core at zero loss", "fwd_pps_per_core", 0, s_c, s_p),
            ("max forwarded packets/s at zero loss", "max_zero_loss_fwd_pps", 0, s_c, s_p),
            ("participants per core at zero loss", "participants_per_core", 1, s_c, s_p),
            ("server CPU per participant, ms/s", "cpu_per_participant_ms", 2, s_c, s_p),
            ("memory per participant, MB", "mem_per_participant_mb", 2, s_c, s_p),
            ("join → first keyframe p95, ms", "join_key_p95_ms", 0, s_c, s_p),
        ):
            c, p_ = src_c.get(key), src_p.get(key)
            L.append(f"| {label} | {fmt(c, digits)} | {fmt(p_, digits)} | {fmt(ratio(c, p_), 2)} |")
        L.append(
            f"| added latency p99, ms, pooled over the same steps as the headline | {fmt(bc.get('p99'), 2)} | {fmt(bp.get('p99'), 2)} | {fmt(ratio(bc.get('p99'), bp.get('p99')), 2)} |"
        )
        L.append("")
    L.append("## Targets (issue), for Confero")
    L.append("")
    L.append("| target | value | met |")
    L.append("|---|---|---|")
    L.append(
        f"| receive path ≤ 10 µs CPU per packet | {fmt(s_c.get('recv_us'), 1)} µs | {verdict('recv_us', s_c.get('recv_us'), None)} |"
    )
    L.append(
        f"| ≤ 4 µs per forwarded copy | {fmt(s_c.get('copy_us'), 2)} µs | {verdict('copy_us', s_c.get('copy_us'), None)} |"
    )
    L.append(
        f"| ≥ 200 k forwarded packets/s per core at zero loss | {fmt(s_c.get('fwd_pps_per_core'), 0)} pps/core | {verdict('fwd_pps_per_core', s_c.get('fwd_pps_per_core'), None)} |"
    )
    band_label = "pooled 60-80 % steps" if not band.get("fallback") else "pooled top-load steps, see the headline"
    L.append(
        f"| added latency p99 ≤ 5 ms at 70 % of capacity ({band_label}) | {fmt(bc.get('p99'), 2)} ms | {verdict('lat_p99_ms', bc.get('p99'), None)} |"
    )
    L.append(
        f"| join → first frame ≤ 1 s (p95 of first keyframe) | {fmt(s_c.get('join_key_p95_ms'), 0)} ms | {verdict('join_key_p95_ms', s_c.get('join_key_p95_ms'), None)} |"
    )
    L.append(
        f"| at least Janus's participants per core | {fmt(s_c.get('participants_per_core'), 1)} vs {fmt(s_j.get('participants_per_core'), 1)} | {verdict('participants_per_core', s_c.get('participants_per_core'), s_j.get('participants_per_core'))} |"
    )
    L.append("")
    if plot_files:
        L.append("## Plots")
        L.append("")
        for f in plot_files:
            L.append(f"![{f}]({plot_rel}/{f})")
            L.append("")
    else:
        L.append("_No plots: matplotlib is not installed (`pip install matplotlib`)._")
        L.append("")
    L.append("## Every step")
    L.append("")
    L.append(
        "CPU in % of one core; pps = packets/s; latency = send → kernel receive at the subscriber (ms); join = subscribe → first keyframe (ms, p50/p95 over the new subscriptions of the step); other = CPU used by other processes on the machine during the window (noise)."
    )
    L.append("")
    L.append(
        "| server | M | R | P | server CPU | user/sys | gen CPU | other | in pps | fwd pps | delivered | loss % | lat p50 | lat p99 | app p99 | join p50/p95 | RSS MB | µs/fwd | windows | limits |"
    )
    L.append("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    for r in data["results"]:
        for s in r["steps"]:
            lk, la, j = s["lat_kernel_ms"], s["lat_app_ms"], s["join"]
            L.append(
                f"| {r['server']} | {s['m']} | {s['rooms']} | {s['participants']} | {s['server_cpu'] * 100:.1f} | "
                f"{s['server_user'] * 100:.0f}/{s['server_sys'] * 100:.0f} | {s['gen_cpu'] * 100:.1f} | {s['other_cpu'] * 100:.0f} | "
                f"{s['pps_in']:.0f} | {s['fwd_pps']:.0f} | {s['delivery'] * 100:.1f} % | {s['loss'] * 100:.3f} | {fmt(lk['p50'], 2)} | {fmt(lk['p99'], 2)} | "
                f"{fmt(la['p99'], 2)} | {fmt(j['key_p50_ms'], 0)}/{fmt(j['key_p95_ms'], 0)} | {s['rss_mb']:.0f} | {fmt(s['us_per_fwd'], 2)} | "
                f"{s.get('windows', 1)}{' noisy' if s.get('noisy') else ''} | {'; '.join(s['limits'])} |"
            )
    L.append("")
    L.append("## Logs and noise")
    L.append("")
    for r in data["results"]:
        extra = []
        if r.get("paused"):
            extra.append(
                f"paused-publisher CPU {r['paused']['cpu'] * 100:.1f} % with {r['paused']['participants']} participants"
            )
        if r.get("error"):
            extra.append(f"error {r['error']}")
        L.append(
            f"* {r['server']} M={r['m']}: idle {r.get('idle', {}).get('cpu', 0) * 100:.2f} % CPU, {r.get('idle', {}).get('rss_mb', 0):.0f} MB; "
            f"stopped by: {r.get('stop_reason')}; server log: {r['server_log']['problem_lines']} warning/error lines; "
            f"generator log: {r['generator_log']['problem_lines']}" + ("; " + "; ".join(extra) if extra else "")
        )
        for line in r["server_log"]["first"][:3]:
            L.append(f"    * `{line.strip()[:200]}`")
    L.append("")
    L.append(
        "Noise: the machine has 2 CPUs shared by the server, the load generator and whatever else runs "
        "(other engineers' test suites during this run: see the `other` column). Both servers are measured in the "
        "same run, interleaved by room size, so slow periods hit both; repeated runs differ by 10–30 %. On loopback the "
        "sender's system time includes delivering each datagram into the receiver's socket, so each server's sys time "
        "covers its subscribers' receive path too."
    )
    L.append("")
    L.append("Raw data: `bench/results/run.json` (not committed).")
    L.append("")
    notes = BENCH / "benchmarks_notes.md"
    if notes.exists():
        L.append(notes.read_text().rstrip())
        L.append("")
    return "\n".join(L)


# --------------------------------------------------------------------------------------- main


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Conference benchmark: Confero vs Janus VideoRoom on loopback.")
    parser.add_argument("--smoke", action="store_true", help="CI-sized run (< 60 s): M=2, one or two small steps")
    parser.add_argument("--confero-only", action="store_true")
    parser.add_argument(
        "--python-fanout",
        action="store_true",
        help="also ramp Confero with its pure-Python fan-out (before/after the compiled one)",
    )
    parser.add_argument("--janus-only", action="store_true")
    parser.add_argument("--sizes", default=None, help="room sizes M (default 2,4,6,8; smoke 2)")
    parser.add_argument(
        "--participants", default=None, help="participant targets of the ramp (default 8,24,48,64,80,96,128)"
    )
    parser.add_argument("--max-participants", type=int, default=None, help="cap per ramp (default 128; smoke 8)")
    parser.add_argument("--warmup", type=float, default=None, help="s after joining before the window (default 2.5)")
    parser.add_argument("--window", type=float, default=None, help="s per measurement window (default 4)")
    parser.add_argument("--idle", type=float, default=None, help="s of idle measurement per server start (default 2)")
    parser.add_argument(
        "--pause", type=float, default=None, help="s with publishers paused at the end of a ramp (default 3)"
    )
    parser.add_argument("--bitrate", type=int, default=1_000_000, help="video bit/s per publisher")
    parser.add_argument("--sample", type=int, default=8, help="decrypt one received packet in N for latency")
    parser.add_argument(
        "--srtp",
        choices=("any", "cm"),
        default="any",
        help="any (default): aiortc's list, GCM first, as browsers negotiate (both servers pick AEAD_AES_256_GCM); cm: only AES_CM_128_HMAC_SHA1_80",
    )
    parser.add_argument("--loss-threshold", type=float, default=0.001, help="fraction (default 0.001 = 0.1 %%)")
    parser.add_argument("--cpu-stop", type=float, default=0.9, help="stop a ramp at this share of a core limit")
    parser.add_argument("--budget", type=float, default=None, help="s for the whole run (default 600; smoke 50)")
    parser.add_argument("--pin", action="store_true", help="server on the first CPU, generator on the last")
    parser.add_argument(
        "--noisy-cpu",
        type=float,
        default=0.3,
        help="re-measure a window when other processes used more than this many cores",
    )
    parser.add_argument("--retries", type=int, default=None, help="extra windows for a noisy step (default 1; smoke 0)")
    parser.add_argument(
        "--quiet-wait",
        type=float,
        default=8.0,
        help="before an extra window, wait up to this many s for other processes to calm down",
    )
    parser.add_argument(
        "--diagnose",
        action="store_true",
        help="run Confero under bench/diag_serve.py (loop stalls, GC pauses in its log)",
    )
    parser.add_argument(
        "--markdown", default=None, help="report path (default BENCHMARKS.md for a full run, none for --smoke)"
    )
    parser.add_argument(
        "--plots", default=None, help="PNG folder (default bench/plots for a full run, none for --smoke)"
    )
    parser.add_argument("--json", default=None, help="raw results (default bench/results/run.json or smoke.json)")
    parser.add_argument(
        "--from-json", default=None, help="no run: rewrite the report and plots from an earlier run's JSON"
    )
    args = parser.parse_args(argv)
    if args.from_json:
        data = json.loads(Path(args.from_json).read_text())
        for r in data["results"]:  # JSON turned int keys into strings
            for st in r["steps"]:
                st["hist_kernel"] = {int(k): v for k, v in st.get("hist_kernel", {}).items()}
        data["summary"] = {
            k: {**v, "per_m": {int(m): x for m, x in (v.get("per_m") or {}).items()}}
            for k, v in data["summary"].items()
        }
        servers_in = sorted({r["server"] for r in data["results"]})
        data["latency_band"] = latency_band(data["results"], servers_in)
        plots_dir = Path(args.plots) if args.plots else BENCH / "plots"
        plot_files = plots(data["results"], data["summary"], plots_dir)
        md_path = Path(args.markdown) if args.markdown else REPO / "BENCHMARKS.md"
        md_path.write_text(markdown(data, plot_files, os.path.relpath(plots_dir, md_path.parent)))
        print(f"report  : {md_path}")
        return 0

    smoke = args.smoke
    args.sizes = [int(x) for x in (args.sizes or ("2" if smoke else "2,4,6,8")).split(",")]
    args.targets = [int(x) for x in (args.participants or ("4,8" if smoke else "8,24,48,64,80,96,128")).split(",")]
    args.max_participants = args.max_participants or (8 if smoke else 128)
    args.warmup = args.warmup if args.warmup is not None else (1.5 if smoke else 2.5)
    args.window = args.window if args.window is not None else (2.5 if smoke else 4.0)
    args.idle = args.idle if args.idle is not None else (0.5 if smoke else 2.0)
    args.pause = args.pause if args.pause is not None else (0.0 if smoke else 3.0)
    args.budget = args.budget if args.budget is not None else (50.0 if smoke else 600.0)
    args.retries = args.retries if args.retries is not None else (0 if smoke else 1)
    if (
        args.max_participants > 200
        or args.window > 60
        or args.warmup > 60
        or args.budget > 3600
        or min(args.sizes) < 2
        or max(args.sizes) > 16
    ):
        parser.error("bounded run: at most 200 participants, 2 <= M <= 16, windows <= 60 s, budget <= 3600 s")
    servers = ["confero", "janus"]
    if args.confero_only:
        servers = ["confero"]
    if args.janus_only:
        servers = ["janus"]
    if args.python_fanout:
        servers.insert(1 if "confero" in servers else 0, "confero-python")
    janus_note = None
    if "janus" in servers and (janus_binary() is None):
        janus_note = "janus is not installed (apt-get install -y janus gcc libc6-dev): Confero only"
        servers = [s for s in servers if s != "janus"]
    if not servers:
        print(f"FAILED: {janus_note}", file=sys.stderr)
        return 2

    invocation = " ".join(
        shlex.quote(a)
        for a in [
            os.path.relpath(sys.executable, REPO) if sys.executable.startswith(str(REPO)) else sys.executable,
            os.path.relpath(sys.argv[0], REPO) if os.path.isabs(sys.argv[0]) else sys.argv[0],
            *sys.argv[1:],
        ]
    )
    info = machine()
    info["janus"] = janus_version()
    try:
        head = subprocess.run(
            ["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(REPO), "status", "--porcelain", "--", "src"], capture_output=True, text=True, timeout=10
        ).stdout.strip()
        info["commit"] = head + (" (src/ modified)" if dirty else "")
    except (OSError, subprocess.SubprocessError):
        info["commit"] = None
    for mod in ("numpy", "matplotlib"):
        try:
            from importlib import metadata

            info[mod] = metadata.version(mod)
        except Exception:
            info[mod] = None
    print(f"command : {invocation}")
    print(
        f"machine : {info['nproc']} CPUs, {info['cpu_model']}, Linux {info['kernel']}, Python {info['python']}, "
        f"aiortc {info['versions'].get('aiortc')}, uvloop {info['versions'].get('uvloop')}, Janus {info['janus']}, "
        f"loadavg {' '.join(f'{x:.2f}' for x in info['loadavg'])}"
    )
    print(
        f"plan    : servers {servers}, M in {args.sizes}, participant targets {args.targets} (cap {args.max_participants}), "
        f"warm-up {args.warmup:g} s + window {args.window:g} s per step, budget {args.budget:g} s"
    )
    if janus_note:
        print(f"NOTE    : {janus_note}")
    sys.stdout.flush()

    started = time.monotonic()
    results: list[dict[str, Any]] = []
    runs = [(m, s) for m in args.sizes for s in servers]
    for i, (m, server) in enumerate(runs):
        remaining = args.budget - (time.monotonic() - started)
        share = remaining / (len(runs) - i)
        deadline = time.monotonic() + max(10.0, share - 8.0)
        print(f"-- {server} M={m} (budget {share:.0f} s)", flush=True)
        results.append(sweep(server, m, args, deadline, sys.stdout))

    summary = {s: summarize(results, s, args) for s in servers}
    point = pick_latency_point(results, 1.0)
    data: dict[str, Any] = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "command": invocation,
        "machine": info,
        "args": {k: v for k, v in vars(args).items()},
        "media": next((r.get("media") for r in results if r.get("media")), None),
        "results": results,
        "summary": summary,
        "latency_point_mp": point,
        "latency_point": {s: step_at(results, s, point) for s in servers},
        "latency_band": latency_band(results, servers),
        "common": {m: common_point(results, m) for m in args.sizes},
        "elapsed_s": time.monotonic() - started,
        "janus_note": janus_note,
    }

    # ------------------------------------------------------------------------- console summary
    print()
    s_c, s_j = summary.get("confero", {}), summary.get("janus", {})
    lat = data["latency_point"]

    def line(label: str, key: str, digits: int = 1, unit: str = "") -> None:
        c, j = s_c.get(key), s_j.get(key)
        print(
            f"{label:52} Confero {fmt(c, digits):>9}{unit}   Janus {fmt(j, digits):>9}{unit}   ratio {fmt(ratio(c, j), 2)}"
        )

    line("receive µs per packet (fit, idle peers removed)", "recv_us", 2)
    line("copy µs per forwarded copy (fit, idle peers removed)", "copy_us", 2)
    line("forwarded pps per core at zero loss", "fwd_pps_per_core", 0)
    line("max forwarded pps at zero loss", "max_zero_loss_fwd_pps", 0)
    lc = (lat.get("confero") or {}).get("lat_kernel_ms") or {}
    lj = (lat.get("janus") or {}).get("lat_kernel_ms") or {}
    print(
        f"{'latency p50/p99 ms at ' + str(point):52} Confero {fmt(lc.get('p50'), 2)}/{fmt(lc.get('p99'), 2)}   Janus {fmt(lj.get('p50'), 2)}/{fmt(lj.get('p99'), 2)}"
    )
    band = data["latency_band"]
    bc, bj = band.get("confero") or {}, band.get("janus") or {}
    print(
        f"{'latency p50/p99 ms pooled 60-80 % (or top) steps':52} Confero {fmt(bc.get('p50'), 2)}/{fmt(bc.get('p99'), 2)}   Janus {fmt(bj.get('p50'), 2)}/{fmt(bj.get('p99'), 2)}   ({band['points']})"
    )
    line("join -> first packet p50 ms", "join_first_p50_ms", 0)
    line("join -> first keyframe p95 ms", "join_key_p95_ms", 0)
    line("participants per core (zero loss)", "participants_per_core", 1)
    line("CPU per participant ms/s", "cpu_per_participant_ms", 2)
    line("memory per participant MB", "mem_per_participant_mb", 2)
    print(f"elapsed : {data['elapsed_s']:.0f} s")

    out_json = Path(args.json) if args.json else BENCH / "results" / ("smoke.json" if smoke else "run.json")
    out_json.parent.mkdir(parents=True, exist_ok=True)
    out_json.write_text(json.dumps(data, indent=1, default=str) + "\n")
    print(f"json    : {out_json}")

    plots_dir = Path(args.plots) if args.plots else (None if smoke else BENCH / "plots")
    plot_files: list[str] = []
    if plots_dir is not None:
        plot_files = plots(results, summary, plots_dir)
        if plot_files:
            print(f"plots   : {', '.join(str(plots_dir / f) for f in plot_files)}")
    md_path = Path(args.markdown) if args.markdown else (None if smoke else REPO / "BENCHMARKS.md")
    if md_path is not None:
        rel = os.path.relpath(plots_dir, md_path.parent) if plots_dir is not None else "bench/plots"
        md_path.write_text(markdown(data, plot_files, rel))
        print(f"report  : {md_path}")

    for r in results:
        if r["server_log"]["problem_lines"]:
            print(
                f"{r['server']} M={r['m']}: {r['server_log']['problem_lines']} warning/error lines in the server log, e.g.:"
            )
            for line in r["server_log"]["first"][:5]:
                print(f"    {line[:240]}")
    if any("error" in r and not r["steps"] for r in results):
        failed = [r for r in results if "error" in r and not r["steps"]]
        print(f"FAILED: {len(failed)} ramp(s) did not start: {failed[0]['error']}", file=sys.stderr)
        if all(not r["steps"] for r in results):
            return 2
    forwarded = sum(s["fwd_pps"] for r in results for s in r["steps"])
    if forwarded <= 0:
        print("FAILED: nothing was forwarded", file=sys.stderr)
        return 1
    # Temporary folders of clean ramps go; the others stay for their logs.
    for r in results:
        if (
            not r.get("error")
            and not r["server_log"]["problem_lines"]
            and not r["generator_log"]["problem_lines"]
            and not args.diagnose
        ):
            subprocess.run(["rm", "-rf", "--", r["tmp"]], check=False)
        else:
            print(f"logs kept in {r['tmp']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
