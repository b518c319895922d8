"""The gate and the report on the journals the e2e suite's real runs against the sandbox kept in this session.

``test_experiments.py``, ``test_xds_blackhole.py`` and ``test_endpoint_churn.py`` copy the journals of their runs of the
shipped experiments into ``$CHAOSCONTOUR_SANDBOX_JOURNALS`` (``keep_journal``); this module is marked
``reads_kept_journals``, which the e2e conftest runs after the other e2e tests, once they are written. Each journal must
get its expected verdict: the naive block in conntrack mode is caught by its verification and the demo route as shipped
loses requests under endpoint churn, so both fail; every other run passes. The xDS and churn reports must show their
timeline next to availability, with every mark at the time the journal gives.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.cli import main as cli_main
from chaoscontour.tools.journal import BLOCK_APISERVER, BLOCK_XDS, KILL_LEADER, chaoscontour_func, epoch_of
from chaoscontour.tools.timeline import ReportData, report_data
from tests.support.sandbox import Sandbox

pytestmark = pytest.mark.reads_kept_journals

# journal file -> (the gate's exit code, the e2e test that writes it)
EXPECTED = {
    "journal-apiserver-outage.json": (
        0,
        "test_apiserver_outage_envoy_keeps_routing_while_every_contour_replica_restarts",
    ),
    "journal-leader-kill.json": (0, "test_leader_kill_fails_over_within_client_go_worst_case"),
    "journal-gateway-apiserver-outage.json": (
        0,
        "test_apiserver_outage_on_the_provisioned_gateway_passes_the_gate (test_gateway.py)",
    ),
    "journal-gateway-envoy-restart-during-outage.json": (
        1,
        "test_an_envoy_restarted_during_the_outage_serves_nothing_until_the_heal_while_the_other_keeps_routing "
        "(test_gateway.py)",
    ),
    "journal-conntrack-restart-pods.json": (0, "test_in_conntrack_mode_restarting_the_pods_makes_the_fault_real"),
    "journal-conntrack-naive.json": (1, "test_in_conntrack_mode_a_naive_block_is_caught_by_verification_and_removed"),
    "journal-xds-blackhole.json": (
        0,
        "test_envoy_routes_through_the_xds_black_hole_notices_it_and_converges_after_the_heal (test_xds_blackhole.py)",
    ),
    "journal-endpoint-churn-plain.json": (
        1,
        "test_the_demo_route_as_it_is_fails_the_gate_when_a_backend_pod_dies_while_contour_is_cut_off "
        "(test_endpoint_churn.py)",
    ),
    "journal-endpoint-churn-resilient.json": (
        0,
        "test_the_same_route_with_retries_on_connect_failure_and_health_checks_passes_the_gate "
        "(test_endpoint_churn.py)",
    ),
}
# What the gate says about each failing journal.
FAILS_FOR = {
    "journal-conntrack-naive.json": ("method action 'block-apiserver-egress' failed:", "did not take effect"),
    "journal-endpoint-churn-plain.json": ("below min_availability",),
    "journal-gateway-envoy-restart-during-outage.json": ("its traffic failed while Contour was cut off",),
}


# How long after the API server accepts a NetworkPolicy the sandbox's node agent may take to enforce it.
ENFORCED_WITHIN_S = 1.0


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
    assert path.exists(), f"no {name} in {path.parent}: {writer} writes it"
    code = cli_main(["gate", str(path)])
    out = capsys.readouterr().out
    assert code == expected, out
    journal = json.loads(path.read_text(encoding="utf-8"))
    for text in FAILS_FOR.get(name, ()):
        assert text in out, out

    assert cli_main(["report", str(path), "--out", str(tmp_path)]) == 0
    assert (tmp_path / f"{path.stem}.png").stat().st_size > 10_000
    data = report_data(journal)
    starts = {
        epoch_of(run["start"])
        for run in journal["run"]
        if chaoscontour_func(run) in (BLOCK_APISERVER, BLOCK_XDS, KILL_LEADER)
    }
    assert starts, f"{name} has no fault activity"
    assert starts <= {m.epoch_s for m in data.markers if m.kind == "fault"}
    if data.origin_epoch_s is not None and data.series is not None:
        for marker in data.markers:
            assert marker.offset_s == pytest.approx(marker.epoch_s - data.origin_epoch_s, abs=1e-3)
    page = (tmp_path / f"{path.stem}.html").read_text(encoding="utf-8")
    if name == "journal-xds-blackhole.json":
        check_xds_timeline(journal, data, page)
    elif name.startswith("journal-endpoint-churn-"):
        check_churn_timeline(journal, data, page)
    elif name == "journal-gateway-envoy-restart-during-outage.json":
        assert [s.kind for s in data.tracks.spans if s.lane == "restarted-envoy"] == ["bad", "ok"]
        assert "restarted Envoy" in page
    else:
        assert data.tracks.empty and "Timeline of endpoints and xDS state" not in page


def entry(journal: dict[str, Any], name: str) -> dict[str, Any]:
    (found,) = [r for r in journal["run"] if r["activity"]["name"] == name]
    return dict(found)


def marked(data: ReportData, kind: str, starts: str) -> float:
    found = [m.epoch_s for m in data.markers if m.kind == kind and m.label.startswith(starts)]
    assert len(found) == 1, (starts, [m.label for m in data.markers])
    return found[0]


def check_xds_timeline(journal: dict[str, Any], data: ReportData, page: str) -> None:
    """Envoy's xDS state over time: the stream dead but unnoticed from the block, noticed, working again after the
    heal; the age of its configuration; the route change held back and served after the heal."""
    timeline = entry(journal, "envoy-xds-timeline")["output"]
    blocked, healed = epoch_of(timeline["blocked_at"]), epoch_of(timeline["healed_at"])
    assert blocked is not None and healed is not None
    assert marked(data, "xds", "Envoy noticed") == pytest.approx(blocked + timeline["detected_after_s"])
    assert marked(data, "xds", "Envoy reconnected") == pytest.approx(healed + timeline["reconnected_after_s"])
    assert [s.kind for s in data.tracks.spans if s.lane == "xds"] == ["ok", "held", "bad", "ok"]
    # The configuration ages through the fault: no update lands between the block taking effect and the heal. The
    # node agent loads a new NetworkPolicy a moment after the API server accepts it, and an update already on its
    # way may land in that moment (CI: one 0.39 s after `blocked_at`).
    enforced = blocked + ENFORCED_WITHIN_S
    first = epoch_of(timeline["first_reading_at"])
    assert first is not None
    assert not [u for u in timeline["updates_at_s"] if enforced < first + u < healed], timeline["updates_at_s"]
    assert data.tracks.update_age and max(age for _, age in data.tracks.update_age) > healed - enforced
    during = entry(journal, "route-change-during-the-fault")["output"]
    written = epoch_of(during["written_at"])
    assert marked(data, "route", f"route change {during['marker']} written") == pytest.approx(written)
    assert "Timeline of endpoints and xDS state" in page and "stream dead, Envoy unaware" in page


def check_churn_timeline(journal: dict[str, Any], data: ReportData, page: str) -> None:
    """The kill, the EndpointSlices moving on, Envoy's list stale until after the heal, failures by cause."""
    killed = entry(journal, "kill-a-backend-pod")
    assert marked(data, "endpoints", f"{killed['output'][0]} killed") == pytest.approx(epoch_of(killed["start"]))
    converged = entry(journal, "envoy-endpoints-converged-after-the-heal")
    start = epoch_of(converged["start"])
    assert start is not None
    matched = start + converged["output"]["endpoints_matched_after_s"]
    assert marked(data, "endpoints", "Envoy's endpoints match") == pytest.approx(matched)
    origin = data.origin_epoch_s or 0.0
    (stale,) = [s for s in data.tracks.spans if s.lane == "endpoints"]
    assert stale.end_s == pytest.approx(matched - origin, abs=1e-3)
    assert [s.lane for s in data.tracks.spans if s.lane == "slices"] == ["slices"]
    assert data.tracks.counters and all(r.during_fault + r.after_heal == r.whole for r in data.tracks.counters)
    assert "Envoy's counters for the backend, by cause" in page
