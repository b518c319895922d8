"""Fixtures for the integration tests: one real control plane (etcd + kube-apiserver) per test session.

Without the binaries the tests skip with one reason line saying how to get them -- except in CI (``CI=true``),
where a skipped integration suite would be a silent pass, so they fail instead.
"""

from __future__ import annotations

import os
import re
import shutil
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from kubernetes import client
from kubernetes.client.rest import ApiException

from bench.contour_like import create_pod
from chaoscontour_sandbox import binaries, crds, gateway
from chaoscontour_sandbox.controlplane import ControlPlane
from tests.support.ci import unavailable

REQUIRED = ("etcd", "kube-apiserver", "kube-controller-manager")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    here = os.path.dirname(__file__)
    for item in items:
        if str(item.path).startswith(here):
            item.add_marker(pytest.mark.integration)


def missing_prerequisites() -> str | None:
    """Why the integration suite cannot run here, in one sentence, or ``None``."""
    missing = [name for name in REQUIRED if binaries.find_binary(name) is None]
    # Contour's CRDs are read from the Go module cache, which `go` locates (and fills).
    if shutil.which("go") is None:
        missing.append("go")
    if not missing:
        return None
    return (
        f"integration tests need {', '.join(missing)}: install Go, then run `chaoscontour-sandbox binaries build` "
        f"(binaries are looked up in $KUBEBUILDER_ASSETS, then {binaries.cache_dir()})"
    )


_MISSING = missing_prerequisites()


def pytest_runtest_setup(item: pytest.Item) -> None:
    # Raised here rather than in a fixture, the skip keeps this one location, so `pytest -rs` folds the whole
    # suite into one reason line (a skip inside a fixture is reported at each test's own line).
    if _MISSING:
        unavailable(_MISSING)


@pytest.fixture
def require() -> Callable[..., None]:
    """``require("kube-controller-manager")``: skip (or, in CI, fail) a test whose binaries are missing."""

    def check(*names: str) -> None:
        missing = [name for name in names if binaries.find_binary(name) is None]
        if missing:
            unavailable(f"{', '.join(missing)} not found: run `chaoscontour-sandbox binaries build` (needs Go)")

    return check


@pytest.fixture(scope="session")
def control_plane() -> Iterator[ControlPlane]:
    """The session's control plane: etcd + kube-apiserver with TLS, RBAC and an admin kubeconfig."""
    with ControlPlane(progress=lambda message: print(f"\n{message}", flush=True)) as plane:
        yield plane


@pytest.fixture(scope="session")
def contour_crds(control_plane: ControlPlane) -> list[str]:
    """Contour's CRDs, installed once from the pinned Contour module in the Go module cache."""
    return control_plane.install_contour_crds()


@pytest.fixture(scope="session")
def gateway_api_crds(control_plane: ControlPlane) -> list[str]:
    """Gateway API's CRDs, as the sandbox's ``up --gateway`` installs them (from the pinned Contour module's Gateway
    provisioner manifest)."""
    path = binaries.contour_module_dir() / gateway.PROVISIONER
    documents, _ = gateway.provisioner_objects(path.read_text(), source=str(path))
    return crds.install_crd_documents(control_plane.kubeconfig, documents)


@pytest.fixture
def api(control_plane: ControlPlane) -> Iterator[client.ApiClient]:
    """An admin ``ApiClient`` (``system:masters``) for the session's control plane."""
    with control_plane.api_client() as api_client:
        yield api_client


@pytest.fixture
def kubeconfig_env(control_plane: ControlPlane, monkeypatch: pytest.MonkeyPatch) -> str:
    """Point chaostoolkit-kubernetes' ``create_k8s_api_client`` (``KUBECONFIG``) at the admin kubeconfig."""
    monkeypatch.setenv("KUBECONFIG", str(control_plane.kubeconfig))
    for variable in ("KUBERNETES_CONTEXT", "CHAOSTOOLKIT_IN_POD", "KUBERNETES_HOST"):
        monkeypatch.delenv(variable, raising=False)
    return str(control_plane.kubeconfig)


@pytest.fixture
def namespace(api: client.ApiClient, request: pytest.FixtureRequest) -> Iterator[str]:
    """A fresh namespace for one test, with its ``default`` ServiceAccount, deleted afterwards."""
    stem = re.sub(r"[^a-z0-9]+", "-", request.node.name.lower().removeprefix("test_")).strip("-")[:40].strip("-")
    name = f"{stem}-{uuid.uuid4().hex[:6]}"
    core = client.CoreV1Api(api)
    body: Any = {"metadata": {"name": name, "labels": {"chaoscontour.test": "integration"}}}
    core.create_namespace(body)
    # No kube-controller-manager runs in the session, so nobody creates the `default` ServiceAccount that the
    # ServiceAccount admission plugin requires before it admits a pod.
    sa: Any = {"metadata": {"name": "default"}}
    try:
        core.create_namespaced_service_account(name, sa)
    except ApiException as exc:
        if exc.status != 409:
            raise
    yield name
    try:
        core.delete_namespace(name)
    except ApiException as exc:
        if exc.status != 404:
            raise


@pytest.fixture
def contour(api: client.ApiClient, namespace: str) -> str:
    """Two running Contour-labelled pods in ``namespace``."""
    core = client.CoreV1Api(api)
    for pod in ("contour-a", "contour-b"):
        create_pod(core, namespace, pod)
    return namespace
