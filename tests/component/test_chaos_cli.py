"""The real `chaos` CLI sees the extension as users will: discovery lists every activity, typed, and the shipped
experiments validate (which binds each activity's arguments to its real signature)."""

import json
import subprocess

import pytest

from chaoscontour.contract import ACTIVITIES
from tests.support.chaosrun import CHAOS, EXPERIMENTS

SHIPPED = sorted(EXPERIMENTS.glob("*.json"))
# The declared activity contract: the CLI's discovery must find exactly these, so typed.
EXPECTED = {activity.name: activity.kind for activity in ACTIVITIES}
DISCOVERABLE_TYPES = {"string", "integer", "number", "boolean", "list", "mapping"}


def test_chaos_discover_lists_every_activity_with_typed_arguments(tmp_path):
    out = tmp_path / "discovery.json"
    proc = subprocess.run(
        [str(CHAOS), "discover", "chaostoolkit-contour", "--no-install", "--discovery-path", str(out)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    discovery = json.loads(out.read_text())
    activities = {a["name"]: a for a in discovery["activities"]}
    assert {name: a["type"] for name, a in activities.items()} == EXPECTED
    for name, activity in activities.items():
        assert activity["doc"] and len(activity["doc"]) > 80, f"{name} needs a real docstring"
        for argument in activity["arguments"]:
            assert argument.get("type") in DISCOVERABLE_TYPES, f"{name}({argument['name']}) has no discoverable type"


@pytest.mark.parametrize("experiment", SHIPPED, ids=[e.stem for e in SHIPPED])
def test_shipped_experiment_validates(experiment, tmp_path):
    proc = subprocess.run(
        [str(CHAOS), "--log-file", str(tmp_path / "chaos.log"), "validate", str(experiment)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "experiment syntax and semantic look valid" in (proc.stdout + proc.stderr)


@pytest.mark.parametrize("experiment", SHIPPED, ids=[e.stem for e in SHIPPED])
def test_shipped_experiments_always_roll_back_and_take_values_from_configuration(experiment):
    body = json.loads(experiment.read_text())
    assert body["runtime"]["rollbacks"]["strategy"] == "always"
    for key, entry in body["configuration"].items():
        assert entry["type"] == "env", f"{key} has no environment override"
    text = experiment.read_text()
    for namespace_literal in ('"namespace": "projectcontour"', '"url": "http'):
        assert namespace_literal not in text, "cluster-specific values belong in configuration"


def test_apiserver_outage_fault_window_exceeds_the_liveness_restart_delay():
    body = json.loads((EXPERIMENTS / "apiserver-outage.json").read_text())
    config = body["configuration"]
    # Stock liveness probe: every 10 s, 3 failures -> restarts about 30 s into the outage.
    assert config["fault_window_s"]["default"] > 30
    assert config["sampling_s"]["default"] > config["fault_window_s"]["default"]
    assert config["fault_expiry_s"]["default"] > config["sampling_s"]["default"]


def test_leader_kill_bound_is_client_go_worst_case_for_contour_timings():
    body = json.loads((EXPERIMENTS / "leader-kill.json").read_text())
    lease_duration_s, retry_period_s, jitter_factor = 15, 2, 1.2  # Contour defaults; client-go JitterFactor
    worst_case_s = lease_duration_s + 2 * retry_period_s * (1 + jitter_factor)
    assert worst_case_s <= body["configuration"]["max_failover_s"]["default"] < worst_case_s + 1
