"""The stop flag (chained into chaostoolkit's signal handlers) and the dead-man heartbeat, with real signals and
real threads; the heartbeat's "API" is a recording function, the one thing it calls."""

import os
import signal
import threading
import time

import pytest
from chaoslib import exit as chaos_exit
from chaoslib.exceptions import InterruptExecution

from chaoscontour.activities import timing
from chaoscontour.edges import heartbeat, stop


@pytest.fixture(autouse=True)
def fresh_stop():
    stop.reset()
    yield
    stop.reset()


def test_chaostoolkits_sigterm_handler_sets_the_flag_before_it_interrupts():
    # what `chaos run` installs at the start of a run (chaoslib.exit.exit_signals) is our wrapped handler
    with chaos_exit.exit_signals(), pytest.raises(InterruptExecution):
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(1)
    assert stop.requested() and "SIGTERM" in stop.reason()


def test_sigint_sets_the_flag_and_still_raises_keyboardinterrupt():
    # Started from a background shell, this process inherits SIGINT ignored: give it Python's default, as
    # `chaos` has when a user runs it, and put back what was there.
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        stop.install()
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    finally:
        signal.signal(signal.SIGINT, previous)
    assert stop.requested()


def test_a_wait_in_another_thread_ends_within_a_second_of_a_stop_request():
    ended: list[float] = []
    worker = threading.Thread(target=lambda: ended.append(time.monotonic()) if stop.wait(30) else None)
    worker.start()
    time.sleep(0.2)
    asked = time.monotonic()
    stop.request("test")
    worker.join(5)
    assert ended and ended[0] - asked < 1.0


def test_the_wait_activity_interrupts_the_run_on_a_stop_request():
    threading.Timer(0.2, stop.request, args=("test",)).start()
    started = time.monotonic()
    with pytest.raises(InterruptExecution):
        timing.wait(30)
    assert time.monotonic() - started < 2.0


def beat(extend, **kw):
    defaults = {"started": time.monotonic(), "dead_man_s": 20.0, "duration_s": 300.0, "every_s": 0.05}
    return heartbeat.Heartbeat(("ns", "run-a"), extend, **{**defaults, **kw}).start()


def test_the_heartbeat_pushes_the_deadline_forward_while_the_run_lives():
    written: list[int] = []
    hb = beat(lambda d: written.append(d) or True, started=time.monotonic() - 10)
    time.sleep(0.5)
    hb.stop("test")
    assert written and written[0] >= 30 and written == sorted(written)
    assert heartbeat.running("ns", "run-a") is None


def test_the_heartbeat_survives_api_hiccups_and_stops_when_the_job_is_gone():
    calls: list[int] = []

    def flaky(deadline: int) -> bool:
        calls.append(deadline)
        if len(calls) < 3:
            raise OSError("connection refused")
        return len(calls) < 5  # the 5th call finds the Job deleted

    hb = beat(flaky, started=time.monotonic() - 5)
    deadline = time.monotonic() + 5
    while hb.alive and time.monotonic() < deadline:
        time.sleep(0.05)
    assert not hb.alive and hb.ended == "expiry Job gone" and hb.failures == 2 and hb.beats == 2


def test_the_heartbeat_stops_extending_on_a_stop_request_so_the_fault_expires():
    written: list[int] = []
    hb = beat(lambda d: written.append(d) or True, started=time.monotonic() - 3)
    time.sleep(0.2)
    stop.request("SIGTERM received")
    time.sleep(0.3)
    count = len(written)
    time.sleep(0.3)
    assert not hb.alive and hb.ended == "stop requested" and len(written) == count


def test_the_heartbeat_never_writes_past_the_hard_cap():
    written: list[int] = []
    hb = beat(lambda d: written.append(d) or True, started=time.monotonic() - 100, duration_s=110)
    time.sleep(0.3)
    assert written == [110] and hb.ended == "hard cap reached"


def test_removing_run_r1_stops_r1s_heartbeat_only_never_r12s():
    """Issue 21: keys were matched by prefix, so unblocking run r1 also stopped run r12's dead-man switch."""
    defaults = {"started": time.monotonic(), "dead_man_s": 20.0, "duration_s": 300.0, "every_s": 0.05}
    keep = lambda deadline: True  # noqa: E731
    beats = {
        key: heartbeat.Heartbeat(("ns", key), keep, **defaults).start()
        for key in ("apiserver-egress/r1", "apiserver-egress/r12", "xds-egress/r1")
    }
    try:
        heartbeat.stop_heartbeats("ns", "apiserver-egress/r1")
        assert {key: not b.ended for key, b in beats.items()} == {
            "apiserver-egress/r1": False,
            "apiserver-egress/r12": True,
            "xds-egress/r1": True,
        }
        heartbeat.stop_heartbeats("ns", "apiserver-egress/")  # every run of one fault
        assert beats["apiserver-egress/r12"].ended == "fault removed"
        assert not beats["xds-egress/r1"].ended
    finally:
        for b in beats.values():
            b.stop("test")
