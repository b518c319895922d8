"""Waiting until something is done or a deadline passes: the one polling loop of the activities.

Every wait of ours (the Lease gone quiet, Envoy's xDS stream up or gone, a new leader, a route served, endpoints
converged) is the same loop: check, and if not done, give up once the deadline passed or a stop was requested
(:mod:`chaoscontour.edges.stop`), else sleep and check again. The sleep is :func:`chaoscontour.edges.stop.wait`, so a
signal ends the wait within one check. The clock and the sleep can be injected, for tests.
"""

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

from chaoscontour.edges import stop

__all__ = ["Polled", "poll_until"]

T = TypeVar("T")


@dataclass(frozen=True)
class Polled(Generic[T]):
    """How a :func:`poll_until` ended: ``value`` is the last check's result (truthy when it was done),
    ``elapsed_s`` the time from the start to the end of that check, and ``stopped`` whether a stop request ended
    it. Neither done nor stopped: the deadline passed."""

    value: T
    elapsed_s: float
    stopped: bool = False

    @property
    def done(self) -> bool:
        return bool(self.value)


def poll_until(
    check: Callable[[], T],
    timeout_s: float,
    interval_s: float,
    *,
    started: float | None = None,
    on_wait: Callable[[float], None] | None = None,
    wake_at_deadline: bool = False,
    check_after_stop: bool = False,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], bool] | None = None,
    stopped: Callable[[], bool] | None = None,
) -> Polled[T]:
    """Call ``check`` until it returns something truthy, ``timeout_s`` has passed since ``started`` (``clock``'s
    time; default: now), or a stop is requested; between two checks call ``on_wait(elapsed_s)`` (a progress line)
    and sleep ``interval_s``.

    The first check is made at once, and always: a deadline already past still gets one. After a check that was
    not done, a stop request ends the wait before the deadline is looked at. ``wake_at_deadline`` shortens the last
    sleep so that the last check falls on the deadline. A sleep that a stop request interrupts ends the wait at
    once, unless ``check_after_stop``: then one more check is made (it may find the thing done), and the stop ends
    the wait after it. Exceptions from ``check`` propagate.

    ``sleep(seconds) -> stop_requested`` and ``stopped() -> bool`` default to :mod:`chaoscontour.edges.stop`'s.
    """
    sleep = sleep or stop.wait
    stopped = stopped or stop.requested
    start = clock() if started is None else started
    while True:
        value = check()
        elapsed = clock() - start
        if value:
            return Polled(value, elapsed)
        if stopped():
            return Polled(value, elapsed, stopped=True)
        if elapsed >= timeout_s:
            return Polled(value, elapsed)
        if on_wait is not None:
            on_wait(elapsed)
        wait_s = min(interval_s, timeout_s - elapsed) if wake_at_deadline else interval_s
        if sleep(wait_s) and not check_after_stop:
            return Polled(value, elapsed, stopped=True)
