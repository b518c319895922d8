"""Objects shaped like a Contour installation's, written to the real API server: what the activities read.

No kubelet and no Contour run in the scale benchmark (``bench/scale_bench.py``) or the integration tests that
import this module, so it plays their parts through the API:

* pods labelled like Contour's, whose status (phase, readiness, restart counts, ``lastState.terminated``) is written
  through the ``status`` subresource, as the kubelet writes it;
* a Lease shaped like the one controller-runtime's leader election keeps for Contour (``leader-elect``,
  ``holderIdentity`` = ``<pod>_<uuid>``, MicroTime renewals, ``leaseTransitions``);
* :class:`Candidate`, a leader-election participant that follows client-go's rules: it renews while it holds the
  Lease and its pod exists (a deleted pod's process is gone), and takes the Lease over once the holder has not
  renewed for ``leaseDurationSeconds``.
"""

from __future__ import annotations

import threading
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from kubernetes import client
from kubernetes.client.rest import ApiException

from chaoscontour.domain.clock import format_utc

LEASE_NAME = "leader-elect"
CONTOUR_LABELS = {"app": "contour"}
IMAGE = "contour:v1.33.6"


def names(listing: Any) -> list[str]:
    """The sorted names of the objects of a list call's result."""
    return sorted(item.metadata.name for item in listing.items)


def now() -> datetime:
    return datetime.now(UTC)


def holder_identity(pod_name: str) -> str:
    """``<hostname>_<uuid>``, as controller-runtime builds it; in a pod the hostname is the pod name."""
    return f"{pod_name}_{uuid.uuid4()}"


def create_pod(
    core: client.CoreV1Api,
    namespace: str,
    name: str,
    *,
    labels: dict[str, str] | None = None,
    restarts: int = 0,
    last_terminated_at: datetime | None = None,
    ready: bool = True,
    phase: str = "Running",
) -> dict[str, Any]:
    """Create a pod and write a kubelet-like status through the ``status`` subresource; return the status written."""
    body: Any = {
        "metadata": {"name": name, "labels": dict(CONTOUR_LABELS if labels is None else labels)},
        "spec": {"containers": [{"name": "contour", "image": IMAGE, "args": ["serve"]}]},
    }
    core.create_namespaced_pod(namespace, body)
    started = now() - timedelta(minutes=10)
    container: dict[str, Any] = {
        "name": "contour",
        "image": IMAGE,
        "imageID": "",
        "ready": ready,
        "started": True,
        "restartCount": restarts,
        "state": {"running": {"startedAt": format_utc(last_terminated_at or started, "seconds")}},
        "lastState": {},
    }
    if last_terminated_at is not None:
        container["lastState"] = {
            "terminated": {
                "exitCode": 1,
                "reason": "Error",
                "startedAt": format_utc(started, "seconds"),
                "finishedAt": format_utc(last_terminated_at, "seconds"),
            }
        }
    status: Any = {
        "status": {
            "phase": phase,
            "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
            "startTime": format_utc(started, "seconds"),
            "containerStatuses": [container],
        }
    }
    core.patch_namespaced_pod_status(name, namespace, status)
    return dict(status["status"])


def create_lease(
    coordination: client.CoordinationV1Api,
    namespace: str,
    holder: str,
    *,
    renewed: datetime | None = None,
    duration_s: int = 15,
    transitions: int = 0,
    name: str = LEASE_NAME,
) -> None:
    renew = renewed or now()
    body: Any = {
        "metadata": {"name": name},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration_s,
            "acquireTime": format_utc(renew, "microseconds"),
            "renewTime": format_utc(renew, "microseconds"),
            "leaseTransitions": transitions,
        },
    }
    coordination.create_namespaced_lease(namespace, body)


class Candidate(threading.Thread):
    """One replica's leader election, following client-go's leaderelection rules through the real API.

    It acquires the Lease when it is free or expired (no renewal for ``leaseDurationSeconds``), renews it every
    ``retry_s`` while it holds it, and stops for good once its pod is gone (the process died with the pod). Writes
    use the Lease's resourceVersion, so two candidates never both win.
    """

    def __init__(
        self,
        api: client.ApiClient,
        namespace: str,
        pod_name: str,
        *,
        retry_s: float = 0.25,
        duration_s: int = 15,
        lease_name: str = LEASE_NAME,
    ) -> None:
        super().__init__(name=f"candidate-{pod_name}", daemon=True)
        self.core = client.CoreV1Api(api)
        self.coordination = client.CoordinationV1Api(api)
        self.namespace = namespace
        self.pod_name = pod_name
        self.identity = holder_identity(pod_name)
        self.retry_s = retry_s
        self.duration_s = duration_s
        self.lease_name = lease_name
        self.acquired = threading.Event()
        self.renewals = 0
        self.errors: list[BaseException] = []
        self._stop = threading.Event()

    def stop(self) -> None:
        self._stop.set()
        self.join(timeout=5)

    def _pod_exists(self) -> bool:
        try:
            pod: Any = self.core.read_namespaced_pod(self.pod_name, self.namespace)
        except ApiException as exc:
            if exc.status == 404:
                return False
            raise
        return not pod.metadata.deletion_timestamp

    def _tick(self) -> None:
        if not self._pod_exists():
            self._stop.set()
            return
        moment = now()
        try:
            lease: Any = self.coordination.read_namespaced_lease(self.lease_name, self.namespace)
        except ApiException as exc:
            if exc.status != 404:
                raise
            create_lease(self.coordination, self.namespace, self.identity, duration_s=self.duration_s)
            self.acquired.set()
            return
        spec = lease.spec
        if spec.holder_identity == self.identity:
            spec.renew_time = moment
        else:
            renewed = spec.renew_time
            expired = renewed is None or moment > renewed + timedelta(seconds=spec.lease_duration_seconds or 0)
            if spec.holder_identity and not expired:
                return
            spec.holder_identity = self.identity
            spec.acquire_time = moment
            spec.renew_time = moment
            spec.lease_duration_seconds = self.duration_s
            spec.lease_transitions = (spec.lease_transitions or 0) + 1
        try:
            self.coordination.replace_namespaced_lease(self.lease_name, self.namespace, lease)
        except ApiException as exc:
            if exc.status == 409:  # someone else wrote first: the next tick reads again
                return
            raise
        if spec.holder_identity == self.identity:
            self.renewals += 1
            self.acquired.set()

    def run(self) -> None:
        while not self._stop.is_set():
            try:
                self._tick()
            except BaseException as exc:  # surfaced by the test through `errors`
                self.errors.append(exc)
                return
            self._stop.wait(self.retry_s)
