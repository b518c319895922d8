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

from chaoscontour.cli import main as cli_main
from chaoscontour.tools.activity_results import PHASE_AFTER, PHASE_BEFORE, PHASE_METHOD, PHASE_ROLLBACK
from chaoscontour.tools.findings import fault_findings
from chaoscontour.tools.journal import chaoscontour_func, load_journal, redact
from chaoscontour.tools.junit import junit_xml
from chaoscontour.tools.summary import markdown_summary
from chaoscontour.tools.verdict import GateOptions, judge
from tests.support.chaosrun import CHAOS, FIXTURE_EXPERIMENTS, run_chaos
from tests.support.fake_envoy import FakeEnvoy
from tests.support.paths import ROOT

BIN = Path(sys.executable).parent
GATE_DOC = ROOT / "docs" / "gate-and-report.md"

ChaosJournal = Callable[..., tuple[Path, int]]


@pytest.fixture(scope="session")
def chaos_journal(tmp_path_factory: pytest.TempPathFactory) -> ChaosJournal:
    """``chaos_journal("deviated", env={...}, strategy="default")`` → (journal path, chaos exit code), running each
    experiment once per environment and rollback strategy. ``fake_envoy=True`` serves a ``FakeEnvoy`` for the run
    (its URL in ``FAKE_ENVOY_URL``)."""
    if not CHAOS.exists():
        pytest.skip(f"the chaos CLI is not installed next to {sys.executable}")
    cache: dict[tuple[Any, ...], tuple[Path, int]] = {}
    root = tmp_path_factory.mktemp("journals")

    def get(
        name: str, env: dict[str, str] | None = None, strategy: str = "always", fake_envoy: bool = False
    ) -> tuple[Path, int]:
        key = (name, tuple(sorted((env or {}).items())), strategy, fake_envoy)
        if key not in cache:
            journal = root / f"{name}-{len(cache)}.journal.json"
            if fake_envoy:
                with FakeEnvoy() as envoy:
                    environ = {"FAKE_ENVOY_URL": envoy.url, **(env or {})}
                    code = run_chaos(
                        FIXTURE_EXPERIMENTS / f"{name}.json", journal, env=environ, rollback_strategy=strategy
                    )
            else:
                code = run_chaos(FIXTURE_EXPERIMENTS / f"{name}.json", journal, env=env, rollback_strategy=strategy)
            cache[key] = (journal, code)
        return cache[key]

    return get


def gate(
    journal: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], *options: str
) -> tuple[int, str, ET.Element, str]:
    """Run ``chaoscontour gate`` through the CLI dispatcher; return (exit code, stdout, JUnit root, Markdown)."""
    junit, summary = tmp_path / "junit.xml", tmp_path / "summary.md"
    code = cli_main(["gate", str(journal), "--junit", str(junit), "--summary", str(summary), *options])
    out = capsys.readouterr().out
    return code, out, ET.parse(junit).getroot(), summary.read_text(encoding="utf-8")


def outcome_failure(root: ET.Element) -> str:
    """The message of the JUnit "experiment outcome" failure: every reason, joined by "; "."""
    failure = cases(root)[("chaoscontour.gate", "experiment outcome")].find("failure")
    assert failure is not None
    return failure.get("message") or ""


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


def test_availability_below_min_availability_fails_the_gate(chaos_journal, tmp_path, capsys):
    """envoy_availability returns its figures below its bound and marks them; the gate enforces the bound."""
    journal, chaos_code = chaos_journal("availability-fault", env={"MIN_AVAILABILITY": "0.99"}, fake_envoy=True)
    assert chaos_code == 0  # nothing failed as far as chaostoolkit is concerned
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    (reason,) = [line for line in out.splitlines()[1:] if not line.startswith("note: ")]
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


def test_a_steady_state_probe_that_raised_is_named_with_its_exception(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("probe-raised")
    assert chaos_code == 1 and load_journal(journal)["status"] == "failed"
    code, out, root, _ = gate(journal, tmp_path, capsys)
    assert code == 1
    assert "steady-state before probe 'service-answers' failed: RuntimeError: GET /healthz: connection refused" in (
        out.splitlines()
    )
    failure = cases(root)[("chaos.steady-state-before", "service-answers")].find("failure")
    assert failure is not None and failure.get("type") == "ActivityFailed"
    assert "connection refused" in outcome_failure(root)


def test_a_method_activity_an_interrupted_run_never_played_fails_by_name(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("interrupted-method")
    assert chaos_code == 1
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    lines = out.splitlines()
    assert (
        "planned method action 'unblock-apiserver' did not run: the run ended with status 'interrupted' before "
        "reaching it"
    ) in lines
    assert (
        "method action 'safeguard-interrupts' did not finish: the run was interrupted during it (no status in the "
        "journal)"
    ) in lines
    assert cases(root)[("chaos.method", "unblock-apiserver")].find("skipped") is not None
    assert "planned method action 'unblock-apiserver' did not run" in outcome_failure(root)
    assert "- planned method action 'unblock-apiserver' did not run" in summary


def test_a_rollback_an_interrupted_run_never_played_fails_by_name(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("interrupted-rollback")
    assert chaos_code == 1
    assert [r["activity"]["name"] for r in load_journal(journal)["rollbacks"]] == ["repair-service", "signal-arrives"]
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    reason = (
        "planned rollback 'unblock-apiserver-rollback' did not run: the run ended with status 'interrupted' before "
        "reaching it; the fault may still be in place"
    )
    assert reason in out.splitlines()
    assert reason in outcome_failure(root) and f"- {reason}" in summary
    assert cases(root)[("chaos.rollback", "unblock-apiserver-rollback")].find("skipped") is not None


def test_rollbacks_skipped_by_the_default_strategy_fail_the_gate(chaos_journal, tmp_path, capsys):
    """chaostoolkit's ``default`` strategy skips every rollback of an interrupted run: the fault stays in place."""
    journal, chaos_code = chaos_journal("interrupted-method", strategy="default")
    assert chaos_code == 1 and load_journal(journal)["rollbacks"] == []
    code, out, root, _ = gate(journal, tmp_path, capsys)
    assert code == 1
    assert (
        "rollbacks were not played ('unblock-apiserver-rollback'); run with `--rollback-strategy always` so the "
        "fault is always undone"
    ) in out.splitlines()
    assert cases(root)[("chaos.rollback", "unblock-apiserver-rollback")].find("skipped") is not None


def test_a_confirmed_fault_that_held_to_the_end_passes_and_tells_the_story(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("apiserver-outage")
    assert chaos_code == 0
    code, out, _, summary = gate(journal, tmp_path, capsys)
    assert code == 0, out
    assert out.splitlines() == ["PASSED: Fixture: the API-server outage with stand-in activities"]
    assert "confirmed after 15.6 s: Lease projectcontour/leader-elect stayed unchanged for 15.6 s" in summary
    assert "- at the end of the fault window the fault still held" in summary
    assert "### Envoy availability (`envoy-availability-across-the-fault`)" in summary
    assert "Not checked" not in summary


def test_an_unverified_block_fails_unless_allowed_and_then_the_verdict_says_so_first(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("apiserver-outage", env={"FIXTURE_VERIFY": "false"})
    assert chaos_code == 0
    block = next(r for r in load_journal(journal)["run"] if r["activity"]["name"] == "block-apiserver-egress")
    assert block["output"]["verification"]["confirmed"] is None
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    reason = (
        "the fault of 'block-apiserver-egress' was not verified (verify=false): nothing shows Contour lost the API "
        "server (--allow-unverified accepts that)"
    )
    assert out.splitlines()[1:] == [reason]
    assert outcome_failure(root) == reason and f"- {reason}" in summary

    code, out, root, summary = gate(journal, tmp_path, capsys, "--allow-unverified")
    assert code == 0
    first, *rest = out.splitlines()
    assert first == "PASSED on an unverified fault: Fixture: the API-server outage with stand-in activities"
    assert rest == [
        "the verdict rests on an unverified fault: the fault of 'block-apiserver-egress' was not verified "
        "(verify=false)"
    ]
    assert summary.splitlines()[0] == (
        "## Chaos gate ✅ passed on an unverified fault: Fixture: the API-server outage with stand-in activities"
    )
    outcome = cases(root)[("chaoscontour.gate", "experiment outcome")]
    assert "the verdict rests on an unverified fault" in (outcome.findtext("system-out") or "")
    assert root.find(".//property[@name='unverified_fault']").get("value") == "true"


def test_a_fault_that_did_not_hold_to_the_end_fails_with_the_probe_reasons(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("apiserver-outage", env={"FIXTURE_FAULT_HELD": "false"})
    assert chaos_code == 0
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    reason = (
        "the fault did not hold for the whole window ('fault-held-to-the-end'): NetworkPolicy "
        "chaoscontour-apiserver-egress-1 is gone (deleted by hand?); API-server endpoint 10.0.0.12 appeared during "
        "the fault and is not blocked"
    )
    assert out.splitlines()[1:] == [reason]
    assert outcome_failure(root) == reason and f"- {reason}" in summary
    # --allow-unverified is about verification, not about a fault seen not to hold.
    assert gate(journal, tmp_path, capsys, "--allow-unverified")[0] == 1


def test_a_lease_seen_held_during_a_confirmed_fault_fails_although_the_end_probe_says_held(
    chaos_journal, tmp_path, capsys
):
    """Issue 21: evidence that contradicts the fault anywhere in the window fails the run, with the probe named."""
    journal, chaos_code = chaos_journal("apiserver-outage", env={"FIXTURE_LEASE_HELD": "true"})
    assert chaos_code == 0
    code, out, root, _ = gate(journal, tmp_path, capsys)
    assert code == 1
    reason = (
        "'lease-during-the-fault' saw Lease projectcontour/leader-elect held during the API-server fault (renewed "
        "1.2 s before, by contour-0_0b9a5c2e-6c1f-4f53-9b36-2f0e4c8d1a77): a Contour still reached the API server "
        "after the fault was confirmed, so it did not hold"
    )
    assert out.splitlines()[1:] == [reason]
    assert outcome_failure(root) == reason
    # Without confirmation nothing says the Lease should be quiet yet: the unverified block is the reason, not this.
    journal, _ = chaos_journal("apiserver-outage", env={"FIXTURE_LEASE_HELD": "true", "FIXTURE_VERIFY": "false"})
    assert "saw Lease" not in gate(journal, tmp_path, capsys)[1]


def test_an_xds_stream_seen_open_during_the_confirmed_xds_fault_fails_a_real_journal(chaos_journal, tmp_path, capsys):
    journal, chaos_code = chaos_journal("xds-blackhole", env={"FIXTURE_XDS_STREAM_OPEN": "true"})
    assert chaos_code == 0
    code, out, _, _ = gate(journal, tmp_path, capsys)
    assert code == 1
    assert out.splitlines()[1:] == [
        "'envoy-xds-during-the-fault' saw Envoy's xDS stream up during the xDS fault of 'block-xds-egress' (5 "
        "stream(s) open on projectcontour_contour_8001, none waiting): Envoy opened a connection to Contour after the "
        "fault was confirmed, so it did not hold (a probe must read one of the Envoy pods the block selected)"
    ]
    # Envoy dialing with its gauges at 1 is what a held black hole looks like: that run passes.
    journal, _ = chaos_journal("xds-blackhole")
    assert gate(journal, tmp_path, capsys)[0] == 0


def test_an_outage_without_the_end_of_window_probe_passes_and_says_what_was_not_checked(
    chaos_journal, tmp_path, capsys
):
    journal, chaos_code = chaos_journal("apiserver-outage-without-end-probe")
    assert chaos_code == 0
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 0, out
    note = (
        "the method has no apiserver_egress_fault probe, so nothing checked that the fault still held at the end of "
        "its window (an experiment written before that probe existed)"
    )
    assert out.splitlines()[1:] == [f"note: {note}"]
    assert f"**Not checked**\n\n- {note}" in summary
    assert note in (cases(root)[("chaoscontour.gate", "experiment outcome")].findtext("system-out") or "")


@pytest.mark.parametrize(
    ("sampler", "reasons"),
    [
        (
            "raise",
            [
                "method probe 'sample-envoy' failed: RuntimeError: cannot reach Envoy at http://127.0.0.1:9/: "
                "connection refused",
                "no availability figures: the sampler 'sample-envoy' failed, so nothing shows what Envoy's clients saw",
            ],
        ),
        ("nothing", ["no availability figures: the sampler 'sample-envoy' returned null"]),
    ],
)
def test_a_declared_sampler_that_left_no_figures_fails_the_gate(chaos_journal, tmp_path, capsys, sampler, reasons):
    journal, chaos_code = chaos_journal("sampler-missing", env={"FIXTURE_SAMPLER": sampler})
    assert chaos_code == 0
    code, out, root, summary = gate(journal, tmp_path, capsys)
    assert code == 1
    assert out.splitlines()[1:] == reasons
    assert outcome_failure(root) == "; ".join(reasons)
    assert all(f"- {r}" in summary for r in reasons)


# The gate table of docs/gate-and-report.md, row by row: the experiment (and its environment, rollback strategy,
# fake Envoy) whose real journal backs the row.
GATE_DOC_ROWS: dict[str, dict[str, Any]] = {
    "everything held": {"name": "passing"},
    "steady state missed **before** the method (never run)": {"name": "missed-before"},
    "an action of the method failed": {"name": "failed-action"},
    "a rollback failed (the fault may still be in place!)": {"name": "failed-rollback"},
    "steady state missed after the method": {"name": "deviated"},
    "a steady-state probe raised": {"name": "probe-raised"},
    "`envoy_availability` below its `min_availability`": {
        "name": "availability-fault",
        "env": {"MIN_AVAILABILITY": "0.99"},
        "fake_envoy": True,
    },
    "`envoy_availability` declared in the method, but it failed": {
        "name": "sampler-missing",
        "env": {"FIXTURE_SAMPLER": "raise"},
    },
    "`envoy_availability` declared in the method, but it returned no figures": {
        "name": "sampler-missing",
        "env": {"FIXTURE_SAMPLER": "nothing"},
    },
    "interrupted mid-method: a planned method activity never ran": {"name": "interrupted-method"},
    "interrupted during the rollbacks: a planned rollback never ran": {"name": "interrupted-rollback"},
    "rollbacks skipped (strategy `default` on an interrupted run)": {
        "name": "interrupted-method",
        "strategy": "default",
    },
    "`block_apiserver_egress` ran with `verify: false` (fault not confirmed)": {
        "name": "apiserver-outage",
        "env": {"FIXTURE_VERIFY": "false"},
    },
    "`apiserver_egress_fault`: the fault did not hold to the end of its window": {
        "name": "apiserver-outage",
        "env": {"FIXTURE_FAULT_HELD": "false"},
    },
    "a confirmed fault that held to the end of its window": {"name": "apiserver-outage"},
    "`lease_holder` saw the Lease held while the confirmed fault was on": {
        "name": "apiserver-outage",
        "env": {"FIXTURE_LEASE_HELD": "true"},
    },
    "`envoy_xds_connected` saw an xDS stream open while the confirmed xDS fault was on": {
        "name": "xds-blackhole",
        "env": {"FIXTURE_XDS_STREAM_OPEN": "true"},
    },
    "a stop condition (chaostoolkit-addons' safeguard) tripped: the run was aborted": {
        "name": "stop-condition",
        "env": {"FAULT_MODE": "flaky"},
        "fake_envoy": True,
    },
    "no `apiserver_egress_fault` in the method (an older experiment)": {"name": "apiserver-outage-without-end-probe"},
}


def documented_gate_table() -> list[list[str]]:
    text = GATE_DOC.read_text(encoding="utf-8")
    section = text[text.index("## The chaos gate") : text.index("## The report")]
    rows = [line for line in section.splitlines() if line.startswith("|")][2:]
    return [[cell.strip() for cell in row.strip("|").split("|")] for row in rows]


def test_every_row_of_the_documented_gate_table_is_a_real_journal_judged_as_written(chaos_journal, tmp_path, capsys):
    table = documented_gate_table()
    assert [row[0] for row in table] == list(GATE_DOC_ROWS)
    for what, status_deviated, chaos_exit, gate_exit in table:
        row = GATE_DOC_ROWS[what]
        journal, chaos_code = chaos_journal(
            row["name"],
            env=row.get("env"),
            strategy=row.get("strategy", "always"),
            fake_envoy=bool(row.get("fake_envoy")),
        )
        data = load_journal(journal)
        assert f"{data['status']} / {str(data['deviated']).lower()}" == status_deviated, what
        assert str(chaos_code) == chaos_exit.strip("*"), what
        expected = [int(n) for n in re.findall(r"\d+", gate_exit)]
        assert cli_main(["gate", str(journal)]) == expected[0], what
        if "--allow-unverified" in gate_exit:
            assert cli_main(["gate", str(journal), "--allow-unverified"]) == expected[1], what
        out = capsys.readouterr().out
        if "with a note" in gate_exit:
            assert "\nnote: " in out, what


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


MODULES = {
    "block_apiserver_egress": "network",
    "unblock_apiserver_egress": "network",
    "apiserver_egress_fault": "network",
    "lease_holder": "leader",
    "kill_leader": "leader",
    "contour_restart_count": "pods",
    "envoy_xds_connected": "envoy",
    "envoy_availability": "envoy",
}


def _run(func: str, output: Any, module: str | None = None, **extra: Any) -> dict:
    module = module or f"chaoscontour.activities.{MODULES[func]}"
    provider = {"type": "python", "module": module, "func": func}
    return {"activity": {"type": "action", "name": func, "provider": provider}, "output": output, **extra}


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


KILL = {"old_pod": "contour-a", "new_pod": "contour-b", "failover_s": 0.8}


@pytest.mark.parametrize(
    ("xds", "ending"),
    [
        (
            {
                "known": True,
                "streams_before": {"contour-a": 1, "contour-c": 0},
                "on_killed_pod": 1,
                "reconnected_after_s": 0.314,
                "reconnected_to": ["contour-c"],
            },
            "; 1 of 1 Envoy xDS stream(s) were on the killed pod, back on contour-c 0.314 s after the delete",
        ),
        (
            {"known": True, "streams_before": {"contour-a": 1}, "on_killed_pod": 1, "reconnected_after_s": None},
            "; 1 of 1 Envoy xDS stream(s) were on the killed pod and were not all back on another replica by the "
            "end of the wait",
        ),
        (
            {"known": True, "streams_before": {"contour-a": 0, "contour-c": 2}, "on_killed_pod": 0},
            "; Envoy's xDS stream was on contour-c, not on the killed pod: not cut",
        ),
        (
            {"known": False, "reason": "the metrics of contour-a could not be read: RBAC forbids it (403)"},
            "; which replica served Envoy's xDS is unknown (the metrics of contour-a could not be read: RBAC "
            "forbids it (403))",
        ),
    ],
)
def test_a_kill_leader_finding_says_where_envoys_xds_stream_was(xds: dict[str, Any], ending: str) -> None:
    journal = {"run": [_run("kill_leader", KILL | {"xds": xds})]}
    assert fault_findings(journal) == ["leader contour-a killed; contour-b took over in 0.8 s" + ending]


def with_method(*entries: dict) -> dict[str, Any]:
    """A passing hand-made journal whose method is ``entries`` (run entries), all planned and all succeeded."""
    entries = tuple({"status": "succeeded", "duration": 0.1, **e} for e in entries)
    journal = journal_of(run=list(entries))
    journal["experiment"]["method"] = [e["activity"] for e in entries]
    return journal


def test_a_verification_that_did_not_confirm_the_fault_fails_even_when_unverified_faults_are_allowed():
    output = {"verification": {"confirmed": False, "evidence": "lease-still-renewed", "evidence_text": "renewed 3x"}}
    journal = with_method(_run("block_apiserver_egress", output), _run("apiserver_egress_fault", {"held": True}))
    expected = ("the fault of 'block_apiserver_egress' was not confirmed: renewed 3x",)
    assert judge(journal).reasons == expected
    assert judge(journal, GateOptions(allow_unverified=True)).reasons == expected


def test_a_block_output_without_verification_is_unverified():
    journal = with_method(_run("block_apiserver_egress", {"selected_pods": ["a"]}))
    (reason,) = judge(journal).reasons
    assert reason.startswith("the fault of 'block_apiserver_egress' was not verified (its output has no verification)")
    verdict = judge(journal, GateOptions(allow_unverified=True))
    assert verdict.passed and (verdict.unverified or "").startswith("the verdict rests on an unverified fault")


def test_a_function_of_another_module_that_shares_our_names_is_not_judged_as_ours():
    theirs = "acme.chaos.network"
    journal = with_method(
        _run("block_apiserver_egress", {"whatever": 1}, module=theirs),
        _run("apiserver_egress_fault", {"held": False, "reasons": ["x"]}, module=theirs),
        _run("envoy_availability", None, module=theirs),
    )
    verdict = judge(journal)
    assert verdict.passed and verdict.notes == () and verdict.findings == ()
    assert [chaoscontour_func(r) for r in journal["run"]] == [None, None, None]
    assert chaoscontour_func(_run("wait", None, module="chaoscontour.activities.timing")) == "wait"


def test_an_end_of_window_probe_without_held_fails():
    journal = with_method(_run("apiserver_egress_fault", {"reasons": []}))
    assert judge(journal).reasons == (
        "'apiserver_egress_fault' did not say whether the fault held (no 'held' in its output)",
    )


def test_a_failed_block_is_its_own_reason_not_also_an_unverified_one():
    journal = with_method(
        _run("block_apiserver_egress", None, status="failed", exception=["ActivityFailed: did not take effect\n"])
    )
    assert judge(journal).reasons == ("method action 'block_apiserver_egress' failed: did not take effect",)


def test_tokens_in_the_fault_reasons_are_masked_in_every_output(tmp_path, capsys):
    reasons = ["re-read of the policy failed: 401 for Authorization: Bearer eyJhbGciOiJSUzI1NiJ9.s3cr3t"]
    journal = with_method(_run("apiserver_egress_fault", {"held": False, "reasons": reasons}))
    path = tmp_path / "journal.json"
    path.write_text(json.dumps(journal), encoding="utf-8")
    code, out, root, summary = gate(path, tmp_path, capsys)
    assert code == 1
    assert "s3cr3t" not in ET.tostring(root, encoding="unicode")
    for text in (out, outcome_failure(root), summary):
        assert "s3cr3t" not in text and "Bearer <redacted>" in text


def test_a_pod_kill_that_deleted_nothing_fails_the_run():
    """Issue 21: terminate_pods with a selector that matches nothing deletes nothing and succeeds."""
    kill = {
        "type": "action",
        "name": "kill-a-backend-pod",
        "provider": {
            "type": "python",
            "module": "chaosk8s.pod.actions",
            "func": "terminate_pods",
            "arguments": {"label_selector": "app=cart"},
        },
    }

    def ran(output):
        return journal_of(
            experiment={**journal_of()["experiment"], "method": [kill]},
            run=[{"activity": kill, "output": output, "status": "succeeded", "duration": 0.2}],
        )

    assert judge(ran(["cart-7d9f-x2b"])).passed
    verdict = judge(ran([]))
    assert not verdict.passed
    assert verdict.reasons == (
        "'kill-a-backend-pod' (chaostoolkit-kubernetes terminate_pods) deleted no pod: its selector matched nothing, "
        "so the pod death the experiment is about never happened",
    )


def _pod_kill_journal(arguments: dict[str, Any], deleted: list[str]) -> dict[str, Any]:
    """A journal whose method is one chaostoolkit-kubernetes terminate_pods with ``arguments`` that deleted
    ``deleted``."""
    kill = {
        "type": "action",
        "name": "kill-a-backend-pod",
        "provider": {
            "type": "python",
            "module": "chaosk8s.pod.actions",
            "func": "terminate_pods",
            "arguments": arguments,
        },
    }
    return journal_of(
        experiment={**journal_of()["experiment"], "method": [kill]},
        run=[{"activity": kill, "output": deleted, "status": "succeeded", "duration": 0.2}],
    )


@pytest.mark.parametrize(
    "arguments",
    [
        {"ns": "demo", "qty": 1},
        {"label_selector": "", "ns": "demo"},
        {"label_selector": "  ", "name_pattern": ""},
        {"label_selector": None, "name_pattern": None},
    ],
    ids=["missing", "empty", "blank", "null"],
)
def test_a_pod_kill_without_a_selector_fails_the_run_although_it_deleted_a_pod(arguments):
    """Issue 21: with no label_selector and no name_pattern terminate_pods picks from every pod of the namespace."""
    verdict = judge(_pod_kill_journal(arguments, deleted=["postgres-0"]))
    assert not verdict.passed
    assert verdict.reasons == (
        "'kill-a-backend-pod' (chaostoolkit-kubernetes terminate_pods) ran with no label_selector and no "
        "name_pattern, so it picked from every pod of its namespace: set label_selector to the backend's pods (e.g. "
        "'app=echo'; in the shipped experiment, BACKEND_SELECTOR)",
    )


@pytest.mark.parametrize(
    "arguments",
    [{"label_selector": "app=echo"}, {"name_pattern": "^echo-"}, {"label_selector": "${backend_selector}"}],
    ids=["selector", "name-pattern", "placeholder"],
)
def test_a_pod_kill_with_a_selector_or_a_name_pattern_passes(arguments):
    assert judge(_pod_kill_journal(arguments, deleted=["echo-7d9f-x2b"])).passed


def _at(second: int) -> str:
    return f"2026-12-05T10:00:{second:02d}.000000"


def _xds_run(probe_output: dict[str, Any], probe_at: int) -> list[dict[str, Any]]:
    """A confirmed xDS block (returns at 0:40), an envoy_xds_connected probe at ``probe_at``, the unblock at 0:50."""
    modules = {"module": "chaoscontour.activities.xds"}
    block = _run(
        "block_xds_egress",
        {"verification": {"confirmed": True, "evidence": "envoy-reported-xds-disconnected"}},
        **modules,
        status="succeeded",
        start=_at(0),
        end=_at(40),
    )
    probe = _run("envoy_xds_connected", probe_output, status="succeeded", start=_at(probe_at), end=_at(probe_at))
    unblock = _run("unblock_xds_egress", {"removed_policies": ["p"]}, **modules, status="succeeded", start=_at(50))
    unblock["end"] = _at(50)
    return [block, probe, unblock]


OPEN_STREAM = {"xds_cluster": "projectcontour_contour_8001", "streams_waiting_for_connection": 0, "streams_open": 5}


def test_an_xds_stream_seen_open_during_a_confirmed_xds_fault_fails_the_gate():
    verdict = judge(journal_of(run=_xds_run({"connected": True, "stream": OPEN_STREAM}, probe_at=45)))
    assert not verdict.passed
    assert any(
        "'envoy_xds_connected' saw Envoy's xDS stream up during the xDS fault of 'block_xds_egress' (5 stream(s) "
        "open on projectcontour_contour_8001" in reason
        for reason in verdict.reasons
    ), verdict.reasons


@pytest.mark.parametrize(
    ("output", "probe_at"),
    [
        ({"connected": True, "stream": None}, 45),  # the gauges alone: they read 1 while Envoy dials
        ({"connected": False, "stream": {**OPEN_STREAM, "streams_open": 0, "streams_waiting_for_connection": 5}}, 45),
        ({"connected": True, "stream": OPEN_STREAM}, 30),  # before the block returned: Envoy had not noticed yet
        ({"connected": True, "stream": OPEN_STREAM}, 55),  # after the heal
    ],
)
def test_an_xds_reading_that_proves_no_open_stream_in_the_window_is_no_contradiction(output, probe_at):
    verdict = judge(journal_of(run=_xds_run(output, probe_at)))
    assert not any("saw Envoy's xDS stream up" in reason for reason in verdict.reasons), verdict.reasons
