"""The gate's checks on what chaoscontour's own method activities returned: the ``envoy_availability`` figures exist,
every ``block_apiserver_egress`` and ``block_xds_egress`` confirmed its fault (or the caller accepts an unverified
one), the ``apiserver_egress_fault`` and ``xds_egress_fault`` probes saw the fault hold to the end of its window, no
probe saw the blocked Contour or Envoy get through while a confirmed block was in force, the endpoint view tested
stale endpoints, and the xDS timeline met its bounds. (An ``envoy_success_ratio`` probe's declared tolerance is
checked on its result, :mod:`chaoscontour.tools.activity_results`; here a probe without one is noted as not judged.)
"""

from __future__ import annotations

from collections.abc import Mapping

from chaoscontour import contract
from chaoscontour.contract import FaultVerification, XdsStream
from chaoscontour.tools.activity_results import PHASE_METHOD, ActivityResult, excerpt
from chaoscontour.tools.findings import SUCCESS_RATIOS, fault_reasons
from chaoscontour.tools.journal import (
    APISERVER_FAULT,
    BLOCK_APISERVER,
    BLOCK_XDS,
    ENDPOINT_VIEW,
    ENVOY_AVAILABILITY,
    ENVOY_XDS,
    LEASE_HOLDER,
    RESTART_ENVOY,
    XDS_FAULT,
    XDS_TIMELINE,
    number,
    output_as,
)
from chaoscontour.tools.pod_kills import pod_kill_reasons

__all__ = ["chaoscontour_reasons"]


def _verification(block: ActivityResult) -> FaultVerification | None:
    """What a block's verification found (``block_apiserver_egress`` and ``block_xds_egress`` report it alike)."""
    return (output_as(block.output, contract.BLOCK_APISERVER_EGRESS) or {}).get("verification")


def _unverified_block(r: ActivityResult) -> tuple[str, bool] | None:
    """Why a succeeded ``block_apiserver_egress`` run does not prove its fault, and whether that may be accepted
    (no verification at all) or never (a verification that did not confirm the fault)."""
    check = _verification(r)
    if isinstance(check, Mapping) and check.get("confirmed") is True:
        return None
    if not isinstance(check, Mapping):
        return f"the fault of {r.name!r} was not verified (its output has no verification)", True
    if check.get("confirmed") is None:
        return f"the fault of {r.name!r} was not verified (verify=false)", True
    evidence = check.get("evidence_text") or check.get("evidence")
    return f"the fault of {r.name!r} was not confirmed" + (f": {evidence}" if evidence else ""), False


def _during_a_confirmed_block(
    method: list[ActivityResult], block_func: str = BLOCK_APISERVER
) -> list[tuple[ActivityResult, ActivityResult]]:
    """The method's results that started while a *confirmed* block (``block_func``) was in force: after the block
    returned (it returns once its verification confirmed the fault), before any unblock of the same fault in the
    method started; each with that block's result."""
    unblock = contract.UNBLOCK_OF[block_func]
    found: list[tuple[ActivityResult, ActivityResult]] = []
    for index, block in enumerate(method):
        if block.ours != block_func:
            continue
        check = _verification(block)
        if not isinstance(check, Mapping) or check.get("confirmed") is not True:
            continue
        later = method[index + 1 :]
        heal = next((r.start for r in later if r.ours == unblock and r.ran and r.start), None)
        for r in later:
            in_window = bool(r.start and block.end and r.start >= block.end and (heal is None or r.start < heal))
            if r.ran and in_window:
                found.append((r, block))
    return found


def _contradicting_evidence(method: list[ActivityResult]) -> list[str]:
    """A Lease seen held while a confirmed API-server block was in force: a Contour renewed it, so it reached the API
    server and the fault did not hold, whatever the end-of-window probe says (it may have run before, or read
    another object); only the Lease the block verified counts. And an xDS stream seen on an open connection while a
    confirmed xDS block was in force: Envoy reached Contour again."""
    reasons = []
    for r, block in _during_a_confirmed_block(method):
        if r.ours != LEASE_HOLDER:
            continue
        output = output_as(r.output, contract.LEASE_HOLDER) or {}
        blocked = output_as(block.output, contract.BLOCK_APISERVER_EGRESS) or {}
        verified = str(blocked["verification"].get("lease") or "")
        lease = f"Lease {output.get('namespace')}/{output.get('name')}"
        if lease == verified and output.get("held") is True:
            reasons.append(
                f"{r.name!r} saw {verified} held during the API-server fault (renewed "
                f"{output.get('seconds_since_renewal')} s before, by {output.get('holder_identity')}): a Contour "
                "still reached the API server after the fault was confirmed, so it did not hold"
            )
    for r, block in _during_a_confirmed_block(method, BLOCK_XDS):
        if r.ours != ENVOY_XDS:
            continue
        connection = output_as(r.output, contract.ENVOY_XDS_CONNECTED) or {}
        found = connection.get("stream")
        stream: XdsStream = found if isinstance(found, Mapping) else {}
        # Only an open connection counts: a connected_state gauge alone reads 1 while Envoy merely dials.
        if connection.get("connected") is True and (number(stream.get("streams_open")) or 0):
            reasons.append(
                f"{r.name!r} saw Envoy's xDS stream up during the xDS fault of {block.name!r} "
                f"({stream.get('streams_open')} stream(s) open on {stream.get('xds_cluster')}, none waiting): "
                "Envoy opened a connection to Contour after the fault was confirmed, so it did not hold "
                "(a probe must read one of the Envoy pods the block selected)"
            )
    return reasons


def _restart_reasons(r: ActivityResult) -> list[str]:
    """Why a ``restart_envoy_pod`` run fails the gate: evidence that a Contour still served xDS while cut off (the
    replacement got configuration before the heal), a follow that ended before the heal or before any 200, and, by
    design of that experiment, a replacement that served too little: that Envoy's traffic failed until the heal."""
    lane = output_as(r.output, contract.RESTART_ENVOY_POD) or {}
    got = [what for what, key in (("was served", "served_before_heal"), ("became Ready", "ready_before_heal"),
           ("answered on its stats listener", "stats_before_heal")) if lane.get(key) is True]  # fmt: skip
    if got:
        return [
            f"{r.name!r}: the replacement Envoy {lane.get('replacement_pod')} {' and '.join(got)} before the heal, "
            "which the fault makes impossible: a Contour outside contour_selector, or one not cut off, served it xDS"
        ]
    if not lane.get("replacement_pod"):
        return [
            f"{r.name!r}: no replacement of the deleted Envoy pod {lane.get('deleted_pod')} appeared while it followed "
            "(a DaemonSet replaces a pod only once it is gone: its grace period and drain): lengthen follow_s or set "
            "grace_period_s"
        ]
    if lane.get("heal_seen") is not True:
        return [f"{r.name!r} stopped following the replacement Envoy before the heal: lengthen follow_s"]
    if lane.get("first_200_after_heal_s") is None:
        return [f"{r.name!r}: the replacement Envoy {lane.get('replacement_pod')} served nothing, even after the heal"]
    if lane.get("meets_availability") is False:
        return [
            f"{r.name!r}: the Envoy restarted during the outage ({lane.get('replacement_pod')}) served nothing until "
            f"{lane.get('first_200_after_heal_s')} s after the heal (availability {lane.get('availability')}): its "
            "traffic failed while Contour was cut off"
        ]
    return []


def chaoscontour_reasons(
    results: list[ActivityResult], *, allow_unverified: bool
) -> tuple[list[str], list[str], list[str]]:
    """(reasons, unverified faults accepted, notes) from what chaoscontour's method activities returned (and the
    checks on chaostoolkit-kubernetes' pod kills); ``allow_unverified``: a fault nobody verified is accepted."""
    reasons: list[str] = []
    accepted: list[str] = []
    notes: list[str] = []
    method = [r for r in results if r.phase == PHASE_METHOD]
    for r in method:
        succeeded = r.ran and r.status == "succeeded"
        if r.ours == ENVOY_AVAILABILITY and r.ran and not succeeded:
            reasons.append(
                f"no availability figures: the sampler {r.name!r} failed, so nothing shows what Envoy's clients saw"
            )
        elif r.ours == ENVOY_AVAILABILITY and succeeded:
            figures = output_as(r.output, contract.ENVOY_AVAILABILITY) or {}
            if number(figures.get("availability")) is None:
                reasons.append(f"no availability figures: the sampler {r.name!r} returned {excerpt(r.output, 120)}")
        elif r.ours in SUCCESS_RATIOS and succeeded:
            if r.tolerance is None:
                notes.append(f"{r.name!r} declares no tolerance: Envoy's success ratio was measured, not judged")
            elif isinstance(r.tolerance, Mapping) and r.tolerance.get("type") == "probe":
                notes.append(
                    f"{r.name!r}'s tolerance is a probe, which the gate does not run: its ratio was not judged"
                )
        elif r.ours in (BLOCK_APISERVER, BLOCK_XDS) and succeeded:
            unverified = _unverified_block(r)
            if unverified is None:
                continue
            text, acceptable = unverified
            if acceptable and allow_unverified:
                accepted.append(text)
            elif acceptable:
                lost = "Contour lost the API server" if r.ours == BLOCK_APISERVER else "Envoy lost its xDS stream"
                reasons.append(f"{text}: nothing shows {lost} (--allow-unverified accepts that)")
            else:
                reasons.append(text)
        elif r.ours == ENDPOINT_VIEW and succeeded:
            since = (output_as(r.output, contract.ENVOY_BACKEND_VIEW) or {}).get("since")
            if isinstance(since, Mapping) and since.get("endpointslices_changed") and since.get("membership_changed"):
                reasons.append(
                    f"{r.name!r}: Envoy's endpoint list changed during the fault (Contour still saw the "
                    "EndpointSlices), so stale endpoints were not tested; lengthen freeze_wait_s"
                )
        elif r.ours == XDS_TIMELINE and succeeded:
            timeline = output_as(r.output, contract.ENVOY_XDS_TIMELINE) or {}
            if timeline.get("meets_bounds") is False:
                misses = "; ".join(str(m) for m in timeline.get("bound_misses") or []) or "no reason given"
                reasons.append(f"{r.name!r} missed its bounds: {misses}")
        elif r.ours in (APISERVER_FAULT, XDS_FAULT) and succeeded:
            fault = output_as(r.output, contract.APISERVER_EGRESS_FAULT)
            if fault is None or not isinstance(fault.get("held"), bool):
                reasons.append(f"{r.name!r} did not say whether the fault held (no 'held' in its output)")
            elif fault["held"] is False:
                reasons.append(
                    f"the fault did not hold for the whole window ({r.name!r}): {'; '.join(fault_reasons(fault))}"
                )
    reasons += [why for r in method if r.ours == RESTART_ENVOY and r.ran and r.status == "succeeded"
                for why in _restart_reasons(r)]  # fmt: skip
    reasons += _contradicting_evidence(method)
    reasons += pod_kill_reasons(method)
    for block, probe in ((BLOCK_APISERVER, APISERVER_FAULT), (BLOCK_XDS, XDS_FAULT)):
        if any(r.ours == block for r in method) and not any(r.ours == probe for r in method):
            notes.append(
                f"the method has no {probe} probe, so nothing checked that the fault still held at the end "
                "of its window (an experiment written before that probe existed)"
            )
    return reasons, accepted, notes
