"""experiments/xds-blackhole.json with the real ``chaos`` CLI on the sandbox, judged on its journal and by the gate.

The sandbox enforces NetworkPolicy per packet (Cilium-like), so Envoy's open xDS streams to Contour are cut, not
refused: Envoy's own keepalive (30 s idle + 3 x 5 s) ends them at about 45 s (Contour's reset after ~30 s does not
reach Envoy's socket on the real node); then Envoy starts a new stream every ~5.5 s (5 s connect timeout), so it is
back within seconds of the heal. The figures measured here are docs/measurements.md's.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from typing import Any

from kubernetes import client

from chaoscontour.tools.verdict import judge
from tests.support.chaosrun import EXPERIMENTS, ChaosRun, activity, keep_journal
from tests.support.sandbox import HEALTHY_TIMEOUT_S, NS, OURS, Sandbox, contour_healthy, leftovers, wait_until

EXPERIMENT = EXPERIMENTS / "xds-blackhole.json"
# Every timing as a string through --var, as a user writes it: nothing is coerced on the way.
VARIABLES = {
    "route_namespace": "demo",
    "route_httpproxy": "echo",
    "sampling_s": "105",
    "held_back_s": "10",
    "fault_window_s": "0",
    "detection_bound_s": "60",
    "convergence_bound_s": "15",
    "baseline_bound_s": "10",
    "dead_man_s": "20",
    "fault_expiry_s": "300",
}


def marker_headers(k: Any) -> list[dict[str, Any]]:
    proxy = client.CustomObjectsApi(k.api).get_namespaced_custom_object(
        "projectcontour.io", "v1", "demo", "httpproxies", "echo"
    )
    return [
        h
        for route in proxy["spec"]["routes"]
        for h in (route.get("responseHeadersPolicy") or {}).get("set") or []
        if h["name"] == "x-chaoscontour-config"
    ]


def test_envoy_routes_through_the_xds_black_hole_notices_it_and_converges_after_the_heal(
    sandbox: Sandbox, healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    # Judged here and kept for test_journals_report.py, which renders its report's xDS timeline.
    run = ChaosRun(EXPERIMENT, tmp_path, {}, name="xds-blackhole", variables=VARIABLES)
    journal = run.run(timeout_s=360)
    keep_journal(run)

    assert journal["status"] == "completed", run.log()[-3000:]
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["steady_states"]["after"]["steady_state_met"] is True
    assert journal["deviated"] is False

    baseline = activity(journal, "route-change-before-the-fault")
    assert baseline["status"] == "succeeded", baseline.get("exception")
    assert baseline["output"]["propagation_s"] <= 5, baseline["output"]

    block = activity(journal, "block-xds-egress")
    assert block["status"] == "succeeded", block.get("exception")
    check = block["output"]["verification"]
    assert check["confirmed"] is True and check["evidence"] == "envoy-reported-xds-disconnected", check
    # Contour's reset after ~30 s of silence, or Envoy's own keepalive (30 s idle + 3 x 5 s) at the latest.
    assert check["confirmed_after_s"] <= 55, check

    during = activity(journal, "route-change-during-the-fault")
    assert during["status"] == "succeeded", during.get("exception")
    assert during["output"]["arrived"] is False

    held = activity(journal, "the-fault-held-for-the-whole-window")["output"]
    assert held["held"] is True, held
    assert held["updates_since_confirmed"] == 0

    converged = activity(journal, "route-config-converged-after-the-heal")
    assert converged["status"] == "succeeded", converged.get("exception")
    assert converged["output"]["marker"] == during["output"]["marker"], "the change made during the fault arrives"

    timeline = activity(journal, "envoy-xds-timeline")["output"]
    assert timeline["connected_at_start"] is True and timeline["connected_at_end"] is True
    assert timeline["detected_after_s"] is not None and timeline["detected_after_s"] <= 55, timeline
    assert timeline["reconnect_attempts"] >= 1, "Envoy kept trying during the fault"
    assert timeline["current_after_s"] is not None and timeline["current_after_s"] <= 15, timeline
    assert timeline["meets_bounds"] is True, timeline["bound_misses"]

    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["availability"] >= 0.999, availability
    assert availability["meets_min_availability"] is True

    for name in ("unblock-xds-egress", "remove-the-route-marker"):
        assert activity(journal, name, where="rollbacks")["status"] == "succeeded"
    assert leftovers(k) == []
    assert marker_headers(k) == [], "the rollback takes the marker header out of the route"
    verdict = judge(journal)
    assert verdict.passed, verdict.reasons
    # The Contour pods restarted during the fault come back Ready on their readiness probe's period (10 s in the
    # release manifest), and Envoy reconnects on its own back-off: wait for both, within the fixture's bound.
    wait_until("Contour healthy again after the run", lambda: contour_healthy(k, healthy_contour), HEALTHY_TIMEOUT_S)

    figures["xds-blackhole"] = {
        "baseline_propagation_s": baseline["output"]["propagation_s"],
        "verification_detected_after_s": check["confirmed_after_s"],
        "timeline_detected_after_s": timeline["detected_after_s"],
        "held_back_s": during["output"]["held_back_s"],
        "reconnect_attempts_during_fault": timeline["reconnect_attempts"],
        "reconnected_after_heal_s": timeline["reconnected_after_s"],
        "current_after_heal_s": timeline["current_after_s"],
        "converged_after_heal_s": converged["output"]["since_heal_s"],
        "change_during_fault_served_after_s": converged["output"]["since_change_s"],
        "availability": availability["availability"],
        "requests": availability["requests"],
        "longest_outage_s": availability["longest_outage_s"],
    }


def test_sigterm_mid_fault_plays_both_rollbacks_and_envoy_is_current_again_within_seconds(
    sandbox: Sandbox, healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """The wait, the sampler and the timeline stop at once; the policy and the route marker are removed."""
    variables = {**VARIABLES, "fault_window_s": "60", "held_back_s": "1"}
    run = ChaosRun(EXPERIMENT, tmp_path, {}, name="xds-sigterm", variables=variables).start()
    run.wait_for_log("Action: hold-the-fault-window", timeout_s=150)
    time.sleep(1)
    assert len(k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items) == 1
    signalled = time.monotonic()
    run.signal(signal.SIGTERM)
    removed_after = wait_until("the rollback to remove the fault", lambda: not leftovers(k), 30, every_s=0.2)
    run.wait(timeout_s=60)
    exited_after = time.monotonic() - signalled
    journal = run.journal()

    assert journal["status"] == "interrupted"
    for name in ("unblock-xds-egress", "remove-the-route-marker"):
        assert activity(journal, name, where="rollbacks")["status"] == "succeeded"
    timeline = activity(journal, "envoy-xds-timeline")["output"]
    assert timeline["stopped_early"] is True and timeline["detected_after_s"] is not None
    assert marker_headers(k) == []
    assert not judge(journal).passed, "an interrupted run never passes the gate"
    wait_until("Envoy current again", lambda: contour_healthy(k, healthy_contour), 30)
    figures["xds-sigterm"] = {
        "policy_removed_after_s": round(removed_after, 1),
        "exited_after_s": round(exited_after, 1),
    }
    assert removed_after <= 5, removed_after
    assert exited_after <= 15, exited_after
