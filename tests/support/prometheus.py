"""A real Prometheus for tests (Debian's ``prometheus``, which ``make system-deps`` installs): static targets, a 1 s
scrape, its data in a temp dir that ``stop()`` removes, listening on loopback on a port the kernel picked."""

from __future__ import annotations

import json
import shutil
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Sequence
from pathlib import Path

from chaoscontour_sandbox.metrics import run_prometheus
from chaoscontour_sandbox.process import Process

__all__ = ["PrometheusProcess"]


class PrometheusProcess:
    """Prometheus scraping ``targets`` (``host:port``) at ``metrics_path`` every second, as job ``test``."""

    def __init__(self, targets: Sequence[str], metrics_path: str = "/metrics") -> None:
        self.targets, self.metrics_path = list(targets), metrics_path
        self.dir: Path | None = None
        self.proc: Process | None = None
        self.url = ""

    def start(self, timeout_s: float = 30.0) -> PrometheusProcess:
        self.dir = Path(tempfile.mkdtemp(prefix="chaoscontour-prometheus-"))
        job = {"job_name": "test", "metrics_path": self.metrics_path, "static_configs": [{"targets": self.targets}]}
        config = {"global": {"scrape_interval": "1s"}, "scrape_configs": [job]}
        try:
            self.proc, self.url = run_prometheus(self.dir, config, self.dir / "log", timeout_s)
        except BaseException:
            self.stop()
            raise
        return self

    def wait_scraped(self, timeout_s: float = 30.0) -> None:
        """Wait until every target has been scraped once (Prometheus applies a new configuration's targets a few
        seconds after it starts)."""
        deadline = time.monotonic() + timeout_s
        query = urllib.parse.urlencode({"query": "up == 1"})
        while True:
            with urllib.request.urlopen(f"{self.url}/api/v1/query?{query}", timeout=5) as answer:
                if len(json.load(answer)["data"]["result"]) == len(self.targets):
                    return
            assert time.monotonic() < deadline, f"Prometheus scraped not all of {self.targets} in {timeout_s} s"
            time.sleep(0.2)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.stop(5.0)
            self.proc = None
        if self.dir is not None:
            shutil.rmtree(self.dir, ignore_errors=True)
            self.dir = None

    def __enter__(self) -> PrometheusProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
