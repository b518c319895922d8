"""Volumes to mounts and files, and the container's own root (pure; one test runs the launch steps as root)."""

import base64
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from chaoscontour.sandbox.mounts import (
    DEFAULT_FILE_MODE,
    SERVICE_ACCOUNT_DIR,
    Mount,
    ObjectFiles,
    TokenFile,
    VolumeNotReady,
    container_mounts,
    exec_in_container_argv,
    file_modes,
    keep_visible,
    key_files,
    launch_argv,
    volume_files,
)
from chaoscontour.sandbox.podspec import PodFacts

POD = PodFacts("gameday-abc", "projectcontour", "uid-1", "sandbox", "chaoscontour", "10.213.0.20", "10.213.0.1")

# What kube-apiserver's ServiceAccount admission adds to a pod that does not opt out (plugin/pkg/admission/
# serviceaccount: the kube-api-access-<random> projected volume, mounted read-only in every container).
NAMESPACE_FIELD = {"apiVersion": "v1", "fieldPath": "metadata.namespace"}
KUBE_API_ACCESS = {
    "name": "kube-api-access-x7k2p",
    "projected": {
        "defaultMode": 420,
        "sources": [
            {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
            {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
            {
                "downwardAPI": {
                    "items": [
                        {"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}
                    ]
                }
            },
        ],
    },
}
GAME_DAY_SPEC = {
    "volumes": [
        {"name": "experiments", "configMap": {"name": "chaoscontour-experiments"}},
        {"name": "journals", "persistentVolumeClaim": {"claimName": "chaoscontour-journals"}},
        {"name": "tmp", "emptyDir": {}},
        KUBE_API_ACCESS,
    ]
}
GAME_DAY_CONTAINER = {
    "name": "chaos",
    "volumeMounts": [
        {"name": "experiments", "mountPath": "/experiments", "readOnly": True},
        {"name": "journals", "mountPath": "/journals"},
        {"name": "tmp", "mountPath": "/tmp/"},
        {"name": "kube-api-access-x7k2p", "mountPath": SERVICE_ACCOUNT_DIR, "readOnly": True},
    ],
}


def test_a_containers_mounts_say_where_and_how_parents_first() -> None:
    assert container_mounts(GAME_DAY_SPEC, GAME_DAY_CONTAINER) == [
        Mount("experiments", "configMap", "/experiments", True),
        Mount("journals", "persistentVolumeClaim", "/journals", False),
        Mount("tmp", "emptyDir", "/tmp", False),
        Mount("kube-api-access-x7k2p", "projected", SERVICE_ACCOUNT_DIR, True),
    ]


def test_config_maps_are_mounted_read_only_even_when_the_mount_does_not_say_so() -> None:
    spec = {"volumes": [{"name": "c", "configMap": {"name": "x"}}]}
    assert container_mounts(spec, {"volumeMounts": [{"name": "c", "mountPath": "/c"}]})[0].read_only is True


@pytest.mark.parametrize(
    ("volume", "mount", "message"),
    [
        ({"name": "v", "nfs": {"server": "s"}}, {"name": "v", "mountPath": "/v"}, "type nfs is not supported"),
        ({"name": "v", "emptyDir": {}}, {"name": "w", "mountPath": "/v"}, "names no volume"),
        ({"name": "v", "emptyDir": {}}, {"name": "v", "mountPath": "/v", "subPath": "../etc"}, "must not contain"),
        ({"name": "v", "emptyDir": {}}, {"name": "v", "mountPath": "/v", "subPath": "/etc"}, "must be relative"),
        (
            {"name": "v", "emptyDir": {}},
            {"name": "v", "mountPath": "/v", "subPath": "a", "subPathExpr": "b"},
            "mutually exclusive",
        ),
    ],
)
def test_what_the_sandbox_cannot_mount_is_refused_with_a_reason(volume: dict, mount: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        container_mounts({"volumes": [volume]}, {"volumeMounts": [mount]})


def test_a_sub_path_or_expanded_sub_path_expr_names_a_part_of_the_volume() -> None:
    spec = {"volumes": [{"name": "data", "emptyDir": {}}, {"name": "conf", "configMap": {"name": "c"}}]}
    container = {
        "volumeMounts": [
            {"name": "conf", "mountPath": "/etc/app/app.yaml", "subPath": "./app.yaml"},
            {"name": "data", "mountPath": "/data", "subPathExpr": "pods/$(POD_NAME)/"},
        ]
    }
    assert container_mounts(spec, container, {"POD_NAME": "web-1"}) == [
        Mount("data", "emptyDir", "/data", False, "pods/web-1"),
        Mount("conf", "configMap", "/etc/app/app.yaml", True, "app.yaml"),
    ]


def test_file_modes_come_from_default_mode_and_each_items_mode() -> None:
    contour_config = {
        "name": "contour-config",
        "configMap": {
            "name": "contour",
            "defaultMode": 0o644,
            "items": [{"key": "contour.yaml", "path": "contour.yaml"}],
        },
    }
    assert file_modes(contour_config) == (0o644, {})
    secret = {
        "name": "s",
        "secret": {"secretName": "s", "defaultMode": 0o400, "items": [{"key": "k", "path": "p", "mode": 0o600}]},
    }
    assert file_modes(secret) == (0o400, {"p": 0o600})
    assert file_modes({"name": "s", "secret": {"secretName": "s"}}) == (DEFAULT_FILE_MODE, {})
    assert file_modes(KUBE_API_ACCESS) == (420, {})


def test_the_service_account_volume_is_a_token_the_root_ca_and_the_namespace() -> None:
    files, fetch = volume_files(KUBE_API_ACCESS, POD)
    assert files == {"namespace": b"projectcontour"}
    assert fetch == [
        TokenFile("token", "", 3607),
        ObjectFiles("ConfigMap", "kube-root-ca.crt", (("ca.crt", "ca.crt"),), False),
    ]


def test_config_map_and_secret_keys_become_files() -> None:
    config_map = {"data": {"a.json": "{}", "b.json": "[]"}, "binaryData": {"c.bin": base64.b64encode(b"\0").decode()}}
    everything = ObjectFiles("ConfigMap", "x", None, False)
    assert key_files(everything, config_map) == {"a.json": b"{}", "b.json": b"[]", "c.bin": b"\0"}
    some = ObjectFiles("ConfigMap", "x", (("a.json", "dir/first.json"),), False)
    assert key_files(some, config_map) == {"dir/first.json": b"{}"}
    secret = {"data": {"tls.crt": base64.b64encode(b"PEM").decode()}}
    assert key_files(ObjectFiles("Secret", "s", None, False), secret) == {"tls.crt": b"PEM"}


def test_a_missing_object_or_key_is_a_volume_not_ready_yet_unless_optional() -> None:
    with pytest.raises(VolumeNotReady, match=r'^secret "contourcert" not found$'):
        key_files(ObjectFiles("Secret", "contourcert", None, False), None)
    assert key_files(ObjectFiles("ConfigMap", "x", None, True), None) == {}
    with pytest.raises(VolumeNotReady, match=r"^configmap references non-existent config key: k$"):
        key_files(ObjectFiles("ConfigMap", "x", (("k", "k"),), False), {"data": {}})
    with pytest.raises(VolumeNotReady, match=r"^references non-existent secret key: k$"):
        key_files(ObjectFiles("Secret", "x", (("k", "k"),), False), {"data": {}})
    assert key_files(ObjectFiles("Secret", "x", (("k", "k"),), True), {"data": {}}) == {}


def test_the_launch_passes_sources_then_targets_with_their_modes_then_the_program() -> None:
    argv, env = launch_argv(
        ["ip", "netns", "exec", "ccsbx-1"],
        "gameday-abc",
        "/sbx/pods/1/root/chaos",
        [("/sbx/v/journals", "/journals", False), ("/sbx/v/sa", SERVICE_ACCOUNT_DIR, True)],
        "/tmp",
        ["/bin/sh", "-c", "chaos run"],
    )
    assert argv[:8] == ["ip", "netns", "exec", "ccsbx-1", "unshare", "--uts", "sh", "-c"]
    assert argv[9] == "sh"  # $0 of the first stage's script (argv[8])
    tail = argv[10:]
    assert tail == [
        *("gameday-abc", "/sbx/pods/1/root/chaos", "/tmp", "64m", "2"),
        *("/sbx/v/journals", "/sbx/v/sa", "--"),
        *("/journals", "rw", SERVICE_ACCOUNT_DIR, "ro", "--"),
        *("/bin/sh", "-c", "chaos run"),
    ]
    assert set(env) == {"STAGE2"}


def test_an_exec_probe_enters_the_containers_namespaces_root_and_directory() -> None:
    assert exec_in_container_argv(42, ["/bin/contour", "cli"]) == [
        *("nsenter", "--target=42", "--mount", "--uts", "--net", "--root", "--wd", "--"),
        *("/bin/contour", "cli"),
    ]


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_a_container_sees_its_volumes_at_their_mount_paths_and_the_host_does_not(tmp_path: Path) -> None:
    writable, secret = tmp_path / "journals", tmp_path / "sa"
    writable.mkdir()
    secret.mkdir()
    (secret / "token").write_text("t0ken")
    script = (
        f"cat {SERVICE_ACCOUNT_DIR}/token; echo; pwd; hostname; "
        "echo written > /journals/out; touch /var/run/secrets/kubernetes.io/serviceaccount/x 2>/dev/null || echo ro"
    )
    argv, env = launch_argv(
        ["unshare", "--mount", "--propagation", "slave"],
        "gameday-abc",
        str(tmp_path / "root"),
        [(str(writable), "/journals", False), (str(secret), SERVICE_ACCOUNT_DIR, True)],
        "/journals",
        ["/bin/sh", "-c", script],
    )
    done = subprocess.run(argv, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["t0ken", "/journals", "gameday-abc", "ro"]
    assert (writable / "out").read_text() == "written\n"
    assert not Path("/journals").exists()
    assert not Path(SERVICE_ACCOUNT_DIR).exists()
    assert not any((tmp_path / "root").iterdir())


@pytest.mark.skipif(os.geteuid() != 0 or not shutil.which("unshare"), reason="needs root and unshare")
def test_a_file_from_a_volume_is_bound_at_its_own_path_read_only(tmp_path: Path) -> None:
    config = tmp_path / "config"
    config.mkdir()
    (config / "contour.yaml").write_text("gateway: {}\n")
    (config / "other.yaml").write_text("hidden\n")
    # A top-level target (the release manifest's /config, /certs): its mount point is made on the container's own
    # tmpfs root; one under a host directory bound in (/etc/...) would be made on the host.
    script = "cat /config/contour.yaml; ls /config; echo x > /config/contour.yaml 2>/dev/null || echo ro"
    argv, env = launch_argv(
        ["unshare", "--mount", "--propagation", "slave"],
        "contour-abc",
        str(tmp_path / "root"),
        [(str(config / "contour.yaml"), "/config/contour.yaml", True)],
        "/",
        ["/bin/sh", "-c", script],
    )
    done = subprocess.run(argv, env={"PATH": os.environ["PATH"], **env}, capture_output=True, text=True, timeout=30)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["gateway:", "{}", "contour.yaml", "ro"]
    assert (config / "contour.yaml").read_text() == "gateway: {}\n"
    assert not any((tmp_path / "root").iterdir())


def test_a_volume_over_a_parent_of_the_checkout_gets_the_checkout_bound_back_on_top():
    # The game-day CronJob mounts an emptyDir at /tmp; CI may clone the project under /tmp.
    paths = ["/tmp/ci/clone", "/tmp/ci/clone/.venv"]
    assert keep_visible(paths, ["/tmp", "/journals"]) == [
        ("/tmp/ci/clone", "/tmp/ci/clone", False),
        ("/tmp/ci/clone/.venv", "/tmp/ci/clone/.venv", False),
    ]
    assert keep_visible(paths, ["/journals", "/tmpfiles", "/tmp/ci/clone-other"]) == []
    assert keep_visible(["/work/main"], ["/work/main/"]) == [("/work/main", "/work/main", False)]
