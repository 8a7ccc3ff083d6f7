"""Quick measurement of Confero's per-packet forwarding cost (µs of server CPU per packet).

    .venv/bin/python bench/quick.py            # K in {0,1,2,4,8}, ~1 minute
    .venv/bin/python bench/quick.py --smoke    # K in {0,1}, 2 s windows, < 30 s (CI)

Method:

1. Start `python -m confero serve` on 127.0.0.1 (uvloop) as a subprocess and measure its idle
   CPU (no publisher) from /proc/<pid>/stat utime+stime.
2. Start bench/loadgen.py in another subprocess: one publisher replays pre-encoded VP8 at a
   fixed packet rate (~2,000 packets/s), and K players count the forwarded SRTP packets
   without decrypting or decoding them.
3. For each K: warm up, then measure the server's CPU, the packets sent by the publisher
   (in) and received by all players (out) over a window; check out ≈ K × in and count
   sequence gaps.
4. Least squares over the runs, after subtracting the idle CPU:
       cpu_per_s - idle = pps_in × recv + pps_out × copy        (pps_out ≈ K × pps_in)
   gives recv (µs per incoming packet) and copy (µs per forwarded copy); also split into
   user and system time.

Results: a table on stdout and JSON in bench/results/quick.json (git-ignored).
Exit status: 0 ok; 1 nothing was forwarded (or the fit failed); 2 the server or the load
generator failed.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import selectors
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
CLK_TCK = os.sysconf("SC_CLK_TCK")


# -------------------------------------------------------------------------------- helpers


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu(pid: int) -> tuple[float, float, float]:
    """(user, system, total) CPU seconds of a process, all threads included.

    user/system come from /proc/<pid>/stat (clock ticks: 10 ms steps). total is the sum of
    /proc/<pid>/task/*/schedstat run times (nanoseconds), the precise figure the fit uses; it
    falls back to user+system where schedstat is unavailable. Threads that exit during a window
    would drop out of the total; the server's threads live for the whole run.
    """
    with open(f"/proc/{pid}/stat") as f:
        data = f.read()
    fields = data[data.rindex(")") + 2 :].split()
    # fields[0] is field 3 (state); utime is field 14, stime field 15.
    user, system = int(fields[11]) / CLK_TCK, int(fields[12]) / CLK_TCK
    total_ns = 0
    try:
        for task in os.listdir(f"/proc/{pid}/task"):
            try:
                with open(f"/proc/{pid}/task/{task}/schedstat") as f:
                    total_ns += int(f.read().split()[0])
            except (FileNotFoundError, ProcessLookupError):
                continue
    except OSError:
        total_ns = 0
    total = total_ns / 1e9 if total_ns else user + system
    return user, system, total


def udp_errors() -> dict[str, int]:
    """System-wide UDP counters (/proc/net/snmp): socket-buffer overflows show up here, not as server bugs."""
    try:
        rows = [r.split() for r in Path("/proc/net/snmp").read_text().splitlines() if r.startswith("Udp:")]
        table = dict(zip(rows[0][1:], (int(v) for v in rows[1][1:]), strict=True))
    except (OSError, IndexError, ValueError):
        return {}
    return {k: table.get(k, 0) for k in ("InErrors", "RcvbufErrors", "SndbufErrors")}


def udp_drops(pid: int) -> int:
    """Datagrams the kernel dropped on this process's UDP sockets (full receive buffer), from /proc/net/udp.

    Attributes loss to a side: drops on the server's sockets mean it did not read fast enough;
    drops on the load generator's mean the client, not the server, lost them.
    """
    inodes = set()
    try:
        for fd in os.listdir(f"/proc/{pid}/fd"):
            try:
                target = os.readlink(f"/proc/{pid}/fd/{fd}")
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    except OSError:
        return 0
    total = 0
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            parts = line.split()
            if len(parts) >= 13 and parts[9] in inodes:
                total += int(parts[12])
    return total


def machine() -> dict[str, Any]:
    model = ""
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        mem = Path("/proc/meminfo").read_text().split("\n")[0].split()[1]
        mem_gib = round(int(mem) / 1024 / 1024, 1)
    except (OSError, IndexError, ValueError):
        mem_gib = None
    versions = {}
    for name in ("aiortc", "aioice", "pylibsrtp", "av", "uvloop"):
        try:
            from importlib import metadata

            versions[name] = metadata.version(name)
        except Exception:
            versions[name] = None
    return {
        "nproc": os.cpu_count(),
        "affinity": len(os.sched_getaffinity(0)),
        "cpu_model": model,
        "mem_gib": mem_gib,
        "kernel": platform.release(),
        "python": platform.python_version(),
        "loadavg": os.getloadavg(),
        "versions": versions,
    }


def wait_port(port: int, proc: subprocess.Popen[bytes], timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server exited with {proc.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.1)
    raise TimeoutError(f"server not listening on {port} after {timeout}s")


def lstsq2(rows: list[tuple[float, float, float]]) -> tuple[float, float, float] | None:
    """Least squares y = a*x1 + b*x2 (no intercept) over (x1, x2, y); returns (a, b, rms residual)."""
    s11 = sum(x1 * x1 for x1, _, _ in rows)
    s12 = sum(x1 * x2 for x1, x2, _ in rows)
    s22 = sum(x2 * x2 for _, x2, _ in rows)
    s1y = sum(x1 * y for x1, _, y in rows)
    s2y = sum(x2 * y for _, x2, y in rows)
    det = s11 * s22 - s12 * s12
    if abs(det) < 1e-12 * max(1.0, s11 * s22):
        return None
    a = (s1y * s22 - s2y * s12) / det
    b = (s2y * s11 - s1y * s12) / det
    rms = (sum((y - a * x1 - b * x2) ** 2 for x1, x2, y in rows) / len(rows)) ** 0.5
    return a, b, rms


class LoadGen:
    """bench/loadgen.py as a subprocess, driven by JSON lines."""

    def __init__(self, cmd: list[str], stderr_path: Path, cpu: int | None) -> None:
        self.cmd = cmd
        self._stderr = open(stderr_path, "wb")  # noqa: SIM115  (lives as long as the load generator)
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._stderr, cwd=REPO)
        if cpu is not None:
            os.sched_setaffinity(self.proc.pid, {cpu})
        self._sel = selectors.DefaultSelector()
        assert self.proc.stdout is not None
        self._sel.register(self.proc.stdout, selectors.EVENT_READ)
        self._buf = b""

    def send(self, obj: dict[str, Any]) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write((json.dumps(obj) + "\n").encode())
        self.proc.stdin.flush()

    def wait_event(self, event: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        assert self.proc.stdout is not None
        fd = self.proc.stdout.fileno()
        while True:
            while b"\n" in self._buf:
                line, self._buf = self._buf.split(b"\n", 1)
                try:
                    msg = json.loads(line)
                except ValueError:
                    continue
                if msg.get("event") == event:
                    return msg
                if msg.get("event") in ("error", "timeout"):
                    raise RuntimeError(f"load generator: {msg}")
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise TimeoutError(f"load generator sent no {event!r} within {timeout}s")
            if self._sel.select(remaining):
                chunk = os.read(fd, 65536)
                if not chunk:
                    raise RuntimeError(f"load generator exited ({self.proc.wait()})")
                self._buf += chunk

    def request(self, obj: dict[str, Any], event: str, timeout: float) -> dict[str, Any]:
        self.send(obj)
        return self.wait_event(event, timeout)

    def close(self, timeout: float = 20.0) -> None:
        if self.proc.poll() is None:
            try:
                self.send({"cmd": "quit"})
                self.wait_event("bye", timeout)
            except Exception:
                pass
        stop_process(self.proc, 5.0)
        self._sel.close()
        self._stderr.close()


def stop_process(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL, to exactly this PID (a process we started)."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)


def problems_in(text: str, limit: int = 20) -> tuple[int, list[str]]:
    """Lines of a log that look like trouble: WARNING/ERROR/CRITICAL records and tracebacks."""
    keys = ("WARNING", "ERROR", "CRITICAL", "Traceback", "Exception", "Error:")
    bad = [line for line in text.splitlines() if any(k in line for k in keys)]
    return len(bad), bad[:limit]


# ----------------------------------------------------------------------------------- main


def measure(lg: LoadGen, server_pid: int, loadgen_pid: int, window: float, k: int) -> dict[str, Any]:
    """One measurement window: server CPU, publisher packets, player packets."""
    s0 = lg.request({"cmd": "stats"}, "stats", 10)
    u0 = udp_errors()
    d0 = udp_drops(server_pid), udp_drops(loadgen_pid)
    c0 = proc_cpu(server_pid)
    t0 = time.monotonic()
    l0 = proc_cpu(loadgen_pid)
    time.sleep(window)
    s1 = lg.request({"cmd": "stats"}, "stats", 10)
    u1 = udp_errors()
    d1 = udp_drops(server_pid), udp_drops(loadgen_pid)
    c1 = proc_cpu(server_pid)
    t1 = time.monotonic()
    l1 = proc_cpu(loadgen_pid)
    dt = t1 - t0
    dt_lg = s1["t"] - s0["t"]
    subs0 = {s["index"]: s for s in s0["subs"]}
    per_sub = []
    for s in s1["subs"]:
        before = subs0.get(s["index"], {})
        per_sub.append(
            {
                "index": s["index"],
                "received": s["received"] - before.get("received", 0),
                "gaps": s["gaps"] - before.get("gaps", 0),
                "late": s["late"] - before.get("late", 0),
                "dups": s["dups"] - before.get("dups", 0),
                "other_ssrc": s["other_ssrc"] - before.get("other_ssrc", 0),
                "first_is_keyframe": s["first_is_keyframe"],
                "samples_bad": s["samples_bad"],
                "samples_ok": s["samples_ok"],
                "state": s["state"],
            }
        )
    sent = s1["sent"] - s0["sent"]
    received = sum(s["received"] for s in per_sub)
    gaps = sum(s["gaps"] for s in per_sub)
    late = sum(s["late"] for s in per_sub)
    pps_in = sent / dt_lg
    pps_out = received / dt_lg
    user, sys_ = c1[0] - c0[0], c1[1] - c0[1]
    return {
        "k": k,
        "window_s": round(dt, 3),
        "server_cpu": (c1[2] - c0[2]) / dt,
        "server_user": user / dt,
        "server_sys": sys_ / dt,
        "loadgen_cpu": (l1[2] - l0[2]) / dt,
        "pps_in": pps_in,
        "pps_out": pps_out,
        "out_over_expected": (pps_out / (k * pps_in)) if k and pps_in else None,
        "mbit_in": (s1["sent_octets"] - s0["sent_octets"]) * 8 / dt_lg / 1e6,
        "gaps": gaps,
        "late": late,
        "lost_estimate": max(0, gaps - late),
        "publisher_resyncs": s1["resyncs"] - s0["resyncs"],
        "udp_errors": {k: u1.get(k, 0) - u0.get(k, 0) for k in u1},
        "server_socket_drops": d1[0] - d0[0],
        "loadgen_socket_drops": d1[1] - d0[1],
        "subs": per_sub,
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Quick per-packet CPU cost of the Confero server.")
    parser.add_argument("--smoke", action="store_true", help="K in {0,1}, 2 s windows (CI; < 30 s)")
    parser.add_argument("--ks", default=None, help="comma-separated subscriber counts (default 0,1,2,4,8)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before each window (default 3)")
    parser.add_argument("--measure", type=float, default=None, help="seconds per window (default 6)")
    parser.add_argument("--idle", type=float, default=None, help="idle window without publisher (default 4)")
    parser.add_argument("--fps", type=float, default=200.0, help="publisher frames/s (~10 packets each)")
    parser.add_argument("--pin", action="store_true", help="server on CPU 0, load generator on CPU 1")
    parser.add_argument(
        "--engine",
        choices=("compiled", "python"),
        default="compiled",
        help="the server's fan-out engine (python: --compiled-fanout false)",
    )
    parser.add_argument("--no-uvloop-client", action="store_true", help="load generator on asyncio")
    parser.add_argument("--out", default=str(BENCH / "results" / "quick.json"))
    args = parser.parse_args(argv)

    if args.smoke:
        ks = [0, 1]
        warmup, window, idle_s = 2.0, 2.0, 2.0
    else:
        ks = [0, 1, 2, 4, 8]
        warmup, window, idle_s = 3.0, 6.0, 4.0
    if args.ks:
        ks = sorted({int(k) for k in args.ks.split(",")})
    warmup = args.warmup if args.warmup is not None else warmup
    window = args.measure if args.measure is not None else window
    idle_s = args.idle if args.idle is not None else idle_s
    if max(ks) > 32 or window > 60 or warmup > 60 or idle_s > 60:
        parser.error("bounded run: K <= 32, windows <= 60 s")
    pin = args.pin and len(os.sched_getaffinity(0)) >= 2
    cpus = sorted(os.sched_getaffinity(0))

    started = time.monotonic()
    invocation = " ".join(shlex.quote(a) for a in [sys.executable, *sys.argv])
    info = machine()
    print(f"command : {invocation}")
    print(
        f"machine : {info['nproc']} CPUs ({info['affinity']} usable), {info['cpu_model']}, "
        f"{info['mem_gib']} GiB, Linux {info['kernel']}, Python {info['python']}, "
        f"loadavg {' '.join(f'{x:.2f}' for x in info['loadavg'])}"
    )
    print("versions: " + ", ".join(f"{k} {v}" for k, v in info["versions"].items()))

    tmp = Path(tempfile.mkdtemp(prefix="confero-bench-"))
    port = free_port()
    server_cmd = [
        sys.executable, "-m", "confero", "serve",
        "--host", "127.0.0.1", "--port", str(port),
        "--data-dir", str(tmp / "data"),
        "--ice-address", "127.0.0.1",
        "--log-level", "WARNING",
        "--compiled-fanout", "true" if args.engine == "compiled" else "false",
    ]  # fmt: skip
    loadgen_cmd = [
        sys.executable, str(BENCH / "loadgen.py"),
        "--port", str(port), "--fps", str(args.fps),
        "--max-seconds", str(int(60 + len(ks) * (warmup + window + 30))),
    ]  # fmt: skip
    if args.no_uvloop_client:
        loadgen_cmd.append("--no-uvloop")
    print(f"server  : {' '.join(shlex.quote(a) for a in server_cmd)}" + ("  [CPU 0]" if pin else ""))
    print(f"loadgen : {' '.join(shlex.quote(a) for a in loadgen_cmd)}" + ("  [CPU 1]" if pin else ""))
    print(f"plan    : idle {idle_s:g} s, then K in {ks}: warm-up {warmup:g} s + window {window:g} s each")
    sys.stdout.flush()

    server_log = tmp / "server.log"
    loadgen_log = tmp / "loadgen.log"
    result: dict[str, Any] = {
        "command": invocation,
        "server_command": server_cmd,
        "loadgen_command": loadgen_cmd,
        "machine": info,
        "pinned": pin,
        "plan": {"ks": ks, "warmup_s": warmup, "window_s": window, "idle_s": idle_s, "fps": args.fps},
        "runs": [],
    }
    status = 0
    server: subprocess.Popen[bytes] | None = None
    lg: LoadGen | None = None
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO / "src") + os.pathsep + env.get("PYTHONPATH", "")
    with open(server_log, "wb") as slog:
        try:
            server = subprocess.Popen(server_cmd, stdout=slog, stderr=subprocess.STDOUT, cwd=REPO, env=env)
            if pin:
                os.sched_setaffinity(server.pid, {cpus[0]})
            wait_port(port, server, 20)
            time.sleep(1.0)  # let imports and start-up settle

            c0, t0 = proc_cpu(server.pid), time.monotonic()
            time.sleep(idle_s)
            c1, t1 = proc_cpu(server.pid), time.monotonic()
            idle = (c1[2] - c0[2]) / (t1 - t0)
            idle_user = (c1[0] - c0[0]) / (t1 - t0)
            idle_sys = (c1[1] - c0[1]) / (t1 - t0)
            result["idle"] = {"cpu": idle, "user": idle_user, "sys": idle_sys, "window_s": t1 - t0}
            print(f"idle    : server {idle * 100:.2f} % of a core (no publisher)")

            lg = LoadGen(loadgen_cmd, loadgen_log, cpus[1] if pin else None)
            ready = lg.wait_event("ready", 60)
            result["publisher"] = ready
            print(
                f"publisher: {ready['frames']} pre-encoded VP8 frames ({ready['keyframes']} keyframes), "
                f"{ready['packets_per_frame']:.1f} packets/frame ({ready['packets_per_keyframe']:.0f} per keyframe), "
                f"{ready['bytes_per_frame'] / 1000:.1f} kB/frame at {ready['fps']:g} fps -> "
                f"~{ready['expected_pps']:.0f} packets/s; client loop {ready['loop']}"
            )
            sys.stdout.flush()

            for k in ks:
                first_packet_wait = 5.0 if args.smoke else 10.0
                joined = lg.request({"cmd": "subs", "n": k, "wait": first_packet_wait}, "subs", 30 + 10 * k)
                if joined["receiving"] != k:
                    print(f"K={k}: only {joined['receiving']} of {k} players receive", file=sys.stderr)
                time.sleep(warmup)
                if server.poll() is not None:
                    raise RuntimeError(f"server exited with {server.returncode}")
                run = measure(lg, server.pid, lg.proc.pid, window, k)
                run["join_s"] = joined["elapsed"]
                run["receiving"] = joined["receiving"]
                result["runs"].append(run)
                ratio = run["out_over_expected"]
                print(
                    f"  K={k}: server {run['server_cpu'] * 100:5.1f} % "
                    f"in {run['pps_in']:6.0f} pps out {run['pps_out']:7.0f} pps"
                    + (f" ({ratio * 100:.1f} % of K x in)" if ratio is not None else "")
                    + f" gaps {run['gaps']} loadgen {run['loadgen_cpu'] * 100:.1f} %"
                    + (
                        f" socket drops: server {run['server_socket_drops']} loadgen {run['loadgen_socket_drops']}"
                        if run["server_socket_drops"] or run["loadgen_socket_drops"]
                        else ""
                    )
                )
                sys.stdout.flush()
        except Exception as exc:
            print(f"FAILED: {exc!r}", file=sys.stderr)
            result["error"] = repr(exc)
            status = 2
        finally:
            if lg is not None:
                lg.close()
            if server is not None:
                stop_process(server, 10.0)
                result["server_exit"] = server.returncode

    server_text = server_log.read_text(errors="replace")
    loadgen_text = loadgen_log.read_text(errors="replace") if loadgen_log.exists() else ""
    n_srv, srv_lines = problems_in(server_text)
    n_lg, lg_lines = problems_in(loadgen_text)
    result["server_log"] = {"problem_lines": n_srv, "first": srv_lines, "bytes": len(server_text)}
    result["loadgen_log"] = {"problem_lines": n_lg, "first": lg_lines, "bytes": len(loadgen_text)}

    # ---------------------------------------------------------------------------- analysis
    runs = result["runs"]
    idle = result.get("idle", {}).get("cpu", 0.0)
    fit: dict[str, Any] | None = None
    if len(runs) >= 2 and "idle" in result:
        parts = {}
        for part, base in (("cpu", idle), ("user", result["idle"]["user"]), ("sys", result["idle"]["sys"])):
            key = "server_cpu" if part == "cpu" else f"server_{part}"
            rows = [(r["pps_in"], r["pps_out"], (r[key] - base) * 1e6) for r in runs if r["pps_in"] > 0]
            solved = lstsq2(rows) if len(rows) >= 2 else None
            if solved is not None:
                parts[part] = {"recv_us": solved[0], "copy_us": solved[1], "rms_residual_us_per_s": solved[2]}
        if "cpu" in parts:
            fit = {
                "model": "server_cpu_per_s - idle = pps_in * recv + pps_out * copy (pps_out ~ K * pps_in)",
                **parts["cpu"],
                "user": parts.get("user"),
                "sys": parts.get("sys"),
            }
            total = parts["cpu"]
            if total["copy_us"] > 0:
                fit["copies_per_core_s"] = 1e6 / total["copy_us"]
    result["fit"] = fit
    base = next((r for r in runs if r["k"] == 0 and r["pps_in"] > 0), None)
    for r in runs:
        r["marginal_copy_us"] = None
        if base is not None and r["k"] > 0 and r["pps_out"] > 0:
            recv_part = (base["server_cpu"] - idle) * r["pps_in"] / base["pps_in"]
            r["marginal_copy_us"] = (r["server_cpu"] - idle - recv_part) * 1e6 / r["pps_out"]
    forwarded = sum(r["pps_out"] for r in runs if r["k"] > 0)
    result["elapsed_s"] = round(time.monotonic() - started, 1)

    # ------------------------------------------------------------------------------ report
    print()
    header = (
        f"{'K':>3} {'in pps':>8} {'out pps':>9} {'out/K*in':>9} {'Mbit in':>8} {'server':>8} "
        f"{'-idle':>7} {'user':>6} {'sys':>6} {'µs/copy':>8} {'loadgen':>8} {'gaps':>5} {'late':>5} {'lost':>5} {'drop s/c':>9}"
    )
    print(header)
    print("-" * len(header))
    for r in runs:
        ratio = f"{r['out_over_expected'] * 100:.1f}%" if r["out_over_expected"] is not None else "-"
        print(
            f"{r['k']:>3} {r['pps_in']:>8.0f} {r['pps_out']:>9.0f} {ratio:>9} {r['mbit_in']:>8.1f} "
            f"{r['server_cpu'] * 100:>7.1f}% {(r['server_cpu'] - idle) * 100:>6.1f}% "
            f"{r['server_user'] * 100:>5.1f}% {r['server_sys'] * 100:>5.1f}% "
            f"{(format(r['marginal_copy_us'], '.1f') if r['marginal_copy_us'] is not None else '-'):>8} "
            f"{r['loadgen_cpu'] * 100:>7.1f}% "
            f"{r['gaps']:>5} {r['late']:>5} {r['lost_estimate']:>5} "
            f"{str(r['server_socket_drops']) + '/' + str(r['loadgen_socket_drops']):>9}"
        )
    print(
        "(server/user/sys/loadgen: % of one core; µs/copy: this run alone against K=0;\n"
        " gaps/late/lost: sequence numbers over all players;\n"
        " drop s/c: datagrams the kernel dropped on full receive buffers of the server / the load generator)"
    )
    print()
    if "idle" in result:
        print(f"idle server CPU: {idle * 100:.2f} % of a core")
    if fit is not None:
        user, sys_part = fit.get("user") or {}, fit.get("sys") or {}
        if window < 5:  # /proc/<pid>/stat counts 10 ms ticks: too coarse to split short windows
            user = sys_part = {}
        print(
            f"receive : {fit['recv_us']:6.1f} µs per incoming packet"
            + (f"   (user {user['recv_us']:.1f} / sys {sys_part['recv_us']:.1f})" if user and sys_part else "")
        )
        print(
            f"copy    : {fit['copy_us']:6.1f} µs per forwarded copy"
            + (f"   (user {user['copy_us']:.1f} / sys {sys_part['copy_us']:.1f})" if user and sys_part else "")
        )
        print(f"fit rms residual: {fit['rms_residual_us_per_s'] / 1e4:.2f} % of a core over {len(runs)} runs")
        if fit.get("copies_per_core_s"):
            print(f"=> one core would forward ~{fit['copies_per_core_s'] / 1000:.0f} k copies/s (copy cost alone)")
    else:
        print("no fit (fewer than two usable runs)")
    bad_keyframe = [(r["k"], s["index"]) for r in runs for s in r["subs"] if s["first_is_keyframe"] is False]
    bad_samples = sum(s["samples_bad"] for r in runs[-1:] for s in r["subs"])
    if bad_keyframe:
        print(f"WARNING: players whose first packet was not a VP8 keyframe start: {bad_keyframe}")
    if bad_samples:
        print(f"WARNING: {bad_samples} sampled packets failed SRTP/payload-type checks")
    print(f"server log: {n_srv} warning/error lines" + (":" if srv_lines else ""))
    for line in srv_lines[:10]:
        print(f"    {line}")
    if n_lg:
        print(f"loadgen log: {n_lg} warning/error lines:")
        for line in lg_lines[:10]:
            print(f"    {line}")
    print(
        "noise   : the server and the load generator share this machine's "
        f"{info['affinity']} CPUs{' (pinned one each)' if pin else ' (unpinned)'}; other processes on a shared "
        "VM also count. Repeated runs differ by 10-30 % (the research notes report ±30 %); treat the "
        "figures as a rough guide and compare runs taken on the same machine back to back. On loopback "
        "the sender's sys time includes delivering into the receiver's socket."
    )
    print(f"elapsed : {result['elapsed_s']} s")

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2) + "\n")
    print(f"json    : {out}")

    # Temporary data dir and logs; keep the logs if something went wrong.
    if status == 0 and not n_srv:
        for p in sorted(tmp.rglob("*"), reverse=True):
            p.unlink() if p.is_file() else p.rmdir()
        tmp.rmdir()
    else:
        print(f"logs kept in {tmp}")

    if status:
        return status
    if any(r["k"] > 0 for r in runs) and forwarded <= 0:
        print("FAILED: nothing was forwarded", file=sys.stderr)
        return 1
    if not runs or fit is None:
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
