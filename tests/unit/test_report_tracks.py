"""The report's timeline of endpoint changes and xDS state, from real journals of the two experiments.

``tests/fixtures/journals/xds-blackhole.json`` is the journal of ``make demo EXPERIMENT=xds-blackhole`` on the
sandbox, ``endpoint-churn-plain.json`` that of ``tests/e2e/test_endpoint_churn.py``'s demo route as shipped
(Envoy's admin ``/clusters`` read through the test's relay, so endpoints are compared by address) and
``endpoint-churn-demo.json`` that of ``make demo EXPERIMENT=endpoint-churn-during-outage`` (compared by count); all
trimmed of ``platform``, ``node`` and the experiment's description. Every expected time below is read from the
journal itself.
"""

from __future__ import annotations

import copy
import itertools
import json
import struct
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.cli import main as cli_main
from chaoscontour.tools.journal import epoch_of
from chaoscontour.tools.report_html import tracks_html
from chaoscontour.tools.timeline import ReportData, report_data
from tests.support.paths import FIXTURES

JOURNALS = FIXTURES / "journals"


def load(name: str) -> dict[str, Any]:
    return dict(json.loads((JOURNALS / name).read_text(encoding="utf-8")))


def run(journal: dict[str, Any], name: str, key: str = "run") -> dict[str, Any]:
    (found,) = [r for r in journal[key] if r["activity"]["name"] == name]
    return dict(found)


def epoch(value: Any) -> float:
    when = epoch_of(value)
    assert when is not None, value
    return when


def marker(data: ReportData, kind: str, starts: str) -> Any:
    (found,) = [m for m in data.markers if m.kind == kind and m.label.startswith(starts)]
    assert found.offset_s == pytest.approx(found.epoch_s - (data.origin_epoch_s or 0.0), abs=1e-3)
    return found


# ---------------------------------------------------------------------------------------------------- xDS black hole


@pytest.fixture
def xds() -> dict[str, Any]:
    return load("xds-blackhole.json")


def test_xds_events_sit_where_the_timeline_and_route_probes_put_them(xds: dict[str, Any]) -> None:
    timeline = run(xds, "envoy-xds-timeline")["output"]
    blocked, healed = epoch(timeline["blocked_at"]), epoch(timeline["healed_at"])
    data = report_data(xds)

    assert marker(data, "xds", "Envoy noticed").epoch_s == pytest.approx(blocked + timeline["detected_after_s"])
    assert marker(data, "xds", "Envoy reconnected").epoch_s == pytest.approx(healed + timeline["reconnected_after_s"])
    assert marker(data, "xds", "Envoy current again").epoch_s == pytest.approx(healed + timeline["current_after_s"])
    baseline = run(xds, "route-change-before-the-fault")["output"]
    served = marker(data, "route", f"route change {baseline['marker']} served")
    assert served.epoch_s == pytest.approx(epoch(baseline["written_at"]) + baseline["propagation_s"])
    during = run(xds, "route-change-during-the-fault")["output"]
    assert marker(data, "route", f"route change {during['marker']} written").epoch_s == pytest.approx(
        epoch(during["written_at"])
    )
    converged = run(xds, "route-config-converged-after-the-heal")
    late = marker(data, "route", f"Envoy serves route change {during['marker']}")
    assert late.epoch_s == pytest.approx(epoch(converged["start"]) + converged["output"]["converged_after_s"])
    # The xDS block is a fault like the API-server block: its window is shaded up to the method's unblock.
    origin = data.origin_epoch_s or 0.0
    assert data.fault_window == pytest.approx(
        (
            epoch(run(xds, "block-xds-egress")["start"]) - origin,
            epoch(run(xds, "unblock-xds-egress")["start"]) - origin,
        ),
        abs=1e-3,
    )


def test_the_xds_lane_tells_a_dead_stream_envoy_has_not_noticed_from_one_it_retries(xds: dict[str, Any]) -> None:
    timeline = run(xds, "envoy-xds-timeline")["output"]
    data = report_data(xds)
    origin = data.origin_epoch_s or 0.0
    blocked, healed = epoch(timeline["blocked_at"]) - origin, epoch(timeline["healed_at"]) - origin

    stream = [s for s in data.tracks.spans if s.lane == "xds"]
    assert [s.kind for s in stream] == ["ok", "held", "bad", "ok"]
    assert stream[1].start_s == pytest.approx(blocked, abs=1e-3)
    assert stream[2].start_s == pytest.approx(blocked + timeline["detected_after_s"], abs=1e-3)
    assert stream[3].start_s == pytest.approx(healed + timeline["reconnected_after_s"], abs=1e-3)
    # The gauge as Envoy reported it: one bar per reading between transitions, 1 again while it retried.
    gauge = [s for s in data.tracks.spans if s.lane == "xds-gauge"]
    assert len(gauge) == len(timeline["transitions"]) + 1
    assert [s.label for s in gauge[:3]] == ["gauge 1", "gauge 0", "gauge 1"]
    first = epoch(timeline["first_reading_at"]) - origin
    assert data.tracks.failed_streams_s == pytest.approx([first + f for f in timeline["failures_at_s"]], abs=1e-3)


def test_the_age_of_envoys_configuration_drops_at_each_accepted_update_and_grows_through_the_fault(
    xds: dict[str, Any],
) -> None:
    timeline = run(xds, "envoy-xds-timeline")["output"]
    data = report_data(xds)
    origin = data.origin_epoch_s or 0.0
    first = epoch(timeline["first_reading_at"])
    age = data.tracks.update_age
    drops = [x for x, y in age if y == 0.0]
    # Each update a reading saw, dated by Envoy's own update_time when a steady-state probe read it (at most one
    # sampling interval earlier), else by the reading.
    interval = timeline["duration_s"] / (timeline["samples"] - 1) + 0.05
    seen = [first - origin + u for u in timeline["updates_at_s"]]
    assert len(drops) == len(seen)
    assert all(0 <= u - d <= interval for d, u in zip(drops, seen, strict=True)), (drops, seen)
    assert any(u - d > 0.01 for d, u in zip(drops, seen, strict=True)), "the update_time dates some more exactly"
    # Before the first update the timeline saw, the age runs from the update time the steady-state probe read.
    (before,) = [
        p["output"]
        for p in xds["steady_states"]["before"]["probes"]
        if p["activity"]["name"] == "envoy-is-connected-to-contour"
    ]
    last_known = max(before["cds"]["update_time_ms"], before["lds"]["update_time_ms"]) / 1000.0
    assert age[0] == pytest.approx((first - origin, first - last_known), abs=1e-3)
    # Through the fault nothing arrives: the age grows one second per second up to the first update after the heal.
    gaps = [round(y - x, 3) for x, y in itertools.pairwise(drops)]
    peak = max(y for _, y in age)
    assert peak == pytest.approx(max(gaps), abs=1e-3)
    assert peak > epoch(timeline["healed_at"]) - epoch(timeline["blocked_at"])


def test_the_xds_report_page_lists_the_timeline_and_its_figures(xds: dict[str, Any], tmp_path: Path) -> None:
    path = tmp_path / "xds.json"
    path.write_text(json.dumps(xds), encoding="utf-8")
    assert cli_main(["report", str(path), "--out", str(tmp_path)]) == 0
    page = (tmp_path / "xds.html").read_text(encoding="utf-8")
    assert "<h2>Timeline of endpoints and xDS state</h2>" in page
    assert f"Envoy noticed the dead stream {run(xds, 'envoy-xds-timeline')['output']['detected_after_s']:g} s" in page
    assert "stream dead, Envoy unaware" in page
    raw = (tmp_path / "xds.png").read_bytes()
    assert raw[:8] == b"\x89PNG\r\n\x1a\n"
    # The lane panel makes the figure taller than the three-panel one (at least 8.5 in at 110 dpi).
    assert struct.unpack(">II", raw[16:24])[1] > 8.5 * 110 + 150


# ---------------------------------------------------------------------------------------------------- endpoint churn


@pytest.fixture
def churn() -> dict[str, Any]:
    return load("endpoint-churn-plain.json")


def test_churn_events_mark_the_kill_the_readings_the_pushes_and_the_convergence(churn: dict[str, Any]) -> None:
    data = report_data(churn)
    killed = run(churn, "kill-a-backend-pod")
    kill = marker(data, "endpoints", f"{killed['output'][0]} killed")
    assert kill.epoch_s == pytest.approx(epoch(killed["start"]))
    window = run(churn, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    reading = marker(data, "endpoints", "end-of-window:")
    assert reading.epoch_s == pytest.approx(epoch(window["checked_at"]))
    assert f"still routes to {window['comparison']['stale'][0]} (stale)" in reading.label
    converged = run(churn, "envoy-endpoints-converged-after-the-heal")
    start, output = epoch(converged["start"]), converged["output"]
    matched = marker(data, "endpoints", "Envoy's endpoints match")
    assert matched.epoch_s == pytest.approx(start + output["endpoints_matched_after_s"])
    assert marker(data, "endpoints", "converged after").epoch_s == pytest.approx(start + output["converged_after_s"])
    # Envoy's EDS update_time as each reading found it: the push that changed its list, after the heal.
    after = churn["steady_states"]["after"]["probes"][2]["output"]
    changed = marker(data, "endpoints", "Envoy accepted an endpoint push (EDS update_time): a changed")
    assert changed.epoch_s == pytest.approx(after["eds_update_time_ms"] / 1000.0)
    assert changed.epoch_s > epoch(run(churn, "unblock-apiserver-egress")["start"])


def test_churn_lanes_show_when_the_slices_moved_on_and_how_long_envoy_kept_the_old_list(churn: dict[str, Any]) -> None:
    data = report_data(churn)
    origin = data.origin_epoch_s or 0.0
    killed = epoch(run(churn, "kill-a-backend-pod")["start"]) - origin
    window = run(churn, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]
    (slices,) = [s for s in data.tracks.spans if s.lane == "slices"]
    # The probes read the slices only at their readings: the change lies between the kill and the next one.
    assert (slices.start_s, slices.end_s) == pytest.approx((killed, epoch(window["checked_at"]) - origin), abs=1e-3)
    gone = set(window["since"]["endpointslices_ready_before"]) - set(window["comparison"]["endpointslices_ready"])
    assert gone == set(window["comparison"]["stale"]) and f"-{gone.pop()}" in slices.label
    converged = run(churn, "envoy-endpoints-converged-after-the-heal")
    (stale,) = [s for s in data.tracks.spans if s.lane == "endpoints"]
    matched = epoch(converged["start"]) + converged["output"]["endpoints_matched_after_s"] - origin
    assert (stale.start_s, stale.end_s, stale.kind) == pytest.approx((killed, matched, "bad"), abs=1e-3)
    assert data.tracks.lanes == ("slices", "endpoints")


def test_churn_counters_split_the_failures_by_cause_into_the_fault_and_after_the_heal(churn: dict[str, Any]) -> None:
    data = report_data(churn)
    window = run(churn, "envoy-view-of-the-backend-at-the-end-of-the-window")["output"]["since"]
    episode = run(churn, "envoy-endpoints-converged-after-the-heal")["output"]["since"]
    rows = {r.label: r for r in data.tracks.counters}
    uf = rows["requests failed for want of a connection (503 UF)"]
    assert uf.during_fault == window["counters"]["upstream_rq_pending_failure_eject"]
    assert uf.whole == episode["counters"]["upstream_rq_pending_failure_eject"]
    for row in data.tracks.counters:
        assert row.during_fault is not None and row.after_heal is not None and row.whole is not None
        assert row.during_fault + row.after_heal == row.whole, row
    assert "retries" not in rows, "the shipped route retries nothing: no row for counters that never moved"
    (during, whole) = data.tracks.causes
    assert during[0] == "from before-the-fault to end-of-window" and during[1] == tuple(window["failure_causes"])
    assert whole[1] == tuple(episode["failure_causes"])
    page = tracks_html(data)
    assert "Envoy's counters for the backend, by cause" in page and "(EDS frozen)" in page


def test_a_churn_run_that_never_converged_says_so_and_keeps_the_stale_interval_open(churn: dict[str, Any]) -> None:
    broken = copy.deepcopy(churn)
    entry = next(r for r in broken["run"] if r["activity"]["name"] == "envoy-endpoints-converged-after-the-heal")
    entry.update(
        status="failed",
        output=None,
        exception=["chaoslib.exceptions.ActivityFailed: Envoy's endpoints still differ after 60 s: stale x\n"],
    )
    data = report_data(broken)
    origin = data.origin_epoch_s or 0.0
    assert marker(data, "endpoints", "not converged:").label == (
        "not converged: Envoy's endpoints still differ after 60 s: stale x"
    )
    (stale,) = [s for s in data.tracks.spans if s.lane == "endpoints"]
    assert stale.end_s == pytest.approx(epoch(entry["end"]) - origin, abs=1e-3)
    assert [r.label for r in data.tracks.counters if r.whole is not None] == []
    assert not [m for m in data.markers if m.label.startswith("Envoy's endpoints match")]


def test_a_journal_without_those_probes_has_no_timeline_section() -> None:
    journal = {"experiment": {"title": "t", "method": []}, "status": "completed", "start": "2026-01-01T00:00:00Z"}
    data = report_data({**journal, "run": []})
    assert data.tracks.empty and tracks_html(data) == ""


def test_lists_compared_by_count_bound_the_stale_interval_by_convergence_not_by_a_matching_count() -> None:
    """``make demo EXPERIMENT=endpoint-churn-during-outage`` has no admin_url, so the probes compare counts, which
    match again as soon as the replacement pod is Ready although Envoy may still hold the dead pod's address."""
    demo = load("endpoint-churn-demo.json")
    entry = run(demo, "envoy-endpoints-converged-after-the-heal")
    assert entry["output"]["comparison"]["method"] == "counts"
    data = report_data(demo)
    origin = data.origin_epoch_s or 0.0
    (stale,) = [s for s in data.tracks.spans if s.lane == "endpoints"]
    converged = epoch(entry["start"]) + entry["output"]["converged_after_s"] - origin
    assert stale.end_s == pytest.approx(converged, abs=1e-3)
    assert stale.label == "Envoy may still route to the killed pod (lists compared by count only)"
    counts = marker(data, "endpoints", "the endpoint counts match again")
    assert counts.epoch_s == pytest.approx(epoch(entry["start"]) + entry["output"]["endpoints_matched_after_s"])
    assert "compared by count" in marker(data, "endpoints", "end-of-window:").label


def test_a_convergence_measured_after_the_sampler_stopped_keeps_its_marks(churn: dict[str, Any]) -> None:
    """The sampler runs for a fixed time; the convergence probe may find the endpoints matching later (CI saw 40 s
    after the heal). Its marks belong to this run, so they stay on the chart; only times before the journal's
    start (a restart or an endpoint push the status dates earlier) are left out."""
    short = copy.deepcopy(churn)
    healed = epoch(run(short, "unblock-apiserver-egress")["start"])
    sampler = run(short, "envoy-availability-across-the-fault")["output"]
    sampler["timeline"] = [row for row in sampler["timeline"] if row["epoch_s"] < healed]
    converged = run(short, "envoy-endpoints-converged-after-the-heal")
    matched_at = epoch(converged["start"]) + converged["output"]["endpoints_matched_after_s"]
    assert matched_at > sampler["timeline"][-1]["epoch_s"] + 2.0, "the fixture no longer exercises the case"
    data = report_data(short)
    assert marker(data, "endpoints", "Envoy's endpoints match").epoch_s == pytest.approx(matched_at)
    assert marker(data, "endpoints", "converged after").epoch_s <= epoch(short["end"])
    assert all(m.epoch_s >= epoch(short["start"]) - 1.0 for m in data.markers)
