"""The real-node sandbox's control plane and node as one background process that outlives ``sandbox up``.

:class:`~chaoscontour_sandbox.controlplane.ControlPlane` and :class:`~chaoscontour_sandbox.node.Node` stop their
processes when the Python process that started them exits, as test fixtures should; the sandbox must keep running
after ``up`` returns, so ``up`` starts this process, which owns both for the sandbox's lifetime::

    python -m chaoscontour_sandbox.nodeplane --dir DIR --mode per-packet|conntrack|off

It creates the node network and the control plane's namespace, starts the control plane (with Contour's CRDs),
writes the images, starts the node, runs kube-network-policies as a DaemonSet and starts Prometheus
(:mod:`chaoscontour_sandbox.metrics`), whose targets it keeps following, and an OpenTelemetry Collector
(:mod:`chaoscontour_sandbox.collector`). It writes ``DIR/nodeplane.json``
when all is ready and stops everything, the host left clean, on SIGTERM. Progress lines go to stdout (``up`` sends
them to ``DIR/logs/nodeplane.log``).

The NetworkPolicy mode can change while it runs: ``sandbox mode M`` writes ``DIR/mode``, and within a second this
process applies it and writes ``DIR/mode.applied``:

- ``conntrack``: the engine is hooked into the node's packet path (it judges new connections), with the conntrack
  reaper (:mod:`chaoscontour_sandbox.reaper`) judging only pods that just started, as the engine would with NRI;
- ``per-packet``: the same, with the reaper ending every established connection a policy now denies;
- ``off``: the engine is unhooked, so no packet reaches it: nothing is enforced.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import signal
import sys
import threading
from collections.abc import Sequence
from pathlib import Path

import requests

from chaoscontour_sandbox import binaries, collector, crds, deploy, metrics, nodeaddons, nodehost, nodeimages
from chaoscontour_sandbox.controlplane import ControlPlane, ControlPlaneError
from chaoscontour_sandbox.kubeapi import ApiError, KubeApi
from chaoscontour_sandbox.node import Node, NodeError
from chaoscontour_sandbox.nodeconfig import NodeLayout
from chaoscontour_sandbox.process import Process, ProcessExited, ProcessTimeout

__all__ = ["MODE_FILE", "MODES", "NODE_NAME", "READY_FILE", "layout_for", "main", "start_network_policy_engine"]

READY_FILE = "nodeplane.json"
MODE_FILE = "mode"
MODES = ("per-packet", "conntrack", "off")
# The reaper's arguments in each mode (no reaper when absent). 5 s: the engine learns a pod's address within about a
# second of its containers starting, when the kubelet publishes it; see the reaper's docstring.
REAPER_ARGS = {"per-packet": [], "conntrack": ["--new-pods-s", "5"]}
NODE_NAME = "sandbox"
# The images the sandbox's workloads name, by the binary each is made of.
IMAGES = ("pause", "agnhost", "kube-network-policies", "contour", "envoy", "coredns")


def layout_for(directory: Path) -> NodeLayout:
    """The sandbox's node: its files under ``DIR/node``, networks apart from the host's usual private ranges."""
    return NodeLayout(
        directory / "node",
        NODE_NAME,
        node_network="10.216.0.0/24",
        pod_cidr="10.217.0.0/24",
        service_cidr="10.218.0.0/24",
    )


def _binaries() -> dict[str, Path]:
    names = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"]
    names += [name for name in IMAGES if name != "envoy"]
    found = binaries.ensure_binaries(names, build=False)
    found["envoy"] = nodeimages.envoy_elf()
    return found


def start_network_policy_engine(node: Node, api: KubeApi, timeout_s: float = 120.0) -> None:
    """kube-network-policies as the node's DaemonSet, hooked into the node's packet path once it reads its queue."""
    deploy.apply_objects(api, nodeaddons.network_policy_engine())
    selector = ",".join(f"{k}={v}" for k, v in nodeaddons.NETPOL_LABELS.items())

    def running() -> list[dict[str, object]]:
        return [p for p in deploy.pods(api, nodeaddons.NETPOL_NAMESPACE, selector) if deploy.pod_ready(p)]

    def listening() -> bool:
        # The kernel lists the queues a process has bound, by number.
        lines = Path("/proc/net/netfilter/nfnetlink_queue").read_text().splitlines()
        return any(line.split()[:1] == [str(nodeaddons.NFQUEUE_ID)] for line in lines)

    deploy.wait_for("kube-network-policies Ready", timeout_s, running)
    deploy.wait_for(f"kube-network-policies reading NFQUEUE {nodeaddons.NFQUEUE_ID}", 30.0, listening)
    node.hook_network_policy_engine(nodeaddons.NFQUEUE_ID)


class Enforcement:
    """The node's NetworkPolicy mode, switched at run time (see the module's docstring)."""

    def __init__(self, node: Node, directory: Path, kubeconfig: Path) -> None:
        self.node, self.directory, self.kubeconfig = node, directory, kubeconfig
        self.mode = "per-packet"  # start_network_policy_engine hooks the engine
        self.reaper: Process | None = None
        self.reaper_args: list[str] | None = None

    def apply(self, mode: str) -> None:
        if mode not in MODES:
            raise ValueError(f"unknown NetworkPolicy mode {mode!r}; choose one of {', '.join(MODES)}")
        if mode == "off":
            self.node.unhook_network_policy_engine()
        elif self.mode == "off":  # re-installing a hooked chain would open a gap: only hook what is unhooked
            self.node.hook_network_policy_engine(nodeaddons.NFQUEUE_ID)
        reaper_args = REAPER_ARGS.get(mode)
        if self.reaper is not None and reaper_args != self.reaper_args:
            self.reaper.stop(5.0)
            self.reaper = None
        if reaper_args is not None and self.reaper is None:
            argv = [sys.executable, "-m", "chaoscontour_sandbox.reaper", "--node", self.node.layout.name]
            argv += ["--kubeconfig", str(self.kubeconfig), *reaper_args]
            self.reaper = Process.start("reaper", argv, self.directory / "logs" / "reaper.log")
        self.reaper_args = reaper_args
        self.mode = mode
        staged = self.directory / (MODE_FILE + ".applied.new")
        staged.write_text(mode + "\n")
        staged.replace(self.directory / (MODE_FILE + ".applied"))

    def follow(self) -> None:
        """Apply the mode ``DIR/mode`` asks for, if it changed."""
        try:
            wanted = (self.directory / MODE_FILE).read_text().strip()
        except OSError:
            return
        if wanted != self.mode and wanted in MODES:
            self.apply(wanted)
            print(f"NetworkPolicy mode: {wanted}", flush=True)

    def stop(self) -> None:
        if self.reaper is not None:
            self.reaper.stop(5.0)
            self.reaper = None


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoscontour_sandbox.nodeplane", description=__doc__)
    parser.add_argument("--dir", type=Path, required=True, help="the sandbox dir")
    parser.add_argument("--mode", choices=MODES, required=True, help="NetworkPolicy enforcement mode")
    args = parser.parse_args(argv)
    directory: Path = args.dir.resolve()
    stop = threading.Event()

    def on_signal(signum: int, frame: object) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def say(message: str) -> None:
        print(message, flush=True)

    layout = layout_for(directory)
    plane = ControlPlane(
        workdir=directory / "controlplane",
        bind_address=layout.control_plane_ip,
        netns=f"{layout.prefix}-cp",
        controller_manager=True,
        scheduler=True,
        service_cidr=layout.service_cidr,
        progress=say,
    )
    found = _binaries()
    node = Node(layout, kubelet=found["kubelet"], kube_proxy=found["kube-proxy"], progress=say)
    enforcement = Enforcement(node, directory, directory / "kubeconfig")  # the copy made once the plane runs
    prometheus: Process | None = None
    otelcol: Process | None = None
    try:
        nodehost.create_control_plane_netns(layout)
        plane.start()
        plane.install_contour_crds()
        shutil.copyfile(plane.kubeconfig, directory / "kubeconfig")
        (directory / "kubeconfig").chmod(0o600)
        archives = nodeimages.write_archives({name: found[name] for name in IMAGES}, directory / "images")
        pki = plane.pki_dir
        node.start(plane.url, (pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes(), plane.kubeconfig, archives)
        api = KubeApi(plane.kubeconfig)
        start_network_policy_engine(node, api)
        enforcement.apply(args.mode)
        say(f"NetworkPolicy: kube-network-policies on queue {nodeaddons.NFQUEUE_ID} ({args.mode})")
        prometheus, targets, prometheus_url = metrics.start_prometheus(directory)
        say(f"Prometheus: {prometheus_url}, scraping Contour and Envoy every {metrics.SCRAPE_INTERVAL_S} s")
        otelcol, otlp_endpoint = collector.start_collector(directory)
        say(
            f"OpenTelemetry Collector: OTLP/HTTP at {otlp_endpoint}, spans in {directory / 'logs' / collector.LOG_FILE}"
        )
        ready = {
            "url": plane.url,
            "kubeconfig": str(directory / "kubeconfig"),
            "node": layout.name,
            "node_ip": layout.node_ip,
            "cluster_dns": layout.cluster_dns,
            "cluster_domain": layout.cluster_domain,
            "containerd_socket": str(layout.containerd_socket),
            "mode": args.mode,
            "pids": {
                **plane.pids,
                **{name: p.pid for name, p in node.processes.items()},
                "prometheus": prometheus.pid,
                "otelcol": otelcol.pid,
            },
            "logs": str(layout.logs_dir),
            "prometheus_url": prometheus_url,
            "otlp_endpoint": otlp_endpoint,
        }
        staged = directory / (READY_FILE + ".new")
        staged.write_text(json.dumps(ready, indent=1))
        staged.replace(directory / READY_FILE)
        say(f"node {layout.name} ready; control plane at {plane.url}")
        while not stop.wait(1.0):
            if not plane.running:
                say(f"a control-plane process exited; see {plane.logs_dir}")
                return 1
            watched = [
                *node.processes.values(),
                prometheus,
                otelcol,
                *([enforcement.reaper] if enforcement.reaper else []),
            ]
            exited = [p for p in watched if not p.running]
            if exited:
                say(exited[0].exited_message())
                return 1
            enforcement.follow()
            with contextlib.suppress(ApiError, requests.RequestException, OSError):  # the next second tries again
                targets.follow(api)
        return 0
    except (
        ControlPlaneError,
        crds.CrdError,
        NodeError,
        deploy.SandboxError,
        binaries.BinaryNotFound,
        ProcessExited,
        ProcessTimeout,
        OSError,
    ) as exc:
        say(f"error: {exc}")
        return 1
    finally:
        for helper in (prometheus, otelcol):
            if helper is not None:
                helper.stop(5.0)
        enforcement.stop()
        node.stop()
        plane.stop()
        nodehost.clean(layout)
        for name in (READY_FILE, MODE_FILE, MODE_FILE + ".applied"):
            (directory / name).unlink(missing_ok=True)
        say("node and control plane stopped")


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
