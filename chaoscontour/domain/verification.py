"""Deciding, from Lease readings alone, whether Contour really lost the API server; and the dead-man deadline.

Why the Lease's own duration is the yardstick: client-go's leader elector (tools/leaderelection) refuses timings
where ``renewDeadline >= leaseDuration`` or ``retryPeriod * 1.2 >= renewDeadline``, renews every ``retryPeriod``
while it can, and gives the leadership up when it could not renew for ``renewDeadline``. So whatever
``--leader-election-lease-duration / -renew-deadline / -retry-period`` a Contour runs with, a leader that still
reaches the API server writes the Lease more often than once per ``leaseDurationSeconds``. Seeing the same Lease
unchanged for longer than that, measured on our own monotonic clock between two of our own reads, cannot happen
while a Contour still reaches the API server. A fixed window (the 8 s this tool used to wait) is only sound for the
2 s default retry period.

No timestamp written by another machine is compared with ours: we compare the Lease with itself (its
``resourceVersion`` and ``renewTime`` changing or not) and measure time on our monotonic clock.
"""

import ipaddress
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

__all__ = [
    "EVIDENCE_QUIET",
    "LeaseReading",
    "RenewalWatch",
    "blocked_networks",
    "fault_held_reasons",
    "next_deadline_s",
    "reading",
    "uncovered_addresses",
]

EVIDENCE_QUIET = "lease-unchanged-longer-than-its-duration"


@dataclass(frozen=True)
class LeaseReading:
    """What one read of the Lease tells us, stamped with our monotonic clock at the time of the read."""

    at: float
    version: str
    holder: str
    renew_time: str
    duration_s: float | None


def reading(lease: Mapping[str, Any], at: float) -> LeaseReading:
    metadata = lease.get("metadata") or {}
    spec = lease.get("spec") or {}
    duration = spec.get("leaseDurationSeconds")
    return LeaseReading(
        at=at,
        version=str(metadata.get("resourceVersion") or ""),
        holder=str(spec.get("holderIdentity") or ""),
        renew_time=str(spec.get("renewTime") or ""),
        duration_s=float(duration) if isinstance(duration, (int, float)) and not isinstance(duration, bool) else None,
    )


@dataclass
class RenewalWatch:
    """Fed with Lease readings; confirms the fault once the Lease stayed unchanged for longer than it must.

    ``required_quiet_s`` starts as the Lease's duration while a holder held it (a release rewrites the duration
    to 1 s, which must never shorten the wait), lengthened by ``min_quiet_s`` (the user's ``verify_window_s``).
    ``quiet_from`` is the earliest moment quiet may be counted from: a replacement pod that is not running yet
    cannot renew, so quiet before it runs proves nothing.
    """

    min_quiet_s: float = 0.0
    quiet_from: float = 0.0
    required_quiet_s: float = 0.0
    changes: int = 0
    renewals: int = 0
    last: LeaseReading | None = None
    since: float = 0.0
    holders: list[str] = field(default_factory=list)

    def observe(self, new: LeaseReading) -> None:
        if new.holder and new.duration_s:
            self.required_quiet_s = max(self.required_quiet_s, new.duration_s, self.min_quiet_s)
        if self.last is None:
            self.last, self.since = new, new.at
            return
        if new.version != self.last.version or new.renew_time != self.last.renew_time:
            self.changes += 1
            if new.holder:
                self.renewals += 1
                if new.holder not in self.holders:
                    self.holders.append(new.holder)
            self.since = new.at
        self.last = new

    def quiet_s(self) -> float:
        """How long the Lease was seen unchanged, between two reads of ours, counted from ``quiet_from`` at best."""
        if self.last is None:
            return 0.0
        return max(0.0, self.last.at - max(self.since, self.quiet_from))

    def confirmed(self) -> bool:
        return self.last is not None and self.required_quiet_s > 0 and self.quiet_s() > self.required_quiet_s


def next_deadline_s(elapsed_s: float, dead_man_s: float, duration_s: float) -> int:
    """The expiry Job's next ``activeDeadlineSeconds``: ``dead_man_s`` beyond now, never beyond ``duration_s``.

    ``elapsed_s`` is measured on our monotonic clock from just before the Job was created, so it is at least the
    time since the Job's ``status.startTime`` (the job controller sets that after creation), and the deadline we
    write is at least ``dead_man_s`` in the future, whatever the cluster's clock says. If this process dies, the
    Job's deadline passes at most ``dead_man_s`` (plus the creation-to-start delay) after its last heartbeat.
    """
    wanted = int(elapsed_s + dead_man_s + 0.999)
    return max(1, min(int(duration_s + 0.999), wanted))


def blocked_networks(policy: Mapping[str, Any]) -> list[str]:
    """The CIDRs a block policy of ours denies: the ``except`` lists of its egress ``ipBlock`` rules."""
    blocked: list[str] = []
    for rule in (policy.get("spec") or {}).get("egress") or []:
        for peer in rule.get("to") or []:
            for cidr in (peer.get("ipBlock") or {}).get("except") or []:
                if cidr not in blocked:
                    blocked.append(str(cidr))
    return blocked


def uncovered_addresses(addresses: Sequence[str], blocked: Sequence[str]) -> list[str]:
    """The API-server addresses that none of ``blocked`` covers (an endpoint that appeared during the fault)."""
    networks = [ipaddress.ip_network(c, strict=False) for c in blocked]
    missing = []
    for address in addresses:
        ip = ipaddress.ip_address(address)
        if not any(ip.version == n.version and ip in n for n in networks):
            missing.append(address)
    return missing


def fault_held_reasons(
    *,
    policy_present: bool,
    uncovered: Sequence[str],
    job_finished: str,
    expires_in_s: float | None,
    confirmed: Mapping[str, Any] | None,
    lease_version: str,
    lease_holder: str,
) -> list[str]:
    """Why the API-server fault did not hold for the whole window (empty: it held). Pure, so it is unit-tested."""
    reasons = []
    if not policy_present:
        reasons.append("the NetworkPolicy is gone: the fault ended before the window did")
    if uncovered:
        reasons.append(
            f"API-server endpoint(s) {', '.join(uncovered)} appeared during the fault and are not blocked: Contour "
            "may have reached the API server through them"
        )
    if job_finished:
        reasons.append(f"the expiry Job has finished ({job_finished}): the fault is being removed")
    elif expires_in_s is not None and expires_in_s <= 0:
        reasons.append("the fault's deadline has passed: Kubernetes is removing it")
    if confirmed is None:
        reasons.append("the fault was never confirmed in this run (verify=false, or another process blocked it)")
    elif lease_version != confirmed.get("version"):
        reasons.append(
            f"Lease {confirmed.get('lease_namespace')}/{confirmed.get('lease_name')} was written after the fault "
            f"was confirmed (holder now {lease_holder or 'none'!r}): a Contour reached the API server during the "
            "window"
        )
    return reasons
