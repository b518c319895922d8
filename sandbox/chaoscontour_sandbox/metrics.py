"""The sandbox's Prometheus: Debian's ``prometheus`` scraping Contour and Envoy as a user's own would.

Contour's release manifest names the metrics port of both workloads ``metrics`` (Contour's ``:8000/metrics``,
Envoy's ``:8002``, whose Prometheus text is at ``/stats/prometheus``) and carries no ``prometheus.io``
annotations. A user's Prometheus finds those ports through Kubernetes service discovery (role ``pod``, or a
PodMonitor). Debian builds Prometheus without Kubernetes discovery (its config parser rejects
``kubernetes_sd_configs``), so the sandbox does that part itself: :class:`Targets` lists the pods through the API
server and writes them to a file Prometheus reads (``file_sd_configs``), with the labels prometheus-operator's
PodMonitor would give (``namespace``, ``pod``, ``container``), and ``app``. Targets follow the pods: a restarted
Contour is the same target, a replaced pod a new one. The pods of ``projectcontour`` and, with ``up --gateway``, of
the Gateway's namespace are listed. The data lives in ``DIR/prometheus`` and goes with
``down``; the server listens on loopback only.
"""

from __future__ import annotations

import json
import shutil
import urllib.request
from collections.abc import Iterable
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import deploy, workloads
from chaoscontour_sandbox.gateway import NAMESPACE as GATEWAY_NAMESPACE
from chaoscontour_sandbox.kubeapi import KubeApi
from chaoscontour_sandbox.process import Process, free_port

__all__ = [
    "DATA_DIR",
    "SCRAPE_INTERVAL_S",
    "Targets",
    "pod_targets",
    "run_prometheus",
    "scrape_config",
    "start_prometheus",
]

DATA_DIR = "prometheus"
TARGETS_FILE = "targets.json"
# Fault windows here last 30 to 60 s: a 2 s scrape gives rates with enough points to see them.
SCRAPE_INTERVAL_S = 2
METRICS_PORT_NAME = "metrics"
ENVOY_METRICS_PATH = "/stats/prometheus"


def scrape_config(targets_file: Path) -> dict[str, object]:
    """One job, ``contour``, over the targets :class:`Targets` writes to ``targets_file``."""
    return {
        "global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s", "evaluation_interval": f"{SCRAPE_INTERVAL_S}s"},
        "scrape_configs": [
            {
                "job_name": "contour",
                "file_sd_configs": [{"files": [str(targets_file)], "refresh_interval": f"{SCRAPE_INTERVAL_S}s"}],
            }
        ],
    }


def pod_targets(pods: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Prometheus target groups for the containers' ports named ``metrics`` of the pods that have an address;
    Envoy's (its container ``envoy``) are read at ``/stats/prometheus``, the others at ``/metrics``."""
    groups = []
    for pod in pods:
        meta, ip = pod["metadata"], pod.get("status", {}).get("podIP")
        if not ip or meta.get("deletionTimestamp"):
            continue
        app = meta.get("labels", {}).get("app", "")
        for container in pod.get("spec", {}).get("containers", []):
            for port in container.get("ports") or []:
                if port.get("name") == METRICS_PORT_NAME:
                    labels = {"namespace": meta["namespace"], "pod": meta["name"], "container": container["name"]}
                    labels["app"] = app
                    envoy = container["name"] == "envoy"
                    labels["__metrics_path__"] = ENVOY_METRICS_PATH if envoy else "/metrics"
                    groups.append({"targets": [f"{ip}:{port['containerPort']}"], "labels": labels})
    return sorted(groups, key=lambda g: g["targets"][0])


class Targets:
    """The target file of one sandbox's Prometheus, rewritten (atomically) when the pods change."""

    def __init__(self, home: Path, namespaces: tuple[str, ...] = (workloads.CONTOUR_NAMESPACE, GATEWAY_NAMESPACE)):
        self.path, self.namespaces = home / TARGETS_FILE, namespaces
        self._written: list[dict[str, Any]] | None = None
        self.write([])

    def write(self, groups: list[dict[str, Any]]) -> None:
        if groups == self._written:
            return
        staged = self.path.with_suffix(".new")
        staged.write_text(json.dumps(groups, indent=1))
        staged.replace(self.path)
        self._written = groups

    def follow(self, api: KubeApi) -> None:
        """List the namespaces' pods (Contour's release manifest's, and a Gateway's) and write their targets if they
        changed."""
        self.write(pod_targets([pod for ns in self.namespaces for pod in deploy.pods(api, ns, "")]))


def run_prometheus(home: Path, config: dict[str, object], log: Path, timeout_s: float = 60.0) -> tuple[Process, str]:
    """Start Debian's ``prometheus`` with ``config`` (written to ``home/prometheus.yml``), its data in
    ``home/data``, on a free loopback port; return it and its URL once ``/-/ready`` answers 200.

    Raises :class:`deploy.SandboxError` naming the Debian package when there is no ``prometheus`` to run, and
    :class:`~chaoscontour_sandbox.process.ProcessExited` or ``ProcessTimeout`` (with the log's tail) when it does
    not come up; the process is stopped then."""
    program = shutil.which("prometheus")
    if program is None:
        raise deploy.SandboxError("Prometheus needs Debian's prometheus: apt-get install -y prometheus")
    home.mkdir(parents=True, exist_ok=True)
    (home / "prometheus.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    url = f"http://127.0.0.1:{free_port()}"
    argv = [program, f"--config.file={home / 'prometheus.yml'}", f"--storage.tsdb.path={home / 'data'}"]
    argv += [f"--web.listen-address={url.removeprefix('http://')}", "--storage.tsdb.retention.time=2d"]
    proc = Process.start("prometheus", argv, log)

    def ready() -> bool:
        with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as answer:
            return bool(answer.status == 200)

    try:
        proc.wait_ready(ready, timeout_s, what=f"Prometheus at {url}")
    except BaseException:
        proc.stop(5.0)
        raise
    return proc, url


def start_prometheus(directory: Path, timeout_s: float = 60.0) -> tuple[Process, Targets, str]:
    """Start the sandbox's Prometheus in ``directory`` (:func:`run_prometheus` with :func:`scrape_config`); return
    it, its :class:`Targets` (to follow the pods) and its URL."""
    home = directory / DATA_DIR
    home.mkdir(parents=True, exist_ok=True)
    targets = Targets(home)
    proc, url = run_prometheus(home, scrape_config(targets.path), directory / "logs" / "prometheus.log", timeout_s)
    return proc, targets, url
