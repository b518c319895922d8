"""The shipped experiments, run with the real ``chaos`` CLI against the sandbox, judged on journal.json.

(chaostoolkit exits 0 when the steady state is missed before the method, so the exit code alone proves nothing.)
Each test starts from a healthy Contour (fresh pods when an earlier test left restarts, so CrashLoopBackOff back-off
does not carry over) and sizes its fault window to what it must see.
"""

from __future__ import annotations

import os
import shutil
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed

from chaoscontour.activities.leader import lease_holder
from chaoscontour.activities.network import block_apiserver_egress, unblock_apiserver_egress
from chaoscontour.domain.lease import parse_api_time

from .chaosrun import EXPERIMENTS, ChaosRun, activity, variant, write
from .conftest import (
    HEALTHY_TIMEOUT_S,
    NS,
    OURS,
    Sandbox,
    contour_healthy,
    contour_pods,
    contour_restarted,
    leftovers,
    wait_until,
)

# --- fixtures and helpers ------------------------------------------------------------------------------------------


class RestartWatcher:
    """Polls Contour's pods during a run and records when each container's restart count went up."""

    def __init__(self, k: Any) -> None:
        self.k = k
        self.events: list[tuple[float, str, int]] = []
        self._stop = threading.Event()
        self._seen: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> RestartWatcher:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _run(self) -> None:
        while not self._stop.wait(0.5):
            try:
                pods = contour_pods(self.k)
            except Exception:  # a transient API error must not kill the watcher
                continue
            for pod in pods:
                count = sum(cs.restart_count for cs in pod.status.container_statuses or [])
                if count > self._seen.get(pod.metadata.name, 0):
                    self.events.append((time.time(), pod.metadata.name, count))
                self._seen[pod.metadata.name] = count


def journal_time(value: str) -> float:
    """chaostoolkit writes UTC times without a zone."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def keep_journal(run: ChaosRun) -> None:
    """Copy the journal where CI judges and renders it (`CHAOSCONTOUR_SANDBOX_JOURNALS`)."""
    target = os.environ.get("CHAOSCONTOUR_SANDBOX_JOURNALS")
    if target and run.journal_path.exists():
        Path(target).mkdir(parents=True, exist_ok=True)
        shutil.copy(run.journal_path, Path(target) / run.journal_path.name)


def leader_exit_time(sandbox: Sandbox, pod: str) -> float | None:
    """When Contour logged "leader election lost" in ``pod`` (its JSON log's ``time``), as a UNIX time."""
    for line in sandbox.container_logs(NS, pod, "contour").splitlines():
        if "leader election lost" in line and "time=" in line:
            stamp = line.split("time=", 1)[1].split(" ", 1)[0].strip('"')
            when = parse_api_time(stamp)
            if when:
                return when.timestamp()
    return None


def assert_steady_before_and_after(journal: dict[str, Any]) -> None:
    assert journal["status"] == "completed", journal["status"]
    assert journal["steady_states"]["before"]["steady_state_met"] is True
    assert journal["steady_states"]["after"]["steady_state_met"] is True
    assert journal["deviated"] is False


# --- the apiserver outage --------------------------------------------------------------------------------------------


def test_apiserver_outage_envoy_keeps_routing_while_every_contour_replica_restarts(
    sandbox: Sandbox, healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    # The liveness probe restarts Contour about 30 s into the outage: a 40 s window sees it.
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "40", "SAMPLING_S": "60", "FAULT_EXPIRY_S": "240", "RECOVERY_TIMEOUT_S": "150"},
        name="apiserver-outage",
    )
    with RestartWatcher(k) as watcher:
        journal = run.run(timeout_s=420)
    keep_journal(run)
    assert_steady_before_and_after(journal)

    leader_before = journal["steady_states"]["before"]["probes"][1]["output"]
    block = activity(journal, "block-apiserver-egress")
    assert block["status"] == "succeeded", block.get("exception")
    verification = block["output"]["verification"]
    assert verification["confirmed"] is True and verification["signal"] == "lease-renewals-stopped"
    blocked_at = journal_time(block["start"])

    during = activity(journal, "lease-during-the-fault")["output"]
    assert during["held"] is False and during["seconds_since_renewal"] >= 30, "the Lease kept being renewed"

    restarts = activity(journal, "contour-restarts-during-the-fault")["output"]
    restarted_pods = {t["pod"] for t in restarts["terminations"]}
    assert restarted_pods == {p["name"] for p in restarts["pods"]}, "every replica restarts"

    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["availability"] >= 0.999, availability
    assert availability["meets_min_availability"] is True
    assert "longest_outage_s" in availability

    xds = activity(journal, "envoy-xds-state-during-the-fault")
    assert xds["status"] == "succeeded"

    rollback = activity(journal, "unblock-apiserver-egress", where="rollbacks")
    assert rollback["status"] == "succeeded"
    assert leftovers(k) == []
    assert activity(journal, "leader-re-elected")["output"]["held"] is True
    assert contour_healthy(k, healthy_contour)

    exit_at = leader_exit_time(sandbox, leader_before["pod_name"])
    assert exit_at is not None, "the old leader never logged 'leader election lost'"
    restart_offsets = sorted({pod: round(t - blocked_at, 1) for t, pod, count in reversed(watcher.events)}.items())
    figures["apiserver-outage"] = {
        "block_to_leader_exit_s": round(exit_at - blocked_at, 1),
        "block_to_first_restart_per_pod_s": dict(restart_offsets),
        "restart_events": [(round(t - blocked_at, 1), pod, count) for t, pod, count in watcher.events],
        "total_restarts_during_fault": restarts["total_restarts"],
        "lease_seconds_since_renewal_during_fault": during["seconds_since_renewal"],
        "verification_confirmed_after_s": verification["confirmed_after_s"],
        "availability": availability["availability"],
        "requests": availability["requests"],
        "longest_outage_s": availability["longest_outage_s"],
        "p99_ms": availability["latency_ms"]["p99"],
        "xds_connected_during_fault": xds["output"]["connected"],
        "recovery_leader_wait_s": activity(journal, "leader-re-elected")["duration"],
    }


def test_leader_kill_fails_over_within_client_go_worst_case(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    run = ChaosRun(EXPERIMENTS / "leader-kill.json", tmp_path, {"SAMPLING_S": "30"}, name="leader-kill")
    journal = run.run(timeout_s=240)
    keep_journal(run)
    assert_steady_before_and_after(journal)
    kill = activity(journal, "kill-the-contour-leader")
    assert kill["status"] == "succeeded", kill.get("exception")
    out = kill["output"]
    assert out["new_pod"] != out["old_pod"]
    # client-go: lease duration 15 s counted from the candidate's observation, polls every 2 s x [1, 2.2).
    assert out["failover_s"] <= 2.2 * 2 + 15 + 2.2 * 2, out
    availability = activity(journal, "envoy-availability-across-the-failover")["output"]
    assert availability["availability"] >= 0.999, availability
    figures["leader-kill"] = {
        "failover_s": out["failover_s"],
        "availability": availability["availability"],
        "longest_outage_s": availability["longest_outage_s"],
    }


def test_outage_with_the_policy_deleted_by_hand_mid_run_recovers_and_leaves_nothing(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path
) -> None:
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "15", "SAMPLING_S": "30", "FAULT_EXPIRY_S": "240"},
        name="deleted-by-hand",
    ).start()
    run.wait_for_log("Pausing after activity", timeout_s=120)
    policies = k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items
    assert len(policies) == 1
    k.networking.delete_namespaced_network_policy(policies[0].metadata.name, NS)
    run.wait(timeout_s=300)
    journal = run.journal()
    assert_steady_before_and_after(journal)
    unblock = activity(journal, "unblock-apiserver-egress")
    assert unblock["status"] == "succeeded"
    assert unblock["output"]["removed_policies"] == [], "the policy was already gone"
    assert activity(journal, "unblock-apiserver-egress", where="rollbacks")["status"] == "succeeded"
    assert leftovers(k) == []


def test_sigterm_mid_fault_then_documented_cleanup_leaves_nothing_and_contour_recovers(
    sandbox: Sandbox, healthy_contour: dict[str, str], k: Any, tmp_path: Path
) -> None:
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "30", "SAMPLING_S": "40", "FAULT_EXPIRY_S": "240"},
        name="sigterm",
    ).start()
    run.wait_for_log("Pausing after activity", timeout_s=120)
    run.signal(signal.SIGTERM)
    run.wait(timeout_s=120)
    journal = run.journal()
    assert journal["status"] == "interrupted"
    cleanup = sandbox_cleanup(healthy_contour)
    assert cleanup.returncode == 0, cleanup.stderr
    assert leftovers(k) == []
    wait_until("Contour to recover", lambda: contour_healthy(k, healthy_contour), HEALTHY_TIMEOUT_S, every_s=1.0)


def sandbox_cleanup(env: dict[str, str]) -> Any:
    import subprocess
    import sys

    return subprocess.run(
        [sys.executable, "-m", "chaoscontour.cli", "cleanup"],
        env=dict(os.environ, **env),
        capture_output=True,
        text=True,
        timeout=60,
    )


# --- CNIs that keep established connections (the sandbox's conntrack mode) -------------------------------------------


@pytest.fixture
def conntrack_mode(sandbox: Sandbox) -> Iterator[None]:
    assert sandbox.cli("mode", "conntrack").returncode == 0
    try:
        yield
    finally:
        assert sandbox.cli("mode", "per-packet").returncode == 0


def test_in_conntrack_mode_a_naive_block_is_caught_by_verification_and_removed(
    conntrack_mode: None, healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    holder = lease_holder(namespace=NS)["holder_identity"]
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "2", "SAMPLING_S": "10", "OPEN_CONNECTIONS": "none"},
        name="conntrack-naive",
    )
    journal = run.run(timeout_s=300)
    keep_journal(run)
    block = activity(journal, "block-apiserver-egress")
    assert block["status"] == "failed"
    message = block["exception"][-1]
    assert "did not take effect" in message and "restart-pods" in message and "The policy was removed" in message
    assert leftovers(k) == []
    # Contour's open HTTP/2 connection to the API server lived on: the same leader, no restart.
    assert lease_holder(namespace=NS)["holder_identity"] == holder
    assert not contour_restarted(k)
    figures["conntrack-naive"] = {"verification_failure": message[:300]}


def test_in_conntrack_mode_restarting_the_pods_makes_the_fault_real(
    conntrack_mode: None, healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    before = {p.metadata.name for p in contour_pods(k)}
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "40", "SAMPLING_S": "60", "OPEN_CONNECTIONS": "restart-pods", "FAULT_EXPIRY_S": "240"},
        name="conntrack-restart-pods",
    )
    journal = run.run(timeout_s=420)
    keep_journal(run)
    assert_steady_before_and_after(journal)
    block = activity(journal, "block-apiserver-egress")["output"]
    assert set(block["restarted_pods"]) == before
    assert block["verification"]["confirmed"] is True
    during = activity(journal, "lease-during-the-fault")["output"]
    assert during["held"] is False
    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["availability"] >= 0.999, availability
    assert leftovers(k) == []
    figures["conntrack-restart-pods"] = {
        "verification_confirmed_after_s": block["verification"]["confirmed_after_s"],
        "availability": availability["availability"],
        "longest_outage_s": availability["longest_outage_s"],
        "restarts_during_fault": activity(journal, "contour-restarts-during-the-fault")["output"]["total_restarts"],
    }


# --- no false passes: a cluster that does not enforce NetworkPolicy --------------------------------------------------


def test_without_enforcement_the_block_fails_and_removes_its_policy(
    sandbox: Sandbox, healthy_contour: dict[str, str], k: Any
) -> None:
    assert sandbox.cli("mode", "off").returncode == 0
    try:
        with pytest.raises(ActivityFailed, match="did not take effect") as failure:
            block_apiserver_egress(namespace=NS, run_id="no-enforcement", verify_window_s=6, verify_timeout_s=12)
    finally:
        assert sandbox.cli("mode", "per-packet").returncode == 0
    assert "does not enforce NetworkPolicy" in str(failure.value)
    assert leftovers(k) == []
    assert not contour_restarted(k)


# --- rollbacks under every outcome, with the shipped experiment's rollbacks ------------------------------------------


def _outcome_probe(name: str, func: str, state: Path) -> dict[str, Any]:
    return {
        "type": "probe",
        "name": name,
        "tolerance": True,
        "provider": {
            "type": "python",
            "module": "outcome_activities",
            "func": func,
            "arguments": {"state_file": str(state)},
        },
    }


FAIL_ACTION = {
    "type": "action",
    "name": "forced-failure",
    "provider": {"type": "python", "module": "outcome_activities", "func": "fail"},
}


@pytest.mark.parametrize(
    "outcome", ["success", "deviation", "action-failure", "probe-raises", "SIGINT", "SIGTERM", "SIGUSR1"]
)
def test_the_shipped_rollback_removes_the_fault_whatever_the_outcome(
    outcome: str, healthy_contour: dict[str, str], k: Any, tmp_path: Path
) -> None:
    state = tmp_path / "probe-state"
    signalled = outcome.startswith("SIG")
    experiment = variant(
        title=f"rollback under outcome {outcome}",
        method_tail=[FAIL_ACTION] if outcome == "action-failure" else [],
        block_pause_s=30 if signalled else 1,
        extra_probes={
            "deviation": [_outcome_probe("flips", "true_then_false", state)],
            "probe-raises": [_outcome_probe("raises", "true_then_raise", state)],
        }.get(outcome, []),
    )
    run = ChaosRun(write(experiment, tmp_path / "experiment.json"), tmp_path, {}, name=f"outcome-{outcome}").start()
    if signalled:
        run.wait_for_log("Pausing after activity", timeout_s=120)
        assert len(k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items) == 1
        run.signal(getattr(signal, outcome))
    run.wait(timeout_s=180)
    journal = run.journal()
    expected = {
        "success": ("completed", False),
        "deviation": ("completed", True),
        "action-failure": ("completed", False),
        "probe-raises": ("failed", True),
    }.get(outcome)
    if expected:
        assert (journal["status"], journal["deviated"]) == expected
    else:
        assert journal["status"] in ("interrupted", "aborted"), journal["status"]
    rollback = activity(journal, "unblock-apiserver-egress", where="rollbacks")
    assert rollback["status"] == "succeeded"
    assert len(rollback["output"]["removed_policies"]) == 1
    assert leftovers(k) == []


def test_two_runs_in_one_namespace_never_remove_each_others_fault(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path
) -> None:
    experiment = variant(title="two runs", method_tail=[], block_pause_s="${hold_s}")
    experiment["configuration"]["hold_s"] = {"type": "env", "key": "HOLD_S", "default": 1, "env_var_type": "float"}
    path = write(experiment, tmp_path / "experiment.json")
    long_run = ChaosRun(path, tmp_path, {"HOLD_S": "7"}, name="long").start()
    long_run.wait_for_log("Pausing after activity", timeout_s=120)
    short_run = ChaosRun(path, tmp_path, {"HOLD_S": "0.5"}, name="short")
    short = short_run.run(timeout_s=120)
    short_removed = activity(short, "unblock-apiserver-egress", where="rollbacks")["output"]
    long_policy = k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items
    assert len(long_policy) == 1, "the short run's rollback must leave the long run's policy"
    assert short_removed["removed_policies"] and short_removed["removed_policies"] != [long_policy[0].metadata.name]
    long_run.wait(timeout_s=120)
    assert activity(long_run.journal(), "unblock-apiserver-egress", where="rollbacks")["output"][
        "removed_policies"
    ] == [long_policy[0].metadata.name]
    assert leftovers(k) == []
    wait_until("Contour to recover", lambda: contour_healthy(k, healthy_contour), HEALTHY_TIMEOUT_S, every_s=1.0)


def test_kill_9_of_the_run_mid_fault_and_kubernetes_still_removes_the_policy(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    duration_s = 8
    experiment = variant(title="kill -9 mid-fault", method_tail=[], block_pause_s=120)
    path = write(experiment, tmp_path / "experiment.json")
    run = ChaosRun(path, tmp_path, {"FAULT_EXPIRY_S": str(duration_s)}, name="kill-9").start()
    run.wait_for_log("Pausing after activity", timeout_s=120)
    policy = k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items[0]
    created = policy.metadata.creation_timestamp.timestamp()
    run.signal(signal.SIGKILL)
    run.wait(timeout_s=30)
    wait_until("the policy to expire", lambda: not leftovers(k), duration_s + 30)
    gone_after = time.time() - created
    # Documented margin: duration + 15 s (job deadline, TTL-after-finished, garbage collection).
    assert gone_after <= duration_s + 15, gone_after
    figures["kill-9-expiry"] = {"duration_s": duration_s, "policy_gone_after_s": round(gone_after, 1)}
    wait_until("Contour to recover", lambda: contour_healthy(k, healthy_contour), HEALTHY_TIMEOUT_S, every_s=1.0)


def test_unblock_of_nothing_is_success(sandbox_env: dict[str, str]) -> None:
    result = unblock_apiserver_egress(namespace=NS, run_id="never-blocked")
    assert result == {"run_id": "never-blocked", "removed_policies": [], "removed_jobs": []}
