"""The real node's images (what each holds, under which reference) and its NetworkPolicy engine's objects."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from chaoscontour_sandbox import images, nodeaddons, nodeimages, versions


@pytest.fixture
def program(tmp_path: Path) -> Path:
    path = tmp_path / "program"
    path.write_bytes(b"#!/bin/false\n")  # what an image holds is copied, not run
    path.chmod(0o755)
    return path


def test_the_release_manifest_references_are_the_pinned_versions() -> None:
    pinned = {
        "contour": f"ghcr.io/projectcontour/contour:v{versions.CONTOUR}",
        "envoy": f"docker.io/envoyproxy/envoy:distroless-v{versions.ENVOY}",
        "pause": f"registry.k8s.io/pause:{versions.PAUSE}",
    }
    named = {"contour": nodeimages.CONTOUR_IMAGE, "envoy": nodeimages.ENVOY_IMAGE, "pause": nodeimages.PAUSE_IMAGE}
    assert named == pinned
    # Every reference is already what the CRI normalizes a manifest's image to, so the kubelet finds it.
    for reference in (
        nodeimages.CONTOUR_IMAGE,
        nodeimages.ENVOY_IMAGE,
        nodeimages.COREDNS_IMAGE,
        nodeimages.AGNHOST_IMAGE,
    ):
        assert images.qualified_reference(reference) == reference
    assert images.qualified_reference("coredns/coredns:" + versions.COREDNS) == nodeimages.COREDNS_IMAGE


@pytest.mark.parametrize(
    ("name", "path", "entrypoint", "user"),
    [
        ("pause", "/pause", ["/pause"], "65535:65535"),
        ("agnhost", "/agnhost", ["/agnhost"], None),
        ("contour", "/bin/contour", None, None),
        ("coredns", "/coredns", ["/coredns"], None),
        ("kube-network-policies", "/bin/netpol", None, None),
    ],
)
def test_each_image_holds_its_program_where_its_manifest_runs_it(
    program: Path, tmp_path: Path, name: str, path: str, entrypoint: list[str] | None, user: str | None
) -> None:
    (archive,) = nodeimages.write_archives({name: program}, tmp_path / "out")
    with tarfile.open(archive) as outer:
        index = json.loads(outer.extractfile("index.json").read())  # type: ignore[union-attr]
        manifest_digest = index["manifests"][0]["digest"].removeprefix("sha256:")
        manifest = json.loads(outer.extractfile(f"blobs/sha256/{manifest_digest}").read())  # type: ignore[union-attr]
        config_digest = manifest["config"]["digest"].removeprefix("sha256:")
        config = json.loads(outer.extractfile(f"blobs/sha256/{config_digest}").read())["config"]  # type: ignore[union-attr]
        layer_digest = manifest["layers"][0]["digest"].removeprefix("sha256:")
        with tarfile.open(fileobj=outer.extractfile(f"blobs/sha256/{layer_digest}")) as layer:
            member = layer.getmember(path.lstrip("/"))
            held = layer.extractfile(member).read()  # type: ignore[union-attr]
    assert member.mode & 0o111 and held == program.read_bytes()
    assert config.get("Entrypoint") == entrypoint
    assert config.get("User") == user


def test_an_unknown_image_name_is_refused_before_anything_is_written(program: Path, tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="no image is made of kubectl"):
        nodeimages.write_archives({"pause": program, "kubectl": program}, tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_engine_runs_as_upstream_runs_it_on_the_host_network_with_net_admin() -> None:
    objects = {o["kind"]: o for o in nodeaddons.network_policy_engine()}
    assert list(objects) == ["ServiceAccount", "ClusterRole", "ClusterRoleBinding", "DaemonSet"]
    rules = {tuple(r["resources"]): r["verbs"] for r in objects["ClusterRole"]["rules"]}
    assert rules == {("pods", "namespaces"): ["list", "watch"], ("networkpolicies",): ["list", "watch"]}
    pod = objects["DaemonSet"]["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    assert pod["hostNetwork"] is True and pod["serviceAccountName"] == nodeaddons.NETPOL_NAME
    assert container["image"] == nodeimages.NETPOL_IMAGE
    assert container["args"][0] == "/bin/netpol"
    assert "--hostname-override=$(MY_NODE_NAME)" in container["args"]
    assert f"--nfqueue-id={nodeaddons.NFQUEUE_ID}" in container["args"]
    assert container["securityContext"] == {"privileged": True, "capabilities": {"add": ["NET_ADMIN"]}}
    # No NRI socket and no /var/run/netns: they serve only the NRI path, which containerd 1.6 lacks.
    assert "volumes" not in pod and "volumeMounts" not in container
