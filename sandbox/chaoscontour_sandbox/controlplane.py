"""A real Kubernetes control plane as local processes: etcd, kube-apiserver and, on request, kube-controller-manager
and kube-scheduler.

Modelled on controller-runtime's envtest: one object with ``start()`` / ``stop()`` (and a context manager) that owns
its temp dir, its ports and its processes, and cleans all of them up on every exit path -- an exception during
``start()``, ``stop()``, leaving a ``with`` block, Ctrl-C, and interpreter exit (``atexit``). Binaries come from
:mod:`chaoscontour_sandbox.binaries` (``$KUBEBUILDER_ASSETS``, then the per-version cache); each process's flags,
certificates and kubeconfig from :mod:`chaoscontour_sandbox.controlplane_flags`.

What it runs, and why:

- etcd with ``--unsafe-no-fsync`` on free loopback ports (a test cluster needs no durability).
- kube-apiserver with TLS from a throw-away CA (:mod:`chaoscontour_sandbox.pki`), client-certificate
  authentication (an admin certificate with ``O=system:masters`` goes into the written kubeconfig),
  ``--authorization-mode=Node,RBAC`` so RBAC is really enforced, and service-account issuer and keys so that
  TokenRequest works (the tests' ServiceAccount identities use it). Its advertise address is never
  loopback (see :mod:`chaoscontour_sandbox.controlplane_flags`).
- kube-controller-manager (``controller_manager=True``) for what only controllers do: ``default`` ServiceAccounts
  in new namespaces, garbage collection, namespace deletion, Jobs, Deployments, DaemonSets, EndpointSlices.
- kube-scheduler (``scheduler=True``) to place pods that name no node (Jobs', DaemonSets'), as
  ``system:kube-scheduler``.

Inside a network namespace (``netns``), every process runs under ``ip netns exec``; ``bind_address`` must then be
an address of that namespace the caller can reach (e.g. its bridge address), and etcd stays on the namespace's
own 127.0.0.1.
"""

from __future__ import annotations

import atexit
import ipaddress
import shutil
import socket
import ssl
import subprocess
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any

from chaoscontour_sandbox import binaries, crds
from chaoscontour_sandbox import controlplane_flags as flags
from chaoscontour_sandbox.process import Process, ProcessExited, ProcessTimeout, tail

__all__ = ["ControlPlane", "ControlPlaneError"]

Progress = Callable[[str], None]

# How long each component may take to become ready. Generous: the machines this runs on are often shared with a Go
# build, and kube-apiserver's post-start hooks (RBAC bootstrap, priority-and-fairness) take a few CPU-seconds.
START_TIMEOUT_S = 90.0
# How long a process gets between SIGTERM and SIGKILL.
STOP_GRACE_S = 10.0


# Each controller's port in ``ControlPlane.ports``, and its flags.
_PORT_NAMES = {"kube-controller-manager": "controller-manager", "kube-scheduler": "scheduler"}
_CONTROLLER_ARGS: dict[str, Callable[[flags.Layout], list[str]]] = {
    "kube-controller-manager": flags.controller_manager_args,
    "kube-scheduler": flags.scheduler_args,
}


class ControlPlaneError(RuntimeError):
    """The control plane could not start (the message carries the tail of the failing process's log)."""


def _is_loopback(address: str) -> bool:
    return ipaddress.ip_address(address).is_loopback


class ControlPlane:
    """etcd + kube-apiserver (+ kube-controller-manager) as local processes, with TLS, RBAC and an admin kubeconfig.

    Use it as a context manager, or call :meth:`start` and :meth:`stop` yourself::

        with ControlPlane() as cp:
            api = cp.api_client()
            ...

    ``workdir`` holds certificates, kubeconfigs, etcd's data and the logs; by default it is a new temp dir that
    ``stop()`` removes (a given ``workdir`` is kept, logs included). ``bind_address`` is where kube-apiserver listens;
    ``advertise_address`` is what it publishes in the ``default/kubernetes`` endpoints (default: ``bind_address``
    unless that is loopback or unspecified, then this host's primary address -- see the module docs). ``netns`` runs
    every process inside that network namespace. ``secure_port`` defaults to a free port. ``apiserver_args`` are
    appended to kube-apiserver's command line (later flags win).
    """

    def __init__(
        self,
        *,
        workdir: Path | None = None,
        bind_address: str = "127.0.0.1",
        advertise_address: str | None = None,
        netns: str | None = None,
        controller_manager: bool = False,
        scheduler: bool = False,
        service_cidr: str = "10.0.0.0/24",
        progress: Progress = print,
        secure_port: int | None = None,
        apiserver_args: Sequence[str] = (),
        start_timeout_s: float = START_TIMEOUT_S,
    ) -> None:
        ipaddress.ip_address(bind_address)  # a clear ValueError now rather than a cryptic flag error later
        if advertise_address is not None:
            ipaddress.ip_address(advertise_address)
        self.service_cidr = ipaddress.ip_network(service_cidr)
        if netns and _is_loopback(bind_address):
            raise ValueError(
                "with netns=, bind_address must be an address of that namespace the caller can reach "
                "(e.g. its bridge address): the namespace's loopback is invisible from outside"
            )
        self.bind_address = bind_address
        self._advertise_address = advertise_address
        self.netns = netns
        self.controller_manager = controller_manager
        self.scheduler = scheduler
        self.progress = progress
        self.secure_port = secure_port
        self.apiserver_args = tuple(apiserver_args)
        self.start_timeout_s = start_timeout_s
        self._given_workdir = Path(workdir) if workdir is not None else None
        self._workdir: Path | None = None
        self._processes: list[Process] = []
        self._lock = threading.RLock()
        self._started = False
        self.pids: dict[str, int] = {}
        """PIDs of the processes of the latest ``start()``; kept after ``stop()`` so callers can check they are gone."""
        self.ports: dict[str, int] = {}
        """Ports of the latest ``start()`` (``etcd-client``, ``etcd-peer``, ``apiserver``, ``controller-manager``,
        ``scheduler``)."""
        self.startup_s: float | None = None

    # --- paths and addresses ---------------------------------------------------------------------------------------

    @property
    def workdir(self) -> Path:
        if self._workdir is None:
            raise ControlPlaneError("the control plane is not started")
        return self._workdir

    @property
    def logs_dir(self) -> Path:
        return self.workdir / "logs"

    @property
    def pki_dir(self) -> Path:
        return self.workdir / "pki"

    @property
    def kubeconfig(self) -> Path:
        """The admin kubeconfig (client certificate in group ``system:masters``, certificates embedded)."""
        return self.workdir / "admin.kubeconfig"

    @property
    def ca_file(self) -> Path:
        return self.pki_dir / "ca.crt"

    @property
    def advertise_address(self) -> str:
        """The address kube-apiserver publishes in the ``default/kubernetes`` EndpointSlice."""
        if self._advertise_address is None:
            address = ipaddress.ip_address(self.bind_address)
            if address.is_loopback or address.is_unspecified:
                family = socket.AF_INET6 if address.version == 6 else socket.AF_INET
                try:
                    self._advertise_address = flags.host_address(family)
                except flags.AddressError as exc:
                    raise ControlPlaneError(str(exc)) from None
            else:
                self._advertise_address = self.bind_address
        return self._advertise_address

    @property
    def _client_host(self) -> str:
        address = ipaddress.ip_address(self.bind_address)
        if address.is_unspecified:
            return "::1" if address.version == 6 else "127.0.0.1"
        return self.bind_address

    @property
    def url(self) -> str:
        if "apiserver" not in self.ports:
            raise ControlPlaneError("the control plane is not started")
        return self._layout().url

    @property
    def service_ip(self) -> str:
        """The ClusterIP of ``default/kubernetes``: the service CIDR's first address."""
        return str(next(self.service_cidr.hosts()))

    def _layout(self) -> flags.Layout:
        return flags.Layout(
            workdir=self.workdir,
            bind_address=self.bind_address,
            advertise_address=self.advertise_address,
            client_host=self._client_host,
            service_cidr=str(self.service_cidr),
            ports=dict(self.ports),
            extra_apiserver_args=self.apiserver_args,
        )

    @property
    def _controllers(self) -> list[str]:
        """The controller processes this control plane runs, in start order."""
        return (["kube-controller-manager"] if self.controller_manager else []) + (
            ["kube-scheduler"] if self.scheduler else []
        )

    @property
    def running(self) -> bool:
        return self._started and all(p.running for p in self._processes)

    # --- life cycle ------------------------------------------------------------------------------------------------

    def __enter__(self) -> ControlPlane:
        self.start()
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def start(self) -> ControlPlane:
        """Start etcd and kube-apiserver (and the controllers asked for), and return once all are ready.

        Raises :class:`ControlPlaneError` (with the failing process's log tail) or
        :class:`~chaoscontour_sandbox.binaries.BinaryNotFound`; everything started so far is stopped first.
        """
        with self._lock:
            if self._started:
                raise ControlPlaneError("the control plane is already started")
            names = ["etcd", "kube-apiserver", *self._controllers]
            found = binaries.ensure_binaries(names, build=False, progress=self.progress)
            self._started = True
            atexit.register(self.stop)
            try:
                self._start(found)
            except BaseException:
                self.stop()
                raise
        return self

    def _start(self, found: dict[str, Path]) -> None:
        began = time.monotonic()
        if self._given_workdir is not None:
            self._given_workdir.mkdir(parents=True, exist_ok=True)
            self._workdir = self._given_workdir
        else:
            self._workdir = Path(tempfile.mkdtemp(prefix="chaoscontour-cp-"))
        self.logs_dir.mkdir(exist_ok=True)
        self.pki_dir.mkdir(exist_ok=True, mode=0o700)
        self.pids = {}
        etcd_host = "127.0.0.1"
        if self.netns:
            # A fresh namespace's loopback is down, and etcd lives on it.
            self._run_in_netns(["ip", "link", "set", "lo", "up"])
            port_host = "127.0.0.1"  # the namespace's ports are free when the host's are: a fresh stack
        else:
            port_host = self._client_host
        self.ports = {
            "etcd-client": flags.free_port(etcd_host),
            "etcd-peer": flags.free_port(etcd_host),
            "apiserver": self.secure_port or flags.free_port(port_host),
        }
        for controller in self._controllers:
            self.ports[_PORT_NAMES[controller]] = flags.free_port(port_host)
        layout = self._layout()
        flags.write_pki(layout, self.kubeconfig, self._controllers)

        etcd = self._launch("etcd", [str(found["etcd"]), *flags.etcd_args(layout)])
        apiserver = self._launch("kube-apiserver", [str(found["kube-apiserver"]), *flags.apiserver_args(layout)])
        # kube-apiserver retries etcd until it answers, so both start at once; /readyz covers etcd (/readyz/etcd).
        self._wait_ready(apiserver, f"{self.url}/readyz", self._admin_ssl_context(), watch=[etcd, apiserver])
        # /readyz answers before the apiserver's own controller has created Service default/kubernetes (and its
        # EndpointSlice), which the API-server fault is aimed at: a client started at once would find neither.
        services = f"{self.url}/apis/discovery.k8s.io/v1/namespaces/default/endpointslices/kubernetes"
        self._wait_ready(apiserver, services, self._admin_ssl_context(), watch=[etcd, apiserver])
        self.progress(
            f"control plane: etcd + kube-apiserver v{binaries.COMPONENTS['kubernetes'].version} ready in "
            f"{time.monotonic() - began:.1f} s at {self.url}"
        )
        # The controllers start together (they only need the API server) and are waited for in turn.
        controllers_began = time.monotonic()
        launched = [
            self._launch(name, [str(found[name]), *_CONTROLLER_ARGS[name](layout)]) for name in self._controllers
        ]
        # Their serving certificates are self-signed in --cert-dir; /healthz is an always-allowed path.
        insecure = ssl.create_default_context()
        insecure.check_hostname = False
        insecure.verify_mode = ssl.CERT_NONE
        for proc in launched:
            url = f"https://{flags.url_host(self._client_host)}:{self.ports[_PORT_NAMES[proc.name]]}/healthz"
            self._wait_ready(proc, url, insecure, watch=list(self._processes))
            self.progress(f"control plane: {proc.name} ready in {time.monotonic() - controllers_began:.1f} s")
        self.startup_s = time.monotonic() - began
        self.progress(f"control plane: started in {self.startup_s:.1f} s; kubeconfig {self.kubeconfig}")

    def stop(self) -> None:
        """Stop every process (SIGTERM, then SIGKILL after a grace period), wait for them, remove the temp dir.

        Idempotent; safe to call from ``atexit``, a ``finally`` or a signal handler's aftermath.
        """
        with self._lock:
            atexit.unregister(self.stop)
            began = time.monotonic()
            # One at a time, in reverse start order: kube-apiserver given SIGTERM while etcd is going away too
            # waits on etcd until it is killed (measured: the full 10 s grace), alone it exits in about 1 s.
            processes, self._processes = list(reversed(self._processes)), []
            for proc in processes:
                proc.stop(STOP_GRACE_S)
            if self._workdir is not None and self._given_workdir is None:
                shutil.rmtree(self._workdir, ignore_errors=True)
            self._workdir = None if self._given_workdir is None else self._workdir
            self._started = False
            if processes:
                self.progress(f"control plane: stopped in {time.monotonic() - began:.1f} s")

    # --- processes -------------------------------------------------------------------------------------------------

    def _wrap(self, argv: Sequence[str]) -> list[str]:
        return ["ip", "netns", "exec", self.netns, *argv] if self.netns else list(argv)

    def _run_in_netns(self, argv: Sequence[str]) -> None:
        proc = subprocess.run(self._wrap(argv), capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise ControlPlaneError(f"{' '.join(self._wrap(argv))} failed: {proc.stderr.strip()}")

    def _launch(self, name: str, argv: Sequence[str]) -> Process:
        try:
            proc = Process.start(name, self._wrap(argv), self.logs_dir / f"{name}.log", cwd=self.workdir)
        except OSError as exc:
            raise ControlPlaneError(f"cannot run {name}: {exc}") from exc
        self._processes.append(proc)
        self.pids[name] = proc.pid
        return proc

    def _wait_ready(self, proc: Process, url: str, context: ssl.SSLContext, *, watch: Iterable[Process]) -> None:
        last = ["no answer yet"]

        def ready() -> bool:
            try:
                with urllib.request.urlopen(url, context=context, timeout=2.0) as response:
                    if response.status == 200:
                        return True
                    last[0] = f"HTTP {response.status}"
            except urllib.error.HTTPError as exc:
                last[0] = f"HTTP {exc.code}: {exc.read()[-500:].decode(errors='replace')}"
            except (urllib.error.URLError, OSError) as exc:
                last[0] = str(exc)
            return False

        try:
            proc.wait_ready(ready, self.start_timeout_s, watch=watch)
        except ProcessExited as exc:
            raise ControlPlaneError(f"during start-up, {exc}") from None
        except ProcessTimeout:
            raise ControlPlaneError(
                f"{proc.name} was not ready within {self.start_timeout_s:.0f} s ({url}: {last[0]}); "
                f"the end of {proc.log}:\n{tail(proc.log)}"
            ) from None

    # --- clients and objects ---------------------------------------------------------------------------------------

    def _admin_ssl_context(self) -> ssl.SSLContext:
        context = ssl.create_default_context(cafile=str(self.ca_file))
        context.load_cert_chain(str(self.pki_dir / "admin.crt"), str(self.pki_dir / "admin.key"))
        return context

    def api_client(self) -> Any:
        """A new ``kubernetes.client.ApiClient`` for the admin user."""
        from kubernetes import config

        return config.new_client_from_config(config_file=str(self.kubeconfig))

    def install_contour_crds(self) -> list[str]:
        """Install Contour's CRDs (:func:`chaoscontour_sandbox.crds.install_contour_crds`)."""
        return crds.install_contour_crds(self.kubeconfig, progress=self.progress)
