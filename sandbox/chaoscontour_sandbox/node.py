"""A real Kubernetes node on this host: containerd and runc, the CNI plugins, Kubernetes' own kubelet and kube-proxy.

One object with :meth:`Node.start` / :meth:`Node.stop` (and a context manager), as envtest's control plane is::

    with Node(layout, kubelet=..., kube_proxy=...) as node:
        node.start(apiserver_url, ca_cert_pem, ca_key_pem, images=[archive, ...])
        ...

``start`` writes the configuration files of :mod:`chaoscontour_sandbox.nodeconfig` into the layout's directory,
prepares the host (forwarding, the kubelet's cgroup root, the masquerade chain: :mod:`chaoscontour_sandbox.nodehost`),
starts containerd on its own socket, imports the image archives, starts the kubelet and waits until its Node is
Ready, then starts kube-proxy and waits for its health endpoint. Each step announces itself; a failure names the
step and the log to read. ``stop`` removes the pods, stops the three programs and removes everything
:func:`~chaoscontour_sandbox.nodehost.leftovers` can see; it is idempotent and runs on every exit path of ``start``.
"""

from __future__ import annotations

import atexit
import contextlib
import subprocess
import time
import urllib.request
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from types import TracebackType

import yaml

from chaoscontour_sandbox import controlplane_flags, nodeconfig, nodehost, pki
from chaoscontour_sandbox.kubeapi import ApiError, KubeApi
from chaoscontour_sandbox.nodeconfig import NodeLayout
from chaoscontour_sandbox.process import Process, ProcessExited, ProcessTimeout

__all__ = ["Node", "NodeError"]

Progress = Callable[[str], None]
STOP_GRACE_S = 10.0


class NodeError(RuntimeError):
    """The node could not start: the message names the step and the log to read."""


class Node:
    """containerd, kubelet and kube-proxy for one :class:`~chaoscontour_sandbox.nodeconfig.NodeLayout`."""

    def __init__(
        self,
        layout: NodeLayout,
        *,
        kubelet: Path,
        kube_proxy: Path,
        progress: Progress = print,
        ready_timeout_s: float = 120.0,
    ) -> None:
        self.layout = layout
        self.kubelet_binary = kubelet
        self.kube_proxy_binary = kube_proxy
        self.progress = progress
        self.ready_timeout_s = ready_timeout_s
        self.processes: dict[str, Process] = {}
        self._admin: KubeApi | None = None

    # --- life cycle ------------------------------------------------------------------------------------------------

    def __enter__(self) -> Node:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(
        self,
        apiserver_url: str,
        ca_cert_pem: bytes,
        ca_key_pem: bytes,
        admin_kubeconfig: Path,
        images: Sequence[Path] = (),
    ) -> Node:
        """Start the node against the control plane at ``apiserver_url`` whose CA is given (the node's client
        certificates are signed with it); ``admin_kubeconfig`` is used to watch the Node become Ready.
        ``images``: OCI archives imported before the kubelet starts (the pause image among them)."""
        missing = nodehost.missing_tools()
        if missing:
            raise NodeError(f"the node needs Debian's {', '.join(missing)}: apt-get install -y {' '.join(missing)}")
        atexit.register(self.stop)
        try:
            self._admin = KubeApi(admin_kubeconfig)
            self._step("configuration", lambda: self._write_files(apiserver_url, ca_cert_pem, ca_key_pem))
            self._step("host", self._prepare_host)
            self._step("containerd", self._start_containerd)
            for archive in images:
                self._step(f"image {archive.name}", partial(self._import, archive))
            self._step("kubelet", self._start_kubelet)
            self._step("kube-proxy", self._start_kube_proxy)
        except BaseException:
            self.stop()
            raise
        return self

    def _step(self, name: str, action: Callable[[], object]) -> None:
        began = time.monotonic()
        try:
            action()
        except (ProcessExited, ProcessTimeout, nodehost.NodeHostError, ApiError, OSError) as exc:
            raise NodeError(f"node {self.layout.name}: {name} failed: {exc}") from exc
        self.progress(f"node {self.layout.name}: {name} ready in {time.monotonic() - began:.1f} s")

    def stop(self) -> None:
        """Remove the pods, stop kube-proxy (and its rules), the kubelet and containerd, and remove what they left
        on the host. Idempotent."""
        atexit.unregister(self.stop)
        began = time.monotonic()
        proxy = self.processes.pop("kube-proxy", None)
        if proxy is not None:
            proxy.stop(STOP_GRACE_S)
        kubelet = self.processes.pop("kubelet", None)
        if kubelet is not None:
            kubelet.stop(STOP_GRACE_S)
        containerd = self.processes.pop("containerd", None)
        if containerd is not None and containerd.running:
            self._remove_containers()
        if containerd is not None:
            containerd.stop(STOP_GRACE_S)
        if self.layout.kube_proxy_config_file.exists():
            # kube-proxy's own clean-up of its iptables rules; what it misses, nodehost.clean removes.
            subprocess.run(
                [str(self.kube_proxy_binary), "--cleanup", *nodeconfig.kube_proxy_args(self.layout)],
                capture_output=True,
                check=False,
                timeout=60,
            )
        nodehost.clean(self.layout)
        if proxy or kubelet or containerd:
            self.progress(f"node {self.layout.name}: stopped in {time.monotonic() - began:.1f} s")

    # --- steps -----------------------------------------------------------------------------------------------------

    def _write_files(self, apiserver_url: str, ca_cert_pem: bytes, ca_key_pem: bytes) -> None:
        layout = self.layout
        for directory in (layout.config_dir, layout.logs_dir, layout.cni_conf_dir, layout.containerd_dir):
            directory.mkdir(parents=True, exist_ok=True)
        layout.containerd_config_file.write_text(nodeconfig.containerd_config(layout))
        (layout.cni_conf_dir / f"10-{layout.prefix}.conflist").write_text(nodeconfig.cni_conflist(layout))
        layout.ca_file.write_bytes(ca_cert_pem)
        # Pods with dnsPolicy Default get the node's resolver: this sandbox has none to offer, so fail fast.
        layout.resolv_conf.write_text("nameserver 127.0.0.1\noptions timeout:1 attempts:1\n")
        layout.kubelet_config_file.write_text(yaml.safe_dump(nodeconfig.kubelet_config(layout), sort_keys=False))
        layout.kube_proxy_config_file.write_text(yaml.safe_dump(nodeconfig.kube_proxy_config(layout), sort_keys=False))
        ca = pki.CertificateAuthority.from_pem(ca_cert_pem, ca_key_pem)
        # The identities Kubernetes' Node authorizer and default RBAC expect of a kubelet and of kube-proxy.
        identities = {
            layout.kubelet_kubeconfig: ca.issue(
                f"system:node:{layout.name}", organizations=["system:nodes"], client=True
            ),
            layout.kube_proxy_kubeconfig: ca.issue("system:kube-proxy", client=True),
        }
        for path, pair in identities.items():
            controlplane_flags.write_client_kubeconfig(path, apiserver_url, ca_cert_pem, path.stem, pair)

    def _prepare_host(self) -> None:
        nodehost.enable_forwarding()
        nodehost.create_cgroup_roots(self.layout)
        nodehost.install_chain("nat", self.layout.masquerade_chain, nodeconfig.masquerade_rules(self.layout))

    def _launch(self, name: str, argv: Sequence[str]) -> Process:
        proc = Process.start(name, argv, self.layout.logs_dir / f"{name}.log")
        self.processes[name] = proc
        return proc

    def _watched(self) -> list[Process]:
        return list(self.processes.values())

    def _ctr(self, *args: str, timeout_s: float = 60.0) -> subprocess.CompletedProcess[str]:
        argv = ["ctr", "--address", str(self.layout.containerd_socket), "--namespace", "k8s.io", *args]
        return subprocess.run(argv, capture_output=True, text=True, check=False, timeout=timeout_s)

    def _start_containerd(self) -> None:
        proc = self._launch("containerd", ["containerd", "--config", str(self.layout.containerd_config_file)])
        proc.wait_ready(
            lambda: self._ctr("version", timeout_s=5).returncode == 0,
            30.0,
            what=f"containerd answering on {self.layout.containerd_socket}",
            watch=self._watched(),
        )

    def _import(self, archive: Path) -> None:
        done = self._ctr("images", "import", str(archive), timeout_s=300)
        if done.returncode != 0:
            raise nodehost.NodeHostError(f"`ctr images import {archive}` failed: {done.stderr.strip()}")

    def hook_network_policy_engine(self, queue_id: int) -> None:
        """Hand pods' new connections to the NetworkPolicy engine reading NFQUEUE ``queue_id``
        (:func:`~chaoscontour_sandbox.nodeconfig.network_policy_hook_rules` says why the node does it)."""
        rules = nodeconfig.network_policy_hook_rules(self.layout, queue_id)
        nodehost.install_chain("mangle", self.layout.network_policy_chain, rules)

    def unhook_network_policy_engine(self) -> None:
        nodehost.remove_chain("mangle", self.layout.network_policy_chain)

    def images(self) -> list[str]:
        """The references of the images the node's containerd has (what the kubelet can run)."""
        done = self._ctr("images", "list", "--quiet")
        return sorted(line for line in done.stdout.splitlines() if line and not line.startswith("sha256:"))

    def _start_kubelet(self) -> None:
        proc = self._launch("kubelet", [str(self.kubelet_binary), *nodeconfig.kubelet_args(self.layout)])
        proc.wait_ready(
            self._node_ready, self.ready_timeout_s, what=f"Node {self.layout.name} Ready", watch=self._watched()
        )

    def _node_ready(self) -> bool:
        assert self._admin is not None
        try:
            node = self._admin.get(f"/api/v1/nodes/{self.layout.name}")
        except ApiError as exc:
            if exc.status == 404:
                return False
            raise
        return any(
            c.get("type") == "Ready" and c.get("status") == "True" for c in node.get("status", {}).get("conditions", [])
        )

    def _start_kube_proxy(self) -> None:
        proc = self._launch("kube-proxy", [str(self.kube_proxy_binary), *nodeconfig.kube_proxy_args(self.layout)])

        def healthy() -> bool:
            with urllib.request.urlopen("http://127.0.0.1:10256/healthz", timeout=2.0) as answer:
                return bool(answer.status == 200)

        proc.wait_ready(healthy, 60.0, what="kube-proxy's /healthz answering 200", watch=self._watched())

    def _remove_containers(self) -> None:
        """Kill every task and delete every container of the node's containerd (the kubelet is stopped first, so
        nothing restarts them); the CNI namespaces and veths they leave go in :func:`nodehost.clean`."""
        with contextlib.suppress(subprocess.TimeoutExpired):
            tasks = self._ctr("tasks", "list", "--quiet").stdout.split()
            for task in tasks:
                self._ctr("tasks", "kill", "--signal", "SIGKILL", task, timeout_s=10)
            deadline = time.monotonic() + 10.0
            while time.monotonic() < deadline:
                if not any(line.split()[2:3] == ["RUNNING"] for line in self._ctr("tasks", "list").stdout.splitlines()):
                    break
                time.sleep(0.2)
            for task in tasks:
                self._ctr("tasks", "delete", "--force", task, timeout_s=10)
            for container in self._ctr("containers", "list", "--quiet").stdout.split():
                self._ctr("containers", "delete", container, timeout_s=10)
