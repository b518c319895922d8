"""Deploying Contour on the running sandbox and waiting until it serves (the API edge of ``sandbox up``).

Contour is deployed as users install it: its own release manifest of the pinned version
(:mod:`chaoscontour_sandbox.release`), whose certgen Job writes the TLS Secrets, whose Contour reads its ConfigMap and
whose Envoy runs as a DaemonSet with the shutdown-manager and finds Contour through cluster DNS
(``--xds-address=contour``). :func:`wait_serving` then waits for a Contour leader, both Contour replicas Ready and the
Envoy pod Ready, with a progress line each, and returns the Envoy pod's address.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable, Sequence
from typing import Any

import requests

from chaoscontour.domain.pods import pod_ready
from chaoscontour_sandbox import binaries, release, workloads
from chaoscontour_sandbox.kubeapi import ApiError, KubeApi

__all__ = [
    "SandboxError",
    "wait_for",
    "apply_objects",
    "pods",
    "pod_ready",
    "deploy_contour",
    "wait_serving",
]

Obj = dict[str, Any]
Say = Callable[[str], None]
Check = Callable[[], None]


class SandboxError(RuntimeError):
    """The sandbox could not be brought up; the message says what failed and where the logs are."""


def wait_for(what: str, timeout_s: float, check: Callable[[], Any], *, interval_s: float = 0.5) -> Any:
    """Call ``check`` until it returns something truthy; raise :class:`SandboxError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    last: Any = None
    while True:
        try:
            result = check()
            if result:
                return result
        except (ApiError, requests.RequestException, OSError) as exc:
            last = exc
        if time.monotonic() > deadline:
            raise SandboxError(f"timed out after {timeout_s:.0f} s waiting for {what}" + (f" ({last})" if last else ""))
        time.sleep(interval_s)


def apply_objects(api: KubeApi, objects: Sequence[Obj]) -> None:
    """Server-side apply each of ``objects`` in order, retrying each for up to 30 s."""

    def applied(obj: Obj) -> bool:
        api.apply(workloads.api_path(obj), obj)
        return True

    for obj in objects:
        # A new CRD's REST endpoint appears a moment after the CRD is Established: retry briefly.
        wait_for(f"{obj['kind']} {obj['metadata']['name']} to be applied", 30.0, functools.partial(applied, obj))


def pods(api: KubeApi, namespace: str, selector: str) -> list[Obj]:
    return list(api.get(f"/api/v1/namespaces/{namespace}/pods", labelSelector=selector).get("items", []))


def ready_pod_ip(api: KubeApi, namespace: str, selector: str) -> str:
    """The address of a Ready pod of ``selector`` in ``namespace``, ``""`` while none is."""
    ready = [p for p in pods(api, namespace, selector) if pod_ready(p)]
    return str(ready[0]["status"].get("podIP") or "") if ready else ""


def _job_done(api: KubeApi, job: Obj, check: Check) -> bool:
    """Whether ``job`` completed; :class:`SandboxError` if it failed (the kubelet's log of its pod is named)."""
    check()
    meta = job["metadata"]
    found = api.get(f"/apis/batch/v1/namespaces/{meta['namespace']}/jobs/{meta['name']}")
    for condition in found.get("status", {}).get("conditions") or []:
        if condition.get("type") == "Failed" and condition.get("status") == "True":
            raise SandboxError(
                f"Job {meta['namespace']}/{meta['name']} failed ({condition.get('reason')}: "
                f"{condition.get('message')}); its pods' logs are under the sandbox dir's logs/pods/"
            )
    return int(found.get("status", {}).get("succeeded") or 0) >= 1


def deploy_contour(api: KubeApi, say: Say, check: Check, timeout_s: float) -> None:
    """Apply Contour's release manifest and wait for its certgen Job; ``check`` raises if the sandbox died."""
    path = release.manifest_path(binaries.contour_module_dir())
    try:
        objects = release.load(path.read_text(), source=str(path))
    except OSError as exc:
        raise SandboxError(f"cannot read Contour's release manifest: {exc}") from exc
    except release.ReleaseManifestError as exc:
        raise SandboxError(str(exc)) from exc
    say(f"contour: the release manifest {path} ({release.describe(objects)}; its CRDs are installed already)")
    apply_objects(api, release.objects_to_apply(objects))
    job = release.certgen_job(objects)
    began = time.monotonic()
    wait_for(
        f"the certgen Job {job['metadata']['name']} to complete",
        timeout_s,
        functools.partial(_job_done, api, job, check),
    )
    say(f"certgen: Job {job['metadata']['name']} complete in {time.monotonic() - began:.1f} s (contourcert, envoycert)")


def wait_serving(api: KubeApi, say: Say, check: Check, timeout_s: float) -> str:
    """Wait for a Contour leader, both Contour pods Ready and an Envoy pod Ready; return that Envoy pod's IP."""
    lease_path = f"/apis/coordination.k8s.io/v1/namespaces/{workloads.CONTOUR_NAMESPACE}/leases/{workloads.LEASE_NAME}"

    def leader() -> str:
        check()
        return str(api.get(lease_path).get("spec", {}).get("holderIdentity") or "")

    say(f"leader: {wait_for('a Contour leader to hold the Lease', timeout_s, leader)}")

    def contour_ready() -> list[Obj]:
        check()
        ready = [p for p in pods(api, workloads.CONTOUR_NAMESPACE, workloads.CONTOUR_SELECTOR) if pod_ready(p)]
        return ready if len(ready) >= 2 else []

    ready = wait_for("both Contour pods to be Ready", timeout_s, contour_ready)
    say(f"contour: {', '.join(p['metadata']['name'] for p in ready)} Ready")

    def envoy_ip() -> str:
        check()
        return ready_pod_ip(api, workloads.CONTOUR_NAMESPACE, workloads.ENVOY_SELECTOR)

    ip = str(wait_for("the Envoy pod to be Ready", timeout_s, envoy_ip))
    say(f"envoy: Ready at {ip}")
    return ip
