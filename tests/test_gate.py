"""``chaoscontour gate`` on journals written by the real ``chaos run`` and on hand-made edge cases.

The experiments under ``tests/fixtures/experiments`` use the python provider against ``fixture_activities`` (no
network, no cluster); each run takes well under a second. Each is run once per test session.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import xml.etree.ElementTree as ET
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from fixtures.chaosrun import CHAOS, EXPERIMENTS, run_chaos
from fixtures.fake_envoy import FakeEnvoy

from chaoscontour.cli import main as cli_main
from chaoscontour.tools.gate import (
    PHASE_AFTER,
    PHASE_BEFORE,
    PHASE_METHOD,
    PHASE_ROLLBACK,
    fault_findings,
    judge,
    load_journal,
    markdown_summary,
    redact,
)
from chaoscontour.tools.junit import junit_xml

BIN = Path(sys.executable).parent


@pytest.fixture(scope="session")
def chaos_journal(tmp_path_factory: pytest.TempPathFactory) -> Callable[[str], tuple[Path, int]]:
    """``chaos_journal("deviated")`` → (journal path, chaos exit code), running each experiment once."""
    if not CHAOS.exists():
        pytest.skip(f"the chaos CLI is not installed next to {sys.executable}")
    cache: dict[str, tuple[Path, int]] = {}
    root = tmp_path_factory.mktemp("journals")

    def get(name: str) -> tuple[Path, int]:
        if name not in cache:
            journal = root / f"{name}.journal.json"
            cache[name] = (journal, run_chaos(EXPERIMENTS / f"{name}.json", journal))
        return cache[name]

    return get


def gate(journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> tuple[int, str, ET.Element, str]:
    """Run ``chaoscontour gate`` through the CLI dispatcher; return (exit code, stdout, JUnit root, Markdown)."""
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    code = cli_main(["gate", str(journal), "--junit", str(junit), "--summary", str(summary)])
    out = capsys.readouterr().out
    return code, out, ET.parse(junit).getroot(), summary.read_text(encoding="utf-8")


def cases(root: ET.Element) -> dict[tuple[str, str], ET.Element]:
    return {(c.get("classname", ""), c.get("name", "")): c for c in root.iter("testcase")}


# ------------------------------------------------------------------------------------------------ real journals


def test_passing_run_passes_with_one_testcase_per_probe_activity_and_rollback(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("passing")
    assert chaos_code == 0
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 0, out
    assert out.startswith("PASSED: Fixture: everything holds")
    found = cases(root)
    assert set(found) == {
        ("chaoscontour.gate", "experiment outcome"),
        ("chaos.steady-state-before", "service-healthy"),
        ("chaos.steady-state-after", "service-healthy"),
        ("chaos.method", "look-around"),
        ("chaos.rollback", "repair-service"),
    }
    assert root.get("failures") == "0" and root.get("errors") == "0"
    assert not list(root.iter("failure"))
    assert "✅ passed" in summary and "| rollback | `repair-service` | action | succeeded |" in summary


def test_missed_steady_state_before_fails_the_gate_although_chaos_exits_0(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("missed-before")
    assert chaos_code == 0  # the trap the gate exists for
    assert load_journal(journal)["status"] == "completed"
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    lines = out.splitlines()
    assert "steady state not met before the method (the method was not run)" in lines
    assert "steady-state before probe 'error-count' tolerance not met: expected 0, got 7" in lines
    probe = cases(root)[("chaos.steady-state-before", "error-count")]
    failure = probe.find("failure")
    assert failure is not None and failure.get("type") == "ToleranceNotMet"
    assert failure.get("message") == "tolerance not met: expected 0, got 7"
    # The method never ran: its action is a skipped test case, not a pass.
    method = cases(root)[("chaos.method", "break-service")]
    assert method.find("skipped") is not None
    assert "❌ failed" in summary and "**not met**" in summary


def test_deviated_run_fails_with_the_after_probe_output(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("deviated")
    assert chaos_code == 1
    assert load_journal(journal)["deviated"] is True
    code, out, root, _ = gate(journal, tmp_path, capsys)
    assert code == 1
    assert "steady state not met after the method" in out.splitlines()
    found = cases(root)
    assert found[("chaos.steady-state-before", "service-healthy")].find("failure") is None
    after = found[("chaos.steady-state-after", "service-healthy")].find("failure")
    assert after is not None and after.get("message") == "tolerance not met: expected true, got false"


def test_failed_action_fails_the_gate_although_chaos_exits_0(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("failed-action")
    assert chaos_code == 0
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    assert "method action 'inject-fault' failed: RuntimeError: cannot create NetworkPolicy: forbidden" in out
    failure = cases(root)[("chaos.method", "inject-fault")].find("failure")
    assert failure is not None
    assert failure.get("message") == "failed: RuntimeError: cannot create NetworkPolicy: forbidden"
    assert "Traceback" in (failure.text or "")
    # The activity after the failed one still ran and passed: it is not blamed.
    assert cases(root)[("chaos.method", "look-around")].find("failure") is None
    assert "| method | `inject-fault` | action | **failed** |" in summary


def test_failed_rollback_fails_the_gate_although_chaos_exits_0(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("failed-rollback")
    assert chaos_code == 0
    code, out, root, _ = gate(journal, tmp_path, capsys)
    assert code == 1
    assert out.splitlines()[1:] == [
        "rollback 'remove-fault' failed: RuntimeError: NetworkPolicy still present: delete refused"
    ]
    failure = cases(root)[("chaos.rollback", "remove-fault")].find("failure")
    assert failure is not None and "delete refused" in (failure.get("message") or "")
    assert root.get("failures") == "2"  # the rollback and the experiment outcome


def test_availability_below_min_availability_fails_the_gate(tmp_path, capsys):
    """envoy_availability returns its figures below its bound and marks them; the gate enforces the bound."""
    journal = tmp_path / "availability.journal.json"
    with FakeEnvoy() as envoy:
        env = {"FAKE_ENVOY_URL": envoy.url, "MIN_AVAILABILITY": "0.99"}
        chaos_code = run_chaos(EXPERIMENTS / "availability-fault.json", journal, env=env)
    assert chaos_code == 0  # nothing failed as far as chaostoolkit is concerned
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    (reason,) = out.splitlines()[1:]
    assert re.fullmatch(
        r"method probe 'sample-envoy' availability \d+\.\d\d % is below min_availability 99\.00 %", reason
    )
    failure = cases(root)[("chaos.method", "sample-envoy")].find("failure")
    assert failure is not None and "below min_availability" in (failure.get("message") or "")
    assert "### Envoy availability (`sample-envoy`)" in summary


def test_console_script_exit_code_matches_the_verdict(chaos_journal):
    journal, _ = chaos_journal("failed-rollback")
    proc = subprocess.run([str(BIN / "chaoscontour"), "gate", str(journal)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 1
    assert "remove-fault" in proc.stdout


# ------------------------------------------------------------------------------------------------ unreadable input


@pytest.mark.parametrize(
    ("content", "expected"),
    [
        ("", "empty"),
        ("not json at all", "not valid JSON"),
        ("[1, 2, 3]", "not a Chaos Toolkit journal"),
        ('{"title": "x", "method": []}', "looks like an experiment"),
        ('{"experiment": {}, "status": "completed"}', "no 'run'"),
    ],
)
def test_unusable_input_exits_2_and_records_an_error(tmp_path, capsys, content, expected):
    journal = tmp_path / "journal.json"
    journal.write_text(content, encoding="utf-8")
    junit = tmp_path / "junit.xml"
    assert cli_main(["gate", str(journal), "--junit", str(junit)]) == 2
    assert expected in capsys.readouterr().err
    error = ET.parse(junit).getroot().find(".//error")
    assert error is not None and expected in (error.get("message") or "")


def test_truncated_real_journal_exits_2(chaos_journal, tmp_path, capsys):
    journal, _ = chaos_journal("passing")
    text = journal.read_text(encoding="utf-8")
    for cut in (len(text) // 3, len(text) - 10):
        truncated = tmp_path / f"cut-{cut}.json"
        truncated.write_text(text[:cut], encoding="utf-8")
        assert cli_main(["gate", str(truncated)]) == 2
        assert "truncated" in capsys.readouterr().err


def test_missing_file_exits_2(tmp_path, capsys):
    assert cli_main(["gate", str(tmp_path / "nope.json")]) == 2
    assert "no such file" in capsys.readouterr().err


def test_summary_append_keeps_earlier_summaries(chaos_journal, tmp_path, capsys):
    summary = tmp_path / "summary.md"
    for name in ("passing", "deviated"):
        cli_main(["gate", str(chaos_journal(name)[0]), "--summary", str(summary), "--append"])
    text = summary.read_text(encoding="utf-8")
    assert "Fixture: everything holds" in text and "Fixture: the method breaks the service" in text


# ------------------------------------------------------------------------------------------------ pure judging


def journal_of(**overrides: Any) -> dict[str, Any]:
    """A minimal passing journal in chaostoolkit's shape; ``overrides`` replace top-level keys."""
    probe = {"type": "probe", "name": "ok", "tolerance": True, "provider": {"type": "python", "func": "f"}}
    action = {"type": "action", "name": "fault", "provider": {"type": "python", "func": "g"}}
    rollback = {"type": "action", "name": "undo", "provider": {"type": "python", "func": "h"}}

    def ran(activity: dict[str, Any], **extra: Any) -> dict[str, Any]:
        return {"activity": activity, "output": True, "status": "succeeded", "duration": 0.5, **extra}

    journal: dict[str, Any] = {
        "experiment": {
            "title": "hand-made",
            "steady-state-hypothesis": {"title": "h", "probes": [probe]},
            "method": [action],
            "rollbacks": [rollback],
        },
        "status": "completed",
        "deviated": False,
        "duration": 3.0,
        "steady_states": {
            "before": {"steady_state_met": True, "probes": [ran(probe, tolerance_met=True)]},
            "after": {"steady_state_met": True, "probes": [ran(probe, tolerance_met=True)]},
            "during": [],
        },
        "run": [ran(action)],
        "rollbacks": [ran(rollback)],
    }
    journal.update(overrides)
    return journal


def test_hand_made_journal_passes():
    verdict = judge(journal_of())
    assert verdict.passed and verdict.reasons == ()
    assert [(r.phase, r.name) for r in verdict.results] == [
        (PHASE_BEFORE, "ok"),
        (PHASE_AFTER, "ok"),
        (PHASE_METHOD, "fault"),
        (PHASE_ROLLBACK, "undo"),
    ]


@pytest.mark.parametrize("status", ["interrupted", "aborted", "failed", "running"])
def test_any_status_but_completed_fails(status):
    verdict = judge(journal_of(status=status))
    assert not verdict.passed
    assert any(repr(status) in r for r in verdict.reasons)


def test_deviated_flag_alone_fails():
    verdict = judge(journal_of(deviated=True))
    assert verdict.reasons == ("the experiment deviated from its steady state",)


def test_skipped_rollbacks_fail_and_are_reported_as_not_run():
    verdict = judge(journal_of(rollbacks=[]))
    assert not verdict.passed
    assert any("--rollback-strategy always" in r for r in verdict.reasons)
    assert [r.status for r in verdict.results if r.phase == PHASE_ROLLBACK] == ["not run"]


def test_interrupted_run_marks_the_unplayed_method_as_not_run():
    verdict = judge(journal_of(status="interrupted", run=[]))
    method = [r for r in verdict.results if r.phase == PHASE_METHOD]
    assert [(r.name, r.status) for r in method] == [("fault", "not run")]
    assert "interrupted" in (method[0].detail or "")


def test_dry_run_and_missing_hypothesis_fail():
    j = journal_of()
    j["experiment"]["dry"] = "activities"
    del j["experiment"]["steady-state-hypothesis"]
    reasons = judge(j).reasons
    assert any("dry run" in r for r in reasons)
    assert any("no steady-state hypothesis" in r for r in reasons)


def test_missed_continuous_steady_state_fails():
    j = journal_of()
    j["steady_states"]["during"] = [{"steady_state_met": True}, {"steady_state_met": False}]
    assert judge(j).reasons == ("steady state not met during the method in 1 of 2 checks",)


def test_availability_figures_reach_the_summary():
    output = {
        "requests": 600,
        "successes": 597,
        "availability": 0.995,
        "longest_outage_s": 1.5,
        "latency_ms": {"p50": 2.0, "p95": 9.5, "p99": 31.25},
        "timeline": [],
    }
    probe = {"type": "probe", "name": "sample-envoy", "provider": {"type": "python", "func": "envoy_availability"}}
    j = journal_of()
    j["run"].append({"activity": probe, "output": output, "status": "succeeded", "duration": 30.0})
    verdict = judge(j)
    (fig,) = verdict.availability
    assert fig.availability_pct == pytest.approx(99.5)
    assert (fig.longest_outage_s, fig.p99_ms, fig.requests) == (1.5, 31.25, 600)
    summary = markdown_summary(verdict)
    assert "| 99.50 % | 1.5 s | 2.0 ms | 9.5 ms | 31.2 ms | 597 / 600 |" in summary


def test_markdown_cells_escape_pipes_and_junit_drops_control_characters():
    j = journal_of()
    j["run"][0].update(status="failed", exception=["RuntimeError: a|b \x1b[31mred\n"])
    verdict = judge(j)
    assert "a\\|b" in markdown_summary(verdict)
    root = ET.fromstring(junit_xml(verdict))
    failure = root.find(".//testcase[@name='fault']/failure")
    assert failure is not None and "\x1b" not in (failure.get("message") or "")


def test_tokens_in_exception_text_are_redacted():
    assert redact("Authorization: Bearer abc.def-123 and token=s3cr3t") == (
        "Authorization: Bearer <redacted> and token=<redacted>"
    )
    j = journal_of()
    j["run"][0].update(status="failed", exception=['ApiException: {"token": "eyJhbGciOi"}\n'])
    text = junit_xml(judge(j)) + markdown_summary(judge(j))
    assert "eyJhbGciOi" not in text


def test_real_journal_roundtrip_is_json(chaos_journal):
    """The fixture journals are real chaostoolkit output, not hand-written: they carry chaoslib's version."""
    journal, _ = chaos_journal("passing")
    assert "chaoslib-version" in json.loads(journal.read_text(encoding="utf-8"))


def _run(func: str, output: dict) -> dict:
    return {"activity": {"name": func, "provider": {"type": "python", "func": func}}, "output": output}


def test_findings_tell_the_outage_story_from_the_method_outputs_in_run_order():
    journal = {
        "run": [
            _run(
                "block_apiserver_egress",
                {
                    "selected_pods": ["contour-a", "contour-b"],
                    "blocked_cidrs": ["10.0.0.1/32"],
                    "verification": {"confirmed": True, "confirmed_after_s": 8.1},
                },
            ),
            _run("lease_holder", {"held": False, "seconds_since_renewal": 49.1, "pod_name": "contour-a"}),
            _run(
                "contour_restart_count",
                {
                    "terminated_since": 2,
                    "total_restarts": 2,
                    "terminations": [{"pod": "contour-b"}, {"pod": "contour-a"}],
                },
            ),
            _run("envoy_xds_connected", {"connected": False, "cds_update_age_s": 31.8}),
            _run("unblock_apiserver_egress", {"removed_policies": ["p"]}),
            _run("lease_holder", {"held": True, "pod_name": "contour-b"}),
        ]
    }
    findings = fault_findings(journal)
    assert findings == [
        "API server cut off for contour-a, contour-b (blocked 10.0.0.1/32); confirmed after 8.1 s: the Lease stopped "
        "being renewed",
        "during the fault the Lease was not held: 49.1 s since its last renewal",
        "2 Contour container(s) terminated during the fault (contour-a, contour-b); 2 restarts in all",
        "Envoy's xDS connection to Contour: disconnected; its configuration was 31.8 s old and still served",
        "afterwards contour-b holds the Lease (held: True)",
    ]
    assert "### What happened" in markdown_summary(judge(journal_of(run=journal["run"])))


def test_a_kill_leader_finding_names_both_leaders():
    journal = {"run": [_run("kill_leader", {"old_pod": "contour-a", "new_pod": "contour-b", "failover_s": 17.3})]}
    assert fault_findings(journal) == ["leader contour-a killed; contour-b took over in 17.3 s"]
