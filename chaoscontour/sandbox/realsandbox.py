"""``chaoscontour sandbox up --node real``: the sandbox on a real node (kubelet, containerd, kube-proxy, a real
NetworkPolicy engine) instead of the node agent.

``up`` builds (or finds) the pinned binaries, starts :mod:`chaoscontour.sandbox.nodeplane` in the background (control
plane, node, NetworkPolicy engine, reaper), then deploys what a cluster would have: the cluster DNS (CoreDNS behind
``kube-system/kube-dns``), Contour's release manifest as it is (:func:`chaoscontour.sandbox.deploy.deploy_contour`)
and the demo backend (agnhost behind the HTTPProxy ``demo/echo``), and waits until a request through Envoy answers
200. It writes the same ``settings.env`` / ``settings.json`` the experiments read as the node agent's sandbox does.
``down`` stops the background process, which stops the node and leaves the host clean; whatever a crash left behind
is removed after it (:func:`chaoscontour.sandbox.nodehost.clean`).
"""

from __future__ import annotations

import contextlib
import json
import shutil
import sys
import time
from pathlib import Path
from typing import Any

from chaoscontour.sandbox import applier, binaries, deploy, dns, manifests, nodehost, nodeimages, nodeplane, workloads
from chaoscontour.sandbox.deploy import SandboxError
from chaoscontour.sandbox.kubeapi import KubeApi
from chaoscontour.sandbox.process import Process, alive, stop_pid
from chaoscontour.sandbox.settings import SETTINGS_ENV, SETTINGS_JSON, experiment_settings, write_settings

__all__ = ["NODE_KIND", "demo_objects", "down", "up"]

NODE_KIND = "real"
STATE_FILE = "state.json"
PLANE_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0


def demo_objects() -> list[dict[str, Any]]:
    """The demo backend of :func:`chaoscontour.sandbox.workloads.demo_objects`, served by Kubernetes' agnhost
    (``netexec``: ``/hostname``, ``/healthz``, ``/echo``) instead of the node agent's echo program."""
    objects = workloads.demo_objects(nodeplane.NODE_NAME)
    for obj in objects:
        if obj["kind"] == "Deployment":
            spec = obj["spec"]["template"]["spec"]
            spec.pop("nodeName", None)  # the scheduler places it, as in a cluster
            container = spec["containers"][0]
            container.update(
                image=nodeimages.AGNHOST_IMAGE, imagePullPolicy="Never", args=["netexec", "--http-port=8080"]
            )
    return objects


def _say_from(began: float) -> Any:
    def say(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", flush=True)

    return say


def _preflight(directory: Path) -> None:
    missing = nodehost.missing_tools()
    if missing:
        raise SandboxError(f"the real node needs Debian's {', '.join(missing)}: apt-get install -y {' '.join(missing)}")
    left = nodehost.leftovers(nodeplane.layout_for(directory))
    if any(left.values()):
        raise SandboxError(
            f"a real node's objects already exist on this host ({', '.join(k for k, v in left.items() if v)}); "
            "another sandbox may be up: run `chaoscontour sandbox down --dir <its dir>` first"
        )


def up(directory: Path, mode: str) -> dict[str, str]:
    """Bring the real-node sandbox up in ``directory`` with NetworkPolicy ``mode``; return the settings written."""
    say = _say_from(time.monotonic())
    _preflight(directory)
    directory.mkdir(parents=True, exist_ok=True)
    wanted = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"]
    wanted += ["contour", "coredns", "agnhost", "kube-network-policies", "pause"]
    say(f"binaries: {', '.join(wanted)}, envoy")
    binaries.ensure_binaries(wanted, progress=lambda m: say("  " + m))
    log = directory / "logs" / "nodeplane.log"
    argv = [sys.executable, "-m", "chaoscontour.sandbox.nodeplane", "--dir", str(directory), "--mode", mode]
    holder = Process.start("the node and control plane", argv, log, header=False)
    holder.close_log()
    state = {"dir": str(directory), "node": NODE_KIND, "mode": mode, "pids": {"nodeplane": holder.pid}}
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1))
    shown = 0

    def plane_ready() -> dict[str, Any]:
        nonlocal shown
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                say("  " + line)
            shown = len(lines)
        if holder.poll() is not None:
            raise SandboxError(holder.exited_message())
        with contextlib.suppress(OSError, ValueError):
            return dict(json.loads((directory / nodeplane.READY_FILE).read_text()))
        return {}

    ready = deploy.wait_for("the control plane and the node", PLANE_TIMEOUT_S, plane_ready)
    api = KubeApi(directory / "kubeconfig")

    def check() -> None:
        if holder.poll() is not None:
            raise SandboxError(holder.exited_message())

    deploy.apply_objects(api, dns.coredns_objects(ready["cluster_dns"], ready["cluster_domain"]))

    def coredns_ready() -> list[dict[str, Any]]:
        check()
        return [p for p in deploy.pods(api, dns.NAMESPACE, dns.COREDNS_SELECTOR) if deploy.pod_ready(p)]

    deploy.wait_for("CoreDNS Ready", READY_TIMEOUT_S, coredns_ready)
    say(f"cluster DNS: kube-system/kube-dns {ready['cluster_dns']}")
    deploy.deploy_contour(api, say, check, READY_TIMEOUT_S)
    deploy.apply_objects(api, demo_objects())
    say("applied: demo/echo (agnhost netexec, 2 replicas) + HTTPProxy echo")
    ip = deploy.wait_serving(api, say, check, READY_TIMEOUT_S)
    url = f"http://{ip}:8080/"
    deploy.wait_for(
        f"{url} (Host {workloads.ECHO_FQDN}) to answer 200",
        READY_TIMEOUT_S,
        lambda: applier.route_answers(url, workloads.ECHO_FQDN),
    )
    settings = experiment_settings(directory / "kubeconfig", ip, mode)
    settings.update(manifests.route_settings(demo_objects(), f"{workloads.DEMO_NAMESPACE}/echo", url))
    write_settings(directory, settings)
    (directory / STATE_FILE).write_text(json.dumps({**state, "envoy_url": url, "apiserver": ready["url"]}, indent=1))
    say(f"ready: curl -H 'Host: {workloads.ECHO_FQDN}' {url}")
    return settings


def is_real(directory: Path) -> bool:
    """Whether the sandbox in ``directory`` runs on the real node."""
    with contextlib.suppress(OSError, ValueError):
        return bool(json.loads((directory / STATE_FILE).read_text()).get("node") == NODE_KIND)
    return False


def down(directory: Path, *, keep_logs: bool = False) -> None:
    """Stop the real-node sandbox in ``directory`` and remove what it created. Idempotent."""
    say = _say_from(time.monotonic())
    with contextlib.suppress(OSError, ValueError):
        pid = json.loads((directory / STATE_FILE).read_text()).get("pids", {}).get("nodeplane")
        if alive(pid):
            stop_pid(int(pid), STOP_TIMEOUT_S, say=say, name="the node and control plane")
    layout = nodeplane.layout_for(directory)
    if any(nodehost.leftovers(layout).values()):
        say(f"removing what the node left: {nodehost.leftovers(layout)}")
        nodehost.clean(layout)
    for name in ("controlplane", "images"):
        shutil.rmtree(directory / name, ignore_errors=True)
    kept = {layout.logs_dir, layout.pod_logs_dir} if keep_logs else set()
    if layout.directory.exists():
        for child in layout.directory.iterdir():
            if child not in kept:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            layout.directory.rmdir()
    for name in (STATE_FILE, nodeplane.READY_FILE, SETTINGS_ENV, SETTINGS_JSON, "kubeconfig"):
        (directory / name).unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(directory / "logs", ignore_errors=True)
    with contextlib.suppress(OSError):
        directory.rmdir()
    remaining = nodehost.leftovers(layout)
    if any(remaining.values()):
        raise SandboxError(f"could not remove everything: {remaining}")
    say("sandbox down" + (f"; logs kept in {directory / 'logs'}" if keep_logs else ""))
