"""``chaoscontour cleanup``: remove every object chaoscontour created, for operators.

Finds NetworkPolicies and expiry Jobs labelled ``app.kubernetes.io/managed-by=chaoscontour`` in every namespace
(or one), optionally only those older than a duration, and deletes them (Jobs with background propagation, so
anything they own goes too). It also finds the HTTPProxies and HTTPRoutes carrying a route marker's annotation
(``chaoscontour.io/route-marker-*``, see ``chaoscontour.domain.route_marker``) and restores their routes as
`remove_route_marker` does, expired or not, as it deletes faults whatever their deadline (``--older-than`` counts
from the marker's last write). ``--dry-run`` lists what would go. Deleting what is already gone is success; an
annotation it cannot read is reported and makes the exit status 1.
"""

import argparse
import re
import sys
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from chaoslib.exceptions import ActivityFailed

from chaoscontour.domain import route_marker
from chaoscontour.domain.lease import format_api_time, parse_api_time
from chaoscontour.domain.policy import FAULT_LABEL, MANAGED_BY, MANAGED_BY_LABEL, RUN_ID_LABEL
from chaoscontour.edges import heartbeat, route_objects
from chaoscontour.edges.kube import Kube, call, delete_in_background, kube, to_dict

__all__ = ["parse_duration_s", "older_than", "main"]

_DURATION = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*(s|m|h|d)?\s*$")
_UNIT_S = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration_s(text: str) -> float:
    """``90``, ``90s``, ``15m``, ``2h``, ``1d`` -> seconds."""
    match = _DURATION.match(text)
    if not match:
        raise ValueError(f"{text!r} is not a duration; write e.g. 90s, 15m, 2h or 1d")
    return float(match.group(1)) * _UNIT_S[match.group(2) or "s"]


def older_than(objects: Sequence[dict[str, Any]], now: datetime, min_age_s: float) -> list[dict[str, Any]]:
    """The objects whose ``creationTimestamp`` is at least ``min_age_s`` seconds before ``now``."""
    kept = []
    for obj in objects:
        created = parse_api_time((obj.get("metadata") or {}).get("creationTimestamp"))
        if created is None or (now - created).total_seconds() >= min_age_s:
            kept.append(obj)
    return kept


def _ours(k: Kube, namespace: str | None) -> list[tuple[str, dict[str, Any]]]:
    selector = f"{MANAGED_BY_LABEL}={MANAGED_BY}"
    if namespace:
        policies = call(
            "list NetworkPolicies", k.networking.list_namespaced_network_policy, namespace, label_selector=selector
        )
        jobs = call("list Jobs", k.batch.list_namespaced_job, namespace, label_selector=selector)
    else:
        policies = call(
            "list NetworkPolicies", k.networking.list_network_policy_for_all_namespaces, label_selector=selector
        )
        jobs = call("list Jobs", k.batch.list_job_for_all_namespaces, label_selector=selector)
    return [("NetworkPolicy", p) for p in to_dict(k, policies).get("items") or []] + [
        ("Job", j) for j in to_dict(k, jobs).get("items") or []
    ]


_Found = list[tuple[route_objects.RouteKind, str, str, route_marker.MarkerRecord | route_marker.InvalidRecord]]


def _markers(k: Kube, namespace: str | None) -> tuple[_Found, datetime]:
    """Every route-marker annotation on the HTTPProxies and HTTPRoutes in ``namespace`` (or all): (kind, namespace,
    name, record or why it cannot be read), and the API server's clock."""
    found: _Found = []
    now = None
    for kind in route_objects.KINDS:
        objects, now = route_objects.list_at(k, namespace, kind)
        for obj in objects:
            meta = obj.get("metadata") or {}
            for _key, record in route_marker.records(obj):
                found.append((kind, str(meta.get("namespace")), str(meta.get("name")), record))
    assert now is not None
    return found, now


def _restore_marker(
    k: Kube, kind: route_objects.RouteKind, namespace: str, name: str, listed: route_marker.MarkerRecord
) -> bool:
    """Restore the marker listed (still the same run's), resourceVersion-safely; whether it was still there."""

    def change(proxy: dict[str, Any] | None, _now: datetime) -> tuple[bool, bool]:
        try:
            record = route_marker.read_record(proxy, listed.header) if proxy is not None else None
        except route_marker.InvalidRecord:  # rewritten since it was listed: reported on the next cleanup
            return False, False
        if record is None or record.run_id != listed.run_id:
            return False, False
        route_marker.restore(proxy or {}, record)
        return True, True

    return route_objects.update_route(k, namespace, name, change, kind)


def _clean_markers(k: Kube, args: argparse.Namespace, min_age_s: float) -> tuple[int, int, int]:
    """Restore (or list) the route markers; (restored or listed, kept as too young, unreadable)."""
    found, now = _markers(k, args.namespace)
    done = young = bad = 0
    for kind, namespace, name, record in found:
        if isinstance(record, route_marker.InvalidRecord):
            print(f"cannot restore {kind.kind} {namespace}/{name}: {record}", file=sys.stderr)
            bad += 1
            continue
        if (now - record.written_at).total_seconds() < min_age_s:
            young += 1
            continue
        state = "expired" if record.expired(now) else "expires"
        where = (
            f"route marker {record.header} on {kind.kind} {namespace}/{name} (run {record.run_id}, {state} at "
            f"{format_api_time(record.expires_at)})"
        )
        if args.dry_run:
            print(f"would restore {where}")
        else:
            gone = not _restore_marker(k, kind, namespace, name, record)
            print(f"{'already gone' if gone else 'restored'}: {where}")
        done += 1
    return done, young, bad


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="chaoscontour cleanup",
        description="Remove the NetworkPolicies and expiry Jobs that chaoscontour created "
        f"(label {MANAGED_BY_LABEL}={MANAGED_BY}) and restore the HTTPProxy and HTTPRoute routes carrying a route "
        "marker "
        f"(annotation {route_marker.ANNOTATION_PREFIX}*). Uses KUBECONFIG / KUBERNETES_CONTEXT like the activities.",
    )
    parser.add_argument("--namespace", "-n", help="only this namespace (default: all namespaces)")
    parser.add_argument("--older-than", default="0s", help="only objects at least this old, e.g. 30m (default: all)")
    parser.add_argument("--dry-run", action="store_true", help="list what would be removed, remove nothing")
    args = parser.parse_args(argv)
    try:
        min_age_s = parse_duration_s(args.older_than)
    except ValueError as exc:
        parser.error(f"--older-than: {exc}")
    try:
        k = kube()
        found = _ours(k, args.namespace)
        now = datetime.now(UTC)
        stale = {id(obj) for obj in older_than([obj for _, obj in found], now, min_age_s)}
        targets = [(kind, obj) for kind, obj in found if id(obj) in stale]
        for kind, obj in targets:
            meta = obj["metadata"]
            where = f"{kind} {meta['namespace']}/{meta['name']} (run {meta.get('labels', {}).get(RUN_ID_LABEL, '?')})"
            if args.dry_run:
                print(f"would remove {where}")
                continue
            labels = meta.get("labels") or {}
            if kind == "Job" and labels.get(RUN_ID_LABEL) and labels.get(FAULT_LABEL):
                # a fault of this very process (a notebook, a test): stop its dead-man heartbeat too
                key = heartbeat.key_of(labels[FAULT_LABEL], labels[RUN_ID_LABEL])
                heartbeat.stop_heartbeat(meta["namespace"], key)
            gone = delete_in_background(k, kind, meta["namespace"], meta["name"], doing=f"delete {where}")
            print(f"{'removed' if gone else 'already gone'}: {where}")
    except ActivityFailed as exc:
        print(f"chaoscontour cleanup: {exc}", file=sys.stderr)
        return 1
    verb = "would remove" if args.dry_run else "removed"
    print(f"{verb} {len(targets)} object(s); {len(found) - len(targets)} younger than {args.older_than} kept")
    try:
        markers, young_markers, unreadable = _clean_markers(k, args, min_age_s)
    except ActivityFailed as exc:
        # e.g. no RBAC on HTTPProxies: the faults above are dealt with; say what was not checked
        print(f"chaoscontour cleanup: route markers not checked: {exc}", file=sys.stderr)
        return 1
    restore = "would restore" if args.dry_run else "restored"
    print(f"{restore} {markers} route marker(s); {young_markers} younger than {args.older_than} kept")
    return 1 if unreadable else 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
