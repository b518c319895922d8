"""``poll_until``, the one deadline loop of the activities, on an injected clock: no real time passes."""

from dataclasses import dataclass, field

import pytest

from chaoscontour.edges import stop
from chaoscontour.edges.clock import poll_until


@dataclass
class FakeTime:
    """A clock that only moves when the poll sleeps (plus ``check_cost_s`` per check), and a stop flag."""

    now: float = 100.0
    check_cost_s: float = 0.0
    slept: list[float] = field(default_factory=list)
    stop_during_sleep: int | None = None  # the sleep (0-based) that a stop request interrupts
    stop_requested: bool = False

    def clock(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> bool:
        if self.stop_during_sleep == len(self.slept):
            self.stop_requested = True
        self.slept.append(seconds)
        if self.stop_requested:
            return True
        self.now += seconds
        return False

    def stopped(self) -> bool:
        return self.stop_requested

    def checks(self, *results):
        """A check returning ``results`` in turn (then the last one for ever), and the list of times it ran."""
        calls: list[float] = []

        def check():
            calls.append(self.now)
            self.now += self.check_cost_s
            return results[min(len(calls), len(results)) - 1]

        return check, calls

    def poll(self, check, timeout_s, interval_s, **kwargs):
        return poll_until(
            check, timeout_s, interval_s, clock=self.clock, sleep=self.sleep, stopped=self.stopped, **kwargs
        )


def test_a_check_done_at_once_returns_its_value_without_sleeping():
    t = FakeTime()
    check, calls = t.checks({"holder": "contour-b"})
    polled = t.poll(check, 10, 0.5)
    assert polled.done and polled.value == {"holder": "contour-b"}
    assert not polled.stopped and polled.elapsed_s == 0
    assert len(calls) == 1 and t.slept == []


def test_it_checks_every_interval_until_done_and_reports_the_time_since_the_start():
    t = FakeTime(check_cost_s=0.1)
    check, calls = t.checks(None, None, "served")
    polled = t.poll(check, 10, 0.5)
    assert polled.value == "served"
    assert t.slept == [0.5, 0.5]
    assert calls == pytest.approx([100.0, 100.6, 101.2])
    assert polled.elapsed_s == pytest.approx(1.3)


def test_it_gives_up_after_the_deadline_with_the_last_result():
    t = FakeTime()
    check, calls = t.checks(False)
    polled = t.poll(check, 2, 0.5)
    assert not polled.done and not polled.stopped and polled.value is False
    assert calls == [100.0, 100.5, 101.0, 101.5, 102.0]
    assert polled.elapsed_s == 2.0


def test_a_deadline_already_past_still_gets_one_check():
    t = FakeTime()
    check, calls = t.checks(None)
    polled = t.poll(check, 0, 0.5)
    assert not polled.done and calls == [100.0] and t.slept == []
    blocked_long_ago = t.poll(t.checks(None)[0], 5, 0.5, started=90.0)
    assert blocked_long_ago.elapsed_s == 10.0 and not blocked_long_ago.done


def test_the_timeout_counts_from_started_not_from_the_first_check():
    t = FakeTime()
    check, calls = t.checks(None)
    polled = t.poll(check, 2, 0.5, started=99.0)
    assert calls == [100.0, 100.5, 101.0]
    assert polled.elapsed_s == 2.0


def test_wake_at_deadline_shortens_the_last_sleep_to_land_on_the_deadline():
    t = FakeTime()
    check, calls = t.checks(None)
    t.poll(check, 1.2, 0.5, wake_at_deadline=True)
    assert t.slept == pytest.approx([0.5, 0.5, 0.2])
    assert calls[-1] == pytest.approx(101.2)
    t2 = FakeTime()
    t2.poll(t2.checks(None)[0], 1.2, 0.5)
    assert t2.slept == [0.5, 0.5, 0.5]


def test_on_wait_is_told_the_elapsed_time_before_each_sleep_only():
    t = FakeTime()
    waits: list[float] = []
    check, _ = t.checks(None, None, True)
    t.poll(check, 10, 0.25, on_wait=waits.append)
    assert waits == [0.0, 0.25]


def test_exceptions_from_the_check_propagate():
    t = FakeTime()

    def check():
        if t.slept:
            raise RuntimeError("lease not found")
        return None

    with pytest.raises(RuntimeError, match="lease not found"):
        t.poll(check, 10, 0.5)
    assert t.slept == [0.5]


def test_a_stop_requested_before_a_check_ends_the_wait_before_the_deadline():
    t = FakeTime(stop_requested=True)
    check, calls = t.checks(None)
    polled = t.poll(check, 10, 0.5)
    assert polled.stopped and not polled.done and len(calls) == 1 and t.slept == []


def test_a_stop_still_lets_a_done_check_count():
    t = FakeTime(stop_requested=True)
    polled = t.poll(t.checks("new-holder")[0], 10, 0.5)
    assert polled.done and not polled.stopped


def test_a_stop_during_a_sleep_ends_the_wait_at_once_or_after_one_more_check():
    t = FakeTime(stop_during_sleep=1)
    check, calls = t.checks(None)
    polled = t.poll(check, 10, 0.5)
    assert polled.stopped and len(calls) == 2 and polled.elapsed_s == 0.5

    t = FakeTime(stop_during_sleep=1)
    check, calls = t.checks(None, None, "found on the last look")
    polled = t.poll(check, 10, 0.5, check_after_stop=True)
    assert polled.done and len(calls) == 3

    t = FakeTime(stop_during_sleep=0)
    check, calls = t.checks(None)
    polled = t.poll(check, 10, 0.5, check_after_stop=True)
    assert polled.stopped and len(calls) == 2


def test_by_default_it_sleeps_on_the_stop_flag_so_a_stop_request_ends_it():
    stop.reset()
    try:
        stop.request("test")
        polled = poll_until(lambda: None, 60, 30)
        assert polled.stopped
    finally:
        stop.reset()
