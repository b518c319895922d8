"""The sandbox's life: ``up``, ``apply``/``delete`` of a user's manifests, ``load`` of a user's images, ``mode``,
``status`` and ``down``, on one real node (kubelet on containerd, kube-proxy, kube-network-policies).

``up`` builds (or finds) the pinned binaries, starts :mod:`chaoscontour_sandbox.nodeplane` in the background (control
plane, node, NetworkPolicy engine), then deploys what a cluster would have: the cluster DNS (CoreDNS behind
``kube-system/kube-dns``), Contour's release manifest as it is (:func:`chaoscontour_sandbox.deploy.deploy_contour`),
the demo backend (agnhost behind the HTTPProxy ``demo/echo``), a static PersistentVolume for the game day's journals
and the game-day runner image; it waits until a request through Envoy answers 200 and writes ``settings.env`` /
``settings.json``, the settings the experiments read.

Host safety: ``up`` writes :data:`MARKER` into the sandbox dir and records the background process by PID, start time
and command line (:func:`chaoscontour_sandbox.process.identity`); ``down`` refuses a directory without the marker,
signals only the process it recorded, and removes only the node's own objects
(:func:`chaoscontour_sandbox.nodehost.clean`). ``down`` of a directory that is gone is success.
"""

from __future__ import annotations

import contextlib
import json
import shutil
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from chaoscontour_sandbox import (
    applier,
    binaries,
    collector,
    deploy,
    dns,
    gateway,
    manifests,
    metrics,
    nodehost,
    nodeimages,
    nodeplane,
    workloads,
)
from chaoscontour_sandbox.deploy import SandboxError
from chaoscontour_sandbox.kubeapi import KubeApi
from chaoscontour_sandbox.process import Process, identity, is_same, stop_pid
from chaoscontour_sandbox.settings import SETTINGS_ENV, SETTINGS_JSON, experiment_settings, write_settings

__all__ = ["MARKER", "apply_manifests", "delete_manifests", "down", "load", "node_images", "switch_mode", "up"]

MARKER = ".chaoscontour-sandbox"
HOLDER = "chaoscontour_sandbox.nodeplane"  # the background process's module, in its command line
STATE_FILE = "state.json"
VOLUMES_DIR = "volumes"
PLANE_TIMEOUT_S = 300.0
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 60.0
Say = Callable[[str], None]


def clock(began: float | None = None) -> Say:
    """A progress printer that shows the seconds since ``began`` (default: now)."""
    began = time.monotonic() if began is None else began

    def say(message: str) -> None:
        print(f"[{time.monotonic() - began:6.1f}s] {message}", flush=True)

    return say


def read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _preflight(directory: Path) -> None:
    missing = nodehost.missing_tools()
    if missing:
        raise SandboxError(f"the sandbox needs Debian's {', '.join(missing)}: apt-get install -y {' '.join(missing)}")
    if is_same(read_json(directory / STATE_FILE).get("nodeplane") or {}, HOLDER):
        raise SandboxError(f"a sandbox is already up in {directory}; run `chaoscontour-sandbox down` first")
    left = nodehost.leftovers(nodeplane.layout_for(directory))
    if any(left.values()):
        raise SandboxError(
            f"a sandbox node's objects already exist on this host ({', '.join(k for k, v in left.items() if v)}); "
            "another sandbox may be up (one per host): run `chaoscontour-sandbox down --dir <its dir>` first"
        )
    if directory.exists() and any(directory.iterdir()) and not (directory / MARKER).exists():
        raise SandboxError(f"{directory} is not empty and holds no sandbox: choose an empty or new directory")


def up(
    directory: Path,
    mode: str,
    user: manifests.Plan | None = None,
    runner: Callable[[Say], Path | None] | None = None,
    with_gateway: bool = False,
) -> dict[str, str]:
    """Bring the sandbox up in ``directory`` with NetworkPolicy ``mode``; return the settings written.

    ``user``: a user's manifests, checked already, applied once the demo route answers. ``runner``: builds the
    game-day runner image's archive (loaded into the node before the game day can run). ``with_gateway``: also
    Contour provisioned through Gateway API (:mod:`chaoscontour_sandbox.gateway`), its settings in
    ``settings-gateway.env``."""
    began = time.monotonic()
    say = clock(began)
    _preflight(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / MARKER).write_text("a chaoscontour-sandbox; `chaoscontour-sandbox down --dir` removes it\n")
    wanted = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kubelet", "kube-proxy"]
    wanted += ["contour", "coredns", "agnhost", "kube-network-policies", "pause", "otelcol"]
    say(f"binaries: {', '.join(wanted)}, envoy")
    binaries.ensure_binaries(wanted, progress=lambda m: say("  " + m))
    archive = runner(say) if runner else None
    log = directory / "logs" / "nodeplane.log"
    argv = [sys.executable, "-m", HOLDER, "--dir", str(directory), "--mode", mode]
    holder = Process.start("the node and control plane", argv, log, header=False)
    holder.close_log()
    state: dict[str, Any] = {"dir": str(directory), "mode": mode, "nodeplane": identity(holder.pid)}
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1))
    shown = 0

    def check() -> None:
        if holder.poll() is not None:
            raise SandboxError(holder.exited_message())

    def plane_ready() -> dict[str, Any]:
        nonlocal shown
        with contextlib.suppress(OSError):
            lines = log.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                say("  " + line)
            shown = len(lines)
        check()
        return read_json(directory / nodeplane.READY_FILE)

    ready = deploy.wait_for("the control plane and the node", PLANE_TIMEOUT_S, plane_ready)
    api = KubeApi(directory / "kubeconfig")
    if archive is not None:
        load(directory, [archive], say)
    deploy.apply_objects(api, dns.coredns_objects(ready["cluster_dns"], ready["cluster_domain"]))

    def coredns_ready() -> list[dict[str, Any]]:
        check()
        return [p for p in deploy.pods(api, dns.NAMESPACE, dns.COREDNS_SELECTOR) if deploy.pod_ready(p)]

    deploy.wait_for("CoreDNS Ready", READY_TIMEOUT_S, coredns_ready)
    say(f"cluster DNS: kube-system/kube-dns {ready['cluster_dns']}")
    deploy.deploy_contour(api, say, check, READY_TIMEOUT_S)
    deploy.apply_objects(api, workloads.demo_objects())
    volume = directory / VOLUMES_DIR / "sandbox-local-1"
    volume.mkdir(parents=True, exist_ok=True)
    volume.chmod(0o777)  # as a local-path provisioner's volumes: writable by whatever user the pod runs as
    deploy.apply_objects(api, workloads.storage_objects(str(volume)))
    say("applied: demo/echo (agnhost netexec, 2 replicas) + HTTPProxy echo, PersistentVolume sandbox-local-1")
    ip = deploy.wait_serving(api, say, check, READY_TIMEOUT_S)
    url = f"http://{ip}:8080/"
    deploy.wait_for(
        f"{url} (Host {workloads.ECHO_FQDN}) to answer 200",
        READY_TIMEOUT_S,
        lambda: applier.route_answers(url, workloads.ECHO_FQDN),
    )
    settings = experiment_settings(directory / "kubeconfig", ip, mode)
    settings["PROMETHEUS_URL"] = ready["prometheus_url"]
    settings["PROMETHEUS_SCRAPE_INTERVAL_S"] = str(metrics.SCRAPE_INTERVAL_S)
    settings["OTEL_EXPORTER_OTLP_ENDPOINT"] = ready["otlp_endpoint"]
    settings.update(_demo_route(url))
    if user is not None:
        _check_images(directory, user)
        settings.update(applier.serve(api, user, url, say, stats_url=settings["ENVOY_STATS_URL"]))
    write_settings(directory, settings)
    if with_gateway:
        gateway_ip = gateway.deploy_gateway(api, directory / "kubeconfig", say, check, READY_TIMEOUT_S)
        write_settings(directory, gateway.gateway_settings(settings, gateway_ip), stem=gateway.SETTINGS)
        say(f"gateway settings: {directory / gateway.SETTINGS}.env")
    state.update(envoy_url=url, apiserver=ready["url"], up_s=round(time.monotonic() - began, 1))
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1))
    say(f"ready: curl -H 'Host: {settings['ENVOY_HOST']}' {settings['ENVOY_URL']}")
    say(f"settings: {directory / SETTINGS_ENV} (e.g. `set -a; . {directory / SETTINGS_ENV}; set +a`)")
    return settings


def _demo_route(envoy_url: str) -> dict[str, str]:
    return manifests.route_settings(workloads.demo_objects(), f"{workloads.DEMO_NAMESPACE}/echo", envoy_url)


# --- a running sandbox ----------------------------------------------------------------------------------------------


def running(directory: Path) -> tuple[KubeApi, dict[str, Any]]:
    """The API and state of the sandbox up in ``directory``; a clear error if none is."""
    state = read_json(directory / STATE_FILE)
    if not is_same(state.get("nodeplane") or {}, HOLDER) or not state.get("envoy_url"):
        raise SandboxError(f"no sandbox is up in {directory}; run `chaoscontour-sandbox up` first")
    return KubeApi(directory / "kubeconfig"), state


def _ctr(directory: Path, *args: str, timeout_s: float = 300.0) -> subprocess.CompletedProcess[str]:
    socket = nodeplane.layout_for(directory).containerd_socket
    argv = ["ctr", "--address", str(socket), "--namespace", "k8s.io", *args]
    return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout_s)


def node_images(directory: Path) -> list[str]:
    """The references of the images the node has (what the kubelet can run without a registry)."""
    done = _ctr(directory, "images", "list", "--quiet", timeout_s=30)
    if done.returncode != 0:
        raise SandboxError(f"cannot list the node's images: {done.stderr.strip()}")
    return sorted(line for line in done.stdout.splitlines() if line and not line.startswith("sha256:"))


def load(directory: Path, archives: Sequence[Path], say: Say | None = None) -> list[str]:
    """``sandbox load``: import image archives (OCI layout or ``docker save`` tars) into the node, as ``kind load
    image-archive``; return the references the node has afterwards."""
    for archive in archives:
        if not archive.is_file():
            raise SandboxError(f"{archive}: no such file (an image archive, e.g. from `docker save IMAGE -o FILE`)")
    before = set(node_images(directory))
    for archive in archives:
        done = _ctr(directory, "images", "import", "--all-platforms", str(archive))
        if done.returncode != 0:
            raise SandboxError(f"{archive}: not an image archive containerd can import: {done.stderr.strip()}")
    after = node_images(directory)
    if say:
        for ref in sorted(set(after) - before) or ["(no new reference: already loaded)"]:
            say(f"loaded: {ref}")
    return after


def _check_images(directory: Path, plan: manifests.Plan) -> None:
    missing = nodeimages.unavailable_images(plan, node_images(directory))
    if missing:
        raise SandboxError(
            "the sandbox has no registry, and the node lacks these images:\n  "
            + "\n  ".join(missing)
            + "\nload them first: `chaoscontour-sandbox load IMAGE.tar` (e.g. from `docker save IMAGE -o IMAGE.tar`)"
        )


def apply_manifests(directory: Path, dirs: Sequence[Path], namespace: str, route: str) -> None:
    """``sandbox apply``: the user's manifests on a running sandbox, as ``up --manifests`` applies them."""
    api, state = running(directory)
    user = manifests.check(dirs, namespace=namespace, route=route, existing=applier.existing_namespaces(api))
    _check_images(directory, user)
    say = clock()
    stats_url = read_json(directory / SETTINGS_JSON).get("ENVOY_STATS_URL", "")
    routed = applier.serve(api, user, state["envoy_url"], say, stats_url=stats_url)
    if routed:
        write_settings(directory, {**read_json(directory / SETTINGS_JSON), **routed})
        say(f"settings: {directory / SETTINGS_ENV} now point at {route}")


def delete_manifests(directory: Path, dirs: Sequence[Path], namespace: str) -> None:
    """``sandbox delete``: remove what ``apply`` applied from the same manifests; the settings go back to the demo
    route if they pointed at an HTTPProxy removed here."""
    api, state = running(directory)
    declared = [d.name for d in manifests.load(dirs) if d.obj.get("kind") == "Namespace"]
    user = manifests.check(dirs, namespace=namespace, existing=[*applier.existing_namespaces(api), *declared])
    applier.delete(api, user, clock())
    settings = read_json(directory / SETTINGS_JSON)
    removed = {f"{d.namespace}/{d.name}" for d in user.of_kind("HTTPProxy")}
    if settings and f"{settings.get('ROUTE_NAMESPACE')}/{settings.get('ROUTE_HTTPPROXY')}" in removed:
        write_settings(directory, {**settings, **_demo_route(state["envoy_url"])})
        print(f"settings: {directory / SETTINGS_ENV} point at the demo route again", flush=True)


def switch_mode(directory: Path, mode: str) -> None:
    """Switch a running sandbox's NetworkPolicy mode; returns once the node applied it."""
    _, state = running(directory)
    applied = directory / (nodeplane.MODE_FILE + ".applied")
    (directory / nodeplane.MODE_FILE).write_text(mode + "\n")
    deploy.wait_for(
        f"the node to switch to NetworkPolicy mode {mode}",
        15.0,
        lambda: applied.exists() and applied.read_text().strip() == mode,
    )
    (directory / STATE_FILE).write_text(json.dumps({**state, "mode": mode}, indent=1))
    settings = read_json(directory / SETTINGS_JSON)
    if settings:
        write_settings(directory, {**settings, "SANDBOX_NETPOL_MODE": mode})
    print(f"NetworkPolicy mode: {mode}")


# --- down -----------------------------------------------------------------------------------------------------------


def down(directory: Path, *, keep_logs: bool = False) -> None:
    """Stop the sandbox in ``directory`` and remove what it created. Idempotent; refuses a dir that is no sandbox's."""
    say = clock()
    if not directory.exists():
        say(f"no sandbox in {directory}: nothing to do")
        return
    if not (directory / MARKER).exists():
        raise SandboxError(f"{directory} holds no sandbox (no {MARKER} written by `up`): nothing removed")
    recorded = read_json(directory / STATE_FILE).get("nodeplane") or {}
    if is_same(recorded, HOLDER):
        stop_pid(int(recorded["pid"]), STOP_TIMEOUT_S, say=say, name="the node and control plane")
    layout = nodeplane.layout_for(directory)
    if any(nodehost.leftovers(layout).values()):
        say(f"removing what the node left: {nodehost.leftovers(layout)}")
        nodehost.clean(layout)
    for name in ("controlplane", "images", VOLUMES_DIR, metrics.DATA_DIR):
        shutil.rmtree(directory / name, ignore_errors=True)
    kept = {layout.logs_dir, layout.pod_logs_dir} if keep_logs else set()
    if layout.directory.exists():
        for child in layout.directory.iterdir():
            if child not in kept:
                shutil.rmtree(child, ignore_errors=True) if child.is_dir() else child.unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            layout.directory.rmdir()
    ours = [STATE_FILE, nodeplane.READY_FILE, nodeplane.MODE_FILE, SETTINGS_ENV, SETTINGS_JSON, "kubeconfig"]
    ours += [f"{gateway.SETTINGS}.env", f"{gateway.SETTINGS}.json"]
    for name in (*ours, nodeplane.MODE_FILE + ".applied", collector.CONFIG_FILE):
        (directory / name).unlink(missing_ok=True)
    if not keep_logs:
        shutil.rmtree(directory / "logs", ignore_errors=True)
    # The marker stays while the dir holds anything else (kept logs, a demo's journals): it is still a sandbox's.
    if not [child for child in directory.iterdir() if child.name != MARKER]:
        (directory / MARKER).unlink(missing_ok=True)
        directory.rmdir()
    remaining = nodehost.leftovers(layout)
    if any(remaining.values()):
        raise SandboxError(f"could not remove everything: {remaining}")
    say("sandbox down" + (f"; logs kept in {directory / 'logs'}" if keep_logs else ""))
