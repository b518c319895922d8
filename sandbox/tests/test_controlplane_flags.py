"""The control plane's flags and identities, read from a Layout without starting anything."""

from __future__ import annotations

import base64
from pathlib import Path

import yaml
from cryptography import x509
from cryptography.x509.oid import NameOID

from chaoscontour_sandbox import controlplane_flags as flags


def layout(tmp_path: Path, client_host: str = "10.213.0.2") -> flags.Layout:
    ports = {"etcd-client": 2379, "etcd-peer": 2380, "apiserver": 6443, "controller-manager": 10257, "scheduler": 10259}
    return flags.Layout(
        workdir=tmp_path,
        bind_address=client_host,
        advertise_address=client_host,
        client_host=client_host,
        service_cidr="10.0.0.0/24",
        ports=ports,
        extra_apiserver_args=("--v=2", "--profiling=true"),
    )


def flag_values(argv: list[str]) -> dict[str, str]:
    return dict(arg.removeprefix("--").split("=", 1) for arg in argv)


def test_the_scheduler_serves_health_inside_the_control_planes_address_with_its_own_kubeconfig(tmp_path: Path) -> None:
    values = flag_values(flags.scheduler_args(layout(tmp_path)))
    assert values["bind-address"] == "10.213.0.2"
    assert values["secure-port"] == "10259"
    assert values["kubeconfig"] == values["authentication-kubeconfig"] == values["authorization-kubeconfig"]
    assert values["kubeconfig"] == str(tmp_path / "kube-scheduler.kubeconfig")
    assert values["leader-elect"] == "false"


def test_the_controller_manager_keeps_its_signing_and_service_account_flags(tmp_path: Path) -> None:
    values = flag_values(flags.controller_manager_args(layout(tmp_path)))
    assert values["kubeconfig"] == str(tmp_path / "kube-controller-manager.kubeconfig")
    assert values["secure-port"] == "10257"
    assert values["service-cluster-ip-range"] == "10.0.0.0/24"
    assert values["service-account-private-key-file"] == str(tmp_path / "pki" / "sa.key")


def test_extra_apiserver_args_come_last_so_they_win(tmp_path: Path) -> None:
    argv = flags.apiserver_args(layout(tmp_path))
    assert argv[-2:] == ["--v=2", "--profiling=true"]
    assert argv.index("--profiling=false") < argv.index("--profiling=true")


def test_each_controller_gets_a_client_certificate_for_its_bootstrap_rbac_user(tmp_path: Path) -> None:
    (tmp_path / "pki").mkdir()
    plane = layout(tmp_path, client_host="127.0.0.1")
    flags.write_pki(plane, tmp_path / "admin.kubeconfig", ["kube-controller-manager", "kube-scheduler"])
    for component, user in flags.IDENTITIES.items():
        document = yaml.safe_load(plane.kubeconfig(component).read_text())
        assert document["clusters"][0]["cluster"]["server"] == "https://127.0.0.1:6443"
        pem = base64.b64decode(document["users"][0]["user"]["client-certificate-data"])
        subject = x509.load_pem_x509_certificate(pem).subject
        assert subject.get_attributes_for_oid(NameOID.COMMON_NAME)[0].value == user
        assert not subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME), "a controller is not an admin"
        assert plane.kubeconfig(component).stat().st_mode & 0o077 == 0
    admin = yaml.safe_load((tmp_path / "admin.kubeconfig").read_text())
    pem = base64.b64decode(admin["users"][0]["user"]["client-certificate-data"])
    organizations = x509.load_pem_x509_certificate(pem).subject.get_attributes_for_oid(NameOID.ORGANIZATION_NAME)
    assert [o.value for o in organizations] == ["system:masters"]
