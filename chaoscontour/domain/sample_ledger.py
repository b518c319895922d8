"""The sampler's accounts: every request of one sampling window by index, what became of it, and the result.

Pure: no clock, no socket. :mod:`chaoscontour.edges.sampler` says when a request was due, sent and settled; this
module keeps those facts in preallocated columns (a settled request costs no allocation, which matters at thousands
of requests per second), judges whether the route served at all in the first second, and turns the columns into a
:class:`SamplerResult`.
"""

import itertools
import math
from array import array
from dataclasses import dataclass

from chaoscontour.domain.availability import NOT_SENT, UNFINISHED, OutageTracker, SampleSeries, percentile

__all__ = ["FIRST_SECOND_S", "NeverServed", "SampleLedger", "SamplerResult"]

# After one second the sampler judges whether the route serves at all (a wrong URL or Host would otherwise read as
# the biggest outage ever).
FIRST_SECOND_S = 1.0
_PENDING = 0  # outcome code of a request not yet settled


class NeverServed(Exception):
    """No request succeeded in the first second: the URL, the Host or the route is wrong, or Envoy is down."""

    def __init__(self, answered: int, planned: int, first_problem: str) -> None:
        super().__init__(f"{answered} of {planned} answered; first problem seen: {first_problem}")
        self.answered = answered
        self.planned = planned
        self.first_problem = first_problem


@dataclass
class SamplerResult:
    series: SampleSeries
    window_start: float  # epoch s
    window_end: float
    planned: int
    sent: int
    not_sent: int
    unfinished: int
    connections_opened: int
    achieved_rate_per_s: float
    send_lag_ms: dict[str, float | None]
    longest_send_gap_ms: float | None  # the longest time between two requests sent: what the sampler could not see
    kernel_timestamps: bool
    stopped_early: bool
    stop_reason: str


class SampleLedger:
    """The ``planned`` requests of one window, by index (send order); times are epoch seconds."""

    def __init__(self, planned: int, rate_per_s: float, timeout_s: float) -> None:
        self.planned = planned
        self.first_second_planned = min(planned, max(1, math.ceil(FIRST_SECOND_S * rate_per_s - 1e-9)))
        self.timeout_s = timeout_s
        self.started = array("d", bytes(8 * planned))
        self._duration = array("d", bytes(8 * planned))
        self._lag = array("f", bytes(4 * planned))
        self._ok = bytearray(planned)
        self._outcome = array("H", bytes(2 * planned))
        self._series = SampleSeries()
        self._series.kind("pending")  # code 0 (_PENDING)
        self._first_done = 0
        self._first_ok = 0
        self.first_problem = ""

    def sent(self, index: int, sent_wall: float, due_wall: float) -> None:
        self.started[index] = sent_wall
        self._lag[index] = sent_wall - due_wall

    def problem(self, text: str) -> None:
        """Remember ``text`` when it is the first problem seen (what :class:`NeverServed` names)."""
        if not self.first_problem:
            self.first_problem = text

    def settle(self, index: int, duration_s: float, ok: bool, outcome: str) -> None:
        self._duration[index] = duration_s
        self._ok[index] = ok
        self._outcome[index] = self._series.kind(outcome)
        if index < self.first_second_planned:
            self._first_done += 1
            self._first_ok += ok
        if not ok:
            self.problem(f"HTTP {outcome[5:]}" if outcome.startswith("http_") else outcome)

    def settle_unfinished(self, count: int, now_wall: float) -> int:
        """Settle every request of the first ``count`` still pending as unfinished; returns how many there were."""
        unfinished = 0
        for i in range(count):
            if self._outcome[i] == _PENDING:
                self.settle(i, max(0.0, now_wall - self.started[i]), False, UNFINISHED)
                unfinished += 1
        return unfinished

    def check_first_second(self, elapsed_s: float) -> bool:
        """True once a first-second request succeeded; raises :class:`NeverServed` when none will."""
        if self._first_ok:
            return True
        all_done = self._first_done >= self.first_second_planned
        overdue = elapsed_s >= FIRST_SECOND_S + self.timeout_s + 0.5
        if elapsed_s >= FIRST_SECOND_S and (all_done or overdue):
            raise NeverServed(self._first_done, self.first_second_planned, self.first_problem or "no answer")
        return False

    def advance(self, tracker: OutageTracker, frontier: int, sent: int) -> int:
        """Feed ``tracker`` the settled requests from ``frontier`` on, in order; returns the new frontier."""
        while frontier < sent and self._outcome[frontier] != _PENDING:
            tracker.add(self.started[frontier], bool(self._ok[frontier]))
            frontier += 1
        return frontier

    def result(
        self,
        count: int,
        window: tuple[float, float],
        unfinished: int,
        connections_opened: int,
        kernel_timestamps: bool,
        stopped: str,
    ) -> SamplerResult:
        """The first ``count`` requests as a :class:`SamplerResult` of the window ``(start, end)``."""
        wall0, window_end = window
        kinds = self._series.kinds
        series = SampleSeries.of_columns(
            self.started[:count], self._duration[:count], self._ok[:count], self._outcome[:count], kinds
        )
        not_sent_code = kinds.index(NOT_SENT) if NOT_SENT in kinds else -1
        sends = [t for t, o in zip(series.started_at, series.outcome, strict=True) if o != not_sent_code]
        if len(sends) > 1 and sends[-1] > sends[0]:
            achieved = (len(sends) - 1) / (sends[-1] - sends[0])
        else:
            achieved = len(sends) / max(window_end - wall0, 1e-9)
        gap = max((b - a for a, b in itertools.pairwise(sends)), default=None)
        lags = sorted(self._lag[:count])
        return SamplerResult(
            series=series,
            window_start=wall0,
            window_end=max(window_end, wall0),
            planned=self.planned,
            sent=len(sends),
            not_sent=count - len(sends),
            unfinished=unfinished,
            connections_opened=connections_opened,
            achieved_rate_per_s=achieved,
            send_lag_ms={
                "p50": _ms(percentile(lags, 50)),
                "p99": _ms(percentile(lags, 99)),
                "max": _ms(lags[-1] if lags else None),
            },
            longest_send_gap_ms=_ms(gap),
            kernel_timestamps=kernel_timestamps,
            stopped_early=bool(stopped),
            stop_reason=stopped,
        )


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000.0, 3)
