"""Holder identities, Lease summaries and restart counting, on API-shaped dicts."""

from datetime import UTC, datetime, timedelta

import pytest

from chaoscontour.domain.identity import InvalidHolderIdentity, parse_holder_identity
from chaoscontour.domain.lease import lease_liveness_problem, lease_summary, new_holder
from chaoscontour.domain.restarts import restart_summary

UUID = "0f8fad5b-d9cb-469f-a165-70867728950e"
NOW = datetime(2026, 11, 26, 19, 0, 10, tzinfo=UTC)


def test_holder_identity_is_pod_name_and_uuid():
    holder = parse_holder_identity(f"contour-6d4f9c7b8-x2x9q_{UUID}")
    assert holder.pod_name == "contour-6d4f9c7b8-x2x9q"
    assert holder.uuid == UUID


def test_pod_names_with_underscore_free_dots_and_dashes_parse():
    assert parse_holder_identity(f"contour.a-b_{UUID}").pod_name == "contour.a-b"


@pytest.mark.parametrize(
    "identity",
    [
        "",
        "contour-abc",
        f"contour_{UUID[:-1]}",
        f"_{UUID}",
        f"Contour_{UUID}",
        "contour_not-a-uuid-at-all-xxxxxxxxxxxxx",
    ],
)
def test_malformed_holder_identity_is_refused(identity):
    with pytest.raises(InvalidHolderIdentity):
        parse_holder_identity(identity)


def _lease(holder: str, renew: datetime, duration: int = 15, transitions: int = 2) -> dict:
    return {
        "metadata": {"name": "leader-elect", "namespace": "projectcontour"},
        "spec": {
            "holderIdentity": holder,
            "acquireTime": "2026-11-26T18:00:00.000000Z",
            "renewTime": renew.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
            "leaseDurationSeconds": duration,
            "leaseTransitions": transitions,
        },
    }


def test_lease_summary_of_a_live_leader():
    summary = lease_summary(_lease(f"contour-a_{UUID}", NOW - timedelta(seconds=1.5)), NOW, NOW)
    assert summary["pod_name"] == "contour-a"
    # the Date header has whole seconds: its midpoint is used
    assert summary["seconds_since_renewal"] == 2.0
    assert summary["held"] is True
    assert summary["lease_transitions"] == 2
    assert summary["judged_by"] == "api-server-clock"


def test_lease_summary_of_an_expired_lease():
    summary = lease_summary(_lease(f"contour-a_{UUID}", NOW - timedelta(seconds=16)), NOW, NOW)
    assert summary["held"] is False


def test_lease_summary_without_holder_is_not_held():
    summary = lease_summary(_lease("", NOW), NOW, NOW)
    assert summary["held"] is False and summary["pod_name"] is None


@pytest.mark.parametrize("skew_s", [-60, 60])
def test_a_runner_clock_off_by_a_minute_changes_neither_verdict_and_is_reported(skew_s):
    runner_now = NOW + timedelta(seconds=skew_s)
    live = lease_summary(_lease(f"contour-a_{UUID}", NOW - timedelta(seconds=3)), NOW, runner_now)
    stale = lease_summary(_lease(f"contour-a_{UUID}", NOW - timedelta(seconds=20)), NOW, runner_now)
    assert live["held"] is True and stale["held"] is False
    assert live["clock_offset_s"] == pytest.approx(skew_s - 0.5, abs=0.01)


def test_without_a_date_header_the_runner_clock_is_used_and_said():
    summary = lease_summary(_lease(f"contour-a_{UUID}", NOW - timedelta(seconds=3)), None, NOW)
    assert summary["held"] is True and summary["clock_offset_s"] is None
    assert summary["judged_by"].startswith("runner-clock")


def test_a_live_lease_held_by_a_selected_pod_is_evidence():
    summary = lease_summary(_lease(f"contour-a_{UUID}", NOW - timedelta(seconds=2)), NOW, NOW)
    assert lease_liveness_problem(summary, ["contour-a", "contour-b"]) is None


def test_a_lease_renewed_years_ago_is_no_evidence_even_by_a_runner_clock_years_behind():
    stale = _lease(f"contour-a_{UUID}", datetime(2020, 3, 1, tzinfo=UTC))
    problem = lease_liveness_problem(lease_summary(stale, NOW, datetime(2020, 3, 1, tzinfo=UTC)), ["contour-a"])
    assert problem is not None and "is not being renewed" in problem and "API server's clock" in problem


@pytest.mark.parametrize(("age_s", "live"), [(15.4, True), (16.0, True), (16.6, False)])
def test_one_second_of_slack_for_the_date_headers_resolution(age_s, live):
    # lease_summary adds 0.5 s (the Date's midpoint); 15 s duration + 1 s slack.
    summary = lease_summary(_lease(f"contour-a_{UUID}", NOW - timedelta(seconds=age_s - 0.5)), NOW, NOW)
    assert (lease_liveness_problem(summary, ["contour-a"]) is None) is live


def test_a_lease_held_by_an_unselected_pod_or_by_nobody_is_no_evidence():
    foreign = lease_summary(_lease(f"contour-x_{UUID}", NOW), NOW, NOW)
    assert "not one of the selected pods (contour-a, contour-b)" in lease_liveness_problem(
        foreign, ["contour-b", "contour-a"]
    )
    assert "has no holder" in lease_liveness_problem(lease_summary(_lease("", NOW), NOW, NOW), ["contour-a"])


def test_a_new_leader_is_recognised_by_identity_whatever_its_clock_says():
    old, new = f"contour-a_{UUID}", f"contour-b_{UUID}"
    # contour-b's node clock is a minute behind: its renewTime is older than the old leader's; still a takeover
    assert new_holder(_lease(new, NOW - timedelta(seconds=60)), old) == new
    assert new_holder(_lease(old, NOW + timedelta(seconds=60)), old) is None
    assert new_holder(_lease("", NOW), old) is None


def _pod(name: str, restarts: int, finished: str | None, state: dict | None = None) -> dict:
    last = {"terminated": {"exitCode": 1, "reason": "Error", "finishedAt": finished}} if finished else {}
    return {
        "metadata": {"name": name},
        "status": {
            "phase": "Running",
            "containerStatuses": [
                {"name": "contour", "restartCount": restarts, "ready": False, "lastState": last, "state": state or {}}
            ],
        },
    }


def test_restart_totals_and_detail():
    summary = restart_summary([_pod("a", 2, "2026-11-26T19:00:00Z"), _pod("b", 0, None)])
    assert summary["total_restarts"] == 2
    assert summary["pod_count"] == 2
    assert summary["pods"][0]["containers"][0]["last_terminated"]["reason"] == "Error"
    assert "terminated_since" not in summary


def test_terminations_after_a_time_count_only_later_ones():
    since = datetime(2026, 11, 26, 19, 0, 0, tzinfo=UTC)
    pods = [
        _pod("a", 3, "2026-11-26T19:00:05Z"),
        _pod("b", 1, "2026-11-26T18:59:00Z"),
        _pod("c", 0, None, state={"terminated": {"exitCode": 1, "finishedAt": "2026-11-26T19:00:07Z"}}),
    ]
    summary = restart_summary(pods, since=since)
    assert summary["terminated_since"] == 2
    assert [t["pod"] for t in summary["terminations"]] == ["a", "c"]
    # One UTC form for every time, whatever form the API client handed over.
    assert summary["terminations"][0]["finished_at"] == "2026-11-26T19:00:05Z"
    assert summary["since"] == "2026-11-26T19:00:00Z"


def test_finished_at_given_with_an_offset_is_reported_in_utc_z_form():
    summary = restart_summary([_pod("a", 1, "2026-11-26T20:00:05+01:00")])
    assert summary["pods"][0]["containers"][0]["last_terminated"]["finished_at"] == "2026-11-26T19:00:05Z"
