"""The harness itself: a real kube-apiserver that enforces RBAC, maintains `default/kubernetes`, serves Contour's
CRDs -- and a control plane that leaves nothing behind on any exit path."""

from __future__ import annotations

import contextlib
import json
import os
import socket
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from kubernetes import client, config
from kubernetes.client.rest import ApiException

from chaoscontour_sandbox import versions
from chaoscontour_sandbox.controlplane import STOP_GRACE_S, ControlPlane, ControlPlaneError
from tests.support import identities


def process_exists(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # A zombie is gone for every purpose but its table entry; the control plane reaps its children, so none expected.
    return True


def listening(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def assert_nothing_left(pids: dict[str, int], ports: dict[str, int], tmp: Path) -> None:
    assert pids, "the control plane recorded no process"
    alive = {name: pid for name, pid in pids.items() if process_exists(pid)}
    assert not alive, f"processes left running: {alive}"
    open_ports = {name: port for name, port in ports.items() if listening(port)}
    assert not open_ports, f"ports still listening: {open_ports}"
    assert list(tmp.iterdir()) == [], f"temp dir not removed: {list(tmp.iterdir())}"


@pytest.fixture
def private_tmp(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """Make the control plane's default temp dir land in an empty folder that the test can inspect."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_api_server_answers_with_the_pinned_version(api: client.ApiClient) -> None:
    info = client.VersionApi(api).get_code()
    assert info.git_version == f"v{versions.KUBERNETES}"
    namespaces: list[Any] = client.CoreV1Api(api).list_namespace().items
    names = {ns.metadata.name for ns in namespaces}
    assert {"default", "kube-system"} <= names


def test_rbac_denies_a_service_account_what_it_was_not_granted(
    control_plane: ControlPlane, api: client.ApiClient, namespace: str
) -> None:
    kubeconfig = identities.service_account_kubeconfig(control_plane, namespace, "reader")
    with config.new_client_from_config(config_file=str(kubeconfig)) as sa_api:
        sa_core = client.CoreV1Api(sa_api)
        with pytest.raises(ApiException) as denied:
            sa_core.list_namespaced_pod(namespace)
        assert denied.value.status == 403
        assert f"system:serviceaccount:{namespace}:reader" in str(denied.value.body)

        rbac = client.RbacAuthorizationV1Api(api)
        role: Any = {
            "metadata": {"name": "pod-reader"},
            "rules": [{"apiGroups": [""], "resources": ["pods"], "verbs": ["list"]}],
        }
        rbac.create_namespaced_role(namespace, role)
        binding: Any = {
            "metadata": {"name": "pod-reader"},
            "roleRef": {"apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": "pod-reader"},
            "subjects": [{"kind": "ServiceAccount", "name": "reader", "namespace": namespace}],
        }
        rbac.create_namespaced_role_binding(namespace, binding)
        # The RBAC authorizer sees new bindings through its informer cache: allow it a moment to catch up.
        deadline = time.monotonic() + 10
        while True:
            try:
                listed = sa_core.list_namespaced_pod(namespace)
                break
            except ApiException as exc:
                if exc.status != 403 or time.monotonic() > deadline:
                    raise
                time.sleep(0.1)
        assert listed.items == []
        with pytest.raises(ApiException) as still_denied:
            sa_core.list_namespaced_secret(namespace)
        assert still_denied.value.status == 403


def test_kubernetes_service_endpoints_carry_the_advertise_address(
    control_plane: ControlPlane, api: client.ApiClient
) -> None:
    assert not control_plane.advertise_address.startswith("127."), "loopback cannot be an endpoint address"
    service: Any = client.CoreV1Api(api).read_namespaced_service("kubernetes", "default")
    assert service.spec.cluster_ip == control_plane.service_ip == "10.0.0.1"
    discovery = client.DiscoveryV1Api(api)
    deadline = time.monotonic() + 20
    while True:
        slices = discovery.list_namespaced_endpoint_slice(
            "default", label_selector="kubernetes.io/service-name=kubernetes"
        ).items
        addresses = [a for s in slices for e in s.endpoints or [] for a in e.addresses]
        if addresses or time.monotonic() > deadline:
            break
        time.sleep(0.5)
    assert addresses == [control_plane.advertise_address]
    assert [p.port for s in slices for p in s.ports or []] == [control_plane.ports["apiserver"]]


def test_contour_crds_install_and_are_served_with_their_schema(
    api: client.ApiClient, contour_crds: list[str], namespace: str
) -> None:
    assert {"httpproxies.projectcontour.io", "tlscertificatedelegations.projectcontour.io"} <= set(contour_crds)
    assert "extensionservices.projectcontour.io" in contour_crds
    custom = client.CustomObjectsApi(api)
    proxy = {
        "apiVersion": "projectcontour.io/v1",
        "kind": "HTTPProxy",
        "metadata": {"name": "web"},
        "spec": {
            "virtualhost": {"fqdn": "web.example.test"},
            "routes": [{"services": [{"name": "web", "port": 80}]}],
        },
    }
    custom.create_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies", proxy)
    listed: Any = custom.list_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies")
    assert [item["metadata"]["name"] for item in listed["items"]] == ["web"]
    # The structural schema is enforced: a port outside 1..65535 is refused by the API server itself.
    bad = dict(proxy, metadata={"name": "bad"}, spec={"routes": [{"services": [{"name": "web", "port": 0}]}]})
    with pytest.raises(ApiException) as refused:
        custom.create_namespaced_custom_object("projectcontour.io", "v1", namespace, "httpproxies", bad)
    assert refused.value.status == 422


def test_stop_after_a_raising_with_block_leaves_no_process_port_or_temp_dir(
    private_tmp: Path, require: Callable[..., None]
) -> None:
    require("kube-scheduler")
    plane = ControlPlane(controller_manager=True, scheduler=True, progress=print)
    with pytest.raises(RuntimeError, match="boom"), plane:
        assert set(plane.pids) == {"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler"}
        assert {"controller-manager", "scheduler"} <= set(plane.ports)
        assert all(process_exists(pid) for pid in plane.pids.values())
        assert plane.kubeconfig.is_file()
        stopping = time.monotonic()
        raise RuntimeError("boom")
    # Each process stopped on SIGTERM, well before the grace period that ends in SIGKILL.
    assert time.monotonic() - stopping < STOP_GRACE_S
    assert_nothing_left(plane.pids, plane.ports, private_tmp)


def test_a_failing_start_reports_the_log_tail_and_leaves_nothing(private_tmp: Path) -> None:
    plane = ControlPlane(apiserver_args=["--no-such-flag=1"], progress=print)
    with pytest.raises(ControlPlaneError) as failed:
        plane.start()
    assert "kube-apiserver exited" in str(failed.value)
    assert "unknown flag: --no-such-flag" in str(failed.value)
    assert set(plane.pids) == {"etcd", "kube-apiserver"}
    assert_nothing_left(plane.pids, plane.ports, private_tmp)


def test_ctrl_c_during_start_leaves_nothing(private_tmp: Path) -> None:

    def interrupt_when_ready(message: str) -> None:
        if "ready in" in message:
            raise KeyboardInterrupt

    plane = ControlPlane(progress=interrupt_when_ready)
    with pytest.raises(KeyboardInterrupt):
        plane.start()
    assert_nothing_left(plane.pids, plane.ports, private_tmp)


def test_interpreter_exit_without_stop_leaves_nothing(tmp_path: Path) -> None:
    script = textwrap.dedent(
        """
        import json, sys, tempfile
        tempfile.tempdir = sys.argv[1]
        from chaoscontour_sandbox.controlplane import ControlPlane
        plane = ControlPlane(progress=lambda m: None).start()
        print(json.dumps({"pids": plane.pids, "ports": plane.ports}), flush=True)
        # no stop(): atexit must do it
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path)], capture_output=True, text=True, timeout=180, check=False
    )
    assert done.returncode == 0, done.stderr
    started = json.loads(done.stdout.strip().splitlines()[-1])
    assert_nothing_left(started["pids"], started["ports"], tmp_path)


def test_a_second_start_is_refused(control_plane: ControlPlane) -> None:
    with pytest.raises(ControlPlaneError, match="already started"):
        control_plane.start()


def _ready_node(name: str) -> dict[str, Any]:
    """A Node as a kubelet registers it: allocatable resources, no taints, Ready."""
    resources = {"cpu": "2", "memory": "4Gi", "pods": "110"}
    ready = {"type": "Ready", "status": "True", "reason": "KubeletReady", "message": "test"}
    return {
        "metadata": {"name": name},
        "status": {"capacity": resources, "allocatable": resources, "conditions": [ready]},
    }


def test_kube_scheduler_places_a_pod_that_names_no_node_on_a_ready_node(
    private_tmp: Path, require: Callable[..., None]
) -> None:
    require("kube-scheduler")
    # kube-controller-manager too: kube-apiserver's TaintNodesByCondition admission gives every new Node the
    # node.kubernetes.io/not-ready:NoSchedule taint, and only the node lifecycle controller lifts it once Ready.
    with ControlPlane(controller_manager=True, scheduler=True, progress=print) as plane, plane.api_client() as api:
        core = client.CoreV1Api(api)
        with contextlib.suppress(ApiException):  # kube-controller-manager may have made it already
            core.create_namespaced_service_account("default", {"metadata": {"name": "default"}})
        core.create_node({"metadata": {"name": "node-a"}})
        core.patch_node_status("node-a", {"status": _ready_node("node-a")["status"]})
        deadline = time.monotonic() + 30
        while core.read_node("node-a").spec.taints and time.monotonic() < deadline:
            time.sleep(0.1)
        assert not core.read_node("node-a").spec.taints
        # A pod that asks for more CPU than any node has stays Pending: the scheduler reads the node's allocatable.
        big: Any = {
            "metadata": {"name": "too-big"},
            "spec": {"containers": [{"name": "c", "image": "x", "resources": {"requests": {"cpu": "64"}}}]},
        }
        pod: Any = {"metadata": {"name": "placed"}, "spec": {"containers": [{"name": "c", "image": "x"}]}}
        core.create_namespaced_pod("default", big)
        created = time.monotonic()
        core.create_namespaced_pod("default", pod)
        deadline = created + 30
        while not core.read_namespaced_pod("placed", "default").spec.node_name and time.monotonic() < deadline:
            time.sleep(0.02)
        bound_after_s = time.monotonic() - created
        assert core.read_namespaced_pod("placed", "default").spec.node_name == "node-a"
        print(f"kube-scheduler bound the pod {bound_after_s:.2f} s after it was created")
        unplaced: Any = core.read_namespaced_pod("too-big", "default")
        assert unplaced.spec.node_name is None
        conditions = {c.type: c for c in unplaced.status.conditions or []}
        assert conditions["PodScheduled"].status == "False"
        assert "Insufficient cpu" in conditions["PodScheduled"].message
