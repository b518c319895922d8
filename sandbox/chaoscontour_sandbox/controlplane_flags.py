"""What each process of a local control plane is started with: flags, certificates and kubeconfigs.

:class:`~chaoscontour_sandbox.controlplane.ControlPlane` owns the processes' life cycle; this module says how each
one is configured, from a :class:`Layout` (its directory, addresses and ports), so that the flags are read and
tested in one place: :func:`etcd_args`, :func:`apiserver_args`, :func:`controller_manager_args`,
:func:`scheduler_args`. :func:`write_pki` writes the throw-away CA, kube-apiserver's serving certificate, the admin
client certificate and kubeconfig, one client certificate and kubeconfig per controller identity
(:data:`IDENTITIES`), and the service-account key pair.

The advertise address. kube-apiserver publishes ``--advertise-address`` in the ``default/kubernetes`` Endpoints and
EndpointSlice, and API validation refuses loopback addresses there (``ValidateEndpointIP`` in
``pkg/apis/core/validation``, applied to EndpointSlices by ``pkg/apis/discovery/validation``). Started with
``--advertise-address=127.0.0.1``, kube-apiserver 1.34.4 becomes ready, but every 10 s its endpoint reconciler logs::

    E1126 19:22:15.492529   27157 controller.go:163] "Unhandled Error" err="unable to sync kubernetes service:
    Endpoints \\"kubernetes\\" is invalid: subsets[0].addresses[0].ip: Invalid value: \\"127.0.0.1\\": may not be
    in the loopback range (127.0.0.0/8, ::1/128)" logger="UnhandledError"

and ``default/kubernetes`` keeps no Endpoints and no EndpointSlice. So for a loopback bind the advertise address
defaults to this host's primary address (:func:`host_address`: the source address of its default route, what
kube-apiserver itself would pick); the API server still listens on loopback only -- the address is what the
endpoints carry, which is what the activities read.
"""

from __future__ import annotations

import base64
import ipaddress
import socket
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

from chaoscontour_sandbox import pki

__all__ = [
    "CLUSTER_NAME",
    "IDENTITIES",
    "AddressError",
    "Layout",
    "apiserver_args",
    "controller_manager_args",
    "etcd_args",
    "free_port",
    "host_address",
    "kubeconfig_document",
    "scheduler_args",
    "url_host",
    "write_kubeconfig",
    "write_pki",
]

CLUSTER_NAME = "chaoscontour"
# The user names that Kubernetes' bootstrap RBAC grants each controller's permissions to (ClusterRoleBindings
# system:kube-controller-manager and system:kube-scheduler, and the extension-apiserver-authentication-reader
# RoleBinding in kube-system that their delegated authentication needs): neither is an admin.
IDENTITIES: Mapping[str, str] = {
    "kube-controller-manager": "system:kube-controller-manager",
    "kube-scheduler": "system:kube-scheduler",
}


class AddressError(ValueError):
    """No address fit to advertise could be found; the message says what to pass instead."""


def host_address(family: int = socket.AF_INET) -> str:
    """This host's primary address: the source address of its default route, chosen without sending a packet."""
    # 192.0.2.1 / 2001:db8::1 are documentation addresses (RFC 5737 / RFC 3849): only the route lookup happens.
    probe = "192.0.2.1" if family == socket.AF_INET else "2001:db8::1"
    with socket.socket(family, socket.SOCK_DGRAM) as sock:
        try:
            sock.connect((probe, 9))
        except OSError as exc:
            raise AddressError(
                "no default route, so no non-loopback address to advertise for the `default/kubernetes` endpoints; "
                "pass advertise_address= (an address of this host that is not loopback or link-local)"
            ) from exc
        address = str(sock.getsockname()[0])
    if ipaddress.ip_address(address).is_link_local:
        raise AddressError(f"the default route's source address {address} is link-local; pass advertise_address=")
    return address


def free_port(host: str) -> int:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return int(sock.getsockname()[1])


def url_host(address: str) -> str:
    return f"[{address}]" if ":" in address else address


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()


@dataclass(frozen=True)
class Layout:
    """Where one control plane keeps its files and which addresses and ports its processes use.

    ``client_host`` is where clients (and the controllers' own health endpoints) are reached: ``bind_address``,
    or loopback when that is unspecified. ``ports`` has ``etcd-client``, ``etcd-peer``, ``apiserver`` and one per
    controller that runs (``controller-manager``, ``scheduler``).
    """

    workdir: Path
    bind_address: str
    advertise_address: str
    client_host: str
    service_cidr: str
    ports: Mapping[str, int]
    etcd_host: str = "127.0.0.1"
    extra_apiserver_args: Sequence[str] = field(default_factory=tuple)

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def url(self) -> str:
        return f"https://{url_host(self.client_host)}:{self.ports['apiserver']}"

    @property
    def service_ip(self) -> str:
        """The ClusterIP of ``default/kubernetes``: the service CIDR's first address."""
        return str(next(ipaddress.ip_network(self.service_cidr).hosts()))

    def kubeconfig(self, component: str) -> Path:
        """The kubeconfig of ``component`` (a key of :data:`IDENTITIES`)."""
        return self.workdir / f"{component}.kubeconfig"


def etcd_args(layout: Layout) -> list[str]:
    client = f"http://{layout.etcd_host}:{layout.ports['etcd-client']}"
    peer = f"http://{layout.etcd_host}:{layout.ports['etcd-peer']}"
    return [
        "--name=default",
        f"--data-dir={layout.workdir / 'etcd'}",
        f"--listen-client-urls={client}",
        f"--advertise-client-urls={client}",
        f"--listen-peer-urls={peer}",
        f"--initial-advertise-peer-urls={peer}",
        f"--initial-cluster=default={peer}",
        # A test cluster needs no durability, and fsync is most of etcd's latency on a shared disk.
        "--unsafe-no-fsync",
        "--log-level=warn",
    ]


def apiserver_args(layout: Layout) -> list[str]:
    """kube-apiserver's flags; ``extra_apiserver_args`` come last, so they win."""
    p = layout.pki_dir
    return [
        f"--etcd-servers=http://{layout.etcd_host}:{layout.ports['etcd-client']}",
        f"--bind-address={layout.bind_address}",
        f"--advertise-address={layout.advertise_address}",
        f"--secure-port={layout.ports['apiserver']}",
        f"--cert-dir={layout.workdir / 'apiserver-certs'}",
        f"--tls-cert-file={p / 'apiserver.crt'}",
        f"--tls-private-key-file={p / 'apiserver.key'}",
        f"--client-ca-file={layout.ca_file}",
        f"--service-cluster-ip-range={layout.service_cidr}",
        "--authorization-mode=Node,RBAC",
        "--allow-privileged=true",
        "--service-account-issuer=https://kubernetes.default.svc.cluster.local",
        f"--service-account-key-file={p / 'sa.pub'}",
        f"--service-account-signing-key-file={p / 'sa.key'}",
        "--profiling=false",
        f"--kubelet-client-certificate={p / 'apiserver-kubelet-client.crt'}",
        f"--kubelet-client-key={p / 'apiserver-kubelet-client.key'}",
        "--kubelet-preferred-address-types=InternalIP",
        *layout.extra_apiserver_args,
    ]


def _controller_serving_args(layout: Layout, component: str, port_name: str) -> list[str]:
    """What kube-controller-manager and kube-scheduler share: their identity, and a health endpoint on
    ``client_host`` (inside the control plane's network namespace when it has one) with a self-signed certificate.
    One instance of each runs, so leader election would only add a Lease write every 2 s."""
    kubeconfig = layout.kubeconfig(component)
    return [
        f"--kubeconfig={kubeconfig}",
        f"--authentication-kubeconfig={kubeconfig}",
        f"--authorization-kubeconfig={kubeconfig}",
        f"--bind-address={layout.client_host}",
        f"--secure-port={layout.ports[port_name]}",
        f"--cert-dir={layout.workdir / (component + '-certs')}",
        "--leader-elect=false",
        "--profiling=false",
    ]


def controller_manager_args(layout: Layout) -> list[str]:
    p = layout.pki_dir
    return [
        *_controller_serving_args(layout, "kube-controller-manager", "controller-manager"),
        f"--service-account-private-key-file={p / 'sa.key'}",
        f"--root-ca-file={layout.ca_file}",
        f"--cluster-signing-cert-file={layout.ca_file}",
        f"--cluster-signing-key-file={p / 'ca.key'}",
        f"--service-cluster-ip-range={layout.service_cidr}",
        "--use-service-account-credentials=true",
    ]


def scheduler_args(layout: Layout) -> list[str]:
    """kube-scheduler with its default profile: it places pods that name no node (Jobs', DaemonSets')."""
    return _controller_serving_args(layout, "kube-scheduler", "scheduler")


def kubeconfig_document(server: str, ca_pem: bytes, user: str, credentials: Mapping[str, str]) -> dict[str, Any]:
    """A kubeconfig with one cluster (``server``, CA embedded), one user and the context joining them."""
    return {
        "apiVersion": "v1",
        "kind": "Config",
        "clusters": [{"name": CLUSTER_NAME, "cluster": {"server": server, "certificate-authority-data": _b64(ca_pem)}}],
        "users": [{"name": user, "user": dict(credentials)}],
        "contexts": [{"name": f"{user}@{CLUSTER_NAME}", "context": {"cluster": CLUSTER_NAME, "user": user}}],
        "current-context": f"{user}@{CLUSTER_NAME}",
        "preferences": {},
    }


def write_kubeconfig(path: Path, document: Mapping[str, Any]) -> None:
    """Write ``document`` at ``path``, readable by its owner only (it carries a key or a token)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.touch(mode=0o600)
    path.write_text(yaml.safe_dump(dict(document), sort_keys=False))


def write_client_kubeconfig(path: Path, server: str, ca_pem: bytes, user: str, pair: pki.KeyPair) -> None:
    """Write a kubeconfig at ``path`` for ``user`` authenticating with the client certificate ``pair``."""
    credentials = {"client-certificate-data": _b64(pair.cert_pem), "client-key-data": _b64(pair.key_pem)}
    write_kubeconfig(path, kubeconfig_document(server, ca_pem, user, credentials))


def _client_kubeconfig(layout: Layout, path: Path, user: str, pair: pki.KeyPair) -> None:
    write_client_kubeconfig(path, layout.url, layout.ca_file.read_bytes(), user, pair)


def write_pki(layout: Layout, admin_kubeconfig: Path, controllers: Sequence[str]) -> None:
    """Write the CA, kube-apiserver's serving certificate, the admin kubeconfig (``O=system:masters``), a
    kubeconfig per controller in ``controllers`` (its :data:`IDENTITIES` user) and the service-account keys."""
    p = layout.pki_dir
    ca = pki.CertificateAuthority(f"{CLUSTER_NAME}-ca")
    ca.key_pair.write(layout.ca_file, p / "ca.key")
    ips = {layout.bind_address, layout.advertise_address, layout.client_host, "127.0.0.1", "::1", layout.service_ip}
    dns = ["localhost", "kubernetes", "kubernetes.default", "kubernetes.default.svc"]
    dns.append("kubernetes.default.svc.cluster.local")
    ca.issue("kube-apiserver", server=True, dns_names=dns, ip_addresses=sorted(ips)).write(
        p / "apiserver.crt", p / "apiserver.key"
    )
    admin = ca.issue("chaoscontour-admin", organizations=["system:masters"], client=True)
    admin.write(p / "admin.crt", p / "admin.key")
    # What kube-apiserver shows a kubelet when it proxies logs, exec and port-forward (kubeadm's
    # apiserver-kubelet-client); the kubelet's webhook authorizer then asks the API server about it.
    kubelet_client = ca.issue("kube-apiserver-kubelet-client", organizations=["system:masters"], client=True)
    kubelet_client.write(p / "apiserver-kubelet-client.crt", p / "apiserver-kubelet-client.key")
    _client_kubeconfig(layout, admin_kubeconfig, "admin", admin)
    for component in controllers:
        user = IDENTITIES[component]
        _client_kubeconfig(layout, layout.kubeconfig(component), component, ca.issue(user, client=True))
    sa_key = pki.new_private_key()
    key_path = p / "sa.key"
    key_path.touch(mode=0o600)
    key_path.write_bytes(pki.private_key_pem(sa_key))
    (p / "sa.pub").write_bytes(pki.public_key_pem(sa_key))
