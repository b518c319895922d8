"""Watching the Lease after the API-server block until the fault is proven, and remembering what proved it.

The decision itself is pure (``domain.verification.RenewalWatch``); this module only reads the cluster on our
monotonic clock and keeps, per run, what the end-of-window probe compares against.
"""

import time
from typing import Any

from chaoscontour.activities._common import Progress
from chaoscontour.domain.verification import EVIDENCE_QUIET, RenewalWatch, reading
from chaoscontour.edges import stop
from chaoscontour.edges.clock import poll_until
from chaoscontour.edges.kube import ApiUnavailable, Kube, list_pods, read_lease
from chaoscontour.edges.run_state import RUN

__all__ = ["confirm_fault", "confirmed_fault", "forget_fault", "not_confirmed_message"]

POLL_S = 0.5


def confirmed_fault(namespace: str, run_id: str) -> dict[str, Any] | None:
    return RUN.confirmed_faults.get((namespace, run_id))


def forget_fault(namespace: str, run_id: str = "") -> None:
    for key in [key for key in RUN.confirmed_faults if key[0] == namespace and (not run_id or key[1] == run_id)]:
        del RUN.confirmed_faults[key]


def _replacements_running(k: Kube, namespace: str, selector: str, replaced: set[str]) -> bool:
    """Whether as many new pods of ``selector`` run (every container started) as were deleted."""
    running = 0
    for pod in list_pods(k, namespace, selector):
        if pod["metadata"]["name"] in replaced or pod["metadata"].get("deletionTimestamp"):
            continue
        statuses = (pod.get("status") or {}).get("containerStatuses") or []
        if statuses and all((s.get("state") or {}).get("running") for s in statuses):
            running += 1
    return running >= len(replaced)


def confirm_fault(
    k: Kube,
    *,
    namespace: str,
    run_id: str,
    lease_namespace: str,
    lease_name: str,
    min_quiet_s: float,
    timeout_s: float,
    blocked_at: float,
    selector: str,
    replaced_pods: list[str],
) -> dict[str, Any]:
    """Read the Lease every ``POLL_S`` until it has been unchanged for longer than its duration, or time runs out.

    With ``replaced_pods`` (open_connections=restart-pods), quiet counts only from when as many replacement pods
    run as were deleted: while no Contour runs, nobody renews, and that proves nothing about the policy.
    """
    watch = RenewalWatch(min_quiet_s=min_quiet_s, quiet_from=float("inf") if replaced_pods else 0.0)
    watch.observe(reading(read_lease(k, lease_namespace, lease_name), time.monotonic()))
    read_failures = 0
    progress = Progress()
    where = f"Lease {lease_namespace}/{lease_name}"
    first = True

    def decided() -> bool:
        """Read the Lease again (the first time: the reading above) and say whether the watch is over."""
        nonlocal read_failures, first
        if not first:
            try:
                waiting_for_pods = bool(replaced_pods) and watch.quiet_from == float("inf")
                if waiting_for_pods and _replacements_running(k, namespace, selector, set(replaced_pods)):
                    watch.quiet_from = time.monotonic()
                watch.observe(reading(read_lease(k, lease_namespace, lease_name), time.monotonic()))
            except ApiUnavailable:
                read_failures += 1  # our own hiccup proves nothing; quiet is only ever measured between good reads
        first = False
        return watch.confirmed() or _renewed_late(watch, blocked_at)

    def report(_: float) -> None:
        progress(
            f"block_apiserver_egress: verifying the fault: {where} unchanged for {watch.quiet_s():.0f}/"
            f"{watch.required_quiet_s:g} s, {watch.renewals} renewal(s) since the block"
        )

    polled = poll_until(decided, timeout_s, POLL_S, started=blocked_at, on_wait=report, check_after_stop=True)
    now = blocked_at + polled.elapsed_s
    base = {
        "lease": where,
        "required_quiet_s": round(watch.required_quiet_s, 1),
        "longest_quiet_s": round(watch.quiet_s(), 1),
        "lease_changes_after_block": watch.changes,
        "renewals_after_block": watch.renewals,
        "renewed_by": list(watch.holders),
        "read_failures": read_failures,
    }
    if watch.confirmed():
        last = watch.last
        assert last is not None
        result = {
            "confirmed": True,
            "evidence": EVIDENCE_QUIET,
            "evidence_text": (
                f"{where} stayed unchanged for {watch.quiet_s():.1f} s, longer than its "
                f"{watch.required_quiet_s:g} s duration: no Contour could write it"
            ),
            "confirmed_after_s": round(now - blocked_at, 1),
            **base,
        }
        RUN.confirmed_faults[(namespace, run_id)] = {
            "lease_namespace": lease_namespace,
            "lease_name": lease_name,
            "version": last.version,
            "renew_time": last.renew_time,
            "holder": last.holder,
            "confirmed_at": now,
        }
        return result
    if stop.requested():
        return {"confirmed": False, "evidence": "interrupted", "why": stop.reason(), **base}
    if _renewed_late(watch, blocked_at) or (watch.renewals and watch.quiet_from != float("inf")):
        evidence = "lease-still-renewed"
    elif watch.quiet_from == float("inf"):
        evidence = "replacement-pods-not-running"
    else:
        evidence = "lease-not-quiet-long-enough"
    return {
        "confirmed": False,
        "evidence": evidence,
        "holder": watch.last.holder if watch.last else None,
        "checked_for_s": round(now - blocked_at, 1),
        **base,
    }


def _renewed_late(watch: RenewalWatch, blocked_at: float) -> bool:
    """A renewal seen more than a Lease duration after the block: the fault did not bite (no CNI enforcement, an
    open connection let live). No need to wait the timeout out."""
    return bool(watch.renewals) and watch.since - blocked_at > watch.required_quiet_s > 0


def not_confirmed_message(verification: dict[str, Any], mode: str) -> str:
    seen = verification["renewals_after_block"]
    lease = verification["lease"]
    evidence = verification["evidence"]
    if evidence == "interrupted":
        return (
            f"the fault was not confirmed: the run was interrupted ({verification.get('why')}). The policy was removed."
        )
    observed = (
        f"in the {verification.get('checked_for_s', 0):.0f} s after the NetworkPolicy was created, {lease} was "
        f"written {verification['lease_changes_after_block']} time(s), renewed {seen} time(s)"
        + (f" by {', '.join(verification['renewed_by'])}" if verification["renewed_by"] else "")
        + f"; it never stayed unchanged for longer than its {verification['required_quiet_s']:g} s duration "
        f"(longest quiet {verification['longest_quiet_s']:.1f} s)"
    )
    if evidence == "replacement-pods-not-running":
        return (
            f"the fault was not confirmed: with open_connections={mode!r} the deleted Contour pods were not replaced "
            f"by running ones in time, so a quiet Lease proves nothing ({observed}). The policy was removed. Raise "
            "verify_timeout_s if Contour pods take long to start here."
        )
    message = (
        f"the fault did not take effect: {observed}, so a Contour still reaches the API server "
        f"(open_connections={mode!r}, holder {verification.get('holder')!r}). The policy was removed. "
    )
    if mode == "none" and seen:
        message += (
            "With open_connections='none' this is what a CNI that lets established connections live on does "
            "(Calico, Antrea): Contour's open connection to the API server is never cut; run again with "
            "open_connections='restart-pods'. "
        )
    return message + (
        "Otherwise: the cluster's CNI does not enforce NetworkPolicy (e.g. flannel, kindnet without policies), "
        "it matches the API server by something other than its address (Cilium's kube-apiserver entity), or a "
        "policy we could not see allows it."
    )
