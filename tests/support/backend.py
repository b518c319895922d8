"""A real local HTTP backend whose failures can be scheduled: 503s or closed connections for a known window.

Used in-process by the tests (:class:`Backend`), or as a separate process (:class:`BackendProcess`, so that its CPU
time is not counted as the caller's). Listens on 127.0.0.1 only, on a port the kernel picks. (The benchmark has its
own single-threaded backend: benchmarks import the package, never the tests.)

Failure windows are absolute wall-clock intervals (epoch seconds), recorded as they were scheduled, so a test can
compare what a probe detected with what really happened without depending on thread timing.
"""

import json
import shutil
import sys
import tempfile
import threading
import time
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from chaoscontour_sandbox.process import Process
from tests.support.http_server import LOOPBACK, LocalServer, QuietHandler

__all__ = ["CONTROL_PATH", "Backend", "BackendProcess", "FailureWindow"]

CONTROL_PATH = "/_backend/failure"
MODES = ("status", "close", "slow")


@dataclass(frozen=True)
class FailureWindow:
    """From ``start`` to ``end`` (epoch s) the backend fails: ``status`` answers ``status_code``, ``close`` closes
    the connection without answering, ``slow`` answers after ``delay_s``."""

    start: float
    end: float
    mode: str = "status"
    status_code: int = 503
    delay_s: float = 0.0

    @property
    def duration_s(self) -> float:
        return self.end - self.start


class _Handler(QuietHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as Envoy's upstream pool expects
    # Headers and body are written separately: without TCP_NODELAY, Nagle plus the peer's delayed ACK add 40 ms.
    disable_nagle_algorithm = True

    def do_GET(self) -> None:
        backend: Backend = self.server.owner
        backend._count()
        window = backend.failure_at(time.time())
        if window is not None and window.mode == "close":
            self.close_connection = True
            return
        if window is not None and window.mode == "slow":
            time.sleep(window.delay_s)
            window = None
        if window is not None:
            self.answer(window.status_code, b"injected failure\n")
        else:
            self.answer(200, backend.body)

    def do_POST(self) -> None:
        backend: Backend = self.server.owner
        url = urllib.parse.urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        self.rfile.read(length)
        if not backend.control or url.path != CONTROL_PATH:
            self.answer(404, b"not found\n")
            return
        query = {k: v[0] for k, v in urllib.parse.parse_qs(url.query).items()}
        window = backend.fail_in(
            float(query.get("in_s", "0")),
            float(query["duration_s"]),
            mode=query.get("mode", "status"),
            status_code=int(query.get("status", "503")),
            delay_s=float(query.get("delay_s", "0")),
        )
        self.answer(200, json.dumps({"start": window.start, "end": window.end}).encode())


class Backend:
    """A threaded HTTP/1.1 server on 127.0.0.1: ``start()`` / ``stop()`` or a context manager.

    Answers every GET with 200 and ``body`` unless a failure window covers the moment. ``control=True`` also
    accepts ``POST /_backend/failure?in_s=..&duration_s=..[&mode=..&status=..&delay_s=..]`` to schedule one.
    """

    def __init__(self, body: bytes = b"hello from the chaoscontour test backend\n", control: bool = False):
        self.body = body
        self.control = control
        self.failures: list[FailureWindow] = []
        self.requests = 0
        self._lock = threading.Lock()
        self._http: LocalServer | None = None

    def start(self) -> "Backend":
        self._http = LocalServer(_Handler, owner=self, name="backend").start()
        return self

    def stop(self) -> None:
        if self._http is not None:
            self._http.stop()
            self._http = None

    def __enter__(self) -> "Backend":
        return self.start() if self._http is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def port(self) -> int:
        assert self._http is not None, "backend is not running"
        return self._http.port

    @property
    def url(self) -> str:
        return f"http://{LOOPBACK}:{self.port}/"

    def fail_between(
        self, start: float, end: float, mode: str = "status", status_code: int = 503, delay_s: float = 0.0
    ) -> FailureWindow:
        if mode not in MODES:
            raise ValueError(f"mode must be one of {MODES}, not {mode!r}")
        window = FailureWindow(start, end, mode, status_code, delay_s)
        with self._lock:
            self.failures.append(window)
        return window

    def fail_in(self, in_s: float, duration_s: float, **kwargs: Any) -> FailureWindow:
        """Fail from ``in_s`` seconds from now, for ``duration_s`` seconds."""
        start = time.time() + in_s
        return self.fail_between(start, start + duration_s, **kwargs)

    def fail_always(self, **kwargs: Any) -> FailureWindow:
        return self.fail_between(0.0, float("inf"), **kwargs)

    def heal(self) -> None:
        with self._lock:
            self.failures.clear()

    def failure_at(self, when: float) -> FailureWindow | None:
        with self._lock:
            for window in self.failures:
                if window.start <= when < window.end:
                    return window
        return None

    def _count(self) -> None:
        with self._lock:
            self.requests += 1


class BackendProcess:
    """:class:`Backend` in a child process, with failures scheduled over its control path."""

    def __init__(self) -> None:
        self.proc: Process | None = None
        self.port = 0
        self._dir: Path | None = None

    def start(self, timeout_s: float = 10.0) -> "BackendProcess":
        self._dir = Path(tempfile.mkdtemp(prefix="chaoscontour-backend-"))
        log = self._dir / "backend.log"
        self.proc = Process.start(
            "backend",
            [sys.executable, "-c", "from tests.support.backend import main; main()"],
            log,
            cwd=_repo_root(),
            header=False,
        )

        def port() -> int:
            # The child prints its port once it listens.
            first = log.read_text().split("\n", 1)
            return int(first[0]) if len(first) > 1 and first[0].strip().isdigit() else 0

        try:
            self.port = self.proc.wait_ready(port, timeout_s, what="its port on the first line")
        except BaseException:
            self.stop()
            raise
        return self

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(5.0)
            self.proc = None
        if self._dir is not None:
            shutil.rmtree(self._dir, ignore_errors=True)
            self._dir = None

    def __enter__(self) -> "BackendProcess":
        return self.start() if self.proc is None else self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def fail_in(self, in_s: float, duration_s: float, mode: str = "status", status_code: int = 503) -> FailureWindow:
        query = urllib.parse.urlencode({"in_s": in_s, "duration_s": duration_s, "mode": mode, "status": status_code})
        request = urllib.request.Request(
            f"http://{LOOPBACK}:{self.port}{CONTROL_PATH}?{query}", method="POST", data=b""
        )
        with urllib.request.urlopen(request, timeout=5) as resp:
            answer = json.loads(resp.read())
        return FailureWindow(answer["start"], answer["end"], mode, status_code)


def _repo_root() -> str:
    from pathlib import Path

    return str(Path(__file__).resolve().parents[2])


def main() -> None:
    """Serve until terminated; print the port on the first line of stdout."""
    import signal

    backend = Backend(control=True).start()
    print(backend.port, flush=True)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    try:
        while not stop.wait(1.0):
            pass
    finally:
        backend.stop()


if __name__ == "__main__":
    main()
