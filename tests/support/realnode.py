"""A real node for tests: a control plane in its own network namespace and Kubernetes' kubelet on containerd.

The node uses its own names and networks (``ccnode*``, 10.216-218.0.0/24), so it can run beside the e2e suite's
sandbox. :func:`start_real_node` is the body of a module-scoped fixture; the helpers make agnhost pods and wait.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client

from chaoscontour_sandbox import binaries, nodehost, nodeimages, nodeplane
from chaoscontour_sandbox.controlplane import ControlPlane
from chaoscontour_sandbox.kubeapi import KubeApi
from chaoscontour_sandbox.node import Node
from chaoscontour_sandbox.nodeconfig import NodeLayout
from tests.support.ci import unavailable
from tests.support.waiting import wait_for

NS = "default"
NODE_BINARIES = ("kubelet", "kube-proxy", "pause", "agnhost", "kube-network-policies", "kube-scheduler")


class RealNode:
    def __init__(self, layout: NodeLayout, node: Node, plane: ControlPlane, core: client.CoreV1Api) -> None:
        self.layout, self.node, self.plane, self.core = layout, node, plane, core


def start_real_node(tmp_path_factory: pytest.TempPathFactory, images: Sequence[str]) -> Iterator[RealNode]:
    """Start a control plane and a real node with the images made of ``images`` (names of
    :data:`chaoscontour_sandbox.nodeimages.IMAGES`); yield it; stop both and clean the host."""
    if os.geteuid() != 0:
        unavailable("the real node needs root (containerd, cgroups, network namespaces, iptables)")
    missing_tools = nodehost.missing_tools()
    if missing_tools:
        unavailable(f"the real node needs Debian's {', '.join(missing_tools)}")
    missing = [name for name in {*NODE_BINARIES, *images} - {"envoy"} if binaries.find_binary(name) is None]
    if missing:
        unavailable(f"{', '.join(missing)} not built: run `chaoscontour-sandbox binaries build`")
    found = {name: binaries.find_binary(name) for name in {*NODE_BINARIES, *images} - {"envoy"}}
    if "envoy" in images:
        found["envoy"] = nodeimages.envoy_elf()
    directory = tmp_path_factory.mktemp("realnode")
    layout = NodeLayout(
        directory / "node",
        "realnode",
        node_network="10.216.0.0/24",
        pod_cidr="10.217.0.0/24",
        service_cidr="10.218.0.0/24",
    )
    netns = nodehost.create_control_plane_netns(layout)
    say = lambda message: print(f"\n{message}", flush=True)  # noqa: E731
    plane = ControlPlane(
        workdir=directory / "controlplane",
        bind_address=layout.control_plane_ip,
        netns=netns,
        controller_manager=True,
        scheduler=True,
        service_cidr=layout.service_cidr,
        progress=say,
    )
    node = Node(layout, kubelet=found["kubelet"], kube_proxy=found["kube-proxy"], progress=say)  # type: ignore[arg-type]
    try:
        plane.start()
        archives = nodeimages.write_archives(
            {name: found[name] for name in images},  # type: ignore[misc]
            directory / "images",
        )
        pki = plane.pki_dir
        node.start(plane.url, (pki / "ca.crt").read_bytes(), (pki / "ca.key").read_bytes(), plane.kubeconfig, archives)
        with plane.api_client() as api:
            core = client.CoreV1Api(api)
            # kube-controller-manager creates each namespace's `default` ServiceAccount a moment after it starts.
            wait_for("ServiceAccount default/default", 60, lambda: core.list_namespaced_service_account(NS).items)
            yield RealNode(layout, node, plane, core)
    finally:
        node.stop()
        plane.stop()
        nodehost.clean(layout)


def agnhost_pod(name: str, args: list[str], **spec: Any) -> dict[str, Any]:
    container = {
        "name": "agnhost",
        "image": nodeimages.AGNHOST_IMAGE,
        "imagePullPolicy": "Never",
        "args": args,
        **spec.pop("container", {}),
    }
    return {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {"name": name, "labels": {"app": name}},
        "spec": {"containers": [container], "terminationGracePeriodSeconds": 1, **spec},
    }


def running_pod(core: client.CoreV1Api, name: str, timeout_s: float = 90) -> client.V1Pod:
    def ready() -> client.V1Pod | None:
        pod = core.read_namespaced_pod(name, NS)
        conditions = pod.status.conditions or []
        return pod if any(c.type == "Ready" and c.status == "True" for c in conditions) else None

    return wait_for(f"pod {name} Ready", timeout_s, ready)


def processes(program: str, argument: str) -> list[int]:
    """PIDs whose command line runs ``program`` (by its last path element) with ``argument`` among its words."""
    found = []
    for proc in Path("/proc").iterdir():
        if proc.name.isdigit():
            try:
                argv = proc.joinpath("cmdline").read_bytes().decode(errors="replace").split("\0")
            except OSError:
                continue
            if argv[0].rsplit("/", 1)[-1] == program and argument in argv:
                found.append(int(proc.name))
    return found


def block_policy(name: str, app: str, target_ip: str) -> dict[str, Any]:
    """What the experiments' fault amounts to: the selected pods may send anywhere but to ``target_ip``."""
    return {
        "apiVersion": "networking.k8s.io/v1",
        "kind": "NetworkPolicy",
        "metadata": {"name": name},
        "spec": {
            "podSelector": {"matchLabels": {"app": app}},
            "policyTypes": ["Egress"],
            "egress": [{"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": [f"{target_ip}/32"]}}]}],
        },
    }


def start_engine(real_node: RealNode) -> None:
    """kube-network-policies on the node, as the sandbox starts it."""
    nodeplane.start_network_policy_engine(real_node.node, KubeApi(real_node.plane.kubeconfig), timeout_s=90)


def reap_once(real_node: RealNode) -> str:
    """One round of the per-packet reaper; its output."""
    argv = [sys.executable, "-m", "chaoscontour_sandbox.reaper", "--once", "--node", real_node.layout.name]
    argv += ["--kubeconfig", str(real_node.plane.kubeconfig)]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=True)
    return done.stdout + done.stderr
