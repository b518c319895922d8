"""Fault confirmation from Lease readings, the dead-man deadline, and the end-of-window judgement: pure, no mocks."""

import pytest

from chaoscontour.domain.verification import (
    EVIDENCE_QUIET,
    RenewalWatch,
    blocked_networks,
    fault_held_reasons,
    next_deadline_s,
    reading,
    uncovered_addresses,
)

HOLDER = "contour-a_0f8fad5b-d9cb-469f-a165-70867728950e"


def lease(version: int, holder: str = HOLDER, duration: int = 15, renew: str = "") -> dict:
    return {
        "metadata": {"resourceVersion": str(version)},
        "spec": {
            "holderIdentity": holder,
            "leaseDurationSeconds": duration,
            "renewTime": renew or f"2026-11-27T10:00:{version % 60:02d}.000000Z",
        },
    }


def replay(watch: RenewalWatch, renewals_every_s: float, lease_s: int, until_s: float, poll_s: float = 0.5) -> bool:
    """Poll a leader that renews every ``renewals_every_s`` (it still reaches the API server); True if confirmed."""
    t, version = 0.0, 1
    next_renewal = renewals_every_s
    while t <= until_s:
        if t >= next_renewal:
            version += 1
            next_renewal += renewals_every_s
        watch.observe(reading(lease(version, duration=lease_s), t))
        if watch.confirmed():
            return True
        t += poll_s
    return False


@pytest.mark.parametrize(
    ("lease_s", "retry_s"),
    [(15, 2), (40, 12), (60, 26), (137, 60), (15, 0.3)],
)
def test_a_leader_that_still_renews_is_never_confirmed_whatever_its_timings(lease_s, retry_s):
    # client-go requires retry * 1.2 < renewDeadline < leaseDuration; every case here renews within its duration.
    assert not replay(RenewalWatch(), retry_s, lease_s, until_s=4 * lease_s)


def test_the_old_fixed_8_s_window_would_have_confirmed_a_12_s_retry_period():
    assert replay(RenewalWatch(min_quiet_s=8, required_quiet_s=8), 12, 40, until_s=60) is False  # lease bound wins
    old_rule = RenewalWatch()
    old_rule.required_quiet_s = 8  # what the tool did before: a fixed window, blind to the Lease's duration
    old_rule.observe(reading(lease(1, duration=8), 0.0))
    old_rule.observe(reading(lease(1, duration=8), 8.5))
    assert old_rule.confirmed(), "the regression this test guards against"


def test_a_silent_lease_is_confirmed_just_after_its_duration():
    watch = RenewalWatch()
    for t in range(0, 16):
        watch.observe(reading(lease(7), float(t)))
        assert not watch.confirmed(), t
    watch.observe(reading(lease(7), 15.5))
    assert watch.confirmed() and watch.quiet_s() == 15.5 and watch.required_quiet_s == 15


def test_verify_window_lengthens_the_quiet_period_but_never_shortens_it():
    longer = RenewalWatch(min_quiet_s=25)
    shorter = RenewalWatch(min_quiet_s=5)
    for t in (0.0, 16.0):
        longer.observe(reading(lease(3), t))
        shorter.observe(reading(lease(3), t))
    assert not longer.confirmed() and shorter.confirmed()
    assert longer.required_quiet_s == 25 and shorter.required_quiet_s == 15


def test_a_release_that_writes_a_one_second_duration_does_not_shorten_the_wait():
    watch = RenewalWatch()
    watch.observe(reading(lease(1), 0.0))
    watch.observe(reading(lease(2, holder="", duration=1), 1.0))  # released on the way out (ReleaseOnCancel)
    watch.observe(reading(lease(2, holder="", duration=1), 3.0))
    assert not watch.confirmed() and watch.required_quiet_s == 15
    assert watch.changes == 1 and watch.renewals == 0


def test_quiet_counts_only_from_when_replacement_pods_run():
    watch = RenewalWatch(quiet_from=float("inf"))
    for t in range(0, 40):
        watch.observe(reading(lease(5), float(t)))
    assert not watch.confirmed(), "no Contour was running: a quiet Lease proves nothing"
    watch.quiet_from = 30.0
    watch.observe(reading(lease(5), 45.5))
    assert watch.confirmed()


def test_a_failed_read_between_two_identical_readings_keeps_the_quiet_sound():
    watch = RenewalWatch()
    watch.observe(reading(lease(9), 0.0))
    # reads at 1..14 s failed (our own API hiccup): nothing observed
    watch.observe(reading(lease(9), 16.0))
    assert watch.confirmed(), "the same resourceVersion 16 s apart means nobody wrote the Lease in between"


def test_renewals_are_counted_with_their_holders():
    watch = RenewalWatch()
    other = "contour-b_0f8fad5b-d9cb-469f-a165-70867728950e"
    for t, (v, h) in enumerate([(1, HOLDER), (2, HOLDER), (3, other), (3, other)]):
        watch.observe(reading(lease(v, holder=h), float(t)))
    assert watch.renewals == 2 and watch.holders == [HOLDER, other]
    assert EVIDENCE_QUIET == "lease-unchanged-longer-than-its-duration"


@pytest.mark.parametrize(
    ("elapsed", "dead_man", "duration", "expected"),
    [(0, 20, 300, 20), (7.2, 20, 300, 28), (290, 20, 300, 300), (0, 20, 5, 5), (0.0, 20, 20.5, 20)],
)
def test_dead_man_deadline_is_dead_man_s_ahead_never_past_the_cap(elapsed, dead_man, duration, expected):
    assert next_deadline_s(elapsed, dead_man, duration) == expected


POLICY = {
    "spec": {
        "egress": [
            {"to": [{"ipBlock": {"cidr": "0.0.0.0/0", "except": ["10.0.0.1/32", "192.168.1.10/32"]}}]},
            {"to": [{"ipBlock": {"cidr": "::/0", "except": ["fd00::1/128"]}}]},
            {"to": [{"namespaceSelector": {}}], "ports": [{"port": 53, "protocol": "UDP"}]},
        ]
    }
}


def test_blocked_networks_are_the_except_lists_of_the_policy():
    assert blocked_networks(POLICY) == ["10.0.0.1/32", "192.168.1.10/32", "fd00::1/128"]
    assert blocked_networks({}) == []


def test_an_api_server_endpoint_that_appeared_during_the_fault_is_uncovered():
    blocked = blocked_networks(POLICY)
    assert uncovered_addresses(["10.0.0.1", "192.168.1.10", "fd00::1"], blocked) == []
    assert uncovered_addresses(["10.0.0.1", "192.168.1.11", "fd00::2"], blocked) == ["192.168.1.11", "fd00::2"]


CONFIRMED = {"lease_namespace": "projectcontour", "lease_name": "leader-elect", "version": "41"}


def test_a_fault_that_held_has_no_reasons():
    reasons = fault_held_reasons(
        policy_present=True,
        uncovered=[],
        job_finished="",
        expires_in_s=12.0,
        confirmed=CONFIRMED,
        lease_version="41",
        lease_holder=HOLDER,
    )
    assert reasons == []


@pytest.mark.parametrize(
    ("change", "phrase"),
    [
        ({"policy_present": False}, "NetworkPolicy is gone"),
        ({"uncovered": ["10.9.9.9"]}, "10.9.9.9 appeared during the fault"),
        ({"job_finished": "Failed: DeadlineExceeded"}, "expiry Job has finished"),
        ({"expires_in_s": -1.0}, "deadline has passed"),
        ({"confirmed": None}, "never confirmed"),
        ({"lease_version": "57"}, "was written after the fault was confirmed"),
    ],
)
def test_each_way_a_fault_can_fail_to_hold_is_named(change, phrase):
    arguments = {
        "policy_present": True,
        "uncovered": [],
        "job_finished": "",
        "expires_in_s": 12.0,
        "confirmed": CONFIRMED,
        "lease_version": "41",
        "lease_holder": HOLDER,
        **change,
    }
    reasons = fault_held_reasons(**arguments)
    assert len(reasons) == 1 and phrase in reasons[0], reasons
