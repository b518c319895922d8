"""An Envoy restarted while Contour is cut off: which pod is deleted, when every Contour counts as restarted since the
cut, what the replacement's lane says, and how the gate and the findings read ``restart_envoy_pod``'s output.

The lane outputs are made by the activity's own arithmetic (``domain.envoy_restart.lane_summary``) from request
records, so the journals hold what a run would.
"""

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from chaoscontour.domain.envoy_restart import (
    Attempt,
    NoSecondEnvoy,
    contours_restarted_since,
    lane_summary,
    pick_envoy_to_delete,
)
from chaoscontour.tools.report_html import render_html
from chaoscontour.tools.report_png import render_png
from chaoscontour.tools.timeline import report_data
from chaoscontour.tools.verdict import judge
from tests.support.journals import activity, completed_journal, ran

CUT = datetime(2026, 12, 6, 21, 0, 0, tzinfo=UTC)


def envoy(name: str, pod_ip: str, host_ip: str = "10.0.0.1", ready: bool = True, **meta: Any) -> dict[str, Any]:
    conditions = [{"type": "Ready", "status": "True" if ready else "False"}]
    status = {"podIP": pod_ip, "hostIP": host_ip, "conditions": conditions}
    return {"metadata": {"name": name, **meta}, "status": status}


def test_the_pod_the_sampler_uses_is_kept_and_another_ready_one_deleted() -> None:
    pods = [envoy("envoy-c", "10.2.0.9"), envoy("envoy-b", "10.2.0.7"), envoy("envoy-a", "10.2.0.5")]
    victim, kept = pick_envoy_to_delete(pods, "10.2.0.7")
    assert victim["metadata"]["name"] == "envoy-a" and kept == ["envoy-b"]


def test_on_host_ports_the_node_address_keeps_that_nodes_envoy() -> None:
    pods = [envoy("envoy-x", "10.2.0.5", host_ip="192.168.1.10"), envoy("envoy-y", "10.2.1.5", host_ip="192.168.1.11")]
    victim, kept = pick_envoy_to_delete(pods, "192.168.1.11")
    assert victim["metadata"]["name"] == "envoy-x" and kept == ["envoy-y"]


def test_one_envoy_per_node_on_one_node_is_refused_with_what_would_do() -> None:
    with pytest.raises(NoSecondEnvoy, match=r"needs a second Envoy.*Deployment with 2 replicas"):
        pick_envoy_to_delete([envoy("envoy-x", "10.2.0.5", host_ip="192.168.1.10")], "192.168.1.10")


def test_an_address_no_envoy_has_is_refused_naming_the_pods() -> None:
    with pytest.raises(NoSecondEnvoy, match=r"no Envoy pod is at 127.0.0.1.*envoy-a \(10.2.0.5 on 10.0.0.1\)"):
        pick_envoy_to_delete([envoy("envoy-a", "10.2.0.5"), envoy("envoy-b", "10.2.0.6")], "127.0.0.1")


def test_unready_and_terminating_pods_are_not_deleted() -> None:
    pods = [
        envoy("envoy-a", "10.2.0.5", ready=False),
        envoy("envoy-b", "10.2.0.6", deletionTimestamp="2026-12-06T21:00:00Z"),
        envoy("envoy-c", "10.2.0.7"),
    ]
    with pytest.raises(NoSecondEnvoy):
        pick_envoy_to_delete(pods, "10.2.0.7")


def contour(name: str, state: dict[str, Any]) -> dict[str, Any]:
    return {"metadata": {"name": name}, "status": {"containerStatuses": [{"name": "contour", "state": state}]}}


def test_a_contour_still_running_from_before_the_cut_holds_the_wait() -> None:
    pods = [
        contour("contour-a", {"waiting": {"reason": "CrashLoopBackOff"}}),
        contour("contour-b", {"running": {"startedAt": "2026-12-06T20:55:00Z"}}),
    ]
    done, states = contours_restarted_since(pods, CUT)
    assert not done
    assert [(s["pod"], s["state"], s["reason"], s["started_after_cut"]) for s in states] == [
        ("contour-a", "waiting", "CrashLoopBackOff", True),
        ("contour-b", "running", None, False),
    ]


def test_every_contour_waiting_or_started_after_the_cut_ends_the_wait_and_the_cuts_own_second_does_not() -> None:
    after = [
        contour("contour-a", {"waiting": {"reason": "CrashLoopBackOff"}}),
        contour("contour-b", {"running": {"startedAt": "2026-12-06T21:00:31Z"}}),
    ]
    assert contours_restarted_since(after, CUT)[0]
    same_second = [contour("contour-a", {"running": {"startedAt": "2026-12-06T21:00:00Z"}})]
    assert not contours_restarted_since(same_second, CUT)[0]
    assert not contours_restarted_since([], CUT)[0]


def refused(start: float, end: float, step: float = 0.1) -> list[Attempt]:
    return [Attempt(start + n * step, None, "connection_refused") for n in range(round((end - start) / step))]


def served(start: float, count: int, step: float = 0.1) -> list[Attempt]:
    return [Attempt(start + n * step, 200) for n in range(count)]


def test_the_lane_counts_before_and_after_the_heal_and_times_the_first_200_from_it() -> None:
    attempts = refused(12.0, 52.0) + refused(52.0, 60.5) + served(60.5, 20)
    lane = lane_summary(attempts, deleted_at=10.0, heal_at=52.0, min_availability=0.999)
    assert lane["requests_before_heal"] == {"sent": 400, "ok": 0, "failed_by_kind": {"connection_refused": 400}}
    assert lane["requests_after_heal"]["sent"] == 105 and lane["requests_after_heal"]["ok"] == 20
    assert not lane["served_before_heal"]
    assert lane["first_200_after_heal_s"] == 8.5 and lane["first_200_after_delete_s"] == 50.5
    assert lane["availability"] == round(20 / 505, 6) and not lane["meets_availability"]


def test_a_lane_without_a_heal_or_without_requests_says_so() -> None:
    lane = lane_summary(refused(12.0, 13.0), deleted_at=10.0, heal_at=None, min_availability=0.5)
    assert lane["first_200_after_heal_s"] is None and lane["requests_after_heal"]["sent"] == 0
    empty = lane_summary([], deleted_at=10.0, heal_at=None, min_availability=0.5)
    assert empty["availability"] is None and empty["meets_availability"] is False


def journal_with(output: dict[str, Any]) -> dict[str, Any]:
    restart = activity(
        "restart-an-envoy-during-the-outage",
        "chaoscontour.activities.envoy_restart",
        "restart_envoy_pod",
        kind="action",
        background=True,
    )
    return completed_journal([ran(restart, output, "2026-12-06T21:00:01", duration=9)])


def output(attempts: list[Attempt], heal_at: float | None, **extra: Any) -> dict[str, Any]:
    lane = lane_summary(attempts, deleted_at=10.0, heal_at=heal_at, min_availability=0.999)
    base = {"deleted_pod": "envoy-a", "replacement_pod": "envoy-z", "heal_seen": heal_at is not None}
    return base | {"ready_before_heal": False, "stats_before_heal": False, "ready_after_heal_s": 9.1} | lane | extra


def test_the_restarted_envoy_failing_until_the_heal_fails_the_gate_by_design_and_tells_the_story() -> None:
    verdict = judge(journal_with(output(refused(12.0, 60.5) + served(60.5, 20), heal_at=52.0)))
    assert not verdict.passed
    (reason,) = verdict.reasons
    assert "(envoy-z) served nothing until 8.5 s after the heal (availability 0.039604)" in reason
    assert verdict.findings[-1] == (
        "Envoy pod envoy-a deleted once every Contour had restarted since the cut; its replacement envoy-z served 0 "
        "of 400 requests before the heal, was not Ready and its stats listener (configured by Contour) did not "
        "answer; first 200 8.5 s after the heal, Ready 9.1 s after it"
    )


@pytest.mark.parametrize(
    "evidence, words",
    [
        ({}, "was served before the heal"),
        ({"ready_before_heal": True}, "was served and became Ready before the heal"),
    ],
)
def test_a_replacement_served_while_contour_was_cut_off_is_a_fault_that_did_not_bite(evidence, words) -> None:
    verdict = judge(journal_with(output(refused(12.0, 20.0) + served(20.0, 400), heal_at=52.0, **evidence)))
    (reason,) = verdict.reasons
    assert words in reason and "a Contour outside contour_selector, or one not cut off" in reason


def test_a_follow_that_ended_before_the_heal_or_before_any_200_fails_with_its_cause() -> None:
    (early,) = judge(journal_with(output(refused(12.0, 20.0), heal_at=None))).reasons
    assert "before the heal: lengthen follow_s" in early
    (never,) = judge(journal_with(output(refused(12.0, 70.0), heal_at=52.0))).reasons
    assert "served nothing, even after the heal" in never
    (absent,) = judge(journal_with(output([], heal_at=52.0, replacement_pod=None))).reasons
    assert "no replacement of the deleted Envoy pod envoy-a appeared" in absent and "grace_period_s" in absent


def test_a_replacement_that_served_from_the_heal_on_meets_the_floor_and_passes() -> None:
    verdict = judge(journal_with(output(served(12.0, 5000), heal_at=12.0)))
    assert verdict.passed, verdict.reasons
    assert "first 200 0.0 s after the heal" in verdict.findings[-1]


def test_the_report_draws_the_restarted_envoys_lane_from_the_delete_to_its_first_200_and_on(tmp_path: Path) -> None:
    lane = output(refused(12.0, 60.5) + served(60.5, 20), heal_at=52.0)
    lane |= {"deleted_at": "2026-12-06T21:00:10Z", "heal_after_delete_s": 42.0}
    journal = journal_with(lane)
    journal["run"][0] |= {"start": "2026-12-06T21:00:00", "end": "2026-12-06T21:01:10"}
    journal |= {"start": "2026-12-06T20:59:59", "end": "2026-12-06T21:01:20"}
    data = report_data(journal)
    spans = [(s.kind, s.end_s - s.start_s) for s in data.tracks.spans if s.lane == "restarted-envoy"]
    assert spans == [("bad", pytest.approx(50.5)), ("ok", pytest.approx(9.5))]
    labels = [e.label for e in data.tracks.events]
    assert labels == [
        "Envoy pod envoy-a deleted",
        "the follower saw the fault removed",
        "envoy-z served its first 200",
        "envoy-z Ready",
    ]
    assert data.tracks.lanes == ("restarted-envoy",)
    render_png(data, tmp_path / "r.png")
    assert (tmp_path / "r.png").stat().st_size > 10_000
    assert "restarted Envoy" in render_html(data, "r.png")
