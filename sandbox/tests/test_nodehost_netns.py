"""The control plane's network namespace when a killed run left its own behind (root, real namespaces and veths).

A run killed before it stopped its node leaves the control plane's processes in their namespace, and with them the
namespace's veth on the host, even once the namespace's name is gone; a new node then failed with the raw
"RTNETLINK answers: File exists". These tests build that state for real, on a prefix and addresses no sandbox uses.
"""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from chaoscontour_sandbox import nodehost
from chaoscontour_sandbox.nodeconfig import NodeLayout

pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="network namespaces and veths need root")


def _ip(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", *args], capture_output=True, text=True, check=check)


def _link_exists(name: str) -> bool:
    return _ip("link", "show", name, check=False).returncode == 0


@pytest.fixture
def layout(tmp_path: Path) -> Iterator[NodeLayout]:
    layout = NodeLayout(
        tmp_path / "node",
        "nstest",
        node_network="10.231.0.0/24",
        pod_cidr="10.232.0.0/24",
        service_cidr="10.233.0.0/24",
        prefix="cctst",
    )
    yield layout
    _ip("netns", "del", f"{layout.prefix}-cp", check=False)
    for link in (f"{layout.prefix}cp", f"{layout.prefix}0"):
        _ip("link", "del", link, check=False)
    assert not _link_exists(f"{layout.prefix}cp") and not _link_exists(f"{layout.prefix}0")


def test_a_namespace_a_killed_run_left_running_is_refused_by_name(layout: NodeLayout) -> None:
    netns = nodehost.create_control_plane_netns(layout)
    # What a killed run leaves: a process still in the namespace, whose name is gone (the next run removed it).
    survivor = subprocess.Popen(["ip", "netns", "exec", netns, "sleep", "60"])
    try:
        deadline = time.monotonic() + 10
        while survivor.pid not in nodehost.processes_holding(layout.control_plane_ip):
            assert time.monotonic() < deadline, "the sleeping process never showed in the namespace"
            time.sleep(0.05)
        _ip("netns", "del", netns)
        assert _link_exists(f"{layout.prefix}cp"), "the veth lives on with the namespace"
        with pytest.raises(nodehost.NodeHostError) as refused:
            nodehost.create_control_plane_netns(layout)
        message = str(refused.value)
        assert layout.control_plane_ip in message and str(survivor.pid) in message and "sleep 60" in message
        assert "chaoscontour-sandbox down" in message
        assert not (nodehost.NETNS_DIR / netns).exists(), "a refusal creates nothing"
    finally:
        survivor.kill()
        survivor.wait()
    # With the process gone the namespace goes, and its veth with it: a new node starts.
    deadline = time.monotonic() + 10
    while _link_exists(f"{layout.prefix}cp"):
        assert time.monotonic() < deadline, "the veth outlived its namespace"
        time.sleep(0.05)
    assert nodehost.create_control_plane_netns(layout) == netns
    assert nodehost.processes_holding(layout.control_plane_ip) == {}


def test_a_stale_veth_whose_namespace_no_process_holds_is_replaced(layout: NodeLayout, tmp_path: Path) -> None:
    netns = nodehost.create_control_plane_netns(layout)
    pin = tmp_path / "pin"
    pin.touch()
    subprocess.run(["mount", "--bind", str(nodehost.NETNS_DIR / netns), str(pin)], check=True)
    try:
        _ip("netns", "del", netns)
        assert _link_exists(f"{layout.prefix}cp"), "the pinned namespace keeps its veth"
        assert nodehost.processes_holding(layout.control_plane_ip) == {}
        assert nodehost.create_control_plane_netns(layout) == netns
        inside = _ip("-n", netns, "-o", "-4", "addr", "show", "dev", "eth0").stdout
        assert f"{layout.control_plane_ip}/24" in inside
    finally:
        subprocess.run(["umount", str(pin)], check=False)
