"""Reading Contour's leader-election Lease (coordination.k8s.io/v1), as plain API-shaped dictionaries."""

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from chaoscontour.domain.identity import InvalidHolderIdentity, parse_holder_identity

__all__ = ["lease_summary", "parse_api_time", "renewed_by_other"]


def parse_api_time(value: object) -> datetime | None:
    """A Kubernetes Time/MicroTime (``2026-11-26T19:00:00.123456Z``) as an aware datetime; ``None`` stays ``None``."""
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        return value if value.tzinfo else value.replace(tzinfo=UTC)
    return datetime.fromisoformat(str(value).replace("Z", "+00:00"))


def format_api_time(when: datetime | None) -> str | None:
    return when.astimezone(UTC).isoformat().replace("+00:00", "Z") if when else None


def lease_summary(lease: Mapping[str, Any], now: datetime) -> dict[str, Any]:
    """What an SRE wants to know about the Lease: who holds it, since when, and whether it is still being renewed.

    ``held`` is true when there is a holder whose last renewal is younger than the lease duration: after that,
    any other candidate may take the Lease (client-go leaderelection).
    """
    metadata = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    renew = parse_api_time(spec.get("renewTime"))
    acquire = parse_api_time(spec.get("acquireTime"))
    duration_s = spec.get("leaseDurationSeconds")
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
    }


def renewed_by_other(lease: Mapping[str, Any], old_holder: str, after: datetime) -> bool:
    """Whether someone other than ``old_holder`` holds the Lease and renewed it after ``after``."""
    spec = lease.get("spec") or {}
    holder = spec.get("holderIdentity") or ""
    renew = parse_api_time(spec.get("renewTime"))
    return bool(holder) and holder != old_holder and renew is not None and renew > after
