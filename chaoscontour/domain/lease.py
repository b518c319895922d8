"""Reading Contour's leader-election Lease (coordination.k8s.io/v1), as plain API-shaped dictionaries."""

from collections.abc import Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from chaoscontour.domain.clock import format_api_time, parse_api_time
from chaoscontour.domain.identity import InvalidHolderIdentity, parse_holder_identity

__all__ = ["lease_summary", "lease_liveness_problem", "new_holder"]


def lease_summary(lease: Mapping[str, Any], cluster_now: datetime | None, runner_now: datetime) -> dict[str, Any]:
    """What an SRE wants to know about the Lease: who holds it, since when, and whether it is still being renewed.

    ``held`` is true when there is a holder whose last renewal is younger than the lease duration: after that, any
    other candidate may take the Lease (client-go leaderelection). The age is judged on the API server's clock
    (``cluster_now``, from the ``Date`` of its answer, to the second: its midpoint is used), never on the runner's,
    which may be off by minutes; ``clock_offset_s`` reports how far the runner's clock is from the cluster's. Only
    when the answer carried no ``Date`` is the runner's clock used, and ``judged_by`` says so.
    """
    metadata = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    renew = parse_api_time(spec.get("renewTime"))
    acquire = parse_api_time(spec.get("acquireTime"))
    duration_s = spec.get("leaseDurationSeconds")
    if cluster_now is not None:
        now = cluster_now + timedelta(seconds=0.5)
        offset: float | None = round((runner_now - now).total_seconds(), 1)
    else:
        now, offset = runner_now, None
    since_renewal = (now - renew).total_seconds() if renew else None
    try:
        pod_name: str | None = parse_holder_identity(holder).pod_name if holder else None
    except InvalidHolderIdentity:
        pod_name = None
    held = bool(holder) and since_renewal is not None and duration_s is not None and since_renewal <= duration_s
    return {
        "namespace": metadata.get("namespace"),
        "name": metadata.get("name"),
        "holder_identity": holder or None,
        "pod_name": pod_name,
        "acquire_time": format_api_time(acquire),
        "renew_time": format_api_time(renew),
        "seconds_since_renewal": round(since_renewal, 3) if since_renewal is not None else None,
        "lease_duration_s": duration_s,
        "lease_transitions": spec.get("leaseTransitions") or 0,
        "held": held,
        "judged_by": "api-server-clock" if cluster_now is not None else "runner-clock (no Date header)",
        "clock_offset_s": offset,
    }


def new_holder(lease: Mapping[str, Any], old_holder: str) -> str | None:
    """The identity now holding the Lease if it is someone other than ``old_holder``, else ``None``.

    A candidate writes its own identity into ``holderIdentity`` when it takes the Lease, so a different identity
    is the takeover itself: no timestamp written by one node is compared with another node's.
    """
    holder = (lease.get("spec") or {}).get("holderIdentity") or ""
    return holder if holder and holder != old_holder else None


# The API server's Date header is to the second; lease_summary takes its midpoint, so an age may read up to 0.5 s
# long. A full second of slack keeps a Lease renewed just now from ever reading as stale.
DATE_SLACK_S = 1.0


def lease_liveness_problem(summary: Mapping[str, Any], selected_pods: Iterable[str]) -> str | None:
    """Why this Lease (a :func:`lease_summary`) cannot serve as evidence that a fault on ``selected_pods`` bit.

    The verification reads "the Lease stayed unchanged for longer than its duration" as "no Contour could write
    it", which holds only if it was being renewed, by one of the pods the fault cuts off, when the fault began: a
    Lease nobody renews (left by an old install, or the wrong name) stays unchanged whether or not anything is cut
    off. ``None`` when it is live and held by one of ``selected_pods``.
    """
    where = f"Lease {summary.get('namespace')}/{summary.get('name')}"
    holder, pod = summary.get("holder_identity"), summary.get("pod_name")
    age, duration = summary.get("seconds_since_renewal"), summary.get("lease_duration_s")
    if not holder:
        return f"{where} has no holder: no Contour leads, so its silence would prove nothing"
    if age is None or duration is None:
        return f"{where} has no renewTime or leaseDurationSeconds: it cannot show whether anyone renews it"
    if age > float(duration) + DATE_SLACK_S:
        return (
            f"{where} is not being renewed: {holder!r} last renewed it {age:.1f} s ago by the API server's clock "
            f"({summary.get('judged_by')}), longer than its {duration} s duration, so it would stay unchanged "
            "whether or not the fault bites"
        )
    names = sorted(set(selected_pods))
    if pod not in names:
        return (
            f"{where} is held by {holder!r}, which is not one of the selected pods ({', '.join(names)}): its "
            "renewals say nothing about whether these pods reach the API server"
        )
    return None
