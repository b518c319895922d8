"""The refusals every fault makes before it creates anything, and the cluster reads they need: the pods it would
select, a run id already in use, the NetworkPolicies that would defeat it. Used by the fault framework (``_fault``)
and by each fault's target discovery."""

from collections.abc import Mapping
from typing import Any

from chaoslib.exceptions import ActivityFailed
from logzero import logger

from chaoscontour.domain.selectors import format_label_selector
from chaoscontour.edges.kube import Kube, call, list_pods, to_dict

__all__ = ["namespace_policies", "refuse_defeated", "refuse_run_in_use", "require_pods", "running_pods"]


def refuse_run_in_use(k: Kube, namespace: str, run_selector: str, name: str, run_id: str) -> None:
    """Refuse, before anything is created, a run id whose fault objects are already in ``namespace``: two runs under
    one id would remove each other's fault (and their heartbeats would share one key). Objects being deleted (an
    earlier unblock of the same run) do not count."""
    present = []
    listings = (("NetworkPolicy", k.networking.list_namespaced_network_policy), ("Job", k.batch.list_namespaced_job))
    for kind, list_call in listings:
        listing = call(f"list {kind}s of run {run_id}", list_call, namespace, label_selector=run_selector)
        for item in to_dict(k, listing).get("items") or []:
            meta = item.get("metadata") or {}
            if not meta.get("deletionTimestamp"):
                present.append(f"{kind} {meta.get('name')}")
    if present:
        raise ActivityFailed(
            f"{name}: run_id {run_id!r} is already in use in namespace {namespace} ({', '.join(present)}): another "
            "run, or this one, has a fault in place under it, and the two would remove each other's. Nothing was "
            f"created. Give this run another run_id, or end that fault first (unblock with run_id={run_id!r})"
        )


def refuse_defeated(activity: str, reasons: list[str], force: bool, allows: str) -> None:
    """Refuse, before anything is created, a fault that other policies defeat (policies are additive): ``reasons``
    says which and how, ``allows`` what they allow; with ``force`` warn instead."""
    if reasons and not force:
        raise ActivityFailed(
            f"another NetworkPolicy already {allows}, and policies are additive, so the fault would do nothing: "
            + "; ".join(reasons)
            + ". Nothing was created; set force=true to create it anyway"
        )
    for reason in reasons:
        logger.warning(f"{activity}: force=true despite: {reason}")


def running_pods(k: Kube, namespace: str, labels: Mapping[str, str]) -> list[dict[str, Any]]:
    """The pods of ``labels`` that are running or about to: the ones a fault must select."""
    return [
        pod
        for pod in list_pods(k, namespace, format_label_selector(dict(labels)))
        if not pod["metadata"].get("deletionTimestamp")
        and (pod.get("status") or {}).get("phase") not in ("Succeeded", "Failed")
    ]


def require_pods(k: Kube, namespace: str, labels: Mapping[str, str], hint: str) -> list[dict[str, Any]]:
    """The running pods of ``labels``; none is a refusal, before anything is created, ending with ``hint``."""
    pods = running_pods(k, namespace, labels)
    if not pods:
        raise ActivityFailed(
            f"no running pod in namespace {namespace!r} matches {format_label_selector(dict(labels))!r}; nothing "
            f"was created. {hint}"
        )
    return pods


def namespace_policies(k: Kube, namespace: str) -> list[dict[str, Any]]:
    """Every NetworkPolicy of ``namespace``: what could defeat a fault there."""
    found = call(f"list NetworkPolicies in {namespace}", k.networking.list_namespaced_network_policy, namespace)
    return list(to_dict(k, found).get("items") or [])
