"""The shipped experiments, run with the real ``chaos`` CLI against the sandbox, judged on journal.json.

(chaostoolkit exits 0 when the steady state is missed before the method, so the exit code alone proves nothing.)
Each test starts from a healthy Contour (fresh pods when an earlier test left restarts, so CrashLoopBackOff back-off
does not carry over) and sizes its fault window to what it must see.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import threading
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from chaoslib.exceptions import ActivityFailed
from kubernetes import client

from chaoscontour.activities.leader import lease_holder
from chaoscontour.activities.network import block_apiserver_egress, unblock_apiserver_egress
from chaoscontour.domain.clock import parse_utc
from chaoscontour.domain.lease import parse_api_time
from tests.support.chaosrun import (
    EXPERIMENTS,
    HOLDING,
    ChaosRun,
    activity,
    as_vars,
    gate_verdict,
    keep_journal,
    variant,
    write,
)
from tests.support.otel_log import MS, journal_ns, wait_for_spans
from tests.support.sandbox import (
    HEALTHY_TIMEOUT_S,
    NS,
    OURS,
    Sandbox,
    contour_healthy,
    contour_pods,
    contour_restarted,
    leftovers,
    strip_cri,
    wait_until,
)

# --- fixtures and helpers ------------------------------------------------------------------------------------------


class RestartWatcher:
    """Polls Contour's pods during a run: records when each container's restart count went up and keeps a copy of
    every log file of theirs (the kubelet deletes the logs of older dead instances while the restarts go on)."""

    def __init__(self, k: Any, sandbox: Sandbox) -> None:
        self.k = k
        self.sandbox = sandbox
        self.events: list[tuple[float, str, int]] = []
        self.logs: dict[Path, str] = {}
        self._stop = threading.Event()
        self._seen: dict[str, int] = {}
        self._thread = threading.Thread(target=self._run, daemon=True)

    def keep_logs(self, pod: str) -> None:
        for f in self.sandbox.container_log_files(NS, pod, "contour"):
            with contextlib.suppress(OSError):  # deleted between the listing and the read
                self.logs[f] = f.read_text(errors="replace")

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
                self.keep_logs(pod.metadata.name)
                count = sum(cs.restart_count for cs in pod.status.container_statuses or [])
                if count > self._seen.get(pod.metadata.name, 0):
                    self.events.append((time.time(), pod.metadata.name, count))
                self._seen[pod.metadata.name] = count


def utc_s(value: str) -> float:
    """An output's UTC time (``...Z``) as epoch seconds."""
    return parse_utc(value).timestamp()


def journal_time(value: str) -> float:
    """chaostoolkit writes UTC times without a zone."""
    return datetime.fromisoformat(value).replace(tzinfo=UTC).timestamp()


def leader_exit_time(watcher: RestartWatcher, pod: str) -> float | None:
    """When Contour logged "leader election lost" in ``pod`` (its log line's ``time=``), as a UNIX time."""
    watcher.keep_logs(pod)
    text = strip_cri("".join(text for f, text in sorted(watcher.logs.items()) if f"_{pod}_" in str(f)))
    for line in text.splitlines():
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


TRACES_CONTROL = {"name": "traces", "provider": {"type": "python", "module": "chaoscontour.controls.traces"}}


# --- the apiserver outage --------------------------------------------------------------------------------------------


def test_apiserver_outage_envoy_keeps_routing_while_every_contour_replica_restarts(
    sandbox: Sandbox, healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    # The liveness probe restarts Contour about 30 s into the outage: a 40 s window sees it. Every configuration
    # key is given as `--var key=value` (a string), as a user would.
    # The shipped experiment with the traces control added: its spans go to the sandbox's Collector.
    experiment = EXPERIMENTS / "apiserver-outage.json"
    traced = json.loads(experiment.read_text()) | {"controls": [TRACES_CONTROL]}
    overrides = {"fault_window_s": "40", "sampling_s": "75", "fault_expiry_s": "240", "recovery_timeout_s": "150"}
    variables = as_vars(experiment, overrides)
    run = ChaosRun(
        write(traced, tmp_path / "apiserver-outage.json"), tmp_path, {}, name="apiserver-outage", variables=variables
    )
    with RestartWatcher(k, sandbox) as watcher:
        journal = run.run(timeout_s=420)
    keep_journal(run)
    assert_steady_before_and_after(journal)

    leader_before = journal["steady_states"]["before"]["probes"][1]["output"]
    block = activity(journal, "block-apiserver-egress")
    assert block["status"] == "succeeded", block.get("exception")
    verification = block["output"]["verification"]
    assert verification["confirmed"] is True
    assert verification["evidence"] == "lease-unchanged-longer-than-its-duration"
    # default timings: confirmed within the lease duration + 2 s of the block (plus a loaded machine's margin)
    assert verification["required_quiet_s"] == 15 and verification["confirmed_after_s"] <= 15 + 2 + 3, verification
    blocked_at = journal_time(block["start"])

    during = activity(journal, "lease-during-the-fault")["output"]
    assert during["held"] is False and during["seconds_since_renewal"] >= 30, "the Lease kept being renewed"

    held = activity(journal, "the-fault-held-for-the-whole-window")
    assert held["status"] == "succeeded" and held["output"]["held"] is True, held.get("output")
    assert held["output"]["dead_man_switch"]["running"] is True

    restarts = activity(journal, "contour-restarts-during-the-fault")["output"]
    restarted_pods = {t["pod"] for t in restarts["terminations"]}
    assert restarted_pods == {p["name"] for p in restarts["pods"]}, "every replica restarts"

    availability = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert availability["availability"] >= 0.999, availability
    assert availability["meets_min_availability"] is True
    # not one request lost: the longest run of failures is at most one sampling interval (and a loaded machine's)
    assert availability["longest_outage_s"] <= 0.5, availability["longest_outage_s"]

    # Envoy's own counters, read directly and through the sandbox's Prometheus, agree with the sampler.
    direct = activity(journal, "envoy-success-ratio-across-the-fault")["output"]
    assert direct["ratio"] >= 0.999 and direct["clusters"] == ["demo_echo_80"], direct["not_computable"]
    # Envoy counted the sampler's requests, but for those answered outside its window: its first reading comes a
    # few ms after the sampler's first request (8.5 ms here, one request short of 15,000, which failed a CI run
    # that asked for every one), at 200 requests/s.
    skew_s = max(0.0, utc_s(direct["started_at"]) - utc_s(availability["started_at"])) + max(
        0.0, utc_s(availability["ended_at"]) - utc_s(direct["ended_at"])
    )
    outside = math.ceil(availability["target_rate_per_s"] * skew_s) + 1
    assert availability["requests"] - outside <= direct["requests"] <= availability["requests"], (direct, skew_s)
    assert direct["successes"] >= availability["successes"] - outside, (direct, availability["error_kinds"])
    prom = activity(journal, "prometheus-success-ratio-across-the-fault")["output"]
    assert prom["source"] == "prometheus" and prom["skipped"] is None and prom["ratio"] >= 0.999, prom
    # Prometheus' window is up to one 2 s scrape early at both ends: at 200 requests/s, about 400 requests apart.
    assert abs(prom["requests"] - availability["requests"]) <= 1000, (prom["requests"], availability["requests"])
    # Every restarted Contour process that lived through a scrape, and its DAG rebuilt after the restart.
    assert 1 <= prom["contour_restart_count"] <= restarts["total_restarts"] + 2, prom["contour_restarts"]
    assert set(prom["contour_restarts"]) <= {p["name"] for p in restarts["pods"]}
    assert prom["dag_rebuilds"] >= 1

    xds = activity(journal, "envoy-xds-state-during-the-fault")
    assert xds["status"] == "succeeded"
    assert xds["output"]["connected"] is False, "Envoy kept routing with its xDS stream down, not through a live one"
    # Contour's xDS server names no management server in its responses: Envoy's identifier stats read "".
    assert xds["output"]["control_plane_identifier"] is None, xds["output"]

    rollback = activity(journal, "unblock-apiserver-egress", where="rollbacks")
    assert rollback["status"] == "succeeded"
    assert leftovers(k) == []
    assert activity(journal, "leader-re-elected")["output"]["held"] is True
    # The Contour pods restarted during the fault come back Ready on their readiness probe's period (10 s in the
    # release manifest), and Envoy reconnects on its own back-off: wait for both, within the fixture's bound.
    wait_until("Contour healthy again after the run", lambda: contour_healthy(k, healthy_contour), HEALTHY_TIMEOUT_S)

    # The run's spans in the sandbox's Collector: the root, every activity, and the fault window from the block's
    # start to the method's unblock's end.
    record = journal["traces"]
    assert record["exported"] is True, run.log()[-2000:]
    spans = wait_for_spans(sandbox.dir / "logs" / "otelcol.log", record["run_id"], record["spans"], None)
    assert len(spans) == record["spans"] and {s.trace_id for s in spans} == {record["trace_id"]}
    names = {s.name for s in spans}
    assert "experiment" in names
    assert {f"activity: {e['activity']['name']}" for e in journal["run"] + journal["rollbacks"]} <= names
    [window] = [s for s in spans if s.name == "fault window"]
    unblock = activity(journal, "unblock-apiserver-egress")
    assert abs(window.start_ns - journal_ns(block["start"])) <= MS
    assert abs(window.end_ns - journal_ns(unblock["end"])) <= MS

    exit_at = leader_exit_time(watcher, leader_before["pod_name"])
    assert exit_at is not None, "the old leader never logged 'leader election lost'"
    restart_offsets = sorted({pod: round(t - blocked_at, 1) for t, pod, count in reversed(watcher.events)}.items())
    figures["apiserver-outage"] = {
        "block_to_leader_exit_s": round(exit_at - blocked_at, 1),
        "block_to_first_restart_per_pod_s": dict(restart_offsets),
        "restart_events": [(round(t - blocked_at, 1), pod, count) for t, pod, count in watcher.events],
        "total_restarts_during_fault": restarts["total_restarts"],
        "lease_seconds_since_renewal_during_fault": during["seconds_since_renewal"],
        "verification_confirmed_after_s": verification["confirmed_after_s"],
        "fault_held_seconds_since_confirmed": held["output"]["seconds_since_confirmed"],
        "availability": availability["availability"],
        "requests": availability["requests"],
        "longest_outage_s": availability["longest_outage_s"],
        "p99_ms": availability["latency_ms"]["p99"],
        "xds_connected_during_fault": xds["output"]["connected"],
        "recovery_leader_wait_s": activity(journal, "leader-re-elected")["duration"],
        "envoy_counters": {"requests": direct["requests"], "ratio": direct["ratio"]},
        "prometheus": {
            "requests": prom["requests"],
            "ratio": prom["ratio"],
            "contour_restarts_seen": prom["contour_restart_count"],
            "dag_rebuilds": prom["dag_rebuilds"],
        },
        "trace_spans": record["spans"],
    }


def test_leader_kill_fails_over_within_client_go_worst_case(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    experiment = EXPERIMENTS / "leader-kill.json"
    run = ChaosRun(experiment, tmp_path, {}, name="leader-kill", variables=as_vars(experiment, {"sampling_s": "30"}))
    journal = run.run(timeout_s=240)
    keep_journal(run)
    assert_steady_before_and_after(journal)
    kill = activity(journal, "kill-the-contour-leader")
    assert kill["status"] == "succeeded", kill.get("exception")
    out = kill["output"]
    assert out["new_pod"] != out["old_pod"]
    # client-go: lease duration 15 s counted from the candidate's observation, polls every 2 s x [1, 2.2).
    assert out["failover_s"] <= 2.2 * 2 + 15 + 2.2 * 2, out
    # Where Envoy's one xDS stream was (the replica kube-proxy picked when Envoy connected) and, if on the killed
    # pod, that another replica held it afterwards: read from Contour's gRPC metrics through the pod proxy.
    xds = out["xds"]
    assert xds["known"] is True and sum(xds["streams_before"].values()) == 1, xds
    assert set(xds["streams_before"]) >= {out["old_pod"]}, xds
    if xds["on_killed_pod"]:
        assert xds["reconnected_after_s"] is not None and 0 < xds["reconnected_after_s"] <= 30, xds
        assert xds["reconnected_to"] and out["old_pod"] not in xds["reconnected_to"], xds
    else:
        assert xds["on_killed_pod"] == 0 and xds["reconnected_after_s"] is None, xds
    availability = activity(journal, "envoy-availability-across-the-failover")["output"]
    assert availability["availability"] >= 0.999, availability
    figures["leader-kill"] = {
        "xds_on_killed_pod": xds["on_killed_pod"],
        "xds_reconnected_after_s": xds["reconnected_after_s"],
        "failover_s": out["failover_s"],
        "availability": availability["availability"],
        "longest_outage_s": availability["longest_outage_s"],
    }


def test_a_policy_deleted_by_hand_mid_window_is_caught_by_the_end_of_window_probe(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path
) -> None:
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "15", "SAMPLING_S": "45", "FAULT_EXPIRY_S": "240"},
        name="deleted-by-hand",
    ).start()
    run.wait_for_log(HOLDING, timeout_s=120)
    policies = k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items
    assert len(policies) == 1
    k.networking.delete_namespaced_network_policy(policies[0].metadata.name, NS)
    run.wait(timeout_s=300)
    journal = run.journal()
    held = activity(journal, "the-fault-held-for-the-whole-window")["output"]
    assert held["held"] is False and any("NetworkPolicy is gone" in r for r in held["reasons"]), held
    unblock = activity(journal, "unblock-apiserver-egress")
    assert unblock["status"] == "succeeded"
    assert unblock["output"]["removed_policies"] == [], "the policy was already gone"
    assert activity(journal, "unblock-apiserver-egress", where="rollbacks")["status"] == "succeeded"
    assert leftovers(k) == []
    gate = gate_verdict(run.journal_path)
    assert gate.returncode == 1 and "NetworkPolicy is gone" in gate.stdout, gate.stdout


def test_sigterm_mid_fault_ends_the_run_and_the_rollback_removes_the_fault_within_seconds(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Issue 10.3: the background sampler and the wait stop at once, so the rollback runs without delay."""
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "60", "SAMPLING_S": "120", "FAULT_EXPIRY_S": "240"},
        name="sigterm",
    ).start()
    run.wait_for_log(HOLDING, timeout_s=120)
    time.sleep(2)
    assert len(k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items) == 1
    signalled = time.monotonic()
    run.signal(signal.SIGTERM)
    removed_after = wait_until("the rollback to remove the fault", lambda: not leftovers(k), 30, every_s=0.2)
    run.wait(timeout_s=60)
    exited_after = time.monotonic() - signalled
    journal = run.journal()
    assert journal["status"] == "interrupted"
    assert activity(journal, "unblock-apiserver-egress", where="rollbacks")["status"] == "succeeded"
    sampler = activity(journal, "envoy-availability-across-the-fault")["output"]
    assert sampler["stopped_early"] is True and sampler["requests"] > 0
    figures["sigterm"] = {"policy_removed_after_s": round(removed_after, 1), "exited_after_s": round(exited_after, 1)}
    assert removed_after <= 5, removed_after
    assert exited_after <= 15, exited_after


@pytest.mark.parametrize("strategy", ["default", "never"])
def test_sigterm_without_rollbacks_leaves_a_fault_that_ends_by_itself_or_by_cleanup(
    strategy: str, sandbox: Sandbox, healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Issue 10.4: chaostoolkit's `default` strategy skips rollbacks after SIGTERM; the dead-man switch ends the
    fault anyway. With `never`, the documented `chaoscontour cleanup` removes it and says what it removed."""
    run = ChaosRun(
        EXPERIMENTS / "apiserver-outage.json",
        tmp_path,
        {"FAULT_WINDOW_S": "60", "SAMPLING_S": "120", "FAULT_EXPIRY_S": "300"},
        name=f"sigterm-{strategy}",
        rollback_strategy=strategy,
    ).start()
    run.wait_for_log(HOLDING, timeout_s=120)
    [policy] = k.networking.list_namespaced_network_policy(NS, label_selector=OURS).items
    run.signal(signal.SIGTERM)
    run.wait(timeout_s=60)
    journal = run.journal()
    assert journal["status"] == "interrupted"
    assert not journal.get("rollbacks"), "this strategy plays no rollback after SIGTERM"
    if strategy == "default":
        gone_after = wait_until("the dead-man switch to end the fault", lambda: not leftovers(k), 45, every_s=0.5)
        figures["sigterm-default-strategy"] = {"policy_gone_after_exit_s": round(gone_after, 1)}
        assert gone_after <= 30 + 5, gone_after
    else:
        assert leftovers(k), "the fault must still be there for cleanup to remove"
        cleanup = sandbox_cleanup(healthy_contour)
        assert cleanup.returncode == 0, cleanup.stderr
        assert f"removed: NetworkPolicy {NS}/{policy.metadata.name}" in cleanup.stdout, cleanup.stdout
        assert "removed: Job" in cleanup.stdout, cleanup.stdout
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
    # it names what it observed: the mode, the renewals and who renewed
    assert "open_connections='none'" in message and f"by {holder}" in message, message
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
        {"FAULT_WINDOW_S": "40", "SAMPLING_S": "90", "OPEN_CONNECTIONS": "restart-pods", "FAULT_EXPIRY_S": "240"},
        name="conntrack-restart-pods",
    )
    journal = run.run(timeout_s=420)
    keep_journal(run)
    assert_steady_before_and_after(journal)
    block = activity(journal, "block-apiserver-egress")["output"]
    assert set(block["restarted_pods"]) == before
    assert block["verification"]["confirmed"] is True
    assert activity(journal, "the-fault-held-for-the-whole-window")["output"]["held"] is True
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
    holder = lease_holder(namespace=NS)["holder_identity"]
    assert sandbox.cli("mode", "off").returncode == 0
    try:
        with pytest.raises(ActivityFailed, match="did not take effect") as failure:
            block_apiserver_egress(namespace=NS, run_id="no-enforcement", verify_timeout_s=40)
    finally:
        assert sandbox.cli("mode", "per-packet").returncode == 0
    message = str(failure.value)
    assert "does not enforce NetworkPolicy" in message and f"by {holder}" in message, message
    assert leftovers(k) == []
    assert not contour_restarted(k)


SLOW_TIMINGS = [
    "--leader-election-lease-duration=30s",
    "--leader-election-renew-deadline=20s",
    "--leader-election-retry-period=10s",
]


def _contour_args(k: Any, extra: list[str]) -> None:
    apps = client.AppsV1Api(k.api)
    current = apps.read_namespaced_deployment("contour", NS)
    container = current.spec.template.spec.containers[0]
    base = [a for a in container.args if not a.startswith("--leader-election-")]
    patch = {"spec": {"template": {"spec": {"containers": [{"name": container.name, "args": base + extra}]}}}}
    apps.patch_namespaced_deployment("contour", NS, patch)


@pytest.fixture
def slow_leader_election(sandbox: Sandbox, healthy_contour: dict[str, str], k: Any) -> Iterator[None]:
    """Contour with a 10 s retry period (30 s lease), on a cluster that does not enforce NetworkPolicy."""
    _contour_args(k, SLOW_TIMINGS)
    try:
        wait_until("Contour with slow leader election", lambda: _runs_with(k, SLOW_TIMINGS), 180, every_s=1.0)
        wait_until("a healthy Contour", lambda: contour_healthy(k, healthy_contour), HEALTHY_TIMEOUT_S, every_s=1.0)
        assert sandbox.cli("mode", "off").returncode == 0
        yield
    finally:
        assert sandbox.cli("mode", "per-packet").returncode == 0
        _contour_args(k, [])
        wait_until("Contour with default leader election", lambda: _runs_with(k, []), 180, every_s=1.0)


def _runs_with(k: Any, extra: list[str]) -> bool:
    pods = contour_pods(k)
    return len(pods) == 2 and all(
        [a for a in p.spec.containers[0].args if a.startswith("--leader-election-")] == extra for p in pods
    )


def test_a_slow_renewing_leader_on_a_cluster_without_enforcement_is_never_confirmed(
    slow_leader_election: None, k: Any, figures: dict[str, Any]
) -> None:
    """Issue 9.1: the old 8 s quiet window confirmed this fault in 3 runs out of 3 (every attempt), so one attempt per
    run is enough to catch it coming back; the Lease's 30 s duration never confirms it."""
    started = time.monotonic()
    with pytest.raises(ActivityFailed, match="did not take effect") as failure:
        block_apiserver_egress(namespace=NS, run_id="slow-0", verify_timeout_s=80)
    refused_after_s = round(time.monotonic() - started, 1)
    assert "longer than its 30 s duration" in str(failure.value), str(failure.value)
    assert leftovers(k) == []
    figures["slow-leader-no-enforcement"] = {"refused_after_s": refused_after_s}


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
        run.wait_for_log(HOLDING, timeout_s=120)
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
    long_run.wait_for_log(HOLDING, timeout_s=120)
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


def test_kill_9_of_the_run_mid_fault_and_the_dead_man_switch_ends_a_300_s_fault_within_30_s(
    healthy_contour: dict[str, str], k: Any, tmp_path: Path, figures: dict[str, Any]
) -> None:
    """Issue 10.4: the expiry Job's deadline runs 20 s ahead of the runner's heartbeat; kill -9 stops the heartbeat."""
    experiment = variant(title="kill -9 mid-fault", method_tail=[], block_pause_s=120)
    path = write(experiment, tmp_path / "experiment.json")
    run = ChaosRun(path, tmp_path, {"FAULT_EXPIRY_S": "300", "DEAD_MAN_S": "20"}, name="kill-9").start()
    run.wait_for_log(HOLDING, timeout_s=120)
    time.sleep(25)  # longer than the dead-man interval: the heartbeat must have kept the fault alive
    assert leftovers(k), "the fault ended while its runner was alive"
    run.signal(signal.SIGKILL)
    run.wait(timeout_s=30)
    killed = time.monotonic()
    wait_until("the dead-man switch to end the fault", lambda: not leftovers(k), 60)
    gone_after = time.monotonic() - killed
    figures["kill-9-dead-man"] = {
        "fault_expiry_s": 300,
        "dead_man_s": 20,
        "policy_gone_after_kill_s": round(gone_after, 1),
    }
    # Documented bound: dead_man_s (20) + the job controller, TTL-after-finished and garbage collector (measured
    # 3-8 s here) = 30 s; 5 s more for a loaded 2-core machine.
    assert gone_after <= 35, gone_after
    wait_until("Contour to recover", lambda: contour_healthy(k, healthy_contour), HEALTHY_TIMEOUT_S, every_s=1.0)


def test_unblock_of_nothing_is_success(sandbox_env: dict[str, str]) -> None:
    result = unblock_apiserver_egress(namespace=NS, run_id="never-blocked")
    assert (result["run_id"], result["removed_policies"], result["removed_jobs"]) == ("never-blocked", [], [])
    assert "nothing of run never-blocked" in result["note"] and result["other_runs"] == []


def test_restarting_an_envoy_with_only_one_refuses_and_deletes_nothing(healthy_contour: dict[str, str], k: Any) -> None:
    """The release manifest's Envoy is a DaemonSet: on the sandbox's one node there is one Envoy, the one
    ENVOY_URL reaches. restart_envoy_pod, given a real cut, refuses at once and says what would do; no pod goes."""
    from chaoscontour.activities.envoy_restart import restart_envoy_pod

    envoys = {p.metadata.name: p.metadata.uid for p in k.core.list_namespaced_pod(NS, label_selector="app=envoy").items}
    assert len(envoys) == 1, envoys
    block_apiserver_egress(namespace=NS, run_id="one-envoy", duration_s="60", verify="false", dead_man_s="0")
    try:
        with pytest.raises(ActivityFailed, match="needs a second Envoy") as refused:
            restart_envoy_pod(keep_url=healthy_contour["ENVOY_URL"], namespace=NS, run_id="one-envoy")
    finally:
        unblock_apiserver_egress(namespace=NS, run_id="one-envoy")
    assert "Deployment with 2 replicas" in str(refused.value), refused.value
    after = {p.metadata.name: p.metadata.uid for p in k.core.list_namespaced_pod(NS, label_selector="app=envoy").items}
    assert after == envoys
    assert leftovers(k) == []
