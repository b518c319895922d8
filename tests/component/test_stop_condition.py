"""Stop conditions (chaostoolkit-addons' safeguard control) as the real ``chaos run`` plays them, and the gate, summary,
JUnit and report on the journals it writes.

``tests/fixtures/experiments/stop-condition.json`` declares a safeguard whose probe is the real ``envoy_availability``
sampling a local fake Envoy for 1 s every ``STOP_CHECK_S``; a stand-in block makes the fake fail every second request
(``FAULT_MODE=flaky``), and ``STOP_PATH=/down`` points the safeguard at a path that always answers 503, so that the
probe itself fails. The method then waits ``HOLD_S`` (the real ``wait``, which stops on SIGUSR1); the rollback is the
stand-in unblock. Each journal is written once per test session.
"""

from __future__ import annotations

import importlib.metadata
import json
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.tools.journal import epoch_of, load_journal
from chaoscontour.tools.junit import junit_xml
from chaoscontour.tools.report_html import render_html
from chaoscontour.tools.stop_condition import stop_condition
from chaoscontour.tools.summary import headline, markdown_summary
from chaoscontour.tools.timeline import report_data
from chaoscontour.tools.verdict import judge
from tests.support.chaosrun import CHAOS, FIXTURE_EXPERIMENTS, run_chaos
from tests.support.fake_envoy import FakeEnvoy
from tests.support.paths import ROOT

SAFEGUARD = "envoy-availability-stays-above-the-stop-bound"
ADDONS = tuple(int(p) for p in importlib.metadata.version("chaostoolkit-addons").split(".")[:2])
# chaostoolkit-addons 0.12 records the tripped safeguard under the journal's `safeguards`; 0.11 (Python 3.11) does not.
RECORDS_TRIP = ADDONS >= (0, 12)

Run = Callable[..., tuple[dict[str, Any], int, Path]]


@pytest.fixture(scope="session")
def stop_run(tmp_path_factory: pytest.TempPathFactory) -> Run:
    """``stop_run(env={...}, strategy="always")`` → (journal, chaos exit code, journal path), once per arguments."""
    if not CHAOS.exists():
        pytest.skip(f"the chaos CLI is not installed next to {sys.executable}")
    cache: dict[tuple[Any, ...], tuple[dict[str, Any], int, Path]] = {}
    root = tmp_path_factory.mktemp("stop-journals")

    def get(env: dict[str, str] | None = None, strategy: str = "always", experiment: Path | None = None) -> Any:
        key = (tuple(sorted((env or {}).items())), strategy, str(experiment))
        if key not in cache:
            path = root / f"stop-{len(cache)}.journal.json"
            with FakeEnvoy() as envoy:
                environ = {"FAKE_ENVOY_URL": envoy.url, "STOP_CHECK_S": "0.5", **(env or {})}
                code = run_chaos(experiment or FIXTURE_EXPERIMENTS / "stop-condition.json", path, environ, strategy)
                assert (not envoy.faulted and not envoy.flaky) or strategy != "always", "the rollback healed the fake"
            cache[key] = (load_journal(path), code, path)
        return cache[key]

    return get


def test_a_partial_outage_trips_the_stop_condition_and_the_gate_says_so_first(stop_run: Run) -> None:
    journal, code, _ = stop_run({"FAULT_MODE": "flaky"})

    assert (journal["status"], code) == ("interrupted", 1)
    # The method's wait (HOLD_S 20 s) was cut short: the whole run took a few seconds.
    assert journal["duration"] < 12
    [rollback] = journal["rollbacks"]
    assert rollback["status"] == "succeeded"
    verdict = judge(journal)
    assert not verdict.passed
    assert verdict.stop is not None
    if RECORDS_TRIP:
        assert journal["safeguards"]["triggered_by"] == SAFEGUARD
        assert journal["safeguards"]["run"]["output"]["meets_min_availability"] is False
        first = verdict.reasons[0]
        assert first.startswith(f"ABORTED by stop condition '{SAFEGUARD}': availability "), first
        assert "below min_availability 99.00 %" in first and "http_503" in first
        assert any("removed by the rollback 'unblock-apiserver-rollback'" in f for f in verdict.findings)
        saw = f"the stop condition '{SAFEGUARD}' saw the failing result at "
        assert any(f.startswith(saw) for f in verdict.findings)
    else:
        assert "safeguards" not in journal
        assert verdict.reasons[0].startswith("ABORTED by a stop condition: the run was interrupted")
    assert "run status is 'interrupted', not 'completed'" in verdict.reasons


def test_a_safeguard_probe_that_fails_counts_as_tripping_not_as_silence(stop_run: Run) -> None:
    """``envoy_availability`` raises when nothing succeeded in its first second: the run has no output, and a
    ``jsonpath`` tolerance on ``$.meets_min_availability`` finds nothing in ``None``, so the control trips."""
    journal, code, _ = stop_run({"STOP_PATH": "/down"})

    assert (journal["status"], code) == ("interrupted", 1)
    verdict = judge(journal)
    if RECORDS_TRIP:
        run = journal["safeguards"]["run"]
        assert (run["status"], run["output"]) == ("failed", None)
        assert verdict.reasons[0].startswith(f"ABORTED by stop condition '{SAFEGUARD}': the probe failed (")
        assert "succeeded in the first second" in verdict.reasons[0]
        assert verdict.reasons[0].endswith("which counts as tripping")
    else:
        assert verdict.reasons[0].startswith("ABORTED by a stop condition")


def test_a_range_tolerance_on_a_failing_probe_never_trips(stop_run: Run, tmp_path_factory: pytest.TempPathFactory):
    """Why the shipped experiment does not use ``{"type": "range", "target": "availability"}``: the control reads
    ``None.get(...)`` when the probe failed, its thread dies with the error logged at debug level, and the run goes on
    to its end with the fault in place. (A range cannot take its bound from configuration either: chaostoolkit
    validates the control before substituting.)"""
    experiment = json.loads((FIXTURE_EXPERIMENTS / "stop-condition.json").read_text())
    probe = experiment["controls"][0]["provider"]["arguments"]["probes"][0]
    probe["tolerance"] = {"type": "range", "range": [0.99, 1.0], "target": "availability"}
    path = tmp_path_factory.mktemp("range") / "stop-condition-range.json"
    path.write_text(json.dumps(experiment))

    journal, code, _ = stop_run({"STOP_PATH": "/down", "HOLD_S": "3"}, experiment=path)

    assert (journal["status"], code) == ("completed", 0)
    assert "safeguards" not in journal
    assert stop_condition(journal) is None


def test_without_rollback_strategy_always_the_gate_says_the_fault_may_still_be_in_place(stop_run: Run) -> None:
    journal, code, _ = stop_run({"FAULT_MODE": "flaky"}, strategy="default")

    assert (journal["status"], code, journal["rollbacks"]) == ("interrupted", 1, [])
    reasons = judge(journal).reasons
    assert reasons[0].startswith("ABORTED by ")
    assert "the fault of 'block-apiserver' may still be in place: no unblock ran after the stop condition" in reasons[1]


def test_summary_junit_and_report_carry_the_abort(stop_run: Run) -> None:
    journal, _, path = stop_run({"FAULT_MODE": "flaky"})
    verdict = judge(journal)
    name = f"stop condition '{SAFEGUARD}'" if RECORDS_TRIP else "a stop condition"

    assert headline(verdict) == f"failed: aborted by {name}"
    summary = markdown_summary(verdict, path.name)
    assert summary.splitlines()[0].startswith(f"## Chaos gate ❌ failed: aborted by {name}: ")
    assert f"> 🛑 ABORTED by {name}" in summary

    root = ET.fromstring(junit_xml(verdict).split("\n", 1)[1])
    [outcome] = [c for c in root.iter("testcase") if c.get("name") == "experiment outcome"]
    failure = outcome.find("failure")
    assert failure is not None and failure.get("type") == "StopConditionTripped"
    assert (failure.get("message") or "").startswith(f"ABORTED by {name}")
    props = {p.get("name"): p.get("value") for p in root.iter("property")}
    assert props["stop_condition"] == (SAFEGUARD if RECORDS_TRIP else "(not recorded)")

    data = report_data(journal)
    page = render_html(data, "x.png")
    assert "Chaos gate FAILED, ABORTED by " in page
    stops = [m for m in data.markers if m.kind == "stop"]
    if RECORDS_TRIP:
        [marker] = stops
        assert marker.epoch_s == epoch_of(journal["safeguards"]["run"]["end"])
        block = next(m for m in data.markers if m.kind == "fault")
        heal = next(m for m in data.markers if m.kind == "fault-end")
        assert block.epoch_s < marker.epoch_s < heal.epoch_s
        assert "saw the failing result at t=" in page
    else:
        assert stops == []


def test_the_shipped_experiment_declares_a_stop_condition_that_fails_loudly() -> None:
    """The shipped experiment is the churn experiment plus the safeguard, its bound from configuration."""
    shipped = json.loads((ROOT / "experiments" / "endpoint-churn-with-stop-condition.json").read_text())
    churn = json.loads((ROOT / "experiments" / "endpoint-churn-during-outage.json").read_text())
    for key in ("steady-state-hypothesis", "method", "rollbacks", "runtime"):
        assert shipped[key] == churn[key], key
    assert {k: v for k, v in shipped["configuration"].items() if k in churn["configuration"]} == churn["configuration"]
    [control] = shipped["controls"]
    assert control["provider"]["module"] == "chaosaddons.controls.safeguards"
    [probe] = control["provider"]["arguments"]["probes"]
    assert probe["tolerance"] == {"type": "jsonpath", "path": "$.meets_min_availability", "expect": True}
    assert probe["frequency"] == "${stop_check_s}"
    assert probe["provider"]["func"] == "envoy_availability"
    assert probe["provider"]["arguments"]["min_availability"] == "${stop_min_availability}"
    config = shipped["configuration"]
    assert config["stop_min_availability"] == {"type": "env", "key": "STOP_MIN_AVAILABILITY", "default": "0.99"}
    # The control hands `frequency` to threading.Event.wait as it is: it must arrive as a number.
    assert config["stop_check_s"]["env_var_type"] == "float"
