"""The gate and the report on the journals the e2e suite's real runs against the sandbox kept in this session.

``test_experiments.py`` copies the journals of its runs of the shipped experiments into
``$CHAOSCONTOUR_SANDBOX_JOURNALS`` (``keep_journal``); this module's name sorts after the other e2e modules, so
pytest runs it once they are written. Each journal must get its expected verdict: the naive block in conntrack mode
is caught by its verification and fails the run; every other run passes.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from chaoscontour.cli import main as cli_main
from chaoscontour.tools.journal import BLOCK_APISERVER, KILL_LEADER, chaoscontour_func, epoch_of
from chaoscontour.tools.timeline import report_data

from .conftest import Sandbox

# journal file -> (the gate's exit code, the e2e test that writes it)
EXPECTED = {
    "journal-apiserver-outage.json": (
        0,
        "test_apiserver_outage_envoy_keeps_routing_while_every_contour_replica_restarts",
    ),
    "journal-leader-kill.json": (0, "test_leader_kill_fails_over_within_client_go_worst_case"),
    "journal-conntrack-restart-pods.json": (0, "test_in_conntrack_mode_restarting_the_pods_makes_the_fault_real"),
    "journal-conntrack-naive.json": (1, "test_in_conntrack_mode_a_naive_block_is_caught_by_verification_and_removed"),
}


def journals_dir() -> Path:
    configured = os.environ.get("CHAOSCONTOUR_SANDBOX_JOURNALS")
    assert configured, (
        "CHAOSCONTOUR_SANDBOX_JOURNALS is not set: the e2e conftest's session fixture `sandbox_journals` sets it to a "
        "directory of this session when the environment does not"
    )
    return Path(configured)


def test_the_kept_journals_are_exactly_the_ones_with_an_expected_verdict(sandbox: Sandbox) -> None:
    kept = {p.name for p in journals_dir().glob("*.json")}
    assert kept == set(EXPECTED), f"kept {sorted(kept)}; give every kept journal an expected verdict here"


@pytest.mark.parametrize("name", list(EXPECTED))
def test_sandbox_journal_gets_its_expected_verdict_and_a_report_with_markers_at_their_times(
    sandbox: Sandbox, name: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    expected, writer = EXPECTED[name]
    path = journals_dir() / name
    assert path.exists(), f"no {name} in {path.parent}: {writer} (tests/e2e/test_experiments.py) writes it"
    code = cli_main(["gate", str(path)])
    out = capsys.readouterr().out
    assert code == expected, out
    journal = json.loads(path.read_text(encoding="utf-8"))
    if expected == 1:
        # The conntrack-naive run fails for the block's own failure: its verification saw Contour keep the API server.
        assert "method action 'block-apiserver-egress' failed:" in out and "did not take effect" in out, out

    assert cli_main(["report", str(path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{path.stem}.png").stat().st_size > 10_000
    data = report_data(journal)
    starts = {
        epoch_of(run["start"]) for run in journal["run"] if chaoscontour_func(run) in (BLOCK_APISERVER, KILL_LEADER)
    }
    assert starts, f"{name} has no fault activity"
    assert starts <= {m.epoch_s for m in data.markers if m.kind == "fault"}
    if data.origin_epoch_s is not None and data.series is not None:
        for marker in data.markers:
            assert marker.offset_s == pytest.approx(marker.epoch_s - data.origin_epoch_s, abs=1e-3)
