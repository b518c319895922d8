"""The objects of a fault: the pod-less expiry Job with its dead-man heartbeat, the NetworkPolicy it owns, and
finding and removing them per run. Used by the fault framework (``_fault``)."""

from collections.abc import Mapping
from typing import Any

from chaoslib.exceptions import ActivityFailed
from logzero import logger

from chaoscontour.domain.policy import RUN_ID_LABEL
from chaoscontour.edges import heartbeat
from chaoscontour.edges.kube import Kube, call, delete_in_background, patch_job_deadline, to_dict

__all__ = [
    "ExpiryJob",
    "create_expiry_job",
    "create_owned_policy",
    "job_finished",
    "remove_objects",
    "unblock_result",
]


class ExpiryJob:
    """The created expiry Job: its metadata, the owner reference for the policy, and the heartbeat (if any)."""

    def __init__(self, meta: Mapping[str, Any], beat: heartbeat.Heartbeat | None) -> None:
        self.meta = meta
        self.name = str(meta["name"])
        self.owner = {"apiVersion": "batch/v1", "kind": "Job", "name": meta["name"], "uid": meta["uid"]}
        self.beat = beat


def create_expiry_job(
    k: Kube,
    *,
    namespace: str,
    body: dict[str, Any],
    duration_s: float,
    dead_man_s: float,
    heartbeat_key: str,
    started: float,
) -> ExpiryJob:
    """Create the expiry Job; fail (removing it) if it was created suspended; start its dead-man heartbeat.

    ``started`` is the monotonic time taken just before ``body`` was built: the heartbeat's deadlines count from it.
    """
    job = to_dict(k, call(f"create expiry Job in {namespace}", k.batch.create_namespaced_job, namespace, body))
    meta = job["metadata"]
    if (job.get("spec") or {}).get("suspend"):
        delete_in_background(k, "Job", namespace, meta["name"])
        raise ActivityFailed(
            f"the expiry Job {namespace}/{meta['name']} was created suspended (a queueing controller such as Kueue "
            "suspends new Jobs): a suspended Job never reaches its deadline, so the fault would never expire by "
            f"itself. The Job was removed and no policy was created; exempt namespace {namespace!r} or Jobs labelled "
            "app.kubernetes.io/managed-by=chaoscontour from the queueing controller"
        )
    beat = None
    if dead_man_s:
        beat = heartbeat.Heartbeat(
            (namespace, heartbeat_key),
            lambda deadline: patch_job_deadline(k, namespace, meta["name"], deadline),
            started=started,
            dead_man_s=dead_man_s,
            duration_s=duration_s,
            every_s=max(2.0, dead_man_s / 5),
        ).start()
    return ExpiryJob(meta, beat)


def create_owned_policy(k: Kube, namespace: str, body: dict[str, Any], job: ExpiryJob, heartbeat_key: str) -> None:
    """Create the fault's NetworkPolicy; if that fails (or is interrupted), stop the heartbeat and remove the Job."""
    try:
        call(
            f"create NetworkPolicy {namespace}/{body['metadata']['name']}",
            k.networking.create_namespaced_network_policy,
            namespace,
            body,
        )
    except BaseException:
        heartbeat.stop_heartbeat(namespace, heartbeat_key)
        delete_in_background(k, "Job", namespace, job.name)
        raise


def _names(k: Kube, listing: Any) -> list[str]:
    return [item["metadata"]["name"] for item in to_dict(k, listing).get("items") or []]


def remove_objects(k: Kube, namespace: str, selector: str, key: str) -> dict[str, list[str]]:
    """Stop the heartbeat of ``key`` (``heartbeat.key_of``; with no run id, every run's), then delete the
    NetworkPolicies and expiry Jobs of ``selector`` (already gone is success). Returns the names removed."""
    heartbeat.stop_heartbeats(namespace, key)
    removed: dict[str, list[str]] = {"policies": [], "jobs": []}
    policies = call(
        f"list our NetworkPolicies in {namespace}",
        k.networking.list_namespaced_network_policy,
        namespace,
        label_selector=selector,
    )
    for name in _names(k, policies):
        if delete_in_background(k, "NetworkPolicy", namespace, name):
            removed["policies"].append(name)
    jobs = call(f"list our expiry Jobs in {namespace}", k.batch.list_namespaced_job, namespace, label_selector=selector)
    for name in _names(k, jobs):
        if delete_in_background(k, "Job", namespace, name):
            removed["jobs"].append(name)
    return removed


def runs_present(k: Kube, namespace: str, every_run_selector: str, excluding: str) -> list[str]:
    """The run ids other than ``excluding`` whose objects (policies or expiry Jobs) of one fault are in
    ``namespace``, sorted (``excluding``'s may still be listed for a moment after their deletion)."""
    found: set[str] = set()
    for what, list_call in (
        ("NetworkPolicies", k.networking.list_namespaced_network_policy),
        ("Jobs", k.batch.list_namespaced_job),
    ):
        listing = call(f"list our {what} in {namespace}", list_call, namespace, label_selector=every_run_selector)
        for item in to_dict(k, listing).get("items") or []:
            found.add(((item.get("metadata") or {}).get("labels") or {}).get(RUN_ID_LABEL, "?"))
    return sorted(found - {excluding})


def unblock_result(
    k: Kube, activity: str, namespace: str, run_id: str, every_run_selector: str, removed: dict[str, list[str]]
) -> dict[str, Any]:
    """What an unblock returns and logs: what it removed, the other runs still in place and, when nothing of its
    run was there, a ``note`` (a warning too): success, never silence."""
    others = runs_present(k, namespace, every_run_selector, run_id) if run_id else []
    result: dict[str, Any] = {
        "run_id": run_id or "*",
        "removed_policies": removed["policies"],
        "removed_jobs": removed["jobs"],
        "other_runs": others,
    }
    if run_id and not removed["policies"] and not removed["jobs"]:
        result["note"] = (
            f"{activity}: nothing of run {run_id} in namespace {namespace}: already removed (expired, or an "
            "earlier rollback), or the fault was created in another namespace or under another run_id"
        )
        if others:
            result["note"] += (
                f"; faults of other runs are still in place there: {', '.join(others)} (all_runs=true removes them)"
            )
        logger.warning(result["note"])
    else:
        logger.info(
            f"{activity}: removed {len(removed['policies'])} policy(ies) and {len(removed['jobs'])} expiry Job(s) of "
            f"run {run_id or '*'} in {namespace}"
        )
    return result


def job_finished(job: Mapping[str, Any] | None) -> str:
    """Why the expiry Job no longer holds the fault (``deleted``, ``Failed: DeadlineExceeded``...), or ``""``."""
    if job is None:
        return "deleted"
    for condition in (job.get("status") or {}).get("conditions") or []:
        if condition.get("type") in ("Failed", "Complete") and condition.get("status") == "True":
            return f"{condition['type']}: {condition.get('reason') or ''}".strip(": ")
    return ""
